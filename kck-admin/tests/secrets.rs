//! A token's secret never leaves the process: not in a log line at any
//! level, not in an answer, not in `Debug`, not in a configuration error.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use kck_admin::AdminConfig;
use kck_core::{Ctx, primer};
use kck_testing::TestCache;
use kck_testing::logs::CapturedLogs;
use tower::ServiceExt;

const READ: &str = "read-secret-7c1f0a9e3b";
const ADMIN: &str = "admin-secret-52d8e6b4a1";
const WRONG: &str = "wrong-secret-e90b3c7d5f";
const SHORT: &str = "short-9a4e";
const UNSCOPED: &str = "unscoped-secret-1d6f2b8c0e";

#[primer(key = "secret_price/{item}")]
async fn secret_price(ctx: &Ctx, item: String) -> Result<u64, kck_core::Error> {
    let _ = ctx;
    Ok(item.len() as u64)
}

/// Sends a request; answers the status and the body as text.
async fn send(app: &Router, method: &str, uri: &str, token: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("a request");
    let response = app.clone().oneshot(request).await.expect("an answer");
    let status = response.status();
    let mut text = format!("{:?}", response.headers());
    let body = response.into_body().collect().await.expect("a body");
    text.push_str(&String::from_utf8_lossy(&body.to_bytes()));
    (status, text)
}

fn assert_secret_free(what: &str, text: &str) {
    for secret in [READ, ADMIN, WRONG, SHORT, UNSCOPED] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

#[tokio::test]
async fn no_secret_is_logged_answered_or_shown() {
    let captured = CapturedLogs::default();
    let _logging = tracing::subscriber::set_default(captured.subscriber());

    let test = TestCache::builder().build();
    secret_price(&test, "tea".into()).await.expect("computes");
    let config = AdminConfig::new()
        .tokens_from(&format!("read:{READ}, admin:{ADMIN}"))
        .expect("valid tokens");
    assert_secret_free("the configuration's Debug", &format!("{config:?}"));
    let app = kck_admin::router(test.cache().clone(), config).expect("a valid config");

    let product = "/api/products/secret_price%2Ftea";
    let refresh = "/api/products/secret_price%2Ftea/refresh";
    let mut answers = Vec::new();
    for (method, uri, token, status) in [
        ("GET", product, WRONG, StatusCode::UNAUTHORIZED),
        ("GET", product, READ, StatusCode::OK),
        ("POST", refresh, READ, StatusCode::FORBIDDEN),
        ("POST", refresh, WRONG, StatusCode::UNAUTHORIZED),
        ("POST", refresh, ADMIN, StatusCode::OK),
        ("GET", "/api/jobs", ADMIN, StatusCode::OK),
    ] {
        let (got, text) = send(&app, method, uri, token).await;
        assert_eq!(got, status, "{method} {uri}: {text}");
        answers.push(text);
    }
    test.settle().await;
    for answer in &answers {
        assert_secret_free("an answer", answer);
    }

    for (text, rule) in [
        (format!("read:{SHORT}"), "a secret too short"),
        (format!("owner:{UNSCOPED}"), "an unknown scope"),
        (UNSCOPED.to_owned(), "no scope at all"),
    ] {
        let error = AdminConfig::new()
            .tokens_from(&text)
            .expect_err(rule)
            .to_string();
        assert_secret_free(rule, &error);
    }

    let logged = captured.text();
    assert!(
        logged.contains("secret_price/tea"),
        "the capture sees the cache's own events: {logged}"
    );
    assert_secret_free("the log", &logged);
}
