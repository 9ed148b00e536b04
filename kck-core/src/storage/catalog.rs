//! The catalog port: what a store holds, listed in pages and counted, for
//! operators and their tools.
//!
//! Nothing here is on a read's path: a cache never needs a catalog to
//! serve. Every query is bounded: a page examines at most
//! [`ProductQuery::scan`] entries and a census at most its `cap`, so that a
//! store of millions of products answers in milliseconds, at the price of
//! a page that may come back short (with a cursor to go on from) and counts
//! that may be lower bounds (they say so).

use std::fmt;
use std::str::FromStr;

use futures_util::future::BoxFuture;

use super::common::{StoreError, Version};
use super::entries::{Entry, EntryMeta};
use super::queue::KeyJobs;
use crate::clock::Timestamp;
use crate::key::Key;

/// Lists and counts the entries of a store. Object safe: a
/// [`Storage`](super::Storage) holds an `Arc<dyn Catalog>`, if its store
/// has one.
///
/// Listing order is by primer name, then by key, in the store's own
/// ordering of text (bytes for [`MemoryStore`](super::MemoryStore), the
/// database's collation for PostgreSQL); a cursor is the last key of a
/// page.
pub trait Catalog: Send + Sync + 'static {
    /// A page of entries after `query.after`, in listing order, of
    /// `query.primer` only if given, in `query.state` only if given.
    ///
    /// Examines at most `query.scan` entries of the primer (or of all
    /// primers): when the state filter is rare, the page holds fewer than
    /// `query.limit` products and [`ProductPage::next`] says where to go
    /// on. `next` is `None` only once every entry after the cursor was
    /// examined.
    fn products<'a>(
        &'a self,
        query: &'a ProductQuery,
    ) -> BoxFuture<'a, Result<ProductPage, StoreError>>;

    /// The entry of `key` as a page would list it at `now`; `None` if
    /// there is none.
    fn product<'a>(
        &'a self,
        key: &'a Key,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ProductSummary>, StoreError>>;

    /// The entry of `key` at `now` with its value (as JSON) and the
    /// entries at both ends of its dependency edges, each with its version
    /// and state, and its jobs if the store is its own queue; `None` if
    /// there is none. A store answers it in one round trip where it can:
    /// an operator's page of one product should cost about what a read of
    /// it does.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the stored value is not JSON.
    fn detail<'a>(
        &'a self,
        key: &'a Key,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ProductRecord>, StoreError>>;

    /// Up to `limit` entries after the key `after` (`None`: from the
    /// first), in listing order, each with its version, its value as
    /// stored, its metadata and its dependencies (in first-read order).
    /// Going through a store page by page with it, as `kck dump` does,
    /// takes memory bounded by the page, whatever the store's size; an
    /// entry written meanwhile is seen or not, each at one version.
    fn entries<'a>(
        &'a self,
        after: Option<&'a Key>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(Version, Entry)>, StoreError>>;

    /// How many entries of `primer` are in each state at `now`, counting
    /// at most `cap` entries ([`Census::complete`] says whether that was
    /// all of them).
    fn census<'a>(
        &'a self,
        primer: &'a str,
        now: Timestamp,
        cap: usize,
    ) -> BoxFuture<'a, Result<Census, StoreError>>;
}

/// The state of a product at an instant, for an operator. A product is in
/// exactly one: the first of these that applies.
///
/// 1. [`Failing`](ProductState::Failing): its last refresh failed (the
///    error is on its metadata); it may still be served, stale.
/// 2. [`Expired`](ProductState::Expired): past its hard expiry; a read
///    computes it anew and never serves it.
/// 3. [`Computing`](ProductState::Computing): a cache holds the lease to
///    compute it now.
/// 4. [`Stale`](ProductState::Stale): past its soft expiry; a read serves it
///    and queues a refresh.
/// 5. [`Fresh`](ProductState::Fresh): served as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProductState {
    /// Served as it is.
    Fresh,
    /// Served, with a refresh queued by the read.
    Stale,
    /// Never served again: a read computes it.
    Expired,
    /// Its last refresh failed.
    Failing,
    /// Being computed now.
    Computing,
}

impl ProductState {
    /// Every state, in the order of [`Census`]'s fields.
    pub const ALL: [ProductState; 5] = [
        ProductState::Fresh,
        ProductState::Stale,
        ProductState::Expired,
        ProductState::Failing,
        ProductState::Computing,
    ];

    /// The state of an entry with metadata `meta` at `now`, given whether a
    /// lease to compute it is held.
    pub fn of(meta: &EntryMeta, computing: bool, now: Timestamp) -> Self {
        if meta.last_error.is_some() {
            ProductState::Failing
        } else if meta.expires_at.is_some_and(|at| at <= now) {
            ProductState::Expired
        } else if computing {
            ProductState::Computing
        } else if meta.stale_at.is_some_and(|at| at <= now) {
            ProductState::Stale
        } else {
            ProductState::Fresh
        }
    }

    /// The state's name: `fresh`, `stale`, `expired`, `failing`,
    /// `computing`.
    pub fn name(self) -> &'static str {
        match self {
            ProductState::Fresh => "fresh",
            ProductState::Stale => "stale",
            ProductState::Expired => "expired",
            ProductState::Failing => "failing",
            ProductState::Computing => "computing",
        }
    }
}

impl fmt::Display for ProductState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text is no [`ProductState`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown product state `{0}` (expected fresh, stale, expired, failing or computing)")]
pub struct UnknownState(pub String);

impl FromStr for ProductState {
    type Err = UnknownState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProductState::ALL
            .into_iter()
            .find(|state| state.name() == text)
            .ok_or_else(|| UnknownState(text.to_owned()))
    }
}

/// Which products [`Catalog::products`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductQuery {
    /// Only this primer's products.
    pub primer: Option<String>,
    /// Only products in this state.
    pub state: Option<ProductState>,
    /// Start after this key (the previous page's [`ProductPage::next`]).
    pub after: Option<Key>,
    /// At most this many products.
    pub limit: usize,
    /// Examine at most this many entries.
    pub scan: usize,
    /// The instant the states are judged at.
    pub now: Timestamp,
}

impl ProductQuery {
    /// The default number of entries a page examines.
    pub const DEFAULT_SCAN: usize = 10_000;

    /// The first page of up to `limit` products of every primer, in every
    /// state, at `now`.
    pub fn new(limit: usize, now: Timestamp) -> Self {
        ProductQuery {
            primer: None,
            state: None,
            after: None,
            limit,
            scan: Self::DEFAULT_SCAN.max(limit),
            now,
        }
    }
}

/// A page of products.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProductPage {
    /// The products, in listing order.
    pub products: Vec<ProductSummary>,
    /// Where the next page starts (its [`ProductQuery::after`]); `None`
    /// when there is nothing after this page.
    pub next: Option<Key>,
}

/// A product as a listing shows it: everything but its value and edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSummary {
    /// Its key.
    pub key: Key,
    /// The version of its last write.
    pub version: Version,
    /// Its metadata.
    pub meta: EntryMeta,
    /// Its state at the query's instant.
    pub state: ProductState,
    /// The bytes its value takes in the store, as the store measures them
    /// (the JSON text in memory; PostgreSQL's stored, possibly compressed,
    /// size).
    pub size: u64,
}

/// An entry, its value and its neighbours, as [`Catalog::detail`] finds
/// them.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductRecord {
    /// Its key, version, metadata, state and size.
    pub summary: ProductSummary,
    /// Its value as stored, as JSON.
    pub value: serde_json::Value,
    /// What its last computation read, in first-read order.
    pub dependencies: Vec<Neighbour>,
    /// What read it, by key.
    pub dependents: Vec<Neighbour>,
    /// Its jobs, from a store that is also a [`Queue`](super::Queue) and
    /// lists them in the same round trip (as `Queue::jobs_of` would);
    /// `None` from a store that leaves them to its queue.
    pub jobs: Option<KeyJobs>,
}

/// A product at the other end of a dependency edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Its key.
    pub key: Key,
    /// Its version and state, or `None` if it is not stored.
    pub stored: Option<(Version, ProductState)>,
    /// Whether the reader saw its current value (`false`: it changed since,
    /// or the read failed).
    pub current: bool,
}

/// How many products of a primer are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    /// [`ProductState::Fresh`].
    pub fresh: u64,
    /// [`ProductState::Stale`].
    pub stale: u64,
    /// [`ProductState::Expired`].
    pub expired: u64,
    /// [`ProductState::Failing`].
    pub failing: u64,
    /// [`ProductState::Computing`].
    pub computing: u64,
    /// Whether every product was counted; if not, the counts are of the
    /// first `cap` products in listing order.
    pub complete: bool,
}

impl Census {
    /// The count of `state`.
    pub fn get(&self, state: ProductState) -> u64 {
        match state {
            ProductState::Fresh => self.fresh,
            ProductState::Stale => self.stale,
            ProductState::Expired => self.expired,
            ProductState::Failing => self.failing,
            ProductState::Computing => self.computing,
        }
    }

    /// Adds `count` products in `state`.
    pub fn add(&mut self, state: ProductState, count: u64) {
        let field = match state {
            ProductState::Fresh => &mut self.fresh,
            ProductState::Stale => &mut self.stale,
            ProductState::Expired => &mut self.expired,
            ProductState::Failing => &mut self.failing,
            ProductState::Computing => &mut self.computing,
        };
        *field += count;
    }

    /// Every product counted.
    pub fn total(&self) -> u64 {
        ProductState::ALL
            .into_iter()
            .map(|state| self.get(state))
            .sum()
    }
}
