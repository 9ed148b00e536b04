//! The remote source: a fleet of cash registers in several stores, with
//! new sales arriving, served over HTTP by a small local service.
//!
//! | request | answer |
//! |---|---|
//! | `GET /sales/{register}/{day}` | the register's sales of the day, in order |
//! | `GET /since/{seq}` | the sales rung up after sale `seq`, in order |
//! | `GET /last` | the number of the last sale |
//! | `GET /status/{register}` | the register's sales today and its last sale |
//!
//! Every answer takes the fleet's latency: the source is slow, as remote
//! sources are.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::{Report, Sale, registers};

/// What the fleet sells, at what price.
const PRODUCTS: [(&str, u64); 8] = [
    ("coffee", 350),
    ("tea", 300),
    ("bagel", 275),
    ("muffin", 325),
    ("juice", 450),
    ("sandwich", 795),
    ("salad", 895),
    ("cookie", 150),
];

/// A register's state, as `GET /status/{register}` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterStatus {
    /// The register.
    pub register: u32,
    /// Its sales so far today.
    pub sales: u64,
    /// Its last sale, if any.
    pub last_sale: Option<Sale>,
}

/// The simulated fleet: every sale of the day, and a deterministic stream
/// of new ones.
pub struct Fleet {
    day: NaiveDate,
    latency: Duration,
    down: AtomicBool,
    state: Mutex<Sales>,
}

struct Sales {
    sales: Vec<Sale>,
    random: u64,
}

impl Fleet {
    /// A fleet on `day` whose registers already rang up `per_register`
    /// sales each, and whose service answers after `latency`.
    pub fn new(day: NaiveDate, per_register: usize, latency: Duration) -> Arc<Fleet> {
        let fleet = Fleet {
            day,
            latency,
            down: AtomicBool::new(false),
            state: Mutex::new(Sales {
                sales: Vec::new(),
                random: 0x2545_f491_4f6c_dd1d,
            }),
        };
        for _ in 0..per_register * registers().count() {
            fleet.ring_up();
        }
        Arc::new(fleet)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Sales> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new sale at some register.
    pub fn ring_up(&self) -> Sale {
        let mut state = self.state();
        state.random ^= state.random << 13;
        state.random ^= state.random >> 7;
        state.random ^= state.random << 17;
        let random = state.random;
        let all: Vec<u32> = registers().collect();
        let (product, cents) = PRODUCTS[(random >> 8) as usize % PRODUCTS.len()];
        let sale = Sale {
            seq: state.sales.len() as u64 + 1,
            register: all[random as usize % all.len()],
            product: product.to_owned(),
            cents,
        };
        state.sales.push(sale.clone());
        sale
    }

    /// The number of sales so far.
    pub fn count(&self) -> u64 {
        self.state().sales.len() as u64
    }

    /// Every sale so far, in order.
    pub fn sales(&self) -> Vec<Sale> {
        self.state().sales.clone()
    }

    /// The chain's report, counted from every sale: what kck's must equal.
    pub fn recount(&self) -> Report {
        let mut report = Report::default();
        for sale in &self.state().sales {
            report.add(sale);
        }
        report
    }

    /// The sales of one register on `day`.
    fn sales_of(&self, register: u32, day: NaiveDate) -> Vec<Sale> {
        if day != self.day {
            return Vec::new();
        }
        let state = self.state();
        state
            .sales
            .iter()
            .filter(|sale| sale.register == register)
            .cloned()
            .collect()
    }

    fn since(&self, seq: u64) -> Vec<Sale> {
        let state = self.state();
        state
            .sales
            .get(seq as usize..)
            .map(<[Sale]>::to_vec)
            .unwrap_or_default()
    }

    fn status(&self, register: u32) -> RegisterStatus {
        let state = self.state();
        let mine: Vec<&Sale> = state
            .sales
            .iter()
            .filter(|s| s.register == register)
            .collect();
        RegisterStatus {
            register,
            sales: mine.len() as u64,
            last_sale: mine.last().map(|sale| (*sale).clone()),
        }
    }

    /// Takes the service down (every request answers 503) or brings it
    /// back: an outage of the remote source.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The fleet's HTTP API, as an axum router: `GET /sales/{register}/{day}`,
    /// `/since/{seq}` (the feed of new sales), `/last` (how many so far),
    /// `/status/{register}`. Every answer waits the fleet's latency; while
    /// the fleet is down, every request answers 503.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/sales/{register}/{day}", get(sales))
            .route("/since/{seq}", get(since))
            .route("/last", get(last))
            .route("/status/{register}", get(status))
            .layer(middleware::from_fn_with_state(
                self.clone(),
                slow_and_fragile,
            ))
            .with_state(self.clone())
    }

    /// Serves [`Fleet::router`] on a local port; returns its address.
    ///
    /// # Errors
    ///
    /// If no local port can be bound.
    pub async fn serve(self: &Arc<Self>) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(address)
    }
}

/// An error answer: a status and `{"error": …}`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The fleet's latency on every answer, and its outages.
async fn slow_and_fragile(
    State(fleet): State<Arc<Fleet>>,
    request: Request,
    next: Next,
) -> Response {
    tokio::time::sleep(fleet.latency).await;
    if fleet.down.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the fleet service is down");
    }
    next.run(request).await
}

async fn sales(
    State(fleet): State<Arc<Fleet>>,
    Path((register, day)): Path<(u32, String)>,
) -> Response {
    match day.parse::<NaiveDate>() {
        Ok(day) => Json(fleet.sales_of(register, day)).into_response(),
        Err(_) => error(StatusCode::BAD_REQUEST, "bad day: expected YYYY-MM-DD"),
    }
}

async fn since(State(fleet): State<Arc<Fleet>>, Path(seq): Path<u64>) -> Json<Vec<Sale>> {
    Json(fleet.since(seq))
}

async fn last(State(fleet): State<Arc<Fleet>>) -> Json<u64> {
    Json(fleet.count())
}

async fn status(
    State(fleet): State<Arc<Fleet>>,
    Path(register): Path<u32>,
) -> Json<RegisterStatus> {
    Json(fleet.status(register))
}
