//! The pipeline end to end: new sales followed from the fleet's feed reach
//! the store and chain reports in place, and the reports then equal a full
//! recount of the fleet's sales; in memory, and on PostgreSQL with the
//! refreshing done by worker processes.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use kck_core::Cache;
use kck_testing::EventRecorder;
use kck_testing::postgres::TestDatabase;
use registers::{
    Fleet, FleetApi, Followed, Report, STORES, chain_report, follow_sales, last_sale, registers_of,
    store_report, top_products,
};

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("a date")
}

/// The fleet's sales of `store`, recounted.
fn recount_store(fleet: &Fleet, store: u32) -> Report {
    let mut report = Report::default();
    let all = fleet.sales();
    for sale in all
        .iter()
        .filter(|sale| registers_of(store).any(|r| r == sale.register))
    {
        report.add(sale);
    }
    report
}

/// Warms the reports up, rings up `new` sales, and follows them.
async fn follow(cache: &Cache, fleet: &Fleet, api: &FleetApi, new: usize) -> Followed {
    let warm = chain_report(cache, day()).await.expect("warmed up");
    assert_eq!(*warm, fleet.recount());
    let from = last_sale(api).await.expect("the feed answers");
    for _ in 0..new {
        fleet.ring_up();
    }
    let followed = Followed::default();
    // Already stopped: the feed is read once, to its end.
    let stop = AtomicBool::new(true);
    follow_sales(cache, api, day(), from, Duration::ZERO, &stop, &followed)
        .await
        .expect("followed");
    assert_eq!(followed.sales.load(Ordering::SeqCst), new as u64);
    followed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_new_sales_reach_the_reports_in_place() {
    let fleet = Fleet::new(day(), 50, Duration::ZERO);
    let api = FleetApi::new(fleet.serve().await.expect("served"));
    let events = EventRecorder::default();
    let cache = Cache::builder()
        .state(api.clone())
        .on_event(events.listener())
        .build()
        .expect("valid primers");

    let followed = follow(&cache, &fleet, &api, 40).await;
    cache.wait_idle().await;

    assert_eq!(
        followed.applied.load(Ordering::SeqCst),
        40,
        "every sale applied in place"
    );
    assert_eq!(
        *chain_report(&cache, day()).await.expect("read"),
        fleet.recount()
    );
    for store in 1..=STORES {
        let report = store_report(&cache, store, day()).await.expect("read");
        assert_eq!(*report, recount_store(&fleet, store), "store {store}");
    }
    let chain = chain_report::key(day());
    // Two jobs of one report that run out of order (the later deltas
    // first) fall back to a recount; the sales are applied in place
    // otherwise.
    let recounts = events.count(chain.key(), "computed");
    let augments = events.count(chain.key(), "augmented");
    assert!(augments >= 1, "the chain's report was augmented");
    assert!(
        recounts <= 4,
        "the chain's report was recounted {recounts} times for 40 sales"
    );
    let top = top_products(&cache, day()).await.expect("read");
    assert_eq!(top.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_worker_processes_bring_the_reports_up_to_date() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let fleet = Fleet::new(day(), 50, Duration::ZERO);
    let address = fleet.serve().await.expect("served");
    let api = FleetApi::new(address);
    let store = kck_diesel::PgStore::connect(db.url())
        .await
        .expect("connects");
    let cache = Cache::builder()
        .store(store)
        .state(api.clone())
        .local_worker(false)
        .build()
        .expect("valid primers");
    let workers: Vec<tokio::process::Child> = (0..2)
        .map(|_| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_registers"))
                .arg("worker")
                .env("KCK_DATABASE_URL", db.url())
                .env("REGISTERS_FLEET", address.to_string())
                .stdin(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("a worker process")
        })
        .collect();

    follow(&cache, &fleet, &api, 40).await;

    // The reports are brought up to date by the worker processes.
    let expected = fleet.recount();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = chain_report(&cache, day()).await.expect("read");
        if *report == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the chain's report never caught up: {} of {} sales",
            report.all.sales,
            expected.all.sales
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for store in 1..=STORES {
        let report = store_report(&cache, store, day()).await.expect("read");
        assert_eq!(*report, recount_store(&fleet, store), "store {store}");
    }
    drop(workers);
}
