//! The coordination port: change notices and compute leases.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kck_core::Key;
use kck_core::storage::{
    CODE_VERSION_TTL, ChangeWatcher, Coordination, EntryPatch, EntryStore, Expect, Lease, Storage,
    Version,
};
use tokio::sync::mpsc;

use super::{at, entry, key, save, written};

/// Checks the [`Coordination`] of `storage`, which must be empty and used by
/// no one else meanwhile: that every save, patch and removal through its
/// [`EntryStore`], and every lease release, is reported to each watcher;
/// and, if the store leases computations once several caches share it,
/// that leases exclude, renew, release and expire.
///
/// # Panics
///
/// On the first broken rule, saying which.
pub async fn check_coordination(storage: &Storage) {
    let coordination = &**storage.coordination();
    let (watcher, mut notices) = Recorder::new();
    // A second watcher: a store that leases only when shared sees two caches.
    let (other, mut other_notices) = Recorder::new();
    coordination.watch(Arc::downgrade(&watcher) as Weak<dyn ChangeWatcher>);
    coordination.watch(Arc::downgrade(&other) as Weak<dyn ChangeWatcher>);

    changes(&**storage.entries(), &mut notices, &mut other_notices).await;
    leases(coordination, &mut notices).await;
    code_versions(coordination).await;
    drop((watcher, other));
}

/// The newest code version of a primer is the one whose latest start is
/// the latest (the greater version on a tie), among those whose caches
/// were there within [`CODE_VERSION_TTL`]; a version keeps its latest
/// start; primers are apart. A store serving one cache may answer with the
/// caller's own version every time (the default); any other answer must
/// follow the rule.
async fn code_versions(coordination: &dyn Coordination) {
    let there = |primer: &'static str, version: &'static str, started: i64, now: i64| async move {
        coordination
            .newest_code_version(primer, version, at(started), at(now))
            .await
            .unwrap_or_else(|e| panic!("newest code version of {primer}: {e}"))
    };
    let newest = |primer, version, started| there(primer, version, started, 100);
    if newest("conformance_alone", "a", 10).await == "a"
        && newest("conformance_alone", "b", 5).await == "b"
    {
        // The default: a store that keeps no record (checked: `b` started
        // before `a` and is still called the newest).
        return;
    }
    assert_eq!(newest("conformance_deploy", "old", 10).await, "old");
    assert_eq!(
        newest("conformance_deploy", "new", 20).await,
        "new",
        "a deploy"
    );
    assert_eq!(
        newest("conformance_deploy", "old", 10).await,
        "new",
        "old code, asking again, does not win back"
    );
    assert_eq!(newest("conformance_deploy", "old", 15).await, "new");
    assert_eq!(
        newest("conformance_deploy", "old", 30).await,
        "old",
        "a rollback"
    );
    assert_eq!(
        newest("conformance_deploy", "new", 20).await,
        "old",
        "a version keeps its latest start"
    );
    assert_eq!(
        newest("conformance_other", "x", 5).await,
        "x",
        "primers apart"
    );
    assert_eq!(newest("conformance_tie", "a", 40).await, "a");
    assert_eq!(newest("conformance_tie", "b", 40).await, "b", "a tie");
    assert_eq!(newest("conformance_tie", "a", 40).await, "b", "a tie");

    // A version whose caches are gone stops counting.
    let ttl = i64::try_from(CODE_VERSION_TTL.as_secs()).unwrap_or(i64::MAX);
    assert_eq!(there("conformance_gone", "a", 10, 10).await, "a");
    assert_eq!(there("conformance_gone", "b", 20, 20).await, "b");
    assert_eq!(
        there("conformance_gone", "a", 10, 20 + ttl).await,
        "b",
        "still there"
    );
    assert_eq!(
        there("conformance_gone", "a", 10, 21 + ttl).await,
        "a",
        "b was last there longer ago than the time-to-live"
    );
    assert_eq!(
        there("conformance_gone", "b", 20, 22 + ttl).await,
        "b",
        "back"
    );
}

/// A save, a patch and a removal are each reported to every watcher, with
/// the version of the change.
async fn changes(
    entries: &dyn EntryStore,
    notices: &mut mpsc::UnboundedReceiver<Notice>,
    other: &mut mpsc::UnboundedReceiver<Notice>,
) {
    let key = key("conformance_notice/1");
    let saved = written(
        save(entries, entry(&key, "1", &[]), Expect::Absent).await,
        "save to a new key",
    );
    expect_notice(notices, Notice::Changed(key.clone(), saved)).await;
    expect_notice(other, Notice::Changed(key.clone(), saved)).await;
    let patched = entries
        .patch(&key, EntryPatch::stale_at(at(10)), Expect::Any)
        .await
        .unwrap_or_else(|e| panic!("patch {key}: {e}"));
    let patched = written(patched, "patch");
    expect_notice(notices, Notice::Changed(key.clone(), patched)).await;
    expect_notice(other, Notice::Changed(key.clone(), patched)).await;
    let removed = entries.remove(&key).await.ok().flatten();
    let removed = removed.unwrap_or_else(|| panic!("{key} is removed"));
    expect_notice(notices, Notice::Changed(key.clone(), removed)).await;
    expect_notice(other, Notice::Changed(key.clone(), removed)).await;
}

async fn leases(store: &dyn Coordination, notices: &mut mpsc::UnboundedReceiver<Notice>) {
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
