//! The JSON API as a client meets it: auth by scope, each endpoint's
//! answer, and every kind of bad input answered with the one error shape
//! and its status, changing nothing.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use kck_admin::{AdminConfig, ConfigError, Scope};
use kck_core::{Cache, Ctx, Key, primer};
use kck_diesel::PgStore;
use kck_testing::TestCache;
use kck_testing::postgres::TestDatabase;
use serde_json::Value;
use tower::ServiceExt;

const READ: &str = "read-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

#[derive(Debug, thiserror::Error)]
#[error("the source of `{0}` is down")]
struct Down(String);

#[primer(key = "admin_price/{item}", stale_after = "1m")]
async fn admin_price(ctx: &Ctx, item: String) -> Result<u64, Down> {
    let _ = ctx;
    match item.as_str() {
        "broken" => Err(Down(item)),
        _ => Ok(item.len() as u64 * 100),
    }
}

#[primer(key = "admin_basket/{a}/{b}", depends_on = [admin_price])]
async fn admin_basket(ctx: &Ctx, a: String, b: String) -> Result<u64, kck_core::Error> {
    Ok(*admin_price(ctx, a).await? + *admin_price(ctx, b).await?)
}

fn config() -> AdminConfig {
    AdminConfig::new()
        .token(Scope::Read, READ)
        .token(Scope::Admin, ADMIN)
}

fn app(cache: &Cache) -> Router {
    kck_admin::router(cache.clone(), config()).expect("a valid config")
}

/// Sends a request; answers the status and the JSON body (`Null` if none).
async fn send(app: &Router, method: &str, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("a request"))
        .await
        .expect("an answer");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (status, body)
}

/// Asserts the one error shape with `kind`.
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, kind: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["kind"], kind, "{}", answer.1);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.1
    );
}

async fn filled() -> TestCache {
    let test = TestCache::builder().build();
    admin_basket(&test, "tea".into(), "milk".into())
        .await
        .expect("computes");
    test
}

#[tokio::test]
async fn requests_need_a_token_of_the_right_scope() {
    let test = filled().await;
    let app = app(&test);
    let products = "/api/products";
    let refresh = "/api/products/admin_price%2Ftea/refresh";

    let answer = send(&app, "GET", products, None).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    let answer = send(&app, "GET", products, Some("not-a-token-at-all")).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        !answer.1.to_string().contains("not-a-token"),
        "an answer never repeats a token"
    );
    assert_eq!(
        send(&app, "GET", products, Some(READ)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", products, Some(ADMIN)).await.0,
        StatusCode::OK
    );

    let before = test
        .entry(&Key::parse("admin_price/tea").unwrap())
        .await
        .unwrap();
    let answer = send(&app, "POST", refresh, Some(READ)).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    let answer = send(&app, "POST", refresh, None).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    let after = test
        .entry(&Key::parse("admin_price/tea").unwrap())
        .await
        .unwrap();
    assert_eq!(before, after, "a refused action changes nothing");
    assert_eq!(
        send(&app, "POST", refresh, Some(ADMIN)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_401_names_the_bearer_scheme() {
    let test = filled().await;
    let response = app(&test)
        .oneshot(Request::get("/api/primers").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
}

#[tokio::test]
async fn without_tokens_the_router_refuses_unless_told_insecure() {
    let test = filled().await;
    let refused = kck_admin::router(test.cache().clone(), AdminConfig::new());
    assert_eq!(refused.err(), Some(ConfigError::NoTokens));
    let open =
        kck_admin::router(test.cache().clone(), AdminConfig::new().insecure_no_auth()).unwrap();
    assert_eq!(
        send(&open, "GET", "/api/products", None).await.0,
        StatusCode::OK
    );

    // And `serve` binds loopback only.
    let addr = "0.0.0.0:0".parse().unwrap();
    let error = kck_admin::serve(
        test.cache().clone(),
        AdminConfig::new().insecure_no_auth(),
        addr,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, kck_admin::ServeError::InsecureNotLoopback { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn products_are_listed_filtered_and_paged() {
    let test = filled().await;
    let app = app(&test);
    let (status, page) = send(&app, "GET", "/api/products?primer=admin_price", Some(READ)).await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&str> = page["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["admin_price/milk", "admin_price/tea"]);
    assert_eq!(page["products"][0]["state"], "fresh");
    assert_eq!(page["products"][0]["primer"], "admin_price");
    assert!(page["next"].is_null());

    let (_, first) = send(&app, "GET", "/api/products?limit=2", Some(READ)).await;
    assert_eq!(first["products"].as_array().unwrap().len(), 2);
    let next = first["next"].as_str().unwrap().replace('/', "%2F");
    let (_, second) = send(
        &app,
        "GET",
        &format!("/api/products?limit=2&after={next}"),
        Some(READ),
    )
    .await;
    assert_eq!(second["products"][0]["key"], "admin_price/tea");
    assert!(second["next"].is_null());

    test.advance(Duration::from_secs(120));
    let (_, stale) = send(&app, "GET", "/api/products?state=stale", Some(READ)).await;
    assert_eq!(stale["products"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn one_product_shows_its_value_and_neighbours() {
    let test = filled().await;
    let app = app(&test);
    let (status, product) = send(&app, "GET", "/api/products/admin_price%2Ftea", Some(READ)).await;
    assert_eq!(status, StatusCode::OK, "{product}");
    assert_eq!(product["value"], 300);
    assert_eq!(product["dependents"][0]["key"], "admin_basket/tea/milk");
    assert_eq!(product["dependents"][0]["current"], true);
    let (_, basket) = send(
        &app,
        "GET",
        "/api/products/admin_basket%2Ftea%2Fmilk",
        Some(READ),
    )
    .await;
    assert_eq!(basket["value"], 700);
    assert_eq!(basket["dependencies"].as_array().unwrap().len(), 2);

    let (_, primers) = send(&app, "GET", "/api/primers", Some(READ)).await;
    let price = primers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin_price")
        .unwrap();
    assert_eq!(price["counts"]["fresh"], 2);
    assert_eq!(price["policy"]["stale_after_ms"], 60_000.0);

    let (_, graph) = send(
        &app,
        "GET",
        "/api/graph?key=admin_basket%2Ftea%2Fmilk",
        Some(READ),
    )
    .await;
    assert_eq!(graph["graph"]["nodes"].as_array().unwrap().len(), 3);
    let (_, primer_graph) = send(&app, "GET", "/api/graph", Some(READ)).await;
    let edges = primer_graph["primers"]["edges"].as_array().unwrap();
    assert!(
        edges
            .iter()
            .any(|e| e[0] == "admin_basket" && e[1] == "admin_price")
    );
}

#[tokio::test]
async fn actions_refresh_invalidate_and_remove_products() {
    let test = filled().await;
    let app = app(&test);
    let uri = "/api/products/admin_price%2Ftea";
    let (_, before) = send(&app, "GET", uri, Some(READ)).await;
    let (status, after) = send(&app, "POST", &format!("{uri}/refresh"), Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert!(
        after["version"].as_i64() > before["version"].as_i64(),
        "a new version"
    );

    let (status, invalidated) = send(&app, "POST", &format!("{uri}/invalidate"), Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{invalidated}");
    assert!(invalidated["invalidated"].as_u64().unwrap() >= 1);

    let (status, _) = send(&app, "DELETE", uri, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &send(&app, "GET", uri, Some(READ)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &send(&app, "DELETE", uri, Some(ADMIN)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // A refresh whose computation fails is a 502 naming the key.
    let answer = send(
        &app,
        "POST",
        "/api/products/admin_price%2Fbroken/refresh",
        Some(ADMIN),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_GATEWAY, "compute");
    assert_eq!(answer.1["error"]["key"], "admin_price/broken");
}

#[tokio::test]
async fn failed_jobs_are_retried_and_cancelled_by_id() {
    let test = TestCache::builder()
        .worker(|worker| worker.retries(1, Duration::from_secs(1), Duration::from_secs(1)))
        .build();
    let app = app(&test);
    let key = Key::parse("admin_price/broken").unwrap();
    test.queue()
        .enqueue(&[kck_core::storage::JobRequest::new(
            key.clone(),
            test.now(),
            kck_core::storage::RefreshReason::Requested,
        )])
        .await
        .unwrap();
    test.settle().await;
    let (_, jobs) = send(&app, "GET", "/api/jobs", Some(READ)).await;
    let failed = jobs["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{jobs}");
    assert_eq!(failed[0]["key"], "admin_price/broken");
    let id = failed[0]["id"].as_i64().unwrap();

    let retry = format!("/api/jobs/{id}/retry");
    assert_error(
        &send(&app, "POST", &retry, Some(READ)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(
        send(&app, "POST", &retry, Some(ADMIN)).await.0,
        StatusCode::OK
    );
    assert_error(
        &send(&app, "POST", &retry, Some(ADMIN)).await,
        StatusCode::NOT_FOUND,
        "unknown_job",
    );
    let (_, jobs) = send(&app, "GET", "/api/jobs", Some(READ)).await;
    assert!(jobs["failed"].as_array().unwrap().is_empty(), "{jobs}");
    let pending = jobs["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{jobs}");
    let pending_id = pending[0]["id"].as_i64().unwrap();
    let cancel = format!("/api/jobs/{pending_id}");
    assert_eq!(
        send(&app, "DELETE", &cancel, Some(ADMIN)).await.0,
        StatusCode::OK
    );
    assert_error(
        &send(&app, "DELETE", &cancel, Some(ADMIN)).await,
        StatusCode::NOT_FOUND,
        "unknown_job",
    );
}

#[tokio::test]
async fn bad_input_gets_the_error_shape_and_changes_nothing() {
    let test = filled().await;
    let app = app(&test);
    let before = test.inspect().products(&Default::default()).await.unwrap();
    let cases: [(&str, &str, StatusCode, &str); 14] = [
        (
            "GET",
            "/api/products/no%20primer!",
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            "GET",
            "/api/products/admin_basket%2Fonly_one",
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            "GET",
            "/api/products/nobody%2F1",
            StatusCode::NOT_FOUND,
            "unknown_primer",
        ),
        (
            "GET",
            "/api/products/admin_price%2Fnever",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/products?primer=nobody",
            StatusCode::NOT_FOUND,
            "unknown_primer",
        ),
        (
            "GET",
            "/api/products?state=sleepy",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "GET",
            "/api/products?limit=0",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "GET",
            "/api/products?limit=many",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "GET",
            "/api/products?colour=blue",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "GET",
            "/api/graph?key=admin_price%2Ftea&depth=99",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/api/jobs/abc/retry",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "DELETE",
            "/api/jobs/99999",
            StatusCode::NOT_FOUND,
            "unknown_job",
        ),
        (
            "PUT",
            "/api/products",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/nothing-here",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, uri, status, kind) in cases {
        let answer = send(&app, method, uri, Some(ADMIN)).await;
        assert_eq!(answer.0, status, "{method} {uri}: {}", answer.1);
        assert_eq!(
            answer.1["error"]["kind"], kind,
            "{method} {uri}: {}",
            answer.1
        );
    }

    // A body over the limit.
    let response = app
        .clone()
        .oneshot(
            Request::post("/api/products/admin_price%2Ftea/refresh")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .header(header::CONTENT_LENGTH, "10000000")
                .body(Body::from(vec![b'x'; 10_000_000]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["kind"], "payload_too_large");

    let after = test.inspect().products(&Default::default()).await.unwrap();
    assert_eq!(before, after, "bad requests change nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_went_away_answers_503() {
    let Some(cluster) = TestDatabase::own_cluster() else {
        return;
    };
    let db = TestDatabase::create_in(&cluster).await;
    let store = PgStore::builder(db.url())
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connects");
    let cache = Cache::builder()
        .store(store)
        .build()
        .expect("valid primers");
    admin_price(&cache, "tea".into()).await.unwrap();
    let app = app(&cache);
    assert_eq!(
        send(&app, "GET", "/api/products", Some(READ)).await.0,
        StatusCode::OK
    );

    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap()
        .expect("the server stops");
    for uri in [
        "/api/products",
        "/api/products/admin_price%2Ftea",
        "/api/jobs",
        "/api/primers",
    ] {
        let answer = send(&app, "GET", uri, Some(READ)).await;
        assert_error(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
        );
    }
    let resuming = cluster.clone();
    tokio::task::spawn_blocking(move || resuming.resume())
        .await
        .unwrap()
        .expect("the server resumes");
}

#[tokio::test]
async fn events_stream_live_as_server_sent_events() {
    let test = filled().await;
    let app = app(&test);
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/events")
                .header(header::AUTHORIZATION, format!("Bearer {READ}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();

    // A hit (left out) and a computation (streamed).
    admin_price(&test, "tea".into()).await.unwrap();
    admin_price(&test, "coffee".into()).await.unwrap();
    let mut text = String::new();
    while !text.contains("event: computed") {
        let frame = body.frame().await.expect("a frame").expect("no error");
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
    }
    assert!(text.starts_with("event: miss\n"), "{text}");
    assert!(text.contains(r#""key":"admin_price/coffee""#), "{text}");
    assert!(
        !text.contains("admin_price/tea"),
        "hits are left out: {text}"
    );

    let answer = send(&app, "GET", "/api/events?hits=maybe", Some(READ)).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
}

/// Sends a GET without a token; answers the status, the headers and the
/// body as text.
async fn fetch_text(app: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("a request"))
        .await
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("a body").to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
    (parts.status, parts.headers, text)
}

#[tokio::test]
async fn the_page_is_served_without_a_token_and_its_data_is_not() {
    let test = filled().await;
    let app = app(&test);
    let (status, headers, html) = fetch_text(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(html.contains(r#"<base href="/">"#), "{html}");
    assert!(html.contains(r#"<script src="app.js" defer></script>"#));
    let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );

    let (status, headers, script) = fetch_text(&app, "/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(script.contains("api/products"));
    let (status, headers, _) = fetch_text(&app, "/app.css").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");

    let (status, headers, openapi) = fetch_text(&app, "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let openapi: Value = serde_json::from_str(&openapi).expect("JSON");
    assert_eq!(openapi["info"]["title"], "kck admin API");

    // The page is free; what it shows is not.
    let answer = send(&app, "GET", "/api/products", None).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn mounted_under_a_prefix_the_page_finds_its_files_and_api_there() {
    let test = filled().await;
    let app = Router::new().nest("/kck", kck_admin::router(test.clone(), config()).unwrap());
    let (status, _, html) = fetch_text(&app, "/kck").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"<base href="/kck/">"#), "{html}");
    let (status, _, _) = fetch_text(&app, "/kck/app.js").await;
    assert_eq!(status, StatusCode::OK);
    let answer = send(&app, "GET", "/kck/api/products", Some(READ)).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}
