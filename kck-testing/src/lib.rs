//! Test helpers for [kck](kck_core): caches on a store of their own with a
//! mock clock and an event recorder, stubs for the primers your primer
//! under test depends on, assertions on what was computed, a look at the
//! refresh queue, and several caches ("processes") on one store.
//!
//! The chapters below go from one primer to a deployment; every example
//! is a test that runs.
//!
//! # Testing one primer
//!
//! [`TestCache::new`] is a cache on a fresh memory store, with a
//! [`MockClock`](kck_core::clock::MockClock) and no background worker or
//! scheduler: nothing happens unless the test asks. It dereferences to a
//! [`Cache`](kck_core::Cache) and is a [`Scope`](kck_core::Scope), so the
//! generated getters take it directly. The recorder behind it answers
//! "how often was this computed?".
//!
//! ```
//! use kck_core::{primer, Ctx};
//! use kck_testing::TestCache;
//!
//! #[primer(key = "greeting/{name}")]
//! async fn greeting(_ctx: &Ctx, name: String) -> Result<String, kck_core::Error> {
//!     Ok(format!("Hello, {name}!"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let test = TestCache::new();
//! assert_eq!(*greeting(&test, "Ada".into()).await.unwrap(), "Hello, Ada!");
//! assert_eq!(*greeting(&test, "Ada".into()).await.unwrap(), "Hello, Ada!");
//! test.assert_computed_once(&greeting::key("Ada".into()).into());
//! # }
//! ```
//!
//! # Testing a pipeline against stubs
//!
//! A primer that calls a remote source is *stubbed*: the cache calls the
//! stub instead, and caches what it returns like any value. Stub one key
//! ([`stub_value`](TestCacheBuilder::stub_value),
//! [`stub_error`](TestCacheBuilder::stub_error)) or every key of a primer
//! ([`stub_fn`](TestCacheBuilder::stub_fn)). A key of a stubbed primer
//! without a stub fails with a panic that names it, reported as
//! [`Error::Panicked`](kck_core::Error::Panicked): a test never reaches the
//! real source by accident.
//!
//! ```
//! use kck_core::{primer, Ctx};
//! use kck_testing::TestCache;
//!
//! #[derive(Debug, Clone, thiserror::Error)]
//! #[error("the partner API is down")]
//! struct ApiDown;
//!
//! /// Calls a remote API: never in tests.
//! #[primer(key = "exchange_rate/{currency}")]
//! async fn exchange_rate(_ctx: &Ctx, currency: String) -> Result<f64, ApiDown> {
//!     unreachable!("tests stub this primer")
//! }
//!
//! /// The primer under test.
//! #[primer(key = "price_in/{currency}/{cents}", depends_on = [exchange_rate])]
//! async fn price_in(ctx: &Ctx, currency: String, cents: u64) -> Result<u64, kck_core::Error> {
//!     let rate = exchange_rate(ctx, currency).await?;
//!     Ok((cents as f64 * *rate).round() as u64)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let test = TestCache::builder()
//!     .stub_value(exchange_rate::key("EUR".into()), 0.5)
//!     .stub_error(exchange_rate::key("XXX".into()), ApiDown)
//!     .build();
//!
//! assert_eq!(*price_in(&test, "EUR".into(), 1000).await.unwrap(), 500);
//! assert_eq!(*price_in(&test, "EUR".into(), 1000).await.unwrap(), 500);
//! test.assert_computed_once(&price_in::key("EUR".into(), 1000).into());
//! test.assert_stub_read(&exchange_rate::key("EUR".into()).into());
//!
//! let error = price_in(&test, "XXX".into(), 1000).await.unwrap_err();
//! assert!(error.to_string().contains("the partner API is down"));
//! # }
//! ```
//!
//! ## Stubs that change mid-test
//!
//! The same calls on the [`TestCache`] itself stub, restub and unstub at
//! any point: [`stub_value`](TestCache::stub_value),
//! [`stub_error`](TestCache::stub_error), [`stub_fn`](TestCache::stub_fn),
//! [`unstub`](TestCache::unstub) (one key) and
//! [`unstub_primer`](TestCache::unstub_primer) (the primer runs again). A
//! key whose stub changes is treated as if its source had changed: if it
//! has a value stored, it is recomputed at once, so the next read sees the
//! new stub, and its dependents are refreshed as after any change: their
//! jobs are queued, and [`settle`](TestCache::settle) runs them. A key
//! never read is left alone until it is.
//!
//! ```
//! # use kck_core::{primer, Ctx};
//! # use kck_testing::TestCache;
//! # #[derive(Debug, Clone, thiserror::Error)]
//! # #[error("the warehouse is offline")]
//! # struct Offline;
//! #[primer(key = "stock/{sku}")]
//! async fn stock(_ctx: &Ctx, sku: u32) -> Result<u32, Offline> {
//!     unreachable!("tests stub the warehouse")
//! }
//!
//! #[primer(key = "in_stock/{sku}", depends_on = [stock])]
//! async fn in_stock(ctx: &Ctx, sku: u32) -> Result<bool, kck_core::Error> {
//!     Ok(*stock(ctx, sku).await? > 0)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let test = TestCache::builder().stub_value(stock::key(7), 3).build();
//! assert!(*in_stock(&test, 7).await.unwrap());
//!
//! test.stub_value(stock::key(7), 0).await; // sold out
//! assert_eq!(*stock(&test, 7).await.unwrap(), 0);
//! test.settle().await; // runs in_stock/7's refresh
//! assert!(!*in_stock(&test, 7).await.unwrap());
//!
//! test.stub_error(stock::key(7), Offline).await;
//! assert!(stock(&test, 7).await.is_err());
//! # }
//! ```
//!
//! # Looking at the queue
//!
//! Refreshes run as jobs in a queue. [`TestCache::pending_jobs`] lists the
//! jobs waiting to run (key, reasons, due time, failed attempts, last
//! error) and [`TestCache::failed_jobs`] those given up on, without
//! changing anything: two requests for one key merge into one job, a
//! failing job waits for its retry. The example under
//! [`TestCache::pending_jobs`] shows one.
//!
//! # Testing what several processes on one store do
//!
//! A deployment runs several processes on one database: web servers that
//! read, workers that refresh. [`TestCacheBuilder::build_cluster`] builds
//! that in one test: `n` caches on one store, with one mock clock and one
//! set of stubs, sharing entries, change notices, compute leases and the
//! refresh queue. Each process is a [`TestCache`] (`cluster[i]`) with its
//! own recorder; [`settle`](TestCache::settle) on one process runs only its
//! worker, [`TestCluster::settle`] runs all of them.
//!
//! ```
//! # use kck_core::{primer, Ctx};
//! # use kck_testing::TestCache;
//! #[primer(key = "shelf/{aisle}")]
//! async fn shelf(_ctx: &Ctx, aisle: u32) -> Result<u32, kck_core::Error> {
//!     unreachable!("tests stub the shelf scanner")
//! }
//!
//! #[primer(key = "aisle_report/{aisle}", depends_on = [shelf])]
//! async fn aisle_report(ctx: &Ctx, aisle: u32) -> Result<String, kck_core::Error> {
//!     Ok(format!("aisle {aisle}: {} items", shelf(ctx, aisle).await?))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cluster = TestCache::builder()
//!     .stub_value(shelf::key(1), 12)
//!     .build_cluster(3);
//! let (web_a, web_b, worker) = (&cluster[0], &cluster[1], &cluster[2]);
//! assert_eq!(*aisle_report(web_a, 1).await.unwrap(), "aisle 1: 12 items");
//! assert_eq!(*aisle_report(web_b, 1).await.unwrap(), "aisle 1: 12 items");
//! cluster.assert_computed(&aisle_report::key(1).into(), 1); // web_a's, shared
//!
//! web_a.stub_value(shelf::key(1), 8).await; // the scanner sees 8 now
//! assert_eq!(cluster.pending_jobs().await.len(), 1); // the report's refresh
//! worker.settle().await; // only the worker runs jobs
//! worker.assert_computed_once(&aisle_report::key(1).into());
//! assert_eq!(*aisle_report(web_b, 1).await.unwrap(), "aisle 1: 8 items");
//! # }
//! ```
//!
//! The same test runs on PostgreSQL with
//! [`build_cluster_on_postgres`](TestCacheBuilder::build_cluster_on_postgres)
//! (feature `postgres`): a fresh database, and a store (pool and `LISTEN`
//! connection) per process, as separate processes have. There, a process
//! hears of another's writes a moment later; settling and stub changes
//! wait for every process to hear, and [`TestCluster::sync`] does so after
//! a write of your own.
//!
//! # Controlling time
//!
//! The mock clock moves only when the test moves it
//! ([`advance`](TestCache::advance)); freshness, periodic refreshes, cron
//! schedules and retries all follow it. [`settle`](TestCache::settle) runs
//! what is due at the clock's time: scheduler ticks, due jobs, and the jobs
//! those cause. Nothing sleeps.
//!
//! ```
//! # use std::time::Duration;
//! # use kck_core::{primer, Ctx};
//! # use kck_testing::TestCache;
//! #[primer(key = "digest/{team}", stale_after = "10m")]
//! async fn digest(_ctx: &Ctx, team: u32) -> Result<u32, kck_core::Error> {
//!     Ok(team)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let test = TestCache::new();
//! digest(&test, 1).await.unwrap();
//! test.advance(Duration::from_secs(9 * 60));
//! digest(&test, 1).await.unwrap(); // fresh: a hit
//! test.advance(Duration::from_secs(2 * 60));
//! digest(&test, 1).await.unwrap(); // stale: served, and a refresh queued
//! test.settle().await;
//! test.assert_computed(&digest::key(1).into(), 2);
//! # }
//! ```
//!
//! # Checking a store of your own
//!
//! [`conformance`] has a suite per storage port; run each on the ports
//! your store implements.

mod cache;
mod cluster;
pub mod conformance;
pub mod logs;
#[cfg(feature = "postgres")]
pub mod postgres;
mod recorder;
mod stub;

pub use cache::{TestCache, TestCacheBuilder};
pub use cluster::TestCluster;
pub use recorder::EventRecorder;
