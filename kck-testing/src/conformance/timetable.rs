//! The timetable port: due refreshes, schedule ticks, reads.

use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{
    DueRefreshes, Entry, EntryStore, Expect, Storage, TickClaim, Timetable, Version,
};

use super::{at, entry, key, load, save, written};

/// Checks the [`Timetable`] of `storage` (whose entries it writes through
/// its [`EntryStore`]), which must hold no entry due for a refresh and be
/// used by no one else meanwhile: due refreshes taken once, earliest first, live or retired by
/// their last read; reads recorded and kept at their latest; schedule ticks
/// fired once; the keys of a primer.
///
/// # Panics
///
/// On the first broken rule, saying which.
pub async fn check_timetable(storage: &Storage) {
    scheduling(&**storage.entries(), &**storage.timetable()).await;
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
    timetable: &dyn Timetable,
    now: i64,
    until: i64,
    read_since: Option<i64>,
    limit: usize,
) -> DueRefreshes {
    let mut due = timetable
        .take_due_refreshes(at(now), at(until), read_since.map(at), limit)
        .await
        .unwrap_or_else(|e| panic!("take_due_refreshes: {e}"));
    due.refresh.sort();
    due.retired.sort();
    due
}

async fn meta(
    entries: &dyn EntryStore,
    key: &Key,
) -> (Option<Timestamp>, Option<Timestamp>, Version) {
    let stored = load(entries, key)
        .await
        .unwrap_or_else(|| panic!("{key} was saved"));
    (stored.meta.refresh_at, stored.meta.read_at, stored.version)
}

async fn scheduling(entries: &dyn EntryStore, timetable: &dyn Timetable) {
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| key(&format!("conformance_sched/{name}")));
    let va = written(
        save(entries, scheduled(&a, 100, Some(50)), Expect::Any).await,
        "a",
    );
    for entry in [
        scheduled(&b, 110, None),
        scheduled(&c, 120, Some(90)),
        scheduled(&d, 200, Some(90)),
    ] {
        written(save(entries, entry, Expect::Any).await, "save");
    }

    let due = take_due(timetable, 150, 1000, Some(60), 10).await;
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
        meta(entries, &c).await.0,
        Some(at(1000)),
        "a live entry's refresh moves to `until`"
    );
    assert_eq!(
        meta(entries, &a).await,
        (None, Some(at(50)), va),
        "a retired entry has no refresh time, and taking changes no version"
    );
    assert!(
        take_due(timetable, 150, 1000, Some(60), 10)
            .await
            .is_empty(),
        "an entry is taken once"
    );

    let first = take_due(timetable, 2000, 3000, None, 1).await;
    assert_eq!(
        first.refresh,
        std::slice::from_ref(&d),
        "the earliest due comes first"
    );
    assert_eq!(take_due(timetable, 2000, 3000, None, 1).await.refresh, [c]);

    let missing = key("conformance_sched/missing");
    let touch = |keys: Vec<Key>, when: i64| async move {
        timetable
            .touch(&keys, at(when))
            .await
            .unwrap_or_else(|e| panic!("touch: {e}"));
    };
    touch(vec![a.clone(), missing.clone()], 160).await;
    touch(vec![a.clone()], 155).await;
    assert_eq!(
        meta(entries, &a).await,
        (Some(at(160)), Some(at(160)), va),
        "a read is kept at its latest, makes a retired entry due, and changes no version"
    );
    assert!(
        load(entries, &missing).await.is_none(),
        "touch creates nothing"
    );
    let due = take_due(timetable, 170, 1000, Some(160), 10).await;
    assert_eq!(
        due.refresh,
        std::slice::from_ref(&a),
        "a retired entry read again is live"
    );
    assert!(due.retired.is_empty(), "a retired entry is retired once");

    written(
        save(entries, scheduled(&a, 100, Some(10)), Expect::Any).await,
        "a",
    );
    assert_eq!(
        meta(entries, &a).await.1,
        Some(at(160)),
        "a save keeps the later read"
    );
    written(
        save(entries, scheduled(&b, 100, None), Expect::Any).await,
        "b",
    );
    assert_eq!(
        take_due(timetable, 170, 1000, None, 10).await.refresh,
        [a, b],
        "a save sets the refresh time of a retired entry"
    );

    let keys = timetable
        .keys_of("conformance_sched")
        .await
        .unwrap_or_else(|e| panic!("keys_of: {e}"));
    assert_eq!(keys.len(), 4, "the keys of a primer: {keys:?}");
    assert!(
        timetable
            .keys_of("conformance_nothing")
            .await
            .is_ok_and(|keys| keys.is_empty())
    );

    let tick = |now: i64, next: i64| async move {
        timetable
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
