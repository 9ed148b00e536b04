//! The layering of kck-core, checked on the source (see ARCHITECTURE.md):
//! no module imports from a layer above its own (so the cache knows the
//! worker and the scheduler only in its builder, which starts them); each
//! storage port imports only the shared vocabulary, never another port, so
//! a store can implement any port alone; the files of the cache import
//! each other without a circle; the worker does not know what a job means.

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

/// The memory store holds the queue its caches share, as a database holds
/// its jobs table, but never works it: the two stay separate ports.
#[test]
fn the_memory_store_only_holds_the_memory_queue_which_does_not_know_it() {
    let store = source("src/storage/memory/store.rs");
    let queue = source("src/storage/memory/queue.rs");
    for name in [
        "JobRequest",
        "Queue,",
        "Queue}",
        "dyn Queue",
        "queue::",
        ".enqueue(",
        ".claim(",
    ] {
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

/// kck-core's modules by layer, lowest first (see ARCHITECTURE.md). A
/// module may import from its own layer and the layers below, never from
/// a layer above.
const LAYERS: [(&str, &[&str]); 7] = [
    ("foundations", &["clock", "encode", "schedule", "backoff"]),
    ("keys", &["key"]),
    ("storage ports", &["storage"]),
    ("outcomes", &["error", "event"]),
    (
        "the primer contract",
        &["primer", "augment", "erased", "registry", "ctx"],
    ),
    ("the engine", &["cache"]),
    ("drivers", &["worker", "scheduler", "inspect"]),
];

/// The imports that go up a layer, each for a reason ARCHITECTURE.md
/// gives: a primer's context and its domain read through the cache's
/// public handle (and nothing else of the engine), and the cache's builder
/// starts a cache's own worker and scheduler.
const UPWARD: [(&str, &str); 4] = [
    ("src/ctx.rs", "crate::cache::Cache"),
    ("src/primer/mod.rs", "crate::cache::Cache"),
    ("src/cache/builder.rs", "crate::worker::Worker"),
    ("src/cache/builder.rs", "crate::scheduler::Scheduler"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Every `.rs` file under `dir`, with its path from the crate's root.
fn rust_files(dir: &Path, found: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let name = path
                .strip_prefix(root)
                .expect("under the crate")
                .to_string_lossy()
                .into_owned();
            found.push((
                name,
                std::fs::read_to_string(&path).expect("a readable file"),
            ));
        }
    }
}

/// The `crate::…` paths the code of `text` names (comments and the
/// `#[cfg(test)]` module at the end of a file left out), each as
/// `crate::module::Item`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut lines = text.lines().map(str::trim_start).peekable();
    while let Some(line) = lines.next() {
        // The test module, not any item behind `#[cfg(test)]`, ends the scan.
        if line.starts_with("#[cfg(test)]")
            && lines.peek().is_some_and(|next| next.starts_with("mod "))
        {
            break;
        }
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let path: String = rest[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            rest = &rest[at + "crate::".len()..];
            paths.push(path.trim_end_matches(':').to_owned());
        }
    }
    paths
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut upward = Vec::new();
    for (file, text) in &files {
        let module = file
            .trim_start_matches("src/")
            .split(['/', '.'])
            .next()
            .expect("a module");
        if module == "lib" {
            continue;
        }
        let own = layer_of(module).unwrap_or_else(|| panic!("{file}: `{module}` has no layer"));
        for path in crate_paths(text) {
            let mut segments = path.split("::").skip(1);
            let target = segments.next().unwrap_or_default();
            assert!(
                !target.starts_with(char::is_uppercase),
                "{file} names `{path}`: name the item by its module, not the crate root"
            );
            let Some(layer) = layer_of(target) else {
                continue; // `crate::__private`, a macro's path
            };
            if layer > own {
                upward.push((file.clone(), path));
            }
        }
    }
    upward.sort();
    upward.dedup();
    let mut allowed: Vec<(String, String)> = UPWARD
        .iter()
        .map(|(file, path)| ((*file).to_owned(), (*path).to_owned()))
        .collect();
    allowed.sort();
    assert_eq!(upward, allowed, "imports from a layer above");
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    let paths = crate_paths(
        "use crate::primer::Primer;\n// crate::cache::Cache\n#[cfg(test)]\nuse crate::event::Event;\n\
         #[cfg(test)]\nmod tests {\n    use crate::cache::Cache;\n}\n",
    );
    assert_eq!(paths, ["crate::primer::Primer", "crate::event::Event"]);
    assert!(layer_of("primer") > layer_of("key"));
}
