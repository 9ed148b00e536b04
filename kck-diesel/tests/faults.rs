//! Faults: the database restarts while the cache serves; the cache reports
//! typed, transient errors meanwhile, then recovers by itself and loses
//! nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kck_core::{Cache, Ctx, ErrorKind, Key, primer};
use kck_diesel::PgStore;
use kck_testing::postgres::TestDatabase;

static COMPUTED: AtomicUsize = AtomicUsize::new(0);

#[primer(key = "reading/{n}")]
async fn reading(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
    COMPUTED.fetch_add(1, Ordering::SeqCst);
    Ok(n * 10)
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

/// Runs `attempt` until it succeeds, at most `tries` times: a pool hands
/// out each connection that died with the server once before discarding it.
async fn until_ok<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    tries: usize,
    mut attempt: impl FnMut() -> F,
) -> T {
    let mut last = String::new();
    for _ in 0..tries {
        match attempt().await {
            Ok(value) => return value,
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still failing after {tries} tries: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_gives_transient_errors_then_recovers_by_itself() {
    let Some(cluster) = TestDatabase::own_cluster() else {
        return;
    };
    let db = TestDatabase::create_in(&cluster).await;
    let store = PgStore::builder(db.url())
        .pool_size(4)
        .connect_timeout(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(200))
        .connect()
        .await
        .expect("connects");
    let cache = Cache::builder()
        .store(store)
        .build()
        .expect("valid primers");
    assert_eq!(*reading(&cache, 1).await.unwrap(), 10);

    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap()
        .expect("the server stops");

    // Down: what needs the database fails with a typed, transient error.
    let error = cache.entry(&key("reading/1")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Store);
    assert!(error.is_transient(), "{error}");
    let error = reading(&cache, 2).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Store, "{error}");
    assert!(error.is_transient(), "{error}");

    let resuming = cluster.clone();
    tokio::task::spawn_blocking(move || resuming.resume())
        .await
        .unwrap()
        .expect("the server starts again");

    // Back: the same cache recovers, and what was stored is still there.
    let first = key("reading/1");
    let stored = until_ok(50, || cache.entry(&first)).await;
    assert_eq!(stored.map(|entry| entry.value), Some(b"10".to_vec()));
    let computed = COMPUTED.load(Ordering::SeqCst);
    assert_eq!(*until_ok(50, || reading(&cache, 2)).await, 20);
    assert_eq!(*reading(&cache, 1).await.unwrap(), 10);
    assert_eq!(
        COMPUTED.load(Ordering::SeqCst),
        computed + 1,
        "only the new key was computed"
    );

    // The listener is back too: a write by another process reaches this
    // cache's memo.
    let other = Cache::builder()
        .store(PgStore::connect(db.url()).await.expect("connects"))
        .build()
        .expect("valid primers");
    let version = other.set(&reading::key(1), 99).await.unwrap();
    until_ok(100, || async {
        let value = *reading(&cache, 1).await.map_err(|e| e.to_string())?;
        if value == 99 {
            Ok(())
        } else {
            Err(format!("still {value} after the write of {version}"))
        }
    })
    .await;
}
