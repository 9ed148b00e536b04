//! What a cache runs in the background for itself: its own worker and
//! scheduler, each started once, on the first occasion a Tokio runtime is
//! there; and the count of jobs this cache queued against the count its own
//! worker has worked through, which [`Cache::wait_idle`](super::Cache::wait_idle)
//! waits on.
//!
//! The cache does not know what a worker or a scheduler is: the builder
//! hands it the tasks to start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use tokio::sync::watch;

/// Makes the future of a background task, to spawn.
pub(crate) type Task = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A task started at most once.
struct StartOnce {
    task: Option<Task>,
    started: AtomicBool,
}

impl StartOnce {
    fn new(task: Option<Task>) -> Self {
        StartOnce {
            task,
            started: AtomicBool::new(false),
        }
    }

    fn start(&self) {
        let Some(task) = &self.task else { return };
        if self.started.load(Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.started.swap(true, Ordering::SeqCst) {
            runtime.spawn(task());
        }
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }
}

/// The cache's own worker and scheduler, and how far that worker got.
pub(crate) struct Background {
    worker: StartOnce,
    scheduler: StartOnce,
    /// How many times this cache queued jobs, and how many of those its
    /// own worker has worked through.
    queued: AtomicU64,
    worked: watch::Sender<u64>,
}

impl Background {
    /// `worker` and `scheduler` are the tasks to run, if the cache runs
    /// them itself.
    pub(crate) fn new(worker: Option<Task>, scheduler: Option<Task>) -> Self {
        Background {
            worker: StartOnce::new(worker),
            scheduler: StartOnce::new(scheduler),
            queued: AtomicU64::new(0),
            worked: watch::Sender::new(0),
        }
    }

    /// Starts the worker and the scheduler, if the cache has them, they did
    /// not start yet, and a runtime is there to run them.
    pub(crate) fn start(&self) {
        self.worker.start();
        self.scheduler.start();
    }

    /// This cache queued jobs.
    pub(crate) fn note_queued(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times this cache has queued jobs so far.
    pub(crate) fn queued(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// The cache's own worker found nothing due and nothing running after
    /// the cache had queued `queued` times: all of that is worked through.
    pub(crate) fn worked_through(&self, queued: u64) {
        self.worked.send_if_modified(|worked| {
            let newer = *worked < queued;
            *worked = (*worked).max(queued);
            newer
        });
    }

    /// Waits until the cache's own worker has worked through what the cache
    /// queued so far; at once if it runs no worker of its own. Says whether
    /// it had to wait.
    pub(crate) async fn wait_worked(&self) -> bool {
        if !self.worker.started() {
            return false;
        }
        let queued = self.queued();
        let mut worked = self.worked.subscribe();
        if *worked.borrow() >= queued {
            return false;
        }
        // The sender lives as long as the cache: this cannot fail.
        let _ = worked.wait_for(|worked| *worked >= queued).await;
        true
    }
}
