//! The catalog port: pages and counts of entries.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{
    Catalog, Census, ChangeWatcher, ContentHash, Edge, EntryError, Expect, JobRequest, KeyJobs,
    Lease, Neighbour, ProductPage, ProductQuery, ProductState, RefreshReason, Storage, Version,
};

use super::{at, entry, key, save, written};

const A: &str = "conformance_catalog_a";
const B: &str = "conformance_catalog_b";
const C: &str = "conformance_catalog_c";

/// Checks the [`Catalog`] of `storage` against its entries (and its
/// coordination's leases, for the `computing` state): listing order,
/// paging with cursors, the state of each entry, the state filter with a
/// bounded scan, the census with its cap, and the detail of an entry with
/// its neighbours (and its jobs, from a catalog that lists them). `storage`
/// must have a catalog, and be used by no one else meanwhile; other
/// suites' entries may be there.
///
/// # Panics
///
/// On the first broken rule, saying which, or if `storage` has no catalog.
pub async fn check_catalog(storage: &Storage) {
    let catalog = &**storage
        .catalog()
        .unwrap_or_else(|| panic!("the storage has no catalog"));
    // Two watchers: a store that leases only when shared sees two caches.
    let watchers = [Arc::new(Quiet), Arc::new(Quiet)];
    for watcher in &watchers {
        storage
            .coordination()
            .watch(Arc::downgrade(watcher) as Weak<dyn ChangeWatcher>);
    }
    let now = at(100);
    let states = fill(storage).await;
    let leased = storage
        .coordination()
        .acquire_lease(
            &key(&format!("{A}/k6")),
            "conformance",
            Duration::from_secs(600),
        )
        .await
        .unwrap_or_else(|e| panic!("lease: {e}"));
    let expected = |key: &Key| -> ProductState {
        let state = states
            .iter()
            .find(|(k, _, _)| k == key)
            .map_or(ProductState::Fresh, |(_, state, _)| *state);
        if state == ProductState::Computing && leased != Lease::Acquired {
            // A store that never shares computations holds no leases.
            ProductState::Fresh
        } else {
            state
        }
    };

    // One page holds the primer's entries, in key order, each as stored.
    let page = products(catalog, query(now, Some(A), None, 100)).await;
    let keys: Vec<Key> = states
        .iter()
        .filter(|(k, _, _)| k.primer() == A)
        .map(|(k, _, _)| k.clone())
        .collect();
    assert_eq!(
        listed(&page),
        keys,
        "a primer's page lists its keys in order"
    );
    assert_eq!(page.next, None, "a page that reached the end has no cursor");
    for product in &page.products {
        let (_, _, version) = states
            .iter()
            .find(|(k, _, _)| *k == product.key)
            .unwrap_or_else(|| panic!("{} was saved", product.key));
        assert_eq!(product.version, *version, "{}: its version", product.key);
        assert_eq!(
            product.state,
            expected(&product.key),
            "{}: its state",
            product.key
        );
        assert!(product.size > 0, "{}: its value has a size", product.key);
        let alone = catalog
            .product(&product.key, now)
            .await
            .unwrap_or_else(|e| panic!("product {}: {e}", product.key));
        assert_eq!(
            alone.as_ref(),
            Some(product),
            "one product as the page lists it"
        );
    }
    let missing = catalog.product(&key(&format!("{A}/none")), now).await;
    assert_eq!(missing.ok(), Some(None), "a key without an entry");
    let stale = page
        .products
        .iter()
        .find(|p| p.key == key(&format!("{A}/k2")))
        .unwrap_or_else(|| panic!("k2 is listed"));
    assert_eq!(
        stale.meta.stale_at,
        Some(at(50)),
        "the metadata is the stored one"
    );
    assert_eq!(stale.meta.code_version, "conformance-1");

    // Pages of two follow each other through their cursors.
    let mut paged = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = products(catalog, query(now, Some(A), after.clone(), 2)).await;
        assert!(page.products.len() <= 2, "a page holds at most its limit");
        paged.extend(listed(&page));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(paged, keys, "paging lists every key once, in order");

    // The state filter, with a scan of two entries per page: short pages
    // whose cursors still lead through every entry.
    let mut stale_keys = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let mut q = query(now, Some(A), after.clone(), 10);
        q.state = Some(ProductState::Stale);
        q.scan = 2;
        let page = products(catalog, q).await;
        assert!(
            page.products.iter().all(|p| p.state == ProductState::Stale),
            "the filter keeps one state"
        );
        stale_keys.extend(listed(&page));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    let expected_stale: Vec<Key> = keys
        .iter()
        .filter(|k| expected(k) == ProductState::Stale)
        .cloned()
        .collect();
    assert_eq!(
        stale_keys, expected_stale,
        "the filter finds every stale entry"
    );
    let mut q = query(now, Some(A), None, 10);
    q.state = Some(ProductState::Failing);
    q.scan = 2;
    let page = products(catalog, q).await;
    assert!(
        page.products.is_empty(),
        "no failing entry among the first two"
    );
    assert_eq!(
        page.next,
        Some(key(&format!("{A}/k2"))),
        "an empty page's cursor is the last entry it examined"
    );

    let mut q = query(now, Some(A), None, 1);
    q.state = Some(ProductState::Fresh);
    let page = products(catalog, q).await;
    let first = key(&format!("{A}/k1"));
    assert_eq!(listed(&page), vec![first.clone()], "the first fresh entry");
    assert_eq!(
        page.next,
        Some(first),
        "a full page's cursor is its last product"
    );

    // Every primer: ours appear in primer, then key order.
    let mut everything = Vec::new();
    let mut after = None;
    for _ in 0..1000 {
        let page = products(catalog, query(now, None, after.clone(), 3)).await;
        everything.extend(listed(&page));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    let ours: Vec<Key> = everything
        .into_iter()
        .filter(|k| k.primer() == A || k.primer() == B)
        .collect();
    let all: Vec<Key> = states.iter().map(|(k, _, _)| k.clone()).collect();
    assert_eq!(ours, all, "the whole listing is in primer, then key order");

    // A cursor of another primer starts the primer from its first key.
    let page = products(catalog, query(now, Some(B), Some(keys[3].clone()), 10)).await;
    assert_eq!(listed(&page).len(), 2, "a foreign cursor starts afresh");

    // The census.
    let census = census(catalog, A, now, 100).await;
    let mut counted = Census {
        complete: true,
        ..Census::default()
    };
    for key in &keys {
        counted.add(expected(key), 1);
    }
    assert_eq!(census, counted, "the census counts each state");
    let capped = self::census(catalog, A, now, 3).await;
    assert!(!capped.complete, "a capped census says so");
    assert_eq!(capped.total(), 3, "a capped census counts up to its cap");
    assert_eq!(
        self::census(catalog, "conformance_catalog_none", now, 10).await,
        Census {
            complete: true,
            ..Census::default()
        },
        "a primer without entries"
    );

    check_detail(catalog, storage, &states, now).await;

    // A removed entry leaves the listing.
    let removed = key(&format!("{A}/k1"));
    let _ = storage.entries().remove(&removed).await;
    let page = products(catalog, query(now, Some(A), None, 100)).await;
    assert!(
        !listed(&page).contains(&removed),
        "a removed entry is not listed"
    );
    let _ = storage
        .coordination()
        .release_lease(&key(&format!("{A}/k6")), "conformance")
        .await;
    drop(watchers);
}

/// Every entry, paged through two at a time: each once, in listing order,
/// as `load` and `dependencies` see it.
async fn check_entries(catalog: &dyn Catalog, storage: &Storage) {
    let mut exported = Vec::new();
    let mut after: Option<Key> = None;
    loop {
        let page = catalog
            .entries(after.as_ref(), 2)
            .await
            .unwrap_or_else(|e| panic!("entries: {e}"));
        assert!(page.len() <= 2, "a page of entries holds at most its limit");
        let Some((_, last)) = page.last() else { break };
        after = Some(last.key.clone());
        exported.extend(page);
    }
    let mut listing = Vec::new();
    let mut next = None;
    loop {
        let page = products(catalog, query(at(100), None, next, 1000)).await;
        listing.extend(listed(&page));
        match page.next {
            Some(key) => next = Some(key),
            None => break,
        }
    }
    let keys: Vec<Key> = exported
        .iter()
        .map(|(_, entry)| entry.key.clone())
        .collect();
    assert_eq!(keys, listing, "entries come once each, in listing order");
    for (version, entry) in &exported {
        let stored = storage
            .entries()
            .load(&entry.key)
            .await
            .unwrap_or_else(|e| panic!("load: {e}"))
            .unwrap_or_else(|| panic!("{} is exported but not stored", entry.key));
        assert_eq!(
            (*version, &entry.value, &entry.meta),
            (stored.version, &stored.value, &stored.meta),
            "{} is exported as stored",
            entry.key
        );
        let dependencies = storage
            .entries()
            .dependencies(&entry.key)
            .await
            .unwrap_or_else(|e| panic!("dependencies: {e}"));
        assert_eq!(
            entry.dependencies, dependencies,
            "{} is exported with its dependencies",
            entry.key
        );
    }
    assert!(
        exported
            .iter()
            .any(|(_, entry)| !entry.dependencies.is_empty()),
        "the entries include one with dependencies"
    );
}

/// The detail of an entry that read three others (a current one, a
/// changed one and a missing one, in that order of reading) and of what it
/// read.
async fn check_detail(
    catalog: &dyn Catalog,
    storage: &Storage,
    states: &[(Key, ProductState, Version)],
    now: Timestamp,
) {
    let saved = |name: &str| -> (Key, Version) {
        let key = key(&format!("{A}/{name}"));
        let version = states
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, version)| *version)
            .unwrap_or_else(|| panic!("{key} was saved"));
        (key, version)
    };
    let ((failing, failing_version), (fresh, fresh_version)) = (saved("k4"), saved("k1"));
    let gone = key(&format!("{A}/gone"));
    let reader = key(&format!("{C}/reader"));
    let mut entry = entry(&reader, r#"{"total": 3}"#, &[]);
    entry.meta.last_error = None;
    entry.meta.stale_at = Some(at(200));
    entry.meta.expires_at = None;
    entry.dependencies = vec![
        Edge::new(failing.clone(), Some(ContentHash::of(b"an older value"))),
        Edge::new(
            fresh.clone(),
            Some(ContentHash::of(format!("\"{A} k1\"").as_bytes())),
        ),
        Edge::new(gone.clone(), None),
    ];
    let version = written(
        save(&**storage.entries(), entry, Expect::Any).await,
        "a reader",
    );
    if let Some(queue) = storage.queue() {
        let job = JobRequest::new(reader.clone(), at(150), RefreshReason::Stale);
        queue
            .enqueue(&[job])
            .await
            .unwrap_or_else(|e| panic!("enqueue: {e}"));
    }
    let detail = |key: Key| async move {
        catalog
            .detail(&key, now)
            .await
            .unwrap_or_else(|e| panic!("detail of {key}: {e}"))
    };

    let read = detail(reader.clone())
        .await
        .unwrap_or_else(|| panic!("{reader} is stored"));
    assert_eq!(
        read.value,
        serde_json::json!({"total": 3}),
        "the detail holds the value as JSON"
    );
    assert_eq!(
        Some(read.summary.clone()),
        catalog
            .product(&reader, now)
            .await
            .unwrap_or_else(|e| panic!("product {reader}: {e}")),
        "the detail's summary is the listing's"
    );
    assert_eq!(
        (read.summary.version, read.summary.state),
        (version, ProductState::Fresh)
    );
    assert_eq!(
        read.dependencies,
        vec![
            Neighbour {
                key: failing.clone(),
                stored: Some((failing_version, ProductState::Failing)),
                current: false,
            },
            Neighbour {
                key: fresh.clone(),
                stored: Some((fresh_version, ProductState::Fresh)),
                current: true,
            },
            Neighbour {
                key: gone.clone(),
                stored: None,
                current: false,
            },
        ],
        "dependencies in reading order, each with its state and whether it was seen as it is"
    );
    assert_eq!(read.dependents, Vec::new(), "nothing read the reader");
    if let Some(jobs) = &read.jobs {
        let queue = storage
            .queue()
            .unwrap_or_else(|| panic!("a catalog that lists jobs has a queue"));
        let listed = queue
            .jobs_of(&reader)
            .await
            .unwrap_or_else(|e| panic!("jobs of {reader}: {e}"));
        assert!(listed.pending.is_some(), "the reader's job is pending");
        assert_eq!(jobs, &listed, "the detail's jobs are the queue's");
    }

    let reader_seen = |current: bool| Neighbour {
        key: reader.clone(),
        stored: Some((version, ProductState::Fresh)),
        current,
    };
    let read_fresh = detail(fresh).await.map(|detail| detail.dependents);
    assert_eq!(
        read_fresh,
        Some(vec![reader_seen(true)]),
        "a dependent that saw the current value"
    );
    let read_failing = detail(failing).await.map(|detail| detail.dependents);
    assert_eq!(
        read_failing,
        Some(vec![reader_seen(false)]),
        "a dependent that saw an older value"
    );
    assert_eq!(detail(gone).await, None, "no detail of a missing entry");
    check_entries(catalog, storage).await;
    let _ = storage.entries().remove(&reader).await;
    if let Some(queue) = storage.queue()
        && let Ok(KeyJobs {
            pending: Some(job), ..
        }) = queue.jobs_of(&reader).await
    {
        let _ = queue.cancel(job.id).await;
    }
}

/// Saves the suite's entries; returns each key with the state it is in at
/// `at(100)` and its version.
async fn fill(storage: &Storage) -> Vec<(Key, ProductState, Version)> {
    let mut saved = Vec::new();
    let plan: [(&str, &str, ProductState); 9] = [
        (A, "k1", ProductState::Fresh),
        (A, "k2", ProductState::Stale),
        (A, "k3", ProductState::Expired),
        (A, "k4", ProductState::Failing),
        (A, "k5", ProductState::Stale),
        (A, "k6", ProductState::Computing),
        (A, "k7", ProductState::Fresh),
        (B, "k1", ProductState::Fresh),
        (B, "k2", ProductState::Fresh),
    ];
    for (primer, name, state) in plan {
        let key = key(&format!("{primer}/{name}"));
        let mut entry = entry(&key, &format!("\"{primer} {name}\""), &[]);
        entry.meta.last_error = None;
        entry.meta.stale_at = Some(at(200));
        entry.meta.expires_at = None;
        match state {
            ProductState::Stale => entry.meta.stale_at = Some(at(50)),
            ProductState::Expired => entry.meta.expires_at = Some(at(80)),
            ProductState::Failing => {
                entry.meta.stale_at = Some(at(50));
                entry.meta.last_error = Some(EntryError {
                    message: "it broke".to_owned(),
                    at: at(90),
                    attempts: 3,
                });
            }
            ProductState::Fresh | ProductState::Computing => {}
        }
        let version = written(
            save(&**storage.entries(), entry, Expect::Any).await,
            "a catalog entry",
        );
        saved.push((key, state, version));
    }
    saved
}

fn query(now: Timestamp, primer: Option<&str>, after: Option<Key>, limit: usize) -> ProductQuery {
    let mut query = ProductQuery::new(limit, now);
    query.primer = primer.map(str::to_owned);
    query.after = after;
    query
}

fn listed(page: &ProductPage) -> Vec<Key> {
    page.products.iter().map(|p| p.key.clone()).collect()
}

async fn products(catalog: &dyn Catalog, query: ProductQuery) -> ProductPage {
    catalog
        .products(&query)
        .await
        .unwrap_or_else(|e| panic!("products {query:?}: {e}"))
}

async fn census(catalog: &dyn Catalog, primer: &str, now: Timestamp, cap: usize) -> Census {
    catalog
        .census(primer, now, cap)
        .await
        .unwrap_or_else(|e| panic!("census of {primer}: {e}"))
}

/// A watcher that listens to nothing.
struct Quiet;

impl ChangeWatcher for Quiet {
    fn changed(&self, _: &Key, _: Version) {}
    fn released(&self, _: &Key) {}
    fn tracking(&self, _: bool) {}
}
