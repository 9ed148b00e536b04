//! kck in five minutes. `cargo run -p quickstart` prints what the cache
//! decides as it serves a store report built from a slow register fleet.
//!
//! With `KCK_DATABASE_URL` (or `DATABASE_URL`) set
//! (`postgres://user:password@host/database`), the cache
//! lives in PostgreSQL instead of memory: run it twice, and the second run
//! reads what the first computed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use kck_core::Cache;
use kck_core::event::{Event, EventKind};
use quickstart::{Fleet, register_sales, store_report};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let day = NaiveDate::from_ymd_opt(2026, 11, 26).ok_or("invalid date")?;
    let fleet = Arc::new(Fleet::new(Duration::from_millis(200)));
    fleet.record(70, day, "coffee", 350);
    fleet.record(71, day, "bagel", 275);
    fleet.record(72, day, "coffee", 350);

    let mut builder = Cache::builder();
    match kck_diesel::PgStore::from_env().await {
        Ok(store) => {
            // Where, without the user's password.
            println!("On PostgreSQL ({}).\n", store.server());
            builder = builder.store(store);
        }
        Err(kck_diesel::ConnectError::MissingUrl) => {
            println!("In memory (set KCK_DATABASE_URL to use PostgreSQL).\n");
        }
        Err(error) => return Err(error.into()),
    }
    let cache = builder
        .state(fleet.clone())
        .on_event(|event: &Event| {
            if !matches!(event.kind, EventKind::Hit | EventKind::Coalesced) {
                println!("     kck: {event}");
            }
        })
        .build()?;

    println!("1. First read: a miss. The report reads three registers, 200 ms each");
    println!("   (on PostgreSQL, a second run loads what the first stored).");
    let started = Instant::now();
    let report = store_report(&cache, 7, day).await?;
    println!("   {report:?}\n   in {:?}\n", started.elapsed());

    println!("2. Second read: a hit, from memory.");
    let started = Instant::now();
    let again = store_report(&cache, 7, day).await?;
    println!(
        "   the same value: {}, in {:?}\n",
        Arc::ptr_eq(&report, &again),
        started.elapsed()
    );

    println!("3. A sale arrives at register 71, and its import is refreshed.");
    fleet.record(71, day, "croissant", 900);
    cache.refresh(&register_sales::key(71, day)).await?;
    cache.wait_idle().await;
    println!("   The report read it, so kck recomputed it in the background:");
    let report = store_report(&cache, 7, day).await?;
    println!("   {report:?}\n");

    println!("4. Ten concurrent reads of another store's report share one computation.");
    let started = Instant::now();
    let reads: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { store_report(&cache, 8, day).await })
        })
        .collect();
    for read in reads {
        read.await??;
    }
    println!("   all ten in {:?}", started.elapsed());
    Ok(())
}
