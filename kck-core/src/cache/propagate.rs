//! Changes travel to dependents: refreshed (`on_change = refresh`) or marked
//! stale (`on_change = invalidate`), and explicit invalidations cascade.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use super::Inner;
use super::flight::FlightMode;
use crate::erased::PrimerHandle;
use crate::error::Error;
use crate::event::{EventKind, InvalidationCause, RefreshReason};
use crate::key::Key;
use crate::primer::OnChange;
use crate::store::{ContentHash, EntryPatch, Expect, Saved};

impl Inner {
    /// The value of `key` changed to one hashed `hash`: act on each
    /// dependent that saw another value, according to its primer's
    /// `on_change`. A dependent that already read this value (it was
    /// computed meanwhile) is left alone.
    pub(crate) async fn value_changed(self: &Arc<Self>, key: &Key, hash: ContentHash) {
        let dependents = match self.store.dependents(key).await {
            Ok(dependents) => dependents,
            Err(error) => {
                let error = Error::Store(error);
                return self.events.emit(key, EventKind::Failed { error });
            }
        };
        for edge in dependents {
            if edge.seen == Some(hash) {
                continue;
            }
            let dependent = edge.key;
            let handle = match self.registry.handle(dependent.primer()) {
                Ok(handle) => *handle,
                Err(error) => {
                    self.events.emit(&dependent, EventKind::Failed { error });
                    continue;
                }
            };
            let from = key.clone();
            match handle.def.policy.on_change {
                OnChange::Refresh => {
                    let reason = RefreshReason::DependencyChanged { from };
                    self.request_refresh(&dependent, handle, reason);
                }
                OnChange::Invalidate => {
                    let cause = InvalidationCause::DependencyChanged { from };
                    if let Err(error) = self.mark_stale(&dependent, cause).await {
                        self.events.emit(&dependent, EventKind::Failed { error });
                    }
                }
            }
        }
    }

    /// Refreshes `key` in the background, once: if a flight is running, asks
    /// it to run again afterwards instead of starting another.
    pub(crate) fn request_refresh(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        reason: RefreshReason,
    ) {
        let started = self.memo.update(key, |slot| match &slot.flight {
            Some(flight) => {
                flight.request_rerun(reason.clone());
                Ok(false)
            }
            None => self
                .start_flight(slot, key, handle, FlightMode::Refresh, None)
                .map(|_| true),
        });
        match started {
            Ok(true) => self.events.emit(key, EventKind::RefreshStarted { reason }),
            Ok(false) => {}
            Err(error) => self.events.emit(key, EventKind::Failed { error }),
        }
    }

    /// Marks the entry of `key` stale from now on; returns whether there was
    /// an entry. A computation of `key` running meanwhile loses its write.
    pub(crate) async fn mark_stale(
        self: &Arc<Self>,
        key: &Key,
        cause: InvalidationCause,
    ) -> Result<bool, Error> {
        let patch = EntryPatch::stale_at(self.clock.now());
        match self.store.patch(key, patch, Expect::Any).await? {
            Saved::Written(version) => {
                self.memo.observe(key, version);
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
            for edge in self.store.dependents(&key).await? {
                if seen.insert(edge.key.clone()) {
                    let cause = InvalidationCause::Cascade { from: key.clone() };
                    queue.push_back((edge.key, cause));
                }
            }
        }
        Ok(marked)
    }
}
