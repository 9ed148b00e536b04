//! The cache: typed reads in front of a store, with single flight,
//! freshness and dependency tracking.
//!
//! The work is split by verb: [`fetch`] serves reads, [`execute`] runs a
//! flight (load, compute, persist), [`propagate`] carries changes to
//! dependents, [`ops`] holds the other public operations.

pub(crate) mod augment;
mod background;
mod builder;
mod compute;
mod execute;
mod fetch;
mod flight;
mod freshness;
mod job;
mod memo;
mod ops;
mod peers;
mod propagate;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

pub use builder::CacheBuilder;
pub use fetch::get;
pub(crate) use job::JobOutcome;

use self::background::Background;
use self::flight::WaitGraph;
use self::memo::Memo;
use self::peers::{Peers, Watcher};
use crate::backoff::Backoff;
use crate::clock::{Clock, Timestamp};
use crate::erased::ErasedStub;
use crate::error::Error;
use crate::event::Events;
use crate::registry::Registry;
use crate::storage::{Coordination, EntryStore, Queue, Storage, Timetable};

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
    pub(crate) storage: Storage,
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
    pub(crate) queue: Arc<dyn Queue>,
    /// The cache's own worker and scheduler, if it runs them.
    pub(crate) background: Background,
    /// The keys being augmented here, each behind a lock: augments of one
    /// key in one process take turns instead of racing.
    pub(crate) augmenting: augment::Turns,
    pub(crate) hooks: Hooks,
    /// How long after the store stopped reporting changes the memo's
    /// copies may still be served when the store cannot be reached.
    pub(crate) serve_stale_on_store_error: Duration,
}

/// Pause points for tests that force an interleaving; empty in production.
#[derive(Default)]
pub(crate) struct Hooks {
    /// Awaited by a flight's task once its outcome is out (see
    /// [`CacheBuilder::__after_outcome`]).
    pub(crate) after_outcome: Option<AfterOutcome>,
}

pub(crate) type AfterOutcome =
    Arc<dyn Fn(&crate::key::Key) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

impl Inner {
    /// The store's entries port.
    pub(crate) fn entries(&self) -> &dyn EntryStore {
        &**self.storage.entries()
    }

    /// The store's timetable port.
    pub(crate) fn timetable(&self) -> &dyn Timetable {
        &**self.storage.timetable()
    }

    /// The store's coordination port.
    pub(crate) fn coordination(&self) -> &dyn Coordination {
        &**self.storage.coordination()
    }
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

    /// The store behind the cache, as its ports.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// The queue of refresh jobs.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.inner.queue
    }

    /// Now, by the cache's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Waits until no computation of this process runs, and, if the cache
    /// runs its own worker, until that worker has run the jobs due that this
    /// cache queued (stale reads, changed dependencies), and the jobs those
    /// queued in turn. Jobs that other processes' workers run are theirs.
    /// Servers use it to drain on shutdown; `kck-testing`, to settle.
    pub async fn wait_idle(&self) {
        loop {
            self.inner.flights.wait_idle().await;
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
        let keys = self.inner.memo.take_reads();
        if !keys.is_empty() {
            self.inner.timetable().touch(&keys, self.now()).await?;
        }
        Ok(keys.len())
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
