//! The store conformance suite: the contract every [`Store`] must keep, as
//! one function to call from a test of your store.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use kck_core::MemoryStore;
//!
//! kck_testing::conformance::check_store(Arc::new(MemoryStore::new())).await;
//! # }
//! ```
//!
//! It checks, with keys of its own (`conformance_*`): loads of missing
//! keys; that an entry and its metadata round-trip exactly (the value as
//! JSON); compare-and-set on `Absent`, `Version` and `Any`, with conflicts
//! reporting the version found; that versions grow across keys and across a
//! removal; dependency edges both ways, their order and their replacement;
//! patches (earlier expiries win, errors set and cleared, versions bumped);
//! that every change and lease release is reported to watchers; the
//! scheduler's primitives (due refreshes taken once, earliest first, live or
//! retired by their last read; reads recorded and kept at their latest;
//! schedule ticks fired once; the keys of a primer); and, if the store
//! leases computations once several caches share it, that leases exclude,
//! renew, release and expire.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kck_core::store::{
    ChangeWatcher, ContentHash, DueRefreshes, Edge, Entry, EntryError, EntryMeta, EntryPatch,
    Expect, Lease, Saved, Store, StoredEntry, TickClaim, Version,
};
use kck_core::{Key, Timestamp};
use tokio::sync::mpsc;

/// Runs every check against `store`, which must be empty and used by no one
/// else meanwhile.
///
/// # Panics
///
/// On the first broken rule, saying which.
pub async fn check_store(store: Arc<dyn Store>) {
    let (watcher, mut notices) = Recorder::new();
    // A second watcher: a store that leases only when shared sees two caches.
    let (other, _other_notices) = Recorder::new();
    store.watch(Arc::downgrade(&watcher) as Weak<dyn ChangeWatcher>);
    store.watch(Arc::downgrade(&other) as Weak<dyn ChangeWatcher>);

    scheduling(&*store).await;
    missing_keys(&*store).await;
    round_trip(&*store, &mut notices).await;
    compare_and_set(&*store).await;
    versions_grow(&*store).await;
    edges(&*store).await;
    patches(&*store, &mut notices).await;
    leases(&*store, &mut notices).await;
    drop((watcher, other));
}

fn key(text: &str) -> Key {
    Key::parse(text).unwrap_or_else(|error| panic!("a valid key: {error}"))
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_767_225_600_000_000 + seconds * 1_000_000 + 123)
}

fn entry(key: &Key, value: &str, dependencies: &[&str]) -> Entry {
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
fn seen(name: &str) -> Option<ContentHash> {
    (!name.ends_with('b')).then(|| ContentHash::of(name.as_bytes()))
}

async fn dependencies(store: &dyn Store, key: &Key) -> Vec<Edge> {
    store
        .dependencies(key)
        .await
        .unwrap_or_else(|e| panic!("dependencies of {key}: {e}"))
}

async fn dependents(store: &dyn Store, key: &Key) -> Vec<Key> {
    let edges = store
        .dependents(key)
        .await
        .unwrap_or_else(|e| panic!("dependents of {key}: {e}"));
    edges.into_iter().map(|edge| edge.key).collect()
}

fn written(saved: Saved, rule: &str) -> Version {
    match saved {
        Saved::Written(version) => version,
        Saved::Conflict { current } => {
            panic!("{rule}: expected a write, got a conflict at {current:?}")
        }
    }
}

async fn load(store: &dyn Store, key: &Key) -> Option<StoredEntry> {
    store
        .load(key)
        .await
        .unwrap_or_else(|e| panic!("load {key}: {e}"))
}

async fn save(store: &dyn Store, entry: Entry, expect: Expect) -> Saved {
    let key = entry.key.clone();
    store
        .save(entry, expect)
        .await
        .unwrap_or_else(|e| panic!("save {key}: {e}"))
}

/// An entry due for its refresh at `refresh` and last read at `read`
/// (seconds from the suite's epoch).
fn scheduled(key: &Key, refresh: i64, read: Option<i64>) -> Entry {
    let mut entry = entry(key, "1", &[]);
    entry.meta.refresh_at = Some(at(refresh));
    entry.meta.read_at = read.map(at);
    entry
}

async fn take_due(
    store: &dyn Store,
    now: i64,
    until: i64,
    read_since: Option<i64>,
    limit: usize,
) -> DueRefreshes {
    let mut due = store
        .take_due_refreshes(at(now), at(until), read_since.map(at), limit)
        .await
        .unwrap_or_else(|e| panic!("take_due_refreshes: {e}"));
    due.refresh.sort();
    due.retired.sort();
    due
}

async fn meta(store: &dyn Store, key: &Key) -> (Option<Timestamp>, Option<Timestamp>, Version) {
    let stored = load(store, key)
        .await
        .unwrap_or_else(|| panic!("{key} was saved"));
    (stored.meta.refresh_at, stored.meta.read_at, stored.version)
}

async fn scheduling(store: &dyn Store) {
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| key(&format!("conformance_sched/{name}")));
    let va = written(
        save(store, scheduled(&a, 100, Some(50)), Expect::Any).await,
        "a",
    );
    for entry in [
        scheduled(&b, 110, None),
        scheduled(&c, 120, Some(90)),
        scheduled(&d, 200, Some(90)),
    ] {
        written(save(store, entry, Expect::Any).await, "save");
    }

    let due = take_due(store, 150, 1000, Some(60), 10).await;
    assert_eq!(
        due.refresh,
        std::slice::from_ref(&c),
        "entries read since are live"
    );
    assert_eq!(
        due.retired,
        [a.clone(), b.clone()],
        "entries not read since are retired"
    );
    assert_eq!(
        meta(store, &c).await.0,
        Some(at(1000)),
        "a live entry's refresh moves to `until`"
    );
    assert_eq!(
        meta(store, &a).await,
        (None, Some(at(50)), va),
        "a retired entry has no refresh time, and taking changes no version"
    );
    assert!(
        take_due(store, 150, 1000, Some(60), 10).await.is_empty(),
        "an entry is taken once"
    );

    let first = take_due(store, 2000, 3000, None, 1).await;
    assert_eq!(
        first.refresh,
        std::slice::from_ref(&d),
        "the earliest due comes first"
    );
    assert_eq!(take_due(store, 2000, 3000, None, 1).await.refresh, [c]);

    let missing = key("conformance_sched/missing");
    let touch = |keys: Vec<Key>, when: i64| async move {
        store
            .touch(&keys, at(when))
            .await
            .unwrap_or_else(|e| panic!("touch: {e}"));
    };
    touch(vec![a.clone(), missing.clone()], 160).await;
    touch(vec![a.clone()], 155).await;
    assert_eq!(
        meta(store, &a).await,
        (Some(at(160)), Some(at(160)), va),
        "a read is kept at its latest, makes a retired entry due, and changes no version"
    );
    assert!(
        load(store, &missing).await.is_none(),
        "touch creates nothing"
    );
    let due = take_due(store, 170, 1000, Some(160), 10).await;
    assert_eq!(
        due.refresh,
        std::slice::from_ref(&a),
        "a retired entry read again is live"
    );
    assert!(due.retired.is_empty(), "a retired entry is retired once");

    written(
        save(store, scheduled(&a, 100, Some(10)), Expect::Any).await,
        "a",
    );
    assert_eq!(
        meta(store, &a).await.1,
        Some(at(160)),
        "a save keeps the later read"
    );
    written(
        save(store, scheduled(&b, 100, None), Expect::Any).await,
        "b",
    );
    assert_eq!(
        take_due(store, 170, 1000, None, 10).await.refresh,
        [a, b],
        "a save sets the refresh time of a retired entry"
    );

    let keys = store
        .keys_of("conformance_sched")
        .await
        .unwrap_or_else(|e| panic!("keys_of: {e}"));
    assert_eq!(keys.len(), 4, "the keys of a primer: {keys:?}");
    assert!(
        store
            .keys_of("conformance_nothing")
            .await
            .is_ok_and(|keys| keys.is_empty())
    );

    let tick = |now: i64, next: i64| async move {
        store
            .claim_tick("conformance tick", at(now), at(next))
            .await
            .unwrap_or_else(|e| panic!("claim_tick: {e}"))
    };
    assert_eq!(
        tick(0, 60).await,
        TickClaim::Started,
        "the first claim records the next tick"
    );
    assert_eq!(tick(0, 60).await, TickClaim::NotDue, "and starts it once");
    assert_eq!(
        tick(30, 60).await,
        TickClaim::NotDue,
        "a tick not yet due does not fire"
    );
    assert_eq!(tick(60, 120).await, TickClaim::Fired, "a due tick fires");
    assert_eq!(tick(60, 120).await, TickClaim::NotDue, "a tick fires once");
    assert_eq!(
        tick(500, 560).await,
        TickClaim::Fired,
        "ticks missed fire once"
    );
}

async fn missing_keys(store: &dyn Store) {
    let missing = key("conformance_missing/1");
    assert!(
        load(store, &missing).await.is_none(),
        "a missing key loads as None"
    );
    assert!(
        store
            .dependencies(&missing)
            .await
            .unwrap_or_default()
            .is_empty()
    );
    assert!(
        store
            .dependents(&missing)
            .await
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        store.remove(&missing).await.ok(),
        Some(None),
        "removing a missing key removes nothing"
    );
    let patched = store
        .patch(&missing, EntryPatch::stale_at(at(0)), Expect::Any)
        .await;
    assert_eq!(
        patched.ok(),
        Some(Saved::Conflict { current: None }),
        "a patch needs an entry"
    );
}

async fn round_trip(store: &dyn Store, notices: &mut mpsc::UnboundedReceiver<Notice>) {
    let key = key("conformance_round_trip/a%2Fb");
    let value = r#"{"total":7,"items":["x","y"],"nested":{"ok":true}}"#;
    let written = entry(&key, value, &["conformance_dep/2", "conformance_dep/1"]);
    let version = self::written(
        save(store, written.clone(), Expect::Absent).await,
        "save to a new key",
    );
    expect_notice(notices, Notice::Changed(key.clone(), version)).await;

    let stored = load(store, &key)
        .await
        .unwrap_or_else(|| panic!("{key} was saved"));
    assert_eq!(stored.key, key);
    assert_eq!(stored.version, version);
    assert_eq!(stored.meta, written.meta, "metadata round-trips exactly");
    let json = |bytes: &[u8]| -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("the value is JSON: {e}"))
    };
    assert_eq!(
        json(&stored.value),
        json(value.as_bytes()),
        "the value round-trips as JSON"
    );
}

async fn compare_and_set(store: &dyn Store) {
    let key = key("conformance_cas/1");
    let v1 = written(
        save(store, entry(&key, "1", &[]), Expect::Absent).await,
        "Absent on no entry",
    );
    assert_eq!(
        save(store, entry(&key, "2", &[]), Expect::Absent).await,
        Saved::Conflict { current: Some(v1) },
        "Absent on an entry is a conflict reporting its version"
    );
    let v2 = written(
        save(store, entry(&key, "2", &[]), Expect::Version(v1)).await,
        "the expected version",
    );
    assert!(v2 > v1, "a write bumps the version");
    assert_eq!(
        save(store, entry(&key, "3", &[]), Expect::Version(v1)).await,
        Saved::Conflict { current: Some(v2) },
        "a stale expected version is a conflict reporting the current one"
    );
    assert_eq!(
        load(store, &key).await.map(|s| s.value),
        Some(b"2".to_vec()),
        "a conflict writes nothing"
    );
    let v3 = written(save(store, entry(&key, "4", &[]), Expect::Any).await, "Any");
    assert!(v3 > v2);
    let other = self::key("conformance_cas/2");
    assert_eq!(
        save(store, entry(&other, "1", &[]), Expect::Version(v3)).await,
        Saved::Conflict { current: None },
        "an expected version on no entry is a conflict"
    );
}

async fn versions_grow(store: &dyn Store) {
    let a = key("conformance_versions/a");
    let b = key("conformance_versions/b");
    let va = written(save(store, entry(&a, "1", &[]), Expect::Any).await, "a");
    let vb = written(save(store, entry(&b, "1", &[]), Expect::Any).await, "b");
    assert!(vb > va, "versions grow across keys");
    let removed = store.remove(&a).await.ok().flatten();
    let removed = removed.unwrap_or_else(|| panic!("removing an entry reports a version"));
    assert!(
        removed > vb,
        "a removal takes a version from the same sequence"
    );
    let again = written(
        save(store, entry(&a, "1", &[]), Expect::Absent).await,
        "a again",
    );
    assert!(
        again > removed,
        "a key written again never reuses a version"
    );
}

async fn edges(store: &dyn Store) {
    let top = key("conformance_edges/top");
    let (a, b, c) = (
        "conformance_edges/a",
        "conformance_edges/b",
        "conformance_edges/c",
    );
    let edge = |name: &str| Edge::new(key(name), seen(name));
    let save_with =
        |key: &Key, value: &str, names: &[&str]| save(store, entry(key, value, names), Expect::Any);

    written(save_with(&top, "1", &[c, a, b]).await, "with edges");
    assert_eq!(
        dependencies(store, &top).await,
        [edge(c), edge(a), edge(b)],
        "dependencies keep their order and what was seen of them"
    );
    let other = key("conformance_edges/other");
    written(save_with(&other, "1", &[a]).await, "other");
    assert_eq!(
        dependents(store, &key(a)).await,
        [other.clone(), top.clone()],
        "dependents are sorted"
    );
    let seen_by_readers = store.dependents(&key(a)).await.unwrap_or_default();
    assert!(
        seen_by_readers.iter().all(|edge| edge.seen == seen(a)),
        "dependents carry what they saw"
    );

    written(save_with(&top, "2", &[b]).await, "fewer edges");
    assert_eq!(dependencies(store, &top).await, [edge(b)]);
    assert_eq!(
        dependents(store, &key(a)).await,
        std::slice::from_ref(&other),
        "a save replaces the entry's edges"
    );

    written(save_with(&key(b), "1", &[]).await, "b");
    store
        .remove(&top)
        .await
        .unwrap_or_else(|e| panic!("remove: {e}"));
    assert!(dependencies(store, &top).await.is_empty());
    assert!(
        dependents(store, &key(b)).await.is_empty(),
        "a removal drops the entry's own edges"
    );
    written(save_with(&top, "3", &[]).await, "top again");
    written(
        save_with(&other, "2", &["conformance_edges/top"]).await,
        "reader",
    );
    store
        .remove(&top)
        .await
        .unwrap_or_else(|e| panic!("remove: {e}"));
    assert_eq!(
        dependents(store, &top).await,
        [other],
        "a removal keeps the edges of the keys that read it"
    );
}

async fn patches(store: &dyn Store, notices: &mut mpsc::UnboundedReceiver<Notice>) {
    let key = key("conformance_patch/1");
    let v1 = written(
        save(store, entry(&key, "1", &["conformance_dep/1"]), Expect::Any).await,
        "patched",
    );
    let patch = |patch: EntryPatch, expect| store.patch(&key, patch, expect);

    let v2 = written(
        patch(EntryPatch::stale_at(at(10)), Expect::Version(v1))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "stale",
    );
    assert!(v2 > v1, "a patch bumps the version");
    expect_notice(notices, Notice::Changed(key.clone(), v2)).await;
    let meta = load(store, &key).await.map(|s| s.meta);
    assert_eq!(
        meta.as_ref().and_then(|m| m.stale_at),
        Some(at(10)),
        "an earlier soft expiry wins"
    );
    written(
        patch(EntryPatch::stale_at(at(50)), Expect::Any)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "later stale",
    );
    let meta = load(store, &key).await.map(|s| s.meta);
    assert_eq!(
        meta.as_ref().and_then(|m| m.stale_at),
        Some(at(10)),
        "a later soft expiry loses"
    );

    let failure = EntryError {
        message: "down".to_owned(),
        at: at(20),
        attempts: 3,
    };
    written(
        patch(EntryPatch::failed(failure.clone(), true), Expect::Any)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "failed",
    );
    let meta = load(store, &key).await.map(|s| s.meta);
    let meta = meta.unwrap_or_else(|| panic!("{key} exists"));
    assert_eq!(meta.last_error, Some(failure), "a failure is recorded");
    assert_eq!(
        meta.expires_at,
        Some(at(20)),
        "a failure may expire the entry at once"
    );
    assert_eq!(
        meta.computed_at,
        at(0),
        "a patch keeps what it does not name"
    );

    let clear = EntryPatch::clear_error();
    let current = load(store, &key).await.map(|s| s.version);
    assert_eq!(
        patch(clear.clone(), Expect::Version(v1)).await.ok(),
        Some(Saved::Conflict { current }),
        "a patch over a stale version is a conflict"
    );
    written(
        patch(clear, Expect::Any)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "clear",
    );
    let meta = load(store, &key).await.map(|s| s.meta);
    assert_eq!(
        meta.and_then(|m| m.last_error),
        None,
        "an error can be cleared"
    );
    assert_eq!(
        dependencies(store, &key).await,
        [Edge::new(
            self::key("conformance_dep/1"),
            seen("conformance_dep/1")
        )],
        "a patch keeps the edges"
    );

    let removed = store.remove(&key).await.ok().flatten();
    let removed = removed.unwrap_or_else(|| panic!("{key} is removed"));
    expect_notice(notices, Notice::Changed(key.clone(), removed)).await;
}

async fn leases(store: &dyn Store, notices: &mut mpsc::UnboundedReceiver<Notice>) {
    let key = key("conformance_lease/1");
    let minute = Duration::from_secs(60);
    let acquire = |holder: &'static str, ttl| store.acquire_lease(&key, holder, ttl);
    let first = acquire("a", minute).await.unwrap_or_else(|e| panic!("{e}"));
    if first == Lease::NotShared {
        // This store never shares computations: nothing more to check.
        return;
    }
    assert_eq!(first, Lease::Acquired, "a free lease is taken");
    match acquire("b", minute).await.unwrap_or_else(|e| panic!("{e}")) {
        Lease::Held { remaining } => assert!(
            remaining > Duration::ZERO && remaining <= minute,
            "a held lease reports the time left: {remaining:?}"
        ),
        other => panic!("a held lease is refused to another holder, got {other:?}"),
    }
    assert_eq!(
        acquire("a", minute).await.ok(),
        Some(Lease::Acquired),
        "the holder may take it again"
    );
    assert_eq!(
        store.renew_lease(&key, "a", minute).await.ok(),
        Some(true),
        "the holder renews"
    );
    assert_eq!(
        store.renew_lease(&key, "b", minute).await.ok(),
        Some(false),
        "another cannot renew"
    );
    store
        .release_lease(&key, "b")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(acquire("b", minute).await, Ok(Lease::Held { .. })),
        "another cannot release it"
    );
    store
        .release_lease(&key, "a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_notice(notices, Notice::Released(key.clone())).await;
    assert_eq!(
        acquire("b", minute).await.ok(),
        Some(Lease::Acquired),
        "a released lease is free"
    );
    store
        .release_lease(&key, "b")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(
        acquire("a", Duration::ZERO).await.ok(),
        Some(Lease::Acquired)
    );
    assert_eq!(
        acquire("b", minute).await.ok(),
        Some(Lease::Acquired),
        "an expired lease is free"
    );
    store
        .release_lease(&key, "b")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// What a watcher was told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    Changed(Key, Version),
    Released(Key),
    Tracking(bool),
}

struct Recorder {
    notices: mpsc::UnboundedSender<Notice>,
}

impl Recorder {
    fn new() -> (Arc<Recorder>, mpsc::UnboundedReceiver<Notice>) {
        let (notices, received) = mpsc::unbounded_channel();
        (Arc::new(Recorder { notices }), received)
    }
}

impl ChangeWatcher for Recorder {
    fn changed(&self, key: &Key, version: Version) {
        let _ = self.notices.send(Notice::Changed(key.clone(), version));
    }
    fn released(&self, key: &Key) {
        let _ = self.notices.send(Notice::Released(key.clone()));
    }
    fn tracking(&self, tracked: bool) {
        let _ = self.notices.send(Notice::Tracking(tracked));
    }
}

/// Waits (at most ten seconds: stores may notify asynchronously) until
/// `expected` is reported, skipping other notices.
async fn expect_notice(notices: &mut mpsc::UnboundedReceiver<Notice>, expected: Notice) {
    let wait = async {
        while let Some(notice) = notices.recv().await {
            if notice == expected {
                return true;
            }
        }
        false
    };
    let seen = tokio::time::timeout(Duration::from_secs(10), wait).await;
    assert!(
        matches!(seen, Ok(true)),
        "the store reports {expected:?} to its watchers"
    );
}
