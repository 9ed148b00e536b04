//! The cache: typed reads in front of a store, with single flight,
//! freshness and dependency tracking.
//!
//! The state is split into parts ([`primers`], [`ports`], [`peers`],
//! [`local`], [`background`]), the work by verb: [`fetch`] serves reads,
//! [`execute`] and [`compute`] run a flight (load, compute, persist),
//! [`propagate`] carries changes to dependents, [`augment`] updates a
//! product in place, [`job`] is what one refresh job means, [`ops`] holds
//! the other public operations. See ARCHITECTURE.md for the map.

pub(crate) mod augment;
mod background;
mod builder;
mod compute;
mod execute;
mod fetch;
mod flight;
mod freshness;
mod job;
mod local;
mod memo;
#[cfg(feature = "metrics")]
mod meters;
mod ops;
mod peers;
mod ports;
mod primers;
mod propagate;

use std::sync::{Arc, Weak};

pub use builder::CacheBuilder;
pub use fetch::get;
pub(crate) use job::JobOutcome;

use self::background::Background;
use self::local::Local;
use self::peers::Peers;
use self::ports::Ports;
use self::primers::Primers;
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::event::Events;
use crate::key::Key;
use crate::primer::Registry;
use crate::storage::{Queue, Storage};

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

/// The cache's state, in parts with one job each. Each verb of the cache
/// (`fetch`, `execute`, `compute`, `propagate`, `augment`, `job`, `ops`)
/// is an `impl Inner` block in a file of its own and reaches the parts by
/// name: `self.local.memo`, `self.ports.entries()`, `self.peers.holder`.
pub(crate) struct Inner {
    /// What the products are: registry, stubs, state, back-off.
    pub(crate) primers: Primers,
    /// Where products and jobs live: the store's ports and the queue.
    pub(crate) ports: Ports,
    /// How this cache shares the store with others: leases, change
    /// watching, waiting on their computations.
    pub(crate) peers: Peers,
    /// What this process holds: memo, flights, waits, augment turns.
    pub(crate) local: Local,
    /// The cache's own worker and scheduler, if it runs them.
    pub(crate) background: Background,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events: Events,
}

/// The cache a worker or scheduler works for: held, or (for a cache's own
/// local worker and scheduler) only referred to, so the cache can go away.
#[derive(Clone)]
pub(crate) enum CacheRef {
    Held(Cache),
    Local(Weak<Inner>),
}

impl CacheRef {
    pub(crate) fn is_local(&self) -> bool {
        matches!(self, CacheRef::Local(_))
    }

    pub(crate) fn get(&self) -> Option<Cache> {
        match self {
            CacheRef::Held(cache) => Some(cache.clone()),
            CacheRef::Local(inner) => inner.upgrade().map(|inner| Cache { inner }),
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
        &self.inner.primers.registry
    }

    /// The store behind the cache, as its ports.
    pub fn storage(&self) -> &Storage {
        &self.inner.ports.storage
    }

    /// The queue of refresh jobs.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.inner.ports.queue
    }

    /// Now, by the cache's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Every event of this cache from now on, hits included, for as long
    /// as the stream lives: what an operator's live view shows. Unlike the
    /// listeners of [`CacheBuilder::on_event`], which see each event
    /// synchronously, a stream receives them through a channel, and one
    /// that falls behind misses the oldest (it is told how many).
    pub fn subscribe(&self) -> crate::event::EventStream {
        self.inner.events.subscribe()
    }

    /// Whether this process computes `key` now.
    pub(crate) fn is_computing_here(&self, key: &Key) -> bool {
        self.inner
            .local
            .memo
            .read(key.as_str(), |slot| {
                slot.flight
                    .as_ref()
                    .is_some_and(|flight| !flight.is_delivered())
            })
            .unwrap_or(false)
    }

    /// Waits until no computation of this process runs, and, if the cache
    /// runs its own worker, until that worker has run the jobs due that this
    /// cache queued (stale reads, changed dependencies), and the jobs those
    /// queued in turn. Jobs that other processes' workers run are theirs.
    /// Servers use it to drain on shutdown; `kck-testing`, to settle.
    pub async fn wait_idle(&self) {
        loop {
            self.inner.local.flights.wait_idle().await;
            if !self.inner.background.wait_worked().await {
                return;
            }
        }
    }

    /// Tells the store which products this cache's memo served since the
    /// last report, so products nobody reads stop being refreshed on
    /// schedule. The scheduler calls this on every tick. Returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn report_reads(&self) -> Result<usize, Error> {
        let keys = self.inner.local.memo.take_reads();
        if !keys.is_empty() {
            self.inner
                .ports
                .timetable()
                .touch(&keys, self.now())
                .await?;
        }
        Ok(keys.len())
    }

    /// The number of keys held in the in-process memo (values and running
    /// computations).
    pub fn memo_len(&self) -> usize {
        self.inner.local.memo.len()
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("registry", &self.inner.primers.registry)
            .field("memo_len", &self.memo_len())
            .finish_non_exhaustive()
    }
}
