//! The layering of kck-core, checked on the source (see ARCHITECTURE.md):
//! each storage port imports only the shared vocabulary, never another
//! port, so a store can implement any port alone; the files of the cache
//! import each other without a circle; the cache does not know the worker
//! or the scheduler; the worker does not know what a job means.

use std::collections::{BTreeMap, BTreeSet};
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

/// The `use` statements of `text` (each joined onto one line), without
/// re-exports.
fn use_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if current.is_none() && line.starts_with("use ") {
            current = Some(String::new());
        }
        if let Some(statement) = current.as_mut() {
            statement.push_str(line);
            statement.push(' ');
            if line.ends_with(';') {
                statements.extend(current.take());
            }
        }
    }
    statements
}

/// The modules of `src/cache/` that `module` imports, by the first segment
/// of each path it names under `super::` (or `self::`, in `mod.rs`); an
/// item of `mod.rs` itself (`Cache`, `Inner`) counts as importing `mod`.
fn cache_imports(module: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let prefix = if module == "mod" { "self::" } else { "super::" };
    let mut imports = BTreeSet::new();
    for statement in use_statements(text) {
        let Some(path) = statement
            .strip_prefix("use ")
            .and_then(|rest| rest.strip_prefix(prefix))
        else {
            continue;
        };
        let path = path.trim_end_matches([';', ' ']);
        let items: Vec<&str> = match path.strip_prefix('{') {
            Some(list) => list.trim_end_matches('}').split(',').collect(),
            None => vec![path],
        };
        for item in items {
            let first = item.trim().split("::").next().unwrap_or("").trim();
            if first.is_empty() {
                continue;
            }
            if modules.contains(first) {
                imports.insert(first.to_owned());
            } else if first.starts_with(char::is_uppercase) {
                imports.insert("mod".to_owned());
            }
        }
    }
    imports.remove(module);
    imports
}

/// Whether `graph` has a path from `from` to `to` (depth first).
fn reaches(
    graph: &BTreeMap<&str, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> bool {
    graph
        .get(from)
        .into_iter()
        .flatten()
        .any(|next| next == to || (seen.insert(next.clone()) && reaches(graph, next, to, seen)))
}

#[test]
fn the_files_of_the_cache_import_each_other_without_a_circle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cache");
    let mut texts = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("src/cache is there") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            let module = path
                .file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            texts.insert(
                module,
                std::fs::read_to_string(&path).expect("a readable file"),
            );
        }
    }
    let modules: BTreeSet<String> = texts.keys().cloned().collect();
    let graph: BTreeMap<&str, BTreeSet<String>> = texts
        .iter()
        .map(|(module, text)| (module.as_str(), cache_imports(module, text, &modules)))
        .collect();
    // The check sees imports: of a sibling, and of `mod.rs`'s items.
    assert!(graph["compute"].contains("execute"), "{graph:?}");
    assert!(graph["fetch"].contains("mod"), "{graph:?}");
    for module in graph.keys() {
        assert!(
            !reaches(&graph, module, module, &mut BTreeSet::new()),
            "cache/{module}.rs imports something that imports it back: {graph:?}"
        );
    }
}

#[test]
fn the_cache_knows_neither_the_worker_nor_the_scheduler_but_its_builder_starts_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cache");
    for entry in std::fs::read_dir(&dir).expect("src/cache is there") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("a readable file");
        let names = use_statements(&text).iter().any(|statement| {
            statement.contains("crate::worker") || statement.contains("crate::scheduler")
        });
        assert_eq!(
            names,
            name == "builder.rs",
            "cache/{name} and the worker or scheduler"
        );
    }
}

#[test]
fn the_worker_leaves_what_a_job_means_to_the_cache() {
    for file in ["src/worker/mod.rs", "src/worker/builder.rs"] {
        let text = source(file);
        for verb in [
            "refresh_within",
            "mark_stale",
            "augment_in_place",
            "cache::augment",
            "memo",
        ] {
            assert!(
                !text.contains(verb),
                "{file} reaches into the cache: `{verb}`"
            );
        }
    }
}
