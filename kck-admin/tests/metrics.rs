//! `GET /metrics` after a scripted workload shows the exact counts, on the
//! memory store and on PostgreSQL. One process, one recorder: each test
//! reads the metrics of primers of its own.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use kck_admin::{AdminConfig, Scope};
use kck_core::{Ctx, primer};
use kck_testing::TestCache;
use tower::ServiceExt;

const TOKEN: &str = "metrics-read-token-0123";
const MINUTE: Duration = Duration::from_secs(60);

static MEMORY_SOURCE: AtomicI64 = AtomicI64::new(1);
static POSTGRES_SOURCE: AtomicI64 = AtomicI64::new(1);

#[derive(Debug, thiserror::Error)]
#[error("broken on purpose")]
struct Broken;

#[primer(key = "metrics_mem/{n}", stale_after = "1m")]
async fn metrics_mem(_ctx: &Ctx, n: u32) -> Result<i64, Broken> {
    Ok(MEMORY_SOURCE.load(Ordering::SeqCst) * i64::from(n))
}

#[primer(key = "metrics_mem_total/{n}", depends_on = [metrics_mem])]
async fn metrics_mem_total(ctx: &Ctx, n: u32) -> Result<i64, kck_core::Error> {
    Ok(*metrics_mem(ctx, n).await? + 1)
}

#[primer(key = "metrics_mem_broken/{n}")]
async fn metrics_mem_broken(_ctx: &Ctx, n: u32) -> Result<i64, Broken> {
    let _ = n;
    Err(Broken)
}

#[primer(key = "metrics_pg/{n}", stale_after = "1m")]
async fn metrics_pg(_ctx: &Ctx, n: u32) -> Result<i64, Broken> {
    Ok(POSTGRES_SOURCE.load(Ordering::SeqCst) * i64::from(n))
}

#[primer(key = "metrics_pg_total/{n}", depends_on = [metrics_pg])]
async fn metrics_pg_total(ctx: &Ctx, n: u32) -> Result<i64, kck_core::Error> {
    Ok(*metrics_pg(ctx, n).await? + 1)
}

/// The value of the sample of `name` whose labels include `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one sample of {name} {labels:?} in:\n{text}"
    );
    found[0]
}

async fn scrape(test: &TestCache) -> String {
    let app = kck_admin::router(
        test.cache().clone(),
        AdminConfig::new().token(Scope::Read, TOKEN),
    )
    .expect("scrapes");
    let response = app
        .oneshot(
            Request::get("/metrics")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .expect("scrapes"),
        )
        .await
        .expect("scrapes");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("scrapes")
            .starts_with("text/plain; version=0.0.4")
    );
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("scrapes")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("scrapes")
}

/// One miss, three hits, one stale read refreshed by a job, a change that
/// propagates to a dependent through a job.
async fn workload<F, T>(test: &TestCache, read: F, total: T, source: &AtomicI64)
where
    F: AsyncFn(&TestCache) -> i64,
    T: AsyncFn(&TestCache) -> i64,
{
    assert_eq!(total(test).await, 2, "a miss of each");
    for _ in 0..3 {
        read(test).await;
    }
    test.advance(2 * MINUTE);
    source.store(5, Ordering::SeqCst);
    assert_eq!(read(test).await, 1, "stale, served");
    test.settle().await;
    assert_eq!(read(test).await, 5, "refreshed");
    assert_eq!(total(test).await, 6, "the change reached the dependent");
}

#[tokio::test]
async fn metrics_count_a_scripted_workload_exactly_on_the_memory_store() {
    kck_admin::install_metrics().unwrap();
    let test = TestCache::builder().configure(|b| b.metrics()).build();
    workload(
        &test,
        async |t| *metrics_mem(t, 1).await.unwrap(),
        async |t| *metrics_mem_total(t, 1).await.unwrap(),
        &MEMORY_SOURCE,
    )
    .await;
    assert!(metrics_mem_broken(&test, 1).await.is_err());
    let text = scrape(&test).await;
    check(&text, "metrics_mem", "metrics_mem_total");
    let broken = [("primer", "metrics_mem_broken")];
    let errors = [broken[0], ("outcome", "error")];
    assert_eq!(sample(&text, "kck_computations_total", &errors), 1.0);
    assert_eq!(
        sample(&text, "kck_memo_entries", &[]),
        test.memo_len() as f64
    );
    assert_eq!(sample(&text, "kck_jobs", &[("state", "pending")]), 0.0);
    assert!(!text.contains("metrics_mem/"), "no key in a label:\n{text}");
}

#[tokio::test]
async fn metrics_count_a_scripted_workload_exactly_on_postgres() {
    kck_admin::install_metrics().unwrap();
    let Some(test) = TestCache::builder()
        .configure(|b| b.metrics())
        .build_on_postgres()
        .await
    else {
        return;
    };
    workload(
        &test,
        async |t| *metrics_pg(t, 1).await.unwrap(),
        async |t| *metrics_pg_total(t, 1).await.unwrap(),
        &POSTGRES_SOURCE,
    )
    .await;
    check(&scrape(&test).await, "metrics_pg", "metrics_pg_total");
}

/// The counts of [`workload`] for the primers `base` and `total`.
fn check(text: &str, base: &str, total: &str) {
    let of = |primer, outcome| [("primer", primer), ("outcome", outcome)];
    // The first read, and the job's recompute after the change.
    assert_eq!(sample(text, "kck_reads_total", &of(base, "miss")), 2.0);
    assert_eq!(sample(text, "kck_reads_total", &of(base, "hit")), 4.0);
    assert_eq!(sample(text, "kck_reads_total", &of(base, "stale")), 1.0);
    assert_eq!(sample(text, "kck_reads_total", &of(total, "miss")), 1.0);
    assert_eq!(sample(text, "kck_reads_total", &of(total, "hit")), 1.0);
    assert_eq!(sample(text, "kck_computations_total", &of(base, "ok")), 2.0);
    assert_eq!(
        sample(text, "kck_computations_total", &of(total, "ok")),
        2.0
    );
    assert_eq!(
        sample(text, "kck_computations_total", &of(base, "error")),
        0.0
    );
    assert_eq!(sample(text, "kck_jobs_total", &of(base, "started")), 1.0);
    assert_eq!(sample(text, "kck_jobs_total", &of(base, "completed")), 1.0);
    assert_eq!(sample(text, "kck_jobs_total", &of(total, "completed")), 1.0);
    assert_eq!(
        sample(
            text,
            "kck_propagation_delay_seconds_count",
            &[("primer", total)]
        ),
        1.0
    );
    assert_eq!(
        sample(
            text,
            "kck_compute_duration_seconds_count",
            &[("primer", base)]
        ),
        2.0
    );
    assert_eq!(
        sample(text, "kck_job_wait_seconds_count", &[("primer", base)]),
        1.0
    );
}
