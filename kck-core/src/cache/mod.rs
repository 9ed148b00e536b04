//! The cache: typed reads in front of a store, with single flight,
//! freshness and dependency tracking.
//!
//! The work is split by verb: [`fetch`] serves reads, [`execute`] runs a
//! flight (load, compute, persist), [`propagate`] carries changes to
//! dependents, [`ops`] holds the other public operations.

mod builder;
mod compute;
mod execute;
mod fetch;
mod flight;
mod freshness;
mod memo;
mod ops;
mod peers;
mod propagate;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

pub use builder::CacheBuilder;
pub use fetch::get;

use self::flight::WaitGraph;
use self::freshness::Backoff;
use self::memo::Memo;
use self::peers::{Peers, Watcher};
use crate::clock::{Clock, Timestamp};
use crate::erased::ErasedStub;
use crate::event::Events;
use crate::registry::Registry;
use crate::store::Store;

/// A cache of data products: the handle every getter, worker and tool uses.
///
/// `Cache` is cheap to clone (clones share everything). Build one with
/// [`Cache::builder`]. Its methods need a Tokio runtime: computations run as
/// Tokio tasks, so a caller that goes away never cancels a computation that
/// others wait for.
///
/// Reads go through the typed getters that `#[primer]` generates
/// (`store_report(&cache, 7, day)`), or through [`Cache::get`] with a typed
/// key. Strings keys, for workers and tools, go through
/// [`Cache::parse_key`], [`Cache::get_json`] and [`Cache::refresh_key`].
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) registry: Registry,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) memo: Memo,
    pub(crate) waits: WaitGraph,
    pub(crate) events: Events,
    pub(crate) stubs: HashMap<&'static str, ErasedStub>,
    pub(crate) state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub(crate) backoff: Backoff,
    pub(crate) flights: FlightCounter,
    pub(crate) peers: Peers,
    /// Keeps the store's watcher alive as long as the cache.
    pub(crate) watcher: Arc<Watcher>,
    /// Who this cache is, as a lease holder.
    pub(crate) holder: String,
    pub(crate) lease_ttl: Duration,
}

/// Counts running flights, so [`Cache::wait_idle`] can wait for them.
#[derive(Default)]
pub(crate) struct FlightCounter {
    next_id: AtomicU64,
    running: AtomicUsize,
    idle: Notify,
}

impl FlightCounter {
    /// The id the next flight will get; flights with a larger id started
    /// after this call.
    pub(crate) fn watermark(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst)
    }

    pub(crate) fn begin(&self) -> u64 {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.next_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn end(&self) {
        if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Cache {
    /// A builder: in-memory store, system clock and every linked primer by
    /// default.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::new()
    }

    /// The primers this cache knows.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Now, by the cache's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Waits until no computation or refresh is running: background
    /// refreshes started by stale reads and dependency changes included.
    /// Tests use it to let the cache settle; servers, to drain on shutdown.
    pub async fn wait_idle(&self) {
        self.inner.flights.wait_idle().await;
    }

    /// The number of keys held in the in-process memo (values and running
    /// computations).
    pub fn memo_len(&self) -> usize {
        self.inner.memo.len()
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("registry", &self.inner.registry)
            .field("memo_len", &self.memo_len())
            .finish_non_exhaustive()
    }
}
