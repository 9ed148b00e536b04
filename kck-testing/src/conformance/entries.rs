//! The entries port: values, metadata and edges, as saved and loaded.

use kck_core::Key;
use kck_core::storage::{Edge, EntryError, EntryPatch, EntryStore, Expect, Saved};

use super::{at, dependencies, dependents, entry, key, load, save, seen, written};

/// Checks an [`EntryStore`], which must be empty and used by no one else
/// meanwhile: loads of missing keys; that an entry and its metadata
/// round-trip exactly (the value as JSON); compare-and-set on `Absent`,
/// `Version` and `Any`, with conflicts reporting the version found; that
/// versions grow across keys and across a removal; dependency edges both
/// ways, their order and their replacement; patches (earlier expiries win,
/// errors set and cleared, versions bumped).
///
/// # Panics
///
/// On the first broken rule, saying which.
pub async fn check_entries(store: &dyn EntryStore) {
    missing_keys(store).await;
    round_trip(store).await;
    compare_and_set(store).await;
    versions_grow(store).await;
    edges(store).await;
    patches(store).await;
}

async fn missing_keys(store: &dyn EntryStore) {
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

async fn round_trip(store: &dyn EntryStore) {
    let key = key("conformance_round_trip/a%2Fb");
    let value = r#"{"total":7,"items":["x","y"],"nested":{"ok":true}}"#;
    let written = entry(&key, value, &["conformance_dep/2", "conformance_dep/1"]);
    let version = self::written(
        save(store, written.clone(), Expect::Absent).await,
        "save to a new key",
    );

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

async fn compare_and_set(store: &dyn EntryStore) {
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

async fn versions_grow(store: &dyn EntryStore) {
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

async fn edges(store: &dyn EntryStore) {
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

async fn patches(store: &dyn EntryStore) {
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
    assert!(removed.is_some(), "{key} is removed");
}
