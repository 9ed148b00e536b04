//! Dumps and loads: every entry of a store as JSON lines, and back.
//!
//! A dump is a header line, one line per entry, and an end line that
//! counts them:
//!
//! ```text
//! {"kck_dump":1,"created_at_us":1795000000000000}
//! {"key":"square/4","version":7,"value":16,"meta":{...},"dependencies":[]}
//! ...
//! {"end":{"entries":1}}
//! ```
//!
//! An entry's line holds its value exactly as stored, its metadata (times
//! in microseconds since the Unix epoch, hashes in hex) and the keys it
//! read with what it saw of them. [`dump`] goes through the store a page at
//! a time ([`Catalog::entries`]): its memory does not grow with the store.
//!
//! [`load`] reads a file twice. First it checks all of it: every line
//! parses, every key belongs to a registered primer, the end line is there
//! and counts the entries; a truncated or corrupt file is refused with the
//! number of its first bad line, and nothing is written. Then it writes
//! the entries, up to 16 at a time, each at a new version of the target store (so
//! versions there stay monotonic: the dump's versions are kept in the file
//! only, for the record). By default an entry the store already holds is
//! kept, not replaced (a dump holds each key once; a file made otherwise
//! loads one of a key's lines, any one): a load stopped halfway (Ctrl-C, a lost connection)
//! goes on where it stopped when run again. With
//! [`LoadMode::Replace`], every entry of the dump is written.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kck_core::clock::Timestamp;
use kck_core::primer::Registry;
use kck_core::storage::{
    Catalog, ContentHash, Edge, Entry, EntryError, EntryMeta, EntryStore, Expect, Saved,
    StoreError, Version,
};
use kck_core::{Cache, Key};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::out::{Out, span};
use crate::process::Interrupt;
use crate::{CliError, LoadArgs};

/// The format's version, in the header line.
pub const FORMAT: u32 = 1;

/// How many entries a page of [`dump`] holds.
const PAGE: usize = 500;

/// How many saves [`load`] has in flight at once.
const IN_FLIGHT: usize = 16;

#[derive(Serialize, Deserialize)]
struct Header {
    kck_dump: u32,
    created_at_us: i64,
}

#[derive(Serialize, Deserialize)]
struct End {
    end: EndCount,
}

#[derive(Serialize, Deserialize)]
struct EndCount {
    entries: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    version: i64,
    value: Box<RawValue>,
    meta: Meta,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    computed_at_us: i64,
    changed_at_us: i64,
    stale_at_us: Option<i64>,
    refresh_at_us: Option<i64>,
    expires_at_us: Option<i64>,
    content_hash: String,
    code_version: String,
    compute_us: u64,
    last_error: Option<LastError>,
    read_at_us: Option<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LastError {
    message: String,
    at_us: i64,
    attempts: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dependency {
    key: String,
    seen: Option<String>,
}

fn us(at: Timestamp) -> i64 {
    at.as_unix_micros()
}

fn at(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(micros)
}

fn hex(hash: ContentHash) -> String {
    hash.to_string()
}

fn unhex(text: &str) -> Result<ContentHash, String> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return Err(format!("a content hash is 32 hex digits, not `{text}`"));
    }
    let mut hash = [0u8; 16];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).unwrap_or("");
        hash[i] = u8::from_str_radix(digits, 16)
            .map_err(|_| format!("a content hash is hex digits, not `{text}`"))?;
    }
    Ok(ContentHash(hash))
}

impl Line {
    fn of(version: Version, entry: Entry) -> Result<Line, CliError> {
        let Entry {
            key,
            value,
            meta,
            dependencies,
        } = entry;
        let value = String::from_utf8(value)
            .ok()
            .and_then(|text| RawValue::from_string(text).ok())
            .ok_or_else(|| {
                CliError::Failed(format!("the stored value of {key} is not JSON: not dumped"))
            })?;
        Ok(Line {
            key: key.as_str().to_owned(),
            version: version.0,
            value,
            meta: Meta {
                computed_at_us: us(meta.computed_at),
                changed_at_us: us(meta.changed_at),
                stale_at_us: meta.stale_at.map(us),
                refresh_at_us: meta.refresh_at.map(us),
                expires_at_us: meta.expires_at.map(us),
                content_hash: hex(meta.content_hash),
                code_version: meta.code_version,
                compute_us: u64::try_from(meta.compute_duration.as_micros()).unwrap_or(u64::MAX),
                last_error: meta.last_error.map(|error| LastError {
                    message: error.message,
                    at_us: us(error.at),
                    attempts: error.attempts,
                }),
                read_at_us: meta.read_at.map(us),
            },
            dependencies: dependencies
                .into_iter()
                .map(|edge| Dependency {
                    key: edge.key.as_str().to_owned(),
                    seen: edge.seen.map(hex),
                })
                .collect(),
        })
    }

    /// The entry to write, checked against `registry`.
    fn into_entry(self, registry: &Registry) -> Result<Entry, String> {
        let key = registry
            .parse_key(&self.key)
            .map_err(|error| error.to_string())?;
        let meta = self.meta;
        let dependencies = self
            .dependencies
            .into_iter()
            .map(|dependency| {
                let key = Key::parse(&dependency.key).map_err(|error| error.to_string())?;
                let seen = dependency.seen.as_deref().map(unhex).transpose()?;
                Ok(Edge::new(key, seen))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Entry {
            key,
            value: self.value.get().as_bytes().to_vec(),
            meta: EntryMeta {
                computed_at: at(meta.computed_at_us),
                changed_at: at(meta.changed_at_us),
                stale_at: meta.stale_at_us.map(at),
                refresh_at: meta.refresh_at_us.map(at),
                expires_at: meta.expires_at_us.map(at),
                content_hash: unhex(&meta.content_hash)?,
                code_version: meta.code_version,
                compute_duration: Duration::from_micros(meta.compute_us),
                last_error: meta.last_error.map(|error| EntryError {
                    message: error.message,
                    at: at(error.at_us),
                    attempts: error.attempts,
                }),
                read_at: meta.read_at_us.map(at),
            },
            dependencies,
        })
    }
}

fn json_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer(&mut *out, value)
        .map_err(|error| CliError::Failed(format!("cannot write the dump: {error}")))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes every entry of `catalog` to `out` as a dump (see [the
/// module](self)), a page at a time; returns how many. `interrupt`, if
/// given, is checked between pages.
///
/// # Errors
///
/// [`CliError::Unreachable`] or [`CliError::Failed`] from the store, or if
/// `out` fails; [`CliError::Interrupted`].
pub async fn dump(catalog: &dyn Catalog, now: Timestamp, out: impl Write) -> Result<u64, CliError> {
    dump_with(catalog, now, out, None).await
}

async fn dump_with(
    catalog: &dyn Catalog,
    now: Timestamp,
    mut out: impl Write,
    mut interrupt: Option<&mut Interrupt>,
) -> Result<u64, CliError> {
    json_line(
        &mut out,
        &Header {
            kck_dump: FORMAT,
            created_at_us: us(now),
        },
    )?;
    let mut count = 0u64;
    let mut after: Option<Key> = None;
    loop {
        let page = match interrupt.as_deref_mut() {
            Some(interrupt) => interrupt.run(catalog.entries(after.as_ref(), PAGE)).await,
            None => Some(catalog.entries(after.as_ref(), PAGE).await),
        };
        let Some(page) = page else {
            return Err(CliError::Interrupted(format!(
                "interrupted after {count} entries: the dump is incomplete"
            )));
        };
        let page = page?;
        let Some((_, last)) = page.last() else { break };
        after = Some(last.key.clone());
        for (version, entry) in page {
            json_line(&mut out, &Line::of(version, entry)?)?;
            count += 1;
        }
    }
    json_line(
        &mut out,
        &End {
            end: EndCount { entries: count },
        },
    )?;
    out.flush()?;
    Ok(count)
}

/// How [`load`] treats an entry the store already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadMode {
    /// Keeps it: loading again after an interruption goes on where it
    /// stopped.
    #[default]
    Keep,
    /// Replaces it with the dump's.
    Replace,
}

/// What [`load`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LoadReport {
    /// The entries in the dump.
    pub entries: u64,
    /// The entries written.
    pub written: u64,
    /// The entries kept as the store held them ([`LoadMode::Keep`]).
    pub kept: u64,
}

/// Checks the dump at `path` from its first line to its last (see [the
/// module](self)) without writing anything; returns how many entries it
/// holds.
///
/// # Errors
///
/// [`CliError::BadInput`] naming the file and the line, for a file that is
/// not a dump, is truncated or corrupt, or holds a key of no registered
/// primer; [`CliError::NotFound`] if there is no file.
pub fn check(path: &Path, registry: &Registry) -> Result<u64, CliError> {
    let mut entries = 0;
    read(path, registry, |_| {
        entries += 1;
        Ok(())
    })?;
    Ok(entries)
}

/// Reads the dump at `path`, handing each entry to `each`; checks the
/// header and the end line.
fn read(
    path: &Path,
    registry: &Registry,
    mut each: impl FnMut(Entry) -> Result<(), CliError>,
) -> Result<u64, CliError> {
    let shown = path.display();
    let file = File::open(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => CliError::NotFound(format!("no file {shown}")),
        _ => CliError::BadInput(format!("cannot read {shown}: {error}")),
    })?;
    let bad = |line: u64, what: &str| CliError::BadInput(format!("{shown}, line {line}: {what}"));
    let mut lines = BufReader::new(file).lines();
    let mut number = 0u64;
    let mut next = |number: &mut u64| -> Result<Option<String>, CliError> {
        *number += 1;
        lines
            .next()
            .transpose()
            .map_err(|error| bad(*number, &format!("unreadable: {error}")))
    };
    let header = next(&mut number)?.ok_or_else(|| bad(1, "empty file: not a kck dump"))?;
    match serde_json::from_str::<Header>(&header) {
        Ok(header) if header.kck_dump == FORMAT => {}
        Ok(header) => {
            return Err(bad(
                1,
                &format!(
                    "a dump of format {}; this kck reads format {FORMAT}",
                    header.kck_dump
                ),
            ));
        }
        Err(_) => return Err(bad(1, "not a kck dump (no kck_dump header)")),
    }
    let mut entries = 0u64;
    loop {
        let Some(text) = next(&mut number)? else {
            return Err(bad(
                number,
                &format!("truncated: the file ends after {entries} entries, without its end line"),
            ));
        };
        if text.starts_with("{\"end\"") {
            let end: End =
                serde_json::from_str(&text).map_err(|error| bad(number, &error.to_string()))?;
            if end.end.entries != entries {
                return Err(bad(
                    number,
                    &format!(
                        "the end line counts {} entries, the file holds {entries}",
                        end.end.entries
                    ),
                ));
            }
            if next(&mut number)?.is_some() {
                return Err(bad(number, "text after the end line"));
            }
            return Ok(entries);
        }
        let line: Line = serde_json::from_str(&text)
            .map_err(|error| bad(number, &format!("not an entry: {error}")))?;
        let entry = line
            .into_entry(registry)
            .map_err(|error| bad(number, &error))?;
        entries += 1;
        each(entry)?;
    }
}

/// Loads the dump at `path` into `entries` (see [the module](self)): checks
/// all of it first, then writes.
///
/// # Errors
///
/// As [`check`], before anything is written; then [`CliError::Unreachable`]
/// or [`CliError::Failed`] from the store, with what was written so far
/// kept.
pub async fn load(
    path: &Path,
    registry: &Registry,
    entries: &dyn EntryStore,
    mode: LoadMode,
) -> Result<LoadReport, CliError> {
    let total = check(path, registry)?;
    load_checked(path, registry, entries, mode, total, None, &mut |_| {}).await
}

async fn load_checked(
    path: &Path,
    registry: &Registry,
    store: &dyn EntryStore,
    mode: LoadMode,
    total: u64,
    mut interrupt: Option<&mut Interrupt>,
    progress: &mut dyn FnMut(u64),
) -> Result<LoadReport, CliError> {
    let expect = match mode {
        LoadMode::Keep => Expect::Absent,
        LoadMode::Replace => Expect::Any,
    };
    let mut report = LoadReport {
        entries: total,
        ..LoadReport::default()
    };
    // Lines are read on this thread and written one at a time: a bounded
    // queue between the two keeps memory to a few entries.
    let (send, mut receive) = tokio::sync::mpsc::channel::<Entry>(64);
    let reader = {
        let path = path.to_owned();
        let registry = registry.clone();
        tokio::task::spawn_blocking(move || {
            read(&path, &registry, |entry| {
                send.blocking_send(entry)
                    .map_err(|_| CliError::Failed("stopped".into()))
            })
        })
    };
    let again = match mode {
        LoadMode::Keep => "run `load` again to go on (entries already loaded are kept)",
        LoadMode::Replace => "run `load --replace` again to replace the rest",
    };
    let interrupted = |report: &LoadReport| {
        CliError::Interrupted(format!(
            "interrupted: {} of {} entries loaded ({} written, {} kept); {again}",
            report.written + report.kept,
            report.entries,
            report.written,
            report.kept
        ))
    };
    // Up to `IN_FLIGHT` saves at once: a load is round trips, and the
    // entries of a dump are distinct keys, so their order does not matter.
    let receiving = futures_util::stream::poll_fn(|cx| receive.poll_recv(cx));
    let mut saves = receiving
        .map(|entry| async move {
            match store.save(entry.clone(), expect).await {
                // Concurrent saves may deadlock in the store (each queues
                // its dependents' jobs); the one chosen to fail is tried
                // once more.
                Err(_) => store.save(entry, expect).await,
                saved => saved,
            }
        })
        .buffer_unordered(IN_FLIGHT);
    loop {
        let next = match interrupt.as_deref_mut() {
            Some(interrupt) => match interrupt.run(saves.next()).await {
                Some(next) => next,
                // The saves in flight are dropped: each is written or not,
                // and loading again settles it.
                None => return Err(interrupted(&report)),
            },
            None => saves.next().await,
        };
        let Some(saved) = next else { break };
        match saved.map_err(|error: StoreError| loaded_so_far(error.into(), &report, again))? {
            Saved::Written(_) => report.written += 1,
            Saved::Conflict { .. } => report.kept += 1,
        }
        progress(report.written + report.kept);
    }
    match reader.await {
        Ok(Ok(_)) => Ok(report),
        Ok(Err(error)) => Err(error),
        Err(error) => Err(CliError::Failed(format!(
            "reading the dump failed: {error}"
        ))),
    }
}

fn loaded_so_far(error: CliError, report: &LoadReport, again: &str) -> CliError {
    let so_far = format!(
        "{error} (after {} of {} entries; {again})",
        report.written + report.kept,
        report.entries
    );
    match error {
        CliError::Unreachable(_) => CliError::Unreachable(so_far),
        _ => CliError::Failed(so_far),
    }
}

/// The `dump` command: to a file (replaced once complete) or `-`.
pub(crate) async fn dump_command(cache: &Cache, out: &Out, file: &Path) -> Result<(), CliError> {
    let catalog = cache
        .storage()
        .catalog()
        .ok_or_else(|| CliError::Failed("this store cannot list its entries".into()))?;
    let started = Instant::now();
    let mut interrupt = Interrupt::new();
    let to_stdout = file.as_os_str() == "-";
    let count = if to_stdout {
        let mut stdout = Piped::new(std::io::stdout());
        let dumped = dump_with(
            &**catalog,
            cache.now(),
            BufWriter::new(&mut stdout),
            Some(&mut interrupt),
        )
        .await;
        if stdout.closed {
            // The reader has all it wanted (`dump - | head`).
            return Ok(());
        }
        dumped?
    } else {
        let partial = partial_path(file);
        let writer = File::create(&partial).map_err(|error| {
            CliError::BadInput(format!("cannot write {}: {error}", partial.display()))
        })?;
        let dumped = dump_with(
            &**catalog,
            cache.now(),
            BufWriter::new(writer),
            Some(&mut interrupt),
        )
        .await;
        if dumped.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        let count = dumped?;
        std::fs::rename(&partial, file).map_err(|error| {
            CliError::Failed(format!("cannot write {}: {error}", file.display()))
        })?;
        count
    };
    let summary = format!(
        "dumped {count} entries to {} in {}",
        file.display(),
        span(started.elapsed())
    );
    if to_stdout {
        eprintln!("{summary}");
        Ok(())
    } else if out.is_json() {
        out.json(&serde_json::json!({ "entries": count, "file": file }))
    } else {
        out.text(&summary)
    }
}

/// A pipe that notes when its reader went away: then the dump stops
/// quietly, as a reader such as `head` asks, instead of failing.
struct Piped<W> {
    inner: W,
    closed: bool,
}

impl<W> Piped<W> {
    fn new(inner: W) -> Self {
        Piped {
            inner,
            closed: false,
        }
    }

    fn note<T>(&mut self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(error) = &result {
            self.closed |= error.kind() == std::io::ErrorKind::BrokenPipe;
        }
        result
    }
}

impl<W: Write> Write for Piped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf);
        self.note(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.inner.flush();
        self.note(flushed)
    }
}

/// Where a dump is written until it is complete: beside it, so that the
/// rename is atomic.
fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

/// The `load` command.
pub(crate) async fn load_command(
    cache: &Cache,
    out: &Out,
    args: &LoadArgs,
) -> Result<(), CliError> {
    let started = Instant::now();
    // Caught from now on: a signal stops the load between two entries.
    let mut interrupt = Interrupt::new();
    let registry = cache.registry();
    let total = {
        let path = args.file.clone();
        let registry = registry.clone();
        tokio::task::spawn_blocking(move || check(&path, &registry))
            .await
            .map_err(|error| CliError::Failed(error.to_string()))??
    };
    eprintln!("{}: {total} entries, checked; loading", args.file.display());
    let mode = if args.replace {
        LoadMode::Replace
    } else {
        LoadMode::Keep
    };
    let bar = indicatif::ProgressBar::new(total);
    if out.is_json() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let loaded = load_checked(
        &args.file,
        registry,
        &**cache.storage().entries(),
        mode,
        total,
        Some(&mut interrupt),
        &mut |done| bar.set_position(done),
    )
    .await;
    bar.finish_and_clear();
    let report = loaded?;
    if out.is_json() {
        return out.json(&report);
    }
    out.text(&format!(
        "loaded {} entries from {} in {}: {} written, {} kept as they were",
        report.entries,
        args.file.display(),
        span(started.elapsed()),
        report.written,
        report.kept
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_hex() {
        let hash = ContentHash::of(b"a value");
        assert_eq!(unhex(&hex(hash)), Ok(hash));
        assert!(unhex("00").is_err());
        assert!(unhex(&"zz".repeat(16)).is_err());
    }
}
