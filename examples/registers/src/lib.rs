//! The cash-register pipeline, kck's main example: the daily reports of a
//! chain of stores, kept fresh from a fleet of cash registers.
//!
//! The registers are a remote source, served over HTTP ([`fleet`]). Primers
//! build on it:
//!
//! - [`register_sales`](fn@register_sales): one register's sales of the day, imported from the
//!   fleet every few seconds (`refresh = "5s"`);
//! - [`store_report`](fn@store_report) and [`chain_report`](fn@chain_report): totals per product, derived
//!   (`depends_on`);
//! - [`top_products`](fn@top_products): the chain's best sellers, derived from its report;
//! - [`register_status`](fn@register_status): a register's live status, fetched on every
//!   request (`on_demand`).
//!
//! New sales do not wait for the next import: [`follow_sales`] reads the
//! fleet's feed and *augments* each register's sales with them, and the
//! reports are augmented in turn ([`AugmentFrom`]), instead of being
//! recounted from every sale of the day. A full recompute now and then
//! (`verify_every`) checks that nothing drifted.
//!
//! Run it with `cargo run -p registers`, or on PostgreSQL, with workers in
//! processes of their own, with `KCK_DATABASE_URL` set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::NaiveDate;
use kck_core::augment::{Augment, AugmentFrom, Augmented};
use kck_core::{Cache, Ctx, primer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod fleet;
pub mod service;

pub use fleet::{Fleet, RegisterStatus};

/// The stores of the chain.
pub const STORES: u32 = 4;
/// Registers per store; register `10 * store + n`, `n` from 1.
pub const REGISTERS_PER_STORE: u32 = 3;

/// The registers of `store`.
pub fn registers_of(store: u32) -> impl Iterator<Item = u32> {
    (1..=REGISTERS_PER_STORE).map(move |n| store * 10 + n)
}

/// Every register of the chain.
pub fn registers() -> impl Iterator<Item = u32> {
    (1..=STORES).flat_map(registers_of)
}

/// One sale, as the fleet reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    /// Its number in the fleet's feed, from 1.
    pub seq: u64,
    /// The register that rang it up.
    pub register: u32,
    /// The product sold.
    pub product: String,
    /// Its price, in cents.
    pub cents: u64,
}

/// Sales and revenue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Sales counted.
    pub sales: u64,
    /// Revenue, in cents.
    pub cents: u64,
}

/// A daily report: totals, and totals per product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every sale.
    pub all: Totals,
    /// Per product.
    pub by_product: BTreeMap<String, Totals>,
}

impl Report {
    /// Counts one more sale.
    pub fn add(&mut self, sale: &Sale) {
        for totals in [
            &mut self.all,
            self.by_product.entry(sale.product.clone()).or_default(),
        ] {
            totals.sales += 1;
            totals.cents += sale.cents;
        }
    }

    /// This report, with one more sale.
    pub fn with(&self, sale: &Sale) -> Report {
        let mut report = self.clone();
        report.add(sale);
        report
    }

    /// The `n` best-selling products, by revenue, with their revenue.
    pub fn best_sellers(&self, n: usize) -> Vec<(String, u64)> {
        let mut ranked: Vec<(String, u64)> = self
            .by_product
            .iter()
            .map(|(product, totals)| (product.clone(), totals.cents))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(n);
        ranked
    }

    /// Counts another report's sales too.
    pub fn merge(&mut self, other: &Report) {
        self.all.sales += other.all.sales;
        self.all.cents += other.all.cents;
        for (product, totals) in &other.by_product {
            let mine = self.by_product.entry(product.clone()).or_default();
            mine.sales += totals.sales;
            mine.cents += totals.cents;
        }
    }
}

/// The fleet's service failed or could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the register fleet: {0}")]
pub struct FleetError(String);

/// The fleet's HTTP service, as primers reach it: in the cache's state. One
/// [`reqwest::Client`], whose connections are kept alive and shared by
/// every import.
#[derive(Debug, Clone)]
pub struct FleetApi {
    base: String,
    client: reqwest::Client,
}

impl FleetApi {
    /// The service at `address`.
    pub fn new(address: SocketAddr) -> Self {
        FleetApi {
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
        }
    }

    /// `GET path`, decoded from JSON.
    ///
    /// # Errors
    ///
    /// If the service cannot be reached, answers with another status than
    /// 200, or with a body that does not decode.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, FleetError> {
        let url = format!("{}{path}", self.base);
        let failed = |reason: String| FleetError(format!("GET {url}: {reason}"));
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|error| failed(error.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!("{status}: {body}")));
        }
        response
            .json()
            .await
            .map_err(|error| failed(format!("cannot decode the answer: {error}")))
    }
}

/// The fleet's API, from the cache's state.
fn api(ctx: &Ctx) -> Result<&FleetApi, FleetError> {
    ctx.state::<FleetApi>()
        .ok_or_else(|| FleetError("the cache was built without a FleetApi in its state".to_owned()))
}

/// One register's sales of the day, imported from the fleet.
#[primer(key = "register_sales/{register}/{day}", refresh = "5s", augment)]
pub async fn register_sales(
    ctx: &Ctx,
    register: u32,
    day: NaiveDate,
) -> Result<Vec<Sale>, FleetError> {
    api(ctx)?.get(&format!("/sales/{register}/{day}")).await
}

impl Augment for register_sales {
    type Delta = Sale;

    /// Appends a new sale; one already there (the import got it first)
    /// changes nothing.
    fn augment(sales: &Vec<Sale>, sale: &Sale) -> Option<Vec<Sale>> {
        let mut sales = sales.clone();
        // Sales are in feed order.
        let at = sales.partition_point(|known| known.seq < sale.seq);
        if sales.get(at).is_none_or(|known| known.seq != sale.seq) {
            sales.insert(at, sale.clone());
        }
        Some(sales)
    }
}

/// A store's report of the day, from its registers' sales.
#[primer(
    key = "store_report/{store}/{day}",
    depends_on = [register_sales],
    augment,
    augment_from = [register_sales],
    verify_every = "30s"
)]
pub async fn store_report(
    ctx: &Ctx,
    store: u32,
    day: NaiveDate,
) -> Result<Report, kck_core::Error> {
    let mut report = Report::default();
    for register in registers_of(store) {
        for sale in register_sales(ctx, register, day).await?.iter() {
            report.add(sale);
        }
    }
    Ok(report)
}

impl Augment for store_report {
    type Delta = Sale;

    fn augment(report: &Report, sale: &Sale) -> Option<Report> {
        Some(report.with(sale))
    }
}

impl AugmentFrom<register_sales> for store_report {
    fn map(sale: &Sale) -> Option<Sale> {
        Some(sale.clone())
    }
}

/// The chain's report of the day, from its stores' reports.
#[primer(
    key = "chain_report/{day}",
    depends_on = [store_report],
    augment,
    augment_from = [store_report]
)]
pub async fn chain_report(ctx: &Ctx, day: NaiveDate) -> Result<Report, kck_core::Error> {
    let mut report = Report::default();
    for store in 1..=STORES {
        report.merge(&*store_report(ctx, store, day).await?);
    }
    Ok(report)
}

impl Augment for chain_report {
    type Delta = Sale;

    fn augment(report: &Report, sale: &Sale) -> Option<Report> {
        Some(report.with(sale))
    }
}

impl AugmentFrom<store_report> for chain_report {
    fn map(sale: &Sale) -> Option<Sale> {
        Some(sale.clone())
    }
}

/// The chain's five best sellers of the day, by revenue.
#[primer(key = "top_products/{day}", depends_on = [chain_report])]
pub async fn top_products(
    ctx: &Ctx,
    day: NaiveDate,
) -> Result<Vec<(String, u64)>, kck_core::Error> {
    Ok(chain_report(ctx, day).await?.best_sellers(5))
}

/// A register's live status: fetched on every request.
#[primer(key = "register_status/{register}", on_demand)]
pub async fn register_status(ctx: &Ctx, register: u32) -> Result<RegisterStatus, FleetError> {
    api(ctx)?.get(&format!("/status/{register}")).await
}

/// What [`follow_sales`] did.
#[derive(Debug, Default)]
pub struct Followed {
    /// Sales read from the feed.
    pub sales: AtomicU64,
    /// Sales applied in place.
    pub applied: AtomicU64,
    /// Sales that made a register's sales be imported again instead.
    pub recomputed: AtomicU64,
}

/// Why [`follow_sales`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The feed could not be read.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// A sale could not be applied.
    #[error(transparent)]
    Cache(#[from] kck_core::Error),
}

/// Reads the fleet's feed of new sales after sale `from`, every `every`,
/// and augments each register's sales with them, until `stop` is set; then
/// reads it once more, so every sale rung up before `stop` is applied.
///
/// # Errors
///
/// The first error of the feed or of an augment.
pub async fn follow_sales(
    cache: &Cache,
    fleet: &FleetApi,
    day: NaiveDate,
    from: u64,
    every: Duration,
    stop: &AtomicBool,
    followed: &Followed,
) -> Result<(), FollowError> {
    let mut next = from;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let sales: Vec<Sale> = fleet.get(&format!("/since/{next}")).await?;
        for sale in sales {
            next = next.max(sale.seq);
            followed.sales.fetch_add(1, Ordering::Relaxed);
            let key = register_sales::key(sale.register, day);
            let counter = match cache.augment(&key, &sale).await? {
                Augmented::Recomputed => &followed.recomputed,
                _ => &followed.applied,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if stopping {
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

/// The number of the fleet's last sale: where to start following it, as
/// the imports hold every sale up to there.
///
/// # Errors
///
/// If the fleet cannot be reached.
pub async fn last_sale(fleet: &FleetApi) -> Result<u64, FleetError> {
    fleet.get("/last").await
}

/// Formats cents as dollars: `$1,234.56`.
pub fn dollars(cents: u64) -> String {
    format!("${}.{:02}", thousands(cents / 100), cents % 100)
}

/// Formats a count with thousands separators: `24,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}
