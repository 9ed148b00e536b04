//! PgStore keeps the store contract, and reports an unreachable database
//! clearly.

use std::sync::Arc;
use std::time::Duration;

use kck_diesel::PgStore;
use kck_testing::postgres::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_conformance_suite() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(db.url()).await.expect("connects");
    kck_testing::conformance::check_store(Arc::new(store)).await;
}

#[tokio::test]
async fn connecting_to_an_unreachable_database_is_a_clear_transient_error() {
    // Nothing listens on port 1.
    let error = PgStore::builder("postgres://kck@127.0.0.1:1/kck")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect_err("nothing to connect to");
    assert!(error.is_transient(), "{error}");
    let message = error.to_string();
    assert!(message.starts_with("store unavailable: "), "{message}");
    assert!(
        message.contains("Connection refused") || message.contains("connect"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_twice_runs_the_migrations_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (first, second) = tokio::join!(PgStore::connect(db.url()), PgStore::connect(db.url()));
    first.expect("the first connects");
    second.expect("the second connects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_queue_conformance_suite() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(db.url()).await.expect("connects");
    kck_testing::queue_conformance::check_queue(Arc::new(store)).await;
}
