//! A read that starts after a computation delivered its result never joins
//! that computation: it gets what the cache holds now, or computes anew.
//!
//! Each test parks the first computation's task right after its outcome is
//! out (a test hook of the cache), so the next read runs while the finished
//! flight's task is still alive: the interleaving that once let the read
//! join the finished flight and get its old result.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Harness, Source, SourceDown, source, until};
use kck_core::{CacheBuilder, Ctx, Key, primer};
use tokio::sync::watch;

#[primer(key = "on_request/{name}", on_demand)]
async fn on_request(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "expiring/{name}", expire_after = "1m")]
async fn expiring(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "staling/{name}", stale_after = "1m")]
async fn staling(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "plain/{name}")]
async fn plain(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

/// Where flights wait, once their outcome is out, until the test lets them
/// go on.
#[derive(Clone)]
struct Parking {
    parked: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
}

impl Parking {
    fn new() -> Self {
        Parking {
            parked: Arc::default(),
            open: watch::Sender::new(false),
        }
    }

    /// `builder`, with its flights parking here.
    fn install(&self, builder: CacheBuilder) -> CacheBuilder {
        let parking = self.clone();
        builder.__after_outcome(move |_key: &Key| {
            let parking = parking.clone();
            Box::pin(async move {
                parking.parked.fetch_add(1, Ordering::SeqCst);
                let mut open = parking.open.subscribe();
                let _ = open.wait_for(|open| *open).await;
            })
        })
    }

    async fn until_parked(&self, flights: usize) {
        until(|| self.parked.load(Ordering::SeqCst) >= flights).await;
    }

    fn release(&self) {
        self.open.send_replace(true);
    }
}

/// Defines a test on both stores, with a cache whose flights park (and,
/// after `#[configure(f)]`, configured by `f` too); the body gets the
/// cache, the source and the parking.
macro_rules! parked_on_every_store {
    ($(
        $(#[configure($configure:expr)])?
        async fn $name:ident($test:ident, $source:ident, $parking:ident) $body:block
    )*) => {$(
        mod $name {
            use super::*;

            fn configure(parking: &Parking) -> impl Fn(CacheBuilder) -> CacheBuilder + 'static {
                let parking = parking.clone();
                move |builder| {
                    let builder = parking.install(builder);
                    $( let builder = ($configure)(builder); )?
                    builder
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_memory() {
                let $source = Source::new();
                let $parking = Parking::new();
                let $test = common::on_memory_with(&$source, configure(&$parking));
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let $source = Source::new();
                let $parking = Parking::new();
                let Some($test) = common::on_postgres_with(&$source, configure(&$parking)).await
                else {
                    return;
                };
                $body
            }
        }
    )*};
}

fn coalesced(test: &Harness, key: &Key) -> usize {
    test.recorder().count(key, "coalesced")
}

parked_on_every_store! {
    async fn an_on_demand_read_after_a_delivered_computation_computes_again(test, source, parking) {
        let key = on_request::key("a".into());
        source.set("a", 1);
        assert_eq!(*on_request(&*test, "a".into()).await.unwrap(), 1);
        parking.until_parked(1).await;
        source.set("a", 2);
        assert_eq!(*on_request(&*test, "a".into()).await.unwrap(), 2);
        parking.until_parked(2).await;
        source.set("a", 3);
        assert_eq!(*on_request(&*test, "a".into()).await.unwrap(), 3);
        parking.release();
        assert_eq!(source.reads("a"), 3);
        assert_eq!(coalesced(&test, &key), 0);
    }

    async fn a_read_past_hard_expiry_after_a_delivered_computation_is_not_served_its_value(test, source, parking) {
        let key = expiring::key("b".into());
        source.set("b", 1);
        assert_eq!(*expiring(&*test, "b".into()).await.unwrap(), 1);
        parking.until_parked(1).await;
        test.advance(Duration::from_secs(120));
        source.fail("b", true);
        let error = expiring(&*test, "b".into()).await.unwrap_err();
        assert!(error.compute_error::<SourceDown>().is_some(), "{error}");
        parking.release();
        assert_eq!(coalesced(&test, &key), 0);
    }

    async fn a_read_after_an_invalidation_and_a_delivered_computation_queues_a_refresh(test, source, parking) {
        let key = plain::key("c".into());
        source.set("c", 1);
        assert_eq!(*plain(&*test, "c".into()).await.unwrap(), 1);
        parking.until_parked(1).await;
        // The stored value is marked stale while the flight that computed it
        // is still alive: the next read must see the mark.
        test.cache().invalidate(&key).await.unwrap();
        assert_eq!(*plain(&*test, "c".into()).await.unwrap(), 1);
        parking.release();
        test.cache().wait_idle().await;
        assert_eq!(test.recorder().count(&key, "refresh-queued"), 1);
        assert_eq!(coalesced(&test, &key), 0);
    }

    async fn a_read_after_removal_and_a_delivered_computation_computes_again(test, source, parking) {
        let key = staling::key("d".into());
        source.set("d", 1);
        assert_eq!(*staling(&*test, "d".into()).await.unwrap(), 1);
        parking.until_parked(1).await;
        source.set("d", 2);
        assert!(test.cache().remove(&key).await.unwrap());
        assert_eq!(*staling(&*test, "d".into()).await.unwrap(), 2);
        parking.release();
        assert_eq!(source.reads("d"), 2);
        assert_eq!(coalesced(&test, &key), 0);
    }

    // Soft expiry by the clock, with no memo: every read goes past the
    // slot, where the finished flight must not be found.
    #[configure(|builder: CacheBuilder| builder.memo(false))]
    async fn a_read_past_soft_expiry_by_the_clock_after_a_delivered_computation_queues_a_refresh(test, source, parking) {
        let key = staling::key("e".into());
        source.set("e", 1);
        assert_eq!(*staling(&*test, "e".into()).await.unwrap(), 1);
        parking.until_parked(1).await;
        test.advance(Duration::from_secs(120));
        assert_eq!(*staling(&*test, "e".into()).await.unwrap(), 1, "stale, served");
        parking.release();
        test.cache().wait_idle().await;
        assert_eq!(test.recorder().count(&key, "refresh-queued"), 1);
        assert_eq!(coalesced(&test, &key), 0);
    }
}
