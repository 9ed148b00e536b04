//! Dumps and loads: a round trip on each store and between them, versions
//! that stay monotonic in a live store, and files that are refused whole.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use kck_cli::CliError;
use kck_cli::dump::{self, LoadMode, LoadReport};
use kck_core::storage::{Entry, Version};
use kck_core::{Cache, Ctx, Key, primer};
use kck_testing::postgres::TestDatabase;

#[primer(key = "leaf/{n}", refresh = "5m")]
async fn leaf(_ctx: &Ctx, n: u64) -> Result<String, kck_core::error::BoxError> {
    Ok(format!("leaf {n} \u{e9}\u{1F600} \"quoted\""))
}

#[primer(key = "total/{n}", depends_on = [leaf])]
async fn total(ctx: &Ctx, n: u64) -> Result<Vec<String>, kck_core::Error> {
    let mut leaves = Vec::new();
    for i in 1..=n {
        leaves.push((*leaf(ctx, i).await?).clone());
    }
    Ok(leaves)
}

fn memory() -> Cache {
    Cache::builder()
        .local_worker(false)
        .build()
        .expect("the primers register")
}

async fn postgres(database: &TestDatabase) -> Cache {
    Cache::builder()
        .store(database.connect().await)
        .local_worker(false)
        .build()
        .expect("the primers register")
}

/// Five leaves and the total that read them.
async fn fill(cache: &Cache) {
    let read = total(cache, 5).await.expect("computes");
    assert_eq!(read.len(), 5);
}

/// Every entry, as the catalog pages through them.
async fn entries(cache: &Cache) -> Vec<(Version, Entry)> {
    let catalog = cache.storage().catalog().expect("a catalog");
    let mut all = Vec::new();
    let mut after: Option<Key> = None;
    loop {
        let page = catalog
            .entries(after.as_ref(), 3)
            .await
            .expect("the store answers");
        let Some((_, last)) = page.last() else { break };
        after = Some(last.key.clone());
        all.extend(page);
    }
    all
}

/// What a load must keep of an entry: everything but its version, with
/// the value compared as JSON (PostgreSQL stores it as `jsonb`, which
/// spaces it its own way).
fn kept(entries: &[(Version, Entry)]) -> Vec<(Key, serde_json::Value, Entry)> {
    entries
        .iter()
        .map(|(_, entry)| {
            let value = serde_json::from_slice(&entry.value).expect("a JSON value");
            let mut rest = entry.clone();
            rest.value.clear();
            (entry.key.clone(), value, rest)
        })
        .collect()
}

static FILES: AtomicUsize = AtomicUsize::new(0);

/// A file of its own for a test, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new() -> Self {
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("kck-dump-{}-{n}.jsonl", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn dump_to_file(cache: &Cache) -> (TempFile, u64) {
    let file = TempFile::new();
    let writer = std::fs::File::create(&file.0).expect("a temporary file");
    let catalog = cache.storage().catalog().expect("a catalog");
    let count = dump::dump(&**catalog, cache.now(), std::io::BufWriter::new(writer))
        .await
        .expect("dumps");
    (file, count)
}

async fn load(file: &TempFile, into: &Cache, mode: LoadMode) -> Result<LoadReport, CliError> {
    dump::load(&file.0, into.registry(), &**into.storage().entries(), mode).await
}

/// Dumps `from`, loads into `into` (empty), and checks that `into` holds
/// the same entries and serves them without computing.
async fn round_trip(from: &Cache, into: &Cache) {
    fill(from).await;
    let (file, count) = dump_to_file(from).await;
    assert_eq!(count, 6, "five leaves and a total");
    let report = load(&file, into, LoadMode::Keep).await.expect("loads");
    assert_eq!(
        report,
        LoadReport {
            entries: 6,
            written: 6,
            kept: 0
        }
    );
    let (source, loaded) = (entries(from).await, entries(into).await);
    assert_eq!(kept(&loaded), kept(&source), "every entry as it was");

    // The loaded product is served as it is: not computed again.
    let key = total::key(5).key().clone();
    let before = into.entry(&key).await.expect("loads").expect("stored");
    let served = total(into, 5).await.expect("served");
    assert_eq!(served.len(), 5);
    let after = into.entry(&key).await.expect("loads").expect("stored");
    assert_eq!(before.version, after.version, "served, not recomputed");
}

#[tokio::test]
async fn memory_to_memory() {
    round_trip(&memory(), &memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_postgres() {
    let (Some(from), Some(into)) = (TestDatabase::create().await, TestDatabase::create().await)
    else {
        return;
    };
    round_trip(&postgres(&from).await, &postgres(&into).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_to_postgres() {
    let Some(into) = TestDatabase::create().await else {
        return;
    };
    round_trip(&memory(), &postgres(&into).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_memory() {
    let Some(from) = TestDatabase::create().await else {
        return;
    };
    round_trip(&postgres(&from).await, &memory()).await;
}

/// Loaded into a store that lives on, entries take versions after every
/// version it gave before: nothing that watches versions sees one go
/// back. What it holds already is kept, unless asked to replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_into_a_live_store_keeps_versions_monotonic() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let source = memory();
    fill(&source).await;
    let (file, _) = dump_to_file(&source).await;

    let live = postgres(&database).await;
    // Its own products, written many times: its versions run ahead of the
    // dump's.
    for _ in 0..20 {
        live.refresh_key(&leaf::key(1).key().clone())
            .await
            .expect("refreshes");
    }
    let newest = entries(&live)
        .await
        .iter()
        .map(|(version, _)| *version)
        .max()
        .expect("one entry");
    let report = load(&file, &live, LoadMode::Keep).await.expect("loads");
    assert_eq!((report.written, report.kept), (5, 1), "leaf/1 kept");
    let after = entries(&live).await;
    for (version, entry) in &after {
        if entry.key != *leaf::key(1).key() {
            assert!(
                *version > newest,
                "{} at {version}, after {newest}",
                entry.key
            );
        }
    }
    let report = load(&file, &live, LoadMode::Replace).await.expect("loads");
    assert_eq!(
        (report.written, report.kept),
        (6, 0),
        "every entry replaced"
    );
}

/// A dump cut short, or with a line that is not an entry, is refused
/// whole with the line's number: nothing of it is written.
#[tokio::test]
async fn a_truncated_or_corrupt_dump_is_refused_whole() {
    let source = memory();
    fill(&source).await;
    let (file, _) = dump_to_file(&source).await;
    let text = std::fs::read_to_string(&file.0).expect("readable");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "a header, six entries, an end");

    let cases: Vec<(String, &str)> = vec![
        (lines[..5].join("\n"), "line 6: truncated"),
        (
            format!("{}\n{{\"key\": \"leaf/1\"", lines[..3].join("\n")),
            "line 4: not an entry",
        ),
        (
            text.replacen("\"leaf/", "\"leaf/x", 1),
            "line 2: parameter `n` of key `leaf/x1` is invalid",
        ),
        (
            text.replacen("\"leaf/", "\"elsewhere/", 1),
            "line 2: unknown primer `elsewhere`",
        ),
        (
            text.replace("{\"end\":{\"entries\":6}}", "{\"end\":{\"entries\":7}}"),
            "line 8: the end line counts 7 entries, the file holds 6",
        ),
        (format!("{text}more\n"), "line 9: text after the end line"),
        ("{}\n".to_owned(), "line 1: not a kck dump"),
        (String::new(), "line 1: empty file"),
        (
            text.replacen("\"kck_dump\":1", "\"kck_dump\":2", 1),
            "line 1: a dump of format 2",
        ),
        (
            text.replacen("\"content_hash\":\"", "\"content_hash\":\"zz", 1),
            "line 2: a content hash is 32 hex digits",
        ),
    ];
    for (bad, expected) in cases {
        let broken = TempFile::new();
        std::fs::write(&broken.0, &bad).expect("writable");
        let target = memory();
        let error = load(&broken, &target, LoadMode::Keep)
            .await
            .expect_err("refused");
        assert!(
            matches!(error, CliError::BadInput(_)) && error.to_string().contains(expected),
            "expected `{expected}`, got: {error}"
        );
        assert!(entries(&target).await.is_empty(), "nothing is written");
    }
    let missing = TempFile::new();
    let error = load(&missing, &memory(), LoadMode::Keep)
        .await
        .expect_err("no file");
    assert!(matches!(error, CliError::NotFound(_)), "{error}");
}
