//! The refresh engine on PostgreSQL, in one run:
//!
//! - refresh throughput: two worker processes drain a queue of refresh jobs
//!   of a trivial primer (each job: claim, recompute, store, complete),
//!   against the same two processes draining a bare table with a
//!   `SKIP LOCKED` claim-and-delete loop on the same database;
//! - propagation latency: a write in this process, until the refresh of its
//!   dependent finishes in a worker process.
//!
//! Run: `cargo bench -p kck-benches --bench refresh`. It needs PostgreSQL
//! as the tests do (`KCK_TEST_DATABASE_URL`, or the local server binaries).
//! The results are printed and written to `BENCHMARKS.md`.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use kck_core::event::EventKind;
use kck_core::refresh::Worker;
use kck_core::storage::{JobRequest, RefreshReason};
use kck_core::{Cache, Ctx, Key, primer};
use kck_diesel::PgStore;
use kck_testing::postgres::TestDatabase;

mod common;
mod report;

use common::median;

/// Jobs per throughput round.
const JOBS: u32 = 20_000;
/// Measured throughput rounds (after one to create the entries), kck and
/// baseline alternating; the medians are compared. Runs vary by about a
/// fifth on this 2-core machine.
const ROUNDS: usize = 5;
/// Concurrent jobs (or claim loops) per process, the same on both sides.
/// The baseline keeps both cores busy from 8 on; kck, whose jobs wait on
/// more round trips, needs more to do the same.
const CONCURRENCY: usize = 16;
const PROCESSES: usize = 2;
/// Writes whose propagation is timed.
const PROPAGATIONS: usize = 300;

/// The trivial product every job refreshes.
#[primer(key = "trivial/{n}")]
async fn trivial(_ctx: &Ctx, n: u32) -> Result<u64, Infallible> {
    Ok(u64::from(n) * 2)
}

/// The upstream value a write changes.
#[primer(key = "upstream")]
async fn upstream(_ctx: &Ctx) -> Result<u64, Infallible> {
    Ok(0)
}

/// What `downstream` computed last, and whether to report its recomputes.
static DOWNSTREAM: AtomicU64 = AtomicU64::new(0);
static REPORT: AtomicBool = AtomicBool::new(false);

/// Recomputed in a worker process when `upstream` changes.
#[primer(key = "downstream", depends_on = [upstream])]
async fn downstream(ctx: &Ctx) -> Result<u64, kck_core::Error> {
    let value = *upstream(ctx).await? + 1;
    DOWNSTREAM.store(value, Ordering::SeqCst);
    Ok(value)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(store: &PgStore, sql: &'static str) -> i64 {
    let mut conn = store.pool().get().await.expect("a connection");
    let row: Count = diesel::sql_query(sql)
        .get_result(&mut *conn)
        .await
        .expect("counted");
    row.n
}

async fn execute(store: &PgStore, sql: &str) {
    let mut conn = store.pool().get().await.expect("a connection");
    diesel::sql_query(sql)
        .execute(&mut *conn)
        .await
        .expect("executed");
}

/// Waits until `sql` counts zero; polls every 5 ms.
async fn drained(store: &PgStore, sql: &'static str) {
    while count(store, sql).await > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A copy of this benchmark in a role.
struct Peer {
    child: Child,
    input: ChildStdin,
    output: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn start(role: &str, url: &str) -> Peer {
        let exe = std::env::current_exe().expect("the benchmark binary");
        let mut child = Command::new(exe)
            .env("KCK_BENCH_ROLE", role)
            .env("KCK_BENCH_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("a child");
        let input = child.stdin.take().expect("piped");
        let output = BufReader::new(child.stdout.take().expect("piped")).lines();
        Peer {
            child,
            input,
            output,
        }
    }

    fn hear(&mut self) -> String {
        self.output
            .next()
            .expect("the child answers")
            .expect("the child's output")
    }

    fn say(&mut self, line: &str) {
        writeln!(self.input, "{line}").expect("the child listens");
        self.input.flush().expect("the child listens");
    }

    fn stop(self) {
        let Peer {
            mut child, input, ..
        } = self;
        drop(input);
        assert!(child.wait().expect("the child ends").success());
    }
}

/// Starts `PROCESSES` peers in `role` and waits until each is ready.
async fn start(role: &'static str, url: &str) -> Vec<Peer> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut peers: Vec<Peer> = (0..PROCESSES).map(|_| Peer::start(role, &url)).collect();
        for peer in &mut peers {
            assert_eq!(peer.hear(), "ready");
        }
        peers
    })
    .await
    .expect("no panic")
}

async fn stop(peers: Vec<Peer>) {
    tokio::task::spawn_blocking(move || peers.into_iter().for_each(Peer::stop))
        .await
        .expect("no panic");
}

/// One round of kck workers: queue `JOBS` refreshes, let the workers go,
/// and time until the queue is empty. Returns refreshes per second.
async fn kck_round(cache: &Cache, peers: &mut [Peer]) -> f64 {
    let now = cache.now();
    let jobs: Vec<JobRequest> = (0..JOBS)
        .map(|n| {
            let key: Key = trivial::key(n).into();
            JobRequest::new(key, now, RefreshReason::Requested)
        })
        .collect();
    for chunk in jobs.chunks(1000) {
        cache.queue().enqueue(chunk).await.expect("queued");
    }
    let started = Instant::now();
    for peer in peers.iter_mut() {
        peer.say("go");
    }
    // Through the queue's indexes: the poll must not load the database.
    while cache.queue().next_due().await.expect("asked").is_some() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    for peer in peers.iter_mut() {
        peer.say("pause");
    }
    for peer in peers.iter_mut() {
        assert_eq!(peer.hear(), "paused");
    }
    f64::from(JOBS) / elapsed.as_secs_f64()
}

/// One round of the baseline: fill a bare table with `JOBS` rows, let the
/// claim loops go, and time until the table is empty.
async fn baseline_round(store: &PgStore, peers: &mut [Peer]) -> f64 {
    execute(
        store,
        &format!("INSERT INTO kck_bench_jobs (key) SELECT 'trivial/' || n FROM generate_series(1, {JOBS}) AS n"),
    )
    .await;
    let started = Instant::now();
    for peer in peers.iter_mut() {
        peer.say("go");
    }
    drained(
        store,
        "SELECT count(*) AS n FROM (SELECT 1 FROM kck_bench_jobs ORDER BY id LIMIT 1) AS head",
    )
    .await;
    let elapsed = started.elapsed();
    for peer in peers.iter_mut() {
        assert_eq!(peer.hear(), "drained");
    }
    f64::from(JOBS) / elapsed.as_secs_f64()
}

fn unix_micros() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_micros()).expect("in range")
}

/// Sets `upstream` `PROPAGATIONS` times, each time waiting for the worker
/// process to report `downstream` recomputed; returns the latencies.
async fn propagation(url: &str, cache: &Cache) -> Vec<Duration> {
    let mut peer = tokio::task::spawn_blocking({
        let url = url.to_owned();
        move || {
            let mut peer = Peer::start("dependent", &url);
            assert_eq!(peer.hear(), "ready");
            peer
        }
    })
    .await
    .expect("no panic");
    let mut latencies = Vec::with_capacity(PROPAGATIONS);
    for round in 1..=PROPAGATIONS {
        let value = u64::try_from(round).expect("small");
        let written_at = unix_micros();
        cache.set(&upstream::key(), value).await.expect("written");
        // A recompute of the previous value may still be reported: a
        // dependent that sees its input change while it computes is
        // computed again.
        let (back, at) = tokio::task::spawn_blocking(move || {
            loop {
                let said = peer.hear();
                let (seen, at) = said
                    .strip_prefix("computed ")
                    .and_then(|rest| rest.split_once(' '))
                    .and_then(|(seen, at)| {
                        Some((seen.parse::<u64>().ok()?, at.parse::<i64>().ok()?))
                    })
                    .unwrap_or_else(|| panic!("unexpected: {said}"));
                assert!(seen <= value + 1, "a value from the future: {seen}");
                if seen == value + 1 {
                    return (peer, at);
                }
            }
        })
        .await
        .expect("no panic");
        peer = back;
        latencies.push(Duration::from_micros((at - written_at).unsigned_abs()));
    }
    tokio::task::spawn_blocking(move || peer.stop())
        .await
        .expect("no panic");
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A child process: a kck worker, a baseline claim loop, or the worker
/// that recomputes `downstream`.
fn child(role: &str, url: &str) {
    common::runtime().block_on(async {
        let store = PgStore::builder(url)
            .pool_size(u32::try_from(CONCURRENCY).expect("small") + 4)
            .connect()
            .await
            .expect("connects");
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        match role {
            "worker" => kck_worker(store, &mut lines).await,
            "baseline" => claim_loops(store, &mut lines).await,
            "dependent" => dependent(store, &mut lines).await,
            other => panic!("unknown role {other}"),
        }
    });
}

/// Runs a worker on every `go`, until `pause`.
async fn kck_worker(store: PgStore, lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) {
    let cache = Cache::builder()
        .store(store)
        .local_worker(false)
        .local_scheduler(false)
        .build()
        .expect("valid primers");
    println!("ready");
    while let Some(line) = lines.recv().await {
        assert_eq!(line, "go");
        let (pause, paused) = tokio::sync::oneshot::channel::<()>();
        let worker = Worker::builder(&cache)
            .concurrency(CONCURRENCY)
            .shutdown(async move {
                let _ = paused.await;
            })
            .build();
        let running = tokio::spawn(worker.run());
        assert_eq!(lines.recv().await.as_deref(), Some("pause"));
        let _ = pause.send(());
        running.await.expect("no panic").expect("the worker ran");
        println!("paused");
    }
}

/// The baseline: `CONCURRENCY` loops claiming and deleting one row at a
/// time, on every `go`, until the table is empty.
async fn claim_loops(store: PgStore, lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) {
    println!("ready");
    while let Some(line) = lines.recv().await {
        assert_eq!(line, "go");
        let loops: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut conn = store.pool().get().await.expect("a connection");
                    loop {
                        let claimed: Vec<Count> = diesel::sql_query(
                            "DELETE FROM kck_bench_jobs WHERE id = ( \
                                 SELECT id FROM kck_bench_jobs ORDER BY id \
                                 FOR UPDATE SKIP LOCKED LIMIT 1 \
                             ) RETURNING id AS n",
                        )
                        .load(&mut *conn)
                        .await
                        .expect("claimed");
                        if claimed.is_empty() {
                            break;
                        }
                    }
                })
            })
            .collect();
        for claim_loop in loops {
            claim_loop.await.expect("no panic");
        }
        println!("drained");
    }
}

/// A worker that reports every recompute of `downstream`, with the time it
/// finished.
async fn dependent(store: PgStore, lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) {
    let cache = Cache::builder()
        .store(store)
        .local_worker(false)
        .local_scheduler(false)
        .on_event(|event: &kck_core::event::Event| {
            if event.key.primer() == "downstream"
                && matches!(event.kind, EventKind::Computed { .. })
                && AtomicBool::load(&REPORT, Ordering::SeqCst)
            {
                // Stored: the event comes after the write.
                let at = unix_micros();
                println!(
                    "computed {} {at}",
                    AtomicU64::load(&DOWNSTREAM, Ordering::SeqCst)
                );
            }
        })
        .build()
        .expect("valid primers");
    // Compute it once, so the edge to `upstream` exists.
    downstream(&cache).await.expect("computed");
    REPORT.store(true, Ordering::SeqCst);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::builder(&cache)
        .shutdown(async move {
            let _ = stopped.await;
        })
        .build();
    let running = tokio::spawn(worker.run());
    println!("ready");
    let _ = lines.recv().await;
    let _ = stop.send(());
    running.await.expect("no panic").expect("the worker ran");
}

fn main() {
    if let (Ok(role), Ok(url)) = (
        std::env::var("KCK_BENCH_ROLE"),
        std::env::var("KCK_BENCH_URL"),
    ) {
        return child(&role, &url);
    }
    common::runtime().block_on(async {
        let Some(db) = TestDatabase::create().await else {
            eprintln!("no PostgreSQL: nothing measured");
            return;
        };
        let store = PgStore::connect(db.url()).await.expect("connects");
        execute(
            &store,
            "CREATE TABLE kck_bench_jobs (id bigserial PRIMARY KEY, key text NOT NULL)",
        )
        .await;
        let cache = Cache::builder()
            .store(store.clone())
            .local_worker(false)
            .local_scheduler(false)
            .build()
            .expect("valid primers");

        let mut workers = start("worker", db.url()).await;
        let created = kck_round(&cache, &mut workers).await;
        let mut baselines = start("baseline", db.url()).await;
        let (mut kck, mut bare) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                kck.push(kck_round(&cache, &mut workers).await);
                bare.push(baseline_round(&store, &mut baselines).await);
            } else {
                bare.push(baseline_round(&store, &mut baselines).await);
                kck.push(kck_round(&cache, &mut workers).await);
            }
        }
        stop(workers).await;
        stop(baselines).await;
        let (kck, bare) = (median(kck), median(bare));

        let mut latencies = propagation(db.url(), &cache).await;
        latencies.sort();
        let p50 = percentile(&latencies, 0.5);
        let p99 = percentile(&latencies, 0.99);

        let body = [
            format!(
                "PostgreSQL on this machine (a throwaway cluster unless `KCK_TEST_DATABASE_URL` is set, on 127.0.0.1). Throughput: {JOBS} jobs per round, {PROCESSES} processes x {CONCURRENCY} concurrent jobs, median of {ROUNDS} rounds after one that creates the entries ({created:.0} refreshes/s). Propagation: {PROPAGATIONS} writes, one at a time."
            ),
            String::new(),
            "| measure | kck | baseline | ratio | goal |".to_owned(),
            "|---|---:|---:|---:|---|".to_owned(),
            format!(
                "| refreshes/s of a trivial primer by 2 worker processes, vs a bare `DELETE .. WHERE id = (SELECT .. FOR UPDATE SKIP LOCKED LIMIT 1)` loop in the same 2 processes | {kck:.0} | {bare:.0} | **{:.2}** | ratio >= 0.5 and >= 5000/s |",
                kck / bare
            ),
            format!(
                "| propagation: a write here until its dependent's recompute finishes in a worker process, p50 | **{:.2} ms** | | | <= 10 ms |",
                p50.as_secs_f64() * 1e3
            ),
            format!(
                "| propagation, p99 | **{:.2} ms** | | | <= 50 ms |",
                p99.as_secs_f64() * 1e3
            ),
        ]
        .join("\n");
        println!("{body}");
        match common::record("refresh", "cargo bench -p kck-benches --bench refresh", &body) {
            Ok(path) => println!("\nwritten to {}", path.display()),
            Err(error) => eprintln!("\ncould not update BENCHMARKS.md: {error}"),
        }
    });
}
