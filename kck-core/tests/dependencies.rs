//! Dependencies: edges recorded from `ctx` reads, changes that refresh or
//! invalidate dependents, early cutoff, cascading invalidation, recursion,
//! and cycles that fail instead of hanging.

mod common;

use std::time::Duration;

use common::{Source, SourceDown, on_every_store, source, test_cache, until};
use kck_core::event::{EventKind, InvalidationCause};
use kck_core::storage::RefreshReason;
use kck_core::{Ctx, Error, ErrorKind, Key, primer};

#[primer(key = "price/{item}")]
async fn price(ctx: &Ctx, item: String) -> Result<i64, SourceDown> {
    source(ctx).read(&format!("price:{item}")).await
}

#[primer(key = "basket/{a}/{b}", depends_on = [price])]
async fn basket(ctx: &Ctx, a: String, b: String) -> Result<i64, Error> {
    Ok(*price(ctx, a).await? + *price(ctx, b).await?)
}

#[primer(key = "basket_lazy/{a}", depends_on = [price], on_change = "invalidate")]
async fn basket_lazy(ctx: &Ctx, a: String) -> Result<i64, Error> {
    Ok(*price(ctx, a).await? * 10)
}

#[primer(key = "parity/{item}", depends_on = [price])]
async fn parity(ctx: &Ctx, item: String) -> Result<bool, Error> {
    Ok(*price(ctx, item).await? % 2 == 0)
}

#[primer(key = "parity_label/{item}", depends_on = [parity])]
async fn parity_label(ctx: &Ctx, item: String) -> Result<String, Error> {
    let even = *parity(ctx, item).await?;
    Ok(if even { "even" } else { "odd" }.to_owned())
}

/// A running total: reads its own product for the previous day.
#[primer(key = "total_to/{day}", depends_on = [total_to, price])]
async fn total_to(ctx: &Ctx, day: u32) -> Result<i64, Error> {
    if day == 0 {
        return Ok(0);
    }
    Ok(*total_to(ctx, day - 1).await? + *price(ctx, day.to_string()).await?)
}

#[primer(key = "ring/{n}", depends_on = [ring])]
async fn ring(ctx: &Ctx, n: u32) -> Result<u32, Error> {
    ring(ctx, (n + 1) % 3).await.map(|next| *next)
}

#[primer(key = "narcissus/{n}", depends_on = [narcissus])]
async fn narcissus(ctx: &Ctx, n: u32) -> Result<u32, Error> {
    narcissus(ctx, n).await.map(|value| *value)
}

#[primer(key = "sneaky/{item}")]
async fn sneaky(ctx: &Ctx, item: String) -> Result<i64, Error> {
    price(ctx, item).await.map(|value| *value)
}

/// Reads a price, then waits on the source, so a test can change the price
/// while it runs.
#[primer(key = "slow_summary/{item}", depends_on = [price])]
async fn slow_summary(ctx: &Ctx, item: String) -> Result<i64, Error> {
    let price = *price(ctx, item).await?;
    source(ctx)
        .read("slow_summary")
        .await
        .map_err(|e| Error::Compute {
            key: ctx.key().clone(),
            source: std::sync::Arc::new(e),
        })?;
    Ok(price)
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

on_every_store! {
    #[tokio::test]
    async fn reads_through_ctx_are_recorded_as_edges(test, _source) {
        basket(&test, "x".into(), "y".into()).await.unwrap();
        assert_eq!(
            test.dependencies(&key("basket/x/y")).await.unwrap(),
            [key("price/x"), key("price/y")]
        );
        assert_eq!(
            test.dependents(&key("price/x")).await.unwrap(),
            [key("basket/x/y")]
        );
        // A read through the cache (not a ctx) records nothing.
        price(&test, "z".into()).await.unwrap();
        assert!(test.dependents(&key("price/z")).await.unwrap().is_empty());
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_change_refreshes_dependents_in_the_background(test, source) {
        source.set("price:x", 1);
        source.set("price:y", 2);
        assert_eq!(*basket(&test, "x".into(), "y".into()).await.unwrap(), 3);

        source.set("price:x", 5);
        assert_eq!(*test.refresh(&price::key("x".into())).await.unwrap(), 5);
        test.settle().await;
        test.assert_computed(&key("basket/x/y"), 2);
        // A worker ran the job the change queued, for that reason.
        let changed = RefreshReason::DependencyChanged { from: key("price/x") };
        let refreshed = test.events().into_iter().any(|event| {
            event.key == key("basket/x/y")
                && matches!(&event.kind, EventKind::RefreshStarted { reasons } if reasons.contains(&changed))
        });
        assert!(refreshed, "{:?}", test.recorder());
        assert_eq!(*basket(&test, "x".into(), "y".into()).await.unwrap(), 7);

        // A manual write is a change too.
        test.set(&price::key("y".into()), 10).await.unwrap();
        test.settle().await;
        assert_eq!(*basket(&test, "x".into(), "y".into()).await.unwrap(), 15);
    }
}

on_every_store! {
    #[tokio::test]
    async fn on_change_invalidate_marks_dependents_stale_until_they_are_read(test, source) {
        source.set("price:x", 1);
        assert_eq!(*basket_lazy(&test, "x".into()).await.unwrap(), 10);

        source.set("price:x", 2);
        test.refresh(&price::key("x".into())).await.unwrap();
        test.settle().await;
        let lazy = key("basket_lazy/x");
        test.assert_computed_once(&lazy);
        assert_eq!(test.recorder().count(&lazy, "invalidated"), 1);

        assert_eq!(
            *basket_lazy(&test, "x".into()).await.unwrap(),
            10,
            "served stale once"
        );
        test.settle().await;
        assert_eq!(*basket_lazy(&test, "x".into()).await.unwrap(), 20);
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_recompute_to_an_equal_value_touches_nothing_downstream(test, source) {
        source.set("price:x", 2);
        assert_eq!(*parity_label(&test, "x".into()).await.unwrap(), "even");
        let changed_at = |entry: kck_core::storage::StoredEntry| entry.meta.changed_at;
        let parity_changed = changed_at(test.entry(&key("parity/x")).await.unwrap().unwrap());

        test.advance(Duration::from_secs(60));
        source.set("price:x", 4);
        test.refresh(&price::key("x".into())).await.unwrap();
        test.settle().await;
        test.assert_computed(&key("parity/x"), 2);
        test.assert_computed_once(&key("parity_label/x"));
        let entry = test.entry(&key("parity/x")).await.unwrap().unwrap();
        assert_eq!(entry.meta.changed_at, parity_changed);
        assert!(entry.meta.computed_at > parity_changed);

        source.set("price:x", 5);
        test.refresh(&price::key("x".into())).await.unwrap();
        test.settle().await;
        test.assert_computed(&key("parity_label/x"), 2);
        assert_eq!(*parity_label(&test, "x".into()).await.unwrap(), "odd");
    }
}

on_every_store! {
    #[tokio::test]
    async fn invalidate_cascades_to_everything_that_read_the_key(test, _source) {
        parity_label(&test, "x".into()).await.unwrap();
        basket(&test, "x".into(), "y".into()).await.unwrap();

        let marked = test.invalidate(&price::key("x".into())).await.unwrap();
        assert_eq!(marked, 4);
        let cause = |key: &Key| {
            test.events()
                .into_iter()
                .find_map(|event| match event.kind {
                    EventKind::Invalidated { cause } if &event.key == key => Some(cause),
                    _ => None,
                })
        };
        assert_eq!(cause(&key("price/x")), Some(InvalidationCause::Requested));
        assert_eq!(
            cause(&key("parity_label/x")),
            Some(InvalidationCause::Cascade {
                from: key("parity/x")
            })
        );
        assert_eq!(test.recorder().count(&key("price/y"), "invalidated"), 0);

        test.clear_events();
        parity_label(&test, "x".into()).await.unwrap();
        assert_eq!(
            test.recorder().kinds_of(&key("parity_label/x"))[..2],
            ["miss", "loaded"]
        );
        test.settle().await;
        test.assert_computed_once(&key("parity_label/x"));
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_primer_may_read_its_own_products_of_other_parameters(test, source) {
        for day in 1..=3 {
            source.set(&format!("price:{day}"), day);
        }
        assert_eq!(*total_to(&test, 3).await.unwrap(), 6);
        assert_eq!(
            test.dependencies(&key("total_to/3")).await.unwrap(),
            [key("total_to/2"), key("price/3")]
        );

        // A change on day 1 travels through every later total.
        source.set("price:1", 11);
        test.refresh(&price::key("1".into())).await.unwrap();
        test.settle().await;
        assert_eq!(*total_to(&test, 3).await.unwrap(), 16);
        for day in ["total_to/1", "total_to/2", "total_to/3"] {
            test.assert_computed(&key(day), 2);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_cycle_between_products_fails_and_names_its_path() {
    let test = test_cache(&Source::new());
    // With paused time, a hang would let the timeout fire at once.
    let result = tokio::time::timeout(Duration::from_secs(3600), ring(&test, 0)).await;
    let error = result.expect("a cycle must not hang").unwrap_err();
    let Error::Cycle { path } = &error else {
        panic!("expected a cycle, got {error}");
    };
    assert_eq!(
        path,
        &[key("ring/2"), key("ring/0"), key("ring/1"), key("ring/2")]
    );
    assert_eq!(
        error.to_string(),
        "dependency cycle: ring/2 -> ring/0 -> ring/1 -> ring/2"
    );
    test.settle().await;

    let error = narcissus(&test, 1).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Cycle);
    assert_eq!(
        error.to_string(),
        "dependency cycle: narcissus/1 -> narcissus/1"
    );
}

on_every_store! {
    #[tokio::test]
    async fn reading_a_primer_that_depends_on_does_not_list_is_an_error(test, _source) {
        let error = sneaky(&test, "x".into()).await.unwrap_err();
        assert!(matches!(
            error,
            Error::UndeclaredDependency {
                from: "sneaky",
                to: "price"
            }
        ));
        assert_eq!(
            error.to_string(),
            "primer `sneaky` read `price`, which its `depends_on` does not list: add `price` to `depends_on`"
        );
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_change_during_a_dependent_computation_refreshes_it_again(test, source) {
        source.set("price:x", 1);
        source.hold();
        let test = std::sync::Arc::new(test);
        source.open();
        price(&*test, "x".into()).await.unwrap();
        source.hold();

        let reader = {
            let test = test.clone();
            tokio::spawn(async move { slow_summary(&*test, "x".into()).await.map(|v| *v) })
        };
        // The summary has read price/x = 1 and waits on the source.
        until(|| source.reads("slow_summary") == 1).await;
        test.set(&price::key("x".into()), 2).await.unwrap();
        source.open();
        assert_eq!(
            reader.await.unwrap().unwrap(),
            1,
            "the read that started first gets the value it computed"
        );
        test.settle().await;
        assert_eq!(*slow_summary(&*test, "x".into()).await.unwrap(), 2);
        test.assert_computed(&key("slow_summary/x"), 2);
    }
}
