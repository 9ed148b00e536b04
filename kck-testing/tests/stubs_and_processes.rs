//! Stubs that change mid-test, the look at the queue, and several processes
//! on one store: each on the memory store and on PostgreSQL (feature
//! `postgres`), through the same cluster builder.

use futures_util::future::LocalBoxFuture;
use kck_core::storage::RefreshReason;
use kck_core::{Ctx, Key, primer};
use kck_testing::{TestCache, TestCacheBuilder, TestCluster};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the rates API is down")]
struct RatesDown;

/// The real primer: a value a test recognizes, so it sees when it runs.
#[primer(key = "rate/{currency}")]
async fn rate(_ctx: &Ctx, currency: String) -> Result<u32, RatesDown> {
    Ok(u32::try_from(currency.len()).unwrap_or(0) * 100)
}

#[primer(key = "price/{currency}/{cents}", depends_on = [rate])]
async fn price(ctx: &Ctx, currency: String, cents: u32) -> Result<u32, kck_core::Error> {
    Ok(cents * *rate(ctx, currency).await? / 100)
}

/// Refuses a rate above 100.
#[primer(key = "capped/{currency}", depends_on = [rate])]
async fn capped(ctx: &Ctx, currency: String) -> Result<u32, kck_core::error::BoxError> {
    let rate = *rate(ctx, currency).await?;
    if rate > 100 {
        return Err(format!("rate {rate} is above the cap").into());
    }
    Ok(rate)
}

/// A primer no test cache registers.
#[primer(key = "unregistered/{id}")]
async fn unregistered(_ctx: &Ctx, id: u32) -> Result<u32, kck_core::Error> {
    Ok(id)
}

fn eur() -> String {
    "EUR".to_owned()
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

/// Builds a cluster of `n` processes from a builder, on one store kind.
type Build = fn(TestCacheBuilder, usize) -> LocalBoxFuture<'static, Option<TestCluster>>;

/// Defines each test twice, as a module with `on_memory` and `on_postgres`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn on_memory() {
                super::$name(|builder, n| Box::pin(async move { Some(builder.build_cluster(n)) }))
                    .await;
            }

            #[cfg(feature = "postgres")]
            #[tokio::test]
            async fn on_postgres() {
                super::$name(|builder, n| Box::pin(builder.build_cluster_on_postgres(n))).await;
            }
        }
    )*};
}

on_both_stores!(
    a_stub_set_mid_test_is_read_next_and_its_dependents_follow,
    a_stub_error_set_mid_test_is_the_next_read,
    unstubbing_a_key_then_its_primer_brings_the_primer_back,
    a_job_queued_by_one_process_runs_in_another,
    requests_of_two_processes_merge_into_one_pending_job,
    a_job_that_keeps_failing_is_listed_pending_then_failed,
);

async fn a_stub_set_mid_test_is_read_next_and_its_dependents_follow(build: Build) {
    let Some(cluster) = build(TestCache::builder(), 1).await else {
        return;
    };
    let test = &cluster[0];
    assert_eq!(
        *price(test, eur(), 10).await.expect("a read"),
        30,
        "the real rate"
    );

    test.stub_value(rate::key(eur()), 50).await;
    assert_eq!(
        *rate(test, eur()).await.expect("a read"),
        50,
        "the next read"
    );
    test.assert_computed(&key("rate/EUR"), 2);
    let pending = test.pending_jobs().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].key, key("price/EUR/10"));
    assert_eq!(
        pending[0].reasons,
        [RefreshReason::DependencyChanged {
            from: key("rate/EUR")
        }]
    );
    test.settle().await;
    assert_eq!(*price(test, eur(), 10).await.expect("a read"), 5);
    assert!(test.pending_jobs().await.is_empty());

    // A key never read is left alone until it is.
    test.stub_value(rate::key("USD".to_owned()), 7).await;
    test.assert_not_computed(&key("rate/USD"));
    assert_eq!(*rate(test, "USD".to_owned()).await.expect("a read"), 7);
}

async fn a_stub_error_set_mid_test_is_the_next_read(build: Build) {
    let builder = TestCache::builder().stub_value(rate::key(eur()), 50);
    let Some(cluster) = build(builder, 1).await else {
        return;
    };
    let test = &cluster[0];
    assert_eq!(*rate(test, eur()).await.expect("a read"), 50);
    test.stub_error(rate::key(eur()), RatesDown).await;
    let error = rate(test, eur()).await.expect_err("a failed read");
    assert_eq!(error.compute_error::<RatesDown>(), Some(&RatesDown));
    test.stub_value(rate::key(eur()), 60).await;
    assert_eq!(*rate(test, eur()).await.expect("a read"), 60);
}

async fn unstubbing_a_key_then_its_primer_brings_the_primer_back(build: Build) {
    let builder = TestCache::builder()
        .stub_value(rate::key(eur()), 50)
        .stub_fn::<rate>(|(currency,)| Ok(u32::try_from(currency.len()).unwrap_or(0)));
    let Some(cluster) = build(builder, 1).await else {
        return;
    };
    let test = &cluster[0];
    assert_eq!(*rate(test, eur()).await.expect("a read"), 50);
    assert_eq!(
        *rate(test, "CHF".to_owned()).await.expect("a read"),
        3,
        "the fallback"
    );

    test.unstub(&rate::key(eur())).await;
    assert_eq!(
        *rate(test, eur()).await.expect("a read"),
        3,
        "a key without its stub goes to the fallback"
    );
    test.stub_fn::<rate>(|(currency,)| Ok(u32::try_from(currency.len()).unwrap_or(0) * 2))
        .await;
    assert_eq!(
        *rate(test, "CHF".to_owned()).await.expect("a read"),
        6,
        "restubbed"
    );

    test.unstub_primer::<rate>().await;
    assert_eq!(
        *rate(test, eur()).await.expect("a read"),
        300,
        "the primer runs again"
    );
    assert_eq!(*rate(test, "CHF".to_owned()).await.expect("a read"), 300);
    // Unstubbing what has no stub does nothing.
    test.unstub(&rate::key(eur())).await;
    test.unstub_primer::<rate>().await;
    // Read, unstubbed (fallback), restubbed (fallback), unstubbed (primer).
    test.assert_computed(&key("rate/EUR"), 4);
}

async fn a_job_queued_by_one_process_runs_in_another(build: Build) {
    let Some(cluster) = build(TestCache::builder().stub_value(rate::key(eur()), 50), 2).await
    else {
        return;
    };
    let (web, worker) = (&cluster[0], &cluster[1]);
    assert_eq!(*price(web, eur(), 10).await.expect("a read"), 5);
    assert_eq!(
        *price(worker, eur(), 10).await.expect("a read"),
        5,
        "from the store"
    );
    cluster.assert_computed(&key("price/EUR/10"), 1);

    // Stubs are the cluster's: set through the worker, read by the web.
    worker.stub_value(rate::key(eur()), 70).await;
    assert_eq!(*rate(web, eur()).await.expect("a read"), 70);
    assert_eq!(cluster.pending_jobs().await.len(), 1);

    worker.settle().await;
    assert!(cluster.pending_jobs().await.is_empty());
    worker.assert_computed(&key("price/EUR/10"), 1);
    web.assert_computed(&key("price/EUR/10"), 1);
    assert_eq!(
        *price(web, eur(), 10).await.expect("a read"),
        7,
        "told of the change"
    );
}

async fn requests_of_two_processes_merge_into_one_pending_job(build: Build) {
    let Some(cluster) = build(TestCache::builder().stub_value(rate::key(eur()), 50), 2).await
    else {
        return;
    };
    assert_eq!(*price(&cluster[0], eur(), 10).await.expect("a read"), 5);
    cluster[0]
        .invalidate(&key("price/EUR/10"))
        .await
        .expect("a read");
    for process in cluster.processes() {
        assert_eq!(
            *price(process, eur(), 10).await.expect("a read"),
            5,
            "served stale"
        );
    }
    let pending = cluster.pending_jobs().await;
    assert_eq!(pending.len(), 1, "one job for both requests: {pending:?}");
    assert_eq!(pending[0].key, key("price/EUR/10"));
    assert_eq!(pending[0].reasons, [RefreshReason::Stale]);
    assert_eq!(pending[0].due_at, cluster.now());

    cluster.settle().await;
    assert!(cluster.pending_jobs().await.is_empty());
    cluster.assert_computed(&key("price/EUR/10"), 2);
}

async fn a_job_that_keeps_failing_is_listed_pending_then_failed(build: Build) {
    use std::time::Duration;
    let builder = TestCache::builder()
        .stub_value(rate::key(eur()), 50)
        .worker(|worker| worker.retries(2, Duration::from_secs(10), Duration::from_secs(10)));
    let Some(cluster) = build(builder, 1).await else {
        return;
    };
    let test = &cluster[0];
    assert_eq!(*capped(test, eur()).await.expect("a read"), 50);
    test.stub_value(rate::key(eur()), 150).await;
    test.settle().await;

    let pending = test.pending_jobs().await;
    assert_eq!(pending.len(), 1, "waiting for its retry: {pending:?}");
    assert_eq!(pending[0].key, key("capped/EUR"));
    assert_eq!(pending[0].attempts, 1);
    let retry_in = pending[0].due_at.saturating_duration_since(test.now());
    assert!(
        (Duration::from_secs(10)..=Duration::from_millis(12_500)).contains(&retry_in),
        "after the back-off and at most a quarter of it as jitter: {retry_in:?}"
    );
    assert!(
        pending[0]
            .error
            .as_deref()
            .is_some_and(|error| error.contains("rate 150 is above the cap")),
        "{pending:?}"
    );
    assert!(test.failed_jobs().await.is_empty());

    test.advance(retry_in);
    test.settle().await;
    assert!(test.pending_jobs().await.is_empty());
    let failed = test.failed_jobs().await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        (failed[0].key.clone(), failed[0].attempts),
        (key("capped/EUR"), 2)
    );
    assert!(failed[0].error.contains("rate 150 is above the cap"));
}

#[tokio::test]
#[should_panic(expected = "kck-testing: cannot stub `unregistered`")]
async fn stubbing_an_unregistered_primer_mid_test_panics() {
    let registry = kck_core::primer::Registry::builder()
        .register::<rate>()
        .build()
        .unwrap();
    let test = TestCache::builder().registry(registry).build();
    test.stub_value(unregistered::key(1), 2).await;
}

#[test]
#[should_panic(expected = "kck-testing: cannot stub `unregistered`")]
fn building_with_a_stub_of_an_unregistered_primer_panics() {
    let registry = kck_core::primer::Registry::builder()
        .register::<rate>()
        .build()
        .unwrap();
    let _ = TestCache::builder()
        .registry(registry)
        .stub_value(unregistered::key(1), 2)
        .build();
}

#[test]
fn every_process_reads_one_clock() {
    let cluster = TestCache::builder().build_cluster(3);
    let start = cluster.now();
    cluster.advance(std::time::Duration::from_secs(5));
    for process in cluster.processes() {
        assert_eq!(process.now(), start + std::time::Duration::from_secs(5));
    }
    cluster[2].advance(std::time::Duration::from_secs(1));
    assert_eq!(cluster[0].now(), start + std::time::Duration::from_secs(6));
}

#[test]
#[should_panic(expected = "kck-testing: a cluster needs at least one process")]
fn a_cluster_of_no_process_panics() {
    let _ = TestCache::builder().build_cluster(0);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn one_test_cache_on_postgres() {
    let Some(test) = TestCache::builder()
        .stub_value(rate::key(eur()), 50)
        .build_on_postgres()
        .await
    else {
        return;
    };
    assert_eq!(*price(&test, eur(), 10).await.expect("a read"), 5);
    assert!(
        test.entry(&key("price/EUR/10"))
            .await
            .expect("a read")
            .is_some()
    );
}
