//! The PostgreSQL store, in one run:
//!
//! - hit throughput with the memo on, against the memory store, on the same
//!   keys (the memo serves hits, so the store should not matter);
//! - hit latency with the memo off (every read loads from PostgreSQL),
//!   against a raw diesel-async `SELECT value FROM kck_entries WHERE key = $1`
//!   on the same pool;
//! - how many times a cold key is computed when 4 processes of 100 tasks
//!   each miss it together.
//!
//! Run: `cargo bench -p kck-benches --bench postgres`. It needs PostgreSQL
//! as the tests do (`KCK_TEST_DATABASE_URL`, or the local server binaries).
//! The results are printed and written to `BENCHMARKS.md`.

use std::convert::Infallible;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use diesel::{ExpressionMethods, QueryDsl};
use kck_core::storage::MemoryStore;
use kck_core::{Cache, Ctx, primer};
use kck_diesel::PgStore;
use kck_testing::postgres::TestDatabase;

mod common;
mod report;

use common::{Reader, hits_per_second, median, visiting_order};

const KEYS: u32 = 20_000;
const OPS_PER_TASK: usize = 1_000_000;
const LATENCY_READS: u32 = 2_000;
const ROUNDS: usize = 5;

#[primer(key = "bench_value/{id}")]
async fn bench_value(_ctx: &Ctx, id: u32) -> Result<u64, Infallible> {
    Ok(u64::from(id) * 3)
}

static COLD_COMPUTES: AtomicUsize = AtomicUsize::new(0);

#[primer(key = "cold/{round}")]
async fn cold(_ctx: &Ctx, round: u32) -> Result<u64, Infallible> {
    COLD_COMPUTES.fetch_add(1, Ordering::SeqCst);
    // Slow enough for the four processes' reads to overlap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(u64::from(round))
}

impl Reader for Cache {
    async fn read(&self, id: u32) -> u64 {
        *bench_value(self, id).await.expect("a hit")
    }
}

/// The part of kck's table the raw baseline reads, as a user would
/// declare it.
mod raw {
    #![allow(missing_docs)]
    diesel::table! {
        kck_entries (key) {
            key -> Text,
            value -> Jsonb,
        }
    }
}
use raw::kck_entries;

/// Computes every key, eight at a time.
async fn warm(cache: &Cache) {
    let writers: Vec<_> = (0..8)
        .map(|lane| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for id in (lane..KEYS).step_by(8) {
                    bench_value(&cache, id).await.expect("computed");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("warmed");
    }
}

/// Mean read latency of one task reading `LATENCY_READS` keys in order.
async fn latency<F: std::future::Future<Output = u64>>(
    order: &[u32],
    mut read: impl FnMut(u32) -> F,
) -> Duration {
    let started = Instant::now();
    for &id in order.iter().take(LATENCY_READS as usize) {
        black_box(read(id).await);
    }
    started.elapsed() / LATENCY_READS
}

async fn raw_read(store: &PgStore, id: u32) -> u64 {
    let mut conn = store.pool().get().await.expect("a connection");
    let query = kck_entries::table
        .filter(kck_entries::key.eq(format!("bench_value/{id}")))
        .select(kck_entries::value);
    let value: serde_json::Value = diesel_async::RunQueryDsl::first(query, &mut *conn)
        .await
        .expect("a row");
    value.as_u64().expect("a number")
}

/// Starts `processes` copies of this benchmark reading one cold key with
/// `tasks` tasks each, together; returns the computations they report.
fn stampede(url: &str, processes: usize) -> usize {
    let exe = std::env::current_exe().expect("the benchmark binary");
    let mut children: Vec<_> = (0..processes)
        .map(|_| {
            let mut child = Command::new(&exe)
                .env("KCK_BENCH_CHILD_URL", url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("a child");
            let input = child.stdin.take().expect("piped");
            let output = BufReader::new(child.stdout.take().expect("piped")).lines();
            (child, input, output)
        })
        .collect();
    let hear = |output: &mut std::io::Lines<BufReader<std::process::ChildStdout>>| {
        output
            .next()
            .expect("the child answers")
            .expect("the child's output")
    };
    for (_, _, output) in &mut children {
        assert_eq!(hear(output), "ready");
    }
    for (_, input, _) in &mut children {
        writeln!(input, "go").expect("the child listens");
    }
    let mut computed = 0;
    for (mut child, _, mut output) in children {
        let said = hear(&mut output);
        computed += said
            .strip_prefix("done computed ")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("unexpected: {said}"));
        assert!(child.wait().expect("the child ends").success());
    }
    computed
}

/// A child of [`stampede`]: 100 tasks read `cold/1` when told to.
fn child(url: &str) {
    common::runtime().block_on(async {
        let store = PgStore::connect(url).await.expect("connects");
        let cache = Cache::builder()
            .store(store)
            .build()
            .expect("valid primers");
        println!("ready");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("go");
        let readers: Vec<_> = (0..100)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { *cold(&cache, 1).await.expect("read") })
            })
            .collect();
        for reader in readers {
            assert_eq!(reader.await.expect("no panic"), 1);
        }
        println!("done computed {}", COLD_COMPUTES.load(Ordering::SeqCst));
    });
}

fn main() {
    if let Ok(url) = std::env::var("KCK_BENCH_CHILD_URL") {
        return child(&url);
    }
    common::runtime().block_on(async {
        let Some(db) = TestDatabase::create().await else {
            eprintln!("no PostgreSQL: nothing measured");
            return;
        };
        let store = PgStore::connect(db.url()).await.expect("connects");
        let memory = Cache::builder()
            .store(MemoryStore::new())
            .build()
            .expect("valid primers");
        let memo_on = Cache::builder()
            .store(store.clone())
            .build()
            .expect("valid primers");
        let memo_off = Cache::builder()
            .store(store.clone())
            .memo(false)
            .build()
            .expect("valid primers");
        warm(&memory).await;
        warm(&memo_on).await;
        let order = visiting_order(KEYS);

        let (mut on, mut baseline) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                on.push(hits_per_second(&memo_on, &order, 1, OPS_PER_TASK).await);
                baseline.push(hits_per_second(&memory, &order, 1, OPS_PER_TASK).await);
            } else {
                baseline.push(hits_per_second(&memory, &order, 1, OPS_PER_TASK).await);
                on.push(hits_per_second(&memo_on, &order, 1, OPS_PER_TASK).await);
            }
        }
        let (on, baseline) = (median(on), median(baseline));

        let (mut off, mut raw) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let kck = || latency(&order, |id| memo_off.read(id));
            let direct = || latency(&order, |id| raw_read(&store, id));
            if round % 2 == 0 {
                off.push(kck().await.as_secs_f64());
                raw.push(direct().await.as_secs_f64());
            } else {
                raw.push(direct().await.as_secs_f64());
                off.push(kck().await.as_secs_f64());
            }
        }
        let (off, raw) = (median(off), median(raw));

        let url = db.url().to_owned();
        let computed = tokio::task::spawn_blocking(move || stampede(&url, 4))
            .await
            .expect("no panic");

        let body = [
            format!(
                "PostgreSQL on this machine (a throwaway cluster unless `KCK_TEST_DATABASE_URL` is set, on 127.0.0.1), {KEYS} keys, one reading task, median of {ROUNDS} rounds; latencies are means over {LATENCY_READS} reads."
            ),
            String::new(),
            "| measure | kck on PgStore | baseline | ratio | goal |".to_owned(),
            "|---|---:|---:|---:|---|".to_owned(),
            format!(
                "| hits/s, memo on, vs the memory store | {:.2} M | {:.2} M | **{:.2}** | >= 0.8 |",
                on / 1e6,
                baseline / 1e6,
                on / baseline
            ),
            format!(
                "| read latency, memo off, vs a raw diesel-async `SELECT value FROM kck_entries WHERE key = $1` on the same pool | {:.1} µs | {:.1} µs | **{:.2}** | <= 1.3 |",
                off * 1e6,
                raw * 1e6,
                off / raw
            ),
            format!(
                "| computations of one cold key read by 4 processes x 100 tasks together | **{computed}** | | | 1 |"
            ),
        ]
        .join("\n");
        println!("{body}");
        match common::record("postgres", "cargo bench -p kck-benches --bench postgres", &body) {
            Ok(path) => println!("\nwritten to {}", path.display()),
            Err(error) => eprintln!("\ncould not update BENCHMARKS.md: {error}"),
        }
    });
}
