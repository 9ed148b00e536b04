//! The public operations of [`Cache`] besides reads through getters.

use std::sync::Arc;
use std::time::Duration;

use super::fetch::downcast;
use super::flight::{Flight, FlightMode, Served};
use super::freshness::{Deadlines, Freshness, classify};
use super::memo::Ready;
use super::{Cache, Inner};
use crate::erased::{ErasedValue, PrimerHandle, StubFn, erase_stub};
use crate::error::Error;
use crate::event::EventKind;
use crate::key::Key;
use crate::primer::Primer;
use crate::primer::TypedKey;
use crate::storage::{
    ContentHash, Entry, EntryMeta, Expect, RefreshReason, Saved, StoredEntry, Version,
};

impl Cache {
    /// Reads the product of `key`, computing it if it is missing, like the
    /// generated getter does.
    ///
    /// # Errors
    ///
    /// The primer's error ([`Error::Compute`]), [`Error::Panicked`],
    /// [`Error::UnknownPrimer`] if the primer is not registered,
    /// [`Error::NotPrimed`], [`Error::Store`].
    pub async fn get<P: Primer>(&self, key: &TypedKey<P>) -> Result<Arc<P::Value>, Error> {
        self.inner.fetch_typed::<P>(key.key().clone(), None).await
    }

    /// The cached value of `key`, if there is one that may be served (stale
    /// or not). Never computes and never starts a refresh.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPrimer`], [`Error::Store`].
    pub async fn peek<P: Primer>(&self, key: &TypedKey<P>) -> Result<Option<Arc<P::Value>>, Error> {
        let handle = self.inner.typed_handle::<P>()?;
        match self.inner.peek(key, handle).await? {
            Some(value) => downcast::<P>(value).map(Some),
            None => Ok(None),
        }
    }

    /// Writes `value` as the product of `key`, as if it had been computed now;
    /// returns the entry's new version. Dependents are told if the value
    /// changed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] for a key longer than
    /// [`MAX_KEY_LEN`](crate::key::MAX_KEY_LEN), [`Error::UnknownPrimer`],
    /// [`Error::Encode`], [`Error::Store`].
    pub async fn set<P: Primer>(
        &self,
        key: &TypedKey<P>,
        value: P::Value,
    ) -> Result<Version, Error> {
        key.key().check_len()?;
        let handle = self.inner.typed_handle::<P>()?;
        self.inner.set(key, handle, Arc::new(value)).await
    }

    /// Recomputes the product of `key` now and returns the new value. Joins
    /// a refresh that started after this call; waits for an older
    /// computation to end first.
    ///
    /// # Errors
    ///
    /// As [`Cache::get`]; a failed refresh is returned even when the primer
    /// keeps serving its last good value (`stale_if_error`).
    pub async fn refresh<P: Primer>(&self, key: &TypedKey<P>) -> Result<Arc<P::Value>, Error> {
        let handle = self.inner.typed_handle::<P>()?;
        let reasons = vec![RefreshReason::Requested];
        downcast::<P>(self.inner.refresh(key, handle, reasons).await?.value)
    }

    /// Marks the entry of `key`, and everything that read it, transitively,
    /// stale: each is served once more and refreshed. Returns how many
    /// entries were marked.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn invalidate(&self, key: &Key) -> Result<usize, Error> {
        self.inner.invalidate_cascade(key).await
    }

    /// Removes the entry of `key`: the next read computes it. Its dependents
    /// are untouched. Returns whether there was an entry.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn remove(&self, key: &Key) -> Result<bool, Error> {
        let removed = self.inner.ports.entries().remove(key).await?;
        if let Some(version) = removed {
            self.inner.local.memo.observe(key, version);
            self.inner.events.emit(key, EventKind::Removed);
        }
        Ok(removed.is_some())
    }

    /// Parses a key string and checks it against the registry; see
    /// [`Registry::parse_key`](crate::primer::Registry::parse_key).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`], [`Error::UnknownPrimer`].
    pub fn parse_key(&self, text: &str) -> Result<Key, Error> {
        self.inner.primers.registry.parse_key(text)
    }

    /// Reads the product of a key given as a string (see
    /// [`Cache::parse_key`]), computing it if needed, as JSON.
    ///
    /// # Errors
    ///
    /// As [`Cache::get`], and [`Error::InvalidKey`] if the key does not fit
    /// its primer.
    pub async fn get_json(&self, key: &Key) -> Result<serde_json::Value, Error> {
        let handle = self.inner.checked_handle(key)?;
        let served = self.inner.fetch(key, handle, None).await?;
        (handle.to_json)(&served.value).map_err(|error| Error::Encode {
            key: key.clone(),
            source: Arc::new(error),
        })
    }

    /// Recomputes the product of an untyped key now; see [`Cache::refresh`].
    /// This is what workers call.
    ///
    /// # Errors
    ///
    /// As [`Cache::refresh`], and [`Error::InvalidKey`] or
    /// [`Error::UnknownPrimer`] if the key does not fit a registered primer.
    pub async fn refresh_key(&self, key: &Key) -> Result<(), Error> {
        let handle = self.inner.checked_handle(key)?;
        let reasons = vec![RefreshReason::Requested];
        self.inner.refresh(key, handle, reasons).await.map(drop)
    }

    /// Replaces the computation of primer `P` with `stub` from now on, as
    /// [`CacheBuilder::stub`](crate::CacheBuilder::stub) does when the cache
    /// is built; a replaced stub is dropped. A computation that already
    /// started finishes as it began. Values already stored stay until they
    /// are recomputed: refresh them ([`Cache::refresh_key`]) to have them
    /// follow the stub, as `kck-testing`'s `TestCache` does.
    ///
    /// Only this cache is affected: other processes on the same store keep
    /// computing `P` their own way.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPrimer`] if `P` is not registered.
    pub fn stub<P: Primer>(
        &self,
        stub: impl Fn(P::Params) -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) -> Result<(), Error> {
        self.inner.typed_handle::<P>()?;
        let stub: StubFn<P> = Box::new(stub);
        self.inner
            .primers
            .stubs
            .insert(P::DEF.name, erase_stub::<P>(stub));
        Ok(())
    }

    /// Gives primer `P` its own computation back; says whether it had a
    /// stub. What was stored while it was stubbed stays, as with
    /// [`Cache::stub`].
    pub fn unstub<P: Primer>(&self) -> bool {
        self.inner.primers.stubs.remove(P::DEF.name)
    }

    /// The stored entry of `key` (value bytes, version, timestamps, last
    /// error), for inspection.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn entry(&self, key: &Key) -> Result<Option<StoredEntry>, Error> {
        Ok(self.inner.ports.entries().load(key).await?)
    }

    /// The keys whose last computation read `key`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn dependents(&self, key: &Key) -> Result<Vec<Key>, Error> {
        let edges = self.inner.ports.entries().dependents(key).await?;
        Ok(edges.into_iter().map(|edge| edge.key).collect())
    }

    /// The keys the last computation of `key` read, in first-read order.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn dependencies(&self, key: &Key) -> Result<Vec<Key>, Error> {
        let edges = self.inner.ports.entries().dependencies(key).await?;
        Ok(edges.into_iter().map(|edge| edge.key).collect())
    }
}

impl Inner {
    /// The handle of the primer of `key`, after checking the key fits it.
    fn checked_handle(&self, key: &Key) -> Result<PrimerHandle, Error> {
        let handle = *self.primers.registry.handle(key.primer())?;
        (handle.check_key)(key)?;
        Ok(handle)
    }

    async fn peek(&self, key: &Key, handle: PrimerHandle) -> Result<Option<ErasedValue>, Error> {
        let now = self.clock.now();
        let in_memo = self.local.memo.read(key.as_str(), |slot| {
            let ready = slot.ready.as_ref()?;
            (classify(ready, now) != Freshness::Expired).then(|| ready.value.clone())
        });
        if let Some(value) = in_memo.flatten() {
            return Ok(Some(value));
        }
        let Some(stored) = self.ports.entries().load(key).await? else {
            return Ok(None);
        };
        let meta = &stored.meta;
        let expired = meta.expires_at.is_some_and(|at| now >= at);
        if expired || meta.code_version != handle.def.code_version {
            return Ok(None);
        }
        match (handle.decode)(&stored.value) {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                let reason = error.to_string();
                self.events.emit(key, EventKind::DecodeFailed { reason });
                Ok(None)
            }
        }
    }

    async fn set(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        value: ErasedValue,
    ) -> Result<Version, Error> {
        let def = handle.def;
        let bytes = (handle.encode)(&value).map_err(|error| Error::Encode {
            key: key.clone(),
            source: Arc::new(error),
        })?;
        let content_hash = ContentHash::of(&bytes);
        let pin = self.local.memo.pin(key);
        loop {
            let previous = self.ports.entries().load(key).await?;
            let now = self.clock.now();
            let previous_meta = previous
                .as_ref()
                .map(|stored| &stored.meta)
                .filter(|meta| meta.code_version == def.code_version);
            let changed = previous_meta.is_none_or(|meta| meta.content_hash != content_hash);
            let deadlines = Deadlines::of(&def.policy, key, now);
            let meta = EntryMeta {
                computed_at: now,
                changed_at: match previous_meta {
                    Some(meta) if !changed => meta.changed_at,
                    _ => now,
                },
                stale_at: deadlines.stale_at,
                refresh_at: deadlines.refresh_at,
                expires_at: deadlines.expires_at,
                content_hash,
                code_version: def.code_version.to_owned(),
                compute_duration: std::time::Duration::ZERO,
                last_error: None,
                read_at: None,
            };
            let entry = Entry {
                key: key.clone(),
                value: bytes.clone(),
                meta: meta.clone(),
                dependencies: Vec::new(),
            };
            let expect = previous.map_or(Expect::Absent, |stored| Expect::Version(stored.version));
            if let Saved::Written(version) = self.ports.entries().save(entry, expect).await? {
                self.local.memo.observe(key, version);
                pin.install(Ready::new(value, version, &meta, None));
                drop(pin);
                self.events.emit(key, EventKind::Set { version });
                if changed {
                    self.value_changed(key, content_hash).await;
                }
                return Ok(version);
            }
        }
    }

    /// Recomputes `key` now, for `reasons`; see [`Cache::refresh`].
    pub(crate) async fn refresh(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        reasons: Vec<RefreshReason>,
    ) -> Result<Served, Error> {
        self.refresh_within(key, handle, reasons, None).await
    }

    /// [`Inner::refresh`], stopped after `limit`: the computation waited
    /// for is stopped (see [`Inner::stop_flight`]), and whoever waits for it
    /// gets [`Error::TimedOut`], so a computation that hangs never blocks
    /// its key past the limit.
    pub(crate) async fn refresh_within(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        reasons: Vec<RefreshReason>,
        limit: Option<Duration>,
    ) -> Result<Served, Error> {
        let deadline = limit.map(|limit| (tokio::time::Instant::now() + limit, limit));
        let watermark = self.local.flights.watermark();
        loop {
            let mut started = None;
            let flight: Result<Arc<Flight>, Error> =
                self.local.memo.update(key, |slot| match &slot.flight {
                    Some(flight) => Ok(flight.clone()),
                    None => {
                        let flight = self.new_flight(slot, FlightMode::Refresh)?;
                        started = Some(flight.clone());
                        Ok(flight)
                    }
                });
            let flight = flight?;
            // Told before its task runs, so listeners see the start before
            // anything the refresh does.
            if let Some(started) = started {
                let reasons = reasons.clone();
                self.events.emit(key, EventKind::RefreshStarted { reasons });
                self.launch(key, handle, started, None);
            }
            let ours = flight.mode == FlightMode::Refresh && flight.id > watermark;
            let waited = async {
                if ours {
                    Some(flight.wait(key).await)
                } else {
                    // A computation that started before this call may have
                    // read older inputs: let it end, then refresh.
                    flight.ended().await;
                    None
                }
            };
            let waited = match deadline {
                None => waited.await,
                Some((deadline, limit)) => match tokio::time::timeout_at(deadline, waited).await {
                    Ok(waited) => waited,
                    Err(_) => {
                        let error = Error::TimedOut {
                            key: key.clone(),
                            after: limit,
                        };
                        self.stop_flight(key, &flight, error.clone());
                        return Err(error);
                    }
                },
            };
            if let Some(outcome) = waited {
                return outcome.for_refresher();
            }
        }
    }
}
