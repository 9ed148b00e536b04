//! Test helpers for [kck](kck_core): a cache on the memory store with a
//! mock clock and an event recorder, stubs for the primers your primer under
//! test depends on, and assertions on what was computed.
//!
//! ```
//! use std::sync::Arc;
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
//! test.assert_computed_once(&price_in::key("EUR".into(), 1000));
//! test.assert_stub_read(&exchange_rate::key("EUR".into()));
//!
//! let error = price_in(&test, "XXX".into(), 1000).await.unwrap_err();
//! assert!(error.to_string().contains("the partner API is down"));
//! # }
//! ```

mod cache;
mod cluster;
pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
mod recorder;
mod stub;

pub use cache::{TestCache, TestCacheBuilder};
pub use cluster::TestCluster;
pub use recorder::EventRecorder;
