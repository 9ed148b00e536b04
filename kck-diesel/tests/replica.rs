//! Read replicas against a real hot standby: a throwaway primary, a
//! standby of it made with `pg_basebackup -R`, and replay paused on
//! purpose to make it lag. A process never goes back in time: what it
//! wrote, or was told of, it never reads older from the replica; a
//! process that saw nothing may read the replica's older value (the
//! staleness a replica allows). A replica that is down is skipped; a
//! primary or another primary's standby is refused at start.

use std::time::Duration;

use kck_core::{Cache, Ctx, primer};
use kck_diesel::{ConnectError, PgStore};
use kck_testing::postgres::{Cluster, TestDatabase};

#[primer(key = "level/{n}")]
async fn level(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
    Ok(n)
}

/// `url` on another port of 127.0.0.1.
fn on_port(url: &str, from: u16, to: u16) -> String {
    url.replacen(
        &format!("127.0.0.1:{from}/"),
        &format!("127.0.0.1:{to}/"),
        1,
    )
}

async fn sql(url: &str, statement: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect to {url}: {error:?}"));
    tokio::spawn(connection);
    client
        .query(statement, &[])
        .await
        .unwrap_or_else(|error| panic!("{statement}: {error}"))
}

/// Waits until the standby has replayed everything the primary wrote so
/// far (or fails after a minute). The URLs name any database of each. The
/// insert position, not the write position: the test clusters commit
/// asynchronously (`synchronous_commit=off`), so a commit may be in WAL
/// buffers, not yet written, when the next statement asks.
async fn caught_up(primary: &str, standby: &str) {
    let lsn: String = sql(primary, "SELECT pg_current_wal_insert_lsn()::text").await[0].get(0);
    for _ in 0..600 {
        let done: bool = sql(
            standby,
            &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
        )
        .await[0]
            .get(0);
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the standby did not catch up with {lsn}");
}

/// A process: a cache without a memo (every read loads), on a store that
/// reads from the replica.
async fn process(primary: &str, replica: &str) -> (Cache, PgStore) {
    let store = PgStore::builder(primary)
        .replica(replica)
        .connect()
        .await
        .expect("connects");
    (memo_off(&store), store)
}

/// A cache without a memo on `store`.
fn memo_off(store: &PgStore) -> Cache {
    Cache::builder()
        .store(store.clone())
        .memo(false)
        .local_worker(false)
        .local_scheduler(false)
        .build()
        .expect("valid primers")
}

async fn read(cache: &Cache, n: u32) -> Option<u32> {
    cache
        .peek(&level::key(n))
        .await
        .expect("read")
        .map(|value| *value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_never_takes_a_process_back_in_time() {
    let Some(primary) = TestDatabase::own_cluster() else {
        return;
    };
    let standby = primary.start_standby().expect("a hot standby");
    let db = TestDatabase::create_in(&primary).await;
    let primary_url = db.url().to_owned();
    let replica_url = on_port(&primary_url, primary.port(), standby.port());
    // kck's tables, on the primary and then on the standby.
    drop(PgStore::connect(&primary_url).await.expect("migrates"));
    caught_up(&primary.url("postgres"), &standby.url("postgres")).await;

    let (writer, writer_store) = process(&primary_url, &replica_url).await;
    let (told, told_store) = process(&primary_url, &replica_url).await;
    writer.set(&level::key(1), 10).await.expect("set");
    caught_up(&primary.url("postgres"), &standby.url("postgres")).await;
    assert_eq!(read(&told, 1).await, Some(10));

    // The standby stops replaying: it lags from now on.
    sql(&replica_url, "SELECT pg_wal_replay_pause()").await;
    writer.set(&level::key(1), 20).await.expect("set");
    told.storage().coordination().sync().await.expect("synced");

    // A process that saw nothing reads what the replica has: older.
    let (fresh, fresh_store) = process(&primary_url, &replica_url).await;
    assert_eq!(read(&fresh, 1).await, Some(10), "the replica lags");
    assert_eq!(read(&fresh, 1).await, Some(10));
    assert!(
        fresh_store.replicas()[0].reads >= 2,
        "{:?}",
        fresh_store.replicas()
    );

    // The writer, and the process told of the write, never read older.
    assert_eq!(read(&writer, 1).await, Some(20));
    assert_eq!(read(&told, 1).await, Some(20));
    assert!(
        writer_store.replicas()[0].behind >= 1,
        "{:?}",
        writer_store.replicas()
    );
    assert!(
        told_store.replicas()[0].behind >= 1,
        "{:?}",
        told_store.replicas()
    );

    // Once the fresh process reads the new version (here, its own write
    // elsewhere: a key the primary answers), it never reads older either.
    fresh.set(&level::key(1), 30).await.expect("set");
    assert_eq!(read(&fresh, 1).await, Some(30));

    // Replay resumes: the replica serves again.
    sql(&replica_url, "SELECT pg_wal_replay_resume()").await;
    caught_up(&primary.url("postgres"), &standby.url("postgres")).await;
    let before = told_store.replicas()[0].reads;
    assert_eq!(read(&told, 1).await, Some(30));
    assert_eq!(
        told_store.replicas()[0].reads,
        before + 1,
        "read from the replica"
    );

    // A replica that is down: reads go to the primary, and say so.
    standby.stop().expect("the standby stops");
    assert_eq!(read(&told, 1).await, Some(30));
    let stats = &told_store.replicas()[0];
    assert!(!stats.healthy && stats.failures >= 1, "{stats:?}");
    assert_eq!(read(&told, 1).await, Some(30), "skipped for a while");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_no_standby_of_the_primary_is_refused() {
    let Some(primary) = TestDatabase::own_cluster() else {
        return;
    };
    let other = Cluster::start().expect("another cluster");
    let others_standby = other.start_standby().expect("its standby");
    let url = primary.url("postgres");

    // The primary itself, given as a replica.
    let error = PgStore::builder(&url)
        .replica(&url)
        .connect()
        .await
        .expect_err("a primary is no replica");
    assert!(matches!(error, ConnectError::NotAReplica { .. }), "{error}");

    // Another primary's standby.
    let error = PgStore::builder(&url)
        .replica(others_standby.url("postgres"))
        .connect()
        .await
        .expect_err("another primary's standby");
    assert!(
        matches!(error, ConnectError::ReplicaOfAnotherPrimary { .. }),
        "{error}"
    );

    // Its own standby is accepted, but not another database on it.
    let standby = primary.start_standby().expect("a hot standby");
    PgStore::builder(&url)
        .replica(standby.url("postgres"))
        .connect()
        .await
        .expect("its own standby");
    let error = PgStore::builder(&url)
        .replica(standby.url("template1"))
        .connect()
        .await
        .expect_err("another database");
    assert!(
        matches!(&error, ConnectError::ReplicaOfAnotherDatabase { database, expected, .. }
            if database == "template1" && expected == "postgres"),
        "{error}"
    );

    // A standby that is down at start does not keep the store from
    // starting; it is checked, and used, once it answers.
    standby.stop().expect("the standby stops");
    let store = PgStore::builder(&url)
        .replica(standby.url("postgres"))
        .connect()
        .await
        .expect("starts without its replica");
    assert!(!store.replicas()[0].healthy, "{:?}", store.replicas());
    standby.resume().expect("the standby starts again");
    assert_eq!(read(&memo_off(&store), 7).await, None);
    let stats = &store.replicas()[0];
    assert!(stats.healthy && stats.reads == 1, "{stats:?}");
}
