//! The admin page in a real browser, over the cash-register pipeline: an
//! operator sees the products, opens one, refreshes it and sees its
//! version change, finds a refresh job that failed while the fleet was
//! down, retries it and sees it leave the failed list.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them). Without `chromedriver` on the `PATH` the test says so and passes,
//! unless `KCK_REQUIRE_BROWSER=1` (as in CI), when it fails.
//!
//! Screenshots of each step go to `$CARGO_TARGET_TMPDIR/admin-page/`; with
//! `KCK_UPDATE_SCREENSHOTS=1`, the products, a failing product and the
//! graph also go to `docs/`, where the README shows them.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use kck_admin::AdminConfig;
use kck_core::Cache;
use kck_core::refresh::Worker;
use kck_diesel::PgStore;
use kck_testing::postgres::TestDatabase;
use registers::{Fleet, FleetApi, chain_report, register_sales, top_products};
use serde_json::{Value, json};

/// How long the page may take to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(30);

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("a date")
}

/// `chromedriver`, if this machine has it; if not, says the test is
/// skipped, or fails it under `KCK_REQUIRE_BROWSER=1`.
fn chromedriver() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromedriver"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("KCK_REQUIRE_BROWSER").is_none_or(|v| v != "1"),
            "KCK_REQUIRE_BROWSER=1 but there is no chromedriver on the PATH"
        );
        eprintln!(
            "skipped: no chromedriver on the PATH (apt-get install chromium chromium-driver)"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free local port")
}

/// A running chromedriver and a headless Chromium session on it.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    shots: PathBuf,
}

impl Browser {
    async fn start(driver: &Path) -> Browser {
        let spawn = |port: u16| {
            tokio::process::Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("chromedriver starts")
        };
        let mut port = free_port();
        let mut child = spawn(port);
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1400"]
        });
        if Path::new("/usr/bin/chromium").is_file() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        let started = Instant::now();
        let client: Client = loop {
            // Another process may take the free port before chromedriver
            // binds it: then chromedriver exits, and starts on another.
            if matches!(child.try_wait(), Ok(Some(_))) && started.elapsed() < PATIENCE {
                port = free_port();
                child = spawn(port);
            }
            let url = format!("http://127.0.0.1:{port}");
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(_) if started.elapsed() < PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session on {url}: {error}"),
            }
        };
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-page");
        std::fs::create_dir_all(&shots).expect("a screenshot directory");
        Browser {
            client,
            _driver: child,
            shots,
        }
    }

    /// Saves a screenshot as `name.png`; with `KCK_UPDATE_SCREENSHOTS=1`
    /// and `docs`, also under the repository's `docs/`.
    async fn screenshot(&self, name: &str, docs: bool) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), &png).expect("saved");
        if docs && std::env::var_os("KCK_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
            std::fs::create_dir_all(&dir).expect("docs/");
            std::fs::write(dir.join(format!("admin-{name}.png")), &png).expect("saved");
        }
    }

    /// Loads `url`.
    async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|error| panic!("{url} does not load: {error}"));
    }

    /// Runs `script` in the page until it answers something other than
    /// `null` or `false`; answers that.
    async fn until(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            match self.client.execute(script, Vec::new()).await {
                Ok(Value::Null | Value::Bool(false)) => {}
                Ok(value) => return value,
                // A script that throws may be waiting on an element still
                // to come; the last error is said if it never does.
                Err(error) => last_error = Some(error),
            }
            if started.elapsed() > PATIENCE {
                self.screenshot("timed-out", false).await;
                let text = self
                    .client
                    .execute("return document.body.innerText", Vec::new())
                    .await
                    .unwrap_or_default();
                let error = last_error
                    .map_or_else(String::new, |e| format!("\nthe script's last error: {e}"));
                panic!("the page never showed {what}; it shows:\n{text}{error}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css` whose text is `text`.
    async fn click(&self, css: &str, text: &str) {
        let script = format!(
            "const e = [...document.querySelectorAll({css:?})].find(e => e.textContent.trim() === {text:?});
             if (!e || e.disabled) return false; e.click(); return true;"
        );
        self.until(&format!("`{text}` to click"), &script).await;
    }
}

/// The registers' cache (in memory, or in `store`), with a worker that
/// gives a job up after one failed attempt, and the admin page on a local
/// port.
async fn pipeline(
    fleet: &std::sync::Arc<Fleet>,
    store: Option<PgStore>,
    config: AdminConfig,
) -> (Cache, SocketAddr) {
    let api = FleetApi::new(fleet.serve().await.expect("the fleet serves"));
    let mut builder = Cache::builder()
        .state(api)
        .local_worker(false)
        .local_scheduler(false);
    if let Some(store) = store {
        builder = builder.store(store);
    }
    let cache = builder.build().expect("a cache");
    let worker = Worker::builder(&cache)
        .retries(1, Duration::from_millis(10), Duration::from_millis(10))
        .poll_interval(Duration::from_millis(50))
        .build();
    tokio::spawn(async move { worker.run().await });
    chain_report(&cache, day()).await.expect("warmed up");
    top_products(&cache, day()).await.expect("warmed up");
    let bound = kck_admin::bind(cache.clone(), config, (Ipv4Addr::LOCALHOST, 0).into())
        .await
        .expect("the admin page binds");
    let addr = bound.local_addr();
    tokio::spawn(bound.run());
    (cache, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_refreshes_and_retries_over_the_pipeline() {
    let Some(driver) = chromedriver() else {
        return;
    };
    let fleet = Fleet::new(day(), 50, Duration::ZERO);
    let config = AdminConfig::new().insecure_no_auth();
    let (cache, addr) = pipeline(&fleet, None, config).await;
    let browser = Browser::start(&driver).await;
    let page = format!("http://{addr}/");

    // The products, by primer then key.
    browser.open(&page).await;
    let rows = browser
        .until(
            "the products table",
            "const rows = document.querySelectorAll('#products tbody tr');
             return rows.length >= 18 ? rows.length : false;",
        )
        .await;
    assert_eq!(
        rows,
        json!(18),
        "12 registers, 4 stores, the chain, the top products"
    );
    browser
        .until(
            "the live stream connected",
            "return document.getElementById('live-status').textContent === 'live: on'",
        )
        .await;
    browser.screenshot("products", true).await;

    // One product: its version, refreshed from the page.
    let store = "store_report/2/2026-11-26";
    browser.click("#products a", store).await;
    let before = browser
        .until(
            "the product page",
            &format!(
                "return document.querySelector('h1 .key')?.textContent === {store:?}
                   && document.getElementById('version')?.textContent"
            ),
        )
        .await;
    let before: u64 = before
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a version");
    browser
        .until(
            "the graph around the product",
            "return document.querySelectorAll('#graph .node').length === 6",
        )
        .await;
    browser.click("button", "Refresh now").await;
    let after = browser
        .until(
            "a new version",
            &format!(
                "const v = document.getElementById('version')?.textContent;
                 return v && v !== '{before}' ? v : false;"
            ),
        )
        .await;
    let after: u64 = after
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a version");
    assert!(after > before, "version {before} -> {after}");
    browser.screenshot("product", false).await;

    // A refresh that fails while the fleet is down: the worker gives it up.
    let register = register_sales::key(11, day());
    fleet.set_down(true);
    cache.invalidate(&register).await.expect("invalidated");
    // Served stale, refresh queued; the refresh fails.
    register_sales(&cache, 11, day())
        .await
        .expect("served stale");
    browser.open(&format!("{page}#/jobs")).await;
    let failed = browser
        .until(
            "the failed job",
            "const row = document.querySelector('#failed tr[data-key=\"register_sales/11/2026-11-26\"]');
             return row ? row.textContent : false;",
        )
        .await;
    assert!(
        failed.as_str().is_some_and(|t| t.contains("503")),
        "the row shows the error: {failed}"
    );
    browser.screenshot("jobs", false).await;

    // The product says why it is in its state.
    browser
        .open(&format!("{page}#/product/register_sales%2F11%2F2026-11-26"))
        .await;
    let why = browser
        .until(
            "why the product is failing",
            "return document.querySelector('h1 .badge')?.textContent === 'failing'
               && document.getElementById('why').textContent",
        )
        .await;
    assert!(
        why.as_str()
            .is_some_and(|t| t.starts_with("failing: 1 attempt, last error: ")
                && t.contains("the refresh job gave up")),
        "{why}"
    );
    browser.screenshot("failing", true).await;
    browser.client.back().await.expect("back to the jobs");

    // The fleet is back: retry from the page, and the job leaves the list.
    fleet.set_down(false);
    browser
        .click(
            "#failed tr[data-key=\"register_sales/11/2026-11-26\"] button",
            "Retry",
        )
        .await;
    browser
        .until(
            "the failed list without the job",
            "return document.getElementById('failed')?.textContent === 'No failed jobs.'",
        )
        .await;
    let jobs = cache.inspect().jobs(100).await.expect("the jobs");
    assert!(jobs.failed.is_empty(), "{jobs:?}");

    // The primers' graph.
    browser.open(&format!("{page}#/graph")).await;
    browser
        .until(
            "the primer graph",
            "return document.querySelectorAll('#graph .node').length === 5",
        )
        .await;
    browser.screenshot("graph", true).await;
    browser.client.close().await.expect("the session ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_a_token_and_says_when_the_store_went_away() {
    let Some(driver) = chromedriver() else {
        return;
    };
    let Some(cluster) = TestDatabase::own_cluster() else {
        return;
    };
    let db = TestDatabase::create_in(&cluster).await;
    let store = PgStore::builder(db.url())
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connects");
    let fleet = Fleet::new(day(), 5, Duration::ZERO);
    let token = "read-token-for-the-browser-0123";
    let config = AdminConfig::new().token(kck_admin::Scope::Read, token);
    let (_cache, addr) = pipeline(&fleet, Some(store), config).await;
    let browser = Browser::start(&driver).await;
    let page = format!("http://{addr}/");

    // No token yet: the page asks for one, and then shows the products.
    browser.open(&page).await;
    browser
        .until(
            "the token form",
            "return !document.getElementById('token-form').hidden",
        )
        .await;
    browser
        .client
        .find(fantoccini::Locator::Id("token-input"))
        .await
        .expect("the token field")
        .send_keys(token)
        .await
        .expect("typed");
    browser.click("button", "Use token").await;
    browser
        .until(
            "the products",
            "return document.querySelectorAll('#products tbody tr').length === 18",
        )
        .await;
    let banner = browser
        .client
        .execute(
            "return document.getElementById('banner').hidden",
            Vec::new(),
        )
        .await
        .expect("the banner");
    assert_eq!(banner, json!(true), "no banner while all is well");

    // The store goes away: the page says so, and says so no more once back.
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("joined")
        .expect("the server stops");
    browser.click("header nav a", "Jobs").await;
    let said = browser
        .until(
            "the store banner",
            "const b = document.getElementById('banner'); return !b.hidden && b.textContent",
        )
        .await;
    assert!(
        said.as_str()
            .is_some_and(|t| t.starts_with("The store is unavailable")),
        "{said}"
    );
    browser.screenshot("store-down", false).await;
    let resuming = cluster.clone();
    tokio::task::spawn_blocking(move || resuming.resume())
        .await
        .expect("joined")
        .expect("the server resumes");
    browser.click("header nav a", "Products").await;
    browser
        .until(
            "the banner gone",
            // A render on a connection the outage closed fails once: ask
            // again now and then, as an operator would.
            "const ok = document.getElementById('banner').hidden
               && document.querySelectorAll('#products tbody tr').length === 18;
             window.polls = (window.polls || 0) + 1;
             if (!ok && window.polls % 10 === 0) window.dispatchEvent(new HashChangeEvent('hashchange'));
             return ok;",
        )
        .await;
    browser.client.close().await.expect("the session ends");
}
