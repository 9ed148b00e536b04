//! Augment: deltas applied in place with compare-and-set, falling back to a
//! full recompute, reaching dependents, and verified against full
//! recomputes.

mod common;

use std::time::Duration;

use common::{SourceDown, on_every_store, source};
use kck_core::augment::{Augment, AugmentFrom, Augmented};
use kck_core::event::EventKind;
use kck_core::{Ctx, primer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    sales: u64,
    cents: i64,
}

async fn full_tally(ctx: &Ctx, shop: &str) -> Result<Tally, SourceDown> {
    let sales = source(ctx).read(&format!("sales/{shop}")).await?;
    let cents = source(ctx).read(&format!("cents/{shop}")).await?;
    Ok(Tally {
        sales: sales.unsigned_abs(),
        cents,
    })
}

/// A shop's sales, in full from the source, or one sale at a time.
#[primer(key = "tally/{shop}", augment)]
async fn tally(ctx: &Ctx, shop: String) -> Result<Tally, SourceDown> {
    full_tally(ctx, &shop).await
}

impl Augment for tally {
    type Delta = i64;

    /// A refund (a negative sale) cannot be applied in place.
    fn augment(tally: &Tally, cents: &i64) -> Option<Tally> {
        (*cents >= 0).then(|| Tally {
            sales: tally.sales + 1,
            cents: tally.cents + cents,
        })
    }
}

/// Reads `tally`: refreshed when it changes.
#[primer(key = "receipt/{shop}", depends_on = [tally])]
async fn receipt(ctx: &Ctx, shop: String) -> Result<String, kck_core::Error> {
    let tally = tally(ctx, shop).await?;
    Ok(format!("{} sales, {} cents", tally.sales, tally.cents))
}

/// The cents of a shop, from `tally`: augmented with the cents of each sale
/// that augments `tally`.
#[primer(key = "takings/{shop}", depends_on = [tally], augment, augment_from = [tally])]
async fn takings(ctx: &Ctx, shop: String) -> Result<i64, kck_core::Error> {
    Ok(tally(ctx, shop).await?.cents)
}

impl Augment for takings {
    type Delta = i64;

    fn augment(cents: &i64, sale: &i64) -> Option<i64> {
        Some(cents + sale)
    }
}

impl AugmentFrom<tally> for takings {
    fn map(sale: &i64) -> Option<i64> {
        Some(*sale)
    }
}

/// A shop's count of sales, as a float, from `tally`: its mapping yields a
/// delta JSON cannot carry (NaN) for a sale of zero cents.
#[primer(key = "share/{shop}", depends_on = [tally], augment, augment_from = [tally])]
async fn share(ctx: &Ctx, shop: String) -> Result<f64, kck_core::Error> {
    Ok(tally(ctx, shop).await?.sales as f64)
}

impl Augment for share {
    type Delta = f64;

    fn augment(share: &f64, delta: &f64) -> Option<f64> {
        Some(share + delta)
    }
}

impl AugmentFrom<tally> for share {
    fn map(sale: &i64) -> Option<f64> {
        Some(if *sale == 0 { f64::NAN } else { 1.0 })
    }
}

/// Like `tally`, with an augment function that counts every sale twice.
#[primer(key = "sloppy/{shop}", augment, verify_every = "1m")]
async fn sloppy(ctx: &Ctx, shop: String) -> Result<Tally, SourceDown> {
    full_tally(ctx, &shop).await
}

impl Augment for sloppy {
    type Delta = i64;

    fn augment(tally: &Tally, cents: &i64) -> Option<Tally> {
        Some(Tally {
            sales: tally.sales + 1,
            cents: tally.cents + 2 * cents,
        })
    }
}

on_every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delta_is_applied_in_place_without_a_recompute(test, source) {
        source.set("sales/a", 2);
        source.set("cents/a", 700);
        let key = tally::key("a".into());
        assert_eq!(*tally(&test, "a".into()).await.unwrap(), Tally { sales: 2, cents: 700 });
        let applied = test.augment(&key, &350).await.unwrap();
        assert!(matches!(applied, Augmented::Applied { changed: true, .. }), "{applied:?}");
        assert_eq!(
            test.peek(&key).await.unwrap().as_deref(),
            Some(&Tally { sales: 3, cents: 1050 })
        );
        test.assert_computed_once(key.key());
        assert_eq!(test.recorder().count(key.key(), "augmented"), 1);
        // Read back from the store, not only from the memo.
        assert_eq!(
            test.get_json(key.key()).await.unwrap(),
            serde_json::json!({ "sales": 3, "cents": 1050 })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deltas_are_all_counted(test, _source) {
        let key = tally::key("busy".into());
        tally(&test, "busy".into()).await.unwrap();
        let deltas = (1..=40_i64).map(|cents| {
            let cache = test.cache().clone();
            let key = key.clone();
            tokio::spawn(async move { cache.augment(&key, &cents).await })
        });
        for outcome in futures_util::future::join_all(deltas).await {
            let outcome = outcome.expect("no panic").expect("applied");
            assert!(matches!(outcome, Augmented::Applied { changed: true, .. }), "{outcome:?}");
        }
        assert_eq!(
            test.peek(&key).await.unwrap().as_deref(),
            Some(&Tally { sales: 40, cents: (1..=40).sum() }),
            "no update was lost"
        );
        test.assert_computed_once(key.key());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_value_or_when_declined_it_recomputes(test, source) {
        source.set("sales/b", 1);
        source.set("cents/b", 100);
        let key = tally::key("b".into());
        assert_eq!(test.augment(&key, &50).await.unwrap(), Augmented::Recomputed);
        assert_eq!(
            test.peek(&key).await.unwrap().as_deref(),
            Some(&Tally { sales: 1, cents: 100 }),
            "the full computation, which reads the source"
        );
        test.assert_computed_once(key.key());

        source.set("sales/b", 2);
        source.set("cents/b", 60);
        assert_eq!(test.augment(&key, &-40).await.unwrap(), Augmented::Recomputed);
        assert_eq!(
            test.peek(&key).await.unwrap().as_deref(),
            Some(&Tally { sales: 2, cents: 60 })
        );
        test.assert_computed(key.key(), 2);
        let declined: Vec<String> = test
            .recorder()
            .events_of(key.key())
            .iter()
            .filter(|event| matches!(event.kind, EventKind::AugmentDeclined { .. }))
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            declined,
            [
                "augment-declined tally/b: no value to apply it to",
                "augment-declined tally/b: the primer declined the delta"
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dependents_see_the_augmented_value(test, _source) {
        assert_eq!(*receipt(&test, "c".into()).await.unwrap(), "0 sales, 0 cents");
        test.augment(&tally::key("c".into()), &125).await.unwrap();
        test.settle().await;
        assert_eq!(
            test.peek(&receipt::key("c".into())).await.unwrap().as_deref().map(String::as_str),
            Some("1 sales, 125 cents")
        );
        test.assert_computed(receipt::key("c".into()).key(), 2);
        test.assert_computed_once(tally::key("c".into()).key());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verification_heals_a_wrong_augment_function(test, source) {
        let key = sloppy::key("d".into());
        sloppy(&test, "d".into()).await.unwrap();
        // Within `verify_every` of the full computation: nothing to verify.
        test.augment(&key, &10).await.unwrap();
        source.set("sales/d", 1);
        source.set("cents/d", 10);
        test.settle().await;
        assert_eq!(
            test.peek(&key).await.unwrap().as_deref(),
            Some(&Tally { sales: 1, cents: 20 }),
            "the wrong value stands until verified"
        );
        test.advance(Duration::from_secs(61));
        test.augment(&key, &5).await.unwrap();
        source.set("sales/d", 2);
        source.set("cents/d", 15);
        test.settle().await;
        assert_eq!(
            test.peek(&key).await.unwrap().as_deref(),
            Some(&Tally { sales: 2, cents: 15 }),
            "the recomputed value replaced the drifted one"
        );
        assert_eq!(test.recorder().count(key.key(), "drift"), 1);
        test.assert_computed(key.key(), 2);
    }
}

on_every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dependent_that_maps_the_delta_is_augmented_too(test, source) {
        source.set("cents/e", 500);
        let (upstream, dependent) = (tally::key("e".into()), takings::key("e".into()));
        assert_eq!(*takings(&test, "e".into()).await.unwrap(), 500);
        test.augment(&upstream, &120).await.unwrap();
        test.augment(&upstream, &30).await.unwrap();
        test.settle().await;
        assert_eq!(test.peek(&dependent).await.unwrap().as_deref(), Some(&650));
        test.assert_computed_once(dependent.key());
        assert!(test.recorder().count(dependent.key(), "augmented") >= 1);
        // `receipt` reads `tally` but cannot map its deltas: recomputed.
        assert_eq!(*receipt(&test, "e".into()).await.unwrap(), "2 sales, 650 cents");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_no_delta_describes_makes_the_dependent_recompute(test, source) {
        source.set("cents/f", 500);
        let (upstream, dependent) = (tally::key("f".into()), takings::key("f".into()));
        assert_eq!(*takings(&test, "f".into()).await.unwrap(), 500);
        // A write without a delta, then a delta on top of it.
        test.set(&upstream, Tally { sales: 9, cents: 900 }).await.unwrap();
        test.augment(&upstream, &100).await.unwrap();
        test.settle().await;
        assert_eq!(
            test.peek(&dependent).await.unwrap().as_deref(),
            Some(&1000),
            "recomputed from the upstream value, not 500 + 100"
        );
        test.assert_computed(dependent.key(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mapped_delta_that_would_not_read_back_makes_the_dependent_recompute(test, source) {
        source.set("sales/g", 1);
        let (upstream, dependent) = (tally::key("g".into()), share::key("g".into()));
        assert_eq!(*share(&test, "g".into()).await.unwrap(), 1.0);
        // A sale of zero cents maps to NaN: refused, so the dependent is
        // recomputed from the upstream value, and no delta is stored.
        test.augment(&upstream, &0).await.unwrap();
        test.settle().await;
        assert_eq!(test.peek(&dependent).await.unwrap().as_deref(), Some(&2.0));
        test.assert_computed(dependent.key(), 2);
        assert_eq!(test.recorder().count(dependent.key(), "augmented"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_that_started_before_an_augment_does_not_overwrite_it(test, source) {
        source.set("sales/h", 1);
        source.set("cents/h", 100);
        let key = tally::key("h".into());
        tally(&test, "h".into()).await.unwrap();
        // A refresh reads the source, which does not have the next sale yet.
        test.advance(Duration::from_secs(1));
        source.hold();
        let cache = test.cache().clone();
        let refreshing = {
            let key = key.clone();
            tokio::spawn(async move { cache.refresh(&key).await })
        };
        common::until(|| source.reads("sales/h") == 2).await;
        // The sale arrives as a delta meanwhile.
        test.advance(Duration::from_secs(1));
        let augmented = test.augment(&key, &50).await.unwrap();
        assert!(matches!(augmented, Augmented::Applied { changed: true, .. }));
        source.open();
        refreshing.await.unwrap().unwrap();
        let stored = test.entry(key.key()).await.unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<Tally>(&stored.value).unwrap(),
            Tally { sales: 2, cents: 150 },
            "the augmented value stands"
        );
        assert_eq!(test.recorder().count(key.key(), "conflict"), 1);
    }
}

/// A memory store whose next augment loses its race: just before the write,
/// the entry is written again, same value, new version.
struct RacedStore {
    inner: std::sync::Arc<kck_core::storage::MemoryStore>,
    armed: std::sync::atomic::AtomicBool,
}

mod raced {
    use std::sync::atomic::Ordering;

    use futures_util::future::BoxFuture;
    use kck_core::Key;
    use kck_core::storage::{
        ContentHash, Edge, Entry, EntryPatch, EntryStore, Expect, JobDelta, Saved, StoreError,
        StoredEntry, Version,
    };

    use super::RacedStore;

    impl EntryStore for RacedStore {
        fn load<'a>(
            &'a self,
            key: &'a Key,
        ) -> BoxFuture<'a, Result<Option<StoredEntry>, StoreError>> {
            self.inner.load(key)
        }

        fn save(&self, entry: Entry, expect: Expect) -> BoxFuture<'_, Result<Saved, StoreError>> {
            self.inner.save(entry, expect)
        }

        fn save_with_deltas(
            &self,
            entry: Entry,
            expect: Expect,
            deltas: Vec<JobDelta>,
        ) -> BoxFuture<'_, Result<Saved, StoreError>> {
            Box::pin(async move {
                if self.armed.swap(false, Ordering::SeqCst)
                    && let Some(stored) = self.inner.load(&entry.key).await?
                {
                    let again = Entry {
                        key: entry.key.clone(),
                        value: stored.value,
                        meta: stored.meta,
                        dependencies: entry.dependencies.clone(),
                    };
                    let _raced = self.inner.save(again, Expect::Any).await?;
                }
                self.inner.save_with_deltas(entry, expect, deltas).await
            })
        }

        fn patch<'a>(
            &'a self,
            key: &'a Key,
            patch: EntryPatch,
            expect: Expect,
        ) -> BoxFuture<'a, Result<Saved, StoreError>> {
            self.inner.patch(key, patch, expect)
        }

        fn remove<'a>(
            &'a self,
            key: &'a Key,
        ) -> BoxFuture<'a, Result<Option<Version>, StoreError>> {
            self.inner.remove(key)
        }

        fn content_hashes<'a>(
            &'a self,
            keys: &'a [Key],
        ) -> BoxFuture<'a, Result<Vec<Option<ContentHash>>, StoreError>> {
            self.inner.content_hashes(keys)
        }

        fn dependents<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
            self.inner.dependents(key)
        }

        fn dependencies<'a>(
            &'a self,
            key: &'a Key,
        ) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
            self.inner.dependencies(key)
        }
    }
}

#[tokio::test]
async fn an_augment_that_loses_a_race_says_so_and_applies_to_the_newer_value() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use kck_core::storage::{MemoryStore, Storage};

    let memory = Arc::new(MemoryStore::new());
    let raced = Arc::new(RacedStore {
        inner: memory.clone(),
        armed: AtomicBool::new(false),
    });
    let storage = Storage::new(raced.clone(), memory.clone()).with_coordination(memory);
    let source = common::Source::new();
    source.set("sales/r", 1);
    source.set("cents/r", 100);
    let test = {
        let source = source.clone();
        kck_testing::TestCache::builder()
            .store(storage)
            .configure(move |builder| builder.state(source.clone()))
            .build()
    };
    let key = tally::key("r".into());
    tally(&test, "r".into()).await.unwrap();

    raced.armed.store(true, Ordering::SeqCst);
    let augmented = test.augment(&key, &50).await.unwrap();
    assert!(matches!(
        augmented,
        Augmented::Applied { changed: true, .. }
    ));
    assert_eq!(
        *tally(&test, "r".into()).await.unwrap(),
        Tally {
            sales: 2,
            cents: 150
        }
    );
    let kinds: Vec<EventKind> = test
        .events()
        .into_iter()
        .filter(|event| &event.key == key.key())
        .map(|event| event.kind)
        .collect();
    assert!(
        kinds
            .iter()
            .any(|kind| matches!(kind, EventKind::AugmentRetried { attempt: 1 })),
        "{kinds:?}"
    );
    assert_eq!(test.recorder().count(key.key(), "conflict"), 0);
    assert_eq!(test.recorder().count(key.key(), "augment-retried"), 1);
}
