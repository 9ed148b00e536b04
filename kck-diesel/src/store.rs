//! [`PgStore`]: the connection pool, the listener and the schema; each
//! port it implements has a module of its own (`entries`, `timetable`,
//! `coordination`, `queue`).

use std::sync::Arc;
use std::time::Duration;

use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use kck_core::storage::{Storage, StoreError};
use tokio::task::AbortHandle;

use crate::convert::{pool_error, query_error};
use crate::listen::{self, Watchers};
use crate::statement::{Bind, Sql, Statement};

/// kck's schema, created or upgraded by [`PgStore::connect`].
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Serializes concurrent migrations of processes starting together.
const MIGRATION_LOCK: i64 = 0x6b63_6b5f_6d69_6772;

/// A store in PostgreSQL, shared by every process that connects to the
/// same database: it implements every port
/// ([`EntryStore`](kck_core::storage::EntryStore),
/// [`Timetable`](kck_core::storage::Timetable),
/// [`Coordination`](kck_core::storage::Coordination),
/// [`Queue`](kck_core::storage::Queue)), and a cache takes it as a
/// [`Storage`]. See the [crate documentation](crate).
///
/// Cloning is cheap: clones share the pool and the listener.
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool<AsyncPgConnection>,
    watchers: Arc<Watchers>,
    listener: AbortHandle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects with the default settings; see [`PgStoreBuilder`].
    ///
    /// # Errors
    ///
    /// As [`PgStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::builder(url).connect().await
    }

    /// A builder, to set the pool size and timeouts.
    pub fn builder(url: &str) -> PgStoreBuilder {
        PgStoreBuilder {
            url: url.to_owned(),
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(5),
        }
    }

    /// The connection pool, for queries of your own on the same database.
    pub fn pool(&self) -> &Pool<AsyncPgConnection> {
        &self.shared.pool
    }

    pub(crate) fn watchers(&self) -> &Watchers {
        &self.shared.watchers
    }

    /// Runs a statement that returns nothing; returns the rows it touched.
    pub(crate) async fn execute<S: Sql>(&self, binds: Vec<Bind>) -> Result<usize, StoreError> {
        let mut conn = self.shared.pool.get().await.map_err(pool_error)?;
        Statement::<S>::new(binds)
            .execute(&mut *conn)
            .await
            .map_err(query_error)
    }

    pub(crate) async fn run<S: Sql, R>(&self, binds: Vec<Bind>) -> Result<Vec<R>, StoreError>
    where
        R: diesel::QueryableByName<diesel::pg::Pg> + Send + 'static,
    {
        let mut conn = self.shared.pool.get().await.map_err(pool_error)?;
        Statement::<S>::new(binds)
            .load::<R>(&mut *conn)
            .await
            .map_err(query_error)
    }

    pub(crate) async fn run_one<S: Sql, R>(&self, binds: Vec<Bind>) -> Result<R, StoreError>
    where
        R: diesel::QueryableByName<diesel::pg::Pg> + Send + 'static,
    {
        self.run::<S, R>(binds)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::backend(format!("no row from: {}", S::SQL)))
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.pool.state();
        f.debug_struct("PgStore")
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .finish_non_exhaustive()
    }
}

/// Connects a [`PgStore`].
///
/// ```no_run
/// # async fn run() -> Result<(), kck_core::storage::StoreError> {
/// use std::time::Duration;
/// use kck_diesel::PgStore;
///
/// let store = PgStore::builder("postgres://kck@db.internal/reports")
///     .pool_size(20)
///     .connect_timeout(Duration::from_secs(3))
///     .heartbeat(Duration::from_secs(2))
///     .connect()
///     .await?;
/// let cache = kck_core::Cache::builder().store(store).build();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgStoreBuilder {
    url: String,
    pool_size: u32,
    connect_timeout: Duration,
    heartbeat: Duration,
}

impl PgStoreBuilder {
    /// The most connections the pool opens (default 10). The listener
    /// uses one more.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long to wait for a connection, when connecting and when the
    /// pool is exhausted (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the listener waits without news before it checks that its
    /// connection still answers, and how long it waits for the answer
    /// (default 5 s). A silently dead connection is noticed within twice
    /// this: the bound on how long a memo may serve a value another process
    /// changed.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat.max(Duration::from_millis(10));
        self
    }

    /// Creates or upgrades kck's tables, opens the pool, and starts
    /// listening for the writes of other processes.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database cannot be reached in
    /// time, [`StoreError::Backend`] if the migrations fail.
    pub async fn connect(self) -> Result<PgStore, StoreError> {
        migrate(&self.url, self.connect_timeout).await?;
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(&self.url);
        let pool = Pool::builder()
            .max_size(self.pool_size)
            .connection_timeout(self.connect_timeout)
            .test_on_check_out(false)
            .build(manager)
            .await
            .map_err(StoreError::unavailable)?;
        let watchers = Arc::new(Watchers::default());
        let conn = listen::connect(&self.url, self.connect_timeout).await?;
        // Listening from now on: caches that register trust their memos.
        watchers.set_tracking(true);
        let listener = tokio::spawn(listen::run(
            conn,
            watchers.clone(),
            self.url,
            self.heartbeat,
        ))
        .abort_handle();
        Ok(PgStore {
            shared: Arc::new(Shared {
                pool,
                watchers,
                listener,
            }),
        })
    }
}

/// Runs the embedded migrations, on a blocking thread (diesel's harness is
/// synchronous), one process at a time.
async fn migrate(url: &str, timeout: Duration) -> Result<(), StoreError> {
    let url = url.to_owned();
    let migration = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(StoreError::unavailable)?;
        conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .map_err(query_error)?;
        let migrated = conn
            .run_pending_migrations(MIGRATIONS)
            .map(drop)
            .map_err(StoreError::backend);
        let unlocked = conn
            .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .map_err(query_error);
        migrated.and(unlocked)
    });
    match tokio::time::timeout(timeout, migration).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(StoreError::backend(join)),
        Err(_) => Err(StoreError::unavailable(
            "timed out connecting to PostgreSQL to migrate kck's tables",
        )),
    }
}

/// Every port is the one `PgStore`; its saves queue their dependents'
/// refreshes in `kck_jobs` themselves.
impl From<PgStore> for Storage {
    fn from(store: PgStore) -> Self {
        let store = Arc::new(store);
        Storage::of(store.clone())
            .with_queue_fed_by_saves(store.clone())
            .with_catalog(store)
    }
}
