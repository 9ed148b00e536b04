//! [`PgStore`]: the connection pool, the listener and the schema; each
//! port it implements has a module of its own (`entries`, `timetable`,
//! `coordination`, `queue`).

use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use diesel::connection::SimpleConnection as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use kck_core::storage::{Storage, StoreError};
use tokio::task::AbortHandle;

use crate::connect::{
    ConnectError, ParsedUrl, Schema, SslMode, Target, database_url, redact_url, settle_tls,
};
use crate::convert::{pool_error, query_error};
use crate::listen::{self, Watchers};
use crate::replica::{Identity, Replica, ReplicaStats, Replicas};
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
    server: Arc<str>,
    pool: Pool<AsyncPgConnection>,
    replicas: Option<Replicas>,
    watchers: Arc<Watchers>,
    listener: AbortHandle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects to the database at `KCK_DATABASE_URL` (or, when it is not
    /// set, `DATABASE_URL`) with the default settings; see
    /// [`PgStoreBuilder::from_env`].
    ///
    /// # Errors
    ///
    /// [`ConnectError::MissingUrl`], or as [`PgStoreBuilder::connect`].
    pub async fn from_env() -> Result<PgStore, ConnectError> {
        PgStoreBuilder::from_env()?.connect().await
    }

    /// Connects with the default settings; see [`PgStoreBuilder`].
    ///
    /// # Errors
    ///
    /// As [`PgStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<PgStore, ConnectError> {
        PgStore::builder(url).connect().await
    }

    /// A builder, to set the pool size and timeouts.
    pub fn builder(url: &str) -> PgStoreBuilder {
        PgStoreBuilder {
            url: url.to_owned(),
            ssl_mode: None,
            ssl_root_cert: None,
            replicas: Vec::new(),
            application_name: None,
            statement_timeout: None,
            schema: None,
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(5),
            migrations: Migrations::Apply,
        }
    }

    /// `host:port/database` of the server: what to show of where the store
    /// is (never the user or the password).
    pub fn server(&self) -> &str {
        &self.shared.server
    }

    /// What each replica has done: loads answered, answers too old to use,
    /// failures. Empty without replicas.
    pub fn replicas(&self) -> Vec<ReplicaStats> {
        self.shared
            .replicas
            .as_ref()
            .map_or_else(Vec::new, Replicas::stats)
    }

    pub(crate) fn replica_set(&self) -> Option<&Replicas> {
        self.shared.replicas.as_ref()
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
        run_on::<S, R>(&self.shared.pool, binds).await
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
            .field("server", &self.shared.server)
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .finish_non_exhaustive()
    }
}

/// Runs a statement on a connection of `pool`.
pub(crate) async fn run_on<S: Sql, R>(
    pool: &Pool<AsyncPgConnection>,
    binds: Vec<Bind>,
) -> Result<Vec<R>, StoreError>
where
    R: diesel::QueryableByName<diesel::pg::Pg> + Send + 'static,
{
    let mut conn = pool.get().await.map_err(pool_error)?;
    Statement::<S>::new(binds)
        .load::<R>(&mut *conn)
        .await
        .map_err(query_error)
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
#[derive(Clone)]
pub struct PgStoreBuilder {
    url: String,
    ssl_mode: Option<SslMode>,
    ssl_root_cert: Option<PathBuf>,
    application_name: Option<String>,
    statement_timeout: Option<Duration>,
    schema: Option<String>,
    replicas: Vec<String>,
    pool_size: u32,
    connect_timeout: Duration,
    heartbeat: Duration,
    migrations: Migrations,
}

impl std::fmt::Debug for PgStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreBuilder")
            .field("url", &redact_url(&self.url))
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("application_name", &self.application_name)
            .field("statement_timeout", &self.statement_timeout)
            .field("schema", &self.schema)
            .field(
                "replicas",
                &self
                    .replicas
                    .iter()
                    .map(|url| redact_url(url))
                    .collect::<Vec<_>>(),
            )
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("migrations", &self.migrations)
            .finish()
    }
}

impl PgStoreBuilder {
    /// A builder for the database at `KCK_DATABASE_URL`, or, when it is
    /// not set (or empty), `DATABASE_URL`.
    ///
    /// # Errors
    ///
    /// [`ConnectError::MissingUrl`] when neither is set.
    ///
    /// `KCK_DATABASE_REPLICA_URLS`, if set, lists replicas (see
    /// [`PgStoreBuilder::replica`]), separated by spaces.
    pub fn from_env() -> Result<PgStoreBuilder, ConnectError> {
        let var = |name: &str| std::env::var(name).ok();
        let mut builder = PgStore::builder(&database_url(var)?);
        for url in var("KCK_DATABASE_REPLICA_URLS")
            .unwrap_or_default()
            .split_whitespace()
        {
            builder = builder.replica(url);
        }
        Ok(builder)
    }

    /// A read replica (a hot standby of the primary) that loads of entries
    /// may go to; call it once per replica. Everything that writes,
    /// claims, fences, leases or listens stays on the primary, and a
    /// replica's answer is used only when it holds at least the version of
    /// the key this process has already seen (written, been told of, or
    /// loaded): a lagging replica never takes a process back in time. A
    /// replica that fails is left alone for a few seconds while the
    /// primary answers (logged at `warn`). The URL is read as the
    /// primary's, with the same TLS settings given here, pool size and
    /// session.
    ///
    /// [`PgStoreBuilder::connect`] refuses a replica that is not a hot
    /// standby, is one of another primary, or serves another database; a
    /// replica it cannot reach is logged and checked when it first
    /// answers.
    pub fn replica(mut self, url: impl Into<String>) -> Self {
        self.replicas.push(url.into());
        self
    }

    /// The name connections give PostgreSQL, shown in `pg_stat_activity`
    /// and the server's logs (default: the URL's `application_name`, else
    /// `kck`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// How long one statement may run before the server cancels it, on
    /// the pool's connections and the listener's (default: the server's
    /// setting, usually none). Migrations run without it.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    /// The PostgreSQL schema kck's tables live in, created if missing
    /// (default: none is set, and the tables live where the connection's
    /// `search_path` puts them, usually `public`). Two applications that
    /// share a database each take a schema of their own: their tables,
    /// migrations and notification channels are apart. A plain lower-case
    /// identifier of up to 48 characters; the pool's connections keep it
    /// as their `search_path`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// How connections use TLS, overriding the URL's `sslmode` (default:
    /// the URL's, else [`SslMode::Prefer`], as libpq).
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = Some(mode);
        self
    }

    /// The PEM file of the CA certificates that the server's certificate
    /// must chain to, overriding the URL's `sslrootcert` (default: the
    /// URL's, else the system's roots). With [`SslMode::Require`], giving
    /// one makes the mode check the chain, as libpq does. `"system"` means
    /// the system's roots and [`SslMode::VerifyFull`] (a weaker mode is
    /// refused), as in libpq 16.
    pub fn ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_root_cert = Some(path.into());
        self
    }

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

    /// Whether [`connect`](Self::connect) creates and upgrades kck's tables
    /// ([`Migrations::Apply`], the default) or only checks that they are
    /// there and up to date ([`Migrations::Require`]), as a tool that only
    /// looks should: pointed at the wrong database, it then says so instead
    /// of creating kck's tables there.
    pub fn migrations(mut self, migrations: Migrations) -> Self {
        self.migrations = migrations;
        self
    }

    /// Creates or upgrades kck's tables, opens the pool, and starts
    /// listening for the writes of other processes. Every connection (the
    /// pool's, the listener's, the migrations') uses the same TLS.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`] naming the cause: a URL that cannot be read
    /// ([`ConnectError::InvalidUrl`], [`ConnectError::UnknownSslMode`]), a
    /// CA file that cannot be used, a failed TLS handshake
    /// ([`ConnectError::Tls`], with a [`TlsFailure`](crate::TlsFailure)), a
    /// server that refuses or cannot be reached in time, or migrations
    /// that fail ([`ConnectError::Setup`]). It converts into a
    /// [`StoreError`] for `?`.
    pub async fn connect(self) -> Result<PgStore, ConnectError> {
        let schema = self.schema.as_deref().map(Schema::new).transpose()?;
        let target = self.target(&self.url, schema.clone())?;
        let replica_targets = self
            .replicas
            .iter()
            .map(|url| self.target(url, schema.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let setup = |source: StoreError| ConnectError::Setup {
            server: target.server().to_owned(),
            source,
        };
        migrate(&target, self.connect_timeout, self.migrations).await?;
        let pool = self.pool(&target).await.map_err(setup)?;
        let mut replicas = Vec::with_capacity(replica_targets.len());
        let primary = if replica_targets.is_empty() {
            None
        } else {
            let mut conn = target.connect(self.connect_timeout).await?;
            Some(Identity::of(&mut conn).await.map_err(setup)?)
        };
        for replica in &replica_targets {
            let verified = match replica.connect(self.connect_timeout).await {
                Ok(mut conn) => {
                    let (in_recovery, identity) = Identity::of(&mut conn).await.map_err(setup)?;
                    if let Some((_, primary)) = &primary
                        && let Some(refused) = identity.refused(
                            in_recovery,
                            replica.server(),
                            primary,
                            target.server(),
                        )
                    {
                        return Err(refused);
                    }
                    true
                }
                // Down for now: checked when it first answers.
                Err(error) if error.is_transient() => {
                    tracing::warn!(target: "kck", %error, "a replica cannot be reached; the primary answers until it can");
                    false
                }
                Err(error) => return Err(error),
            };
            let pool = self.pool(replica).await.map_err(setup)?;
            replicas.push(Replica::new(replica.server().into(), pool, verified));
        }
        let watchers = Arc::new(Watchers::default());
        if !replicas.is_empty() {
            watchers.floors.enable();
        }
        let conn = listen::connect(&target, self.connect_timeout)
            .await
            .map_err(setup)?;
        // Listening from now on: caches that register trust their memos.
        watchers.set_tracking(true);
        let server: Arc<str> = target.server().into();
        let target_server = server.clone();
        let listener = tokio::spawn(listen::run(conn, watchers.clone(), target, self.heartbeat))
            .abort_handle();
        Ok(PgStore {
            shared: Arc::new(Shared {
                server,
                pool,
                replicas: primary
                    .map(|(_, primary)| Replicas::new(replicas, primary, target_server.clone())),
                watchers,
                listener,
            }),
        })
    }

    /// A pool of connections to `target`, of this builder's size and
    /// time-out.
    async fn pool(&self, target: &Target) -> Result<Pool<AsyncPgConnection>, StoreError> {
        Pool::builder()
            .max_size(self.pool_size)
            .connection_timeout(self.connect_timeout)
            .test_on_check_out(false)
            .build(manager(target, self.connect_timeout))
            .await
            .map_err(StoreError::unavailable)
    }

    /// How to reach the server at `url`: this builder's TLS, name and
    /// session settings over the URL's.
    fn target(&self, url: &str, schema: Option<Schema>) -> Result<Target, ConnectError> {
        let ParsedUrl {
            mut config,
            ssl_mode,
            ssl_root_cert,
        } = ParsedUrl::parse(url)?;
        if let Some(name) = &self.application_name {
            config.application_name(name);
        } else if config.get_application_name().is_none() {
            config.application_name("kck");
        }
        let (mode, root_cert) = settle_tls(
            self.ssl_mode.or(ssl_mode),
            self.ssl_root_cert.clone().or(ssl_root_cert),
        )?;
        Ok(Target::new(config, mode, root_cert.as_deref())?
            .with_session(schema, self.statement_timeout))
    }
}

/// The pool's connections: each opened by the target, with its TLS.
fn manager(target: &Target, timeout: Duration) -> AsyncDieselConnectionManager<AsyncPgConnection> {
    let mut config = ManagerConfig::default();
    let setup_target = target.clone();
    config.custom_setup = Box::new(move |_| {
        let target = setup_target.clone();
        Box::pin(async move {
            target
                .connect(timeout)
                .await
                .map_err(|error| diesel::ConnectionError::BadConnection(error.to_string()))
        })
    });
    // The URL is unused with a custom set-up; no secret is kept in it.
    AsyncDieselConnectionManager::new_with_config(target.server(), config)
}

/// Runs the embedded migrations, on a blocking thread (diesel's harness is
/// synchronous), one process at a time.
/// What [`PgStoreBuilder::connect`] does with kck's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Migrations {
    /// Creates kck's tables, or upgrades them with the [`MIGRATIONS`] this
    /// version of kck has and the database lacks, one process at a time.
    #[default]
    Apply,
    /// Changes nothing: fails with [`ConnectError::NoSchema`] if the
    /// database has no kck tables, and with
    /// [`ConnectError::SchemaOutdated`] if they lack migrations of this
    /// version of kck.
    Require,
}

async fn migrate(target: &Target, timeout: Duration, mode: Migrations) -> Result<(), ConnectError> {
    let conn = target.without_statement_timeout().connect(timeout).await?;
    let create_schema = target
        .schema()
        .map(|schema| format!("CREATE SCHEMA IF NOT EXISTS {}", schema.as_str()));
    // Made here, in the runtime, so that it blocks on this runtime's handle.
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
    let migration = tokio::task::spawn_blocking(move || -> Result<Checked, StoreError> {
        if mode == Migrations::Require {
            return check_schema(&mut conn);
        }
        conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .map_err(query_error)?;
        let created = match &create_schema {
            Some(sql) => conn.batch_execute(sql).map_err(query_error),
            None => Ok(()),
        };
        let migrated = created.and_then(|()| {
            conn.run_pending_migrations(MIGRATIONS)
                .map(drop)
                .map_err(StoreError::backend)
        });
        let unlocked = conn
            .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .map_err(query_error);
        migrated.and(unlocked).map(|()| Checked::UpToDate)
    });
    let server = || target.server().to_owned();
    let setup = |source: StoreError| ConnectError::Setup {
        server: server(),
        source,
    };
    let checked = match tokio::time::timeout(timeout, migration).await {
        Ok(Ok(result)) => result.map_err(setup)?,
        Ok(Err(join)) => return Err(setup(StoreError::backend(join))),
        Err(_) => {
            return Err(setup(StoreError::unavailable(
                "timed out migrating kck's tables",
            )));
        }
    };
    match checked {
        Checked::UpToDate => Ok(()),
        Checked::Missing => Err(ConnectError::NoSchema { server: server() }),
        Checked::Pending(pending) => Err(ConnectError::SchemaOutdated {
            server: server(),
            pending,
        }),
    }
}

/// What [`Migrations::Require`] found.
enum Checked {
    UpToDate,
    Missing,
    /// This many migrations of this version of kck are not applied.
    Pending(usize),
}

/// Looks at kck's tables without changing anything. diesel's migration
/// table is looked up first: diesel creates it when asked what is applied.
fn check_schema(
    conn: &mut AsyncConnectionWrapper<AsyncPgConnection>,
) -> Result<Checked, StoreError> {
    #[derive(diesel::QueryableByName)]
    struct Present {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        present: bool,
    }
    let query = diesel::sql_query(
        "SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL \
         AND to_regclass('kck_entries') IS NOT NULL AS present",
    );
    // The blocking connection: diesel's own query methods, not diesel-async's.
    let found: Present = diesel::RunQueryDsl::get_result(query, conn).map_err(query_error)?;
    if !found.present {
        return Ok(Checked::Missing);
    }
    let pending = conn
        .pending_migrations(MIGRATIONS)
        .map_err(StoreError::backend)?
        .len();
    Ok(if pending == 0 {
        Checked::UpToDate
    } else {
        Checked::Pending(pending)
    })
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
