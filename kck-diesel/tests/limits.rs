//! Keys at the maximum length (`MAX_KEY_LEN`) fit everything PostgreSQL
//! holds a key in: the entries, the edges (two keys to an index entry),
//! the leases and the notifications. Releasing a lease never waits on its
//! time to live.

use std::sync::Arc;
use std::time::Duration;

use kck_core::clock::Timestamp;
use kck_core::key::MAX_KEY_LEN;
use kck_core::storage::Version;
use kck_core::storage::{ChangeWatcher, ContentHash, Edge, Entry, EntryMeta, Expect, Lease, Saved};
use kck_core::storage::{Coordination, EntryStore};
use kck_core::{Cache, Ctx, Key, primer};
use kck_diesel::PgStore;
use kck_testing::EventRecorder;
use kck_testing::postgres::TestDatabase;
use tokio::sync::watch;

/// `limits/xxx…` of exactly `len` bytes.
fn name_for(len: usize) -> String {
    "x".repeat(len - "limits/".len())
}

fn key_of(len: usize) -> Key {
    Key::parse(&format!("limits/{}", name_for(len))).expect("a key within the limit")
}

/// Counts the releases the store announces.
struct Releases(watch::Sender<usize>);

impl ChangeWatcher for Releases {
    fn changed(&self, _key: &Key, _version: Version) {}
    fn released(&self, key: &Key) {
        if key.as_str().len() == MAX_KEY_LEN {
            self.0.send_modify(|n| *n += 1);
        }
    }
    fn tracking(&self, _tracked: bool) {}
}

fn entry(key: &Key, dependency: &Key) -> Entry {
    let value = b"42".to_vec();
    let at = Timestamp::from_unix_micros(1_767_225_600_000_000);
    Entry {
        key: key.clone(),
        meta: EntryMeta {
            computed_at: at,
            changed_at: at,
            stale_at: None,
            refresh_at: Some(at),
            expires_at: None,
            content_hash: ContentHash::of(&value),
            code_version: "limits".to_owned(),
            compute_duration: Duration::ZERO,
            last_error: None,
            read_at: Some(at),
        },
        value,
        dependencies: vec![Edge::new(dependency.clone(), Some(ContentHash::of(b"1")))],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_at_the_maximum_length_is_stored_loaded_leased_and_released() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(db.url()).await.expect("connects");
    let releases = Arc::new(Releases(watch::Sender::new(0)));
    let watcher: Arc<dyn ChangeWatcher> = releases.clone();
    store.watch(Arc::downgrade(&watcher));
    let mut released = releases.0.subscribe();

    let key = key_of(MAX_KEY_LEN);
    assert_eq!(key.as_str().len(), MAX_KEY_LEN);
    // Another key as long: an edge indexes both.
    let dependency = Key::parse(&format!("limitz/{}", name_for(MAX_KEY_LEN))).expect("valid");
    let saved = store
        .save(entry(&key, &dependency), Expect::Absent)
        .await
        .expect("an entry with the longest key and a dependency as long");
    assert!(matches!(saved, Saved::Written(_)), "{saved:?}");
    let loaded = store.load(&key).await.expect("loads").expect("stored");
    assert_eq!((loaded.key, loaded.value), (key.clone(), b"42".to_vec()));
    let dependents = store.dependents(&dependency).await.expect("edges");
    assert_eq!(dependents.len(), 1);
    assert_eq!(dependents[0].key, key);

    let ttl = Duration::from_secs(3600);
    assert_eq!(
        store.acquire_lease(&key, "a", ttl).await.unwrap(),
        Lease::Acquired
    );
    assert!(matches!(
        store.acquire_lease(&key, "b", ttl).await.unwrap(),
        Lease::Held { .. }
    ));
    store.release_lease(&key, "a").await.expect("released");
    tokio::time::timeout(Duration::from_secs(20), released.wait_for(|n| *n == 1))
        .await
        .expect("the release is announced")
        .expect("the store lives");
    assert_eq!(
        store.acquire_lease(&key, "b", ttl).await.unwrap(),
        Lease::Acquired,
        "the lease row is gone"
    );
}

/// One cache's part in the test below.
struct Node {
    /// Whether its computation fails, after the gate opens.
    fails: bool,
    gate: watch::Sender<bool>,
    started: watch::Sender<bool>,
}

#[primer(key = "limits/{name}")]
async fn long_named(ctx: &Ctx, name: String) -> Result<usize, String> {
    let node = ctx.state::<Arc<Node>>().expect("built with a Node");
    node.started.send_replace(true);
    let _ = node.gate.subscribe().wait_for(|open| *open).await;
    if node.fails {
        return Err("the first computation fails".to_owned());
    }
    Ok(name.len())
}

fn node_cache(store: PgStore, node: Arc<Node>, lease_ttl: Duration) -> (Cache, EventRecorder) {
    let recorder = EventRecorder::default();
    let cache = Cache::builder()
        .store(store)
        .local_worker(false)
        .local_scheduler(false)
        .lease_ttl(lease_ttl)
        .state(node)
        .on_event(recorder.listener())
        .build()
        .expect("valid primers");
    (cache, recorder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waiting_on_a_failed_computation_of_the_longest_key_goes_on_at_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let gate = watch::Sender::new(false);
    let first = Arc::new(Node {
        fails: true,
        gate: gate.clone(),
        started: watch::Sender::new(false),
    });
    let second = Arc::new(Node {
        fails: false,
        gate: gate.clone(),
        started: watch::Sender::new(false),
    });
    // The first holds its lease for an hour unless it gives it back.
    let (a, _) = node_cache(
        PgStore::connect(db.url()).await.expect("connects"),
        first.clone(),
        Duration::from_secs(3600),
    );
    let (b, b_events) = node_cache(
        PgStore::connect(db.url()).await.expect("connects"),
        second,
        Duration::from_secs(30),
    );
    let name = name_for(MAX_KEY_LEN);
    let key = key_of(MAX_KEY_LEN);

    let a_read = tokio::spawn({
        let name = name.clone();
        async move { long_named(&a, name).await }
    });
    let _ = first.started.subscribe().wait_for(|started| *started).await;
    let b_read = tokio::spawn({
        let name = name.clone();
        async move { long_named(&b, name).await }
    });
    while b_events.count(&key, "peer-computing") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.send_replace(true);

    let error = a_read
        .await
        .unwrap()
        .expect_err("the first computation fails");
    assert!(
        error.to_string().contains("the first computation fails"),
        "{error}"
    );
    // A lease left behind would hold the second reader for an hour.
    let value = tokio::time::timeout(Duration::from_secs(20), b_read)
        .await
        .expect("the second reader is not held by the lease")
        .unwrap()
        .expect("the second cache computes");
    assert_eq!(*value, name.len());
    assert_eq!(
        b_events.count(&key, "computed"),
        1,
        "{}",
        b_events.describe(&key)
    );
}
