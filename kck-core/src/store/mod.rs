//! Where products live: the [`Store`] trait and its in-memory implementation.
//!
//! A store keeps serialized entries (JSON bytes and metadata) and the
//! dependency edges between them. It knows nothing of primers or types; the
//! [`Cache`](crate::Cache) decodes values and keeps the hot ones, typed, in an
//! in-process memo in front of the store.
//!
//! Every write bumps the entry's [`Version`]; versions come from one sequence
//! per store, so a key that is removed and written again never reuses an old
//! version. Writes can be conditional ([`Expect`]): that is how a computation
//! that lost a race is fenced out.

mod memory;

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::clock::Timestamp;
use crate::error::BoxError;
use crate::key::Key;
use crate::queue::{JobDelta, Queue};

pub use memory::MemoryStore;

/// A store of entries and dependency edges.
///
/// The trait is object safe; the cache holds an `Arc<dyn Store>`. Implementors
/// must make each method atomic: an entry and its edges are saved together or
/// not at all, and a conditional write checks and writes in one step.
///
/// A store shared by several caches (processes on one database, or caches on
/// one [`MemoryStore`]) also tells every cache about the writes of the others
/// ([`Store::watch`]) and lets one cache compute a missing product while the
/// others wait for it ([`Store::acquire_lease`]). The default methods suit a
/// store that serves a single cache.
pub trait Store: Send + Sync + 'static {
    /// Loads the entry of `key` (its dependencies come from
    /// [`Store::dependencies`]).
    fn load<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<StoredEntry>, StoreError>>;

    /// Writes `entry` (value, metadata and the keys it read) if `expect`
    /// holds, replacing the entry's previous dependencies; returns the new
    /// version.
    fn save(&self, entry: Entry, expect: Expect) -> BoxFuture<'_, Result<Saved, StoreError>>;

    /// Updates the metadata of `key` if `expect` holds and the entry exists;
    /// bumps its version.
    fn patch<'a>(
        &'a self,
        key: &'a Key,
        patch: EntryPatch,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Saved, StoreError>>;

    /// Removes the entry of `key` and the edges to its dependencies. Edges
    /// from its dependents stay: they still read it. Returns the version of
    /// the removal (from the same sequence as writes), or `None` if there was
    /// no entry.
    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Version>, StoreError>>;

    /// The entries whose last computation read `key`, sorted by key, each
    /// with what it saw of `key`.
    fn dependents<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>>;

    /// What the last computation of `key` read, in first-read order.
    fn dependencies<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>>;

    /// Takes up to `limit` entries due for their periodic refresh at `now`
    /// (`refresh_at <= now`), earliest first, skipping entries another
    /// scheduler is taking at the same moment:
    ///
    /// - those read at or after `read_since` (every one, when `None`) are
    ///   *live*: their refresh time moves to `until`, so that no scheduler
    ///   takes them again meanwhile (the refresh itself sets the next one),
    ///   and they are returned in [`DueRefreshes::refresh`];
    /// - the others are *retired*: their refresh time is cleared, so they
    ///   cost nothing until [`touch`](Store::touch) reports a read, which
    ///   makes them due at once. They are returned in
    ///   [`DueRefreshes::retired`].
    ///
    /// The cost must grow with `limit`, not with the number of entries
    /// (PgStore reads an index on the refresh time).
    fn take_due_refreshes<'a>(
        &'a self,
        now: Timestamp,
        until: Timestamp,
        read_since: Option<Timestamp>,
        limit: usize,
    ) -> BoxFuture<'a, Result<DueRefreshes, StoreError>>;

    /// A tick of the schedule `name`, decided once across every cache of
    /// the store, atomically: with no record of `name` yet, records `next`
    /// and returns [`TickClaim::Started`]; if the recorded tick is at or
    /// before `now`, records `next` and returns [`TickClaim::Fired`];
    /// otherwise (not due, or another scheduler just claimed it) changes
    /// nothing and returns [`TickClaim::NotDue`].
    fn claim_tick<'a>(
        &'a self,
        name: &'a str,
        now: Timestamp,
        next: Timestamp,
    ) -> BoxFuture<'a, Result<TickClaim, StoreError>>;

    /// The keys of the entries of a primer.
    fn keys_of<'a>(&'a self, primer: &'a str) -> BoxFuture<'a, Result<Vec<Key>, StoreError>>;

    /// Records that `keys` were read at `at` (keeping later reads), without
    /// changing their versions. A retired entry (see
    /// [`take_due_refreshes`](Store::take_due_refreshes)) becomes due for
    /// its refresh at `at`. Unknown keys are ignored.
    fn touch<'a>(&'a self, keys: &'a [Key], at: Timestamp)
    -> BoxFuture<'a, Result<(), StoreError>>;

    /// The refresh queue that goes with this store, if it has one (a
    /// database holds both). Default: none; the cache uses a
    /// [`MemoryQueue`](crate::MemoryQueue).
    fn queue(&self) -> Option<Arc<dyn Queue>> {
        None
    }

    /// Whether a write that changes a value also queues the refresh of its
    /// dependents, in the same transaction. Default: no; the cache queues
    /// them after the write.
    fn queues_dependents(&self) -> bool {
        false
    }

    /// The content hash of each of `keys` now (`None`: no entry), in order.
    /// Default: through [`Store::load`].
    fn content_hashes<'a>(
        &'a self,
        keys: &'a [Key],
    ) -> BoxFuture<'a, Result<Vec<Option<ContentHash>>, StoreError>> {
        Box::pin(async move {
            let mut hashes = Vec::with_capacity(keys.len());
            for key in keys {
                hashes.push(self.load(key).await?.map(|stored| stored.meta.content_hash));
            }
            Ok(hashes)
        })
    }

    /// [`Store::save`], for a write that applied `deltas` to the value: a
    /// store that [queues the dependents' jobs](Store::queues_dependents)
    /// gives them the deltas, in the same transaction. Default: `save`.
    fn save_with_deltas(
        &self,
        entry: Entry,
        expect: Expect,
        deltas: Vec<JobDelta>,
    ) -> BoxFuture<'_, Result<Saved, StoreError>> {
        let _ = deltas;
        self.save(entry, expect)
    }

    /// Registers a cache to be told about every write, removal and lease
    /// release, its own included, for as long as `watcher` lives. Default:
    /// nothing to tell.
    fn watch(&self, watcher: Weak<dyn ChangeWatcher>) {
        let _ = watcher;
    }

    /// Takes the lease to compute `key` for `ttl`, unless another holder
    /// has it. Default: [`Lease::NotShared`].
    fn acquire_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease, StoreError>> {
        let _ = (key, holder, ttl);
        Box::pin(std::future::ready(Ok(Lease::NotShared)))
    }

    /// Extends a lease `holder` holds; `false` if it no longer holds it.
    fn renew_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = (key, holder, ttl);
        Box::pin(std::future::ready(Ok(true)))
    }

    /// Gives a lease back and tells the watchers.
    fn release_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = (key, holder);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn load<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<StoredEntry>, StoreError>> {
        (**self).load(key)
    }
    fn save(&self, entry: Entry, expect: Expect) -> BoxFuture<'_, Result<Saved, StoreError>> {
        (**self).save(entry, expect)
    }
    fn save_with_deltas(
        &self,
        entry: Entry,
        expect: Expect,
        deltas: Vec<JobDelta>,
    ) -> BoxFuture<'_, Result<Saved, StoreError>> {
        (**self).save_with_deltas(entry, expect, deltas)
    }
    fn content_hashes<'a>(
        &'a self,
        keys: &'a [Key],
    ) -> BoxFuture<'a, Result<Vec<Option<ContentHash>>, StoreError>> {
        (**self).content_hashes(keys)
    }
    fn patch<'a>(
        &'a self,
        key: &'a Key,
        patch: EntryPatch,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        (**self).patch(key, patch, expect)
    }
    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Version>, StoreError>> {
        (**self).remove(key)
    }
    fn dependents<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
        (**self).dependents(key)
    }
    fn dependencies<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
        (**self).dependencies(key)
    }
    fn take_due_refreshes<'a>(
        &'a self,
        now: Timestamp,
        until: Timestamp,
        read_since: Option<Timestamp>,
        limit: usize,
    ) -> BoxFuture<'a, Result<DueRefreshes, StoreError>> {
        (**self).take_due_refreshes(now, until, read_since, limit)
    }
    fn claim_tick<'a>(
        &'a self,
        name: &'a str,
        now: Timestamp,
        next: Timestamp,
    ) -> BoxFuture<'a, Result<TickClaim, StoreError>> {
        (**self).claim_tick(name, now, next)
    }
    fn keys_of<'a>(&'a self, primer: &'a str) -> BoxFuture<'a, Result<Vec<Key>, StoreError>> {
        (**self).keys_of(primer)
    }
    fn touch<'a>(
        &'a self,
        keys: &'a [Key],
        at: Timestamp,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).touch(keys, at)
    }
    fn watch(&self, watcher: Weak<dyn ChangeWatcher>) {
        (**self).watch(watcher);
    }
    fn queue(&self) -> Option<Arc<dyn Queue>> {
        (**self).queue()
    }
    fn queues_dependents(&self) -> bool {
        (**self).queues_dependents()
    }
    fn acquire_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease, StoreError>> {
        (**self).acquire_lease(key, holder, ttl)
    }
    fn renew_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).renew_lease(key, holder, ttl)
    }
    fn release_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).release_lease(key, holder)
    }
}

/// What a shared store tells each cache about writes, its own and others'.
pub trait ChangeWatcher: Send + Sync + 'static {
    /// The entry of `key` was written with another value, patched or
    /// removed; `version` is the version of that change. A write that keeps
    /// the value (the same content hash) may go unreported: caches check a
    /// copy whose deadlines passed with the store.
    fn changed(&self, key: &Key, version: Version);

    /// The lease on `key` was given back: whoever waits for it may go on.
    fn released(&self, key: &Key);

    /// `false`: changes may go unreported from now on (the store lost its
    /// notification channel); `true`: they are reported again.
    fn tracking(&self, tracked: bool);
}

/// The answer of [`Store::acquire_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The store serves this cache alone: no lease is needed, and there is
    /// nothing to renew or release.
    NotShared,
    /// The caller holds the lease, and must renew it while it computes and
    /// release it when done.
    Acquired,
    /// Another holder has it, for at most this long.
    Held {
        /// The time left on the other holder's lease.
        remaining: Duration,
    },
}

/// The version of an entry: it grows with every write, across all keys of a
/// store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub i64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// The condition of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// Write only if there is no entry.
    Absent,
    /// Write only if the entry is at exactly this version.
    Version(Version),
}

impl Expect {
    /// Whether an entry at `current` (or none) satisfies the condition.
    pub fn admits(self, current: Option<Version>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(version) => current == Some(version),
        }
    }
}

/// The result of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Saved {
    /// The write happened; the entry is now at this version.
    Written(Version),
    /// The condition did not hold; nothing was written. `current` is the
    /// entry's version, or `None` if there is no entry.
    Conflict {
        /// The version found instead.
        current: Option<Version>,
    },
}

/// A 128-bit hash of a value's canonical serialization: equal hashes mean
/// equal values, which is how an unchanged recompute stops propagating.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 16]);

impl ContentHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(xxhash_rust::xxh3::xxh3_128(bytes).to_be_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// What a store keeps about a product besides its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// When the value was last computed (or set).
    pub computed_at: Timestamp,
    /// When the value last changed (a recompute to an equal value does not
    /// count).
    pub changed_at: Timestamp,
    /// Soft expiry: from then on, reads serve the value and trigger a refresh.
    pub stale_at: Option<Timestamp>,
    /// When the value is due for its periodic refresh.
    pub refresh_at: Option<Timestamp>,
    /// Hard expiry: from then on, the value is never served.
    pub expires_at: Option<Timestamp>,
    /// The hash of the serialized value.
    pub content_hash: ContentHash,
    /// The version of the primer's code that computed the value; entries of
    /// another code version are treated as missing.
    pub code_version: String,
    /// How long the computation took.
    pub compute_duration: Duration,
    /// The last failed refresh, cleared by the next success.
    pub last_error: Option<EntryError>,
    /// When the product was last read, as far as the store knows: caches
    /// report the reads their memos serve from time to time. A write keeps
    /// the later of this and the stored one. Products nobody reads for long
    /// enough stop being refreshed on schedule.
    pub read_at: Option<Timestamp>,
}

/// What [`Store::claim_tick`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickClaim {
    /// The schedule had no record: this claim started it.
    Started,
    /// The recorded tick was due: this claim fired it.
    Fired,
    /// Not due, or claimed by another scheduler.
    NotDue,
}

/// What [`Store::take_due_refreshes`] took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueRefreshes {
    /// Live entries to refresh now.
    pub refresh: Vec<Key>,
    /// Entries nobody read for long enough: no longer refreshed on schedule
    /// until read again.
    pub retired: Vec<Key>,
}

impl DueRefreshes {
    /// How many entries were taken.
    pub fn len(&self) -> usize {
        self.refresh.len() + self.retired.len()
    }

    /// Whether none was due.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A failed refresh, recorded on the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// The error, as displayed.
    pub message: String,
    /// When the last attempt failed.
    pub at: Timestamp,
    /// How many attempts in a row failed.
    pub attempts: u32,
}

/// An entry to write: a product's value (JSON bytes), metadata, and the keys
/// its computation read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The product's key.
    pub key: Key,
    /// The serialized value (JSON).
    pub value: Vec<u8>,
    /// Timestamps, hashes and errors.
    pub meta: EntryMeta,
    /// What the computation read, in first-read order.
    pub dependencies: Vec<Edge>,
}

/// One end of a dependency edge ("this product read that one"), with the
/// hash of the value that was read: a change to a value the dependent has
/// already seen does not concern it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The other product: the dependency, or the dependent.
    pub key: Key,
    /// The content hash of the dependency as the dependent read it; `None`
    /// if the read failed.
    pub seen: Option<ContentHash>,
}

impl Edge {
    /// An edge to `key`, whose value `seen` was read.
    pub fn new(key: Key, seen: Option<ContentHash>) -> Self {
        Edge { key, seen }
    }
}

/// An entry as stored: its version, value and metadata. Its dependencies
/// come from [`Store::dependencies`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The product's key.
    pub key: Key,
    /// The version of the last write.
    pub version: Version,
    /// The serialized value (JSON).
    pub value: Vec<u8>,
    /// Timestamps, hashes and errors.
    pub meta: EntryMeta,
}

/// A metadata update; fields left `None` are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryPatch {
    /// Moves the soft expiry to this instant if it is earlier than the
    /// current one.
    pub stale_at: Option<Timestamp>,
    /// Moves the hard expiry to this instant if it is earlier than the
    /// current one.
    pub expires_at: Option<Timestamp>,
    /// Replaces the recorded error (`Some(None)` clears it).
    pub last_error: Option<Option<EntryError>>,
}

impl EntryPatch {
    /// Marks the entry stale from `at` on.
    pub fn stale_at(at: Timestamp) -> Self {
        EntryPatch {
            stale_at: Some(at),
            ..EntryPatch::default()
        }
    }

    /// Records a failed refresh; with `expire`, the entry also stops being
    /// served from `error.at` on.
    pub fn failed(error: EntryError, expire: bool) -> Self {
        EntryPatch {
            expires_at: expire.then_some(error.at),
            last_error: Some(Some(error)),
            ..EntryPatch::default()
        }
    }

    /// Clears the recorded error.
    pub fn clear_error() -> Self {
        EntryPatch {
            last_error: Some(None),
            ..EntryPatch::default()
        }
    }

    /// Applies the patch to `meta`.
    pub fn apply(&self, meta: &mut EntryMeta) {
        fn earlier(current: Option<Timestamp>, new: Option<Timestamp>) -> Option<Timestamp> {
            match (current, new) {
                (Some(current), Some(new)) => Some(current.min(new)),
                (current, new) => current.or(new),
            }
        }
        meta.stale_at = earlier(meta.stale_at, self.stale_at);
        meta.expires_at = earlier(meta.expires_at, self.expires_at);
        if let Some(error) = &self.last_error {
            meta.last_error.clone_from(error);
        }
    }
}

/// An error of a [`Store`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached now (connection refused or lost, pool
    /// exhausted, timeout). Trying again later may succeed.
    #[error("store unavailable: {source}")]
    Unavailable {
        /// The underlying error.
        #[source]
        source: Arc<dyn StdError + Send + Sync + 'static>,
    },
    /// The store refused the operation for a reason retrying will not fix.
    #[error("store error: {source}")]
    Backend {
        /// The underlying error.
        #[source]
        source: Arc<dyn StdError + Send + Sync + 'static>,
    },
    /// A stored entry is unreadable (not a decode error of its value, which
    /// is a miss, but broken metadata).
    #[error("corrupt entry `{key}`: {reason}")]
    Corrupt {
        /// The entry.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// A transient error: the store cannot be reached now.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        StoreError::Unavailable {
            source: Arc::from(source.into()),
        }
    }

    /// A permanent error of the backend.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            source: Arc::from(source.into()),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
