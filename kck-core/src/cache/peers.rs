//! How this cache shares the store with other caches: who it is as a lease
//! holder and how long its leases last, the watcher the store tells of
//! changes, how long its copies may still be served once the store goes
//! quiet, and the flights waiting on another cache's computation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Timestamp;
use crate::key::Key;
use crate::storage::{CODE_VERSION_ANNOUNCE, ChangeWatcher};

/// This cache among the caches sharing the store.
pub(crate) struct Peers {
    /// Flights waiting for another cache's computation, by key.
    waiting: Mutex<HashMap<Key, Arc<Notify>>>,
    /// Keeps the store's watcher alive as long as the cache.
    pub(crate) watcher: Arc<dyn ChangeWatcher>,
    /// Who this cache is, as a lease holder.
    pub(crate) holder: String,
    pub(crate) lease_ttl: Duration,
    /// How long after the store stopped reporting changes the memo's
    /// copies may still be served when the store cannot be reached.
    pub(crate) serve_stale_on_store_error: Duration,
    /// When this cache was built: its code's start, which decides whose
    /// code is the newest in a rolling deploy
    /// ([`Coordination::newest_code_version`](crate::storage::Coordination::newest_code_version)).
    pub(crate) started_at: Timestamp,
    /// When this cache last said, per primer, that its code version is
    /// there.
    announced: Mutex<HashMap<&'static str, Timestamp>>,
}

impl Peers {
    pub(crate) fn new(
        watcher: Arc<dyn ChangeWatcher>,
        holder: String,
        lease_ttl: Duration,
        serve_stale_on_store_error: Duration,
        started_at: Timestamp,
    ) -> Self {
        Peers {
            waiting: Mutex::default(),
            watcher,
            holder,
            lease_ttl,
            serve_stale_on_store_error,
            started_at,
            announced: Mutex::default(),
        }
    }

    /// Whether it is time to say again that this cache's code version of
    /// `primer` is there (at most every [`CODE_VERSION_ANNOUNCE`]); if so,
    /// counts it as said at `now`.
    pub(crate) fn announce_due(&self, primer: &'static str, now: Timestamp) -> bool {
        let mut announced = self
            .announced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match announced.get(primer) {
            Some(last) if *last + CODE_VERSION_ANNOUNCE > now => false,
            _ => {
                announced.insert(primer, now);
                true
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What to wait on for news of `key`. Create the `notified()` future
    /// before checking the store, so no news is missed in between.
    pub(crate) fn waiter(&self, key: &Key) -> Arc<Notify> {
        self.lock().entry(key.clone()).or_default().clone()
    }

    /// Done waiting on `key`.
    pub(crate) fn forget(&self, key: &Key, waiter: Arc<Notify>) {
        let mut waiting = self.lock();
        drop(waiter);
        if waiting.get(key).is_some_and(|n| Arc::strong_count(n) == 1) {
            waiting.remove(key);
        }
    }

    /// News of `key`: wake whoever waits.
    pub(crate) fn wake(&self, key: &Key) {
        if let Some(waiter) = self.lock().get(key) {
            waiter.notify_waiters();
        }
    }
}
