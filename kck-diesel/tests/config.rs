//! Configuration on a real server: schemas keep two applications of one
//! database apart (tables, migrations, notifications), and the session
//! settings reach every connection.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl as _;
use kck_core::event::Event;
use kck_core::{Cache, Ctx, primer};
use kck_diesel::{ConnectError, Migrations, PgStore};
use kck_testing::postgres::TestDatabase;

#[primer(key = "label/{n}")]
async fn label(_ctx: &Ctx, n: u32) -> Result<String, std::convert::Infallible> {
    Ok(format!("computed {n}"))
}

type Events = Arc<Mutex<Vec<&'static str>>>;

fn taken(events: &Events) -> Vec<&'static str> {
    std::mem::take(&mut *events.lock().unwrap_or_else(PoisonError::into_inner))
}

/// A cache on a store of its own in `schema`, as a process would have.
async fn cache_in(url: &str, schema: &str, events: Option<Events>) -> Cache {
    let store = PgStore::builder(url)
        .schema(schema)
        .connect()
        .await
        .expect("connects");
    let mut builder = Cache::builder()
        .store(store)
        .local_worker(false)
        .local_scheduler(false);
    if let Some(events) = events {
        builder = builder.on_event(move |event: &Event| {
            events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event.kind.name());
        });
    }
    builder.build().expect("valid primers")
}

/// Waits until `cache` has heard every change committed so far.
async fn hear_changes(cache: &Cache) {
    cache.storage().coordination().sync().await.expect("synced");
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

async fn table_exists(store: &PgStore, table: &str) -> bool {
    let mut conn = store.pool().get().await.expect("a connection");
    diesel::sql_query(format!(
        "SELECT to_regclass('{table}') IS NOT NULL AS exists"
    ))
    .get_result::<Exists>(&mut conn)
    .await
    .expect("asked")
    .exists
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applications_in_one_database_keep_apart_with_schemas() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let b_events: Events = Arc::default();
    let a1 = cache_in(db.url(), "app_a", None).await;
    let a2 = cache_in(db.url(), "app_a", None).await;
    let b = cache_in(db.url(), "app_b", Some(b_events.clone())).await;
    let key = label::key(1);

    a1.set(&key, "a".to_owned()).await.expect("set in a");
    b.set(&key, "b".to_owned()).await.expect("set in b");
    assert_eq!(*label(&a2, 1).await.expect("read a"), "a");
    assert_eq!(*label(&b, 1).await.expect("read b"), "b");
    taken(&b_events);

    // A write in app_a reaches app_a's other process, and not app_b's,
    // whose copy stays in its memo: it heard nothing.
    a1.set(&key, "a, again".to_owned()).await.expect("set in a");
    hear_changes(&a2).await;
    hear_changes(&b).await;
    assert_eq!(*label(&a2, 1).await.expect("read a"), "a, again");
    assert_eq!(*label(&b, 1).await.expect("read b"), "b");
    assert_eq!(taken(&b_events), ["hit"]);

    // Each schema has its own tables and migrations; the default has none.
    let store = PgStore::connect(db.url()).await.expect("connects");
    for table in [
        "app_a.kck_entries",
        "app_b.kck_entries",
        "app_a.__diesel_schema_migrations",
        "app_b.__diesel_schema_migrations",
    ] {
        assert!(table_exists(&store, table).await, "{table}");
    }
    assert!(
        !table_exists(&store, "app_a.nothing").await,
        "the check can fail"
    );
}

#[derive(QueryableByName)]
struct Settings {
    #[diesel(sql_type = Text)]
    application_name: String,
    #[diesel(sql_type = Text)]
    statement_timeout: String,
}

async fn settings(store: &PgStore) -> Settings {
    let mut conn = store.pool().get().await.expect("a connection");
    diesel::sql_query(
        "SELECT current_setting('application_name') AS application_name, \
                current_setting('statement_timeout') AS statement_timeout",
    )
    .get_result::<Settings>(&mut conn)
    .await
    .expect("asked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_and_statement_timeout_reach_the_connections() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let defaults = settings(&PgStore::connect(db.url()).await.expect("connects")).await;
    assert_eq!(defaults.application_name, "kck");
    assert_eq!(defaults.statement_timeout, "0");

    let from_url = PgStore::connect(&format!("{}?application_name=from-url", db.url()))
        .await
        .expect("connects");
    assert_eq!(settings(&from_url).await.application_name, "from-url");

    let store = PgStore::builder(db.url())
        .application_name("reports-api")
        .statement_timeout(Duration::from_millis(250))
        .connect()
        .await
        .expect("connects");
    let set = settings(&store).await;
    assert_eq!(set.application_name, "reports-api");
    assert_eq!(set.statement_timeout, "250ms");
    // The server cancels a statement that runs longer.
    let mut conn = store.pool().get().await.expect("a connection");
    let error = diesel::sql_query("SELECT pg_sleep(5)")
        .execute(&mut conn)
        .await
        .expect_err("cancelled");
    assert!(error.to_string().contains("statement timeout"), "{error}");
}

#[tokio::test]
async fn an_invalid_schema_is_refused_before_connecting() {
    // Nothing listens on port 1: the name is refused first.
    let error = PgStore::builder("postgres://kck@127.0.0.1:1/kck")
        .schema("Reports; DROP")
        .connect()
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, ConnectError::InvalidSchema { name, .. } if name == "Reports; DROP"),
        "{error}"
    );
}

/// A store that may not change the schema (as a tool that only looks)
/// creates nothing, and says what is missing: no kck tables at all (the
/// wrong database, likely), or migrations of this version not applied.
#[tokio::test]
async fn a_store_that_may_not_migrate_creates_nothing_and_says_what_is_missing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let require = || {
        PgStore::builder(db.url())
            .migrations(Migrations::Require)
            .connect()
    };
    // A store of another schema, to look at the default one with.
    let looker = PgStore::builder(db.url())
        .schema("looker")
        .connect()
        .await
        .expect("connects");
    let missing = require().await.expect_err("no kck tables yet");
    assert!(
        matches!(missing, ConnectError::NoSchema { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("no kck tables"), "{missing}");
    for table in ["public.kck_entries", "public.__diesel_schema_migrations"] {
        assert!(!table_exists(&looker, table).await, "{table} was created");
    }
    db.connect().await;
    require().await.expect("kck's tables are up to date");
    let mut conn = looker.pool().get().await.expect("a connection");
    diesel::sql_query(
        "DELETE FROM public.__diesel_schema_migrations \
         WHERE version = (SELECT max(version) FROM public.__diesel_schema_migrations)",
    )
    .execute(&mut conn)
    .await
    .expect("one migration forgotten");
    let outdated = require().await.expect_err("a migration is missing");
    assert!(
        matches!(outdated, ConnectError::SchemaOutdated { pending: 1, .. }),
        "{outdated}"
    );
}
