//! [`TestCache`]: a cache with a mock clock, an event recorder and stubs,
//! and [`TestCacheBuilder`], which also builds several of them on one
//! store ([`TestCluster`]).

use std::sync::Arc;
use std::time::Duration;

use kck_core::clock::{Clock, MockClock, Timestamp};
use kck_core::event::Event;
use kck_core::primer::Registry;
use kck_core::refresh::{Scheduler, SchedulerBuilder, TickReport, Worker, WorkerBuilder};
use kck_core::storage::{FailedJob, MemoryStore, PendingJob, Storage};
use kck_core::{Cache, CacheBuilder, ErrorKind, Key, Primer, Scope, ScopeRef, TypedKey};

use crate::cluster::TestCluster;
use crate::recorder::EventRecorder;
use crate::stub::Stubs;

/// A [`Cache`] for tests: memory store, [`MockClock`], an
/// [`EventRecorder`], and stubs. It dereferences to the cache and is a
/// [`Scope`], so getters take it directly: `store_report(&test, 7, day)`.
pub struct TestCache {
    cache: Cache,
    clock: Arc<MockClock>,
    recorder: EventRecorder,
    stubs: Stubs,
    worker: Worker,
    scheduler: Scheduler,
    /// Keeps a throwaway database alive as long as the cache.
    #[cfg(feature = "postgres")]
    database: Option<Arc<crate::postgres::TestDatabase>>,
}

impl TestCache {
    /// A test cache with every linked primer and no stubs.
    ///
    /// # Panics
    ///
    /// If the registered primers are invalid (see
    /// [`RegistryBuilder::build`](kck_core::primer::RegistryBuilder::build)).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder, to stub primers or choose the registry.
    pub fn builder() -> TestCacheBuilder {
        TestCacheBuilder::new()
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The mock clock the cache decides freshness by.
    pub fn clock(&self) -> &MockClock {
        &self.clock
    }

    /// Moves the clock forward.
    pub fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    /// Now, by the mock clock.
    pub fn now(&self) -> Timestamp {
        self.cache.now()
    }

    /// Runs the cache until it is idle at the mock clock's time: the
    /// scheduler ticks (periodic refreshes, cron schedules and domains due
    /// now queue their jobs), every job due now runs, and the jobs those
    /// cause, and every computation ends. What is due later (retries, the
    /// next interval) waits until the clock gets there: `test.advance(..)`,
    /// then `settle()` again.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use kck_core::{primer, Ctx};
    /// # use kck_testing::TestCache;
    /// #[primer(key = "headcount/{team}", refresh = "5m")]
    /// async fn headcount(_ctx: &Ctx, team: u32) -> Result<u32, kck_core::Error> {
    ///     Ok(team * 10)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let test = TestCache::new();
    /// headcount(&test, 7).await.unwrap();
    /// test.advance(Duration::from_secs(5 * 60));
    /// test.settle().await;
    /// test.assert_computed(&headcount::key(7), 2);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If the store or queue fails, or the cache never settles (jobs keep
    /// causing jobs due now, 1000 rounds in a row).
    pub async fn settle(&self) {
        settle(std::slice::from_ref(self)).await;
    }

    /// One round of [`TestCache::settle`]: waits for the computations, ticks
    /// the scheduler, runs the jobs due now. Returns how many jobs were
    /// queued or run.
    pub(crate) async fn round(&self) -> usize {
        hear_changes(&self.cache).await;
        self.cache.wait_idle().await;
        let queued = self.tick().await.queued();
        let ran = self
            .worker
            .run_due()
            .await
            .unwrap_or_else(|error| panic!("kck-testing: the queue failed: {error}"));
        self.cache.wait_idle().await;
        queued + ran
    }

    /// Runs one tick of the scheduler, without running the jobs it queues
    /// (see [`Scheduler::tick`]).
    ///
    /// # Panics
    ///
    /// If the store or queue fails.
    pub async fn tick(&self) -> TickReport {
        self.scheduler
            .tick()
            .await
            .unwrap_or_else(|error| panic!("kck-testing: the scheduler failed: {error}"))
    }

    /// The recorder of every event of the cache.
    pub fn recorder(&self) -> &EventRecorder {
        &self.recorder
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.recorder.events()
    }

    /// Forgets the events so far.
    pub fn clear_events(&self) {
        self.recorder.clear();
    }

    /// How many times the value of `key` was computed and stored.
    pub fn computed(&self, key: &Key) -> usize {
        self.recorder.count(key, "computed")
    }

    /// The keys computed so far, in order, once each.
    pub fn computed_keys(&self) -> Vec<Key> {
        self.recorder.keys_with("computed")
    }

    /// Asserts `key` was computed exactly `times` times.
    ///
    /// # Panics
    ///
    /// If it was not, listing the events of `key`.
    #[track_caller]
    pub fn assert_computed(&self, key: &Key, times: usize) {
        let computed = self.computed(key);
        assert!(
            computed == times,
            "expected `{key}` to be computed {times} time(s), it was computed {computed} time(s); its events:\n{}",
            self.recorder.describe(key)
        );
    }

    /// Asserts `key` was computed exactly once.
    ///
    /// # Panics
    ///
    /// If it was not.
    #[track_caller]
    pub fn assert_computed_once(&self, key: &Key) {
        self.assert_computed(key, 1);
    }

    /// Asserts `key` was never computed.
    ///
    /// # Panics
    ///
    /// If it was.
    #[track_caller]
    pub fn assert_not_computed(&self, key: &Key) {
        self.assert_computed(key, 0);
    }

    /// The stubbed keys read so far (each stub call is one read), in order,
    /// once each.
    pub fn stub_reads(&self) -> Vec<Key> {
        self.stubs.reads()
    }

    /// Asserts the stub of `key` was read.
    ///
    /// # Panics
    ///
    /// If it was not, listing the stubs that were.
    #[track_caller]
    pub fn assert_stub_read(&self, key: &Key) {
        let reads = self.stub_reads();
        assert!(
            reads.contains(key),
            "expected the stub of `{key}` to be read; stubs read: {reads:?}"
        );
    }

    /// Asserts the stub of `key` was never read.
    ///
    /// # Panics
    ///
    /// If it was.
    #[track_caller]
    pub fn assert_stub_not_read(&self, key: &Key) {
        assert!(
            !self.stub_reads().contains(key),
            "expected the stub of `{key}` not to be read"
        );
    }

    /// Stubs `key` with `value` from now on, whether its primer was stubbed
    /// before or not (see [stubs](crate#stubs-that-change-mid-test)).
    ///
    /// If `key` has a value stored, it is recomputed now, from the stub,
    /// and its dependents are refreshed as after any change: their jobs are
    /// queued, and [`settle`](TestCache::settle) runs them. A key never
    /// read is left alone: its first read computes it from the stub.
    ///
    /// # Panics
    ///
    /// If the primer of `key` is not registered, or the store fails.
    pub async fn stub_value<P: Primer>(&self, key: TypedKey<P>, value: P::Value)
    where
        P::Value: Clone,
    {
        let key = Key::from(key);
        self.stubs
            .add_value::<P>(key.clone(), move || Ok(value.clone()));
        self.recompute(&[key]).await;
    }

    /// Makes `key` fail with `error` from now on; see
    /// [`TestCache::stub_value`] for what happens to its stored value. The
    /// recomputation fails like any refresh does: the primer's
    /// `stale_if_error` decides whether the last good value is still
    /// served.
    ///
    /// # Panics
    ///
    /// If the primer of `key` is not registered, or the store fails.
    pub async fn stub_error<P: Primer>(&self, key: TypedKey<P>, error: P::Error)
    where
        P::Error: Clone + Sync,
    {
        let key = Key::from(key);
        self.stubs
            .add_value::<P>(key.clone(), move || Err(error.clone()));
        self.recompute(&[key]).await;
    }

    /// Sends every key of primer `P` without a stub of its own to `stub`
    /// from now on, replacing the primer's previous `stub_fn`. The stored
    /// values of those keys are recomputed now, as with
    /// [`TestCache::stub_value`].
    ///
    /// # Panics
    ///
    /// If `P` is not registered, or the store fails.
    pub async fn stub_fn<P: Primer>(
        &self,
        stub: impl Fn(P::Params) -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) {
        self.stubs.set_fallback::<P>(stub);
        self.recompute_primer::<P>(true).await;
    }

    /// Removes the stub of `key`. It then goes to its primer's
    /// [`stub_fn`](TestCache::stub_fn) if there is one, or fails naming the
    /// key; once the primer has no stub left, the primer itself runs again.
    /// The stored value of `key` is recomputed now, as with
    /// [`TestCache::stub_value`]. Nothing happens if `key` had no stub.
    ///
    /// # Panics
    ///
    /// If the store fails.
    pub async fn unstub<P: Primer>(&self, key: &TypedKey<P>) {
        if self.stubs.remove_value::<P>(key.key()) {
            self.recompute(std::slice::from_ref(key.key())).await;
        }
    }

    /// Removes every stub of primer `P`: the primer itself runs again. The
    /// stored values of its keys are recomputed now, by the primer, as with
    /// [`TestCache::stub_value`]. Nothing happens if `P` had no stub.
    ///
    /// # Panics
    ///
    /// If the store fails.
    pub async fn unstub_primer<P: Primer>(&self) {
        if self.stubs.remove_primer::<P>() {
            self.recompute_primer::<P>(false).await;
        }
    }

    /// Recomputes the stored values of primer `P`'s keys, but for the keys
    /// with a stub of their own if `skip_own`.
    async fn recompute_primer<P: Primer>(&self, skip_own: bool) {
        let keys = self
            .cache
            .storage()
            .timetable()
            .keys_of(P::DEF.name)
            .await
            .unwrap_or_else(|error| panic!("kck-testing: the store failed: {error}"));
        let keys: Vec<Key> = keys
            .into_iter()
            .filter(|key| !(skip_own && self.stubs.has_value::<P>(key)))
            .collect();
        self.recompute(&keys).await;
    }

    /// Recomputes the stored values among `keys` now, as a refresh does,
    /// and waits until every cache sharing the stubs has heard of it.
    async fn recompute(&self, keys: &[Key]) {
        if self.recompute_here(keys).await == 0 {
            return;
        }
        for cache in self.stubs.caches() {
            hear_changes(&cache).await;
        }
    }

    /// Recomputes the stored values among `keys` here; returns how many
    /// there were.
    async fn recompute_here(&self, keys: &[Key]) -> usize {
        let mut recomputed = 0;
        for key in keys {
            let stored = self
                .cache
                .entry(key)
                .await
                .unwrap_or_else(|error| panic!("kck-testing: the store failed: {error}"));
            if stored.is_none() {
                continue;
            }
            recomputed += 1;
            match self.cache.refresh_key(key).await {
                Err(error) if error.kind() == ErrorKind::Store => {
                    panic!("kck-testing: the store failed: {error}")
                }
                // A stub's error, or a key left without a stub: the refresh
                // failed like any other, and the entry records it.
                Ok(()) | Err(_) => {}
            }
        }
        recomputed
    }

    /// The jobs waiting to run, in the order workers take them (highest
    /// priority first, then earliest due): their keys, reasons, due times
    /// and failed attempts, once this cache's computations, and the queueing
    /// they do in the background, have ended. Looking changes nothing. On a
    /// store shared by several caches, the queue is theirs too.
    ///
    /// ```
    /// # use kck_core::{primer, Ctx};
    /// # use kck_core::storage::RefreshReason;
    /// # use kck_testing::TestCache;
    /// #[primer(key = "visits/{page}")]
    /// async fn visits(_ctx: &Ctx, page: u32) -> Result<u64, kck_core::Error> {
    ///     Ok(u64::from(page) * 100)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let test = TestCache::new();
    /// visits(&test, 1).await.unwrap();
    /// test.invalidate(&visits::key(1)).await.unwrap();
    /// visits(&test, 1).await.unwrap(); // served stale: a refresh is queued
    /// visits(&test, 1).await.unwrap(); // merged into the same job
    /// let pending = test.pending_jobs().await;
    /// assert_eq!(pending.len(), 1);
    /// assert_eq!(pending[0].key, visits::key(1).into());
    /// assert_eq!(pending[0].reasons, [RefreshReason::Stale]);
    /// test.settle().await;
    /// assert!(test.pending_jobs().await.is_empty());
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If the queue fails.
    pub async fn pending_jobs(&self) -> Vec<PendingJob> {
        self.cache.wait_idle().await;
        self.cache
            .queue()
            .pending(usize::MAX)
            .await
            .unwrap_or_else(|error| panic!("kck-testing: the queue failed: {error}"))
    }

    /// The jobs kept as failed after their last attempt, with their errors,
    /// once this cache's computations have ended.
    ///
    /// # Panics
    ///
    /// If the queue fails.
    pub async fn failed_jobs(&self) -> Vec<FailedJob> {
        self.cache.wait_idle().await;
        self.cache
            .queue()
            .failed(usize::MAX)
            .await
            .unwrap_or_else(|error| panic!("kck-testing: the queue failed: {error}"))
    }
}

/// Waits until `cache` has been told of every change committed so far, by
/// any process (see [`Coordination::sync`](kck_core::storage::Coordination::sync)).
///
/// # Panics
///
/// If the store fails.
pub(crate) async fn hear_changes(cache: &Cache) {
    cache
        .storage()
        .coordination()
        .sync()
        .await
        .unwrap_or_else(|error| panic!("kck-testing: the store failed: {error}"));
}

/// Runs `processes` until every one of them is idle; see
/// [`TestCache::settle`].
pub(crate) async fn settle(processes: &[TestCache]) {
    for _ in 0..1000 {
        let mut work = 0;
        for process in processes {
            work += process.round().await;
        }
        if work == 0 {
            return;
        }
    }
    panic!("kck-testing: the cache did not settle: jobs kept causing jobs for 1000 rounds");
}

impl Default for TestCache {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for TestCache {
    type Target = Cache;
    fn deref(&self) -> &Cache {
        &self.cache
    }
}

impl Scope for TestCache {
    fn scope(&self) -> ScopeRef<'_> {
        self.cache.scope()
    }
}

/// Builds a [`TestCache`], or several on one store ([`TestCluster`]).
pub struct TestCacheBuilder {
    registry: Option<Registry>,
    store: Option<Storage>,
    worker: Option<Box<dyn Fn(WorkerBuilder) -> WorkerBuilder>>,
    scheduler: Option<Box<dyn Fn(SchedulerBuilder) -> SchedulerBuilder>>,
    start: Timestamp,
    stubs: Stubs,
    configure: Vec<Box<dyn Fn(CacheBuilder) -> CacheBuilder>>,
}

impl TestCacheBuilder {
    pub(crate) fn new() -> Self {
        TestCacheBuilder {
            registry: None,
            store: None,
            worker: None,
            scheduler: None,
            start: MockClock::default().now(),
            stubs: Stubs::default(),
            configure: Vec::new(),
        }
    }

    /// Uses exactly these primers instead of every linked one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Runs the cache on `store` instead of a new [`MemoryStore`] (whose
    /// leases would follow the mock clock). Every cache of a
    /// [`TestCluster`] built from this builder shares it.
    pub fn store(mut self, store: impl Into<Storage>) -> Self {
        self.store = Some(store.into());
        self
    }

    /// Starts the mock clock at `start` (default 2026-01-01T00:00:00Z).
    pub fn start_at(mut self, start: Timestamp) -> Self {
        self.start = start;
        self
    }

    /// The primer of `key` returns `value` for `key`'s parameters, and never
    /// runs. Other parameters of a stubbed primer go to the closure given to
    /// [`TestCacheBuilder::stub_fn`], or fail with a panic that names the
    /// key (reported as [`kck_core::Error::Panicked`]). Stubs can change
    /// later too: [`TestCache::stub_value`].
    pub fn stub_value<P: Primer>(self, key: TypedKey<P>, value: P::Value) -> Self
    where
        P::Value: Clone,
    {
        self.stubs
            .add_value::<P>(Key::from(key), move || Ok(value.clone()));
        self
    }

    /// The primer of `key` fails with `error` for `key`'s parameters.
    pub fn stub_error<P: Primer>(self, key: TypedKey<P>, error: P::Error) -> Self
    where
        P::Error: Clone + Sync,
    {
        self.stubs
            .add_value::<P>(Key::from(key), move || Err(error.clone()));
        self
    }

    /// Primer `P` calls `stub` instead of running, for every parameter set
    /// without a [`stub_value`](TestCacheBuilder::stub_value).
    pub fn stub_fn<P: Primer>(
        self,
        stub: impl Fn(P::Params) -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) -> Self {
        self.stubs.set_fallback::<P>(stub);
        self
    }

    /// Adjusts the worker [`TestCache::settle`] runs the queue with: its
    /// retries, its job timeout.
    pub fn worker(mut self, f: impl Fn(WorkerBuilder) -> WorkerBuilder + 'static) -> Self {
        self.worker = Some(Box::new(f));
        self
    }

    /// Adjusts the scheduler [`TestCache::settle`] ticks: how long until
    /// unread products retire, how often domains are evaluated.
    pub fn scheduler(mut self, f: impl Fn(SchedulerBuilder) -> SchedulerBuilder + 'static) -> Self {
        self.scheduler = Some(Box::new(f));
        self
    }

    /// Adjusts the underlying [`CacheBuilder`]: state, listeners, back-off.
    /// For a [`TestCluster`], it runs once for every cache.
    pub fn configure(mut self, f: impl Fn(CacheBuilder) -> CacheBuilder + 'static) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Builds the test cache.
    ///
    /// # Panics
    ///
    /// If the registry is invalid or a stubbed primer is not registered.
    pub fn build(self) -> TestCache {
        let clock = Arc::new(MockClock::new(self.start));
        let store = self.store.clone().unwrap_or_else(|| memory(&clock));
        self.process(store, &clock, "kck-testing")
    }

    /// Builds `processes` test caches on one store, with one mock clock
    /// and one set of stubs: several processes of a deployment, say two web
    /// servers and a worker, in one test. The store is a new
    /// [`MemoryStore`], or the one given to [`TestCacheBuilder::store`];
    /// the caches share its entries, its change notices, its leases and its
    /// queue, as processes on one PostgreSQL database do.
    ///
    /// # Panics
    ///
    /// If `processes` is 0, the registry is invalid or a stubbed primer is
    /// not registered.
    pub fn build_cluster(self, processes: usize) -> TestCluster {
        let clock = Arc::new(MockClock::new(self.start));
        let store = self.store.clone().unwrap_or_else(|| memory(&clock));
        let caches = (0..processes)
            .map(|n| self.process(store.clone(), &clock, &format!("kck-testing-{n}")))
            .collect();
        TestCluster::new(caches, clock)
    }

    /// Builds the test cache on a fresh PostgreSQL database of its own
    /// (see [`TestDatabase`](crate::postgres::TestDatabase)), dropped with
    /// the cache; `None`, after a loud message, when no PostgreSQL is
    /// available. Feature `postgres`.
    ///
    /// # Panics
    ///
    /// As [`TestCacheBuilder::build`]; when no PostgreSQL is available and
    /// `KCK_REQUIRE_POSTGRES=1`; when the database refuses connections.
    #[cfg(feature = "postgres")]
    pub async fn build_on_postgres(self) -> Option<TestCache> {
        let database = Arc::new(crate::postgres::TestDatabase::create().await?);
        let clock = Arc::new(MockClock::new(self.start));
        let store = Storage::from(database.connect().await);
        let mut test = self.process(store, &clock, "kck-testing");
        test.database = Some(database);
        Some(test)
    }

    /// [`TestCacheBuilder::build_cluster`] on a fresh PostgreSQL database:
    /// each process has a store (a connection pool and a `LISTEN`
    /// connection) of its own, as separate processes do. `None`, after a
    /// loud message, when no PostgreSQL is available. Feature `postgres`.
    ///
    /// # Panics
    ///
    /// As [`TestCacheBuilder::build_on_postgres`].
    #[cfg(feature = "postgres")]
    pub async fn build_cluster_on_postgres(self, processes: usize) -> Option<TestCluster> {
        let database = Arc::new(crate::postgres::TestDatabase::create().await?);
        let clock = Arc::new(MockClock::new(self.start));
        let mut caches = Vec::with_capacity(processes);
        for n in 0..processes {
            let store = Storage::from(database.connect().await);
            let mut test = self.process(store, &clock, &format!("kck-testing-{n}"));
            test.database = Some(database.clone());
            caches.push(test);
        }
        Some(TestCluster::new(caches, clock))
    }

    /// One test cache on `store`, with `clock` and the builder's stubs.
    fn process(&self, store: Storage, clock: &Arc<MockClock>, worker_id: &str) -> TestCache {
        let recorder = EventRecorder::default();
        let mut builder = Cache::builder()
            .clock(clock.clone())
            .store(store)
            .local_worker(false)
            .local_scheduler(false)
            .on_event(recorder.listener());
        if let Some(registry) = &self.registry {
            builder = builder.registry(registry.clone());
        }
        for configure in &self.configure {
            builder = configure(builder);
        }
        let cache = match builder.build() {
            Ok(cache) => cache,
            Err(error) => panic!("kck-testing: cannot build the test cache: {error}"),
        };
        self.stubs.attach(&cache);
        let mut worker = Worker::builder(&cache).id(worker_id);
        if let Some(configure) = &self.worker {
            worker = configure(worker);
        }
        let mut scheduler = Scheduler::builder(&cache);
        if let Some(configure) = &self.scheduler {
            scheduler = configure(scheduler);
        }
        TestCache {
            worker: worker.build(),
            scheduler: scheduler.build(),
            cache,
            clock: clock.clone(),
            recorder,
            stubs: self.stubs.clone(),
            #[cfg(feature = "postgres")]
            database: None,
        }
    }
}

/// A new memory store whose leases follow `clock`.
fn memory(clock: &Arc<MockClock>) -> Storage {
    Arc::new(MemoryStore::with_clock(clock.clone())).into()
}
