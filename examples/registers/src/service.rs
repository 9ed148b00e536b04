//! The reports as a web service: what a team builds on kck. Each handler is
//! a kck getter; kck decides whether the answer comes from memory, from
//! the store, or from a computation that reads the fleet.
//!
//! | path | answer |
//! |---|---|
//! | `GET /stores/{store}/report` | a store's report of the day ([`store_report`](fn@crate::store_report)) |
//! | `GET /chain/report` | the chain's report of the day ([`chain_report`](fn@crate::chain_report)) |
//! | `GET /top` | the chain's five best sellers ([`top_products`](fn@crate::top_products)) |
//! | `GET /registers/{register}` | a register's live status ([`register_status`](fn@crate::register_status), on demand) |
//! | `GET /chain/report/direct` | the chain's report counted from the fleet on every request, without kck: the baseline the load test compares with |
//! | `/kck/…` | kck's admin page and API ([`kck_admin::router`]) |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use kck_admin::AdminConfig;
use kck_core::Cache;

use crate::{
    FleetApi, Report, STORES, Sale, chain_report, register_status, registers, store_report,
    top_products,
};

/// The service, serving on `addr` (port 0: a free one) in a task of its
/// own.
pub struct Serving {
    /// The address it serves on.
    pub addr: SocketAddr,
    /// The task; it ends only if serving fails.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds `addr` and serves [`router`] there, in a task of its own.
///
/// # Errors
///
/// If `admin` cannot serve, or `addr` cannot be bound.
pub async fn spawn(
    cache: Cache,
    fleet: FleetApi,
    day: NaiveDate,
    admin: AdminConfig,
    addr: SocketAddr,
) -> Result<Serving, Box<dyn std::error::Error + Send + Sync>> {
    let app = router(cache, fleet, day, admin)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Serving { addr, task })
}

/// What the handlers share.
#[derive(Clone)]
struct Service {
    cache: Cache,
    day: NaiveDate,
    fleet: FleetApi,
}

/// The service's router, with kck's admin mounted at `/kck` (its auth as
/// `admin` configures it).
///
/// # Errors
///
/// If `admin` cannot serve (see [`kck_admin::router`]).
pub fn router(
    cache: Cache,
    fleet: FleetApi,
    day: NaiveDate,
    admin: AdminConfig,
) -> Result<Router, kck_admin::ConfigError> {
    let kck = kck_admin::router(cache.clone(), admin)?;
    let service = Service { cache, day, fleet };
    Ok(Router::new()
        .route("/stores/{store}/report", get(store))
        .route("/chain/report", get(chain))
        .route("/chain/report/direct", get(chain_direct))
        .route("/top", get(top))
        .route("/registers/{register}", get(register))
        .with_state(service)
        .nest("/kck", kck))
}

/// A getter's error as an answer: the fleet or the store failed.
fn failed(error: &dyn std::fmt::Display) -> Response {
    let body = Json(serde_json::json!({ "error": error.to_string() }));
    (StatusCode::BAD_GATEWAY, body).into_response()
}

fn answer<T: serde::Serialize>(read: Result<Arc<T>, impl std::fmt::Display>) -> Response {
    match read {
        Ok(value) => Json(&*value).into_response(),
        Err(error) => failed(&error),
    }
}

async fn store(State(service): State<Service>, Path(store): Path<u32>) -> Response {
    if !(1..=STORES).contains(&store) {
        let body = Json(serde_json::json!({ "error": format!("no store {store}") }));
        return (StatusCode::NOT_FOUND, body).into_response();
    }
    answer(store_report(&service.cache, store, service.day).await)
}

async fn chain(State(service): State<Service>) -> Response {
    answer(chain_report(&service.cache, service.day).await)
}

async fn top(State(service): State<Service>) -> Response {
    answer(top_products(&service.cache, service.day).await)
}

async fn register(State(service): State<Service>, Path(register): Path<u32>) -> Response {
    answer(register_status(&service.cache, register).await)
}

/// The chain's report without kck: every register's sales read from the
/// fleet, one request each, and counted, on every request.
async fn chain_direct(State(service): State<Service>) -> Response {
    let mut report = Report::default();
    for register in registers() {
        let path = format!("/sales/{register}/{}", service.day);
        match service.fleet.get::<Vec<Sale>>(&path).await {
            Ok(sales) => sales.iter().for_each(|sale| report.add(sale)),
            Err(error) => return failed(&error),
        }
    }
    Json(report).into_response()
}
