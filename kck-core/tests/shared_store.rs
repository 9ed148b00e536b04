//! Several caches on one store, as several processes on one database: each
//! sees the others' writes, and a cold key is computed by one of them while
//! the others wait for its value.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Source, SourceDown, source, until};
use kck_core::clock::MockClock;
use kck_core::storage::Coordination;
use kck_core::storage::MemoryStore;
use kck_core::{Cache, Ctx, ErrorKind, primer};
use kck_testing::EventRecorder;

#[primer(key = "shared_number/{name}")]
async fn shared_number(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

struct Node {
    cache: Cache,
    recorder: EventRecorder,
}

fn node(store: &Arc<MemoryStore>, source: &Arc<Source>, clock: &Arc<MockClock>) -> Node {
    let recorder = EventRecorder::default();
    let cache = Cache::builder()
        .store(store.clone())
        .clock(clock.clone())
        .state(source.clone())
        .on_event(recorder.listener())
        .build()
        .expect("valid primers");
    Node { cache, recorder }
}

fn cluster(nodes: usize) -> (Arc<MemoryStore>, Arc<Source>, Arc<MockClock>, Vec<Node>) {
    let clock = Arc::new(MockClock::default());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let source = Source::new();
    let nodes = (0..nodes).map(|_| node(&store, &source, &clock)).collect();
    (store, source, clock, nodes)
}

#[tokio::test]
async fn a_write_through_one_cache_reaches_the_memo_of_the_others() {
    let (_store, source, _clock, nodes) = cluster(2);
    source.set("a", 1);
    let key = shared_number::key("a".into());
    assert_eq!(
        *shared_number(&nodes[0].cache, "a".into()).await.unwrap(),
        1
    );
    assert_eq!(
        *shared_number(&nodes[1].cache, "a".into()).await.unwrap(),
        1
    );
    assert_eq!(nodes[1].recorder.kinds_of(&key), ["miss", "loaded"]);

    nodes[0].cache.set(&key, 5).await.unwrap();
    assert_eq!(
        *shared_number(&nodes[1].cache, "a".into()).await.unwrap(),
        5
    );
    nodes[0].cache.remove(&key).await.unwrap();
    source.set("a", 6);
    assert_eq!(
        *shared_number(&nodes[1].cache, "a".into()).await.unwrap(),
        6
    );
    assert_eq!(source.reads("a"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_key_read_by_every_cache_at_once_is_computed_once() {
    let (_store, source, _clock, nodes) = cluster(4);
    source.set("cold", 42);
    source.hold();
    let key = shared_number::key("cold".into());
    let readers: Vec<_> = nodes
        .iter()
        .flat_map(|node| {
            (0..25).map(|_| {
                let cache = node.cache.clone();
                tokio::spawn(async move { shared_number(&cache, "cold".into()).await.map(|v| *v) })
            })
        })
        .collect();
    // One cache computes; the three others wait for it.
    until(|| {
        nodes
            .iter()
            .filter(|node| node.recorder.count(&key, "peer-computing") == 1)
            .count()
            == 3
    })
    .await;
    source.open();
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap(), 42);
    }
    assert_eq!(source.reads("cold"), 1);
    let computed: usize = nodes
        .iter()
        .map(|n| n.recorder.count(&key, "computed"))
        .sum();
    assert_eq!(computed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_cache_that_dies_while_computing_blocks_the_key_only_until_its_lease_expires() {
    // Two live caches, so the store shares (and leases) computations even
    // after the third is gone.
    let (store, source, clock, nodes) = cluster(2);
    source.set("orphan", 7);
    source.hold();
    let key = shared_number::key("orphan".into());

    // A second cache starts the computation on its own runtime, then that
    // runtime (its process, as it were) goes away mid-computation.
    let doomed_runtime = std::thread::spawn({
        let (store, source, clock) = (store.clone(), source.clone(), clock.clone());
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let doomed = node(&store, &source, &clock);
            runtime.spawn(async move { shared_number(&doomed.cache, "orphan".into()).await });
            runtime.block_on(async {
                while source.reads("orphan") == 0 {
                    tokio::task::yield_now().await;
                }
            });
            // The runtime and the cache are dropped here: the lease is not
            // released.
        }
    });
    doomed_runtime.join().unwrap();

    let survivor = nodes[0].cache.clone();
    let read = tokio::spawn(async move { shared_number(&survivor, "orphan".into()).await });
    until(|| nodes[0].recorder.count(&key, "peer-computing") == 1).await;
    source.open();
    // Until the lease runs out, the survivor waits (and checks again).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!read.is_finished());
    clock.advance(Duration::from_secs(31));
    assert_eq!(*read.await.unwrap().unwrap(), 7);
    assert_eq!(nodes[0].recorder.count(&key, "computed"), 1);
}

#[tokio::test]
async fn a_failed_computation_releases_the_lease_and_the_others_try_themselves() {
    let (_store, source, _clock, nodes) = cluster(2);
    source.fail("flaky", true);
    let key = shared_number::key("flaky".into());
    let error = shared_number(&nodes[0].cache, "flaky".into())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Compute);
    source.fail("flaky", false);
    source.set("flaky", 3);
    assert_eq!(
        *shared_number(&nodes[1].cache, "flaky".into())
            .await
            .unwrap(),
        3
    );
    assert_eq!(nodes[1].recorder.count(&key, "peer-computing"), 0);
}

#[test]
fn a_single_cache_needs_no_lease() {
    let store = MemoryStore::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let key = shared_number::key("x".into());
    let lease = runtime.block_on(store.acquire_lease(&key, "me", Duration::from_secs(1)));
    assert_eq!(lease.unwrap(), kck_core::storage::Lease::NotShared);
}
