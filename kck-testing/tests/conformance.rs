//! The memory store keeps the contract of every port.

use std::sync::Arc;

use kck_core::storage::{MemoryQueue, MemoryStore, Storage};
use kck_testing::conformance;

#[tokio::test]
async fn the_memory_store_passes_the_entries_suite() {
    conformance::check_entries(&MemoryStore::new()).await;
}

#[tokio::test]
async fn the_memory_store_passes_the_timetable_suite() {
    conformance::check_timetable(&Storage::from(MemoryStore::new())).await;
}

#[tokio::test]
async fn the_memory_store_passes_the_coordination_suite() {
    conformance::check_coordination(&Storage::from(MemoryStore::new())).await;
}

#[tokio::test]
async fn the_memory_queue_passes_the_queue_suite() {
    conformance::check_queue(Arc::new(MemoryQueue::new())).await;
}

#[tokio::test]
async fn the_memory_store_passes_the_catalog_suite() {
    conformance::check_catalog(&Storage::from(std::sync::Arc::new(MemoryStore::new()))).await;
}
