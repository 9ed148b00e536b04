//! A cache takes its store as ports: from a store's `From` impl, or built
//! by hand from ports, with or without coordination and a queue of its own.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use kck_core::storage::{Coordination, EntryStore, Lease, Queue};
use kck_core::{Cache, Ctx, MemoryQueue, MemoryStore, MockClock, Storage, primer};

#[primer(key = "port_number/{n}", stale_after = "1m")]
async fn port_number(_ctx: &Ctx, n: u32) -> Result<u32, Infallible> {
    Ok(n * 2)
}

fn cache_on(storage: Storage, clock: &Arc<MockClock>) -> Cache {
    Cache::builder()
        .store(storage)
        .clock(clock.clone())
        .local_worker(false)
        .local_scheduler(false)
        .build()
        .expect("valid primers")
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
    assert_eq!(
        cache
            .storage()
            .coordination()
            .acquire_lease(&key, "anyone", Duration::from_secs(1))
            .await
            .unwrap(),
        Lease::NotShared,
        "storage given no coordination serves one cache: no lease to take"
    );
}

#[tokio::test]
async fn a_queue_given_to_the_builder_wins_over_the_stores_own() {
    let clock = Arc::new(MockClock::default());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let own = Arc::new(MemoryQueue::new());
    let cache = Cache::builder()
        .store(Storage::of(store).with_queue(own.clone()))
        .queue(MemoryQueue::new())
        .clock(clock.clone())
        .local_worker(false)
        .local_scheduler(false)
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
    let (_a, _b) = (
        cache_on(Storage::from(store.clone()), &clock),
        cache_on(Storage::from(store.clone()), &clock),
    );
    let key = port_number::key(6).into();
    let lease = store.acquire_lease(&key, "a", Duration::from_secs(1));
    assert_eq!(lease.await.unwrap(), Lease::Acquired);
}
