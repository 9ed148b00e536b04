//! The in-memory store: one process, nothing persisted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::ready;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::MemoryQueue;
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::key::Key;
use crate::storage::{
    CODE_VERSION_TTL, Catalog, Census, ChangeWatcher, ContentHash, Coordination, DueRefreshes,
    Edge, Entry, EntryMeta, EntryPatch, EntryStore, Expect, Lease, Neighbour, ProductPage,
    ProductQuery, ProductRecord, ProductState, ProductSummary, Saved, StoreError, StoredEntry,
    TickClaim, Timetable, Version,
};

/// A store in process memory, implementing [`EntryStore`], [`Timetable`],
/// [`Coordination`] and [`Catalog`]: the default store, and the reference the conformance
/// suites of `kck-testing` are checked against.
///
/// Several caches may share one `MemoryStore` (through an `Arc`): it tells
/// each about the writes of the others, leases computations, and holds one
/// [`MemoryQueue`] of refresh jobs for all of them, as a database shared by
/// several processes does. So "two web servers and a worker" can be modelled
/// in one test process: three caches on one store, only the third running a
/// worker. Every operation takes one short lock and never awaits while
/// holding it.
///
/// ```
/// use std::sync::Arc;
/// use kck_core::Cache;
/// use kck_core::storage::MemoryStore;
///
/// # fn main() -> Result<(), kck_core::primer::RegistryError> {
/// let store = Arc::new(MemoryStore::new());
/// let web = Cache::builder().store(store.clone()).local_worker(false).build()?;
/// let worker = Cache::builder().store(store.clone()).build()?;
/// assert!(Arc::ptr_eq(web.queue(), worker.queue()), "one queue for both");
/// # Ok(()) }
/// ```
pub struct MemoryStore {
    state: Mutex<State>,
    watchers: Mutex<Vec<Weak<dyn ChangeWatcher>>>,
    clock: Arc<dyn Clock>,
    queue: Arc<MemoryQueue>,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, (Version, Entry)>,
    /// Every key, in listing order (see [`Catalog`]).
    listed: BTreeSet<Listed>,
    /// Reverse edges: dependency -> the keys whose entries list it, and
    /// what they saw of it.
    dependents: HashMap<Key, BTreeMap<Key, Option<ContentHash>>>,
    leases: HashMap<Key, (String, Timestamp)>,
    ticks: HashMap<String, Timestamp>,
    /// The latest start of each code version of each primer, and when a
    /// cache running it was last there.
    code_versions: HashMap<(String, String), (Timestamp, Timestamp)>,
    /// The entries that have a periodic refresh time, in its order: the
    /// scheduler's work grows with the entries due, not with all of them.
    refreshes: BTreeSet<(Timestamp, Key)>,
    /// Entries whose periodic refresh stopped for want of readers.
    retired: HashSet<Key>,
    last_version: i64,
}

/// A key in the catalog's listing order: by primer, then by key.
#[derive(Clone, PartialEq, Eq)]
struct Listed(Key);

impl Listed {
    /// The first place a key of `primer` may take.
    fn first_of(primer: &str) -> Self {
        Listed(Key::from_written(primer))
    }
}

impl Ord for Listed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.primer(), self.0.as_str()).cmp(&(other.0.primer(), other.0.as_str()))
    }
}

impl PartialOrd for Listed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What a write tells the watchers, once the state is unlocked.
enum Notice {
    Changed(Key, Version),
    Released(Key),
}

impl MemoryStore {
    /// An empty store; leases expire by the system clock.
    pub fn new() -> Self {
        MemoryStore::with_clock(SystemClock)
    }

    /// An empty store whose leases expire by `clock`.
    pub fn with_clock(clock: impl Clock) -> Self {
        MemoryStore {
            state: Mutex::default(),
            watchers: Mutex::default(),
            clock: Arc::new(clock),
            queue: Arc::new(MemoryQueue::new()),
        }
    }

    /// The queue of refresh jobs of every cache on this store.
    pub fn queue(&self) -> &Arc<MemoryQueue> {
        &self.queue
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

    fn watcher_count(&self) -> usize {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.retain(|watcher| watcher.strong_count() > 0);
        watchers.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, so a poisoned lock still
        // holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state, then tells the watchers what it did.
    fn apply<R>(&self, f: impl FnOnce(&mut State) -> (R, Option<Notice>)) -> R {
        let (result, notice) = f(&mut self.lock());
        if let Some(notice) = notice {
            let watchers: Vec<Arc<dyn ChangeWatcher>> = {
                let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
                watchers.retain(|watcher| watcher.strong_count() > 0);
                watchers.iter().filter_map(Weak::upgrade).collect()
            };
            for watcher in watchers {
                match &notice {
                    Notice::Changed(key, version) => watcher.changed(key, *version),
                    Notice::Released(key) => watcher.released(key),
                }
            }
        }
        result
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl State {
    fn next_version(&mut self) -> Version {
        self.last_version += 1;
        Version(self.last_version)
    }

    /// Drops an entry that goes away from the refresh index.
    fn unschedule(&mut self, old: &Entry) {
        if let Some(at) = old.meta.refresh_at {
            self.refreshes.remove(&(at, old.key.clone()));
        }
    }

    fn unlink(&mut self, key: &Key, dependencies: &[Edge]) {
        for dependency in dependencies {
            if let Some(dependents) = self.dependents.get_mut(&dependency.key) {
                dependents.remove(key);
                if dependents.is_empty() {
                    self.dependents.remove(&dependency.key);
                }
            }
        }
    }

    fn save(&mut self, entry: Entry, expect: Expect) -> (Saved, Option<Notice>) {
        let current = self.entries.get(&entry.key).map(|(version, _)| *version);
        if !expect.admits(current) {
            return (Saved::Conflict { current }, None);
        }
        let mut entry = entry;
        if let Some((_, old)) = self.entries.remove(&entry.key) {
            self.unlink(&old.key, &old.dependencies);
            self.unschedule(&old);
            entry.meta.read_at = entry.meta.read_at.max(old.meta.read_at);
        } else {
            self.listed.insert(Listed(entry.key.clone()));
        }
        self.retired.remove(&entry.key);
        if let Some(at) = entry.meta.refresh_at {
            self.refreshes.insert((at, entry.key.clone()));
        }
        for dependency in &entry.dependencies {
            self.dependents
                .entry(dependency.key.clone())
                .or_default()
                .insert(entry.key.clone(), dependency.seen);
        }
        let version = self.next_version();
        let key = entry.key.clone();
        self.entries.insert(key.clone(), (version, entry));
        (Saved::Written(version), Some(Notice::Changed(key, version)))
    }

    fn patch(&mut self, key: &Key, patch: &EntryPatch, expect: Expect) -> (Saved, Option<Notice>) {
        let current = self.entries.get(key).map(|(version, _)| *version);
        if current.is_none() || !expect.admits(current) {
            return (Saved::Conflict { current }, None);
        }
        let version = self.next_version();
        let Some((stored, entry)) = self.entries.get_mut(key) else {
            return (Saved::Conflict { current: None }, None);
        };
        patch.apply(&mut entry.meta);
        *stored = version;
        (
            Saved::Written(version),
            Some(Notice::Changed(key.clone(), version)),
        )
    }

    fn remove(&mut self, key: &Key) -> (Option<Version>, Option<Notice>) {
        let Some((_, old)) = self.entries.remove(key) else {
            return (None, None);
        };
        self.listed.remove(&Listed(key.clone()));
        self.unlink(key, &old.dependencies);
        self.unschedule(&old);
        self.retired.remove(key);
        let version = self.next_version();
        (Some(version), Some(Notice::Changed(key.clone(), version)))
    }

    fn acquire(&mut self, key: &Key, holder: &str, now: Timestamp, ttl: Duration) -> Lease {
        match self.leases.get(key) {
            Some((other, until)) if other != holder && *until > now => Lease::Held {
                remaining: until.saturating_duration_since(now),
            },
            _ => {
                self.leases
                    .insert(key.clone(), (holder.to_owned(), now + ttl));
                Lease::Acquired
            }
        }
    }
}

impl State {
    fn take_due_refreshes(
        &mut self,
        now: Timestamp,
        until: Timestamp,
        read_since: Option<Timestamp>,
        limit: usize,
    ) -> DueRefreshes {
        let due: Vec<(Timestamp, Key)> = self
            .refreshes
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .cloned()
            .collect();
        let mut taken = DueRefreshes::default();
        for (at, key) in due {
            self.refreshes.remove(&(at, key.clone()));
            let Some((_, entry)) = self.entries.get_mut(&key) else {
                continue;
            };
            let live = read_since.is_none_or(|since| entry.meta.read_at >= Some(since));
            if live {
                entry.meta.refresh_at = Some(until);
                self.refreshes.insert((until, key.clone()));
                taken.refresh.push(key);
            } else {
                entry.meta.refresh_at = None;
                self.retired.insert(key.clone());
                taken.retired.push(key);
            }
        }
        taken
    }
}

impl State {
    /// The keys of `primer` in listing order, after `after` if given.
    fn of_primer<'s>(
        &'s self,
        primer: &'s str,
        after: Option<&Key>,
    ) -> impl Iterator<Item = &'s Listed> + 's {
        let from = match after {
            Some(after) if after.primer() == primer => Bound::Excluded(Listed(after.clone())),
            _ => Bound::Included(Listed::first_of(primer)),
        };
        self.listed
            .range((from, Bound::Unbounded))
            .take_while(move |listed| listed.0.primer() == primer)
    }

    /// The entry of `key` as the catalog lists it at `now`.
    fn summary(&self, key: &Key, now: Timestamp, leases_at: Timestamp) -> Option<ProductSummary> {
        let (version, entry) = self.entries.get(key)?;
        Some(ProductSummary {
            key: entry.key.clone(),
            version: *version,
            meta: entry.meta.clone(),
            state: self.state_of(key, &entry.meta, now, leases_at),
            size: entry.value.len() as u64,
        })
    }

    /// The entry of `key`, its value and its neighbours at `now`.
    fn record(
        &self,
        key: &Key,
        now: Timestamp,
        leases_at: Timestamp,
    ) -> Result<Option<ProductRecord>, StoreError> {
        let Some((_, entry)) = self.entries.get(key) else {
            return Ok(None);
        };
        let Some(summary) = self.summary(key, now, leases_at) else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&entry.value).map_err(|error| StoreError::Corrupt {
            key: key.to_string(),
            reason: format!("the stored value is not JSON: {error}"),
        })?;
        let stored = |key: &Key| self.summary(key, now, leases_at);
        let dependencies = entry
            .dependencies
            .iter()
            .map(|edge| {
                let stored = stored(&edge.key);
                Neighbour {
                    key: edge.key.clone(),
                    current: stored
                        .as_ref()
                        .is_some_and(|s| edge.seen == Some(s.meta.content_hash)),
                    stored: stored.map(|s| (s.version, s.state)),
                }
            })
            .collect();
        let dependents = self
            .dependents
            .get(key)
            .into_iter()
            .flatten()
            .map(|(reader, seen)| Neighbour {
                key: reader.clone(),
                current: *seen == Some(summary.meta.content_hash),
                stored: stored(reader).map(|s| (s.version, s.state)),
            })
            .collect();
        Ok(Some(ProductRecord {
            summary,
            value,
            dependencies,
            dependents,
            // The store's queue is another object: it lists them.
            jobs: None,
        }))
    }

    /// The state of the entry of `key` at `now`.
    fn state_of(
        &self,
        key: &Key,
        meta: &EntryMeta,
        now: Timestamp,
        leases_at: Timestamp,
    ) -> ProductState {
        let computing = self
            .leases
            .get(key)
            .is_some_and(|(_, until)| *until > leases_at);
        ProductState::of(meta, computing, now)
    }
}

impl Catalog for MemoryStore {
    fn products<'a>(
        &'a self,
        query: &'a ProductQuery,
    ) -> BoxFuture<'a, Result<ProductPage, StoreError>> {
        if query.limit == 0 || query.scan == 0 {
            return Box::pin(ready(Ok(ProductPage {
                products: Vec::new(),
                next: query.after.clone(),
            })));
        }
        let leases_at = self.clock.now();
        let state = self.lock();
        let scanned: Box<dyn Iterator<Item = &Listed>> = match &query.primer {
            Some(primer) => Box::new(state.of_primer(primer, query.after.as_ref())),
            None => {
                let from = match &query.after {
                    Some(after) => Bound::Excluded(Listed(after.clone())),
                    None => Bound::Unbounded,
                };
                Box::new(state.listed.range((from, Bound::Unbounded)))
            }
        };
        let mut page = ProductPage::default();
        let mut last = None;
        for (examined, listed) in scanned.enumerate() {
            if page.products.len() == query.limit || examined == query.scan {
                page.next = last;
                break;
            }
            last = Some(listed.0.clone());
            let Some(product) = state.summary(&listed.0, query.now, leases_at) else {
                continue;
            };
            if query.state.is_none_or(|wanted| wanted == product.state) {
                page.products.push(product);
            }
        }
        drop(state);
        Box::pin(ready(Ok(page)))
    }

    fn entries<'a>(
        &'a self,
        after: Option<&'a Key>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(Version, Entry)>, StoreError>> {
        let from = match after {
            Some(after) => Bound::Excluded(Listed(after.clone())),
            None => Bound::Unbounded,
        };
        let state = self.lock();
        let entries = state
            .listed
            .range((from, Bound::Unbounded))
            .filter_map(|listed| state.entries.get(&listed.0).cloned())
            .take(limit)
            .collect();
        drop(state);
        Box::pin(ready(Ok(entries)))
    }

    fn product<'a>(
        &'a self,
        key: &'a Key,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ProductSummary>, StoreError>> {
        let leases_at = self.clock.now();
        let state = self.lock();
        let product = state.summary(key, now, leases_at);
        drop(state);
        Box::pin(ready(Ok(product)))
    }

    fn detail<'a>(
        &'a self,
        key: &'a Key,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ProductRecord>, StoreError>> {
        let leases_at = self.clock.now();
        let record = self.lock().record(key, now, leases_at);
        Box::pin(ready(record))
    }

    fn census<'a>(
        &'a self,
        primer: &'a str,
        now: Timestamp,
        cap: usize,
    ) -> BoxFuture<'a, Result<Census, StoreError>> {
        let leases_at = self.clock.now();
        let state = self.lock();
        let mut census = Census {
            complete: true,
            ..Census::default()
        };
        for (counted, listed) in state.of_primer(primer, None).enumerate() {
            if counted == cap {
                census.complete = false;
                break;
            }
            if let Some((_, entry)) = state.entries.get(&listed.0) {
                census.add(state.state_of(&listed.0, &entry.meta, now, leases_at), 1);
            }
        }
        drop(state);
        Box::pin(ready(Ok(census)))
    }
}

impl EntryStore for MemoryStore {
    fn content_hashes<'a>(
        &'a self,
        keys: &'a [Key],
    ) -> BoxFuture<'a, Result<Vec<Option<ContentHash>>, StoreError>> {
        let state = self.lock();
        let hashes = keys
            .iter()
            .map(|key| {
                state
                    .entries
                    .get(key)
                    .map(|(_, entry)| entry.meta.content_hash)
            })
            .collect();
        Box::pin(ready(Ok(hashes)))
    }

    fn load<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<StoredEntry>, StoreError>> {
        let stored = self
            .lock()
            .entries
            .get(key)
            .map(|(version, entry)| StoredEntry {
                key: entry.key.clone(),
                version: *version,
                value: entry.value.clone(),
                meta: entry.meta.clone(),
            });
        Box::pin(ready(Ok(stored)))
    }

    fn save(&self, entry: Entry, expect: Expect) -> BoxFuture<'_, Result<Saved, StoreError>> {
        Box::pin(ready(Ok(self.apply(|state| state.save(entry, expect)))))
    }

    fn patch<'a>(
        &'a self,
        key: &'a Key,
        patch: EntryPatch,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(ready(Ok(
            self.apply(|state| state.patch(key, &patch, expect))
        )))
    }

    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Version>, StoreError>> {
        Box::pin(ready(Ok(self.apply(|state| state.remove(key)))))
    }

    fn dependents<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
        let dependents = self
            .lock()
            .dependents
            .get(key)
            .map(|readers| {
                readers
                    .iter()
                    .map(|(reader, seen)| Edge::new(reader.clone(), *seen))
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(ready(Ok(dependents)))
    }

    fn dependencies<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
        let dependencies = self
            .lock()
            .entries
            .get(key)
            .map(|(_, entry)| entry.dependencies.clone())
            .unwrap_or_default();
        Box::pin(ready(Ok(dependencies)))
    }
}

impl Timetable for MemoryStore {
    fn take_due_refreshes<'a>(
        &'a self,
        now: Timestamp,
        until: Timestamp,
        read_since: Option<Timestamp>,
        limit: usize,
    ) -> BoxFuture<'a, Result<DueRefreshes, StoreError>> {
        let keys = self
            .lock()
            .take_due_refreshes(now, until, read_since, limit);
        Box::pin(ready(Ok(keys)))
    }

    fn claim_tick<'a>(
        &'a self,
        name: &'a str,
        now: Timestamp,
        next: Timestamp,
    ) -> BoxFuture<'a, Result<TickClaim, StoreError>> {
        let mut state = self.lock();
        let claim = match state.ticks.get(name) {
            None => TickClaim::Started,
            Some(due) if *due <= now => TickClaim::Fired,
            Some(_) => return Box::pin(ready(Ok(TickClaim::NotDue))),
        };
        state.ticks.insert(name.to_owned(), next);
        Box::pin(ready(Ok(claim)))
    }

    fn keys_of<'a>(&'a self, primer: &'a str) -> BoxFuture<'a, Result<Vec<Key>, StoreError>> {
        let keys: Vec<Key> = self
            .lock()
            .of_primer(primer, None)
            .map(|listed| listed.0.clone())
            .collect();
        Box::pin(ready(Ok(keys)))
    }

    fn touch<'a>(
        &'a self,
        keys: &'a [Key],
        at: Timestamp,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut state = self.lock();
        let state = &mut *state;
        for key in keys {
            if let Some((_, entry)) = state.entries.get_mut(key) {
                entry.meta.read_at = entry.meta.read_at.max(Some(at));
                if state.retired.remove(key) {
                    entry.meta.refresh_at = Some(at);
                    state.refreshes.insert((at, key.clone()));
                }
            }
        }
        Box::pin(ready(Ok(())))
    }
}

impl Coordination for MemoryStore {
    fn watch(&self, watcher: Weak<dyn ChangeWatcher>) {
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(watcher);
    }

    /// [`Lease::NotShared`] while at most one cache watches the store;
    /// leases by the store's clock once several share it.
    fn acquire_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease, StoreError>> {
        if self.watcher_count() <= 1 {
            return Box::pin(ready(Ok(Lease::NotShared)));
        }
        let now = self.clock.now();
        Box::pin(ready(Ok(self.lock().acquire(key, holder, now, ttl))))
    }

    fn renew_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = self.clock.now();
        let renewed = match self.lock().leases.get_mut(key) {
            Some((owner, until)) if owner == holder => {
                *until = now + ttl;
                true
            }
            _ => false,
        };
        Box::pin(ready(Ok(renewed)))
    }

    fn release_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.apply(|state| match state.leases.get(key) {
            Some((owner, _)) if owner == holder => {
                state.leases.remove(key);
                ((), Some(Notice::Released(key.clone())))
            }
            _ => ((), None),
        });
        Box::pin(ready(Ok(())))
    }

    fn newest_code_version<'a>(
        &'a self,
        primer: &'a str,
        code_version: &'a str,
        started_at: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        let mut state = self.lock();
        let (latest, seen) = state
            .code_versions
            .entry((primer.to_owned(), code_version.to_owned()))
            .or_insert((started_at, now));
        *latest = (*latest).max(started_at);
        *seen = (*seen).max(now);
        let newest = state
            .code_versions
            .iter()
            .filter(|((of, _), (_, seen))| of == primer && *seen + CODE_VERSION_TTL >= now)
            .max_by(|((_, a), (at_a, _)), ((_, b), (at_b, _))| {
                at_a.cmp(at_b).then_with(|| a.cmp(b))
            })
            .map_or_else(
                || code_version.to_owned(),
                |((_, version), _)| version.clone(),
            );
        Box::pin(ready(Ok(newest)))
    }
}
