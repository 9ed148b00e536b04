//! A flight, from start to end: load the current entry, decide, compute,
//! persist or record the failure, deliver, propagate.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;

use super::flight::{Flight, FlightMode, Outcome, Served};
use super::freshness::{Deadlines, Freshness, classify};
use super::memo::{Ready, Slot};
use super::{Cache, Inner};
use crate::clock::Timestamp;
use crate::ctx::{Ctx, Read};
use crate::erased::{ErasedValue, PrimerHandle};
use crate::error::{Error, panic_message};
use crate::event::{EventKind, RefreshReason};
use crate::key::Key;
use crate::store::{
    ContentHash, Entry, EntryError, EntryMeta, EntryPatch, Expect, Lease, Saved, StoredEntry,
    Version,
};

impl Inner {
    /// Starts a flight for `key` in `slot` (whose shard the caller has
    /// locked) and spawns its task.
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] outside a Tokio runtime.
    pub(crate) fn start_flight(
        self: &Arc<Self>,
        slot: &mut Slot,
        key: &Key,
        handle: PrimerHandle,
        mode: FlightMode,
    ) -> Result<Arc<Flight>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let flight = Arc::new(Flight::new(self.flights.begin(), mode));
        slot.flight = Some(flight.clone());
        let guard = FlightGuard {
            inner: self.clone(),
            key: key.clone(),
            handle,
            flight: flight.clone(),
            epoch: self.memo.epoch(),
        };
        runtime.spawn(guard.run());
        Ok(flight)
    }

    /// Ends a flight: frees its slot and starts the refresh it was asked to
    /// run again, if any.
    fn finish_flight(self: &Arc<Self>, key: &Key, handle: PrimerHandle, flight: &Arc<Flight>) {
        let rerun = flight.take_rerun();
        let restarted = self.memo.update(key, |slot| {
            if !slot.flight.as_ref().is_some_and(|f| Arc::ptr_eq(f, flight)) {
                return None;
            }
            slot.flight = None;
            let reason = rerun?;
            let started = self.start_flight(slot, key, handle, FlightMode::Refresh);
            started.ok().map(|_| reason)
        });
        flight.end();
        self.flights.end();
        if let Some(reason) = restarted {
            self.events.emit(key, EventKind::RefreshStarted { reason });
        }
    }
}

/// Owns a running flight. Dropping it, at the end of the task or when the
/// task is dropped or unwinds, always delivers an outcome and frees the slot,
/// so no waiter hangs and no key stays blocked.
struct FlightGuard {
    inner: Arc<Inner>,
    key: Key,
    handle: PrimerHandle,
    flight: Arc<Flight>,
    /// The memo's epoch when the flight started.
    epoch: u64,
}

impl FlightGuard {
    async fn run(self) {
        let execution = AssertUnwindSafe(self.execute()).catch_unwind().await;
        if let Err(panic) = execution {
            // Primer panics are caught closer; this would be a kck bug, and
            // is contained all the same.
            self.flight.deliver(Outcome::failed(Error::Panicked {
                key: self.key.clone(),
                message: panic_message(&*panic),
            }));
        }
    }

    fn deliver(&self, outcome: Outcome) {
        self.flight.deliver(outcome);
    }

    fn emit(&self, kind: EventKind) {
        self.inner.events.emit(&self.key, kind);
    }

    async fn execute(&self) {
        let def = self.handle.def;
        let current = match self.current().await {
            Ok(current) => current,
            Err(error) => {
                self.emit(EventKind::Failed {
                    error: error.clone(),
                });
                return self.deliver(Outcome::failed(error));
            }
        };
        if self.flight.mode == FlightMode::Get {
            let now = self.inner.clock.now();
            let usable = current
                .ready
                .as_ref()
                .map(|ready| (ready, classify(ready, now)))
                .filter(|(_, freshness)| *freshness != Freshness::Expired);
            match usable {
                Some((ready, freshness)) if !def.policy.on_demand => {
                    self.deliver(Outcome::Value(ready.served()));
                    match freshness {
                        Freshness::Stale { refresh: true } => {
                            self.emit(EventKind::RefreshStarted {
                                reason: RefreshReason::Stale,
                            })
                        }
                        _ => return,
                    }
                }
                Some(_) => {}
                None if !def.policy.prime_on_miss => {
                    return self.deliver(Outcome::failed(Error::NotPrimed {
                        key: self.key.clone(),
                    }));
                }
                None => {}
            }
        }
        self.compute(current).await;
    }

    /// The entry as it is now: from the memo, or loaded from the store (and
    /// then installed in the memo).
    async fn current(&self) -> Result<Current, Error> {
        let in_memo = self
            .inner
            .memo
            .read(self.key.as_str(), |slot| slot.ready.clone());
        if let Some(ready) = in_memo.flatten() {
            return Ok(Current {
                version: Some(ready.version),
                ready: Some(ready),
            });
        }
        let Some(stored) = self.inner.store.load(&self.key).await? else {
            return Ok(Current::default());
        };
        let version = Some(stored.version);
        let ready = self.decode(stored);
        Ok(Current { version, ready })
    }

    /// The decoded value of a stored entry, installed in the memo; `None`
    /// (and an event) if it was computed by other code or no longer
    /// decodes.
    fn decode(&self, stored: StoredEntry) -> Option<Ready> {
        let meta = &stored.meta;
        if meta.code_version != self.handle.def.code_version {
            self.emit(EventKind::Outdated {
                stored: meta.code_version.clone(),
            });
            return None;
        }
        let value = match (self.handle.decode)(&stored.value) {
            Ok(value) => value,
            Err(error) => {
                self.emit(EventKind::DecodeFailed {
                    reason: error.to_string(),
                });
                return None;
            }
        };
        let retry_at = meta
            .last_error
            .as_ref()
            .map(|error| self.inner.backoff.retry_at(error.at, error.attempts));
        let ready = Ready::new(value, stored.version, meta, retry_at);
        self.install(ready.clone());
        self.emit(EventKind::Loaded {
            version: stored.version,
        });
        Some(ready)
    }

    /// Puts `ready` in the memo, unless the entry changed since the flight
    /// started or the memo already holds a newer version.
    fn install(&self, ready: Ready) {
        self.inner.memo.install(&self.key, self.epoch, ready);
    }

    async fn compute(&self, current: Current) {
        let Some((current, leased)) = self.lease(current).await else {
            // Another cache computed it meanwhile, and its value was served.
            return;
        };
        self.flight.started.store(true, Ordering::SeqCst);
        let cache = Cache {
            inner: self.inner.clone(),
        };
        let ctx = Arc::new(Ctx::new(cache, self.key.clone(), self.handle.def));
        let started_at = self.inner.clock.now();
        let computation = AssertUnwindSafe((self.handle.compute)(ctx.clone())).catch_unwind();
        let result = if leased {
            self.while_leased(computation).await
        } else {
            computation.await
        };
        let result = result.unwrap_or_else(|panic| {
            Err(Error::Panicked {
                key: self.key.clone(),
                message: panic_message(&*panic),
            })
        });
        let finished_at = self.inner.clock.now();
        match result {
            Ok(value) => {
                let computed = Computed {
                    value,
                    reads: ctx.reads(),
                    started_at,
                    finished_at,
                };
                self.persist(computed, current).await;
            }
            Err(error) => self.fail(error, current, finished_at).await,
        }
        if leased {
            let released = self
                .inner
                .store
                .release_lease(&self.key, &self.inner.holder);
            if let Err(error) = released.await {
                self.emit(EventKind::Failed {
                    error: Error::Store(error),
                });
            }
        }
    }

    /// Takes the store's lease on the key, so that one cache of all those
    /// sharing the store computes it. While another holds it, waits for its
    /// value (woken when the store reports the write or the release, and
    /// checking again at least every second) and serves that instead.
    /// Returns the entry to compute from and whether the lease is held, or
    /// `None` once another cache's value was delivered.
    async fn lease(&self, mut current: Current) -> Option<(Current, bool)> {
        let inner = &self.inner;
        let mut waited = false;
        loop {
            let wake = inner.peers.waiter(&self.key);
            let woken = wake.notified();
            let lease = inner
                .store
                .acquire_lease(&self.key, &inner.holder, inner.lease_ttl)
                .await;
            let remaining = match lease {
                Ok(Lease::NotShared) => return Some((current, false)),
                Ok(Lease::Acquired) => return Some((current, true)),
                Ok(Lease::Held { remaining }) => remaining,
                Err(error) => {
                    // Compute all the same: without the store, nothing is
                    // shared anyway, and the caller gets an answer.
                    self.emit(EventKind::Failed {
                        error: Error::Store(error),
                    });
                    return Some((current, false));
                }
            };
            if !waited {
                self.emit(EventKind::PeerComputing);
                waited = true;
            }
            let recheck = remaining.clamp(Duration::from_millis(1), Duration::from_secs(1));
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(recheck) => {}
            }
            inner.peers.forget(&self.key, wake);
            let stored = match inner.store.load(&self.key).await {
                Ok(stored) => stored,
                Err(error) => {
                    self.emit(EventKind::Failed {
                        error: Error::Store(error),
                    });
                    continue;
                }
            };
            let Some(stored) = stored.filter(|s| Some(s.version) != current.version) else {
                continue;
            };
            let version = Some(stored.version);
            let ready = self.decode(stored);
            let now = inner.clock.now();
            match ready {
                Some(ready) if classify(&ready, now) != Freshness::Expired => {
                    self.deliver(Outcome::Value(ready.served()));
                    return None;
                }
                ready => current = Current { version, ready },
            }
        }
    }

    /// Runs the computation while renewing the lease every third of its
    /// time to live.
    async fn while_leased<F: std::future::Future>(&self, computation: F) -> F::Output {
        let inner = &self.inner;
        let renew = async {
            loop {
                tokio::time::sleep(inner.lease_ttl / 3).await;
                let renewed = inner
                    .store
                    .renew_lease(&self.key, &inner.holder, inner.lease_ttl)
                    .await;
                if !matches!(renewed, Ok(true)) {
                    // Lost: the version fence still protects the write.
                    return;
                }
            }
        };
        let computation = std::pin::pin!(computation);
        match futures_util::future::select(computation, std::pin::pin!(renew)).await {
            futures_util::future::Either::Left((output, _)) => output,
            futures_util::future::Either::Right(((), computation)) => computation.await,
        }
    }

    /// Stores a computed value (fenced by the version the flight saw),
    /// delivers it, and tells dependents if it changed.
    async fn persist(&self, computed: Computed, current: Current) {
        let def = self.handle.def;
        let bytes = match (self.handle.encode)(&computed.value) {
            Ok(bytes) => bytes,
            Err(error) => {
                let error = Error::Encode {
                    key: self.key.clone(),
                    source: Arc::new(error),
                };
                return self.fail(error, current, computed.finished_at).await;
            }
        };
        let content_hash = ContentHash::of(&bytes);
        let previous = current.ready.as_ref();
        let changed = previous.is_none_or(|ready| ready.content_hash != content_hash);
        let computed_at = computed.started_at;
        let deadlines = Deadlines::of(&def.policy, computed_at);
        let meta = EntryMeta {
            computed_at,
            changed_at: match previous {
                Some(ready) if !changed => ready.changed_at,
                _ => computed_at,
            },
            stale_at: deadlines.stale_at,
            refresh_at: deadlines.refresh_at,
            expires_at: deadlines.expires_at,
            content_hash,
            code_version: def.code_version.to_owned(),
            compute_duration: computed.finished_at.saturating_duration_since(computed_at),
            last_error: None,
        };
        let served = Served {
            value: computed.value.clone(),
            hash: content_hash,
        };
        let entry = Entry {
            key: self.key.clone(),
            value: bytes,
            meta: meta.clone(),
            dependencies: computed.reads.iter().map(|read| read.key.clone()).collect(),
        };
        let expect = current.version.map_or(Expect::Absent, Expect::Version);
        match self.inner.store.save(entry, expect).await {
            Ok(Saved::Written(version)) => {
                self.inner.memo.observe(&self.key, version);
                self.install(Ready::new(computed.value.clone(), version, &meta, None));
                self.emit(EventKind::Computed {
                    version,
                    changed,
                    duration: meta.compute_duration,
                });
                self.deliver(Outcome::Value(served));
                if changed {
                    self.inner.value_changed(&self.key).await;
                }
                if let Some(from) = self.changed_dependency(&computed.reads).await {
                    self.flight
                        .request_rerun(RefreshReason::DependencyChanged { from });
                }
            }
            Ok(Saved::Conflict { .. }) => {
                // Another write or an invalidation won the race; the value is
                // still a correct answer for those who asked before it.
                self.emit(EventKind::Conflict);
                self.deliver(Outcome::Value(served));
            }
            Err(error) => {
                self.emit(EventKind::Failed {
                    error: Error::Store(error),
                });
                self.deliver(Outcome::Value(served));
            }
        }
    }

    /// A failed computation: with a usable value and `stale_if_error`, keep
    /// serving it and back off; with a usable value and no `stale_if_error`,
    /// expire it; without one, just report the error.
    async fn fail(&self, error: Error, current: Current, now: Timestamp) {
        self.emit(EventKind::Failed {
            error: error.clone(),
        });
        let usable = current
            .ready
            .filter(|ready| classify(ready, now) != Freshness::Expired);
        let (Some(ready), Some(version)) = (usable, current.version) else {
            return self.deliver(Outcome::failed(error));
        };
        let keep = self.handle.def.policy.stale_if_error;
        let attempts = ready.attempts.saturating_add(1);
        let record = EntryError {
            message: error.to_string(),
            at: now,
            attempts,
        };
        let patched = self
            .inner
            .store
            .patch(
                &self.key,
                EntryPatch::failed(record, !keep),
                Expect::Version(version),
            )
            .await;
        match patched {
            Ok(Saved::Written(version)) if keep => self.install(Ready {
                version,
                attempts,
                retry_at: Some(self.inner.backoff.retry_at(now, attempts)),
                ..ready.clone()
            }),
            Ok(Saved::Written(version)) => self.inner.memo.observe(&self.key, version),
            Ok(Saved::Conflict { .. }) => {}
            Err(store_error) => self.emit(EventKind::Failed {
                error: Error::Store(store_error),
            }),
        }
        if keep {
            self.emit(EventKind::ServedAfterError);
            self.deliver(Outcome::Failed {
                error,
                fallback: Some(ready.served()),
            });
        } else {
            self.deliver(Outcome::failed(error));
        }
    }
}

impl FlightGuard {
    /// A dependency whose value is no longer the one the computation read.
    ///
    /// Checked after the entry and its edges are saved: a change saved
    /// before this check is seen here, a change saved after it finds the
    /// stored edge and refreshes this key. Either way, nothing is missed.
    async fn changed_dependency(&self, reads: &[Read]) -> Option<Key> {
        for read in reads {
            let in_memo = self
                .inner
                .memo
                .read(read.key.as_str(), |slot| {
                    slot.ready.as_ref().map(|r| r.content_hash)
                })
                .flatten();
            let current = match in_memo {
                Some(hash) => Some(hash),
                None => match self.inner.store.load(&read.key).await {
                    Ok(stored) => stored.map(|s| s.meta.content_hash),
                    // Cannot tell: assume it changed.
                    Err(_) => return Some(read.key.clone()),
                },
            };
            if current != read.seen {
                return Some(read.key.clone());
            }
        }
        None
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.flight.deliver(Outcome::failed(Error::Aborted {
            key: self.key.clone(),
        }));
        self.inner
            .finish_flight(&self.key, self.handle, &self.flight);
    }
}

/// The entry a flight found: its version (even if its value is unusable) and
/// its decoded value.
#[derive(Default)]
struct Current {
    version: Option<Version>,
    ready: Option<Ready>,
}

/// A successful computation.
struct Computed {
    value: ErasedValue,
    reads: Vec<Read>,
    started_at: Timestamp,
    finished_at: Timestamp,
}
