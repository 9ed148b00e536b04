//! The in-memory implementations of the ports: one process, nothing
//! persisted. [`MemoryStore`] and [`MemoryQueue`] know nothing of each
//! other.

mod queue;
mod store;

pub use queue::MemoryQueue;
pub use store::MemoryStore;
