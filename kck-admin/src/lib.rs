//! # kck-admin: see and steer a kck cache
//!
//! An [`axum::Router`] that a service mounts to let its operators look at
//! its cache and act on it: which products it holds and in what state,
//! why, what they read and what reads them, which refresh jobs wait, run or
//! failed. Everything it shows comes from
//! [`Cache::inspect`](kck_core::Cache::inspect); it never computes a
//! product unless asked to refresh one.
//!
//! ```
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode, header};
//! use kck_admin::{AdminConfig, Scope};
//! use kck_core::Cache;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder().build()?;
//! // Tokens from KCK_ADMIN_TOKENS="read:<secret>,admin:<secret>", or from code.
//! let config = AdminConfig::from_env()?.token(Scope::Admin, "a-long-random-admin-secret");
//! let app = axum::Router::new()
//!     .route("/health", axum::routing::get(|| async { "ok" })) // the service's own
//!     .nest("/kck", kck_admin::router(cache, config)?);
//!
//! // What `curl -H 'Authorization: Bearer …' http://…/kck/api/primers` gets:
//! let request = Request::get("/kck/api/primers")
//!     .header(header::AUTHORIZATION, "Bearer a-long-random-admin-secret")
//!     .body(Body::empty())?;
//! let response = app.clone().oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! // Serve it:
//! # if false {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # }
//! # Ok(()) }
//! ```
//!
//! Or, for a process of its own, [`serve`].
//!
//! ## The page
//!
//! `GET /` (here `/kck`: axum's `nest` does not route `/kck/`) is the
//! admin page: the products, filtered by
//! primer and state and coloured by freshness; a product's value, metadata
//! and why it is in its state ("stale since 12:03:10, refresh queued for
//! 12:03:11"), its dependencies and dependents, and the graph around it;
//! the primers' graph with their products per state; the refresh jobs,
//! with retry and drop; and the cache's events as they happen. It is three
//! files compiled into this crate (no CDN: it works offline), served
//! without auth since they hold no data; the page asks for a token when
//! the API wants one and keeps it in the tab's `sessionStorage`. When the
//! store cannot be reached, the page says so.
//!
//! ## The API
//!
//! Paths are relative to where the router is mounted. Keys go in the path
//! as one segment, percent-encoded (`store_report%2F7`).
//!
//! | method and path | what | scope |
//! |---|---|---|
//! | `GET /api/products?primer=&state=&after=&limit=` | a page of products (primer then key order; `state` is `fresh`, `stale`, `expired`, `failing` or `computing`; `after` is the previous page's `next`) | read |
//! | `GET /api/products/{key}` | one product: metadata, state, value, dependencies and dependents with their states, jobs | read |
//! | `POST /api/products/{key}/refresh` | computes it now; answers it as it then is | admin |
//! | `POST /api/products/{key}/invalidate` | marks it and its dependents stale | admin |
//! | `DELETE /api/products/{key}` | removes it | admin |
//! | `GET /api/primers` | every primer: template, policy, dependencies, products per state | read |
//! | `GET /api/graph?key=&depth=&max_nodes=` | the products around `key`, both ways; without `key`, the primers' declared graph | read |
//! | `GET /api/jobs?limit=` | pending, running and failed refresh jobs | read |
//! | `POST /api/jobs/{id}/retry` | puts a failed job back in the queue, due now | admin |
//! | `DELETE /api/jobs/{id}` | cancels a pending or failed job | admin |
//! | `GET /metrics` | the metrics of [`install_metrics`]'s recorder, in Prometheus's text format (see below) | read |
//! | `GET /api/events?hits=` | the cache's events from now on, as server-sent events named by kind (`computed`, `refresh-queued`…) with data `{"key", "primer", "kind", "text"}`; hits only with `hits=true` | read |
//! | `GET /api/openapi.json` | this table as an OpenAPI 3.1 document, with every schema | none |
//!
//! Every error has one shape, `{"error": {"kind", "message", "key"?}}`,
//! and a status that fits: 400 for a malformed key or parameter
//! (`invalid_key`, `bad_request`), 401 without a valid token
//! (`unauthorized`), 403 for a `read` token on an action (`forbidden`),
//! 404 for an unknown primer, product, job or path (`unknown_primer`,
//! `not_found`, `unknown_job`), 405 for a wrong method
//! (`method_not_allowed`), 413 for a body over the limit
//! (`payload_too_large`), 502 when a refresh's computation fails
//! (`compute`), 503 when the store cannot be reached
//! (`store_unavailable`).
//!
//! ## Metrics
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! kck_admin::install_metrics()?; // first: the cache registers its metrics at build
//! let cache = kck_core::Cache::builder().metrics().build()?;
//! # Ok(()) }
//! ```
//!
//! `GET /metrics` then serves, per primer: `kck_reads_total{outcome=hit|stale|miss|coalesced}`,
//! `kck_computations_total{outcome=ok|error}`, `kck_compute_duration_seconds`,
//! `kck_augments_total{outcome=applied|retried|declined}`, `kck_drift_total`,
//! `kck_jobs_total{outcome=started|completed|retried|failed}`,
//! `kck_job_wait_seconds`, `kck_propagation_delay_seconds`; and the gauges
//! `kck_jobs{state=pending|running|failed}` and `kck_memo_entries`,
//! updated on each scrape. Labels are the primer's name and an outcome,
//! never a key. The recorder is the `metrics` crate's: any other
//! recorder (StatsD, OpenTelemetry…) receives the same metrics.
//!
//! ## Auth
//!
//! Requests carry `Authorization: Bearer <token>`. A token has a scope:
//! `read` may `GET`, `admin` may also act. Tokens come from code
//! ([`AdminConfig::token`]) or from `KCK_ADMIN_TOKENS`
//! ([`AdminConfig::from_env`]); they are kept hashed and compared in
//! constant time, and neither `Debug`, errors nor logs show them. Without a
//! token, [`router`] refuses to start unless told
//! [`AdminConfig::insecure_no_auth`], and [`serve`] then binds loopback
//! addresses only.

mod api;
mod config;
mod error;
pub mod json;
mod metrics;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kck_core::Cache;

use crate::api::AdminState;
pub use crate::config::{AdminConfig, ConfigError, Scope, TOKENS_ENV};
use crate::error::ApiError;
pub use crate::metrics::{MetricsError, install_metrics};

/// The admin router for `cache`: the JSON API, behind `config`'s tokens.
/// Mount it where you like (`Router::nest("/kck", ..)`).
///
/// # Errors
///
/// [`ConfigError::NoTokens`] if `config` has no token and does not allow
/// serving without auth.
pub fn router(cache: Cache, config: AdminConfig) -> Result<axum::Router, ConfigError> {
    config.check()?;
    let state = Arc::new(AdminState { cache });
    let auth = Arc::new(config.clone());
    let mut api = axum::Router::new();
    for (path, methods) in api_routes() {
        api = api.route(path, methods);
    }
    let api = api
        .route_layer(middleware::from_fn_with_state(auth, authorize))
        // The page and the API's description hold no data.
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .route("/api/openapi.json", get(page::openapi))
        .with_state(state);
    let limit = config.max_body();
    Ok(api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(limit, limit_body)))
}

type Methods = axum::routing::MethodRouter<Arc<AdminState>>;

/// Every authenticated route: one table, so that the OpenAPI test sees
/// each path the router answers.
fn api_routes() -> [(&'static str, Methods); 11] {
    [
        ("/api/products", get(api::products)),
        ("/api/products/{key}", get(api::product).delete(api::remove)),
        ("/api/products/{key}/refresh", post(api::refresh)),
        ("/api/products/{key}/invalidate", post(api::invalidate)),
        ("/api/primers", get(api::primers)),
        ("/api/graph", get(api::graph)),
        ("/api/jobs", get(api::jobs)),
        ("/api/jobs/{id}", axum::routing::delete(api::cancel_job)),
        ("/api/jobs/{id}/retry", post(api::retry_job)),
        ("/api/events", get(api::events)),
        ("/metrics", get(metrics::metrics)),
    ]
}

/// Checks the request's token against the scope its method needs: `GET`
/// and `HEAD` read, everything else acts.
async fn authorize(
    State(config): State<Arc<AdminConfig>>,
    request: Request,
    next: Next,
) -> Response {
    if config.is_insecure() {
        return next.run(request).await;
    }
    let needed = if matches!(*request.method(), Method::GET | Method::HEAD) {
        Scope::Read
    } else {
        Scope::Admin
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented.and_then(|token| config.scope_of(token.as_bytes())) {
        None => ApiError::unauthorized().into_response(),
        Some(scope) if scope < needed => ApiError::forbidden().into_response(),
        Some(_) => next.run(request).await,
    }
}

/// Refuses a body announced over the limit before anything reads it. No
/// route reads a body: one sent without a length is never read.
async fn limit_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match announced {
        Some(length) if length > limit as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is {length} bytes; the limit is {limit}"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!("there is nothing at `{}`", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "`{}` is not allowed on `{}`",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Why [`serve`] stopped or did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration cannot serve.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Without auth, only a loopback address may be bound.
    #[error(
        "refusing to serve without auth on {addr}: bind a loopback address (127.0.0.1 or ::1) or configure tokens"
    )]
    InsecureNotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("the admin server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves [`router`] alone on `addr` until the process ends: [`bind`],
/// then [`Bound::run`].
///
/// # Errors
///
/// As [`bind`], and [`ServeError::Io`] if the server fails.
pub async fn serve(cache: Cache, config: AdminConfig, addr: SocketAddr) -> Result<(), ServeError> {
    bind(cache, config, addr).await?.run().await
}

/// Binds `addr` for [`router`], without serving yet: the caller learns
/// at once whether the address is usable, and which port it got for
/// port 0.
///
/// # Errors
///
/// [`ServeError::Config`], [`ServeError::InsecureNotLoopback`] (no tokens
/// and `addr` is not loopback), [`ServeError::Bind`].
pub async fn bind(
    cache: Cache,
    config: AdminConfig,
    addr: SocketAddr,
) -> Result<Bound, ServeError> {
    if config.is_insecure() && !addr.ip().is_loopback() {
        return Err(ServeError::InsecureNotLoopback { addr });
    }
    let app = router(cache, config)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    Ok(Bound {
        listener,
        app,
        local,
    })
}

/// The admin router on a bound address, ready to [`run`](Bound::run).
#[derive(Debug)]
pub struct Bound {
    listener: tokio::net::TcpListener,
    app: axum::Router,
    local: SocketAddr,
}

impl Bound {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until the process ends.
    ///
    /// # Errors
    ///
    /// [`ServeError::Io`] if the server fails.
    pub async fn run(self) -> Result<(), ServeError> {
        axum::serve(self.listener, self.app).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::{AdminConfig, api_routes, router};

    /// The methods the router answers on each path of its table, and the
    /// operations of `/api/openapi.json`: the same set.
    #[tokio::test]
    async fn the_openapi_document_describes_every_route_and_no_other() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../assets/openapi.json")).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, operations)| {
                let methods = operations.as_object().unwrap().keys();
                methods.map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect();

        let cache = kck_core::Cache::builder().build().unwrap();
        let app = router(cache, AdminConfig::new().insecure_no_auth()).unwrap();
        let paths = api_routes().map(|(path, _)| path);
        let mut routed = BTreeSet::new();
        for path in paths.into_iter().chain(["/api/openapi.json"]) {
            let uri = path
                .replace("{key}", "no_such_primer%2Fx")
                .replace("{id}", "1");
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ] {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(&uri)
                    .body(Body::empty())
                    .unwrap();
                let status = app.clone().oneshot(request).await.unwrap().status();
                if status != StatusCode::METHOD_NOT_ALLOWED {
                    routed.insert((method.to_string(), path.to_owned()));
                }
            }
        }
        assert_eq!(routed, documented);
    }
}
