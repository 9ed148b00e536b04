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

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    state: Mutex<State>,
}

struct State {
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
            state: Mutex::new(State {
                sales: Vec::new(),
                random: 0x2545_f491_4f6c_dd1d,
            }),
        };
        for _ in 0..per_register * registers().count() {
            fleet.ring_up();
        }
        Arc::new(fleet)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
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

    /// Answers a request path: status and JSON body.
    fn answer(&self, path: &str) -> (u16, String) {
        if self.down.load(Ordering::SeqCst) {
            return (503, "{\"error\":\"the fleet service is down\"}".to_owned());
        }
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let json = |value: Result<String, serde_json::Error>| match value {
            Ok(body) => (200, body),
            Err(error) => (500, format!("{{\"error\":\"{error}\"}}")),
        };
        match parts.as_slice() {
            ["sales", register, day] => match (register.parse(), day.parse()) {
                (Ok(register), Ok(day)) => {
                    json(serde_json::to_string(&self.sales_of(register, day)))
                }
                _ => (400, "{\"error\":\"bad register or day\"}".to_owned()),
            },
            ["since", seq] => match seq.parse() {
                Ok(seq) => json(serde_json::to_string(&self.since(seq))),
                Err(_) => (400, "{\"error\":\"bad sequence number\"}".to_owned()),
            },
            ["last"] => json(serde_json::to_string(&self.count())),
            ["status", register] => match register.parse() {
                Ok(register) => json(serde_json::to_string(&self.status(register))),
                Err(_) => (400, "{\"error\":\"bad register\"}".to_owned()),
            },
            _ => (404, "{\"error\":\"no such resource\"}".to_owned()),
        }
    }

    /// Serves the fleet on a local port; returns its address.
    ///
    /// # Errors
    ///
    /// If no local port can be bound.
    pub async fn serve(self: &Arc<Self>) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let fleet = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(fleet.clone().handle(stream));
            }
        });
        Ok(address)
    }

    async fn handle(self: Arc<Self>, mut stream: TcpStream) {
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let text = String::from_utf8_lossy(&request);
        let (status, body) = match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["GET", path, ..] => self.answer(path),
            _ => (405, "{\"error\":\"only GET\"}".to_owned()),
        };
        tokio::time::sleep(self.latency).await;
        let response = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            if status == 200 { "OK" } else { "Error" },
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}
