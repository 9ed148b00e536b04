//! [`Cache::augment`]: a delta applied to the stored value, written with
//! compare-and-set, tried again from the newer value on a conflict.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::freshness::{Freshness, classify};
use super::memo::Ready;
use super::{Cache, Inner};
use crate::augment::{Augment, AugmentHandle, Augmented};
use crate::erased::PrimerHandle;
use crate::error::Error;
use crate::event::EventKind;
use crate::key::{Key, TypedKey};
use crate::queue::{JobRequest, RefreshReason};
use crate::store::{ContentHash, Entry, EntryMeta, Expect, Saved};

/// Writes that may lose a race before the delta is applied by a full
/// recompute instead: each loss means another process's write landed
/// meanwhile (augments in one process take turns).
const ATTEMPTS: usize = 16;

/// One lock per key being augmented in this process.
#[derive(Default)]
pub(crate) struct Turns(Mutex<HashMap<Key, Weak<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// The lock of `key`, shared by everyone augmenting it now.
    fn of(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
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
        let delta = serde_json::to_vec(delta).map_err(|error| Error::Encode {
            key: key.key().clone(),
            source: Arc::new(error),
        })?;
        self.inner
            .augment(key.key(), handle, AugmentHandle::of::<P>(), &delta)
            .await
    }
}

impl Inner {
    /// Applies the serialized `delta` to the entry of `key`; see
    /// [`Cache::augment`].
    pub(crate) async fn augment(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        augment: AugmentHandle,
        delta: &[u8],
    ) -> Result<Augmented, Error> {
        let def = handle.def;
        let turn = self.augmenting.of(key);
        let _turn = turn.lock().await;
        let pin = self.memo.pin(key);
        for _ in 0..ATTEMPTS {
            let epoch = self.memo.epoch();
            let now = self.clock.now();
            let stored = self.store.load(key).await?;
            let current = stored
                .filter(|stored| stored.meta.code_version == def.code_version)
                .and_then(|stored| {
                    let value = (handle.decode)(&stored.value).ok()?;
                    let ready = Ready::new(value, stored.version, &stored.meta, None);
                    (classify(&ready, now) != Freshness::Expired).then_some((stored, ready))
                });
            let Some((stored, ready)) = current else {
                drop(pin);
                return self
                    .augment_by_recompute(key, handle, "no value to apply it to")
                    .await;
            };
            let applied = (augment.apply)(&ready.value, delta).map_err(|error| Error::Encode {
                key: key.clone(),
                source: Arc::new(error),
            })?;
            let Some(value) = applied else {
                drop(pin);
                return self
                    .augment_by_recompute(key, handle, "the primer declined the delta")
                    .await;
            };
            let bytes = (handle.encode)(&value).map_err(|error| Error::Encode {
                key: key.clone(),
                source: Arc::new(error),
            })?;
            let content_hash = ContentHash::of(&bytes);
            if content_hash == stored.meta.content_hash {
                let version = stored.version;
                self.events.emit(
                    key,
                    EventKind::Augmented {
                        version,
                        changed: false,
                    },
                );
                return Ok(Augmented::Applied {
                    version,
                    changed: false,
                });
            }
            // The deadlines stay those of the last full computation: new
            // information does not make the rest of the product any newer.
            let meta = EntryMeta {
                changed_at: now,
                content_hash,
                last_error: None,
                ..stored.meta.clone()
            };
            let dependencies = self.store.dependencies(key).await?;
            let entry = Entry {
                key: key.clone(),
                value: bytes,
                meta: meta.clone(),
                dependencies,
            };
            match self
                .store
                .save(entry, Expect::Version(stored.version))
                .await?
            {
                Saved::Written(version) => {
                    self.memo.observe(key, version);
                    self.memo
                        .install(key, epoch, Ready::new(value, version, &meta, None));
                    drop(pin);
                    self.events.emit(
                        key,
                        EventKind::Augmented {
                            version,
                            changed: true,
                        },
                    );
                    self.value_changed(key, content_hash).await;
                    if def.policy.verify_every.is_some_and(|every| {
                        now.saturating_duration_since(meta.computed_at) >= every
                    }) {
                        let job = JobRequest::new(key.clone(), now, RefreshReason::Verify);
                        self.queue_refresh(vec![job]).await;
                    }
                    return Ok(Augmented::Applied {
                        version,
                        changed: true,
                    });
                }
                Saved::Conflict { current } => {
                    if let Some(version) = current {
                        self.memo.observe(key, version);
                    }
                    self.events.emit(key, EventKind::Conflict);
                }
            }
        }
        drop(pin);
        self.augment_by_recompute(key, handle, "other writes kept winning the race")
            .await
    }

    async fn augment_by_recompute(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        reason: &str,
    ) -> Result<Augmented, Error> {
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
}
