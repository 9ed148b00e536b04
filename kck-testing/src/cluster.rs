//! [`TestCluster`]: several test caches ("processes") on one store.

use std::sync::Arc;
use std::time::Duration;

use kck_core::Key;
use kck_core::clock::{MockClock, Timestamp};
use kck_core::storage::{FailedJob, PendingJob};

use crate::cache::{TestCache, TestCacheBuilder, settle};

/// Several [`TestCache`]s on one store, with one [`MockClock`] and one set
/// of stubs: the processes of a deployment (web servers, workers) in one
/// test. Built by [`TestCacheBuilder::build_cluster`] (memory) or
/// [`TestCacheBuilder::build_cluster_on_postgres`].
///
/// Index it for one process: `cluster[0]` is a [`TestCache`], to read
/// through, to settle alone (its scheduler and worker only), or to ask what
/// it computed. The cluster's own methods cover every process: moving the
/// clock, settling all of them, counting computations wherever they ran.
///
/// ```
/// # use kck_core::{primer, Ctx};
/// # use kck_testing::TestCache;
/// #[primer(key = "inventory/{shop}")]
/// async fn inventory(_ctx: &Ctx, shop: u32) -> Result<u32, kck_core::Error> {
///     Ok(shop * 3)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cluster = TestCache::builder().build_cluster(2);
/// let (web, worker) = (&cluster[0], &cluster[1]);
/// assert_eq!(*inventory(web, 4).await.unwrap(), 12);
/// assert_eq!(*inventory(worker, 4).await.unwrap(), 12); // from the store
/// cluster.assert_computed(&inventory::key(4).into(), 1);
/// web.assert_computed_once(&inventory::key(4).into());
/// worker.assert_not_computed(&inventory::key(4).into());
/// # }
/// ```
pub struct TestCluster {
    processes: Vec<TestCache>,
    clock: Arc<MockClock>,
}

impl TestCluster {
    /// # Panics
    ///
    /// If there is no process.
    pub(crate) fn new(processes: Vec<TestCache>, clock: Arc<MockClock>) -> Self {
        assert!(
            !processes.is_empty(),
            "kck-testing: a cluster needs at least one process"
        );
        TestCluster { processes, clock }
    }

    /// A builder: stubs, registry, store, then
    /// [`build_cluster`](TestCacheBuilder::build_cluster).
    pub fn builder() -> TestCacheBuilder {
        TestCacheBuilder::new()
    }

    /// The processes, in the order they were built.
    pub fn processes(&self) -> &[TestCache] {
        &self.processes
    }

    /// The mock clock of every process.
    pub fn clock(&self) -> &MockClock {
        &self.clock
    }

    /// Moves the clock of every process forward.
    pub fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    /// Now, by the mock clock.
    pub fn now(&self) -> Timestamp {
        self.processes[0].now()
    }

    /// Runs every process until all are idle at the mock clock's time: each
    /// in turn waits for its computations, ticks its scheduler and runs the
    /// jobs due now, from the queue they share, until a whole round finds
    /// nothing to do. See [`TestCache::settle`].
    ///
    /// # Panics
    ///
    /// If the store or queue fails, or the cluster never settles.
    pub async fn settle(&self) {
        settle(&self.processes).await;
    }

    /// Waits until every process has heard of every change made so far, by
    /// any of them. On the memory store they hear at once; on PostgreSQL
    /// through `LISTEN`, a moment later. [`settle`](TestCluster::settle)
    /// and stub changes wait for it themselves; call it after writing
    /// through one process (a computation, `set`, `remove`) before reading
    /// the product through another that read it before.
    ///
    /// # Panics
    ///
    /// If the store fails.
    pub async fn sync(&self) {
        for process in &self.processes {
            crate::cache::hear_changes(process.cache()).await;
        }
    }

    /// How many times the value of `key` was computed and stored, by every
    /// process together.
    pub fn computed(&self, key: &Key) -> usize {
        self.processes.iter().map(|test| test.computed(key)).sum()
    }

    /// Asserts `key` was computed exactly `times` times, by every process
    /// together.
    ///
    /// # Panics
    ///
    /// If it was not, saying how often each process computed it.
    #[track_caller]
    pub fn assert_computed(&self, key: &Key, times: usize) {
        let each: Vec<usize> = self.processes.iter().map(|p| p.computed(key)).collect();
        let computed: usize = each.iter().sum();
        assert!(
            computed == times,
            "expected `{key}` to be computed {times} time(s) in all, it was computed {computed} time(s): {each:?} by process"
        );
    }

    /// The jobs waiting to run in the queue the processes share, once
    /// every process's computations have ended; see
    /// [`TestCache::pending_jobs`].
    ///
    /// # Panics
    ///
    /// If the queue fails.
    pub async fn pending_jobs(&self) -> Vec<PendingJob> {
        self.wait_idle().await;
        self.processes[0].pending_jobs().await
    }

    /// The jobs kept as failed in the queue the processes share.
    ///
    /// # Panics
    ///
    /// If the queue fails.
    pub async fn failed_jobs(&self) -> Vec<FailedJob> {
        self.wait_idle().await;
        self.processes[0].failed_jobs().await
    }

    /// Waits until no process computes or queues anything.
    async fn wait_idle(&self) {
        for process in &self.processes {
            process.cache().wait_idle().await;
        }
    }
}

impl std::ops::Index<usize> for TestCluster {
    type Output = TestCache;

    fn index(&self, process: usize) -> &TestCache {
        &self.processes[process]
    }
}
