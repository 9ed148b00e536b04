//! A cache takes its store as ports: from a store's `From` impl, or built
//! by hand from ports, with or without coordination and a queue of its own.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use kck_core::clock::MockClock;
use kck_core::storage::{Coordination, EntryStore, Lease, Queue};
use kck_core::storage::{MemoryQueue, MemoryStore, Storage};
use kck_core::{Cache, CacheBuilder, Ctx, primer};

#[primer(key = "port_number/{n}", stale_after = "1m")]
async fn port_number(_ctx: &Ctx, n: u32) -> Result<u32, Infallible> {
    Ok(n * 2)
}

/// A cache on `storage` with no background worker or scheduler.
fn builder_on(storage: Storage, clock: &Arc<MockClock>) -> CacheBuilder {
    Cache::builder()
        .store(storage)
        .clock(clock.clone())
        .local_worker(false)
        .local_scheduler(false)
}

fn cache_on(storage: Storage, clock: &Arc<MockClock>) -> Cache {
    builder_on(storage, clock).build().expect("valid primers")
}

/// Reads `port_number/n` once fresh, then once stale: the stale read
/// queues a refresh job in the cache's queue (in the background: this
/// waits for it).
async fn read_until_a_job_is_queued(cache: &Cache, clock: &MockClock, n: u32) {
    assert_eq!(*port_number(cache, n).await.expect("fresh read"), n * 2);
    clock.advance(Duration::from_secs(120));
    assert_eq!(*port_number(cache, n).await.expect("stale read"), n * 2);
    cache.wait_idle().await;
}

#[tokio::test]
async fn a_cache_runs_on_ports_given_one_by_one() {
    let clock = Arc::new(MockClock::default());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let queue = Arc::new(MemoryQueue::new());
    let storage = Storage::new(store.clone(), store.clone()).with_queue(queue.clone());
    assert!(!storage.queue_fed_by_saves());
    let cache = cache_on(storage, &clock);

    read_until_a_job_is_queued(&cache, &clock, 4).await;
    let key = port_number::key(4).into();
    let stored = store
        .load(&key)
        .await
        .unwrap()
        .expect("saved through the entries port");
    assert_eq!(stored.value, b"8");
    assert!(
        queue.next_due().await.unwrap().is_some(),
        "the stale read queued its refresh in the queue the storage gave"
    );

    // A second cache on the same ports, still without coordination: the
    // caches never watch the store, so it keeps seeing no one to share
    // leases with (through its own coordination, two watchers would make
    // it lease: see the last test).
    let _other = cache_on(Storage::new(store.clone(), store.clone()), &clock);
    let lease = store.acquire_lease(&key, "anyone", Duration::from_secs(1));
    assert_eq!(lease.await.unwrap(), Lease::NotShared);
}

#[tokio::test]
async fn a_queue_given_to_the_builder_wins_over_the_stores_own() {
    let clock = Arc::new(MockClock::default());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let own = Arc::new(MemoryQueue::new());
    let cache = builder_on(Storage::of(store).with_queue(own.clone()), &clock)
        .queue(MemoryQueue::new())
        .build()
        .expect("valid primers");

    read_until_a_job_is_queued(&cache, &clock, 5).await;
    assert!(cache.queue().next_due().await.unwrap().is_some());
    assert!(
        own.next_due().await.unwrap().is_none(),
        "the store's own queue is not used"
    );
}

#[tokio::test]
async fn a_store_shared_through_its_ports_leases_once_two_caches_watch_it() {
    let clock = Arc::new(MockClock::default());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let key = port_number::key(6).into();
    let _a = cache_on(Storage::from(store.clone()), &clock);
    let alone = store.acquire_lease(&key, "a", Duration::from_secs(1));
    assert_eq!(
        alone.await.unwrap(),
        Lease::NotShared,
        "one cache: no one to share with"
    );

    let _b = cache_on(Storage::from(store.clone()), &clock);
    let shared = store.acquire_lease(&key, "a", Duration::from_secs(1));
    assert_eq!(shared.await.unwrap(), Lease::Acquired);
}
