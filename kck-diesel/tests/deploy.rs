//! A rolling deploy on one PostgreSQL store: caches running the old and
//! the new code of the same primers read the same products, hundreds of
//! times, alternately. The newest code (the later start) owns the stored
//! entries; the old code computes its own answer once and keeps it in its
//! memory. Nothing flips back and forth, and no dependent is refreshed in
//! a loop.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kck_core::clock::Timestamp;
use kck_core::primer::Registry;
use kck_core::storage::Storage;
use kck_diesel::PgStore;
use kck_testing::TestCache;
use kck_testing::postgres::TestDatabase;

/// The code before the deploy.
mod old {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kck_core::{Ctx, primer};

    /// Computations run by this code, of either primer.
    pub(crate) static RUNS: AtomicUsize = AtomicUsize::new(0);

    #[primer(key = "deployed/{n}", version = "old", stale_after = "1m")]
    pub async fn deployed(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
        RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }

    #[primer(key = "summary/{n}", depends_on = [deployed], version = "old", stale_after = "1m")]
    pub async fn summary(ctx: &Ctx, n: u32) -> Result<u32, kck_core::Error> {
        RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(*deployed(ctx, n).await? + 1000)
    }
}

/// The code after it: other values, so that a flip would show.
mod new {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kck_core::{Ctx, primer};

    /// Computations run by this code, of either primer.
    pub(crate) static RUNS: AtomicUsize = AtomicUsize::new(0);

    #[primer(key = "deployed/{n}", version = "new", stale_after = "1m")]
    pub async fn deployed(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
        RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(n * 2)
    }

    #[primer(key = "summary/{n}", depends_on = [deployed], version = "new", stale_after = "1m")]
    pub async fn summary(ctx: &Ctx, n: u32) -> Result<u32, kck_core::Error> {
        RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(*deployed(ctx, n).await? + 2000)
    }
}

const PRODUCTS: u32 = 3;
const ROUNDS: usize = 100;

/// How many computations the old code and the new code ran so far.
fn runs() -> (usize, usize) {
    (
        old::RUNS.load(Ordering::SeqCst),
        new::RUNS.load(Ordering::SeqCst),
    )
}

async fn settle(old: &TestCache, new: &TestCache) {
    for _ in 0..3 {
        old.settle().await;
        new.settle().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_code_on_one_store_compute_each_product_once_per_code_version() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let start = Timestamp::from_unix_micros(1_800_000_000_000_000);
    let old_registry = Registry::builder()
        .register::<old::deployed>()
        .register::<old::summary>()
        .build()
        .expect("valid primers");
    let new_registry = Registry::builder()
        .register::<new::deployed>()
        .register::<new::summary>()
        .build()
        .expect("valid primers");

    // The old code runs alone, and stores its products.
    let old = TestCache::builder()
        .registry(old_registry)
        .store(Storage::from(db.connect().await))
        .start_at(start)
        .build();
    for n in 1..=PRODUCTS {
        assert_eq!(*old::summary(old.cache(), n).await.expect("old"), n + 1000);
    }
    assert_eq!(runs(), (2 * PRODUCTS as usize, 0));

    // The new code starts a second later, on the same database.
    let store = PgStore::connect(db.url()).await.expect("connects");
    let new = TestCache::builder()
        .registry(new_registry)
        .store(Storage::from(store))
        .start_at(Timestamp::from_unix_micros(1_800_000_001_000_000))
        .build();

    let mut after_two_rounds = None;
    for round in 0..ROUNDS {
        for n in 1..=PRODUCTS {
            assert_eq!(
                *new::summary(new.cache(), n).await.expect("new"),
                2 * n + 2000
            );
            assert_eq!(*new::deployed(new.cache(), n).await.expect("new"), 2 * n);
            assert_eq!(*old::summary(old.cache(), n).await.expect("old"), n + 1000);
            assert_eq!(*old::deployed(old.cache(), n).await.expect("old"), n);
        }
        settle(&old, &new).await;
        // The old code hears of the new code's writes when it hears: in
        // the first round or once it settled. By the end of the second
        // round it has heard them all, and has answered again.
        if round == 1 {
            after_two_rounds = Some(runs());
        }
    }

    // The new code computed each product once; the old code, once more
    // each after the new code took the entries over (it serves that from
    // memory). After the second round, nobody computed anything.
    let (old_runs, new_runs) = runs();
    assert_eq!(
        new_runs,
        2 * PRODUCTS as usize,
        "the new code, once per product"
    );
    assert!(
        old_runs <= 2 * 2 * PRODUCTS as usize,
        "the old code, at most once more per product: {old_runs}"
    );
    assert_eq!(
        after_two_rounds,
        Some((old_runs, new_runs)),
        "reads after the second round computed nothing"
    );
    assert!(
        new.pending_jobs().await.is_empty(),
        "no refresh keeps going"
    );
    assert!(
        old.events()
            .iter()
            .any(|event| event.kind.name() == "superseded"),
        "the old code kept its answers to itself"
    );

    // Once its copies are stale, the old code refreshes them, and still
    // stores nothing over the new code's entries.
    old.clear_events();
    old.advance(Duration::from_secs(120));
    for _ in 0..2 {
        for n in 1..=PRODUCTS {
            assert_eq!(*old::summary(old.cache(), n).await.expect("old"), n + 1000);
        }
        settle(&old, &new).await;
    }
    let stored_by_old: Vec<String> = old
        .events()
        .iter()
        .filter(|event| matches!(event.kind.name(), "computed" | "set" | "failed"))
        .map(ToString::to_string)
        .collect();
    assert!(stored_by_old.is_empty(), "{stored_by_old:?}");
    assert!(
        old.events()
            .iter()
            .any(|event| event.kind.name() == "superseded"),
        "the stale copies were refreshed, in memory"
    );

    // The store holds the new code's products.
    let reader = PgStore::connect(db.url()).await.expect("connects");
    let check = TestCache::builder()
        .registry(
            Registry::builder()
                .register::<new::deployed>()
                .register::<new::summary>()
                .build()
                .expect("valid primers"),
        )
        .store(Storage::from(reader))
        .start_at(start)
        .build();
    for n in 1..=PRODUCTS {
        assert_eq!(
            *new::summary(check.cache(), n).await.expect("stored"),
            2 * n + 2000
        );
    }
    assert_eq!(runs().1, new_runs, "the new code's products were stored");
}
