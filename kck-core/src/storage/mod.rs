//! Where products and jobs live: the storage *ports*, one trait per role,
//! and the in-memory store that implements them all.
//!
//! A cache talks to storage through four small traits, each about one
//! concern, bundled in a [`Storage`]:
//!
//! | port | what it holds | methods | needed? |
//! |---|---|---|---|
//! | [`EntryStore`] | values, metadata, dependency edges | `load`, `save`, `save_with_deltas`, `patch`, `remove`, `content_hashes`, `dependents`, `dependencies` | always |
//! | [`Timetable`] | refresh times, schedule ticks, reads | `take_due_refreshes`, `claim_tick`, `keys_of`, `touch` | always |
//! | [`Coordination`] | change notices and compute leases between caches | `watch`, `acquire_lease`, `renew_lease`, `release_lease`, `sync` | only for a store shared by several caches |
//! | [`Queue`] | refresh jobs | `enqueue`, `claim`, `extend`, `complete`, `complete_and_claim`, `fail`, `release`, `next_due`, `failed`, `pending`, `running`, `counts`, `jobs_of`, `retry`, `cancel`, `watch_jobs` | no: a cache without one uses a [`MemoryQueue`] |
//! | [`Catalog`] | nothing of its own: lists and counts entries | `products`, `product`, `census` | only for operators' tools ([`Cache::inspect`](crate::Cache::inspect)) |
//!
//! A store keeps serialized entries (JSON bytes and metadata); it knows
//! nothing of primers or types. The [`Cache`](crate::Cache) decodes values
//! and keeps the hot ones, typed, in an in-process memo in front of the
//! store. The ports share a small vocabulary ([`Version`], [`ContentHash`],
//! [`JobDelta`], [`StoreError`]) and never refer to each other, so a store
//! implements any of them alone.
//!
//! # Writing a store
//!
//! A store for another database implements [`EntryStore`] and
//! [`Timetable`], and builds a [`Storage`] from them with [`Storage::new`],
//! or with [`Storage::of`] when one value implements both and
//! [`Coordination`] too. Then `impl From<YourStore> for Storage`, so that
//! users write `Cache::builder().store(YourStore::connect(..)?)`.
//!
//! - Without [`Coordination`], the cache assumes it is the store's only
//!   user: no leases, no change notices. Implement it when several
//!   processes share the store.
//! - Without a [`Queue`], refresh jobs live in the process
//!   ([`MemoryQueue`]). A store that also holds the queue gives it with
//!   [`Storage::with_queue`]; if its saves queue the dependents' refreshes
//!   themselves, in the same transaction, with
//!   [`Storage::with_queue_fed_by_saves`].
//! - Without a [`Catalog`], operators' tools cannot list the store's
//!   products ([`Cache::inspect`](crate::Cache::inspect) says so); give one
//!   with [`Storage::with_catalog`].
//!
//! `kck-testing` has a conformance suite per port (`check_entries`,
//! `check_timetable`, `check_coordination`, `check_queue`,
//! `check_catalog`): run each on the
//! ports your store implements. [`MemoryStore`] is the reference they are
//! checked against; `kck-diesel`'s `PgStore` implements every port.

mod catalog;
mod common;
mod coordination;
mod entries;
mod memory;
mod queue;
mod timetable;

use std::sync::Arc;

pub use catalog::{
    Catalog, Census, Neighbour, ProductPage, ProductQuery, ProductRecord, ProductState,
    ProductSummary, UnknownState,
};
pub use common::{ContentHash, JobDelta, StoreError, Version};
pub(crate) use coordination::Alone;
pub use coordination::{
    CODE_VERSION_ANNOUNCE, CODE_VERSION_TTL, ChangeWatcher, Coordination, Lease,
};
pub use entries::{
    Edge, Entry, EntryError, EntryMeta, EntryPatch, EntryStore, Expect, Saved, StoredEntry,
};
pub use memory::{MemoryQueue, MemoryStore};
pub use queue::{
    Claim, FailedJob, Job, JobCounts, JobId, JobRequest, JobWatcher, KeyJobs, PendingJob, Queue,
    RefreshReason, RunningJob, Turnover,
};
pub use timetable::{DueRefreshes, TickClaim, Timetable};

/// The ports of one store, as the cache holds them: what
/// [`CacheBuilder::store`](crate::CacheBuilder::store) takes.
///
/// Built by a store's `From` impl ([`MemoryStore`] and `kck-diesel`'s
/// `PgStore` have one), or by hand from ports: see [Writing a
/// store](self#writing-a-store). Cloning shares the ports.
#[derive(Clone)]
pub struct Storage {
    entries: Arc<dyn EntryStore>,
    timetable: Arc<dyn Timetable>,
    coordination: Arc<dyn Coordination>,
    queue: Option<Arc<dyn Queue>>,
    queue_fed_by_saves: bool,
    catalog: Option<Arc<dyn Catalog>>,
}

impl Storage {
    /// Storage for one cache: these entries and this timetable, no
    /// coordination with other caches, and no queue of its own.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kck_core::storage::{MemoryQueue, MemoryStore, Storage};
    /// use kck_core::Cache;
    ///
    /// let store = Arc::new(MemoryStore::new());
    /// let storage =
    ///     Storage::new(store.clone(), store).with_queue(Arc::new(MemoryQueue::new()));
    /// assert!(storage.queue().is_some());
    ///
    /// let cache = Cache::builder()
    ///     .store(storage)
    ///     .local_worker(false)
    ///     .local_scheduler(false)
    ///     .build()?;
    /// # let _ = cache;
    /// # Ok::<(), kck_core::primer::RegistryError>(())
    /// ```
    pub fn new(entries: Arc<dyn EntryStore>, timetable: Arc<dyn Timetable>) -> Self {
        Storage {
            entries,
            timetable,
            coordination: Arc::new(Alone),
            queue: None,
            queue_fed_by_saves: false,
            catalog: None,
        }
    }

    /// Storage whose entries, timetable and coordination are all `store`.
    pub fn of<S: EntryStore + Timetable + Coordination>(store: Arc<S>) -> Self {
        Storage::new(store.clone(), store.clone()).with_coordination(store)
    }

    /// Shares the store between caches through `coordination`.
    #[must_use]
    pub fn with_coordination(mut self, coordination: Arc<dyn Coordination>) -> Self {
        self.coordination = coordination;
        self
    }

    /// The store's own refresh queue, used by every cache on the store
    /// unless it is given another ([`CacheBuilder::queue`](crate::CacheBuilder::queue)).
    #[must_use]
    pub fn with_queue(mut self, queue: Arc<dyn Queue>) -> Self {
        self.queue = Some(queue);
        self.queue_fed_by_saves = false;
        self
    }

    /// Like [`Storage::with_queue`], for a store whose writes queue the
    /// refresh of the written entry's dependents themselves, in the same
    /// transaction ([`EntryStore::save_with_deltas`] passes them the
    /// deltas): the cache then queues none after a write.
    #[must_use]
    pub fn with_queue_fed_by_saves(mut self, queue: Arc<dyn Queue>) -> Self {
        self.queue = Some(queue);
        self.queue_fed_by_saves = true;
        self
    }

    /// Lists and counts the store's entries for operators' tools.
    #[must_use]
    pub fn with_catalog(mut self, catalog: Arc<dyn Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The entries port.
    pub fn entries(&self) -> &Arc<dyn EntryStore> {
        &self.entries
    }

    /// The timetable port.
    pub fn timetable(&self) -> &Arc<dyn Timetable> {
        &self.timetable
    }

    /// The coordination port (one that coordinates nothing, for a store
    /// serving one cache).
    pub fn coordination(&self) -> &Arc<dyn Coordination> {
        &self.coordination
    }

    /// The store's own queue, if it has one.
    pub fn queue(&self) -> Option<&Arc<dyn Queue>> {
        self.queue.as_ref()
    }

    /// The store's catalog, if it has one.
    pub fn catalog(&self) -> Option<&Arc<dyn Catalog>> {
        self.catalog.as_ref()
    }

    /// Whether the store's writes queue their dependents' refreshes
    /// ([`Storage::with_queue_fed_by_saves`]).
    pub fn queue_fed_by_saves(&self) -> bool {
        self.queue_fed_by_saves
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("queue", &self.queue.is_some())
            .field("queue_fed_by_saves", &self.queue_fed_by_saves)
            .field("catalog", &self.catalog.is_some())
            .finish_non_exhaustive()
    }
}

impl From<MemoryStore> for Storage {
    fn from(store: MemoryStore) -> Self {
        Storage::from(Arc::new(store))
    }
}

/// A memory store shared with others: several caches on one store, or a
/// test that inspects it. Its [`MemoryQueue`] is the queue of every cache on
/// it.
impl From<Arc<MemoryStore>> for Storage {
    fn from(store: Arc<MemoryStore>) -> Self {
        let queue: Arc<dyn Queue> = store.queue().clone();
        Storage::of(store.clone())
            .with_queue(queue)
            .with_catalog(store)
    }
}
