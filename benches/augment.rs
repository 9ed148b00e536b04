//! Augment versus full recompute, in one run: a daily report over
//! 1,000,000 sales (totals, per store, per product), recomputed in full
//! with `Cache::refresh`, and brought up to date one sale at a time with
//! `Cache::augment`, on the memory store.
//!
//! Run: `cargo bench -p kck-benches --bench augment`. The results are
//! printed and written to `BENCHMARKS.md`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kck_core::augment::{Augment, Augmented};
use kck_core::{Cache, Ctx, primer};
use serde::{Deserialize, Serialize};

mod common;
mod report;

const SALES: usize = 1_000_000;
const STORES: u32 = 20;
const PRODUCTS: u32 = 100;
/// Full recomputes timed (the median is kept).
const RECOMPUTES: usize = 7;
/// Augments timed (their mean is kept).
const AUGMENTS: usize = 2_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sale {
    store: u32,
    product: String,
    cents: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Totals {
    units: u64,
    cents: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DailyReport {
    all: Totals,
    by_store: BTreeMap<u32, Totals>,
    by_product: BTreeMap<String, Totals>,
}

impl DailyReport {
    fn add(&mut self, sale: &Sale) {
        for totals in [&mut self.all, self.by_store.entry(sale.store).or_default()] {
            totals.units += 1;
            totals.cents += sale.cents;
        }
        let product = match self.by_product.get_mut(&sale.product) {
            Some(product) => product,
            None => self.by_product.entry(sale.product.clone()).or_default(),
        };
        product.units += 1;
        product.cents += sale.cents;
    }
}

/// The day's sales: the source a full computation reads.
struct Day(Vec<Sale>);

/// The report, computed in full from every sale of the day.
#[primer(key = "daily_report", augment)]
async fn daily_report(ctx: &Ctx) -> Result<DailyReport, Infallible> {
    let day = ctx.state::<Arc<Day>>().expect("the cache holds the day");
    let mut report = DailyReport::default();
    for sale in &day.0 {
        report.add(sale);
    }
    Ok(report)
}

impl Augment for daily_report {
    type Delta = Sale;

    fn augment(report: &DailyReport, sale: &Sale) -> Option<DailyReport> {
        let mut report = report.clone();
        report.add(sale);
        Some(report)
    }
}

/// A deterministic sale.
fn sale(n: u64) -> Sale {
    let mixed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Sale {
        store: (mixed % u64::from(STORES)) as u32,
        product: format!("product-{:03}", (mixed >> 20) % u64::from(PRODUCTS)),
        cents: 50 + (mixed >> 40) % 5_000,
    }
}

fn main() {
    common::runtime().block_on(async {
        let day = Arc::new(Day((0..SALES as u64).map(sale).collect()));
        let cache = Cache::builder()
            .state(day)
            .local_worker(false)
            .local_scheduler(false)
            .build()
            .expect("valid primers");
        let key = daily_report::key();
        let first = daily_report(&cache).await.expect("computed");
        assert_eq!(first.all.units, SALES as u64);

        let mut recomputes: Vec<Duration> = (0..RECOMPUTES)
            .map(|_| Duration::ZERO)
            .collect();
        for slot in &mut recomputes {
            let started = Instant::now();
            black_box(cache.refresh(&key).await.expect("recomputed"));
            *slot = started.elapsed();
        }
        recomputes.sort();
        let recompute = recomputes[RECOMPUTES / 2];

        let started = Instant::now();
        for n in 0..AUGMENTS as u64 {
            let outcome = cache
                .augment(&key, &sale(SALES as u64 + n))
                .await
                .expect("augmented");
            assert!(matches!(outcome, Augmented::Applied { changed: true, .. }));
        }
        let augment = started.elapsed() / AUGMENTS as u32;
        let report = cache.peek(&key).await.expect("peeked").expect("cached");
        assert_eq!(
            report.all.units,
            (SALES + AUGMENTS) as u64,
            "every sale is counted once"
        );

        let ratio = recompute.as_secs_f64() / augment.as_secs_f64();
        let body = [
            format!(
                "A daily report over {SALES} sales ({STORES} stores, {PRODUCTS} products: totals, per store, per product), on the memory store. Full recompute: `Cache::refresh`, median of {RECOMPUTES}. Augment: `Cache::augment` with one new sale, mean of {AUGMENTS} in a row."
            ),
            String::new(),
            "| measure | time | goal |".to_owned(),
            "|---|---:|---|".to_owned(),
            format!(
                "| full recompute | {:.2} ms | |",
                recompute.as_secs_f64() * 1e3
            ),
            format!(
                "| augment with one sale | {:.1} µs | |",
                augment.as_secs_f64() * 1e6
            ),
            format!("| recompute / augment | **{ratio:.0}x** | >= 1000x |"),
        ]
        .join("\n");
        println!("{body}");
        match common::record("augment", "cargo bench -p kck-benches --bench augment", &body) {
            Ok(path) => println!("\nwritten to {}", path.display()),
            Err(error) => eprintln!("\ncould not update BENCHMARKS.md: {error}"),
        }
    });
}
