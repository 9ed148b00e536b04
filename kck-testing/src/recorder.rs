//! Records every event of a cache, for assertions.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kck_core::Key;
use kck_core::event::{Event, EventListener};

/// Keeps every [`Event`] a cache emits, in order. Clones share the record.
#[derive(Clone, Default)]
pub struct EventRecorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl EventRecorder {
    /// A listener to give to
    /// [`CacheBuilder::on_event`](kck_core::CacheBuilder::on_event).
    pub fn listener(&self) -> impl EventListener {
        let events = self.events.clone();
        move |event: &Event| {
            events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event.clone());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// Forgets the events so far.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The events of `key`.
    pub fn events_of(&self, key: &Key) -> Vec<Event> {
        self.lock()
            .iter()
            .filter(|event| &event.key == key)
            .cloned()
            .collect()
    }

    /// How many events named `kind` (see
    /// [`EventKind::name`](kck_core::event::EventKind::name)) concern `key`.
    pub fn count(&self, key: &Key, kind: &str) -> usize {
        self.lock()
            .iter()
            .filter(|event| &event.key == key && event.kind.name() == kind)
            .count()
    }

    /// The keys with an event named `kind`, in order of their first one.
    pub fn keys_with(&self, kind: &str) -> Vec<Key> {
        let mut keys: Vec<Key> = Vec::new();
        for event in self.lock().iter() {
            if event.kind.name() == kind && !keys.contains(&event.key) {
                keys.push(event.key.clone());
            }
        }
        keys
    }

    /// The names of the events of `key`, in order: `["miss", "computed"]`.
    pub fn kinds_of(&self, key: &Key) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|event| &event.key == key)
            .map(|event| event.kind.name())
            .collect()
    }

    /// One line per event of `key`, for assertion messages.
    pub fn describe(&self, key: &Key) -> String {
        let lines: Vec<String> = self
            .events_of(key)
            .iter()
            .map(|event| format!("  {event}"))
            .collect();
        if lines.is_empty() {
            "  (none)".to_owned()
        } else {
            lines.join("\n")
        }
    }
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.lock().iter().map(ToString::to_string))
            .finish()
    }
}
