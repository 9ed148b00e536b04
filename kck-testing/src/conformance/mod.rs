//! The conformance suites: the contract of each storage port, as one
//! function per port to call from a test of your store.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use kck_core::storage::{MemoryStore, Storage};
//! use kck_testing::conformance;
//!
//! let storage = Storage::from(MemoryStore::new());
//! conformance::check_timetable(&storage).await;
//! conformance::check_entries(&**storage.entries()).await;
//! conformance::check_coordination(&storage).await;
//! conformance::check_queue(std::sync::Arc::new(kck_core::storage::MemoryQueue::new())).await;
//! // Or every port the storage has, in one call:
//! conformance::check_storage(MemoryStore::new()).await;
//! # }
//! ```
//!
//! Each suite uses keys of its own (`conformance_*`), so they may run one
//! after the other on one store, the timetable suite first (it takes every
//! due entry, and the others leave some); none may run while anything else
//! uses the store.
//! A store that implements only some ports runs the suites of those:
//! [`check_entries`] and [`check_timetable`] always,
//! [`check_coordination`] if several caches may share it, [`check_queue`]
//! if it holds a queue, [`check_catalog`] if it has a catalog.

mod catalog;
mod coordination;
mod entries;
mod queue;
mod timetable;

use std::time::Duration;

pub use catalog::check_catalog;
pub use coordination::check_coordination;
pub use entries::check_entries;
use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{
    ContentHash, Edge, Entry, EntryError, EntryMeta, EntryStore, Expect, Saved, Storage,
    StoredEntry, Version,
};
pub use queue::check_queue;
pub use timetable::check_timetable;

/// Runs the suite of every port `storage` has: timetable, entries,
/// coordination, and its catalog and queue if it has them. The store must be empty and
/// used by no one else meanwhile.
///
/// # Panics
///
/// On the first broken rule, saying which.
pub async fn check_storage(storage: impl Into<Storage>) {
    let storage = storage.into();
    check_timetable(&storage).await;
    check_entries(&**storage.entries()).await;
    check_coordination(&storage).await;
    if storage.catalog().is_some() {
        check_catalog(&storage).await;
    }
    if let Some(queue) = storage.queue() {
        check_queue(queue.clone()).await;
    }
}

pub(crate) fn key(text: &str) -> Key {
    Key::parse(text).unwrap_or_else(|error| panic!("a valid key: {error}"))
}

pub(crate) fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_767_225_600_000_000 + seconds * 1_000_000 + 123)
}

pub(crate) fn entry(key: &Key, value: &str, dependencies: &[&str]) -> Entry {
    Entry {
        key: key.clone(),
        value: value.as_bytes().to_vec(),
        meta: EntryMeta {
            computed_at: at(0),
            changed_at: at(-10),
            stale_at: Some(at(60)),
            refresh_at: Some(at(300)),
            expires_at: Some(at(3600)),
            content_hash: ContentHash::of(value.as_bytes()),
            code_version: "conformance-1".to_owned(),
            compute_duration: Duration::from_micros(1_234_567),
            last_error: Some(EntryError {
                message: "an earlier failure".to_owned(),
                at: at(-5),
                attempts: 2,
            }),
            read_at: Some(at(-1)),
        },
        dependencies: dependencies
            .iter()
            .map(|name| Edge::new(self::key(name), seen(name)))
            .collect(),
    }
}

/// What the conformance entries saw of their dependencies: a hash, or none
/// (a failed read) for names ending in `b`.
pub(crate) fn seen(name: &str) -> Option<ContentHash> {
    (!name.ends_with('b')).then(|| ContentHash::of(name.as_bytes()))
}

pub(crate) fn written(saved: Saved, rule: &str) -> Version {
    match saved {
        Saved::Written(version) => version,
        Saved::Conflict { current } => {
            panic!("{rule}: expected a write, got a conflict at {current:?}")
        }
    }
}

pub(crate) async fn dependencies(store: &dyn EntryStore, key: &Key) -> Vec<Edge> {
    store
        .dependencies(key)
        .await
        .unwrap_or_else(|e| panic!("dependencies of {key}: {e}"))
}

pub(crate) async fn dependents(store: &dyn EntryStore, key: &Key) -> Vec<Key> {
    let edges = store
        .dependents(key)
        .await
        .unwrap_or_else(|e| panic!("dependents of {key}: {e}"));
    edges.into_iter().map(|edge| edge.key).collect()
}

pub(crate) async fn load(store: &dyn EntryStore, key: &Key) -> Option<StoredEntry> {
    store
        .load(key)
        .await
        .unwrap_or_else(|e| panic!("load {key}: {e}"))
}

pub(crate) async fn save(store: &dyn EntryStore, entry: Entry, expect: Expect) -> Saved {
    let key = entry.key.clone();
    store
        .save(entry, expect)
        .await
        .unwrap_or_else(|e| panic!("save {key}: {e}"))
}
