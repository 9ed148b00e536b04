//! What an operator sees through `Cache::inspect`, on both stores: products
//! in their states with paging, one product with its value, neighbours and
//! jobs, the primers with their counts, the graph around a product, and
//! the jobs, with retry and cancel. Looking changes nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SourceDown, on_every_store, source};
use kck_core::inspect::ProductFilter;
use kck_core::storage::{
    Entry, EntryStore, Expect, MemoryQueue, MemoryStore, ProductState, Saved, Storage,
};
use kck_core::{Cache, Ctx, ErrorKind, Key, primer};

const MINUTE: Duration = Duration::from_secs(60);

#[primer(key = "inspect_base/{name}", stale_after = "1m")]
async fn inspect_base(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "inspect_double/{name}", depends_on = [inspect_base])]
async fn inspect_double(ctx: &Ctx, name: String) -> Result<i64, kck_core::Error> {
    Ok(*inspect_base(ctx, name).await? * 2)
}

#[primer(key = "inspect_sum/{a}/{b}", depends_on = [inspect_double])]
async fn inspect_sum(ctx: &Ctx, a: String, b: String) -> Result<i64, kck_core::Error> {
    Ok(*inspect_double(ctx, a).await? + *inspect_double(ctx, b).await?)
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

fn keys(page: &kck_core::storage::ProductPage) -> Vec<String> {
    page.products.iter().map(|p| p.key.to_string()).collect()
}

on_every_store! {
    #[tokio::test]
    async fn products_are_listed_by_primer_in_their_states_and_paged(test, source) {
        for (name, value) in [("a", 1), ("b", 2), ("c", 3)] {
            source.set(name, value);
            inspect_double(&test, name.into()).await.unwrap();
        }
        let inspect = test.inspect();
        let page = inspect.products(&ProductFilter::primer("inspect_base")).await.unwrap();
        assert_eq!(keys(&page), ["inspect_base/a", "inspect_base/b", "inspect_base/c"]);
        assert!(page.products.iter().all(|p| p.state == ProductState::Fresh));
        assert_eq!(page.next, None);

        // Every primer, two to a page: primer, then key order.
        let mut all = Vec::new();
        let mut filter = ProductFilter::all().limit(2);
        loop {
            let page = inspect.products(&filter).await.unwrap();
            assert!(page.products.len() <= 2);
            all.extend(keys(&page));
            match page.next {
                Some(next) => filter = filter.after(next),
                None => break,
            }
        }
        assert_eq!(
            all,
            [
                "inspect_base/a", "inspect_base/b", "inspect_base/c",
                "inspect_double/a", "inspect_double/b", "inspect_double/c",
            ]
        );

        // Past the soft expiry, the bases are stale; the doubles stay fresh.
        test.advance(2 * MINUTE);
        let stale = inspect
            .products(&ProductFilter::all().state(ProductState::Stale))
            .await
            .unwrap();
        assert_eq!(keys(&stale), ["inspect_base/a", "inspect_base/b", "inspect_base/c"]);
        let page = inspect.products(&ProductFilter::primer("inspect_base")).await.unwrap();
        assert_eq!(page.products[0].meta.stale_at, Some(page.products[0].meta.computed_at + MINUTE));
        assert!(test.pending_jobs().await.is_empty(), "looking queues nothing");

        let unknown = inspect.products(&ProductFilter::primer("inspect_nothing")).await;
        assert_eq!(unknown.unwrap_err().kind(), ErrorKind::UnknownPrimer);
    }
}

on_every_store! {
    #[tokio::test]
    async fn one_product_shows_its_value_neighbours_and_jobs(test, source) {
        source.set("a", 4);
        source.set("b", 5);
        inspect_sum(&test, "a".into(), "b".into()).await.unwrap();
        let inspect = test.inspect();
        let detail = inspect.product(&key("inspect_double/a")).await.unwrap().unwrap();
        assert_eq!(detail.value, serde_json::json!(8));
        assert_eq!(detail.summary.state, ProductState::Fresh);
        let dependencies: Vec<_> = detail.dependencies.iter().map(|n| n.key.to_string()).collect();
        assert_eq!(dependencies, ["inspect_base/a"]);
        assert!(detail.dependencies[0].current, "it read the current value");
        assert_eq!(detail.dependencies[0].stored.map(|(_, state)| state), Some(ProductState::Fresh));
        let dependents: Vec<_> = detail.dependents.iter().map(|n| n.key.to_string()).collect();
        assert_eq!(dependents, ["inspect_sum/a/b"]);
        assert!(detail.jobs.pending.is_none() && detail.jobs.failed.is_empty());

        // A stale read queues a refresh: the product shows its job.
        test.advance(2 * MINUTE);
        inspect_base(&test, "a".into()).await.unwrap();
        test.pending_jobs().await;
        let detail = inspect.product(&key("inspect_base/a")).await.unwrap().unwrap();
        assert_eq!(detail.summary.state, ProductState::Stale);
        assert!(detail.jobs.pending.is_some(), "its refresh is queued");

        // Missing, malformed, unknown.
        assert!(inspect.product(&key("inspect_base/zzz")).await.unwrap().is_none());
        let wrong = inspect.product(&key("inspect_sum/only_one")).await.unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::InvalidKey);
        let unknown = inspect.product(&key("inspect_nothing/1")).await.unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::UnknownPrimer);
    }
}

on_every_store! {
    #[tokio::test]
    async fn primers_are_counted_by_state_and_drawn_with_their_dependencies(test, source) {
        source.set("a", 1);
        source.set("b", 2);
        inspect_sum(&test, "a".into(), "b".into()).await.unwrap();
        let inspect = test.inspect();
        let primers = inspect.primers(100).await.unwrap();
        let counted: Vec<_> = primers
            .iter()
            .filter(|p| p.def.name.starts_with("inspect_"))
            .map(|p| (p.def.name, p.census.total(), p.census.complete))
            .collect();
        assert_eq!(
            counted,
            [("inspect_base", 2, true), ("inspect_double", 2, true), ("inspect_sum", 1, true)]
        );
        let capped = inspect.primers(1).await.unwrap();
        let base = capped.iter().find(|p| p.def.name == "inspect_base").unwrap();
        assert_eq!((base.census.total(), base.census.complete), (1, false));

        let graph = inspect.primer_graph();
        assert!(graph.edges.contains(&("inspect_double", "inspect_base")));
        assert!(graph.edges.contains(&("inspect_sum", "inspect_double")));

        // The graph around a product, both ways, within a depth.
        let around = inspect.graph(&key("inspect_double/a"), 1, 100).await.unwrap();
        let mut nodes: Vec<_> = around.nodes.iter().map(|n| (n.key.to_string(), n.distance)).collect();
        nodes.sort();
        assert_eq!(
            nodes,
            [
                ("inspect_base/a".to_owned(), -1),
                ("inspect_double/a".to_owned(), 0),
                ("inspect_sum/a/b".to_owned(), 1),
            ]
        );
        assert_eq!(around.edges.len(), 2);
        assert!(!around.truncated);
        let whole = inspect.graph(&key("inspect_sum/a/b"), 5, 100).await.unwrap();
        assert_eq!(whole.nodes.len(), 5, "sum, two doubles, two bases");
        assert_eq!(whole.edges.len(), 4);
        let budget = inspect.graph(&key("inspect_sum/a/b"), 5, 2).await.unwrap();
        assert_eq!(budget.nodes.len(), 2);
        assert!(budget.truncated, "a graph cut short says so");
    }
}

on_every_store! {
    #[tokio::test]
    async fn failed_jobs_are_listed_retried_and_cancelled(test, source) {
        source.set("f", 1);
        inspect_base(&test, "f".into()).await.unwrap();
        test.advance(2 * MINUTE);
        source.fail("f", true);
        inspect_base(&test, "f".into()).await.unwrap();
        // Five attempts (the default), then the job is kept as failed.
        for _ in 0..5 {
            test.settle().await;
            test.advance(5 * MINUTE);
        }
        let inspect = test.inspect();
        let jobs = inspect.jobs(10).await.unwrap();
        assert_eq!(jobs.failed.len(), 1);
        let failed = &jobs.failed[0];
        assert_eq!(failed.key, key("inspect_base/f"));
        let detail = inspect.product(&failed.key).await.unwrap().unwrap();
        assert_eq!(detail.summary.state, ProductState::Failing);
        assert!(detail.summary.meta.last_error.is_some(), "the entry records the error");
        assert_eq!(detail.jobs.failed.len(), 1);
        assert_eq!(detail.jobs.failed[0].attempts, 5, "the job counts every attempt");

        // Retried with the source back: the job runs and the product heals.
        source.fail("f", false);
        source.set("f", 2);
        assert!(inspect.retry_job(failed.id).await.unwrap());
        assert!(!inspect.retry_job(failed.id).await.unwrap(), "only once");
        test.settle().await;
        assert!(inspect.jobs(10).await.unwrap().failed.is_empty());
        let detail = inspect.product(&failed.key).await.unwrap().unwrap();
        assert_eq!(detail.summary.state, ProductState::Fresh);
        assert_eq!(detail.value, serde_json::json!(2));

        // A pending job is cancelled.
        test.advance(2 * MINUTE);
        inspect_base(&test, "f".into()).await.unwrap();
        let pending = test.pending_jobs().await;
        assert_eq!(pending.len(), 1);
        assert!(inspect.cancel_job(pending[0].id).await.unwrap());
        assert!(test.pending_jobs().await.is_empty());
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_product_computing_here_shows_as_computing(test, source) {
        source.set("slow", 1);
        source.hold();
        let cache = test.cache().clone();
        let reading = tokio::spawn(async move { inspect_base(&cache, "slow".into()).await });
        common::until_waiting(&test, &key("inspect_base/slow"), 1).await;
        // Not stored yet: nothing to list.
        assert!(test.inspect().product(&key("inspect_base/slow")).await.unwrap().is_none());
        source.open();
        reading.await.unwrap().unwrap();

        test.advance(2 * MINUTE);
        source.hold();
        let cache = test.cache().clone();
        let refreshing = tokio::spawn(async move { cache.refresh(&inspect_base::key("slow".into())).await });
        // The refresh is computing once it reads the (held) source.
        common::until(|| source.reads("slow") == 2).await;
        let page = test
            .inspect()
            .products(&ProductFilter::primer("inspect_base").state(ProductState::Computing))
            .await
            .unwrap();
        assert_eq!(keys(&page), ["inspect_base/slow"]);
        source.open();
        refreshing.await.unwrap().unwrap();
        let detail = test.inspect().product(&key("inspect_base/slow")).await.unwrap().unwrap();
        assert_eq!(detail.summary.state, ProductState::Fresh);
    }
}

#[tokio::test]
async fn a_store_without_a_catalog_says_so() {
    let store = Arc::new(MemoryStore::new());
    let cache = Cache::builder()
        .store(Storage::new(store.clone(), store))
        .state(common::Source::new())
        .local_worker(false)
        .local_scheduler(false)
        .build()
        .unwrap();
    let error = cache
        .inspect()
        .products(&ProductFilter::all())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NoCatalog);
    assert!(error.to_string().contains("no catalog"), "{error}");
}

#[tokio::test]
async fn a_stored_value_that_is_not_json_is_a_store_error_and_stays_listed() {
    let store = Arc::new(MemoryStore::new());
    let source = common::Source::new();
    let cache = Cache::builder()
        .store(store.clone())
        .state(source.clone())
        .local_worker(false)
        .local_scheduler(false)
        .build()
        .unwrap();
    source.set("x", 1);
    inspect_base(&cache, "x".into()).await.unwrap();
    let stored = store.load(&key("inspect_base/x")).await.unwrap().unwrap();
    let garbled = Entry {
        key: stored.key,
        value: b"\xff not json".to_vec(),
        meta: stored.meta,
        dependencies: Vec::new(),
    };
    let saved = store.save(garbled, Expect::Any).await.unwrap();
    assert!(matches!(saved, Saved::Written(_)), "{saved:?}");

    let error = cache
        .inspect()
        .product(&key("inspect_base/x"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Store);
    assert!(error.to_string().contains("not JSON"), "{error}");
    let page = cache
        .inspect()
        .products(&ProductFilter::primer("inspect_base"))
        .await
        .unwrap();
    assert_eq!(
        keys(&page),
        ["inspect_base/x"],
        "the listing still shows it"
    );
}

/// A cache on PostgreSQL with a queue of its own: a product's jobs are
/// that queue's, not the store's.
#[tokio::test]
async fn a_product_shows_the_jobs_of_the_caches_own_queue() {
    let source = common::Source::new();
    let Some(test) =
        common::on_postgres_with(&source, |builder| builder.queue(MemoryQueue::new())).await
    else {
        return;
    };
    source.set("q", 3);
    inspect_base(&test, "q".into()).await.unwrap();
    test.advance(2 * MINUTE);
    inspect_base(&test, "q".into()).await.unwrap();
    assert_eq!(test.pending_jobs().await.len(), 1, "the stale read queued");
    let detail = test
        .inspect()
        .product(&key("inspect_base/q"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        detail.jobs.pending.is_some(),
        "the job in the cache's queue is shown: {:?}",
        detail.jobs
    );
}
