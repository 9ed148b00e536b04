//! The entries port: products' values, metadata and dependency edges.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::common::{ContentHash, JobDelta, StoreError, Version};
use crate::clock::Timestamp;
use crate::key::Key;

/// Where products live: entries (a value as JSON bytes, its metadata) and
/// the dependency edges between them. Every store implements it, and
/// [`Timetable`](super::Timetable).
///
/// The trait is object safe; the cache holds an `Arc<dyn EntryStore>`.
/// Implementors must make each method atomic: an entry and its edges are
/// saved together or not at all, and a conditional write checks and writes
/// in one step.
///
/// Every write bumps the entry's [`Version`]; versions come from one
/// sequence per store, so a key that is removed and written again never
/// reuses an old version. Writes can be conditional ([`Expect`]): that is
/// how a computation that lost a race is fenced out.
pub trait EntryStore: Send + Sync + 'static {
    /// Loads the entry of `key` (its dependencies come from
    /// [`EntryStore::dependencies`]).
    fn load<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<StoredEntry>, StoreError>>;

    /// Writes `entry` (value, metadata and the keys it read) if `expect`
    /// holds, replacing the entry's previous dependencies; returns the new
    /// version.
    fn save(&self, entry: Entry, expect: Expect) -> BoxFuture<'_, Result<Saved, StoreError>>;

    /// [`EntryStore::save`], for a write that applied `deltas` to the value:
    /// a store whose saves [queue the dependents'
    /// jobs](super::Storage::with_queue_fed_by_saves) gives them the
    /// deltas, in the same transaction. Default: `save`.
    fn save_with_deltas(
        &self,
        entry: Entry,
        expect: Expect,
        deltas: Vec<JobDelta>,
    ) -> BoxFuture<'_, Result<Saved, StoreError>> {
        let _ = deltas;
        self.save(entry, expect)
    }

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

    /// The content hash of each of `keys` now (`None`: no entry), in order.
    /// Default: through [`EntryStore::load`].
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

    /// The entries whose last computation read `key`, sorted by key, each
    /// with what it saw of `key`.
    fn dependents<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>>;

    /// What the last computation of `key` read, in first-read order.
    fn dependencies<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>>;
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
/// come from [`EntryStore::dependencies`].
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
