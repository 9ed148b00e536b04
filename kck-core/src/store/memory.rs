//! The in-memory store: one process, nothing persisted.

use std::collections::{BTreeSet, HashMap};
use std::future::ready;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_util::future::BoxFuture;

use super::{Entry, EntryPatch, Expect, Saved, Store, StoreError, StoredEntry, Version};
use crate::key::Key;

/// A [`Store`] in process memory: the default store, and the reference the
/// store conformance suite of `kck-testing` is checked against.
///
/// Every operation takes one short lock and never awaits while holding it.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Key, StoredEntry>,
    /// Reverse edges: dependency -> the keys whose entries list it.
    dependents: HashMap<Key, BTreeSet<Key>>,
    last_version: i64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys of all entries, sorted.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.lock().entries.keys().cloned().collect();
        keys.sort();
        keys
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, so a poisoned lock still
        // holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn next_version(&mut self) -> Version {
        self.last_version += 1;
        Version(self.last_version)
    }

    fn unlink(&mut self, key: &Key, dependencies: &[Key]) {
        for dependency in dependencies {
            if let Some(dependents) = self.dependents.get_mut(dependency) {
                dependents.remove(key);
                if dependents.is_empty() {
                    self.dependents.remove(dependency);
                }
            }
        }
    }

    fn save(&mut self, entry: Entry, expect: Expect) -> Saved {
        let current = self.entries.get(&entry.key).map(|stored| stored.version);
        if !expect.admits(current) {
            return Saved::Conflict { current };
        }
        if let Some(old) = self.entries.remove(&entry.key) {
            self.unlink(&old.entry.key, &old.entry.dependencies);
        }
        for dependency in &entry.dependencies {
            self.dependents
                .entry(dependency.clone())
                .or_default()
                .insert(entry.key.clone());
        }
        let version = self.next_version();
        self.entries
            .insert(entry.key.clone(), StoredEntry { version, entry });
        Saved::Written(version)
    }

    fn patch(&mut self, key: &Key, patch: &EntryPatch, expect: Expect) -> Saved {
        let current = self.entries.get(key).map(|stored| stored.version);
        if current.is_none() || !expect.admits(current) {
            return Saved::Conflict { current };
        }
        let version = self.next_version();
        let Some(stored) = self.entries.get_mut(key) else {
            return Saved::Conflict { current: None };
        };
        patch.apply(&mut stored.entry.meta);
        stored.version = version;
        Saved::Written(version)
    }

    fn remove(&mut self, key: &Key) -> bool {
        match self.entries.remove(key) {
            Some(old) => {
                self.unlink(key, &old.entry.dependencies);
                true
            }
            None => false,
        }
    }
}

impl Store for MemoryStore {
    fn load<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<StoredEntry>, StoreError>> {
        Box::pin(ready(Ok(self.lock().entries.get(key).cloned())))
    }

    fn save(&self, entry: Entry, expect: Expect) -> BoxFuture<'_, Result<Saved, StoreError>> {
        Box::pin(ready(Ok(self.lock().save(entry, expect))))
    }

    fn patch<'a>(
        &'a self,
        key: &'a Key,
        patch: EntryPatch,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(ready(Ok(self.lock().patch(key, &patch, expect))))
    }

    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(ready(Ok(self.lock().remove(key))))
    }

    fn dependents<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Key>, StoreError>> {
        let dependents = self
            .lock()
            .dependents
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        Box::pin(ready(Ok(dependents)))
    }
}
