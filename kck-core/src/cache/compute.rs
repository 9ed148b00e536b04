//! The computing part of a flight: take the cluster-wide lease, run the
//! primer, then store its value (fenced by the version the flight started
//! from) or record its failure; and, once the outcome is out, the work that
//! follows it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;

use super::Cache;
use super::execute::{After, Current, FlightGuard};
use super::flight::{FlightMode, Outcome, Served};
use super::freshness::{Deadlines, Freshness, classify};
use super::memo::Ready;
use crate::clock::Timestamp;
use crate::ctx::{Ctx, Read};
use crate::erased::ErasedValue;
use crate::error::{Error, panic_message};
use crate::event::EventKind;
use crate::key::Key;
use crate::storage::{
    ContentHash, Edge, Entry, EntryError, EntryMeta, EntryPatch, Expect, JobRequest, Lease,
    RefreshReason, Saved, Version,
};

/// A successful computation.
struct Computed {
    value: ErasedValue,
    reads: Vec<Read>,
    started_at: Timestamp,
    finished_at: Timestamp,
}

/// How many times one computed value is saved again over writes it is newer
/// than (see [`FlightGuard::rebase`]) before it gives up.
const MAX_REBASES: u32 = 8;

/// What a save is fenced by: the version it replaces, and that version's
/// content hash and time of last change, when its value was read.
#[derive(Clone, Copy)]
struct Base {
    version: Option<Version>,
    previous: Option<(ContentHash, Timestamp)>,
}

impl Base {
    fn of(current: &Current) -> Self {
        Base {
            version: current.version,
            previous: current
                .ready
                .as_ref()
                .map(|ready| (ready.content_hash, ready.changed_at)),
        }
    }
}

impl FlightGuard {
    /// Computes the product, unless another cache sharing the store does:
    /// then serves its value.
    pub(super) async fn compute(&self, current: Current) -> After {
        let Some((current, leased)) = self.lease(current).await else {
            // Another cache computed it meanwhile, and its value was served.
            return After::default();
        };
        self.leased.store(leased, Ordering::SeqCst);
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
                self.persist(computed, current).await
            }
            Err(error) => {
                self.fail(error, current, finished_at).await;
                After::default()
            }
        }
    }

    /// Takes the store's lease on the key, so that one cache of all those
    /// sharing the store computes it. While another holds it, waits for its
    /// value (woken when the store reports the write or the release, and
    /// checking again at least every second) and serves that instead.
    /// Returns the entry to compute from and whether the lease is held, or
    /// `None` once another cache's value was delivered.
    ///
    /// A refresh of a product that has a value takes no lease: readers are
    /// served that value meanwhile, so there is no stampede to prevent, and
    /// refreshes reach a product through its one job (or an explicit
    /// refresh); two that race are fenced by the version.
    async fn lease(&self, mut current: Current) -> Option<(Current, bool)> {
        if self.flight.mode == FlightMode::Refresh && current.ready.is_some() {
            return Some((current, false));
        }
        let inner = &self.inner;
        let mut waited = false;
        loop {
            let wake = inner.peers.waiter(&self.key);
            let woken = wake.notified();
            let lease = inner
                .ports
                .coordination()
                .acquire_lease(&self.key, &self.holder, inner.peers.lease_ttl)
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
            let stored = match inner.ports.entries().load(&self.key).await {
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
            let other_code = stored.meta.code_version != self.handle.def.code_version;
            let ready = self.decode(stored);
            let now = inner.clock.now();
            match ready {
                Some(ready) if classify(&ready, now) != Freshness::Expired => {
                    self.deliver(Outcome::Value(ready.served()));
                    return None;
                }
                ready => {
                    current = Current {
                        version,
                        ready,
                        other_code,
                    }
                }
            }
        }
    }

    /// Runs the computation while renewing the lease every third of its
    /// time to live.
    async fn while_leased<F: std::future::Future>(&self, computation: F) -> F::Output {
        let inner = &self.inner;
        let renew = async {
            loop {
                tokio::time::sleep(inner.peers.lease_ttl / 3).await;
                let renewed = inner
                    .ports
                    .coordination()
                    .renew_lease(&self.key, &self.holder, inner.peers.lease_ttl)
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
    ///
    /// A save that loses to another write is tried again over that write
    /// when this computation is the newer one (see [`FlightGuard::rebase`]):
    /// the version the flight saw may be older than the store's without any
    /// change of value, as a write that keeps the value is not announced to
    /// other processes.
    async fn persist(&self, computed: Computed, current: Current) -> After {
        let def = self.handle.def;
        let bytes = match (self.handle.encode)(&computed.value) {
            Ok(bytes) => bytes,
            Err(error) => {
                let error = Error::Encode {
                    key: self.key.clone(),
                    source: Arc::new(error),
                };
                self.fail(error, current, computed.finished_at).await;
                return After::default();
            }
        };
        let content_hash = ContentHash::of(&bytes);
        let computed_at = computed.started_at;
        let deadlines = Deadlines::of(&def.policy, &self.key, computed_at);
        let served = Served {
            value: computed.value.clone(),
            hash: content_hash,
        };
        let dependencies: Vec<Edge> = computed
            .reads
            .iter()
            .map(|read| Edge::new(read.key.clone(), read.seen))
            .collect();
        // The entry's metadata, with the time of its last change.
        let meta_since = |changed_at: Timestamp| EntryMeta {
            computed_at,
            changed_at,
            stale_at: deadlines.stale_at,
            refresh_at: deadlines.refresh_at,
            expires_at: deadlines.expires_at,
            content_hash,
            code_version: def.code_version.to_owned(),
            compute_duration: computed.finished_at.saturating_duration_since(computed_at),
            last_error: None,
            // A product computed for a reader was just read.
            read_at: (self.flight.mode == FlightMode::Get).then_some(computed.finished_at),
        };
        let mut base = Base::of(&current);
        if current.other_code
            && let Some(newest) = self.newer_code().await
        {
            // A rolling deploy: the store's entry is of newer code, which
            // owns it. This value is the answer here, kept in this
            // process's memory at the stored version (a newer write drops
            // it), and neither stored nor announced to dependents.
            if let Some(version) = base.version {
                let meta = meta_since(computed_at);
                let mut ready = Ready::new(computed.value.clone(), version, &meta, None);
                ready.over_other_code = true;
                self.install(ready);
            }
            self.emit(EventKind::Superseded { newest });
            self.deliver(Outcome::Value(served));
            return After::default();
        }
        self.announce_code();
        let mut rebases = 0;
        loop {
            let changed = base.previous.is_none_or(|(hash, _)| hash != content_hash);
            let meta = meta_since(match base.previous {
                Some((_, changed_at)) if !changed => changed_at,
                _ => computed_at,
            });
            let entry = Entry {
                key: self.key.clone(),
                value: bytes.clone(),
                meta: meta.clone(),
                dependencies: dependencies.clone(),
            };
            let expect = base.version.map_or(Expect::Absent, Expect::Version);
            match self.inner.ports.entries().save(entry, expect).await {
                Ok(Saved::Written(version)) => {
                    self.inner.local.memo.observe(&self.key, version);
                    self.install(Ready::new(computed.value.clone(), version, &meta, None));
                    self.emit(EventKind::Computed {
                        version,
                        changed,
                        duration: meta.compute_duration,
                    });
                    // Before anyone gets the value: a dependency that changed
                    // since it was read makes this flight run again.
                    if let Some(from) = self.changed_dependency(&computed.reads).await {
                        let reason = RefreshReason::DependencyChanged { from };
                        let job = JobRequest::new(self.key.clone(), computed.finished_at, reason);
                        self.inner.queue_refresh(vec![job]).await;
                    }
                    self.deliver(Outcome::Value(served));
                    return After {
                        changed: changed.then_some(content_hash),
                    };
                }
                Ok(Saved::Conflict { current }) => {
                    // The memo's copy, if older than the winner, goes.
                    if let Some(version) = current {
                        self.inner.local.memo.observe(&self.key, version);
                    }
                    if rebases < MAX_REBASES {
                        rebases += 1;
                        if let Some(newer) = self.rebase(computed_at).await {
                            base = newer;
                            continue;
                        }
                    }
                    // A newer write or an invalidation won the race; the
                    // value is still a correct answer for those who asked
                    // before it.
                    self.emit(EventKind::Conflict);
                    self.deliver(Outcome::Value(served));
                    return After::default();
                }
                Err(error) if error.is_transient() => {
                    // The store is away: the value is still the answer, and
                    // the next read tries again.
                    self.emit(EventKind::Failed {
                        error: Error::Store(error),
                    });
                    self.deliver(Outcome::Value(served));
                    return After::default();
                }
                Err(error) => {
                    let error = Error::SaveFailed {
                        key: self.key.clone(),
                        source: error,
                    };
                    tracing::warn!(target: "kck", key = %self.key, %error, "a computed value cannot be stored");
                    self.fail(error, current, computed.finished_at).await;
                    return After::default();
                }
            }
        }
    }

    /// The newest code version of the primer among the caches sharing the
    /// store, if it is not this cache's; `None` when this cache's is the
    /// newest, or when the store cannot say (the save is tried, as
    /// before rolling deploys had a rule).
    async fn newer_code(&self) -> Option<String> {
        let def = self.handle.def;
        let now = self.inner.clock.now();
        self.inner.peers.announce_due(def.name, now);
        let newest = self
            .inner
            .ports
            .coordination()
            .newest_code_version(def.name, def.code_version, self.inner.peers.started_at, now)
            .await;
        match newest {
            Ok(newest) if newest != def.code_version => Some(newest),
            Ok(_) => None,
            Err(error) => {
                self.emit(EventKind::Failed {
                    error: Error::Store(error),
                });
                None
            }
        }
    }

    /// Says, in the background and at most every
    /// [`CODE_VERSION_ANNOUNCE`](crate::storage::CODE_VERSION_ANNOUNCE),
    /// that this cache's code version of the primer is still there, so
    /// that it keeps counting in a rolling deploy while it computes.
    fn announce_code(&self) {
        let def = self.handle.def;
        let now = self.inner.clock.now();
        if !self.inner.peers.announce_due(def.name, now) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let coordination = self.inner.ports.storage.coordination().clone();
        let (primer, code_version): (&'static str, &'static str) = (def.name, def.code_version);
        let started_at = self.inner.peers.started_at;
        runtime.spawn(async move {
            let _ = coordination
                .newest_code_version(primer, code_version, started_at, now)
                .await;
        });
    }

    /// After a save lost to another write: what to save over, if this
    /// computation, which started at `started_at`, is newer than the write
    /// that won; `None` if the winner stands.
    ///
    /// The winner is as new as the latest of: the computation that wrote
    /// it (its `computed_at`, when it started), its last change of value
    /// (`changed_at`: an augment changes the value without a computation),
    /// and the mark that made it stale before its time (an invalidation).
    /// A winner as new as this computation, a removed entry, an entry of
    /// other code, or a store that cannot say, stand.
    async fn rebase(&self, started_at: Timestamp) -> Option<Base> {
        let stored = self.inner.ports.entries().load(&self.key).await.ok()??;
        let meta = &stored.meta;
        let def = self.handle.def;
        if meta.code_version != def.code_version {
            return None;
        }
        let natural = Deadlines::of(&def.policy, &self.key, meta.computed_at).stale_at;
        let marked = meta.stale_at.filter(|at| Some(*at) != natural);
        let written = meta.computed_at.max(meta.changed_at);
        let as_of = marked.map_or(written, |at| at.max(written));
        (as_of < started_at).then_some(Base {
            version: Some(stored.version),
            previous: Some((meta.content_hash, meta.changed_at)),
        })
    }

    /// A failed computation: with a usable value and `stale_if_error`, keep
    /// serving it and back off; with a usable value and no `stale_if_error`,
    /// expire it; without one, just report the error.
    async fn fail(&self, error: Error, current: Current, now: Timestamp) {
        self.emit(EventKind::Failed {
            error: error.clone(),
        });
        // Over another code's entry (a rolling deploy), this process records
        // nothing there: the entry is the other code's.
        let usable = current
            .ready
            .filter(|ready| classify(ready, now) != Freshness::Expired && !current.other_code);
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
            .ports
            .entries()
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
                retry_at: Some(self.inner.primers.backoff.retry_at(now, attempts)),
                ..ready.clone()
            }),
            Ok(Saved::Written(version)) => self.inner.local.memo.observe(&self.key, version),
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

    /// Gives the lease back and tells dependents about a changed value.
    pub(super) async fn after(&self, after: After) {
        if self.leased.swap(false, Ordering::SeqCst) {
            let released = self
                .inner
                .ports
                .coordination()
                .release_lease(&self.key, &self.holder);
            if let Err(error) = released.await {
                self.emit(EventKind::Failed {
                    error: Error::Store(error),
                });
            }
        }
        if let Some(hook) = &self.inner.local.hooks.after_outcome {
            hook(&self.key).await;
        }
        if let Some(hash) = after.changed {
            self.inner.value_changed(&self.key, hash).await;
        }
    }

    /// A dependency whose value is no longer the one the computation read.
    ///
    /// Checked once the entry and its edges are saved: a change saved
    /// before this check is seen here, a change saved after it finds the
    /// stored edge and refreshes this key. Either way, nothing is missed.
    ///
    /// The store is asked, not the memo: the memo may not have heard yet of
    /// a change another process made, whose own refresh of this key may
    /// already have run.
    async fn changed_dependency(&self, reads: &[Read]) -> Option<Key> {
        if reads.is_empty() {
            return None;
        }
        let keys: Vec<Key> = reads.iter().map(|read| read.key.clone()).collect();
        let Ok(current) = self.inner.ports.entries().content_hashes(&keys).await else {
            // Cannot tell: assume it changed.
            return keys.into_iter().next();
        };
        reads
            .iter()
            .zip(current)
            .find(|(read, hash)| *hash != read.seen)
            .map(|(read, _)| read.key.clone())
    }
}
