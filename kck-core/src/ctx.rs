//! The context of a computation, and the scopes getters are called in.

use std::any::TypeId;
use std::sync::{Mutex, PoisonError};

use crate::cache::Cache;
use crate::clock::Timestamp;
use crate::erased::ErasedStub;
use crate::key::Key;
use crate::primer::PrimerDef;
use crate::storage::ContentHash;

/// The context a primer computes in.
///
/// Pass it to the getters of other primers: `register_sales(ctx, register,
/// day)` reads through the cache *and* records that this product depends on
/// that one, so a change there refreshes this product. A primer may only read
/// the primers its `depends_on` lists.
pub struct Ctx {
    cache: Cache,
    key: Key,
    def: &'static PrimerDef,
    reads: Mutex<Vec<Read>>,
}

/// A read of another product during a computation.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) key: Key,
    /// The hash of the value the computation got; `None` if the read
    /// failed or has not returned yet.
    pub(crate) seen: Option<ContentHash>,
}

impl Ctx {
    pub(crate) fn new(cache: Cache, key: Key, def: &'static PrimerDef) -> Self {
        Ctx {
            cache,
            key,
            def,
            reads: Mutex::new(Vec::new()),
        }
    }

    /// The key of the product being computed.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The primer being run.
    pub fn primer(&self) -> &'static PrimerDef {
        self.def
    }

    /// The cache's clock: use it instead of the system clock, so tests that
    /// control time control your primers too.
    pub fn now(&self) -> Timestamp {
        self.cache.now()
    }

    /// Application state given to [`CacheBuilder::state`](crate::CacheBuilder::state):
    /// a database pool, an HTTP client, settings.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.cache
            .inner
            .primers
            .state
            .get(&TypeId::of::<T>())
            .and_then(|state| (**state).downcast_ref::<T>())
    }

    /// The cache itself. Reads through it are *not* recorded as dependencies.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Records that the computation reads `key`: a dependency, even if the
    /// read fails.
    pub(crate) fn record_read(&self, key: &Key) {
        let mut reads = self.lock_reads();
        if !reads.iter().any(|read| &read.key == key) {
            reads.push(Read {
                key: key.clone(),
                seen: None,
            });
        }
    }

    /// Records what the read of `key` returned.
    pub(crate) fn record_seen(&self, key: &Key, seen: Option<ContentHash>) {
        if let Some(read) = self.lock_reads().iter_mut().find(|read| &read.key == key) {
            read.seen = seen;
        }
    }

    /// The reads so far, in first-read order.
    pub(crate) fn reads(&self) -> Vec<Read> {
        self.lock_reads().clone()
    }

    fn lock_reads(&self) -> std::sync::MutexGuard<'_, Vec<Read>> {
        self.reads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stub of this computation's primer, if it has one now.
    pub(crate) fn stub(&self) -> Option<ErasedStub> {
        self.cache.inner.primers.stubs.get(self.def.name)
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Where a getter is called: on the [`Cache`] (from a handler) or on a
/// [`Ctx`] (from another primer, recording the dependency).
///
/// Generated getters take `&impl Scope`, so both `store_report(&cache, ..)`
/// and `store_report(ctx, ..)` work. A type that holds a cache, such as an
/// application's state, can be a scope too, by delegating:
///
/// ```
/// use kck_core::{Cache, Scope};
///
/// struct AppState {
///     cache: Cache,
/// }
///
/// impl Scope for AppState {
///     fn scope(&self) -> kck_core::ScopeRef<'_> {
///         self.cache.scope()
///     }
/// }
/// ```
pub trait Scope: Sync {
    /// The cache or context to read through.
    fn scope(&self) -> ScopeRef<'_>;
}

impl<S: Scope + ?Sized> Scope for &S {
    fn scope(&self) -> ScopeRef<'_> {
        (**self).scope()
    }
}

impl<S: Scope + Send + ?Sized> Scope for std::sync::Arc<S> {
    fn scope(&self) -> ScopeRef<'_> {
        (**self).scope()
    }
}

/// What a [`Scope`] reads through. Opaque: get one from a [`Cache`] or a
/// [`Ctx`].
#[derive(Clone, Copy)]
pub struct ScopeRef<'a>(pub(crate) ScopeKind<'a>);

#[derive(Clone, Copy)]
pub(crate) enum ScopeKind<'a> {
    Cache(&'a Cache),
    Ctx(&'a Ctx),
}

impl std::fmt::Debug for ScopeRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            ScopeKind::Cache(_) => f.write_str("ScopeRef(Cache)"),
            ScopeKind::Ctx(ctx) => write!(f, "ScopeRef(Ctx of {})", ctx.key()),
        }
    }
}

impl Scope for Cache {
    fn scope(&self) -> ScopeRef<'_> {
        ScopeRef(ScopeKind::Cache(self))
    }
}

impl Scope for Ctx {
    fn scope(&self) -> ScopeRef<'_> {
        ScopeRef(ScopeKind::Ctx(self))
    }
}
