//! How a worker is configured: [`WorkerBuilder`], and the worker a cache
//! runs for itself.

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::Worker;
use crate::backoff::Backoff;
use crate::cache::{Cache, CacheRef, Inner};

/// What a worker was built with.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) id: String,
    pub(super) concurrency: usize,
    pub(super) job_timeout: Duration,
    pub(super) attempts: u32,
    pub(super) backoff: Backoff,
    pub(super) lease: Duration,
    pub(super) poll: Duration,
    pub(super) grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: format!(
                "worker-{}-{:08x}",
                std::process::id(),
                foldhash::fast::RandomState::default().hash_one(std::process::id()) as u32
            ),
            concurrency: 8,
            job_timeout: Duration::from_secs(300),
            attempts: 5,
            backoff: Backoff::DEFAULT,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(30),
        }
    }
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    pub(super) cache: Cache,
    pub(super) config: Config,
    pub(super) shutdown: Option<BoxFuture<'static, ()>>,
}

impl WorkerBuilder {
    /// A name for this worker in the queue (default: `worker-<pid>-<random>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.config.id = id.into();
        self
    }

    /// How many jobs run at once (default 8).
    pub fn concurrency(mut self, jobs: usize) -> Self {
        self.config.concurrency = jobs.max(1);
        self
    }

    /// How long one job may run before it counts as a failed attempt
    /// (default 5 min). The computation is then stopped, not only no longer
    /// waited for: reads waiting for it get
    /// [`Error::TimedOut`](crate::Error::TimedOut), the key (and its lease
    /// in a shared store) is free for the next attempt, and the job is
    /// retried with back-off like any failure.
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.config.job_timeout = timeout;
        self
    }

    /// At most `attempts` attempts per job (default 5), the retries waiting
    /// `base`, doubling up to `max` (default 1 s to 5 min), plus up to a
    /// quarter more at random.
    pub fn retries(mut self, attempts: u32, base: Duration, max: Duration) -> Self {
        self.config.attempts = attempts.max(1);
        self.config.backoff = Backoff { base, max };
        self
    }

    /// How long a claim lasts without a heartbeat (default 30 s); it is
    /// renewed every third of that while the job runs.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// How often an idle worker looks at the queue when nothing wakes it
    /// (default 1 s). A queue that announces new jobs wakes it at once.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.config.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// How long [`Worker::run`] waits for running jobs after the shutdown
    /// signal (default 30 s); jobs still running then are stopped and given
    /// back to the queue (due, their attempt not counted), for the next
    /// worker to claim at once.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config.grace = grace;
        self
    }

    /// Stops the worker when `signal` completes.
    pub fn shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// The worker.
    pub fn build(self) -> Worker {
        Worker {
            source: CacheRef::Held(self.cache),
            config: Arc::new(self.config),
            shutdown: Mutex::new(self.shutdown),
        }
    }
}

impl Worker {
    /// A builder for a worker of `cache`.
    pub fn builder(cache: &Cache) -> WorkerBuilder {
        WorkerBuilder {
            cache: cache.clone(),
            config: Config::default(),
            shutdown: None,
        }
    }

    /// The worker a cache runs for itself, holding it only weakly: it ends
    /// with the cache.
    pub(crate) fn local(inner: Weak<Inner>, holder: &str) -> Worker {
        Worker {
            source: CacheRef::Local(inner),
            config: Arc::new(Config {
                id: format!("local-{holder}"),
                ..Config::default()
            }),
            shutdown: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
