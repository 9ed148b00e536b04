//! Test helpers for [kck](kck_core): a cache on the memory store with a
//! mock clock and an event recorder, stubs for the primers your primer under
//! test depends on, and assertions on what was computed.
//!
//! ```
//! use std::sync::Arc;
//! use kck_core::{primer, Ctx};
//! use kck_testing::TestCache;
//!
//! #[derive(Debug, Clone, thiserror::Error)]
//! #[error("the partner API is down")]
//! struct ApiDown;
//!
//! /// Calls a remote API: never in tests.
//! #[primer(key = "exchange_rate/{currency}")]
//! async fn exchange_rate(_ctx: &Ctx, currency: String) -> Result<f64, ApiDown> {
//!     unreachable!("tests stub this primer")
//! }
//!
//! /// The primer under test.
//! #[primer(key = "price_in/{currency}/{cents}", depends_on = [exchange_rate])]
//! async fn price_in(ctx: &Ctx, currency: String, cents: u64) -> Result<u64, kck_core::Error> {
//!     let rate = exchange_rate(ctx, currency).await?;
//!     Ok((cents as f64 * *rate).round() as u64)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let test = TestCache::builder()
//!     .stub_value(exchange_rate::key("EUR".into()), 0.5)
//!     .stub_error(exchange_rate::key("XXX".into()), ApiDown)
//!     .build();
//!
//! assert_eq!(*price_in(&test, "EUR".into(), 1000).await.unwrap(), 500);
//! assert_eq!(*price_in(&test, "EUR".into(), 1000).await.unwrap(), 500);
//! test.assert_computed_once(&price_in::key("EUR".into(), 1000));
//! test.assert_stub_read(&exchange_rate::key("EUR".into()));
//!
//! let error = price_in(&test, "XXX".into(), 1000).await.unwrap_err();
//! assert!(error.to_string().contains("the partner API is down"));
//! # }
//! ```

pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
mod recorder;
mod stub;

use std::sync::Arc;
use std::time::Duration;

use kck_core::clock::{Clock, MockClock, Timestamp};
use kck_core::event::Event;
use kck_core::primer::Registry;
use kck_core::refresh::{Scheduler, SchedulerBuilder, TickReport, Worker, WorkerBuilder};
use kck_core::storage::{MemoryStore, Storage};
use kck_core::{Cache, CacheBuilder, Key, Primer, Scope, ScopeRef, TypedKey};

pub use recorder::EventRecorder;
use stub::Stubs;

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
        for _ in 0..1000 {
            self.cache.wait_idle().await;
            let queued = self.tick().await.queued();
            let ran = self
                .worker
                .run_due()
                .await
                .unwrap_or_else(|error| panic!("kck-testing: the queue failed: {error}"));
            self.cache.wait_idle().await;
            if ran == 0 && queued == 0 {
                return;
            }
        }
        panic!("kck-testing: the cache did not settle: jobs kept causing jobs for 1000 rounds");
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

    /// Changes what the stub of `key` returns from now on (the cached value
    /// stays until it is refreshed). The primer must have been stubbed when
    /// the cache was built.
    ///
    /// # Panics
    ///
    /// If the primer of `key` was not stubbed at build time.
    #[track_caller]
    pub fn set_stub_value<P: Primer>(&self, key: TypedKey<P>, value: P::Value)
    where
        P::Value: Clone,
    {
        self.stubs.set_value(key, move || Ok(value.clone()));
    }
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

/// Builds a [`TestCache`].
pub struct TestCacheBuilder {
    registry: Option<Registry>,
    store: Option<Storage>,
    worker: Option<Box<dyn FnOnce(WorkerBuilder) -> WorkerBuilder>>,
    scheduler: Option<Box<dyn FnOnce(SchedulerBuilder) -> SchedulerBuilder>>,
    start: Timestamp,
    stubs: Stubs,
    configure: Vec<Box<dyn FnOnce(CacheBuilder) -> CacheBuilder>>,
}

impl TestCacheBuilder {
    fn new() -> Self {
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
    /// leases would follow the mock clock).
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
    /// key (reported as [`kck_core::Error::Panicked`]).
    pub fn stub_value<P: Primer>(mut self, key: TypedKey<P>, value: P::Value) -> Self
    where
        P::Value: Clone,
    {
        self.stubs.add_value(key, move || Ok(value.clone()));
        self
    }

    /// The primer of `key` fails with `error` for `key`'s parameters.
    pub fn stub_error<P: Primer>(mut self, key: TypedKey<P>, error: P::Error) -> Self
    where
        P::Error: Clone + Sync,
    {
        self.stubs.add_value(key, move || Err(error.clone()));
        self
    }

    /// Primer `P` calls `stub` instead of running, for every parameter set
    /// without a [`stub_value`](TestCacheBuilder::stub_value).
    pub fn stub_fn<P: Primer>(
        mut self,
        stub: impl Fn(P::Params) -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) -> Self {
        self.stubs.set_fallback::<P>(stub);
        self
    }

    /// Adjusts the worker [`TestCache::settle`] runs the queue with: its
    /// retries, its job timeout.
    pub fn worker(mut self, f: impl FnOnce(WorkerBuilder) -> WorkerBuilder + 'static) -> Self {
        self.worker = Some(Box::new(f));
        self
    }

    /// Adjusts the scheduler [`TestCache::settle`] ticks: how long until
    /// unread products retire, how often domains are evaluated.
    pub fn scheduler(
        mut self,
        f: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder + 'static,
    ) -> Self {
        self.scheduler = Some(Box::new(f));
        self
    }

    /// Adjusts the underlying [`CacheBuilder`]: state, listeners, back-off.
    pub fn configure(mut self, f: impl FnOnce(CacheBuilder) -> CacheBuilder + 'static) -> Self {
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
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(clock.clone())).into());
        let recorder = EventRecorder::default();
        let mut builder = Cache::builder()
            .clock(clock.clone())
            .store(store)
            .local_worker(false)
            .local_scheduler(false)
            .on_event(recorder.listener());
        if let Some(registry) = self.registry {
            builder = builder.registry(registry);
        }
        builder = self.stubs.install(builder);
        for configure in self.configure {
            builder = configure(builder);
        }
        let cache = match builder.build() {
            Ok(cache) => cache,
            Err(error) => panic!("kck-testing: cannot build the test cache: {error}"),
        };
        let mut worker = Worker::builder(&cache).id("kck-testing");
        if let Some(configure) = self.worker {
            worker = configure(worker);
        }
        let mut scheduler = Scheduler::builder(&cache);
        if let Some(configure) = self.scheduler {
            scheduler = configure(scheduler);
        }
        TestCache {
            worker: worker.build(),
            scheduler: scheduler.build(),
            cache,
            clock,
            recorder,
            stubs: self.stubs,
        }
    }
}
