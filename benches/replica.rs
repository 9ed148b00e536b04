//! Read replicas, in one run, on a throwaway primary and a hot standby of
//! it (`pg_basebackup -R`) on the same machine:
//!
//! - memo-off hit throughput and p99 latency, 16 reading tasks, of a store
//!   on the primary alone against a store that sends its loads to the
//!   standby (the baseline is the primary alone);
//! - the staleness a reader can observe: after a write by another
//!   process, how long until a memo-off reader of each store reads the new
//!   value (it never reads one older than it was told of).
//!
//! One machine shows the routing and its cost, not the scale: the primary
//! and the standby share its two cores.
//!
//! Run: `cargo bench -p kck-benches --bench replica`. It needs the local
//! PostgreSQL server binaries (it starts both servers). The results are
//! printed and written to `BENCHMARKS.md`.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kck_core::{Cache, Ctx, primer};
use kck_diesel::PgStore;
use kck_testing::postgres::TestDatabase;

mod common;
mod report;

use common::{median, visiting_order};

const KEYS: u32 = 20_000;
const TASKS: usize = 16;
const READS_PER_TASK: usize = 2_000;
const ROUNDS: usize = 5;
const WRITES: u32 = 200;

#[primer(key = "replica_value/{id}")]
async fn replica_value(_ctx: &Ctx, id: u32) -> Result<u64, Infallible> {
    Ok(u64::from(id) * 3)
}

/// Reads per second and the p99 of one read, `TASKS` tasks reading
/// `READS_PER_TASK` keys each.
async fn measure(cache: &Cache, order: &Arc<Vec<u32>>) -> (f64, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (cache, order) = (cache.clone(), order.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(READS_PER_TASK);
                for i in 0..READS_PER_TASK {
                    let id = order[(i + task * 7919) % order.len()];
                    let read = Instant::now();
                    black_box(*replica_value(&cache, id).await.expect("a hit"));
                    latencies.push(read.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(TASKS * READS_PER_TASK);
    for task in tasks {
        latencies.extend(task.await.expect("the task finishes"));
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies[latencies.len() * 99 / 100])
}

/// How long after each of `WRITES` writes by `writer` the `reader` first
/// reads the new value; sorted.
async fn staleness(writer: &Cache, reader: &Cache) -> Vec<Duration> {
    let mut waits = Vec::with_capacity(WRITES as usize);
    for n in 0..WRITES {
        let key = replica_value::key(KEYS + 1);
        let value = 1_000_000 + u64::from(n);
        writer.set(&key, value).await.expect("set");
        let written = Instant::now();
        loop {
            let read = reader.peek(&key).await.expect("read").map(|v| *v);
            if read == Some(value) {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(30),
                "never caught up"
            );
            tokio::task::yield_now().await;
        }
        waits.push(written.elapsed());
    }
    waits.sort();
    waits
}

fn memo_off(store: PgStore) -> Cache {
    Cache::builder()
        .store(store)
        .memo(false)
        .local_worker(false)
        .local_scheduler(false)
        .build()
        .expect("valid primers")
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn main() {
    common::runtime().block_on(async {
        let Some(primary) = TestDatabase::own_cluster() else {
            eprintln!("no PostgreSQL: nothing measured");
            return;
        };
        let standby = primary.start_standby().expect("a hot standby");
        let db = TestDatabase::create_in(&primary).await;
        let primary_url = db.url().to_owned();
        let replica_url = primary_url.replacen(
            &format!("127.0.0.1:{}/", primary.port()),
            &format!("127.0.0.1:{}/", standby.port()),
            1,
        );
        let writer = Cache::builder()
            .store(PgStore::connect(&primary_url).await.expect("connects"))
            .local_worker(false)
            .local_scheduler(false)
            .build()
            .expect("valid primers");
        for id in 0..KEYS {
            replica_value(&writer, id).await.expect("computed");
        }
        writer
            .set(&replica_value::key(KEYS + 1), 0)
            .await
            .expect("set");
        // Until the standby has it all: its pool may not fail a first read.
        let replicated = PgStore::builder(&primary_url)
            .replica(&replica_url)
            .connect()
            .await
            .expect("connects");
        let probe = memo_off(replicated.clone());
        while probe
            .peek(&replica_value::key(KEYS + 1))
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(probe);
        let alone = memo_off(PgStore::connect(&primary_url).await.expect("connects"));
        let with_replica = memo_off(replicated.clone());
        let order = visiting_order(KEYS);

        let (mut alone_rates, mut alone_p99s) = (Vec::new(), Vec::new());
        let (mut replica_rates, mut replica_p99s) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let mut runs = [(&alone, true), (&with_replica, false)];
            if round % 2 == 1 {
                runs.reverse();
            }
            for (cache, is_alone) in runs {
                let (rate, p99) = measure(cache, &order).await;
                if is_alone {
                    alone_rates.push(rate);
                    alone_p99s.push(micros(p99));
                } else {
                    replica_rates.push(rate);
                    replica_p99s.push(micros(p99));
                }
            }
        }
        let stats = replicated.replicas();
        let from_replica = stats.first().map_or(0, |stats| stats.reads);

        let alone_waits = staleness(&writer, &alone).await;
        let replica_waits = staleness(&writer, &with_replica).await;
        let quantile = |waits: &[Duration], q: usize| micros(waits[(waits.len() - 1) * q / 100]);

        let (alone_rate, replica_rate) = (median(alone_rates), median(replica_rates));
        let (alone_p99, replica_p99) = (median(alone_p99s), median(replica_p99s));
        let body = [
            format!(
                "A throwaway primary and a hot standby of it (`pg_basebackup -R`, streaming), both on this machine and sharing its cores: one machine shows the routing and what it costs, not the scale a replica on its own machine adds. {KEYS} keys, memo off (every read loads), {TASKS} reading tasks x {READS_PER_TASK} reads, median of {ROUNDS} rounds. Staleness: {WRITES} writes by another process on the primary; the time until a memo-off reader, polling, first reads the new value."
            ),
            String::new(),
            "| measure | primary + replica | primary alone (baseline) | ratio |".to_owned(),
            "|---|---:|---:|---:|".to_owned(),
            format!(
                "| memo-off hits/s | {:.0} | {:.0} | **{:.2}** |",
                replica_rate,
                alone_rate,
                replica_rate / alone_rate
            ),
            format!(
                "| p99 of one read | {replica_p99:.0} µs | {alone_p99:.0} µs | **{:.2}** |",
                replica_p99 / alone_p99
            ),
            format!(
                "| staleness after a write: median | {:.0} µs | {:.0} µs | |",
                quantile(&replica_waits, 50),
                quantile(&alone_waits, 50)
            ),
            format!(
                "| staleness after a write: max | {:.0} µs | {:.0} µs | |",
                quantile(&replica_waits, 100),
                quantile(&alone_waits, 100)
            ),
            String::new(),
            format!(
                "Loads the replica answered during the run: {from_replica} (the rest of the store's, and every write, went to the primary). A reader never reads older than a version it was told of: its staleness is the time until the write's `NOTIFY` reaches it or the standby replays it."
            ),
        ]
        .join("\n");
        println!("{body}");
        match common::record("replica", "cargo bench -p kck-benches --bench replica", &body) {
            Ok(path) => println!("\nrecorded in {}", path.display()),
            Err(error) => eprintln!("could not record the results: {error}"),
        }
    });
}
