//! What this process holds of the cache: the memo of values and running
//! flights, who waits on whom, the count of running flights, the turns of
//! augments, and the pause points tests use. Nothing here is shared with
//! other processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Notify;

use super::flight::WaitGraph;
use super::memo::Memo;
use crate::key::Key;

/// The cache's in-process state.
pub(crate) struct Local {
    /// Values and running flights, by key.
    pub(crate) memo: Memo,
    /// Which flight waits on which, to refuse cycles.
    pub(crate) waits: WaitGraph,
    /// Running flights and jobs, for
    /// [`Cache::wait_idle`](super::Cache::wait_idle).
    pub(crate) flights: FlightCounter,
    /// The keys being augmented here, each behind a lock: augments of one
    /// key in one process take turns instead of racing.
    pub(crate) augmenting: Turns,
    pub(crate) hooks: Hooks,
}

impl Local {
    pub(crate) fn new(memo: Memo, hooks: Hooks) -> Self {
        Local {
            memo,
            waits: WaitGraph::default(),
            flights: FlightCounter::default(),
            augmenting: Turns::default(),
            hooks,
        }
    }
}

/// Pause points for tests that force an interleaving; empty in production.
#[derive(Default)]
pub(crate) struct Hooks {
    /// Awaited by a flight's task once its outcome is out (see
    /// [`CacheBuilder::__after_outcome`](super::CacheBuilder::__after_outcome)).
    pub(crate) after_outcome: Option<AfterOutcome>,
}

pub(crate) type AfterOutcome =
    Arc<dyn Fn(&Key) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// Counts running flights, so
/// [`Cache::wait_idle`](super::Cache::wait_idle) can wait for them.
#[derive(Default)]
pub(crate) struct FlightCounter {
    next_id: AtomicU64,
    running: AtomicUsize,
    idle: Notify,
}

impl FlightCounter {
    /// The id the next flight will get; flights with a larger id started
    /// after this call.
    pub(crate) fn watermark(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst)
    }

    pub(crate) fn begin(&self) -> u64 {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.next_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn end(&self) {
        if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub(crate) async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// One lock per key being augmented in this process.
#[derive(Default)]
pub(crate) struct Turns(Mutex<HashMap<Key, Weak<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// The lock of `key`, shared by everyone augmenting it now.
    pub(crate) fn of(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(turn) = turns.get(key).and_then(Weak::upgrade) {
            return turn;
        }
        turns.retain(|_, turn| turn.strong_count() > 0);
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        turns.insert(key.clone(), Arc::downgrade(&turn));
        turn
    }
}
