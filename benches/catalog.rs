//! The catalog of the PostgreSQL store, on 1,000,000 products in 10
//! primers: pages (first, from a cursor in the middle, of one primer,
//! filtered to a rare state), one product, and a primer's census, each
//! against a raw diesel-async query on the same pool that reads the same
//! rows without kck's states, sizes and bounds.
//!
//! Run: `cargo bench -p kck-benches --bench catalog`. It needs PostgreSQL
//! as the tests do (`KCK_TEST_DATABASE_URL`, or the local server binaries).
//! The results are printed and written to `BENCHMARKS.md`.

use std::future::Future;
use std::hint::black_box;
use std::time::{Instant, SystemTime};

use diesel::QueryableByName;
use diesel::pg::data_types::PgTimestamp;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{Catalog, ProductQuery, ProductState};

mod common;
mod products;
mod report;

use common::{median, visiting_order};
use products::{PRIMERS, PRODUCTS, raw, raw_sql};

const ROUNDS: usize = 5;
/// Repetitions of each page query in a round.
const PAGE_REPS: usize = 100;
/// Repetitions of each one-product lookup in a round.
const PRODUCT_REPS: usize = 2_000;
/// Repetitions of each census in a round.
const CENSUS_REPS: usize = 50;
const PAGE: usize = 100;
const SCAN: usize = 10_000;
const CAP: usize = 10_000;
/// "A store with 1,000,000 products answers a page in milliseconds", read
/// as a mean of at most this many seconds per page.
const PAGE_GOAL: f64 = 0.010;

raw_sql! {
    /// (a), (b): a page of every primer after a cursor.
    RawPage = "SELECT key, version, computed_at, stale_at, expires_at, error_message \
               FROM kck_entries WHERE (primer, key) > ({}, {}) ORDER BY primer, key LIMIT 100";
    /// (c): a page of one primer after a cursor.
    RawPrimerPage = "SELECT key, version, computed_at, stale_at, expires_at, error_message \
                     FROM kck_entries WHERE primer = {} AND key > {} ORDER BY key LIMIT 100";
    /// (d): the failing entries among the first 10,000 after a cursor.
    RawFailing = "SELECT key, version, computed_at, stale_at, expires_at, error_message FROM ( \
                      SELECT key, primer, version, computed_at, stale_at, expires_at, error_message \
                      FROM kck_entries WHERE (primer, key) > ({}, {}) \
                      ORDER BY primer, key LIMIT 10000 \
                  ) AS s WHERE error_message IS NOT NULL ORDER BY primer, key LIMIT 100";
    /// (e): one entry by its key.
    RawProduct = "SELECT key, version, computed_at, stale_at, expires_at, error_message \
                  FROM kck_entries WHERE key = {}";
    /// (f): a primer's first 10,000 entries per state (no leases).
    RawCensus = "SELECT state, count(*) AS count FROM ( \
                     SELECT CASE WHEN error_message IS NOT NULL THEN 'failing' \
                                 WHEN expires_at <= to_timestamp({}::double precision / 1e6) THEN 'expired' \
                                 WHEN stale_at <= to_timestamp({}::double precision / 1e6) THEN 'stale' \
                                 ELSE 'fresh' END AS state \
                     FROM kck_entries WHERE primer = {} ORDER BY key LIMIT 10000 \
                 ) AS s GROUP BY state";
}

/// What the raw queries read of an entry.
#[derive(QueryableByName)]
struct RawRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Timestamptz)]
    computed_at: PgTimestamp,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    stale_at: Option<PgTimestamp>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    expires_at: Option<PgTimestamp>,
    #[diesel(sql_type = Nullable<Text>)]
    error_message: Option<String>,
}

/// A state's count.
#[derive(QueryableByName)]
struct RawCount {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// One round of `reps` calls of `op`: mean and p99 latency, in seconds.
async fn round<F, Fut>(reps: usize, mut op: F) -> (f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = usize>,
{
    let mut samples = Vec::with_capacity(reps);
    for i in 0..reps {
        let started = Instant::now();
        black_box(op(i).await);
        samples.push(started.elapsed().as_secs_f64());
    }
    let mean = samples.iter().sum::<f64>() / reps as f64;
    samples.sort_by(f64::total_cmp);
    let p99 = samples[(reps * 99).div_ceil(100) - 1];
    (mean, p99)
}

/// Medians over `ROUNDS` rounds of mean and p99 latency.
#[derive(Clone, Copy)]
struct Latency {
    mean: f64,
    p99: f64,
}

/// `ROUNDS` rounds of kck's `op` and the baseline's, alternating which goes
/// first, after one call of each to warm up.
async fn compare<K, KF, B, BF>(reps: usize, mut kck: K, mut baseline: B) -> (Latency, Latency)
where
    K: FnMut(usize) -> KF,
    KF: Future<Output = usize>,
    B: FnMut(usize) -> BF,
    BF: Future<Output = usize>,
{
    black_box(kck(0).await);
    black_box(baseline(0).await);
    let (mut k, mut b) = (Vec::new(), Vec::new());
    for n in 0..ROUNDS {
        if n % 2 == 0 {
            k.push(round(reps, &mut kck).await);
            b.push(round(reps, &mut baseline).await);
        } else {
            b.push(round(reps, &mut baseline).await);
            k.push(round(reps, &mut kck).await);
        }
    }
    let medians = |samples: Vec<(f64, f64)>| Latency {
        mean: median(samples.iter().map(|s| s.0).collect()),
        p99: median(samples.iter().map(|s| s.1).collect()),
    };
    (medians(k), medians(b))
}

fn ms(seconds: f64) -> String {
    if seconds < 0.001 {
        format!("{:.1} µs", seconds * 1e6)
    } else {
        format!("{:.2} ms", seconds * 1e3)
    }
}

/// One measure: its name, kck's latency, the baseline's, and notes.
type Row = (&'static str, Latency, Latency, String);

/// The one-line conclusion, from the numbers: the pages (the first four
/// rows) against the goal, then the ratios.
fn conclusion(rows: &[Row]) -> String {
    let pages = &rows[..4];
    let slowest = pages.iter().map(|row| row.1.mean).fold(0.0, f64::max);
    let fastest = pages.iter().map(|row| row.1.mean).fold(f64::MAX, f64::min);
    let ratios = |rows: &[Row]| {
        let ratios: Vec<f64> = rows.iter().map(|row| row.1.mean / row.2.mean).collect();
        (
            ratios.iter().copied().fold(f64::MAX, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
        )
    };
    let (low, high) = ratios(pages);
    let (product, census) = (&rows[4], &rows[5]);
    let verdict = if slowest <= PAGE_GOAL {
        format!(
            "meets the goal: every page of 100 took at most {} on average",
            ms(slowest)
        )
    } else {
        format!(
            "misses the goal of {:.0} ms a page: pages of 100 took {} to {} on average",
            PAGE_GOAL * 1e3,
            ms(fastest),
            ms(slowest)
        )
    };
    format!(
        "Conclusion: on 1,000,000 products the catalog {verdict}, {low:.1}x to {high:.1}x the raw query; one product took {:.1}x and a census {:.1}x their baselines.",
        product.1.mean / product.2.mean,
        census.1.mean / census.2.mean
    )
}

/// `n` with a comma every three digits.
fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

fn main() {
    common::runtime().block_on(async {
        let now = Timestamp::from_system_time(SystemTime::now());
        let Some((_db, store, filled)) = products::filled(now).await else {
            return;
        };

        let middle = format!("primer_5/{:07}", PRODUCTS / 2 + 5);
        let primer_middle = format!("primer_3/{:07}", PRODUCTS / 2 + 3);
        let mut rows: Vec<Row> = Vec::new();

        // (a) The first page of every primer.
        let first = ProductQuery::new(PAGE, now);
        let page = store.products(&first).await.expect("a page");
        let raw_page: Vec<RawRow> = raw::<RawPage, _>(&store, &["", ""]).await;
        assert_eq!(page.products.len(), PAGE);
        assert!(
            page.products
                .iter()
                .map(|p| p.key.as_str())
                .eq(raw_page.iter().map(|r| r.key.as_str())),
            "the same first page"
        );
        let (k, b) = compare(
            PAGE_REPS,
            |_| async { store.products(&first).await.expect("a page").products.len() },
            |_| async { raw::<RawPage, RawRow>(&store, &["", ""]).await.len() },
        )
        .await;
        rows.push(("(a) first page of 100, every primer", k, b, String::new()));

        // (b) A page from the middle: the cursor is a key of primer_5.
        let query = ProductQuery {
            after: Some(key(&middle)),
            ..ProductQuery::new(PAGE, now)
        };
        let page = store.products(&query).await.expect("a page");
        let raw_page: Vec<RawRow> = raw::<RawPage, _>(&store, &["primer_5", &middle]).await;
        assert!(
            page.products
                .iter()
                .map(|p| p.key.as_str())
                .eq(raw_page.iter().map(|r| r.key.as_str())),
            "the same middle page"
        );
        let (k, b) = compare(
            PAGE_REPS,
            |_| async { store.products(&query).await.expect("a page").products.len() },
            |_| async {
                raw::<RawPage, RawRow>(&store, &["primer_5", &middle])
                    .await
                    .len()
            },
        )
        .await;
        rows.push((
            "(b) page of 100 after `primer_5/0500005`, every primer",
            k,
            b,
            String::new(),
        ));

        // (c) A page of one primer, from its middle.
        let query = ProductQuery {
            primer: Some("primer_3".to_owned()),
            after: Some(key(&primer_middle)),
            ..ProductQuery::new(PAGE, now)
        };
        let page = store.products(&query).await.expect("a page");
        let raw_page: Vec<RawRow> =
            raw::<RawPrimerPage, _>(&store, &["primer_3", &primer_middle]).await;
        assert_eq!(page.products.len(), PAGE);
        assert!(
            page.products
                .iter()
                .map(|p| p.key.as_str())
                .eq(raw_page.iter().map(|r| r.key.as_str())),
            "the same page of primer_3"
        );
        let (k, b) = compare(
            PAGE_REPS,
            |_| async { store.products(&query).await.expect("a page").products.len() },
            |_| async {
                raw::<RawPrimerPage, RawRow>(&store, &["primer_3", &primer_middle])
                    .await
                    .len()
            },
        )
        .await;
        rows.push((
            "(c) page of 100 of `primer_3` after `primer_3/0500003`",
            k,
            b,
            String::new(),
        ));

        // (d) The first page of failing products: rare, a bounded scan.
        let query = ProductQuery {
            state: Some(ProductState::Failing),
            scan: SCAN,
            ..ProductQuery::new(PAGE, now)
        };
        let page = store.products(&query).await.expect("a page");
        let raw_page: Vec<RawRow> = raw::<RawFailing, _>(&store, &["", ""]).await;
        assert!(
            page.products
                .iter()
                .all(|p| p.state == ProductState::Failing && p.meta.last_error.is_some())
        );
        assert!(raw_page.iter().all(|r| r.error_message.is_some()));
        let held = format!(
            "page held {} products (raw: {}), next {}",
            page.products.len(),
            raw_page.len(),
            page.next.as_ref().map_or("none", |next| next.as_str())
        );
        let (k, b) = compare(
            PAGE_REPS,
            |_| async { store.products(&query).await.expect("a page").products.len() },
            |_| async { raw::<RawFailing, RawRow>(&store, &["", ""]).await.len() },
        )
        .await;
        rows.push((
            "(d) page of 100 `failing`, every primer, scan 10,000",
            k,
            b,
            held,
        ));

        // (e) One product, by key, in a fixed pseudo-random order.
        let order = visiting_order(PRODUCTS);
        let keys: Vec<String> = order
            .iter()
            .take(PRODUCT_REPS)
            .map(|&n| format!("primer_{}/{n:07}", n % PRIMERS))
            .collect();
        let parsed: Vec<Key> = keys.iter().map(|text| key(text)).collect();
        let product = store
            .product(&parsed[0], now)
            .await
            .expect("a product")
            .expect("there");
        let raw_product: Vec<RawRow> = raw::<RawProduct, _>(&store, &[&keys[0]]).await;
        assert_eq!(raw_product.len(), 1);
        assert_eq!(product.version.0, raw_product[0].version);
        black_box((
            &raw_product[0].computed_at,
            &raw_product[0].stale_at,
            &raw_product[0].expires_at,
        ));
        let (k, b) = compare(
            PRODUCT_REPS,
            |i| {
                let key = &parsed[i];
                let store = &store;
                async move {
                    store
                        .product(key, now)
                        .await
                        .expect("a product")
                        .map_or(0, |p| p.size as usize)
                }
            },
            |i| {
                let key = keys[i].as_str();
                let store = &store;
                async move { raw::<RawProduct, RawRow>(store, &[key]).await.len() }
            },
        )
        .await;
        rows.push(("(e) one product by key", k, b, String::new()));

        // (f) A primer's census, capped.
        let census = store
            .census("primer_4", now, CAP)
            .await
            .expect("a census");
        let micros = now.as_unix_micros().to_string();
        let raw_census: Vec<RawCount> =
            raw::<RawCensus, _>(&store, &[&micros, &micros, "primer_4"]).await;
        let raw_total: i64 = raw_census.iter().map(|c| c.count).sum();
        assert_eq!(census.total(), CAP as u64);
        assert_eq!(raw_total, CAP as i64);
        let counted = format!(
            "{} fresh, {} stale, {} expired, {} failing, complete: {} (raw: {})",
            census.fresh,
            census.stale,
            census.expired,
            census.failing,
            census.complete,
            raw_census
                .iter()
                .map(|c| format!("{} {}", c.count, c.state))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (k, b) = compare(
            CENSUS_REPS,
            |_| async {
                store
                    .census("primer_4", now, CAP)
                    .await
                    .expect("a census")
                    .total() as usize
            },
            |_| async {
                raw::<RawCensus, RawCount>(&store, &[&micros, &micros, "primer_4"])
                    .await
                    .len()
            },
        )
        .await;
        rows.push((
            "(f) census of `primer_4`, cap 10,000",
            k,
            b,
            counted,
        ));

        let conclusion = conclusion(&rows);
        let mut body = vec![
            format!(
                "PostgreSQL on this machine (a throwaway cluster unless `KCK_TEST_DATABASE_URL` is set, on 127.0.0.1), {} products in {PRIMERS} primers (about 10% stale, 1% failing, 1% expired), filled with two `INSERT .. SELECT .. generate_series` in {:.1} s then `VACUUM ANALYZE`. kck is `Catalog` on `PgStore`; the baseline is a raw diesel-async query on the same pool, prepared as kck's are, reading the same rows' key, version, times and error without states, sizes or lease checks: `SELECT key, version, computed_at, stale_at, expires_at, error_message FROM kck_entries WHERE (primer, key) > ($1, $2) ORDER BY primer, key LIMIT 100` for (a) and (b), `primer = $1 AND key > $2` for (c), the failing ones among the first 10,000 for (d), `WHERE key = $1` for (e), a `CASE` per state over the first 10,000 of the primer for (f). One task, one query at a time; median of {ROUNDS} rounds of the mean and of the p99 over {PAGE_REPS} pages, {} products or {CENSUS_REPS} censuses per round. The issue's goal, \"a store with 1,000,000 products answers a page in milliseconds\", is read as a mean of at most {:.0} ms per page.",
                thousands(PRODUCTS),
                filled.as_secs_f64(),
                thousands(PRODUCT_REPS as u32),
                PAGE_GOAL * 1e3
            ),
            String::new(),
            "| measure | kck mean | kck p99 | baseline mean | baseline p99 | ratio (means) | notes |".to_owned(),
            "|---|---:|---:|---:|---:|---:|---|".to_owned(),
        ];
        for (name, k, b, notes) in &rows {
            body.push(format!(
                "| {name} | {} | {} | {} | {} | **{:.2}** | {notes} |",
                ms(k.mean),
                ms(k.p99),
                ms(b.mean),
                ms(b.p99),
                k.mean / b.mean
            ));
        }
        body.push(String::new());
        body.push(conclusion);
        let body = body.join("\n");
        println!("{body}");
        match common::record("catalog", "cargo bench -p kck-benches --bench catalog", &body) {
            Ok(path) => println!("\nwritten to {}", path.display()),
            Err(error) => eprintln!("\ncould not update BENCHMARKS.md: {error}"),
        }
    });
}
