//! A database password never leaves the process: not in `Debug`, not in an
//! error's message, not in a log line at any level, not in an event. The
//! test connects with a password in the URL (the throwaway server trusts
//! every connection and ignores it), fails to connect in every way a URL
//! can make it fail, and takes the server away and back while a cache runs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kck_core::event::Event;
use kck_core::storage::StoreError;
use kck_core::{Cache, Ctx, primer};
use kck_diesel::{ConnectError, PgStore};
use kck_testing::logs::CapturedLogs;
use kck_testing::postgres::TestDatabase;

const SECRET: &str = "pw-8d3f1c6a2e-hunter2";

/// What the test shows of errors, `Debug` output and events, as text.
#[derive(Clone, Default)]
struct Shown(Arc<Mutex<String>>);

impl Shown {
    fn push(&self, text: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(text);
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[primer(key = "secret_reading/{n}")]
async fn secret_reading(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
    Ok(n * 10)
}

/// `url` with the password in its user part.
fn with_password(url: &str) -> String {
    url.replacen("postgres@", &format!("postgres:{SECRET}@"), 1)
}

/// The error every way it can be shown, directly and as a `StoreError`.
fn shown(error: ConnectError) -> String {
    let mut text = format!("{error}\n{error:?}\n");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!("{cause}\n{cause:?}\n"));
        source = cause.source();
    }
    let store = StoreError::from(error);
    text.push_str(&format!("{store}\n{store:?}\n"));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_debug_errors_logs_or_events() {
    let Some(cluster) = TestDatabase::own_cluster() else {
        return;
    };
    let logs = CapturedLogs::default();
    tracing::subscriber::set_global_default(logs.subscriber())
        .expect("the only subscriber of this test binary");
    let seen = Shown::default();
    let db = TestDatabase::create_in(&cluster).await;
    let url = with_password(db.url());
    assert!(url.contains(SECRET), "the test puts the password in: {url}");

    // Connected: the builder and the store in Debug.
    let builder = PgStore::builder(&url)
        .connect_timeout(Duration::from_secs(5))
        .heartbeat(Duration::from_millis(200));
    seen.push(&format!("{builder:?}\n"));
    let store = builder.connect().await.expect("connects");
    seen.push(&format!("{store:?}\n"));

    // Every way a URL can fail to connect.
    let port = cluster.port();
    for bad in [
        format!("{url}?sslmode=sometimes"),
        format!("{url}?sslcert=/client.pem"),
        format!("postgres://postgres:{SECRET}@127.0.0.1:notaport/db"),
        format!("postgres://postgres:{SECRET}@127.0.0.1:1/db"),
        format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/db?sslmode=require"),
        format!(
            "postgres://postgres:{SECRET}@127.0.0.1:{port}/db?sslmode=verify-full&sslrootcert=/none.pem"
        ),
        format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/no_such_database"),
        format!("postgres:{SECRET}@nowhere"),
    ] {
        let builder = PgStore::builder(&bad).connect_timeout(Duration::from_secs(5));
        seen.push(&format!("{builder:?}\n"));
        let error = builder.connect().await.expect_err("fails");
        seen.push(&shown(error));
    }

    // A cache through an outage: its events and the listener's log lines.
    let events = seen.clone();
    let cache = Cache::builder()
        .store(store)
        .on_event(move |event: &Event| events.push(&format!("{event}\n{event:?}\n")))
        .build()
        .expect("valid primers");
    assert_eq!(*secret_reading(&cache, 1).await.expect("computed"), 10);
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("joined")
        .expect("the server stops");
    let error = secret_reading(&cache, 2).await.expect_err("down");
    seen.push(&format!("{error}\n{error:?}\n"));
    // Until the listener has noticed (and tried to reconnect).
    for _ in 0..100 {
        if logs.text().contains("reconnecting the LISTEN connection") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resuming = cluster.clone();
    tokio::task::spawn_blocking(move || resuming.resume())
        .await
        .expect("joined")
        .expect("the server starts again");
    let mut value = None;
    for _ in 0..100 {
        if let Ok(read) = secret_reading(&cache, 2).await {
            value = Some(*read);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(value, Some(20), "recovered");

    let logs = logs.text();
    let seen = seen.text();
    // The checks can fail: what was captured is there.
    assert!(
        logs.contains("reconnecting the LISTEN connection"),
        "the listener's log lines: {logs}"
    );
    for shown in [
        "127.0.0.1",
        "unknown sslmode",
        "computed",
        "store unavailable",
    ] {
        assert!(seen.contains(shown), "`{shown}` in:\n{seen}");
    }
    assert!(
        !logs.contains(SECRET),
        "a log line shows the password:\n{logs}"
    );
    assert!(!seen.contains(SECRET), "the password is shown:\n{seen}");
}
