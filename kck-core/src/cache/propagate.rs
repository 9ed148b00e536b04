//! Changes travel to dependents, as refresh jobs (the worker that runs one
//! applies the dependent's `on_change`), and explicit invalidations
//! cascade. Changes other caches made reach this cache's memo through its
//! [`Watcher`].

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Weak};

use super::Inner;
use super::freshness::{Freshness, classify};
use crate::erased::PrimerHandle;
use crate::error::Error;
use crate::event::{EventKind, InvalidationCause};
use crate::key::Key;
use crate::storage::{
    ChangeWatcher, ContentHash, EntryPatch, Expect, JobDelta, JobRequest, RefreshReason, Saved,
    Version,
};

impl Inner {
    /// The value of `key` changed to one hashed `hash`: queue a refresh of
    /// each dependent that read another value (a dependent computed
    /// meanwhile already read this one). The worker that runs it applies
    /// the dependent's `on_change`. A store that queues these jobs itself,
    /// with the write, needs nothing more.
    pub(crate) async fn value_changed(self: &Arc<Self>, key: &Key, hash: ContentHash) {
        self.value_changed_by(key, hash, &[]).await;
    }

    /// [`Inner::value_changed`], for a change made by `deltas`: the
    /// dependents' jobs carry them.
    pub(crate) async fn value_changed_by(
        self: &Arc<Self>,
        key: &Key,
        hash: ContentHash,
        deltas: &[JobDelta],
    ) {
        if self.ports.storage.queue_fed_by_saves() {
            return;
        }
        let dependents = match self.ports.entries().dependents(key).await {
            Ok(dependents) => dependents,
            Err(error) => {
                let error = Error::Store(error);
                return self.events.emit(key, EventKind::Failed { error });
            }
        };
        let now = self.clock.now();
        let jobs: Vec<JobRequest> = dependents
            .into_iter()
            .filter(|edge| edge.seen != Some(hash))
            .map(|edge| {
                let reason = RefreshReason::DependencyChanged { from: key.clone() };
                let mut job = JobRequest::new(edge.key, now, reason);
                job.deltas = deltas.to_vec();
                job
            })
            .collect();
        self.queue_refresh(jobs).await;
    }

    /// Queues refresh jobs, and tells; a failure is reported as an event
    /// of each key.
    pub(crate) async fn queue_refresh(self: &Arc<Self>, jobs: Vec<JobRequest>) {
        let keys: Vec<Key> = jobs.iter().map(|job| job.key.clone()).collect();
        if let Err(error) = self.try_queue_refresh(jobs).await {
            for key in &keys {
                let error = error.clone();
                self.events.emit(key, EventKind::Failed { error });
            }
        }
    }

    /// Queues refresh jobs, and tells.
    pub(crate) async fn try_queue_refresh(
        self: &Arc<Self>,
        jobs: Vec<JobRequest>,
    ) -> Result<(), Error> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.ports.queue.enqueue(&jobs).await?;
        self.background.note_queued();
        for job in jobs {
            let reason = job.reason;
            self.events
                .emit(&job.key, EventKind::RefreshQueued { reason });
        }
        self.background.start();
        Ok(())
    }

    /// Queues a refresh from a context that cannot wait (a read under a
    /// lock), on a task of its own that [`Cache::wait_idle`] waits for.
    pub(crate) fn queue_refresh_soon(self: &Arc<Self>, key: &Key, reason: RefreshReason) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let job = JobRequest::new(key.clone(), self.clock.now(), reason);
        let inner = self.clone();
        self.local.flights.begin();
        runtime.spawn(async move {
            inner.queue_refresh(vec![job]).await;
            inner.local.flights.end();
        });
    }

    /// The memo's copy of `key`, at `seen`, looks stale: queues its refresh,
    /// unless the store holds a newer entry that is still fresh. A shared
    /// store does not announce a write that kept the value (see
    /// [`ChangeWatcher::changed`](crate::storage::ChangeWatcher::changed)), so
    /// the copy's deadlines may be older than the entry's; the newer entry
    /// replaces the copy.
    pub(crate) fn check_stale_copy(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        seen: Version,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.clone();
        let key = key.clone();
        let epoch = self.local.memo.epoch();
        self.local.flights.begin();
        runtime.spawn(async move {
            let fresh = match inner.ports.entries().load(&key).await {
                Ok(Some(stored)) if stored.version > seen => inner
                    .decode(&key, handle, stored, epoch)
                    .is_some_and(|ready| classify(&ready, inner.clock.now()) == Freshness::Fresh),
                _ => false,
            };
            if !fresh {
                let job = JobRequest::new(key, inner.clock.now(), RefreshReason::Stale);
                inner.queue_refresh(vec![job]).await;
            }
            inner.local.flights.end();
        });
    }

    /// Marks the entry of `key` stale from now on; returns whether there was
    /// an entry. A computation of `key` running meanwhile loses its write.
    pub(crate) async fn mark_stale(
        self: &Arc<Self>,
        key: &Key,
        cause: InvalidationCause,
    ) -> Result<bool, Error> {
        let patch = EntryPatch::stale_at(self.clock.now());
        match self.ports.entries().patch(key, patch, Expect::Any).await? {
            Saved::Written(version) => {
                self.local.memo.observe(key, version);
                self.events.emit(key, EventKind::Invalidated { cause });
                Ok(true)
            }
            Saved::Conflict { .. } => Ok(false),
        }
    }

    /// Marks `key` and, transitively, everything that read it stale;
    /// returns how many entries were marked.
    pub(crate) async fn invalidate_cascade(self: &Arc<Self>, key: &Key) -> Result<usize, Error> {
        let mut queue = VecDeque::from([(key.clone(), InvalidationCause::Requested)]);
        let mut seen = HashSet::from([key.clone()]);
        let mut marked = 0;
        while let Some((key, cause)) = queue.pop_front() {
            if self.mark_stale(&key, cause).await? {
                marked += 1;
            }
            for edge in self.ports.entries().dependents(&key).await? {
                if seen.insert(edge.key.clone()) {
                    let cause = InvalidationCause::Cascade { from: key.clone() };
                    queue.push_back((edge.key, cause));
                }
            }
        }
        Ok(marked)
    }
}

/// The cache as the store sees it: told of every change.
pub(crate) struct Watcher {
    pub(crate) inner: Weak<Inner>,
}

impl ChangeWatcher for Watcher {
    fn changed(&self, key: &Key, version: Version) {
        if let Some(inner) = self.inner.upgrade() {
            inner.local.memo.observe(key, version);
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
            inner.local.memo.track(tracked, inner.clock.now());
        }
    }
}
