//! A refresh never loses a newer computed value to a stale compare-and-set
//! base. Two caches share a store; one rewrites a product with the same
//! value (a write that is not announced, so the other's memo keeps the
//! older version); then the source changes and the other refreshes: its
//! save conflicts with the unannounced write, and must be saved over it,
//! not dropped. The same for a cron tick, an interval refresh and
//! `Cache::refresh`, on the memory store and on PostgreSQL.
//!
//! PostgreSQL announces only writes that change a value, so there the
//! refresh starts from the older version and must save over the rewrite.
//! The memory store announces every write, so there the memo follows and
//! the refresh starts from the rewrite: the same outcome, by the other
//! path.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Source, SourceDown, source};
use kck_core::clock::MockClock;
use kck_core::refresh::Worker;
use kck_core::storage::{JobRequest, RefreshReason};
use kck_core::storage::{MemoryStore, Storage};
use kck_core::{Cache, Ctx, Key, primer};
use kck_diesel::PgStore;
use kck_testing::EventRecorder;
use kck_testing::postgres::TestDatabase;

#[primer(key = "hourly/{name}", refresh = "1h")]
async fn hourly(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "nightly/{name}", schedule = "0 3 * * *")]
async fn nightly(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "asked/{name}")]
async fn asked(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

/// Two caches on one store, as two processes, on one mock clock.
struct Pair {
    a: Cache,
    a_events: EventRecorder,
    b: Cache,
    clock: Arc<MockClock>,
    source: Arc<Source>,
    _database: Option<TestDatabase>,
}

fn cache(store: Storage, clock: &Arc<MockClock>, source: &Arc<Source>) -> (Cache, EventRecorder) {
    let recorder = EventRecorder::default();
    let cache = Cache::builder()
        .store(store)
        .clock(clock.clone())
        .state(source.clone())
        .local_worker(false)
        .local_scheduler(false)
        .on_event(recorder.listener())
        .build()
        .expect("valid primers");
    (cache, recorder)
}

impl Pair {
    fn on_memory() -> Pair {
        let clock = Arc::new(MockClock::default());
        let store = Storage::from(Arc::new(MemoryStore::with_clock(clock.clone())));
        Pair::of([store.clone(), store], clock, None)
    }

    async fn on_postgres() -> Option<Pair> {
        let database = TestDatabase::create().await?;
        let mut stores = Vec::new();
        for _ in 0..2 {
            let store = PgStore::connect(database.url())
                .await
                .expect("the test database accepts connections");
            stores.push(Storage::from(store));
        }
        let [a, b] = <[_; 2]>::try_from(stores).ok()?;
        Some(Pair::of(
            [a, b],
            Arc::new(MockClock::default()),
            Some(database),
        ))
    }

    fn of(stores: [Storage; 2], clock: Arc<MockClock>, database: Option<TestDatabase>) -> Pair {
        let source = Source::new();
        let [a, b] = stores;
        let (a, a_events) = cache(a, &clock, &source);
        let (b, _) = cache(b, &clock, &source);
        Pair {
            a,
            a_events,
            b,
            clock,
            source,
            _database: database,
        }
    }

    /// A computes `key` (1), B rewrites it with the same value, then the
    /// source moves on (2): what A's next refresh must store.
    async fn rewrite_unannounced(&self, key: &Key) {
        self.source.set("x", 1);
        self.a.refresh_key(key).await.expect("A computes");
        self.clock.advance(Duration::from_secs(60));
        self.b
            .refresh_key(key)
            .await
            .expect("B recomputes the same value");
        self.clock.advance(Duration::from_secs(60));
        self.source.set("x", 2);
    }

    /// A's worker runs one job of `key` for `reason`.
    async fn run_job(&self, key: &Key, reason: RefreshReason) {
        let job = JobRequest::new(key.clone(), self.a.now(), reason);
        self.a
            .queue()
            .enqueue(&[job])
            .await
            .expect("the queue takes the job");
        let ran = Worker::builder(&self.a).build().run_due().await;
        assert_eq!(ran.expect("the queue answers"), 1);
    }

    /// The stored value of `key` is A's newer one.
    async fn assert_stored_newer(&self, key: &Key) {
        let stored = self.a.entry(key).await.expect("the store answers");
        assert_eq!(stored.expect("an entry").value, b"2");
        assert_eq!(self.a_events.count(key, "conflict"), 0);
    }
}

async fn a_cron_tick(pair: Pair) {
    let key = nightly::key("x".into()).key().clone();
    pair.rewrite_unannounced(&key).await;
    pair.run_job(&key, RefreshReason::Schedule).await;
    pair.assert_stored_newer(&key).await;
}

async fn an_interval_refresh(pair: Pair) {
    let key = hourly::key("x".into()).key().clone();
    pair.rewrite_unannounced(&key).await;
    pair.run_job(&key, RefreshReason::Interval).await;
    pair.assert_stored_newer(&key).await;
}

async fn an_explicit_refresh(pair: Pair) {
    let key = asked::key("x".into());
    pair.rewrite_unannounced(key.key()).await;
    assert_eq!(*pair.a.refresh(&key).await.expect("A refreshes"), 2);
    pair.assert_stored_newer(key.key()).await;
}

macro_rules! on_both_stores {
    ($($name:ident => $scenario:ident,)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn on_memory() {
                $scenario(Pair::on_memory()).await;
            }

            #[tokio::test]
            async fn on_postgres() {
                if let Some(pair) = Pair::on_postgres().await {
                    $scenario(pair).await;
                }
            }
        }
    )*};
}

on_both_stores! {
    a_cron_tick_saves_over_an_unannounced_rewrite => a_cron_tick,
    an_interval_refresh_saves_over_an_unannounced_rewrite => an_interval_refresh,
    cache_refresh_saves_over_an_unannounced_rewrite => an_explicit_refresh,
}
