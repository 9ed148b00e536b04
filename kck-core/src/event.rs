//! Events: every decision the cache makes, as data.
//!
//! Each event goes to `tracing` (target `kck`: hits and coalesced waits at
//! `TRACE`, failures at `WARN`, the rest at `DEBUG`) and to the listeners
//! given to [`CacheBuilder::on_event`](crate::CacheBuilder::on_event), which is
//! how `kck-testing` asserts what was computed, and to the
//! [`EventStream`]s of [`Cache::subscribe`](crate::Cache::subscribe), which
//! is how an operator's page shows them live.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::error::Error;
use crate::key::Key;
use crate::storage::{RefreshReason, Version};

/// Something the cache decided or did about one key.
#[derive(Debug, Clone)]
pub struct Event {
    /// The product concerned.
    pub key: Key,
    /// What happened.
    pub kind: EventKind,
}

/// What happened; see [`Event`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventKind {
    /// A read was served a fresh value from memory.
    Hit,
    /// A read was served a stale value (a refresh is running or due).
    StaleServed,
    /// A read found no usable value and started a computation.
    Miss,
    /// A read joined a computation that was already running.
    Coalesced,
    /// An entry was loaded from the store into memory.
    Loaded {
        /// Its version.
        version: Version,
    },
    /// The store could not be reached, and a read was served the copy held
    /// in memory (see
    /// [`CacheBuilder::serve_stale_on_store_error`](crate::CacheBuilder::serve_stale_on_store_error)).
    OutageServed {
        /// The version of the copy served.
        version: Version,
    },
    /// A stored value no longer decodes as the primer's type; it is treated
    /// as missing.
    DecodeFailed {
        /// The decoder's message.
        reason: String,
    },
    /// A stored value was computed by another version of the primer's code;
    /// it is treated as missing.
    Outdated {
        /// The code version of the stored entry.
        stored: String,
    },
    /// Computed over a stored entry of newer code (a rolling deploy: see
    /// [`Coordination::newest_code_version`](crate::storage::Coordination::newest_code_version)):
    /// the value is served and kept in this process's memory, and not
    /// stored, so that old and new code do not overwrite each other.
    Superseded {
        /// The newest code version of the primer.
        newest: String,
    },
    /// Another cache sharing the store is computing this product: this one
    /// waits for its value instead of computing it too.
    PeerComputing,
    /// This cache asked for a background refresh: a job is queued for a
    /// worker.
    RefreshQueued {
        /// Why.
        reason: RefreshReason,
    },
    /// A refresh started: asked for, or run by a worker.
    RefreshStarted {
        /// Why.
        reasons: Vec<RefreshReason>,
    },
    /// The primer ran and its value was stored.
    Computed {
        /// The new version of the entry.
        version: Version,
        /// Whether the value differs from the previous one. An unchanged value
        /// does not touch dependents.
        changed: bool,
        /// How long the computation took, by the cache's clock.
        duration: Duration,
    },
    /// A computation (a read's, a refresh's, a worker's) finished, but the
    /// entry changed meanwhile (another write or an invalidation won), so
    /// its value was not stored; it is still the answer for those who asked
    /// before. Emitted only by computations: an augment that loses such a
    /// race emits [`EventKind::AugmentRetried`].
    Conflict,
    /// A computation or a store operation failed.
    Failed {
        /// The error.
        error: Error,
    },
    /// A refresh failed and the primer serves its last good value
    /// (`stale_if_error`).
    ServedAfterError,
    /// A worker started a refresh job.
    JobStarted {
        /// How long the job waited past its due time.
        waited: Duration,
    },
    /// A refresh job is done.
    JobDone {
        /// From the job's due time to now: for a job queued by a change,
        /// how long the change took to reach this product.
        since_due: Duration,
        /// Whether a change of a product it read queued it.
        propagation: bool,
    },
    /// A refresh job failed and will be tried again.
    RetryScheduled {
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// When the next attempt is due.
        at: crate::clock::Timestamp,
        /// The error.
        error: String,
    },
    /// A refresh job failed for the last time (or could never succeed: an
    /// unknown primer, a malformed key); it is kept as failed.
    JobFailed {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// The entry was marked stale.
    Invalidated {
        /// Why.
        cause: InvalidationCause,
    },
    /// A value was written with [`Cache::set`](crate::Cache::set).
    Set {
        /// The new version.
        version: Version,
    },
    /// The entry was removed.
    Removed,
    /// Nobody read the product for the scheduler's `idle_after`: its
    /// periodic refresh stops until it is read again.
    Retired,
    /// A delta was applied in place ([`Cache::augment`](crate::Cache::augment)).
    Augmented {
        /// The entry's version now.
        version: Version,
        /// Whether the value changed.
        changed: bool,
    },
    /// An augment lost the race to another write of the entry (its
    /// compare-and-set on the version failed) and applies its deltas again,
    /// to the newer value. After too many such attempts it gives up:
    /// [`EventKind::AugmentDeclined`].
    AugmentRetried {
        /// The attempt that lost (1 for the first).
        attempt: u32,
    },
    /// A delta could not be applied in place; the product is recomputed in
    /// full instead.
    AugmentDeclined {
        /// Why: no value to apply it to, the primer declined, too many
        /// conflicting writes.
        reason: String,
    },
    /// The full recompute that verifies an augmented product
    /// (`verify_every`) found another value: the augmented one had drifted,
    /// and is replaced.
    Drift {
        /// The content hash of the augmented value.
        augmented: crate::storage::ContentHash,
        /// The content hash of the recomputed value.
        recomputed: crate::storage::ContentHash,
    },
}

impl EventKind {
    /// A short lower-case name: `hit`, `stale-served`, `computed`…
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Hit => "hit",
            EventKind::Retired => "retired",
            EventKind::StaleServed => "stale-served",
            EventKind::Miss => "miss",
            EventKind::Coalesced => "coalesced",
            EventKind::Loaded { .. } => "loaded",
            EventKind::OutageServed { .. } => "outage-served",
            EventKind::DecodeFailed { .. } => "decode-failed",
            EventKind::Outdated { .. } => "outdated",
            EventKind::Superseded { .. } => "superseded",
            EventKind::PeerComputing => "peer-computing",
            EventKind::RefreshQueued { .. } => "refresh-queued",
            EventKind::RefreshStarted { .. } => "refresh-started",
            EventKind::Computed { .. } => "computed",
            EventKind::Conflict => "conflict",
            EventKind::AugmentRetried { .. } => "augment-retried",
            EventKind::Failed { .. } => "failed",
            EventKind::ServedAfterError => "served-after-error",
            EventKind::RetryScheduled { .. } => "retry-scheduled",
            EventKind::JobFailed { .. } => "job-failed",
            EventKind::JobStarted { .. } => "job-started",
            EventKind::JobDone { .. } => "job-done",
            EventKind::Invalidated { .. } => "invalidated",
            EventKind::Set { .. } => "set",
            EventKind::Removed => "removed",
            EventKind::Augmented { .. } => "augmented",
            EventKind::AugmentDeclined { .. } => "augment-declined",
            EventKind::Drift { .. } => "drift",
        }
    }
}

/// Why an entry was marked stale.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidationCause {
    /// [`Cache::invalidate`](crate::Cache::invalidate) named it.
    Requested,
    /// It read a product that was invalidated.
    Cascade {
        /// The invalidated product it read.
        from: Key,
    },
    /// A product it read changed and its primer has `on_change = invalidate`.
    DependencyChanged {
        /// The product that changed.
        from: Key,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name(), self.key)?;
        match &self.kind {
            EventKind::Failed { error } => write!(f, ": {error}"),
            EventKind::RefreshQueued {
                reason: RefreshReason::DependencyChanged { from },
            }
            | EventKind::Invalidated {
                cause:
                    InvalidationCause::DependencyChanged { from } | InvalidationCause::Cascade { from },
            } => write!(f, " (from {from})"),
            EventKind::DecodeFailed { reason } | EventKind::AugmentDeclined { reason } => {
                write!(f, ": {reason}")
            }
            EventKind::Drift {
                augmented,
                recomputed,
            } => write!(f, ": augmented {augmented}, recomputed {recomputed}"),
            EventKind::RetryScheduled { attempt, at, error } => {
                write!(f, ": attempt {attempt} failed ({error}); next at {at}")
            }
            EventKind::AugmentRetried { attempt } => {
                write!(f, ": attempt {attempt} lost the race to another write")
            }
            EventKind::JobStarted { waited } => write!(f, ": waited {waited:?}"),
            EventKind::Superseded { newest } => write!(f, ": newer code ({newest}) owns the entry"),
            EventKind::JobDone { since_due, .. } => write!(f, ": {since_due:?} after it was due"),
            EventKind::JobFailed { attempts, error } => {
                write!(f, ": gave up after {attempts} attempt(s): {error}")
            }
            _ => Ok(()),
        }
    }
}

/// Receives every [`Event`] of a cache. Called synchronously on the thread
/// that made the decision, so keep it quick and never block.
///
/// Closures `Fn(&Event)` are listeners.
pub trait EventListener: Send + Sync + 'static {
    /// Called once per event.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync + 'static> EventListener for F {
    fn on_event(&self, event: &Event) {
        self(event)
    }
}

/// The listeners of one cache, its subscribers, and the tracing bridge.
#[derive(Clone)]
pub(crate) struct Events {
    listeners: Arc<[Arc<dyn EventListener>]>,
    subscribers: Arc<Subscribers>,
}

/// Where subscribers receive events from, and how many there are: with
/// none, nothing is cloned or sent.
struct Subscribers {
    sender: broadcast::Sender<Event>,
    count: AtomicUsize,
}

impl Default for Events {
    fn default() -> Self {
        Events::new(Vec::new())
    }
}

impl Events {
    /// How many events a subscriber may fall behind by before it misses
    /// some.
    const BACKLOG: usize = 1024;

    pub(crate) fn new(listeners: Vec<Arc<dyn EventListener>>) -> Self {
        Events {
            listeners: listeners.into(),
            subscribers: Arc::new(Subscribers {
                sender: broadcast::Sender::new(Self::BACKLOG),
                count: AtomicUsize::new(0),
            }),
        }
    }

    /// A new stream of every event from now on.
    pub(crate) fn subscribe(&self) -> EventStream {
        self.subscribers.count.fetch_add(1, Ordering::Relaxed);
        EventStream {
            receiver: self.subscribers.sender.subscribe(),
            subscribers: self.subscribers.clone(),
        }
    }

    fn has_subscribers(&self) -> bool {
        self.subscribers.count.load(Ordering::Relaxed) > 0
    }

    /// Whether anyone would see a hit: the hot path builds no event otherwise.
    pub(crate) fn wants_hits(&self) -> bool {
        !self.listeners.is_empty()
            || self.has_subscribers()
            || tracing::enabled!(target: "kck", tracing::Level::TRACE)
    }

    pub(crate) fn emit(&self, key: &Key, kind: EventKind) {
        let event = Event {
            key: key.clone(),
            kind,
        };
        match &event.kind {
            EventKind::Hit | EventKind::Coalesced => {
                tracing::trace!(target: "kck", key = %event.key, event = event.kind.name());
            }
            EventKind::Failed { error } => {
                tracing::warn!(target: "kck", key = %event.key, event = "failed", %error);
            }
            _ => {
                tracing::debug!(target: "kck", key = %event.key, event = event.kind.name(), "{event}")
            }
        }
        for listener in self.listeners.iter() {
            listener.on_event(&event);
        }
        if self.has_subscribers() {
            // No receiver left (the last one just went away) is no error.
            let _ = self.subscribers.sender.send(event);
        }
    }
}

/// The events of a cache from the moment of
/// [`Cache::subscribe`](crate::Cache::subscribe) on, for as long as it
/// lives. A subscriber that falls more than 1024 events behind misses the
/// oldest ones and is told how many.
pub struct EventStream {
    receiver: broadcast::Receiver<Event>,
    subscribers: Arc<Subscribers>,
}

/// Events a slow [`EventStream`] missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} event(s) were missed: the subscriber fell behind")]
pub struct Missed(pub u64);

impl EventStream {
    /// The next event; `Err(Missed)` if some were dropped because this
    /// stream fell behind, `None` once the cache is gone.
    pub async fn next(&mut self) -> Option<Result<Event, Missed>> {
        match self.receiver.recv().await {
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Err(Missed(missed))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.subscribers.count.fetch_sub(1, Ordering::Relaxed);
    }
}
