//! A flight, from start to end: load the current entry, decide whether to
//! compute (see [`compute`](super::compute)), deliver the outcome and leave
//! the slot to new readers (one step), then finish what follows the
//! outcome.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;

use super::Inner;
use super::flight::{Flight, FlightMode, Outcome};
use super::freshness::{Freshness, classify};
use super::memo::{Ready, Slot};
use crate::erased::PrimerHandle;
use crate::error::{Error, panic_message};
use crate::event::EventKind;
use crate::key::Key;
use crate::storage::{ContentHash, RefreshReason, StoredEntry, Version};

impl Inner {
    /// Puts a new flight in `slot` (whose shard the caller has locked),
    /// without a task yet: the caller tells what started it, outside the
    /// lock, then runs it with [`Inner::launch`], so listeners see the cause
    /// before anything the flight does.
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] outside a Tokio runtime: the flight could never
    /// be run.
    pub(crate) fn new_flight(
        &self,
        slot: &mut Slot,
        mode: FlightMode,
    ) -> Result<Arc<Flight>, Error> {
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let flight = Arc::new(Flight::new(
            self.local.flights.begin(),
            mode,
            self.local.memo.epoch(),
        ));
        slot.flight = Some(flight.clone());
        Ok(flight)
    }

    /// Runs `flight` on a task of its own; `initial` is the entry a reader
    /// already loaded. Outside a runtime (a reader dropped while the runtime
    /// shuts down), the flight ends with [`Error::Aborted`].
    pub(crate) fn launch(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        flight: Arc<Flight>,
        initial: Option<Current>,
    ) {
        let guard = FlightGuard {
            holder: format!("{}/{}", self.peers.holder, flight.id),
            inner: self.clone(),
            key: key.clone(),
            handle,
            flight,
            leased: AtomicBool::new(false),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let flight = guard.flight.clone();
                flight.run_on(runtime.spawn(guard.run(initial)).abort_handle());
            }
            // Dropping the guard delivers `Aborted` and frees the slot.
            Err(_) => drop(guard),
        }
    }

    /// Loads the entry of `key` from the store, decoded and installed in the
    /// memo (if the memo is still at `epoch`).
    pub(crate) async fn load_current(
        &self,
        key: &Key,
        handle: PrimerHandle,
        epoch: u64,
    ) -> Result<Current, Error> {
        let Some(stored) = self.ports.entries().load(key).await? else {
            return Ok(Current::default());
        };
        let version = Some(stored.version);
        let other_code = stored.meta.code_version != handle.def.code_version;
        let ready = self.decode(key, handle, stored, epoch);
        Ok(Current {
            version,
            ready,
            other_code,
        })
    }

    /// The decoded value of a stored entry, installed in the memo; `None`
    /// (and an event) if it was computed by other code or no longer
    /// decodes.
    pub(crate) fn decode(
        &self,
        key: &Key,
        handle: PrimerHandle,
        stored: StoredEntry,
        epoch: u64,
    ) -> Option<Ready> {
        let meta = &stored.meta;
        if meta.code_version != handle.def.code_version {
            let stored = meta.code_version.clone();
            self.events.emit(key, EventKind::Outdated { stored });
            return None;
        }
        let value = match (handle.decode)(&stored.value) {
            Ok(value) => value,
            Err(error) => {
                let reason = error.to_string();
                self.events.emit(key, EventKind::DecodeFailed { reason });
                return None;
            }
        };
        let retry_at = meta
            .last_error
            .as_ref()
            .map(|error| self.primers.backoff.retry_at(error.at, error.attempts));
        let ready = Ready::new(value, stored.version, meta, retry_at);
        self.local.memo.install(key, epoch, ready.clone());
        let version = stored.version;
        self.events.emit(key, EventKind::Loaded { version });
        Some(ready)
    }

    /// Delivers `outcome` to the waiters of `flight` and takes the flight
    /// out of its slot, in one step under the slot's lock: a read that
    /// starts once the outcome is out never joins the flight, and starts
    /// its own instead. Only the first outcome counts (see
    /// [`Flight::deliver`]).
    pub(crate) fn settle_flight(&self, key: &Key, flight: &Arc<Flight>, outcome: Outcome) {
        if flight.is_delivered() {
            // Settled already: delivered and out of its slot in one step.
            return;
        }
        self.local.memo.update(key, |slot| {
            if slot.flight.as_ref().is_some_and(|f| Arc::ptr_eq(f, flight)) {
                slot.flight = None;
            }
            flight.deliver(outcome);
        });
        flight.end();
    }

    /// Ends `flight` with `error` and stops its computation: its waiters get
    /// the error, new reads start afresh, and its task gives back the
    /// store's lease as it is dropped.
    pub(crate) fn stop_flight(&self, key: &Key, flight: &Arc<Flight>, error: Error) {
        self.settle_flight(key, flight, Outcome::failed(error));
        flight.stop();
    }
}

/// Owns a running flight. Dropping it, at the end of the task or when the
/// task is dropped or unwinds, always delivers an outcome and frees the slot,
/// so no waiter hangs and no key stays blocked.
pub(super) struct FlightGuard {
    pub(super) inner: Arc<Inner>,
    pub(super) key: Key,
    pub(super) handle: PrimerHandle,
    pub(super) flight: Arc<Flight>,
    /// Who holds the store's lease: this flight, and no other, even of this
    /// cache.
    pub(super) holder: String,
    /// Whether the flight holds the store's lease.
    pub(super) leased: AtomicBool,
}

impl FlightGuard {
    /// Runs the flight; `initial` is the entry a reader already loaded.
    async fn run(self, initial: Option<Current>) {
        let produced = AssertUnwindSafe(self.produce(initial)).catch_unwind().await;
        let after = produced.unwrap_or_else(|panic| {
            // Primer panics are caught closer; this would be a kck bug, and
            // is contained all the same.
            self.deliver(Outcome::failed(Error::Panicked {
                key: self.key.clone(),
                message: panic_message(&*panic),
            }));
            After::default()
        });
        // Every path of `produce` settled the flight; this is the net.
        self.deliver(Outcome::failed(Error::Aborted {
            key: self.key.clone(),
        }));
        let _ = AssertUnwindSafe(self.after(after)).catch_unwind().await;
    }

    /// Delivers the outcome and leaves the slot, in one step: see
    /// [`Inner::settle_flight`].
    pub(super) fn deliver(&self, outcome: Outcome) {
        self.inner.settle_flight(&self.key, &self.flight, outcome);
    }

    pub(super) fn emit(&self, kind: EventKind) {
        self.inner.events.emit(&self.key, kind);
    }

    /// Everything up to the outcome: serve what is stored if it will do,
    /// compute otherwise.
    async fn produce(&self, initial: Option<Current>) -> After {
        let def = self.handle.def;
        let current = match initial {
            Some(current) => Ok(current),
            None => self.current().await,
        };
        let current = match current {
            Ok(current) => current,
            Err(error) => {
                self.emit(EventKind::Failed {
                    error: error.clone(),
                });
                self.deliver(Outcome::failed(error));
                return After::default();
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
                    if freshness == (Freshness::Stale { refresh: true }) {
                        self.inner
                            .queue_refresh_soon(&self.key, RefreshReason::Stale);
                    }
                    return After::default();
                }
                Some(_) => {}
                None if !def.policy.prime_on_miss => {
                    self.deliver(Outcome::failed(Error::NotPrimed {
                        key: self.key.clone(),
                    }));
                    return After::default();
                }
                None => {}
            }
        }
        self.compute(current).await
    }

    /// The entry as it is now: from the memo, or loaded from the store (and
    /// then installed in the memo).
    async fn current(&self) -> Result<Current, Error> {
        let in_memo = self
            .inner
            .local
            .memo
            .read(self.key.as_str(), |slot| slot.ready.clone());
        if let Some(ready) = in_memo.flatten() {
            return Ok(Current {
                version: Some(ready.version),
                other_code: ready.over_other_code,
                ready: Some(ready),
            });
        }
        self.inner
            .load_current(&self.key, self.handle, self.flight.epoch)
            .await
    }

    /// The decoded value of a stored entry; see [`Inner::decode`].
    pub(super) fn decode(&self, stored: StoredEntry) -> Option<Ready> {
        self.inner
            .decode(&self.key, self.handle, stored, self.flight.epoch)
    }

    /// Puts `ready` in the memo, unless the entry changed since the flight
    /// started or the memo already holds a newer version.
    pub(super) fn install(&self, ready: Ready) {
        self.inner
            .local
            .memo
            .install(&self.key, self.flight.epoch, ready);
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.deliver(Outcome::failed(Error::Aborted {
            key: self.key.clone(),
        }));
        if self.leased.swap(false, Ordering::SeqCst) {
            // The task was dropped mid-computation: give the lease back if a
            // runtime is still there, else let it expire.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (coordination, key, holder) = (
                    self.inner.ports.storage.coordination().clone(),
                    self.key.clone(),
                    self.holder.clone(),
                );
                runtime.spawn(async move {
                    let _ = coordination.release_lease(&key, &holder).await;
                });
            }
        }
        self.inner.local.flights.end();
    }
}

/// What remains to do once a flight delivered its outcome.
#[derive(Default)]
pub(super) struct After {
    /// The stored value changed to this: tell its dependents.
    pub(super) changed: Option<ContentHash>,
}

/// The entry a flight found: its version (even if its value is unusable) and
/// its decoded value.
#[derive(Default)]
pub(crate) struct Current {
    pub(super) version: Option<Version>,
    pub(super) ready: Option<Ready>,
    /// The entry was computed by another code version of the primer.
    pub(super) other_code: bool,
}
