//! A small application with kck's command line, to try it and to test it:
//!
//! ```text
//! cargo run -p kck-cli --bin kck-demo -- --memory get sum_of_squares/3
//! cargo run -p kck-cli --bin kck-demo -- --help
//! KCK_DATABASE_URL=postgres://… cargo run -p kck-cli --bin kck-demo -- worker
//! ```
//!
//! An application's own `main` is the same: its primers, then
//! [`kck_cli::run`] with its cache builder.

use std::process::ExitCode;
use std::time::Duration;

use kck_core::error::BoxError;
use kck_core::{Cache, Ctx, primer};

/// The numbers to keep warm: 1 to 20.
#[primer(key = "numbers")]
async fn numbers(_ctx: &Ctx) -> Result<Vec<u64>, BoxError> {
    Ok((1..=20).collect())
}

/// `n` squared, refreshed every five minutes; `warm --primer square`
/// computes 1 to 20.
#[primer(key = "square/{n}", refresh = "5m", domain = numbers)]
async fn square(_ctx: &Ctx, n: u64) -> Result<u64, BoxError> {
    Ok(n.saturating_mul(n))
}

/// `1² + … + n²`, from `square`: a product with dependencies.
#[primer(key = "sum_of_squares/{n}", depends_on = [square])]
async fn sum_of_squares(ctx: &Ctx, n: u64) -> Result<u64, kck_core::Error> {
    let mut sum = 0u64;
    for i in 1..=n.min(1000) {
        sum = sum.saturating_add(*square(ctx, i).await?);
    }
    Ok(sum)
}

/// Half of an even `n`; an odd one fails: a product whose computation
/// fails.
#[primer(key = "half/{n}")]
async fn half(_ctx: &Ctx, n: u64) -> Result<u64, BoxError> {
    if n % 2 == 1 {
        return Err(format!("{n} is odd").into());
    }
    Ok(n / 2)
}

/// Takes `ms` milliseconds: a job that runs for a while.
#[primer(key = "slow/{ms}")]
async fn slow(_ctx: &Ctx, ms: u64) -> Result<u64, BoxError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[tokio::main]
async fn main() -> ExitCode {
    kck_cli::run(Cache::builder()).await
}
