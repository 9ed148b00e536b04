//! Reads: the hot path (a fresh value in the memo) and the slow path
//! (freshness decisions, joining or starting a flight).

use std::any::TypeId;
use std::cell::RefCell;
use std::sync::Arc;

use super::Inner;
use super::execute::Current;
use super::flight::{Flight, FlightMode, Outcome, Served};
use super::freshness::{Freshness, classify};
use super::memo::Ready;
use crate::ctx::{Ctx, Scope, ScopeKind};
use crate::erased::{ErasedValue, PrimerHandle};
use crate::error::Error;
use crate::event::EventKind;
use crate::key::{Key, KeyWriter};
use crate::primer::Primer;
use crate::storage::{RefreshReason, Version};

thread_local! {
    /// Where the hot path writes keys, so a hit allocates nothing.
    static KEY_BUFFER: RefCell<String> = RefCell::new(String::with_capacity(64));
}

/// The read every generated getter ends in: `params` writes the key's
/// parameters.
pub async fn get<P: Primer>(
    scope: &impl Scope,
    params: impl FnOnce(&mut KeyWriter<'_>),
) -> Result<Arc<P::Value>, Error> {
    match scope.scope().0 {
        ScopeKind::Cache(cache) => {
            let key = match hit_or_key::<P>(&cache.inner, params) {
                Ok(value) => return Ok(value),
                Err(key) => key,
            };
            cache.inner.fetch_typed::<P>(key, None).await
        }
        ScopeKind::Ctx(ctx) => {
            let mut text = String::with_capacity(P::DEF.name.len() + 16);
            KeyWriter::key_into(&mut text, P::DEF.name, params);
            let key = Key::from_written(&text);
            key.check_len()?;
            read_through(ctx, &key, P::DEF.name)?;
            ctx.cache().inner.fetch_typed::<P>(key, Some(ctx)).await
        }
    }
}

/// Checks that the computation of `ctx` may read `key` of primer `name`, and
/// records the read as a dependency.
fn read_through(ctx: &Ctx, key: &Key, name: &'static str) -> Result<(), Error> {
    let reader = ctx.primer();
    if !reader.depends_on.contains(&name) {
        return Err(Error::UndeclaredDependency {
            from: reader.name,
            to: name,
        });
    }
    if key == ctx.key() {
        return Err(Error::Cycle {
            path: vec![key.clone(), key.clone()],
        });
    }
    ctx.record_read(key);
    Ok(())
}

/// The hot path: writes the key into a thread-local buffer and looks it up;
/// returns the owned key on anything but a fresh hit.
fn hit_or_key<P: Primer>(
    inner: &Inner,
    params: impl FnOnce(&mut KeyWriter<'_>),
) -> Result<Arc<P::Value>, Key> {
    let write = |text: &mut String| {
        text.clear();
        KeyWriter::key_into(text, P::DEF.name, params);
    };
    let lookup = KEY_BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut text) => {
            write(&mut text);
            match inner.try_hit::<P>(&text) {
                Some(value) => Lookup::Hit(
                    value,
                    inner.events.wants_hits().then(|| Key::from_written(&text)),
                ),
                None => Lookup::Miss(Key::from_written(&text)),
            }
        }
        // Only reachable if an event listener reads the cache on a hit.
        Err(_) => {
            let mut text = String::new();
            write(&mut text);
            let key = Key::from_written(&text);
            match inner.try_hit::<P>(&text) {
                Some(value) => Lookup::Hit(value, Some(key)),
                None => Lookup::Miss(key),
            }
        }
    });
    match lookup {
        Lookup::Hit(value, key) => {
            if let Some(key) = key {
                inner.events.emit(&key, EventKind::Hit);
            }
            Ok(value)
        }
        Lookup::Miss(key) => Err(key),
    }
}

enum Lookup<V> {
    /// A fresh value, and its key if someone listens for hits.
    Hit(V, Option<Key>),
    Miss(Key),
}

/// What a read does after looking at the slot, and the event to tell.
enum Step {
    /// Serve the memo's value; a stale one may start a check of the store
    /// (the version the copy holds), which begins only after the serve is
    /// told, so listeners see the cause before its effects.
    Serve(Served, EventKind, Option<Version>),
    Wait(Arc<Flight>, EventKind),
    /// A new flight, for this reader to lead.
    Lead(Arc<Flight>),
    /// A new flight with nothing to load first (an on-demand primer): its
    /// task starts after the miss is told, and the reader waits for it.
    Launch(Arc<Flight>),
    Failed(Error),
}

/// A flight led by a reader until it ends it or hands it over. If the
/// reader is dropped first (cancelled), the flight is handed over as it is,
/// so whoever joined it is still served.
struct Leader {
    inner: Arc<Inner>,
    key: Key,
    handle: PrimerHandle,
    flight: Option<Arc<Flight>>,
}

impl Leader {
    /// Delivers `outcome` and frees the slot.
    fn end(mut self, outcome: Outcome) {
        if let Some(flight) = self.flight.take() {
            self.inner.settle_flight(&self.key, &flight, outcome);
            self.inner.local.flights.end();
        }
    }

    /// Gives the flight to a task of its own, with what was loaded.
    fn hand_over(mut self, loaded: Current) {
        if let Some(flight) = self.flight.take() {
            self.inner
                .launch(&self.key, self.handle, flight, Some(loaded));
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(flight) = self.flight.take() {
            self.inner.launch(&self.key, self.handle, flight, None);
        }
    }
}

impl Inner {
    /// A fresh value of primer `P`, straight from the memo.
    fn try_hit<P: Primer>(&self, key: &str) -> Option<Arc<P::Value>> {
        if P::DEF.policy.on_demand {
            return None;
        }
        let value = self.local.memo.read(key, |slot| {
            let ready = slot.ready.as_ref()?;
            if ready
                .deadline
                .is_some_and(|deadline| self.clock.now() >= deadline)
            {
                return None;
            }
            slot.note_read();
            Some(ready.value.clone())
        })??;
        value.downcast::<P::Value>().ok()
    }

    /// The registered handle of `P`; [`Error::UnknownPrimer`] if `P` is not
    /// registered (or another primer of its name is).
    pub(crate) fn typed_handle<P: Primer>(&self) -> Result<PrimerHandle, Error> {
        let handle = self.primers.registry.handle(P::DEF.name)?;
        if (handle.primer_type)() != TypeId::of::<P>() {
            return Err(Error::UnknownPrimer {
                name: P::DEF.name.to_owned(),
            });
        }
        Ok(*handle)
    }

    pub(crate) async fn fetch_typed<P: Primer>(
        self: &Arc<Self>,
        key: Key,
        reader: Option<&Ctx>,
    ) -> Result<Arc<P::Value>, Error> {
        key.check_len()?;
        let handle = self.typed_handle::<P>()?;
        let served = self.fetch(&key, handle, reader).await;
        if let Some(ctx) = reader {
            ctx.record_seen(&key, served.as_ref().ok().map(|served| served.hash));
        }
        downcast::<P>(served?.value)
    }

    /// The slow path of a read: serve a stale value (starting one refresh),
    /// join the running computation, load the entry, or start a
    /// computation.
    ///
    /// A value missing from the memo is loaded here, in the reader's task,
    /// not in a flight: loading has no side effects, and most stored values
    /// need nothing more. A flight starts only when there is something to
    /// compute, and takes what was loaded.
    pub(crate) async fn fetch(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        reader: Option<&Ctx>,
    ) -> Result<Served, Error> {
        let policy = &handle.def.policy;
        let now = self.clock.now();
        // Under the read lock first: stale reads with a refresh running or
        // backing off need nothing more.
        let served = self.local.memo.read(key.as_str(), |slot| {
            let ready = slot.ready.as_ref().filter(|_| !policy.on_demand)?;
            slot.note_read();
            match classify(ready, now) {
                Freshness::Fresh => Some((ready.served(), EventKind::Hit)),
                Freshness::Stale { refresh } if !refresh || slot.refresh_queued => {
                    Some((ready.served(), EventKind::StaleServed))
                }
                _ => None,
            }
        });
        if let Some((value, kind)) = served.flatten() {
            self.events.emit(key, kind);
            return Ok(value);
        }

        match self.decide(key, handle) {
            Step::Serve(value, kind, check_stale) => {
                self.events.emit(key, kind);
                if let Some(seen) = check_stale {
                    self.check_stale_copy(key, handle, seen);
                }
                Ok(value)
            }
            Step::Wait(flight, kind) => {
                self.events.emit(key, kind);
                self.wait(key, &flight, reader).await?.for_reader()
            }
            Step::Launch(flight) => {
                self.events.emit(key, EventKind::Miss);
                self.launch(key, handle, flight.clone(), None);
                self.wait(key, &flight, reader).await?.for_reader()
            }
            Step::Lead(flight) => {
                self.events.emit(key, EventKind::Miss);
                self.lead(key, handle, flight, reader).await
            }
            Step::Failed(error) => Err(error),
        }
    }

    /// What a read does, decided under the slot's lock: serve the memo's
    /// value, join the flight, or start one (leading it when the entry may
    /// simply need loading).
    fn decide(self: &Arc<Self>, key: &Key, handle: PrimerHandle) -> Step {
        let policy = &handle.def.policy;
        let now = self.clock.now();
        let mut expired = false;
        self.local.memo.update(key, |slot| {
            slot.note_read();
            if let Some(ready) = slot.ready.as_ref().filter(|_| !policy.on_demand) {
                match classify(ready, now) {
                    Freshness::Fresh => return Step::Serve(ready.served(), EventKind::Hit, None),
                    Freshness::Stale { refresh } => {
                        let (value, version) = (ready.served(), ready.version);
                        let check_stale = (refresh && slot.queue_refresh_once()).then_some(version);
                        return Step::Serve(value, EventKind::StaleServed, check_stale);
                    }
                    Freshness::Expired => expired = true,
                }
            }
            if let Some(flight) = &slot.flight {
                return Step::Wait(flight.clone(), EventKind::Coalesced);
            }
            // An expired copy may be outdated (see `check_stale_copy`): the
            // store is asked first, as on a miss.
            let result = if (slot.ready.is_none() || expired) && !policy.on_demand {
                self.new_flight(slot, FlightMode::Get).map(Step::Lead)
            } else {
                self.new_flight(slot, FlightMode::Get).map(Step::Launch)
            };
            result.unwrap_or_else(Step::Failed)
        })
    }

    /// Leads a new flight: loads the entry in the reader's own task (a load
    /// has no side effects, and a stored value most often needs nothing
    /// more), serves it to whoever joined meanwhile, and hands the flight to
    /// a task of its own only when there is something to compute.
    async fn lead(
        self: &Arc<Self>,
        key: &Key,
        handle: PrimerHandle,
        flight: Arc<Flight>,
        reader: Option<&Ctx>,
    ) -> Result<Served, Error> {
        let leader = Leader {
            inner: self.clone(),
            key: key.clone(),
            handle,
            flight: Some(flight.clone()),
        };
        let loaded = match self.load_current(key, handle, flight.epoch).await {
            Ok(loaded) => loaded,
            Err(error) => {
                if let Some(kept) = error.is_transient().then(|| self.fallback(key)).flatten() {
                    let version = kept.version;
                    self.events.emit(key, EventKind::OutageServed { version });
                    let served = kept.served();
                    leader.end(Outcome::Value(served.clone()));
                    return Ok(served);
                }
                self.events.emit(
                    key,
                    EventKind::Failed {
                        error: error.clone(),
                    },
                );
                leader.end(Outcome::failed(error.clone()));
                return Err(error);
            }
        };
        let now = self.clock.now();
        let usable = loaded
            .ready
            .as_ref()
            .map(|ready| (ready.served(), classify(ready, now)));
        match usable {
            Some((served, Freshness::Fresh)) => {
                leader.end(Outcome::Value(served.clone()));
                Ok(served)
            }
            Some((served, Freshness::Stale { refresh })) => {
                leader.end(Outcome::Value(served.clone()));
                if refresh
                    && self
                        .local
                        .memo
                        .update(key, |slot| slot.queue_refresh_once())
                {
                    self.queue_refresh_soon(key, RefreshReason::Stale);
                }
                Ok(served)
            }
            _ => {
                leader.hand_over(loaded);
                self.wait(key, &flight, reader).await?.for_reader()
            }
        }
    }

    /// The copy of `key` a read may be served while the store cannot be
    /// reached; see [`CacheBuilder::serve_stale_on_store_error`](crate::CacheBuilder::serve_stale_on_store_error).
    fn fallback(&self, key: &Key) -> Option<Ready> {
        let now = self.clock.now();
        self.local
            .memo
            .fallback(key, now, self.peers.serve_stale_on_store_error)
    }

    /// Waits for a flight. A computation that waits records the wait, so a
    /// wait that would close a cycle fails instead of hanging.
    pub(crate) async fn wait(
        &self,
        key: &Key,
        flight: &Flight,
        reader: Option<&Ctx>,
    ) -> Result<Outcome, Error> {
        let _edge = match reader {
            Some(ctx) => Some(self.local.waits.enter(ctx.key(), key)?),
            None => None,
        };
        Ok(flight.wait(key).await)
    }
}

pub(crate) fn downcast<P: Primer>(value: ErasedValue) -> Result<Arc<P::Value>, Error> {
    value
        .downcast::<P::Value>()
        .map_err(|_| Error::UnknownPrimer {
            name: P::DEF.name.to_owned(),
        })
}
