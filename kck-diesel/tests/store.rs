//! PgStore keeps the contract of every port, reports an unreachable database
//! clearly, and keeps the memos of caches on other connections right.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kck_core::augment::{Augment, Augmented};
use kck_core::clock::{MockClock, Timestamp};
use kck_core::event::Event;
use kck_core::storage::{Storage, StoreError};
use kck_core::{Cache, Ctx, primer};
use kck_diesel::{ConnectError, PgStore};
use kck_testing::conformance;
use kck_testing::postgres::TestDatabase;

/// A new database and the storage of a `PgStore` on it, or `None` where
/// PostgreSQL is not available (see `TestDatabase`).
async fn postgres_storage() -> Option<(TestDatabase, Storage)> {
    let db = TestDatabase::create().await?;
    let store = PgStore::connect(db.url()).await.expect("connects");
    Some((db, Storage::from(store)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_entries_suite() {
    let Some((_db, storage)) = postgres_storage().await else {
        return;
    };
    conformance::check_entries(&**storage.entries()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_timetable_suite() {
    let Some((_db, storage)) = postgres_storage().await else {
        return;
    };
    conformance::check_timetable(&storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_coordination_suite() {
    let Some((_db, storage)) = postgres_storage().await else {
        return;
    };
    conformance::check_coordination(&storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_catalog_suite() {
    let Some((_db, storage)) = postgres_storage().await else {
        return;
    };
    conformance::check_catalog(&storage).await;
}

#[tokio::test]
async fn connecting_to_an_unreachable_database_is_a_clear_transient_error() {
    // Nothing listens on port 1.
    let error = PgStore::builder("postgres://kck@127.0.0.1:1/kck")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect_err("nothing to connect to");
    assert!(error.is_transient(), "{error}");
    assert!(matches!(error, ConnectError::Unreachable { .. }), "{error}");
    let message = StoreError::from(error).to_string();
    assert!(
        message.starts_with("store unavailable: cannot reach PostgreSQL at 127.0.0.1:1/kck: "),
        "{message}"
    );
    assert!(
        message.contains("Connection refused") || message.contains("connect"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_twice_runs_the_migrations_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (first, second) = tokio::join!(PgStore::connect(db.url()), PgStore::connect(db.url()));
    first.expect("the first connects");
    second.expect("the second connects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_queue_suite() {
    let Some((_db, storage)) = postgres_storage().await else {
        return;
    };
    let queue = storage.queue().expect("PgStore holds the queue").clone();
    conformance::check_queue(queue).await;
}

static STEADY: AtomicUsize = AtomicUsize::new(0);

/// A product whose refreshes always find the same value.
#[primer(key = "steady/{n}", stale_after = "1m", expire_after = "2m")]
async fn steady(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
    STEADY.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

/// A cache on its own connection to `url`, as another process would have.
async fn process_cache(url: &str, clock: &Arc<MockClock>, events: Option<Events>) -> Cache {
    let store = PgStore::connect(url).await.expect("connects");
    let mut builder = Cache::builder()
        .store(store)
        .clock(clock.clone())
        .local_worker(false)
        .local_scheduler(false);
    if let Some(events) = events {
        builder = builder.on_event(move |event: &Event| {
            events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event.kind.name());
        });
    }
    builder.build().expect("valid primers")
}

type Events = Arc<Mutex<Vec<&'static str>>>;

fn taken(events: &Events) -> Vec<&'static str> {
    std::mem::take(&mut *events.lock().unwrap_or_else(PoisonError::into_inner))
}

/// A refresh that finds the same value is not announced to other processes
/// (their copies of the value are right); a copy whose deadlines passed is
/// checked with the store, which holds the newer deadlines, instead of
/// being refreshed or recomputed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_outdated_by_unannounced_refreshes_catch_up_from_the_store() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let clock = Arc::new(MockClock::new(Timestamp::from_unix_micros(
        1_800_000_000_000_000,
    )));
    let events: Events = Arc::default();
    let a = process_cache(db.url(), &clock, None).await;
    let b = process_cache(db.url(), &clock, Some(events.clone())).await;
    let key = steady::key(7);

    assert_eq!(*steady(&a, 7).await.expect("computed"), 7);
    assert_eq!(*steady(&b, 7).await.expect("loaded"), 7);
    assert_eq!(STEADY.load(Ordering::SeqCst), 1);
    assert_eq!(taken(&events), ["miss", "loaded"]);

    // At 50 s, `a` refreshes: same value, new deadlines (stale at 110 s).
    clock.advance(Duration::from_secs(50));
    a.refresh(&key).await.expect("refreshed");
    assert_eq!(STEADY.load(Ordering::SeqCst), 2);

    // At 70 s, `b`'s copy looks stale: it serves it, finds the newer entry
    // fresh in the store, and queues nothing.
    clock.advance(Duration::from_secs(20));
    assert_eq!(*steady(&b, 7).await.expect("served"), 7);
    b.wait_idle().await;
    assert_eq!(taken(&events), ["stale-served", "loaded"]);
    assert_eq!(b.queue().next_due().await.expect("asked"), None);
    assert_eq!(steady(&b, 7).await.ok().as_deref(), Some(&7));
    assert_eq!(taken(&events), ["hit"], "the newer entry replaced the copy");

    // At 100 s `a` refreshes again (expires at 220 s); at 175 s `b`'s copy
    // (of 50 s) has expired: `b` loads the entry instead of recomputing.
    clock.advance(Duration::from_secs(30));
    a.refresh(&key).await.expect("refreshed");
    clock.advance(Duration::from_secs(75));
    assert_eq!(*steady(&b, 7).await.expect("served"), 7);
    b.wait_idle().await;
    assert_eq!(STEADY.load(Ordering::SeqCst), 3, "b computed nothing");
    assert_eq!(taken(&events), ["miss", "loaded", "refresh-queued"]);
    assert!(
        b.queue().next_due().await.expect("asked").is_some(),
        "stale in the store too: a refresh is queued"
    );
}

/// A counter that augments in place.
#[primer(key = "counter/{n}", augment)]
async fn counter(_ctx: &Ctx, n: u32) -> Result<u64, std::convert::Infallible> {
    Ok(u64::from(n))
}

impl Augment for counter {
    type Delta = u64;

    fn augment(count: &u64, add: &u64) -> Option<u64> {
        Some(count + add)
    }
}

/// Two caches on their own connections, as two processes, augment one
/// product at once: compare-and-set makes the losers try again from the
/// winner's value, and no delta is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_augments_from_two_connections_lose_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let clock = Arc::new(MockClock::new(Timestamp::from_unix_micros(
        1_800_000_000_000_000,
    )));
    let events: Events = Arc::default();
    let a = process_cache(db.url(), &clock, Some(events.clone())).await;
    let b = process_cache(db.url(), &clock, Some(events.clone())).await;
    let key = counter::key(0);
    assert_eq!(*counter(&a, 0).await.expect("computed"), 0);
    let augments = (1..=30_u64).map(|n| {
        let cache = if n % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        tokio::spawn(async move { cache.augment(&key, &n).await })
    });
    for outcome in futures_util::future::join_all(augments).await {
        let outcome = outcome.expect("no panic").expect("augmented");
        assert!(
            matches!(outcome, Augmented::Applied { changed: true, .. }),
            "{outcome:?}"
        );
    }
    // Each process hears of the other's last augment when it hears: until
    // then its memo may hold the value before it.
    for cache in [&a, &b] {
        cache.storage().coordination().sync().await.expect("synced");
    }
    assert_eq!(*b.get(&key).await.expect("read"), (1..=30).sum::<u64>());
    assert_eq!(*a.get(&key).await.expect("read"), (1..=30).sum::<u64>());
    let conflicts = taken(&events)
        .iter()
        .filter(|kind| **kind == "conflict")
        .count();
    println!("{conflicts} writes lost the race and were tried again");
}
