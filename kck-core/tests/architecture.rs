//! The layering of the storage ports, checked on the source: each port
//! imports only the shared vocabulary, never another port, so a store can
//! implement any port alone (see ARCHITECTURE.md).

use std::path::Path;

const PORTS: [&str; 4] = ["entries", "timetable", "coordination", "queue"];

fn source(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `use` lines of `text` that name `module`, in any of the forms a
/// sibling module can be reached by.
fn uses_of<'a>(text: &'a str, module: &str) -> Vec<&'a str> {
    let forms = [
        format!("super::{module}"),
        format!("crate::storage::{module}"),
    ];
    text.lines()
        .filter(|line| line.trim_start().starts_with("use "))
        .filter(|line| forms.iter().any(|form| line.contains(form.as_str())))
        .collect()
}

#[test]
fn no_port_imports_another() {
    for port in PORTS {
        let text = source(&format!("src/storage/{port}.rs"));
        assert!(
            !text.contains("use crate::storage::{") && !text.contains("use crate::storage::*"),
            "{port}.rs imports the whole storage module, not the vocabulary"
        );
        for other in PORTS.iter().filter(|other| **other != port) {
            assert_eq!(
                uses_of(&text, other),
                Vec::<&str>::new(),
                "{port}.rs imports the {other} port"
            );
        }
    }
}

#[test]
fn the_memory_store_and_the_memory_queue_do_not_know_each_other() {
    let store = source("src/storage/memory/store.rs");
    let queue = source("src/storage/memory/queue.rs");
    for name in ["Queue", "JobRequest", "MemoryQueue", "queue::"] {
        assert!(
            !store
                .lines()
                .any(|line| line.contains(name) && !line.trim_start().starts_with("//")),
            "memory/store.rs names `{name}`"
        );
    }
    for name in ["EntryStore", "Entry,", "MemoryStore", "store::"] {
        assert!(
            !queue
                .lines()
                .any(|line| line.contains(name) && !line.trim_start().starts_with("//")),
            "memory/queue.rs names `{name}`"
        );
    }
}
