//! The admin API over HTTP on loopback, on PostgreSQL with 1,000,000
//! products: requests per second and p50/p99 latency of
//! `GET /api/products/{key}` (a warm product) and of a page of 100
//! (`GET /api/products?limit=100&after=...`), against a bare axum handler
//! that answers the same JSON, byte for byte once parsed, from one raw
//! query through the same pool.
//!
//! `cargo bench -p kck-benches --bench admin_http`

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use diesel::QueryableByName;
use diesel::pg::data_types::PgTimestamp;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kck_admin::AdminConfig;
use kck_core::clock::Timestamp;
use kck_core::{Cache, Ctx, primer};
use kck_diesel::PgStore;
use serde_json::{Value, json};

mod common;
mod products;
mod report;

use common::median;
use products::{PRODUCTS, raw, raw_sql};

/// Rounds of each side, alternating which goes first.
const ROUNDS: usize = 5;
/// Requests in flight at once (one keep-alive connection each).
const CONCURRENCY: usize = 8;
/// Requests per round of the product and of the page.
const PRODUCT_REQUESTS: usize = 4_000;
const PAGE_REQUESTS: usize = 1_000;
/// kck's requests per second against the bare handler's.
const GOAL: f64 = 0.5;

/// The primer of the product read: the API answers only registered
/// primers' keys.
#[primer(key = "primer_3/{n}")]
async fn primer_3(_ctx: &Ctx, n: String) -> Result<Value, kck_core::Error> {
    Ok(json!({ "id": n }))
}

raw_sql! {
    /// One entry with its value, as the product endpoint shows it.
    RawProduct = "SELECT key, primer, version, computed_at, changed_at, stale_at, refresh_at, \
                      expires_at, read_at, compute_micros, pg_column_size(value)::bigint AS size, \
                      code_version, error_message, error_at, error_attempts, value::text AS value \
                  FROM kck_entries WHERE key = {}";
    /// A page of every primer after a cursor, and one more row to know
    /// whether there is a next page.
    RawPage = "SELECT key, primer, version, computed_at, changed_at, stale_at, refresh_at, \
                   expires_at, read_at, compute_micros, pg_column_size(value)::bigint AS size, \
                   code_version, error_message, error_at, error_attempts, ''::text AS value \
               FROM kck_entries WHERE (primer, key) > ({}, {}) ORDER BY primer, key LIMIT 101";
}

/// An entry as the raw queries read it.
#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    primer: String,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Timestamptz)]
    computed_at: PgTimestamp,
    #[diesel(sql_type = Timestamptz)]
    changed_at: PgTimestamp,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    stale_at: Option<PgTimestamp>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    refresh_at: Option<PgTimestamp>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    expires_at: Option<PgTimestamp>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    read_at: Option<PgTimestamp>,
    #[diesel(sql_type = BigInt)]
    compute_micros: i64,
    #[diesel(sql_type = BigInt)]
    size: i64,
    #[diesel(sql_type = Text)]
    code_version: String,
    #[diesel(sql_type = Nullable<Text>)]
    error_message: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    error_at: Option<PgTimestamp>,
    #[diesel(sql_type = Integer)]
    error_attempts: i32,
    #[diesel(sql_type = Text)]
    value: String,
}

/// Microseconds from PostgreSQL's epoch (2000-01-01) to Unix's.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn time(at: PgTimestamp) -> Timestamp {
    Timestamp::from_unix_micros(at.0 + PG_EPOCH_MICROS)
}

impl Row {
    /// The product's JSON, as the admin API writes it; its state by the
    /// deadlines alone (a bare handler does not look at leases).
    fn json(&self, now: Timestamp) -> Value {
        let text = |at: PgTimestamp| time(at).to_string();
        let past = |at: Option<PgTimestamp>| at.is_some_and(|at| time(at) <= now);
        let state = if self.error_message.is_some() {
            "failing"
        } else if past(self.expires_at) {
            "expired"
        } else if past(self.stale_at) {
            "stale"
        } else {
            "fresh"
        };
        json!({
            "key": self.key,
            "primer": self.primer,
            "version": self.version,
            "state": state,
            "computed_at": text(self.computed_at),
            "changed_at": text(self.changed_at),
            "stale_at": self.stale_at.map(text),
            "refresh_at": self.refresh_at.map(text),
            "expires_at": self.expires_at.map(text),
            "read_at": self.read_at.map(text),
            "compute_ms": Duration::from_micros(self.compute_micros.unsigned_abs()).as_secs_f64() * 1000.0,
            "size": self.size,
            "code_version": self.code_version,
            "last_error": self.error_message.as_ref().map(|message| json!({
                "message": message,
                "at": self.error_at.map(text),
                "attempts": self.error_attempts,
            })),
        })
    }
}

/// The bare handlers: one raw query each, then `serde_json`.
fn bare(store: PgStore) -> axum::Router {
    async fn product(State(store): State<PgStore>, Path(key): Path<String>) -> impl IntoResponse {
        let rows: Vec<Row> = raw::<RawProduct, Row>(&store, &[&key]).await;
        let row = rows.first().expect("the product is stored");
        let now = Timestamp::from_system_time(SystemTime::now());
        let mut body = row.json(now);
        body["value"] = serde_json::from_str(&row.value).expect("JSON");
        body["dependencies"] = json!([]);
        body["dependents"] = json!([]);
        body["jobs"] = json!({ "pending": null, "running": [], "failed": [] });
        (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
    }
    async fn page(
        State(store): State<PgStore>,
        Query(params): Query<std::collections::HashMap<String, String>>,
    ) -> impl IntoResponse {
        let after = params.get("after").expect("a cursor");
        let primer = after.split('/').next().expect("a primer");
        let mut rows: Vec<Row> = raw::<RawPage, Row>(&store, &[primer, after]).await;
        let now = Timestamp::from_system_time(SystemTime::now());
        let more = rows.len() > 100;
        rows.truncate(100);
        let next = more.then(|| rows.last().map(|row| row.key.clone()));
        let products: Vec<Value> = rows.iter().map(|row| row.json(now)).collect();
        let body = match next.flatten() {
            Some(next) => json!({ "products": products, "next": next }),
            None => json!({ "products": products }),
        };
        (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
    }
    axum::Router::new()
        .route("/api/products/{key}", get(product))
        .route("/api/products", get(page))
        .with_state(store)
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

type HttpClient = Client<HttpConnector, Empty<axum::body::Bytes>>;

/// The read token every request bears (the bare handler ignores it).
const TOKEN: &str = "bench-token-0123456789";

/// One answer's body, which must be a 200.
async fn fetch(client: &HttpClient, uri: &str) -> Vec<u8> {
    let request = axum::http::Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .expect("a request");
    let response = client.request(request).await.expect("an answer");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    assert_eq!(status, 200, "{uri}: {}", String::from_utf8_lossy(&body));
    body.to_vec()
}

/// One round: `requests` GETs of `uri`, `CONCURRENCY` at a time.
#[derive(Clone, Copy)]
struct Load {
    per_second: f64,
    p50: f64,
    p99: f64,
}

async fn load(client: &HttpClient, uri: &str, requests: usize) -> Load {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(requests / CONCURRENCY);
                for _ in 0..requests / CONCURRENCY {
                    let sent = Instant::now();
                    std::hint::black_box(fetch(&client, &uri).await);
                    latencies.push(sent.elapsed().as_secs_f64());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await.expect("the task ends"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: usize| latencies[(latencies.len() * q).div_ceil(100) - 1];
    Load {
        per_second: latencies.len() as f64 / elapsed,
        p50: at(50),
        p99: at(99),
    }
}

/// `ROUNDS` rounds of each, alternating which goes first; medians.
async fn compare(client: &HttpClient, kck: &str, bare: &str, requests: usize) -> (Load, Load) {
    let (mut k, mut b) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            k.push(load(client, kck, requests).await);
            b.push(load(client, bare, requests).await);
        } else {
            b.push(load(client, bare, requests).await);
            k.push(load(client, kck, requests).await);
        }
    }
    let medians = |loads: Vec<Load>| Load {
        per_second: median(loads.iter().map(|l| l.per_second).collect()),
        p50: median(loads.iter().map(|l| l.p50).collect()),
        p99: median(loads.iter().map(|l| l.p99).collect()),
    };
    (medians(k), medians(b))
}

fn ms(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1e3)
}

/// Both answers, parsed: the same JSON.
async fn same_json(client: &HttpClient, kck: &str, bare: &str) {
    let k: Value = serde_json::from_slice(&fetch(client, kck).await).expect("JSON");
    let b: Value = serde_json::from_slice(&fetch(client, bare).await).expect("JSON");
    if k != b {
        let (k, b) = (k.to_string(), b.to_string());
        let at = k.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let around = |text: &str| text[at.saturating_sub(80)..(at + 80).min(text.len())].to_owned();
        panic!(
            "the bare handler answers otherwise than kck, from byte {at}:\nkck:  {}\nbare: {}",
            around(&k),
            around(&b)
        );
    }
}

fn main() {
    common::runtime().block_on(async {
        let now = Timestamp::from_system_time(SystemTime::now());
        let Some((_db, store, _)) = products::filled(now).await else {
            return;
        };

        let cache = Cache::builder()
            .store(store.clone())
            .local_worker(false)
            .local_scheduler(false)
            .build()
            .expect("a cache");
        let config = AdminConfig::new().token(kck_admin::Scope::Read, TOKEN);
        let kck_app = kck_admin::router(cache, config).expect("a router");
        let kck = serve(kck_app).await;
        let bare_addr = serve(bare(store.clone())).await;
        // The token goes with every request to kck, as an operator's would.
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(CONCURRENCY)
            .build(HttpConnector::new());

        let product = "/api/products/primer_3%2F0500003";
        let page = "/api/products?limit=100&after=primer_5%2F0500005";
        let mut rows = Vec::new();
        for (name, path, requests) in [
            ("`GET /api/products/{key}`, warm", product, PRODUCT_REQUESTS),
            ("a page of 100 of 1,000,000", page, PAGE_REQUESTS),
        ] {
            let (k, b) = (format!("http://{kck}{path}"), format!("http://{bare_addr}{path}"));
            same_json(&client, &k, &b).await;
            let (kl, bl) = compare(&client, &k, &b, requests).await;
            rows.push((name, kl, bl));
        }
        let mut body = vec![
            format!(
                "{PRODUCTS} products on PostgreSQL; {CONCURRENCY} requests in flight on \
                 loopback keep-alive connections (hyper's client), {ROUNDS} rounds of each side \
                 alternating, medians. The bare handler answers the same JSON (checked) from one \
                 raw query; kck's also checks the token, parses the key, and reads the \
                 product's edges and jobs."
            ),
            String::new(),
            "| request | kck req/s | bare req/s | kck/bare | kck p50 | bare p50 | kck p99 | bare p99 |"
                .to_owned(),
            "|---|---:|---:|---:|---:|---:|---:|---:|".to_owned(),
        ];
        let mut worst = f64::MAX;
        for (name, k, b) in &rows {
            let ratio = k.per_second / b.per_second;
            worst = worst.min(ratio);
            body.push(format!(
                "| {name} | {:.0} | {:.0} | {ratio:.2}x | {} | {} | {} | {} |",
                k.per_second,
                b.per_second,
                ms(k.p50),
                ms(b.p50),
                ms(k.p99),
                ms(b.p99)
            ));
        }
        body.push(String::new());
        body.push(if worst >= GOAL {
            format!("Conclusion: meets the goal of {GOAL}x the bare handler: {worst:.2}x at worst.")
        } else {
            format!("Conclusion: misses the goal of {GOAL}x the bare handler: {worst:.2}x at worst.")
        });
        let body = body.join("\n");
        println!("{body}");
        match common::record(
            "admin_http",
            "cargo bench -p kck-benches --bench admin_http",
            &body,
        ) {
            Ok(path) => println!("\nwritten to {}", path.display()),
            Err(error) => eprintln!("\ncould not update BENCHMARKS.md: {error}"),
        }
    });
}
