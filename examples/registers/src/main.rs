//! The cash-register pipeline: `cargo run -p registers`.
//!
//! Starts a simulated fleet of cash registers behind a local HTTP service,
//! warms the chain's daily reports up through kck, then follows the new
//! sales for a while, augmenting the reports in place, and prints a live
//! summary. At the end, it checks the chain's report against a full recount
//! of the fleet's sales.
//!
//! Options: `--seconds N` (how long to follow new sales; default 15),
//! `--rate N` (new sales per second; default 40), `--admin ADDR` (serve
//! kck's admin page and API on `ADDR`, for example `127.0.0.1:8080`, and
//! keep serving after the run until Ctrl-C; with the tokens of
//! `KCK_ADMIN_TOKENS`, or without auth on a loopback address). With
//! `KCK_DATABASE_URL` set, the cache lives in PostgreSQL and two worker
//! processes (this program, run as `registers worker`) do the refreshing.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use kck_core::event::{Event, EventKind};
use kck_core::refresh::{Scheduler, Worker};
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

struct Options {
    seconds: u64,
    rate: u64,
    admin: Option<SocketAddr>,
}

fn options() -> Result<Options, BoxError> {
    let mut options = Options {
        seconds: 15,
        rate: 40,
        admin: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u64, BoxError> {
            let text = args.next().ok_or(format!("{name} needs a number"))?;
            Ok(text
                .parse()
                .map_err(|_| format!("{name}: not a number: {text}"))?)
        };
        match arg.as_str() {
            "--seconds" => options.seconds = value("--seconds")?,
            "--rate" => options.rate = value("--rate")?.max(1),
            "--admin" => {
                let text = args.next().ok_or("--admin needs an address")?;
                options.admin = Some(
                    text.parse()
                        .map_err(|_| format!("--admin: not an address: {text}"))?,
                );
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (try --seconds N, --rate N, --admin ADDR)"
                )
                .into());
            }
        }
    }
    Ok(options)
}

fn database_url() -> Option<String> {
    std::env::var("KCK_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        return worker().await;
    }
    let options = options()?;
    let day = NaiveDate::from_ymd_opt(2026, 11, 26).ok_or("invalid date")?;
    let fleet = Fleet::new(day, 2_000, Duration::from_millis(40));
    let address = fleet.serve().await?;
    let api = FleetApi::new(address);
    let stats = Arc::new(Stats::default());

    let registers_count = registers().count();
    let mut builder = stats.listen(Cache::builder().state(api.clone()));
    let mut workers = Vec::new();
    match database_url() {
        Some(url) => {
            println!(
                "kck cash-register pipeline: {STORES} stores x {REGISTERS_PER_STORE} registers, on PostgreSQL, with 2 worker processes"
            );
            builder = builder
                .store(kck_diesel::PgStore::connect(&url).await?)
                .local_worker(false);
            for _ in 0..2 {
                workers.push(
                    tokio::process::Command::new(std::env::current_exe()?)
                        .arg("worker")
                        .env("REGISTERS_FLEET", address.to_string())
                        .stdin(Stdio::piped())
                        .kill_on_drop(true)
                        .spawn()?,
                );
            }
        }
        None => println!(
            "kck cash-register pipeline: {STORES} stores x {REGISTERS_PER_STORE} registers, in memory (set KCK_DATABASE_URL for PostgreSQL)"
        ),
    }
    if options.admin.is_some() {
        // Before the cache is built: it registers its metrics then.
        kck_admin::install_metrics()?;
        builder = builder.metrics();
    }
    let cache = builder.build()?;
    let admin = match options.admin {
        Some(addr) => Some(serve_admin(&cache, addr).await?),
        None => None,
    };
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
    if let Some(admin) = admin {
        println!(
            "\nthe admin page stays up on http://{}/ ; Ctrl-C to stop",
            admin.addr
        );
        tokio::select! {
            served = admin.task => served??,
            signal = tokio::signal::ctrl_c() => signal?,
        }
    }
    drop(workers);
    if consistent {
        Ok(())
    } else {
        Err("the chain's report does not match the fleet".into())
    }
}

/// The admin server, running.
struct Admin {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), kck_admin::ServeError>>,
}

/// Serves kck's admin page and API on `addr`: with the tokens of
/// `KCK_ADMIN_TOKENS` if any, else without auth (loopback only).
async fn serve_admin(cache: &Cache, addr: SocketAddr) -> Result<Admin, BoxError> {
    let mut config = kck_admin::AdminConfig::from_env()?;
    if !config.has_tokens() {
        config = config.insecure_no_auth();
    }
    let auth = if config.is_insecure() {
        "no auth: set KCK_ADMIN_TOKENS for tokens"
    } else {
        "bearer tokens of KCK_ADMIN_TOKENS"
    };
    let bound = kck_admin::bind(cache.clone(), config, addr).await?;
    let addr = bound.local_addr();
    println!("admin page on http://{addr}/ ({auth})");
    let task = tokio::spawn(bound.run());
    Ok(Admin { addr, task })
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

/// A worker process: refreshes whatever the pipeline's cache queues, until
/// its parent closes its standard input.
async fn worker() -> Result<(), BoxError> {
    let url = database_url().ok_or("a worker needs KCK_DATABASE_URL")?;
    let address = std::env::var("REGISTERS_FLEET")?.parse()?;
    let cache = Cache::builder()
        .store(kck_diesel::PgStore::connect(&url).await?)
        .state(FleetApi::new(address))
        .local_worker(false)
        .local_scheduler(false)
        .build()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        // Returns when the parent closes the pipe, or dies.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = stop.send(true);
    });
    let signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let worker = Worker::builder(&cache)
        .concurrency(8)
        .shutdown(signal(stopped.clone()))
        .build();
    let scheduler = Scheduler::builder(&cache).shutdown(signal(stopped)).build();
    tokio::try_join!(worker.run(), scheduler.run())?;
    Ok(())
}
