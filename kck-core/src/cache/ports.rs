//! Where products and jobs live: the store's ports and the queue of
//! refresh jobs.

use std::sync::Arc;

use crate::storage::{Coordination, EntryStore, Queue, Storage, Timetable};

/// The store, by role, and the queue.
pub(crate) struct Ports {
    pub(crate) storage: Storage,
    pub(crate) queue: Arc<dyn Queue>,
}

impl Ports {
    /// The store's entries port.
    pub(crate) fn entries(&self) -> &dyn EntryStore {
        &**self.storage.entries()
    }

    /// The store's timetable port.
    pub(crate) fn timetable(&self) -> &dyn Timetable {
        &**self.storage.timetable()
    }

    /// The store's coordination port.
    pub(crate) fn coordination(&self) -> &dyn Coordination {
        &**self.storage.coordination()
    }
}
