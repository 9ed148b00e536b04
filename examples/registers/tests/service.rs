//! The example as the service our users write: its reports over HTTP,
//! served through kck, kck's admin mounted beside them, the fleet's outage
//! seen by the baseline and not by the cached reports; and the program as
//! a new user runs it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use chrono::NaiveDate;
use kck_admin::AdminConfig;
use kck_core::Cache;
use registers::{Fleet, FleetApi, Report};
use serde_json::Value;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("a date")
}

/// The service on a free port, over a fleet of `sales` sales a register.
async fn service(fleet: &std::sync::Arc<Fleet>) -> SocketAddr {
    let api = FleetApi::new(fleet.serve().await.expect("the fleet serves"));
    let cache = Cache::builder()
        .state(api.clone())
        .build()
        .expect("valid primers");
    let admin = AdminConfig::new().insecure_no_auth();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    registers::service::spawn(cache, api, day(), admin, loopback)
        .await
        .expect("the service serves")
        .addr
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("the service answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_served_through_kck_and_survive_an_outage_of_the_fleet() {
    let fleet = Fleet::new(day(), 20, Duration::ZERO);
    let addr = service(&fleet).await;
    let expected = serde_json::to_value(fleet.recount()).expect("JSON");

    let (status, chain) = get(addr, "/chain/report").await;
    assert_eq!((status, &chain), (200, &expected));
    let (status, direct) = get(addr, "/chain/report/direct").await;
    assert_eq!((status, &direct), (200, &expected), "the baseline agrees");
    let (status, top) = get(addr, "/top").await;
    assert_eq!(status, 200);
    assert_eq!(top.as_array().map(Vec::len), Some(5), "{top}");
    let (status, store) = get(addr, "/stores/2/report").await;
    assert_eq!(status, 200);
    let store: Report = serde_json::from_value(store).expect("a report");
    assert!(store.all.sales > 0);
    let (status, missing) = get(addr, "/stores/9/report").await;
    assert_eq!(
        (status, missing["error"].as_str()),
        (404, Some("no store 9"))
    );
    let (status, primers) = get(addr, "/kck/api/primers").await;
    assert_eq!(status, 200, "kck's admin API is mounted: {primers}");
    let (status, product) = get(addr, "/kck/api/products/chain_report%2F2026-11-26").await;
    assert_eq!(
        (status, product["state"].as_str()),
        (200, Some("fresh")),
        "{product}"
    );

    // The fleet goes down: the baseline fails, kck serves what it holds.
    fleet.set_down(true);
    let (status, error) = get(addr, "/chain/report/direct").await;
    assert_eq!(status, 502, "{error}");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("503")),
        "{error}"
    );
    let (status, chain) = get(addr, "/chain/report").await;
    assert_eq!((status, &chain), (200, &expected));
}

/// `cargo run -p registers` as a new user runs it: the pipeline, the
/// addresses it serves on, the recount at the end; and kck's commands on
/// its primers.
#[test]
fn the_program_serves_runs_and_checks_its_recount() {
    let output = Command::new(env!("CARGO_BIN_EXE_registers"))
        .args(["--memory", "--seconds", "1", "--rate", "100"])
        .env_remove("KCK_ADMIN_TOKENS")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("reports on http://127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains("kck admin page on http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the chain's report equals a full recount"),
        "{stdout}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_registers"))
        .args(["--memory", "explain", "chain_report/2026-11-26"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("└─ next read: computed now"), "{stdout}");

    let output = Command::new(env!("CARGO_BIN_EXE_registers"))
        .args(["--rate", "0"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "clap refuses a rate of 0");
}
