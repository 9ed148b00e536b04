//! What the products are: the primers this cache knows, the stubs that
//! stand in for some of them, the state their computations share, and the
//! back-off after a failed computation.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::backoff::Backoff;
use crate::erased::ErasedStub;
use crate::primer::Registry;

/// The cache's primers and what goes with them; fixed once the cache is
/// built, but for the stubs, which tests may change at any time.
pub(crate) struct Primers {
    pub(crate) registry: Registry,
    /// Stand-ins for primers, by name (tests).
    pub(crate) stubs: Stubs,
    /// What `ctx.state::<T>()` hands computations, by type.
    pub(crate) state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    /// How long to wait after a failed computation before the next.
    pub(crate) backoff: Backoff,
}

/// The stubs of a cache, by primer name. A computation looks its primer's
/// stub up once, when it starts.
#[derive(Default)]
pub(crate) struct Stubs {
    by_name: RwLock<HashMap<&'static str, ErasedStub>>,
}

impl Stubs {
    pub(crate) fn new(stubs: HashMap<&'static str, ErasedStub>) -> Self {
        Stubs {
            by_name: RwLock::new(stubs),
        }
    }

    /// The stub of primer `name`, if it has one.
    pub(crate) fn get(&self, name: &str) -> Option<ErasedStub> {
        // Nothing panics while the lock is held.
        let stubs = self.by_name.read().unwrap_or_else(PoisonError::into_inner);
        stubs.get(name).cloned()
    }

    /// Installs or replaces the stub of primer `name`.
    pub(crate) fn insert(&self, name: &'static str, stub: ErasedStub) {
        let mut stubs = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        stubs.insert(name, stub);
    }

    /// Removes the stub of primer `name`; says whether there was one.
    pub(crate) fn remove(&self, name: &str) -> bool {
        let mut stubs = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        stubs.remove(name).is_some()
    }
}
