//! The vocabulary every port speaks: versions, content hashes, job deltas
//! and the one error type of storage.
//!
//! The port modules ([`entries`](super::entries), [`timetable`](super::timetable),
//! [`coordination`](super::coordination), [`queue`](super::queue)) import
//! from here and never from each other, so that a store can implement any
//! of them alone.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::key::Key;

/// The version of an entry: it grows with every write, across all keys of a
/// store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub i64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
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

/// A delta applied to a product, carried to a product that read it (see
/// [`AugmentFrom`](crate::augment::AugmentFrom)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDelta {
    /// The product the delta was applied to.
    pub from: Key,
    /// Its content hash before the delta.
    pub before: ContentHash,
    /// Its content hash after the delta.
    pub after: ContentHash,
    /// The delta, serialized (JSON) as that product's primer's `Delta`.
    pub delta: Vec<u8>,
}

/// An error of a storage port.
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
    pub fn unavailable(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        StoreError::Unavailable {
            source: Arc::from(source.into()),
        }
    }

    /// A permanent error of the backend.
    pub fn backend(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        StoreError::Backend {
            source: Arc::from(source.into()),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
