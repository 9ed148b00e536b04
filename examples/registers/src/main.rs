//! The cash-register pipeline as the service our users write:
//! `cargo run -p registers`.
//!
//! Starts a simulated fleet of cash registers behind its HTTP API, serves
//! the chain's reports through kck over HTTP (`/chain/report`,
//! `/stores/{store}/report`, `/top`) with kck's admin page at `/kck`,
//! warms the reports up, then follows new sales for a while, augmenting the
//! reports in place, and prints a live summary. At the end, it checks the
//! chain's report against a full recount of the fleet's sales.
//!
//! `--seconds N` (how long to follow new sales; default 15), `--rate N`
//! (new sales per second; default 40), `--addr ADDR` (where to serve;
//! default a free port on 127.0.0.1), `--serve` (keep serving after the
//! run, until Ctrl-C). With `KCK_DATABASE_URL` set, the cache lives in
//! PostgreSQL and two worker processes (this program, as
//! `registers worker`) do the refreshing. kck's commands are this
//! program's too: `registers status`, `registers explain chain_report/2026-11-26`,
//! `registers --help`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use clap::Parser;
use kck_core::event::{Event, EventKind};
use kck_core::{Cache, CacheBuilder};
use registers::{
    Fleet, FleetApi, Followed, REGISTERS_PER_STORE, STORES, chain_report, dollars, follow_sales,
    last_sale, register_status, registers, thousands, top_products,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the cache did, counted from its events.
#[derive(Default)]
struct Stats {
    imports: AtomicU64,
    reports: AtomicU64,
    augmented: AtomicU64,
    drift: AtomicU64,
}

impl Stats {
    fn listen(self: &Arc<Self>, builder: CacheBuilder) -> CacheBuilder {
        let stats = self.clone();
        builder.on_event(move |event: &Event| {
            let primer = event.key.primer();
            let counter = match (&event.kind, primer) {
                (EventKind::Computed { .. }, "register_sales") => &stats.imports,
                (EventKind::Computed { .. }, "store_report" | "chain_report") => &stats.reports,
                (EventKind::Augmented { changed: true, .. }, _) => &stats.augmented,
                (EventKind::Drift { .. }, _) => &stats.drift,
                _ => return,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        })
    }
}

/// The pipeline's options, kck's options, and kck's commands.
#[derive(Parser)]
#[command(
    name = "registers",
    about = "The cash-register pipeline, served over HTTP by kck; with a command, kck's command line on its primers."
)]
struct Args {
    #[command(flatten)]
    kck: kck_cli::Options,
    #[command(flatten)]
    run: RunArgs,
    /// Without a command: run the pipeline
    #[command(subcommand)]
    command: Option<kck_cli::Command>,
}

/// The pipeline's options.
#[derive(clap::Args)]
struct RunArgs {
    /// How long to follow new sales, in seconds
    #[arg(long, default_value_t = 15, value_name = "N")]
    seconds: u64,
    /// New sales a second
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    rate: u64,
    /// Where to serve the reports and kck's admin page (without tokens in
    /// KCK_ADMIN_TOKENS, a loopback address only)
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    addr: SocketAddr,
    /// Keep serving after the run, until Ctrl-C
    #[arg(long)]
    serve: bool,
}

/// The environment variable that tells `registers worker` where the fleet is.
const FLEET_ENV: &str = "REGISTERS_FLEET";

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(command) = args.command {
        // kck's commands, on this program's primers; the fleet, for those
        // that compute, from REGISTERS_FLEET (set for the worker processes
        // the pipeline starts).
        let mut builder = Cache::builder();
        if let Some(address) = std::env::var(FLEET_ENV).ok().and_then(|a| a.parse().ok()) {
            builder = builder.state(FleetApi::new(address));
        }
        return kck_cli::execute(&args.kck, command, builder).await;
    }
    match pipeline(&args.kck, &args.run).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn pipeline(kck: &kck_cli::Options, options: &RunArgs) -> Result<(), BoxError> {
    let day = NaiveDate::from_ymd_opt(2026, 11, 26).ok_or("invalid date")?;
    let fleet = Fleet::new(day, 2_000, Duration::from_millis(40));
    let address = fleet.serve().await?;
    let api = FleetApi::new(address);
    let stats = Arc::new(Stats::default());

    let registers_count = registers().count();
    let mut builder = stats.listen(Cache::builder().state(api.clone()));
    let mut workers = Vec::new();
    match database_url(kck)? {
        Some(url) => {
            println!(
                "kck cash-register pipeline: {STORES} stores x {REGISTERS_PER_STORE} registers, on PostgreSQL, with 2 worker processes"
            );
            builder = builder
                .store(kck_diesel::PgStore::connect(&url).await?)
                .local_worker(false);
            for _ in 0..2 {
                workers.push(
                    // kck's `worker` command, on this program's primers.
                    tokio::process::Command::new(std::env::current_exe()?)
                        .args(["worker", "--no-scheduler"])
                        .env("KCK_DATABASE_URL", &url)
                        .env(FLEET_ENV, address.to_string())
                        .stdout(Stdio::null())
                        .kill_on_drop(true)
                        .spawn()?,
                );
            }
        }
        None => println!(
            "kck cash-register pipeline: {STORES} stores x {REGISTERS_PER_STORE} registers, in memory (set KCK_DATABASE_URL for PostgreSQL)"
        ),
    }
    // Before the cache is built: it registers its metrics then.
    kck_admin::install_metrics()?;
    let cache = builder.metrics().build()?;
    let server = serve(&cache, &api, day, options.addr).await?;
    if !workers.is_empty() {
        // Each run simulates a new fleet: forget what an earlier run cached.
        forget(&cache, day).await?;
    }
    println!(
        "fleet service on http://{address}: {} sales so far; {} new sales a second\n",
        thousands(fleet.count()),
        options.rate
    );

    // Warm up: the chain's report reads every store's, which read every
    // register's sales from the (slow) fleet service.
    let started = Instant::now();
    let warm = tokio::spawn({
        let cache = cache.clone();
        async move { chain_report(&cache, day).await }
    });
    while !warm.is_finished() {
        let imported = stats
            .imports
            .load(Ordering::Relaxed)
            .min(registers_count as u64);
        print!("\rwarming up: {imported}/{registers_count} registers imported");
        std::io::stdout().flush()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = warm.await??;
    println!(
        "\rwarmed up in {:.1} s: {registers_count}/{registers_count} registers imported, {} sales, {}\n",
        started.elapsed().as_secs_f64(),
        thousands(report.all.sales),
        dollars(report.all.cents)
    );

    // New sales: rung up by the fleet, followed by the feed, applied in
    // place.
    let stop = Arc::new(AtomicBool::new(false));
    let followed = Arc::new(Followed::default());
    let from = last_sale(&api).await?;
    let ringing = tokio::spawn({
        let (fleet, stop) = (fleet.clone(), stop.clone());
        let every = Duration::from_micros(1_000_000 / options.rate);
        async move {
            while !stop.load(Ordering::SeqCst) {
                fleet.ring_up();
                tokio::time::sleep(every).await;
            }
        }
    });
    let following = tokio::spawn({
        let (cache, api, stop, followed) =
            (cache.clone(), api.clone(), stop.clone(), followed.clone());
        async move {
            follow_sales(
                &cache,
                &api,
                day,
                from,
                Duration::from_millis(100),
                &stop,
                &followed,
            )
            .await
        }
    });

    if !workers.is_empty() {
        println!(
            "(augments and recomputes counted in this process; the worker processes do the reports')"
        );
    }
    println!(
        "  time      sales        takings   best sellers                                   augmented  recomputed"
    );
    let reports_before = stats.reports.load(Ordering::Relaxed);
    for second in 1..=options.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = chain_report(&cache, day).await?;
        let top = top_products(&cache, day).await?;
        let best: Vec<String> = top
            .iter()
            .take(3)
            .map(|(product, cents)| format!("{product} {}", dollars(*cents)))
            .collect();
        println!(
            "{second:>5}s {:>10} {:>14}   {:<46} {:>9} {:>11}",
            thousands(report.all.sales),
            dollars(report.all.cents),
            best.join(", "),
            stats.augmented.load(Ordering::Relaxed),
            stats.reports.load(Ordering::Relaxed) - reports_before,
        );
    }

    stop.store(true, Ordering::SeqCst);
    ringing.await?;
    following.await??;
    let expected = fleet.recount();
    let settle = Instant::now();
    let mut report = chain_report(&cache, day).await?;
    while *report != expected && settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = chain_report(&cache, day).await?;
    }
    let status = register_status(&cache, 11).await?;
    println!(
        "\nfollowed {} new sales: {} applied in place, {} by a new import",
        thousands(followed.sales.load(Ordering::Relaxed)),
        thousands(followed.applied.load(Ordering::Relaxed)),
        thousands(followed.recomputed.load(Ordering::Relaxed)),
    );
    println!(
        "register 11, live (on demand): {} sales today, last: {}",
        thousands(status.sales),
        status
            .last_sale
            .as_ref()
            .map_or("none".to_owned(), |sale| format!(
                "{} {}",
                sale.product,
                dollars(sale.cents)
            ))
    );
    let consistent = *report == expected;
    println!(
        "the chain's report {} a full recount of the fleet's {} sales ({}); drift detected: {}",
        if consistent { "equals" } else { "DIFFERS FROM" },
        thousands(expected.all.sales),
        dollars(expected.all.cents),
        stats.drift.load(Ordering::Relaxed),
    );
    if options.serve {
        println!(
            "\nstill serving on http://{}/chain/report and http://{}/kck ; Ctrl-C to stop",
            server.addr, server.addr
        );
        tokio::select! {
            served = server.task => served??,
            signal = tokio::signal::ctrl_c() => signal?,
        }
    }
    stop_workers(workers).await;
    if consistent {
        Ok(())
    } else {
        Err("the chain's report does not match the fleet".into())
    }
}

/// Serves the reports and kck's admin page on `addr`: kck's API with the
/// tokens of `KCK_ADMIN_TOKENS` if any, else without auth (loopback only).
async fn serve(
    cache: &Cache,
    api: &FleetApi,
    day: NaiveDate,
    addr: SocketAddr,
) -> Result<registers::service::Serving, BoxError> {
    let mut config = kck_admin::AdminConfig::from_env()?;
    if !config.has_tokens() {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "refusing to serve kck's admin without auth on {addr}: set KCK_ADMIN_TOKENS or serve on 127.0.0.1"
            )
            .into());
        }
        config = config.insecure_no_auth();
    }
    let auth = if config.is_insecure() {
        "no auth: set KCK_ADMIN_TOKENS for tokens"
    } else {
        "bearer tokens of KCK_ADMIN_TOKENS"
    };
    let serving = registers::service::spawn(cache.clone(), api.clone(), day, config, addr).await?;
    let addr = serving.addr;
    println!("reports on http://{addr}/chain/report, /stores/{{1..{STORES}}}/report, /top");
    println!("kck admin page on http://{addr}/kck ({auth})");
    Ok(serving)
}

/// Stops the worker processes as a deploy would: SIGTERM (their running
/// jobs finish), then waits for them.
async fn stop_workers(workers: Vec<tokio::process::Child>) {
    for mut worker in workers {
        if let Some(pid) = worker.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(40), worker.wait())
            .await
            .is_err()
        {
            let _ = worker.kill().await;
        }
    }
}

/// The PostgreSQL URL of `--database-url`, `KCK_DATABASE_URL` or
/// `DATABASE_URL`; `None` for memory.
fn database_url(kck: &kck_cli::Options) -> Result<Option<String>, BoxError> {
    if kck.memory {
        return Ok(None);
    }
    if let Some(url) = &kck.database_url {
        return Ok(Some(url.clone()));
    }
    for var in ["KCK_DATABASE_URL", "DATABASE_URL"] {
        if let Ok(url) = std::env::var(var)
            && !url.is_empty()
        {
            return Ok(Some(url));
        }
    }
    Ok(None)
}

/// Removes the pipeline's products of `day`.
async fn forget(cache: &Cache, day: NaiveDate) -> Result<(), kck_core::Error> {
    for register in registers() {
        cache
            .remove(&registers::register_sales::key(register, day))
            .await?;
    }
    for store in 1..=STORES {
        cache
            .remove(&registers::store_report::key(store, day))
            .await?;
    }
    cache.remove(&chain_report::key(day)).await?;
    cache.remove(&top_products::key(day)).await?;
    Ok(())
}
