//! Freshness, on a mock clock: soft and hard expiry, fresh-on-every-request,
//! stale-if-error, lazy periodic refresh, and products that are never
//! computed on a miss.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SourceDown, on_every_store, source, until_waiting};
use kck_core::{Ctx, ErrorKind, primer};

const MINUTE: Duration = Duration::from_secs(60);

#[primer(key = "soft/{name}", stale_after = "1m")]
async fn soft(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "hard/{name}", expire_after = "1m")]
async fn hard(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(
    key = "soft_then_hard/{name}",
    stale_after = "1m",
    expire_after = "10m"
)]
async fn soft_then_hard(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "live/{name}", on_demand)]
async fn live(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "live_resilient/{name}", on_demand, stale_if_error)]
async fn live_resilient(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "resilient/{name}", stale_after = "1m", stale_if_error)]
async fn resilient(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "periodic/{name}", refresh = "5m")]
async fn periodic(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "primed_only/{name}", prime_on_miss = false)]
async fn primed_only(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

on_every_store! {
    #[tokio::test]
    async fn a_stale_value_is_served_at_once_and_refreshed_once(test, source) {
        source.set("a", 1);
        let key = soft::key("a".into());
        assert_eq!(*soft(&test, "a".into()).await.unwrap(), 1);

        source.set("a", 2);
        test.advance(2 * MINUTE);
        for _ in 0..5 {
            assert_eq!(
                *soft(&test, "a".into()).await.unwrap(),
                1,
                "stale, served at once"
            );
        }
        assert_eq!(test.recorder().count(&key, "stale-served"), 5);

        // One refresh job for the five stale reads, run by the worker.
        test.settle().await;
        assert_eq!(test.recorder().count(&key, "refresh-queued"), 1);
        assert_eq!(test.recorder().count(&key, "refresh-started"), 1);
        test.assert_computed(&key, 2);
        assert_eq!(*soft(&test, "a".into()).await.unwrap(), 2);
        assert_eq!(source.reads("a"), 2);
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_hard_expired_value_is_never_served(test, source) {
        source.set("a", 1);
        let key = hard::key("a".into());
        assert_eq!(*hard(&test, "a".into()).await.unwrap(), 1);
        source.set("a", 2);
        test.advance(MINUTE);
        assert_eq!(*hard(&test, "a".into()).await.unwrap(), 2);
        assert_eq!(test.recorder().count(&key, "stale-served"), 0);
        test.assert_computed(&key, 2);
    }
}

on_every_store! {
    #[tokio::test]
    async fn soft_expiry_comes_first_then_hard_expiry(test, source) {
        source.set("a", 1);
        soft_then_hard(&test, "a".into()).await.unwrap();

        source.set("a", 2);
        test.advance(5 * MINUTE);
        assert_eq!(*soft_then_hard(&test, "a".into()).await.unwrap(), 1);
        test.settle().await;
        assert_eq!(*soft_then_hard(&test, "a".into()).await.unwrap(), 2);

        // Nobody reads for longer than the hard expiry: the next read waits for
        // a fresh value.
        source.set("a", 3);
        test.advance(11 * MINUTE);
        assert_eq!(*soft_then_hard(&test, "a".into()).await.unwrap(), 3);
    }
}

on_every_store! {
    #[tokio::test]
    async fn on_demand_computes_on_every_read(test, source) {
        for value in 1..=3 {
            source.set("a", value);
            assert_eq!(*live(&test, "a".into()).await.unwrap(), value);
        }
        test.assert_computed(&live::key("a".into()), 3);
    }
}

on_every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_demand_reads_that_overlap_share_one_computation(test, source) {
        source.set("a", 4);
        source.hold();
        let test = Arc::new(test);
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let test = test.clone();
                tokio::spawn(async move { live(&*test, "a".into()).await.map(|v| *v) })
            })
            .collect();
        until_waiting(&test, &live::key("a".into()), 8).await;
        source.open();
        for reader in readers {
            assert_eq!(reader.await.unwrap().unwrap(), 4);
        }
        assert_eq!(source.reads("a"), 1);
    }
}

on_every_store! {
    #[tokio::test]
    async fn stale_if_error_serves_the_last_good_value_records_the_error_and_backs_off(test, source) {
        source.set("a", 1);
        let key = resilient::key("a".into());
        resilient(&test, "a".into()).await.unwrap();

        source.fail("a", true);
        test.advance(2 * MINUTE);
        assert_eq!(*resilient(&test, "a".into()).await.unwrap(), 1);
        test.settle().await;
        let entry = test.entry(&key).await.unwrap().unwrap();
        let error = entry.meta.last_error.expect("the error is recorded");
        assert_eq!(error.attempts, 1);
        assert!(
            error.message.contains("source `a` is down"),
            "{}",
            error.message
        );
        assert_eq!(test.recorder().count(&key, "served-after-error"), 1);

        // Backing off: reads serve the value without trying again for 1 s.
        assert_eq!(*resilient(&test, "a".into()).await.unwrap(), 1);
        test.settle().await;
        assert_eq!(source.reads("a"), 2);
        test.advance(Duration::from_secs(1));
        assert_eq!(*resilient(&test, "a".into()).await.unwrap(), 1);
        test.settle().await;
        assert_eq!(source.reads("a"), 3);
        let entry = test.entry(&key).await.unwrap().unwrap();
        assert_eq!(entry.meta.last_error.map(|e| e.attempts), Some(2));

        // The next attempt after 2 s succeeds and clears the error.
        source.fail("a", false);
        source.set("a", 5);
        test.advance(Duration::from_secs(2));
        assert_eq!(*resilient(&test, "a".into()).await.unwrap(), 1);
        test.settle().await;
        assert_eq!(*resilient(&test, "a".into()).await.unwrap(), 5);
        let entry = test.entry(&key).await.unwrap().unwrap();
        assert_eq!(entry.meta.last_error, None);
    }
}

on_every_store! {
    #[tokio::test]
    async fn without_stale_if_error_a_failed_refresh_expires_the_value(test, source) {
        source.set("a", 1);
        soft(&test, "a".into()).await.unwrap();

        source.fail("a", true);
        test.advance(2 * MINUTE);
        // Served stale while the refresh runs...
        assert_eq!(*soft(&test, "a".into()).await.unwrap(), 1);
        test.settle().await;
        // ...which fails: the value is no longer served, and the read reports
        // the error.
        let error = soft(&test, "a".into()).await.unwrap_err();
        assert_eq!(
            error.compute_error::<SourceDown>(),
            Some(&SourceDown("a".into()))
        );
        source.fail("a", false);
        source.set("a", 6);
        assert_eq!(*soft(&test, "a".into()).await.unwrap(), 6);
    }
}

on_every_store! {
    #[tokio::test]
    async fn on_demand_with_stale_if_error_falls_back_to_the_last_good_value(test, source) {
        source.set("a", 1);
        assert_eq!(*live_resilient(&test, "a".into()).await.unwrap(), 1);
        assert_eq!(*live(&test, "a".into()).await.unwrap(), 1);
        source.fail("a", true);
        assert_eq!(*live_resilient(&test, "a".into()).await.unwrap(), 1);
        let error = live(&test, "a".into()).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Compute);
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_value_due_for_its_periodic_refresh_is_refreshed_on_read(test, source) {
        source.set("a", 1);
        let key = periodic::key("a".into());
        periodic(&test, "a".into()).await.unwrap();
        source.set("a", 2);
        test.advance(4 * MINUTE);
        assert_eq!(*periodic(&test, "a".into()).await.unwrap(), 1);
        test.settle().await;
        test.assert_computed_once(&key);

        test.advance(MINUTE);
        assert_eq!(*periodic(&test, "a".into()).await.unwrap(), 1);
        test.settle().await;
        assert_eq!(*periodic(&test, "a".into()).await.unwrap(), 2);
        test.assert_computed(&key, 2);
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_primer_that_does_not_prime_on_miss_reports_the_miss(test, source) {
        source.set("a", 3);
        let key = primed_only::key("a".into());
        let error = primed_only(&test, "a".into()).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotPrimed);
        test.assert_not_computed(&key);

        // Primed by hand, or by a refresh, it serves.
        test.set(&key, 9).await.unwrap();
        assert_eq!(*primed_only(&test, "a".into()).await.unwrap(), 9);
        assert_eq!(*test.refresh(&key).await.unwrap(), 3);
        assert_eq!(*primed_only(&test, "a".into()).await.unwrap(), 3);
    }
}
