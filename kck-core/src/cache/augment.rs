//! [`Cache::augment`]: a delta applied to the stored value, written with
//! compare-and-set, tried again from the newer value on a conflict.

use std::sync::Arc;

use super::freshness::{Freshness, classify};
use super::memo::Ready;
use super::{Cache, Inner};
use crate::augment::{Augment, AugmentHandle, Augmented};
use crate::erased::PrimerHandle;
use crate::error::Error;
use crate::event::EventKind;
use crate::key::Key;
use crate::primer::TypedKey;
use crate::storage::{
    ContentHash, Entry, EntryMeta, Expect, JobDelta, JobRequest, RefreshReason, Saved,
};

/// Writes that may lose a race before the delta is applied by a full
/// recompute instead: each loss means another process's write landed
/// meanwhile (augments in one process take turns).
const ATTEMPTS: usize = 16;

/// How long after an augment its safety-net refresh is due (see
/// [`Inner::behind_on`]).
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

impl Cache {
    /// Applies `delta` to the product of `key` in place (see
    /// [`Augment`]): reads the stored value, applies the primer's function,
    /// and writes the result with compare-and-set on the version, trying
    /// again from the newer value if another write won. With no value to
    /// start from (missing, expired, or of another code version), or when
    /// the function declines, the product is recomputed in full instead.
    ///
    /// Dependents are told of the change as of any other. If the primer
    /// has `verify_every` and the product's last full computation is older,
    /// a verifying recompute is queued.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPrimer`], [`Error::Encode`] (the delta or the new
    /// value does not serialize), [`Error::Store`]; on a fallback, the
    /// errors of [`Cache::refresh`].
    pub async fn augment<P: Augment>(
        &self,
        key: &TypedKey<P>,
        delta: &P::Delta,
    ) -> Result<Augmented, Error> {
        let handle = self.inner.typed_handle::<P>()?;
        let delta = crate::encode::to_checked_json(delta).map_err(|error| Error::Encode {
            key: key.key().clone(),
            source: Arc::new(error),
        })?;
        self.inner
            .augment(key.key(), handle, AugmentHandle::of::<P>(), &delta)
            .await
    }
}

/// A product this one read, whose deltas are applied with this one's: the
/// edge must have seen `before`, and will have seen `after`.
pub(crate) struct Read {
    pub(crate) key: Key,
    pub(crate) before: ContentHash,
    pub(crate) after: ContentHash,
}

/// What [`Inner::augment_in_place`] did.
pub(crate) enum InPlace {
    Applied(Augmented),
    /// A product of `reads` was read again meanwhile (its edge moved): plan
    /// again.
    ReadMoved,
    /// It could not: the product is to be recomputed, for this reason.
    Cannot(&'static str),
}

impl Inner {
    /// Applies the serialized `delta` to the entry of `key`, or recomputes
    /// it; see [`Cache::augment`].
    pub(crate) async fn augment(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        augment: AugmentHandle,
        delta: &[u8],
    ) -> Result<Augmented, Error> {
        let deltas = [delta.to_vec()];
        let turn = self.local.augmenting.of(key);
        let held = turn.lock().await;
        let in_place = self
            .augment_in_place(key, handle, augment, &deltas, &[])
            .await?;
        drop(held);
        let reason = match in_place {
            InPlace::Applied(augmented) => return Ok(augmented),
            InPlace::Cannot(reason) => reason,
            // Only reads can move, and there are none.
            InPlace::ReadMoved => "it was computed again meanwhile",
        };
        self.events.emit(
            key,
            EventKind::AugmentDeclined {
                reason: reason.to_owned(),
            },
        );
        self.refresh(key, handle, vec![RefreshReason::Requested])
            .await?;
        Ok(Augmented::Recomputed)
    }

    /// Applies `deltas` (this primer's, serialized), in order, to the stored
    /// value of `key`, and moves the edges of `reads` from `before` to
    /// `after`; writes with compare-and-set, and tries again from the newer
    /// entry when another process's write won. The caller holds the key's
    /// turn ([`Turns::of`](super::local::Turns::of)): augments of one key in this process take
    /// turns.
    pub(crate) async fn augment_in_place(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        augment: AugmentHandle,
        deltas: &[Vec<u8>],
        reads: &[Read],
    ) -> Result<InPlace, Error> {
        let def = handle.def;
        let pin = self.local.memo.pin(key);
        for attempt in 1..=ATTEMPTS {
            let epoch = self.local.memo.epoch();
            let now = self.clock.now();
            let stored = self.ports.entries().load(key).await?;
            let current = stored
                .filter(|stored| stored.meta.code_version == def.code_version)
                .and_then(|stored| {
                    // The memo's copy of this very version spares decoding.
                    let in_memo = self
                        .local
                        .memo
                        .read(key.as_str(), |slot| slot.ready.clone())
                        .flatten()
                        .filter(|ready| ready.version == stored.version)
                        .map(|ready| ready.value);
                    let value = match in_memo {
                        Some(value) => value,
                        None => (handle.decode)(&stored.value).ok()?,
                    };
                    let ready = Ready::new(value, stored.version, &stored.meta, None);
                    (classify(&ready, now) != Freshness::Expired).then_some((stored, ready))
                });
            let Some((stored, ready)) = current else {
                return Ok(InPlace::Cannot("no value to apply it to"));
            };
            let mut dependencies = self.ports.entries().dependencies(key).await?;
            for read in reads {
                let Some(edge) = dependencies.iter_mut().find(|edge| edge.key == read.key) else {
                    return Ok(InPlace::Cannot("it no longer reads the changed product"));
                };
                if edge.seen != Some(read.before) {
                    return Ok(InPlace::ReadMoved);
                }
                edge.seen = Some(read.after);
            }
            // Each step's value and content hash, for the dependents.
            let mut value = ready.value.clone();
            let mut steps = Vec::with_capacity(deltas.len());
            let mut hash = stored.meta.content_hash;
            let mut bytes = Vec::new();
            for delta in deltas {
                let applied = (augment.apply)(&value, delta).map_err(|error| Error::Encode {
                    key: key.clone(),
                    source: Arc::new(error.into()),
                })?;
                let Some(next) = applied else {
                    return Ok(InPlace::Cannot("the primer declined the delta"));
                };
                bytes = (handle.encode)(&next).map_err(|error| Error::Encode {
                    key: key.clone(),
                    source: Arc::new(error),
                })?;
                let after = ContentHash::of(&bytes);
                if after != hash {
                    steps.push((hash, after, delta));
                }
                (value, hash) = (next, after);
            }
            let content_hash = hash;
            if content_hash == stored.meta.content_hash && reads.is_empty() {
                let version = stored.version;
                self.events.emit(
                    key,
                    EventKind::Augmented {
                        version,
                        changed: false,
                    },
                );
                return Ok(InPlace::Applied(Augmented::Applied {
                    version,
                    changed: false,
                }));
            }
            let changed = content_hash != stored.meta.content_hash;
            // The deadlines stay those of the last full computation: new
            // information does not make the rest of the product any newer.
            let meta = EntryMeta {
                changed_at: if changed { now } else { stored.meta.changed_at },
                content_hash,
                last_error: None,
                ..stored.meta.clone()
            };
            let read: Vec<(Key, Option<ContentHash>)> = dependencies
                .iter()
                .map(|edge| (edge.key.clone(), edge.seen))
                .collect();
            let entry = Entry {
                key: key.clone(),
                value: if changed { bytes } else { stored.value.clone() },
                meta: meta.clone(),
                dependencies,
            };
            // The dependents' jobs, queued with the write, carry the deltas:
            // those that can augment from them are augmented in turn.
            let passed: Vec<JobDelta> = steps
                .iter()
                .map(|(before, after, delta)| JobDelta {
                    from: key.clone(),
                    before: *before,
                    after: *after,
                    delta: (*delta).clone(),
                })
                .collect();
            let saved = self
                .ports
                .entries()
                .save_with_deltas(entry, Expect::Version(stored.version), passed.clone())
                .await?;
            match saved {
                Saved::Written(version) => {
                    self.local.memo.observe(key, version);
                    self.local
                        .memo
                        .install(key, epoch, Ready::new(value, version, &meta, None));
                    drop(pin);
                    self.events
                        .emit(key, EventKind::Augmented { version, changed });
                    if changed {
                        self.value_changed_by(key, content_hash, &passed).await;
                        if def.policy.verify_every.is_some_and(|every| {
                            now.saturating_duration_since(meta.computed_at) >= every
                        }) {
                            let job = JobRequest::new(key.clone(), now, RefreshReason::Verify);
                            self.queue_refresh(vec![job]).await;
                        }
                    }
                    self.behind_on(key, &read).await;
                    return Ok(InPlace::Applied(Augmented::Applied { version, changed }));
                }
                Saved::Conflict { current } => {
                    if let Some(version) = current {
                        self.local.memo.observe(key, version);
                    }
                    if attempt < ATTEMPTS {
                        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
                        self.events.emit(key, EventKind::AugmentRetried { attempt });
                    }
                }
            }
        }
        Ok(InPlace::Cannot("other writes kept winning the race"))
    }

    /// Queues a refresh of `key` for each product it `read` whose value is
    /// no longer the one it read. Checked once the write is in: a change
    /// committed before it is seen here, and one committed after it queued
    /// the refresh itself; a refresh that lost the race to this write
    /// cannot be counted on. Most often the change's own job, with its
    /// deltas, is on its way: this one is due a little later
    /// ([`CATCH_UP`]), so that it merges with it or finds nothing to do.
    async fn behind_on(self: &Arc<Self>, key: &Key, read: &[(Key, Option<ContentHash>)]) {
        if read.is_empty() {
            return;
        }
        let keys: Vec<Key> = read.iter().map(|(key, _)| key.clone()).collect();
        let due = self.clock.now() + CATCH_UP;
        let current = match self.ports.entries().content_hashes(&keys).await {
            Ok(current) => current,
            // Cannot tell: assume they all changed.
            Err(_) => vec![None; keys.len()],
        };
        let jobs: Vec<JobRequest> = read
            .iter()
            .zip(current)
            .filter(|((_, seen), hash)| hash != seen)
            .map(|((from, _), _)| {
                let reason = RefreshReason::DependencyChanged { from: from.clone() };
                JobRequest::new(key.clone(), due, reason)
            })
            .collect();
        if !jobs.is_empty() {
            self.queue_refresh(jobs).await;
        }
    }
}
