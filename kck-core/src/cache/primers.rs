//! What the products are: the primers this cache knows, the stubs that
//! stand in for some of them, the state their computations share, and the
//! back-off after a failed computation.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::backoff::Backoff;
use crate::erased::ErasedStub;
use crate::primer::Registry;

/// The cache's primers and what goes with them; fixed once the cache is
/// built.
pub(crate) struct Primers {
    pub(crate) registry: Registry,
    /// Stand-ins for primers, by name (tests).
    pub(crate) stubs: HashMap<&'static str, ErasedStub>,
    /// What `ctx.state::<T>()` hands computations, by type.
    pub(crate) state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    /// How long to wait after a failed computation before the next.
    pub(crate) backoff: Backoff,
}
