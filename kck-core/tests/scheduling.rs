//! The scheduler, on the mock clock: periodic refreshes every interval from
//! the last compute, cron schedules that fire once per tick, domains kept
//! warm before anyone asks, idle products retired until read again, and
//! several schedulers sharing a store without doing any work twice.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Source, SourceDown, on_every_store, source};
use kck_core::clock::Timestamp;
use kck_core::event::EventKind;
use kck_core::storage::RefreshReason;
use kck_core::storage::{MemoryStore, Storage};
use kck_core::{Ctx, Key, primer};
use kck_testing::TestCache;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

#[primer(key = "ticker/{n}", refresh = "5m")]
async fn ticker(ctx: &Ctx, n: u32) -> Result<i64, SourceDown> {
    source(ctx).read(&format!("ticker:{n}")).await
}

#[primer(key = "nightly/{n}", schedule = "0 3 * * *")]
async fn nightly(ctx: &Ctx, n: u32) -> Result<i64, SourceDown> {
    source(ctx).read(&format!("nightly:{n}")).await
}

/// The stores of the chain: `1..=n`, `n` read from the source.
#[primer(key = "stores", refresh = "1m")]
async fn stores(ctx: &Ctx) -> Result<Vec<u32>, SourceDown> {
    let count = source(ctx).read("stores").await?;
    Ok((1..=u32::try_from(count).unwrap_or(0)).collect())
}

#[primer(key = "store_total/{store}", domain = stores)]
async fn store_total(ctx: &Ctx, store: u32) -> Result<i64, SourceDown> {
    source(ctx).read(&format!("store_total:{store}")).await
}

/// Pairs of parameters, one of them a `&str` in the primer.
#[primer(key = "regions")]
async fn regions(_ctx: &Ctx) -> Result<Vec<(String, u32)>, SourceDown> {
    Ok(vec![("north".to_owned(), 1), ("south".to_owned(), 2)])
}

#[primer(key = "region_day/{region}/{day}", domain = regions, schedule = "0 0 * * *")]
async fn region_day(ctx: &Ctx, region: &str, day: u32) -> Result<i64, SourceDown> {
    source(ctx)
        .read(&format!("region_day:{region}:{day}"))
        .await
}

#[primer(key = "watched/{n}", refresh = "1m")]
async fn watched(ctx: &Ctx, n: u32) -> Result<i64, SourceDown> {
    source(ctx).read(&format!("watched:{n}")).await
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

fn at(text: &str) -> Timestamp {
    let time: chrono::DateTime<chrono::Utc> = text.parse().expect("an RFC 3339 time");
    Timestamp::from_unix_micros(time.timestamp_micros())
}

fn sorted(keys: &[Key]) -> Vec<String> {
    let set: BTreeSet<String> = keys.iter().map(ToString::to_string).collect();
    set.into_iter().collect()
}

/// The reasons of the refreshes queued for `key`.
fn queued_reasons(test: &TestCache, key: &Key) -> Vec<RefreshReason> {
    test.recorder()
        .events_of(key)
        .into_iter()
        .filter_map(|event| match event.kind {
            EventKind::RefreshQueued { reason } => Some(reason),
            _ => None,
        })
        .collect()
}

on_every_store! {
    #[tokio::test]
    async fn a_product_is_refreshed_every_interval_from_its_last_compute(test, source) {
        let key = key("ticker/1");
        source.set("ticker:1", 1);
        assert_eq!(*ticker(&test, 1).await.unwrap(), 1);

        // Due at most a tenth of the interval early: not after four minutes.
        test.advance(4 * MINUTE);
        test.settle().await;
        test.assert_computed(&key, 1);

        source.set("ticker:1", 2);
        test.advance(MINUTE);
        test.settle().await;
        test.assert_computed(&key, 2);
        assert_eq!(queued_reasons(&test, &key), [RefreshReason::Interval]);
        assert_eq!(*ticker(&test, 1).await.unwrap(), 2, "the new value is served");
        test.settle().await;
        test.assert_computed(&key, 2);

        // A refresh out of turn restarts the interval.
        test.advance(2 * MINUTE);
        test.cache().refresh(&ticker::key(1)).await.unwrap();
        test.assert_computed(&key, 3);
        test.advance(4 * MINUTE);
        test.settle().await;
        test.assert_computed(&key, 3);
        test.advance(MINUTE);
        test.settle().await;
        test.assert_computed(&key, 4);
    }

    #[tokio::test]
    async fn a_cron_schedule_refreshes_every_product_of_its_primer_at_each_tick(test, source) {
        // The clock starts at 2026-01-01T00:00:00Z.
        for n in [1, 2] {
            source.set(&format!("nightly:{n}"), n.into());
            nightly(&test, n).await.unwrap();
        }
        let keys = [key("nightly/1"), key("nightly/2")];
        test.settle().await;

        test.advance(2 * HOUR + 59 * MINUTE);
        test.settle().await;
        for key in &keys {
            test.assert_computed(key, 1);
        }

        test.advance(MINUTE);
        assert_eq!(test.now(), at("2026-01-01T03:00:00Z"));
        test.settle().await;
        for key in &keys {
            test.assert_computed(key, 2);
            assert_eq!(queued_reasons(&test, key), [RefreshReason::Schedule]);
        }

        test.advance(12 * HOUR);
        test.settle().await;
        for key in &keys {
            test.assert_computed(key, 2);
        }

        // A scheduler that was down fires a missed tick once, late.
        test.advance(24 * HOUR);
        test.settle().await;
        for key in &keys {
            test.assert_computed(key, 3);
        }
        test.settle().await;
        for key in &keys {
            test.assert_computed(key, 3);
        }
    }

    #[tokio::test]
    async fn a_domain_is_kept_warm_before_anyone_asks(test, source) {
        source.set("stores", 3);
        test.settle().await;
        for n in 1..=3 {
            let key = key(&format!("store_total/{n}"));
            test.assert_computed_once(&key);
            assert_eq!(queued_reasons(&test, &key), [RefreshReason::Domain]);
        }
        test.assert_not_computed(&key("store_total/4"));

        // A new store: the domain primer refreshes on its interval, and the
        // next evaluation of the domain warms the new key only.
        source.set("stores", 4);
        test.advance(MINUTE);
        test.settle().await;
        test.advance(MINUTE);
        test.settle().await;
        test.assert_computed_once(&key("store_total/4"));
        for n in 1..=3 {
            test.assert_computed_once(&key(&format!("store_total/{n}")));
        }
    }

    #[tokio::test]
    async fn domains_of_several_parameters_warm_and_are_scheduled(test, source) {
        test.settle().await;
        let north = key("region_day/north/1");
        let south = key("region_day/south/2");
        test.assert_computed_once(&north);
        test.assert_computed_once(&south);

        // Midnight: the schedule refreshes the domain's keys too.
        test.advance(24 * HOUR);
        test.settle().await;
        test.assert_computed(&north, 2);
        test.assert_computed(&south, 2);
        assert_eq!(
            queued_reasons(&test, &north),
            [RefreshReason::Domain, RefreshReason::Schedule]
        );
    }
}

#[tokio::test]
async fn products_nobody_reads_stop_refreshing_until_read_again() {
    let source = Source::new();
    let shared = source.clone();
    let test = TestCache::builder()
        .configure(move |builder| builder.state(shared.clone()))
        .scheduler(|scheduler| scheduler.idle_after(Some(10 * MINUTE)))
        .build();
    let key = key("watched/1");
    watched(&test, 1).await.unwrap();
    // Reads count from the tick that reports them.
    test.settle().await;

    // Read at 0: refreshed each minute while the last read is at most ten
    // minutes old.
    for minute in 1..=10 {
        test.advance(MINUTE);
        test.settle().await;
        test.assert_computed(&key, 1 + minute);
    }
    test.advance(MINUTE);
    test.settle().await;
    test.assert_computed(&key, 11);
    assert_eq!(test.recorder().count(&key, "retired"), 1);
    test.advance(30 * MINUTE);
    test.settle().await;
    test.assert_computed(&key, 11);

    // A read from memory, reported on the next tick, brings it back at once.
    watched(&test, 1).await.unwrap();
    test.assert_computed(&key, 11);
    test.settle().await;
    test.assert_computed(&key, 12);
    test.advance(MINUTE);
    test.settle().await;
    test.assert_computed(&key, 13);
    assert_eq!(test.recorder().count(&key, "retired"), 1);
}

#[tokio::test]
async fn schedulers_sharing_a_store_never_queue_the_same_work_twice() {
    let store = Storage::from(MemoryStore::new());
    schedulers_share(store, None).await;
}

#[tokio::test]
async fn schedulers_sharing_postgres_never_queue_the_same_work_twice() {
    let Some(database) = kck_testing::postgres::TestDatabase::create().await else {
        return;
    };
    let connect = || async {
        let store = kck_diesel::PgStore::connect(database.url())
            .await
            .expect("the test database accepts connections");
        Storage::from(store)
    };
    let first = connect().await;
    let second = connect().await;
    schedulers_share(first, Some(second)).await;
}

/// Two test caches on one store (or two connections to one database), each
/// with its scheduler: at every tick, each product due and each schedule
/// goes to exactly one of them.
async fn schedulers_share(store: Storage, other: Option<Storage>) {
    let source = Source::new();
    let cache_on = |store: Storage| {
        let source = source.clone();
        TestCache::builder()
            .store(store)
            .configure(move |builder| builder.state(source.clone()))
            .build()
    };
    let a = cache_on(store.clone());
    let b = cache_on(other.unwrap_or(store));
    for n in 0..40 {
        ticker(&a, n).await.expect("computed");
        nightly(&b, n).await.expect("computed");
    }
    let both = |minutes: u32| {
        let step = MINUTE * minutes;
        a.advance(step);
        b.advance(step);
    };
    let tick_both = || async {
        let (x, y) = tokio::join!(a.tick(), b.tick());
        (x, y)
    };
    // The first tick warms the domains (region_day's two keys), once.
    let (x, y) = tick_both().await;
    assert_eq!(x.warmed.len() + y.warmed.len(), 2);
    assert!(x.warmed.is_empty() || y.warmed.is_empty());
    assert_eq!(x.interval.len() + y.interval.len(), 0, "nothing is due yet");

    both(5);
    let (x, y) = tick_both().await;
    // (The domain primer `stores`, computed to warm its domain, refreshes
    // every minute too.)
    let tickers = |keys: &[Key]| -> Vec<Key> {
        keys.iter()
            .filter(|key| key.primer() == "ticker")
            .cloned()
            .collect()
    };
    let interval = [tickers(&x.interval), tickers(&y.interval)].concat();
    assert_eq!(interval.len(), 40, "each due product is queued once");
    assert_eq!(sorted(&interval).len(), 40);
    let (x, y) = tick_both().await;
    assert_eq!(x.queued() + y.queued(), 0, "and only once");

    both(3 * 60);
    let (x, y) = tick_both().await;
    let scheduled: Vec<Key> = x.scheduled.iter().chain(&y.scheduled).cloned().collect();
    assert_eq!(scheduled.len(), 40, "one scheduler fires the tick");
    assert!(
        x.scheduled.is_empty() || y.scheduled.is_empty(),
        "the tick fires in one scheduler"
    );
    let (x, y) = tick_both().await;
    assert!(x.scheduled.is_empty() && y.scheduled.is_empty());
}
