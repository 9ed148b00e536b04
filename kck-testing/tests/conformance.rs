//! The memory store keeps the store contract.

use std::sync::Arc;

use kck_core::MemoryStore;

#[tokio::test]
async fn the_memory_store_passes_the_conformance_suite() {
    kck_testing::conformance::check_store(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn the_memory_queue_passes_the_conformance_suite() {
    kck_testing::queue_conformance::check_queue(Arc::new(kck_core::MemoryQueue::new())).await;
}
