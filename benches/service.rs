//! The registers example as a service under load, on loopback: requests a
//! second and p50/p99 latency of `GET /chain/report` served through kck
//! (warm) against the same service's `GET /chain/report/direct`, which
//! counts the report from the fleet on every request (the baseline), while
//! new sales arrive and are applied to the cached reports in place.
//!
//! Two set-ups: one server process with its cache in memory; two server
//! processes (this program, run again as servers) sharing a throwaway
//! PostgreSQL database, the requests spread over both, the new sales
//! followed by a third cache on the same database.
//!
//! Bounded in count and time: each measurement is `CLIENTS` concurrent
//! clients, stopped after `REQUESTS` requests or `SECONDS` seconds,
//! whichever comes first.
//!
//! Run: `cargo bench -p kck-benches --bench service`. The results are
//! printed and written to `BENCHMARKS.md`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use kck_admin::AdminConfig;
use kck_core::Cache;
use kck_testing::postgres::TestDatabase;
use registers::{Fleet, FleetApi, Followed, chain_report, follow_sales, last_sale};
use tokio::io::AsyncBufReadExt;

mod report;

const CLIENTS: usize = 16;
const REQUESTS: usize = 20_000;
const SECONDS: u64 = 10;
/// Sales a register holds at the start.
const SALES_PER_REGISTER: usize = 2_000;
/// The fleet's latency on every answer: a remote API's.
const FLEET_LATENCY: Duration = Duration::from_millis(5);
/// New sales a second while the load runs.
const NEW_SALES: u64 = 200;
/// Tells this program to run as one of the two server processes.
const SERVE_ENV: &str = "KCK_BENCH_SERVICE_SERVE";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("a date")
}

/// Serves the registers service on a free loopback port.
async fn serve(cache: Cache, api: FleetApi) -> SocketAddr {
    let admin = AdminConfig::new().insecure_no_auth();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    registers::service::spawn(cache, api, day(), admin, loopback)
        .await
        .expect("the service serves")
        .addr
}

/// A measurement: requests a second, p50, p99.
struct Load {
    requests: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// `CLIENTS` clients sending `GET path` to `servers` in turn until
/// `REQUESTS` requests or `SECONDS` seconds.
async fn load(servers: &[SocketAddr], path: &str) -> Load {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("a client");
    let urls: Arc<Vec<String>> = Arc::new(
        servers
            .iter()
            .map(|addr| format!("http://{addr}{path}"))
            .collect(),
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, urls, sent) = (client.clone(), urls.clone(), sent.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    if n >= REQUESTS || Instant::now() >= deadline {
                        return latencies;
                    }
                    let url = &urls[n % urls.len()];
                    let at = Instant::now();
                    let response = client.get(url).send().await.expect("answered");
                    assert!(
                        response.status().is_success(),
                        "{url}: {}",
                        response.status()
                    );
                    let body = response.bytes().await.expect("a body");
                    assert!(!body.is_empty());
                    latencies.push(at.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.expect("a client"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Load {
        requests: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Rings up `NEW_SALES` sales a second and follows them into `cache`
/// until `stop`.
fn new_sales(
    fleet: &Arc<Fleet>,
    cache: &Cache,
    api: &FleetApi,
    from: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ringing = tokio::spawn({
        let (fleet, stop) = (fleet.clone(), stop.clone());
        async move {
            let every = Duration::from_micros(1_000_000 / NEW_SALES);
            while !stop.load(Ordering::SeqCst) {
                fleet.ring_up();
                tokio::time::sleep(every).await;
            }
        }
    });
    let following = tokio::spawn({
        let (cache, api, stop) = (cache.clone(), api.clone(), stop.clone());
        async move {
            let followed = Followed::default();
            follow_sales(
                &cache,
                &api,
                day(),
                from,
                Duration::from_millis(50),
                &stop,
                &followed,
            )
            .await
            .expect("followed");
        }
    });
    vec![ringing, following]
}

/// Both paths, while new sales arrive; one row each.
async fn measure(
    setup: &str,
    servers: &[SocketAddr],
    fleet: &Arc<Fleet>,
    follower: &Cache,
    api: &FleetApi,
) -> Vec<String> {
    let from = last_sale(api).await.expect("the feed");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = new_sales(fleet, follower, api, from, &stop);
    let kck = load(servers, "/chain/report").await;
    let direct = load(servers, "/chain/report/direct").await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("stopped");
    }
    let ratio = kck.per_second / direct.per_second;
    let row = |name: &str, load: &Load| {
        format!(
            "| {setup} | {name} | {} | {:.0} | {:.2} | {:.2} |",
            load.requests,
            load.per_second,
            load.p50.as_secs_f64() * 1000.0,
            load.p99.as_secs_f64() * 1000.0
        )
    };
    let rows = vec![
        row("`/chain/report` through kck (warm)", &kck),
        row(
            "`/chain/report/direct`, counted from the fleet (baseline)",
            &direct,
        ),
    ];
    println!("{setup}: kck {ratio:.0}x the baseline's requests/s");
    for row in &rows {
        println!("{row}");
    }
    rows
}

/// One of the two server processes: the service on `KCK_DATABASE_URL`,
/// the fleet at `REGISTERS_FLEET`; prints its address, serves until its
/// standard input closes.
async fn server_process() {
    let url = std::env::var("KCK_DATABASE_URL").expect("a database");
    let fleet: SocketAddr = std::env::var("REGISTERS_FLEET")
        .expect("a fleet")
        .parse()
        .expect("an address");
    let api = FleetApi::new(fleet);
    let cache = Cache::builder()
        .store(kck_diesel::PgStore::connect(&url).await.expect("connects"))
        .state(api.clone())
        .build()
        .expect("a cache");
    let addr = serve(cache, api).await;
    println!("{addr}");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {}
}

/// Starts a server process; returns it and its address.
async fn start_server(url: &str, fleet: SocketAddr) -> (tokio::process::Child, SocketAddr) {
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("this program"))
        .env(SERVE_ENV, "1")
        .env("KCK_DATABASE_URL", url)
        .env("REGISTERS_FLEET", fleet.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("a server process");
    let stdout = child.stdout.take().expect("piped");
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("readable")
        .expect("its address");
    (child, line.parse().expect("an address"))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if std::env::var_os(SERVE_ENV).is_some() {
        runtime.block_on(server_process());
        return;
    }
    runtime.block_on(async {
        let mut rows = Vec::new();

        // One process, its cache in memory.
        let fleet = Fleet::new(day(), SALES_PER_REGISTER, FLEET_LATENCY);
        let api = FleetApi::new(fleet.serve().await.expect("the fleet serves"));
        let cache = Cache::builder().state(api.clone()).build().expect("a cache");
        chain_report(&cache, day()).await.expect("warmed up");
        let server = serve(cache.clone(), api.clone()).await;
        rows.extend(measure("1 process, memory", &[server], &fleet, &cache, &api).await);

        // Two processes on one PostgreSQL database.
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let fleet = Fleet::new(day(), SALES_PER_REGISTER, FLEET_LATENCY);
        let address = fleet.serve().await.expect("the fleet serves");
        let api = FleetApi::new(address);
        let follower = Cache::builder()
            .store(database.connect().await)
            .state(api.clone())
            .build()
            .expect("a cache");
        chain_report(&follower, day()).await.expect("warmed up");
        let (first, a) = start_server(database.url(), address).await;
        let (second, b) = start_server(database.url(), address).await;
        rows.extend(measure("2 processes, PostgreSQL", &[a, b], &fleet, &follower, &api).await);
        drop((first, second));

        let body = format!(
            "The registers service (`examples/registers`, `registers::service::router`) on loopback: {} registers of {SALES_PER_REGISTER} sales each at the start, a fleet that answers in {} ms, {NEW_SALES} new sales a second followed into the cache (augmenting the reports in place) while the load runs. {CLIENTS} concurrent clients (reqwest, kept-alive connections), each measurement stopped at {REQUESTS} requests or {SECONDS} s. The baseline is the same service's handler that counts the chain's report from the fleet on every request (one fleet request per register). With two processes, the requests alternate between them; a third cache on the same database follows the new sales, and the servers learn of the changes through PostgreSQL. Client, servers, fleet and database share this machine's cores.\n\n| set-up | path | requests | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n{}",
            registers::registers().count(),
            FLEET_LATENCY.as_millis(),
            rows.join("\n")
        );
        let path = report::record(
            "service",
            "cargo bench -p kck-benches --bench service",
            &body,
        )
        .expect("BENCHMARKS.md is writable");
        println!("recorded in {}", path.display());
    });
}
