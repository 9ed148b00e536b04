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

static REFUSED_COMPUTED: AtomicUsize = AtomicUsize::new(0);

#[primer(key = "refused/{n}")]
async fn refused(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
    REFUSED_COMPUTED.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

/// Makes the database refuse every write of an entry whose key starts with
/// `prefix`, as it would refuse a value it cannot hold.
async fn refuse_writes(url: &str, prefix: &str) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let mut connection = AsyncPgConnection::establish(url)
        .await
        .expect("the test database accepts connections");
    let function = format!(
        "CREATE FUNCTION kck_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.key LIKE '{prefix}%' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; \
         RETURN NEW; END $$"
    );
    for statement in [
        function.as_str(),
        "CREATE TRIGGER kck_test_refuse BEFORE INSERT OR UPDATE ON kck_entries \
         FOR EACH ROW EXECUTE FUNCTION kck_test_refuse()",
    ] {
        diesel::sql_query(statement)
            .execute(&mut connection)
            .await
            .expect("the trigger is created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_store_refuses_is_an_error_to_the_reader_not_a_silent_recompute() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(db.url()).await.expect("connects");
    let recorder = kck_testing::EventRecorder::default();
    let cache = Cache::builder()
        .store(store)
        .on_event(recorder.listener())
        .build()
        .expect("valid primers");
    refuse_writes(db.url(), "refused/").await;

    let key = key("refused/1");
    for attempt in 1..=2 {
        let error = refused(&cache, 1)
            .await
            .expect_err("a value that cannot be stored is not served");
        assert_eq!(error.kind(), ErrorKind::SaveFailed, "{error}");
        assert!(!error.is_transient(), "{error}");
        assert_eq!(error.key(), Some(&key));
        assert!(
            error.to_string().contains("refused by a test trigger"),
            "{error}"
        );
        assert_eq!(recorder.count(&key, "failed"), attempt);
    }
    assert!(
        cache
            .entry(&key)
            .await
            .expect("the store answers")
            .is_none()
    );
    assert_eq!(REFUSED_COMPUTED.load(Ordering::SeqCst), 2);
}

#[primer(key = "warm/{n}")]
async fn warm(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
    Ok(n * 10)
}

/// Stops or starts `cluster` off the runtime's threads.
async fn set_running(cluster: &std::sync::Arc<kck_testing::postgres::Cluster>, running: bool) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || {
        if running {
            cluster.resume()
        } else {
            cluster.stop()
        }
    })
    .await
    .expect("the cluster control does not panic")
    .expect("the server stops or starts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_reads_ride_out_an_outage_and_see_what_changed_once_it_is_over() {
    let Some(cluster) = TestDatabase::own_cluster() else {
        return;
    };
    let db = TestDatabase::create_in(&cluster).await;
    let connect = || async {
        PgStore::builder(db.url())
            .pool_size(2)
            .connect_timeout(Duration::from_secs(2))
            .heartbeat(Duration::from_millis(200))
            .connect()
            .await
            .expect("connects")
    };
    let recorder = kck_testing::EventRecorder::default();
    let cache = Cache::builder()
        .store(connect().await)
        .serve_stale_on_store_error(Duration::from_secs(3600))
        .on_event(recorder.listener())
        .build()
        .expect("valid primers");
    let strict = Cache::builder()
        .store(connect().await)
        .serve_stale_on_store_error(Duration::ZERO)
        .build()
        .expect("valid primers");
    assert_eq!(*warm(&cache, 1).await.unwrap(), 10);
    assert_eq!(*warm(&strict, 1).await.unwrap(), 10);

    set_running(&cluster, false).await;

    // Down: every read of the warm product answers from memory, before and
    // after the cache notices that its store stopped reporting changes.
    let first = key("warm/1");
    for _ in 0..100 {
        assert_eq!(*warm(&cache, 1).await.expect("served from memory"), 10);
        if recorder.count(&first, "outage-served") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorder.count(&first, "outage-served") > 0);
    assert_eq!(*warm(&cache, 1).await.expect("served from memory"), 10);
    // Without a bound, once changes go unreported, the copy is not served.
    let error = until_ok(100, || async {
        match warm(&strict, 1).await {
            Ok(value) => Err(format!("still served {value}")),
            Err(error) => Ok(error),
        }
    })
    .await;
    assert!(error.is_transient(), "{error}");
    // A product never read here has nothing to fall back on.
    let error = warm(&cache, 2).await.unwrap_err();
    assert!(error.is_transient(), "{error}");

    set_running(&cluster, true).await;

    // Another process changes the product once the database is back: this
    // cache sees the change, and from then on never the older copy.
    let other = Cache::builder()
        .store(connect().await)
        .build()
        .expect("valid primers");
    let changed = warm::key(1);
    until_ok(50, || other.set(&changed, 99)).await;
    until_ok(100, || async {
        match warm(&cache, 1).await {
            Ok(value) if *value == 99 => Ok(()),
            Ok(value) => Err(format!("still {value}")),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    for _ in 0..20 {
        assert_eq!(*warm(&cache, 1).await.expect("the store is back"), 99);
    }
}
