//! Other caches sharing the store: their changes reach this cache's memo,
//! and flights waiting on another cache's computation are woken when it
//! ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;

use super::Inner;
use crate::key::Key;
use crate::storage::{ChangeWatcher, Version};

/// Flights waiting for another cache's computation, by key.
#[derive(Default)]
pub(crate) struct Peers {
    waiting: Mutex<HashMap<Key, Arc<Notify>>>,
}

impl Peers {
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
    fn wake(&self, key: &Key) {
        if let Some(waiter) = self.lock().get(key) {
            waiter.notify_waiters();
        }
    }
}

/// The cache as the store sees it: told of every change.
pub(crate) struct Watcher {
    pub(crate) inner: Weak<Inner>,
}

impl ChangeWatcher for Watcher {
    fn changed(&self, key: &Key, version: Version) {
        if let Some(inner) = self.inner.upgrade() {
            inner.memo.observe(key, version);
            inner.peers.wake(key);
        }
    }

    fn released(&self, key: &Key) {
        if let Some(inner) = self.inner.upgrade() {
            inner.peers.wake(key);
        }
    }

    fn tracking(&self, tracked: bool) {
        if let Some(inner) = self.inner.upgrade() {
            inner.memo.track(tracked, inner.clock.now());
        }
    }
}
