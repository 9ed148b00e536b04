//! The quickstart's primers: sales imported from a (fake, slow) fleet of
//! cash registers, and a store's daily report derived from them.
//!
//! Run it with `cargo run -p quickstart`; its tests, in `tests/`, show how
//! to test a primer against stubbed dependencies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use kck_core::{Ctx, primer};
use serde::{Deserialize, Serialize};

/// One sale, as the register fleet reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sale {
    /// The product sold.
    pub product: String,
    /// The price, in cents.
    pub cents: u64,
}

/// A store's daily report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreReport {
    /// Sales counted.
    pub sales: usize,
    /// Revenue, in cents.
    pub revenue_cents: u64,
    /// The best-selling product, by revenue.
    pub top_product: Option<String>,
}

/// The fleet API is down.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the register fleet API is unavailable")]
pub struct FleetDown;

/// A stand-in for the remote register fleet: every call takes `latency`.
/// Primers find it in the cache's state, as an `Arc<Fleet>`.
#[derive(Debug, Default)]
pub struct Fleet {
    sales: Mutex<HashMap<(u32, NaiveDate), Vec<Sale>>>,
    latency: Duration,
}

impl Fleet {
    /// A fleet whose API answers after `latency`.
    pub fn new(latency: Duration) -> Self {
        Fleet {
            sales: Mutex::default(),
            latency,
        }
    }

    /// A sale happens at a register.
    pub fn record(&self, register: u32, day: NaiveDate, product: &str, cents: u64) {
        let mut sales = self.sales.lock().unwrap_or_else(|e| e.into_inner());
        sales.entry((register, day)).or_default().push(Sale {
            product: product.to_owned(),
            cents,
        });
    }

    /// The slow remote call.
    pub async fn sales(&self, register: u32, day: NaiveDate) -> Result<Vec<Sale>, FleetDown> {
        tokio::time::sleep(self.latency).await;
        let sales = self.sales.lock().map_err(|_| FleetDown)?;
        Ok(sales.get(&(register, day)).cloned().unwrap_or_default())
    }
}

/// The registers of a store: store 7 has registers 70, 71 and 72.
pub fn registers_of(store: u32) -> impl Iterator<Item = u32> {
    (0..3).map(move |i| store * 10 + i)
}

/// Raw sales of one register for one day, imported from the fleet API.
/// Refreshed every five minutes; stale after thirty seconds.
#[primer(
    key = "register_sales/{register}/{day}",
    refresh = "5m",
    stale_after = "30s"
)]
pub async fn register_sales(
    ctx: &Ctx,
    register: u32,
    day: NaiveDate,
) -> Result<Vec<Sale>, FleetDown> {
    let fleet = ctx.state::<Arc<Fleet>>().ok_or(FleetDown)?;
    fleet.sales(register, day).await
}

/// A store's daily report, derived from its registers' sales. Recomputed in
/// the background as soon as one of them changes.
#[primer(key = "store_report/{store}/{day}", depends_on = [register_sales])]
pub async fn store_report(
    ctx: &Ctx,
    store: u32,
    day: NaiveDate,
) -> Result<StoreReport, kck_core::Error> {
    let mut revenue_by_product: HashMap<String, u64> = HashMap::new();
    let mut report = StoreReport::default();
    for register in registers_of(store) {
        for sale in register_sales(ctx, register, day).await?.iter() {
            report.sales += 1;
            report.revenue_cents += sale.cents;
            *revenue_by_product.entry(sale.product.clone()).or_default() += sale.cents;
        }
    }
    report.top_product = revenue_by_product
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(product, _)| product);
    Ok(report)
}
