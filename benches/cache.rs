//! The in-memory cache against moka, in one run:
//!
//! - hit throughput of a generated getter against `moka::future::Cache::get`
//!   on the same 100,000 keys, with 1 and 2 concurrent tasks;
//! - the cost of a miss beyond the computation itself, alone and shared by
//!   100 callers, against moka's `get_with`;
//! - the number of computations when 10,000 tasks read one cold key at once.
//!
//! Run: `cargo bench -p kck-benches --bench cache`. The results are printed
//! and written to `BENCHMARKS.md`.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kck_core::{Cache, Ctx, primer};

mod common;
mod report;

use common::{Reader, hits_per_second, median, visiting_order};

const KEYS: u32 = 100_000;
const OPS_PER_TASK: usize = 2_000_000;
const ROUNDS: usize = 5;

#[primer(key = "bench_value/{id}")]
async fn bench_value(_ctx: &Ctx, id: u32) -> Result<u64, Infallible> {
    Ok(u64::from(id) * 3)
}

static COLD_COMPUTES: AtomicUsize = AtomicUsize::new(0);

#[primer(key = "cold/{round}")]
async fn cold(_ctx: &Ctx, round: u32) -> Result<u64, Infallible> {
    COLD_COMPUTES.fetch_add(1, Ordering::SeqCst);
    // Let every reader arrive while the computation runs.
    tokio::task::yield_now().await;
    Ok(u64::from(round))
}

/// The computation of `bench_value`, called directly: the baseline of a miss.
async fn compute_directly(id: u32) -> u64 {
    u64::from(id) * 3
}

impl Reader for Cache {
    async fn read(&self, id: u32) -> u64 {
        *bench_value(self, id).await.expect("a hit")
    }
}

impl Reader for moka::future::Cache<u32, Arc<u64>> {
    async fn read(&self, id: u32) -> u64 {
        *self.get(&id).await.expect("a hit")
    }
}

struct HitResult {
    tasks: usize,
    kck: f64,
    moka: f64,
}

async fn hit_throughput() -> Vec<HitResult> {
    let cache = Cache::builder().build().expect("valid primers");
    let moka = moka::future::Cache::new(u64::from(KEYS) * 2);
    for id in 0..KEYS {
        bench_value(&cache, id).await.expect("computed");
        moka.insert(id, Arc::new(u64::from(id) * 3)).await;
    }
    moka.run_pending_tasks().await;
    let order = visiting_order(KEYS);
    let mut results = Vec::new();
    for tasks in [1, 2] {
        let (mut kck, mut baseline) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Alternate which goes first, so neither always runs on a
            // warmer machine.
            if round % 2 == 0 {
                kck.push(hits_per_second(&cache, &order, tasks, OPS_PER_TASK).await);
                baseline.push(hits_per_second(&moka, &order, tasks, OPS_PER_TASK).await);
            } else {
                baseline.push(hits_per_second(&moka, &order, tasks, OPS_PER_TASK).await);
                kck.push(hits_per_second(&cache, &order, tasks, OPS_PER_TASK).await);
            }
        }
        results.push(HitResult {
            tasks,
            kck: median(kck),
            moka: median(baseline),
        });
    }
    results
}

struct MissResult {
    direct: Duration,
    kck_alone: Duration,
    moka_alone: Duration,
    kck_shared: Duration,
    moka_shared: Duration,
}

const MISSES: u32 = 20_000;
const SHARED_ROUNDS: u32 = 2_000;
const SHARERS: usize = 100;

async fn miss_cost() -> MissResult {
    let cache = Cache::builder().build().expect("valid primers");
    let moka: moka::future::Cache<u32, Arc<u64>> = moka::future::Cache::new(10_000_000);

    let started = Instant::now();
    for id in 0..MISSES {
        black_box(compute_directly(id).await);
    }
    let direct = started.elapsed() / MISSES;

    let started = Instant::now();
    for id in 0..MISSES {
        black_box(bench_value(&cache, KEYS + id).await.expect("computed"));
    }
    let kck_alone = started.elapsed() / MISSES;

    let started = Instant::now();
    for id in 0..MISSES {
        black_box(
            moka.get_with(
                KEYS + id,
                async move { Arc::new(compute_directly(id).await) },
            )
            .await,
        );
    }
    let moka_alone = started.elapsed() / MISSES;

    let started = Instant::now();
    for round in 0..SHARED_ROUNDS {
        let id = 2 * KEYS + round;
        let readers: Vec<_> = (0..SHARERS)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { *bench_value(&cache, id).await.expect("computed") })
            })
            .collect();
        for reader in readers {
            black_box(reader.await.expect("the reader finishes"));
        }
    }
    let kck_shared = started.elapsed() / SHARED_ROUNDS;

    let started = Instant::now();
    for round in 0..SHARED_ROUNDS {
        let id = 2 * KEYS + round;
        let readers: Vec<_> = (0..SHARERS)
            .map(|_| {
                let moka = moka.clone();
                tokio::spawn(async move {
                    *moka
                        .get_with(id, async move { Arc::new(compute_directly(id).await) })
                        .await
                })
            })
            .collect();
        for reader in readers {
            black_box(reader.await.expect("the reader finishes"));
        }
    }
    let moka_shared = started.elapsed() / SHARED_ROUNDS;

    MissResult {
        direct,
        kck_alone,
        moka_alone,
        kck_shared,
        moka_shared,
    }
}

async fn cold_key_stampede() -> (usize, usize) {
    let cache = Cache::builder().build().expect("valid primers");
    COLD_COMPUTES.store(0, Ordering::SeqCst);
    let readers: Vec<_> = (0..10_000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { *cold(&cache, 1).await.expect("computed") })
        })
        .collect();
    let mut served = 0;
    for reader in readers {
        if reader.await.expect("the reader finishes") == 1 {
            served += 1;
        }
    }
    (served, COLD_COMPUTES.load(Ordering::SeqCst))
}

fn main() {
    common::runtime().block_on(async {
        let hits = hit_throughput().await;
        let misses = miss_cost().await;
        let (served, computes) = cold_key_stampede().await;

        let mut lines = vec![
            "Hit path: a generated getter (`bench_value(&cache, id)`, which writes the key, looks it up in the memo and checks freshness) against `moka::future::Cache::get(&id)`, 100,000 keys in a fixed pseudo-random order, median of 5 rounds of 2,000,000 reads per task, both on the same 2-worker Tokio runtime.".to_owned(),
            String::new(),
            "| tasks | kck hits/s | moka hits/s | kck / moka |".to_owned(),
            "|---:|---:|---:|---:|".to_owned(),
        ];
        for hit in &hits {
            lines.push(format!(
                "| {} | {:.2} M | {:.2} M | **{:.2}** |",
                hit.tasks,
                hit.kck / 1e6,
                hit.moka / 1e6,
                hit.kck / hit.moka
            ));
        }
        lines.extend([
            String::new(),
            "Miss path: the computation (an `async fn` returning `id * 3`) called directly, then through each cache; a miss in kck also serializes the value, hashes it and writes it to the memory store.".to_owned(),
            String::new(),
            "| case | kck | moka `get_with` | direct call |".to_owned(),
            "|---|---:|---:|---:|".to_owned(),
            format!(
                "| one caller, per miss | {:.2} µs | {:.2} µs | {:.3} µs |",
                misses.kck_alone.as_secs_f64() * 1e6,
                misses.moka_alone.as_secs_f64() * 1e6,
                misses.direct.as_secs_f64() * 1e6,
            ),
            format!(
                "| {SHARERS} callers on one cold key, per key (spawning the callers included) | {:.1} µs | {:.1} µs | |",
                misses.kck_shared.as_secs_f64() * 1e6,
                misses.moka_shared.as_secs_f64() * 1e6,
            ),
            String::new(),
            format!(
                "Stampede: 10,000 tasks read one cold key at once: {served} got the value; the primer ran **{computes}** time(s)."
            ),
        ]);
        let body = lines.join("\n");
        println!("{body}");
        match common::record("cache", "cargo bench -p kck-benches --bench cache", &body) {
            Ok(path) => println!("\nwritten to {}", path.display()),
            Err(error) => eprintln!("\ncould not update BENCHMARKS.md: {error}"),
        }
    });
}
