//! [`PgStore`]: the [`Store`] on PostgreSQL.

use std::sync::{Arc, Weak};
use std::time::Duration;

use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::future::BoxFuture;
use kck_core::queue::JobDelta;
use kck_core::store::{
    ChangeWatcher, ContentHash, DueRefreshes, Edge, Entry, EntryPatch, Expect, Lease, Saved, Store,
    StoreError, StoredEntry, TickClaim, Version,
};
use kck_core::{Key, Timestamp};
use tokio::task::AbortHandle;

use crate::convert::{deltas_to_json, micros, parse_key, pool_error, query_error, to_pg};
use crate::listen::{self, Watchers};
use crate::sql::{
    AcquireLease, ClaimTick, ContentHashes, Dependencies, Dependents, DueRow, EdgeRow, EntryRow,
    KeyRow, KeysOf, LeaseRow, LoadEntry, PatchEntry, ReleaseLease, ReleaseRow, RemoveEntry,
    RemoveRow, RenewLease, SaveAbsent, SaveAny, SaveOver, TakeDueRefreshes, TickRow, Touch,
    WriteRow,
};
use crate::statement::{Bind, Sql, Statement};

/// kck's schema, created or upgraded by [`PgStore::connect`].
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Serializes concurrent migrations of processes starting together.
const MIGRATION_LOCK: i64 = 0x6b63_6b5f_6d69_6772;

/// A [`Store`] in PostgreSQL, shared by every process that connects to the
/// same database. See the [crate documentation](crate).
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

    async fn edges<S: Sql>(&self, key: &Key) -> Result<Vec<Edge>, StoreError> {
        let rows: Vec<EdgeRow> = self.run::<S, _>(vec![text(key)]).await?;
        rows.into_iter().map(EdgeRow::into_edge).collect()
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
/// # async fn run() -> Result<(), kck_core::store::StoreError> {
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

fn text(key: &Key) -> Bind {
    Bind::Text(key.as_str().to_owned())
}

/// The 14 binds of an entry's columns after its key (the last is its read
/// time).
fn entry_binds(entry: &Entry) -> Result<Vec<Bind>, StoreError> {
    let meta = &entry.meta;
    let value = String::from_utf8(entry.value.clone()).map_err(StoreError::backend)?;
    let error = meta.last_error.as_ref();
    Ok(vec![
        Bind::Text(entry.key.primer().to_owned()),
        Bind::Text(value),
        Bind::Time(to_pg(meta.computed_at)),
        Bind::Time(to_pg(meta.changed_at)),
        Bind::OptTime(meta.stale_at.map(to_pg)),
        Bind::OptTime(meta.refresh_at.map(to_pg)),
        Bind::OptTime(meta.expires_at.map(to_pg)),
        Bind::Bytes(meta.content_hash.0.to_vec()),
        Bind::Text(meta.code_version.clone()),
        Bind::BigInt(micros(meta.compute_duration)),
        Bind::OptText(error.map(|e| e.message.clone())),
        Bind::OptTime(error.map(|e| to_pg(e.at))),
        Bind::Int(error.map_or(0, |e| i32::try_from(e.attempts).unwrap_or(i32::MAX))),
        Bind::OptTime(meta.read_at.map(to_pg)),
    ])
}

fn saved(row: &WriteRow) -> Saved {
    match row.written {
        Some(version) => Saved::Written(Version(version)),
        None => Saved::Conflict {
            current: row.current.map(Version),
        },
    }
}

impl Store for PgStore {
    fn load<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<StoredEntry>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<EntryRow> = self.run::<LoadEntry, _>(vec![text(key)]).await?;
            rows.into_iter()
                .next()
                .map(EntryRow::into_entry)
                .transpose()
        })
    }

    fn content_hashes<'a>(
        &'a self,
        keys: &'a [Key],
    ) -> BoxFuture<'a, Result<Vec<Option<ContentHash>>, StoreError>> {
        Box::pin(async move {
            let texts = keys.iter().map(|key| key.as_str().to_owned()).collect();
            let rows: Vec<EdgeRow> = self
                .run::<ContentHashes, _>(vec![Bind::Texts(texts)])
                .await?;
            let found: Vec<Edge> = rows
                .into_iter()
                .map(EdgeRow::into_edge)
                .collect::<Result<_, _>>()?;
            Ok(keys
                .iter()
                .map(|key| {
                    found
                        .iter()
                        .find(|edge| &edge.key == key)
                        .and_then(|edge| edge.seen)
                })
                .collect())
        })
    }

    fn save(&self, entry: Entry, expect: Expect) -> BoxFuture<'_, Result<Saved, StoreError>> {
        self.save_with_deltas(entry, expect, Vec::new())
    }

    fn save_with_deltas(
        &self,
        entry: Entry,
        expect: Expect,
        deltas: Vec<JobDelta>,
    ) -> BoxFuture<'_, Result<Saved, StoreError>> {
        Box::pin(async move {
            let deltas = deltas_to_json(&entry.key, &deltas)?;
            let values = entry_binds(&entry)?;
            let key = text(&entry.key);
            let dependencies: Vec<String> = entry
                .dependencies
                .iter()
                .map(|edge| edge.key.as_str().to_owned())
                .collect();
            let seen = entry
                .dependencies
                .iter()
                .map(|edge| edge.seen.map(|hash| hash.0.to_vec()))
                .collect();
            let hash = entry.meta.content_hash.0.to_vec();
            let tail = [
                Bind::Texts(dependencies.clone()),
                Bind::Texts(dependencies),
                Bind::OptBytesArray(seen),
                Bind::Bytes(hash.clone()),
                Bind::Bytes(hash.clone()),
                Bind::Time(to_pg(entry.meta.computed_at)),
                Bind::Text(deltas),
                key.clone(),
                Bind::Bytes(hash),
            ];
            let row: WriteRow = match expect {
                Expect::Any | Expect::Absent => {
                    let binds = std::iter::once(key).chain(values).chain(tail).collect();
                    if expect == Expect::Any {
                        self.run_one::<SaveAny, _>(binds).await?
                    } else {
                        self.run_one::<SaveAbsent, _>(binds).await?
                    }
                }
                Expect::Version(version) => {
                    let binds = values
                        .into_iter()
                        .chain([key, Bind::BigInt(version.0)])
                        .chain(tail)
                        .collect();
                    self.run_one::<SaveOver, _>(binds).await?
                }
            };
            Ok(saved(&row))
        })
    }

    fn patch<'a>(
        &'a self,
        key: &'a Key,
        patch: EntryPatch,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(async move {
            let expected = match expect {
                Expect::Any => None,
                Expect::Version(version) => Some(version.0),
                Expect::Absent => {
                    // A patch needs an entry: the condition never holds.
                    let current = Store::load(self, key).await?.map(|stored| stored.version);
                    return Ok(Saved::Conflict { current });
                }
            };
            let set_error = patch.last_error.is_some();
            let error = patch.last_error.clone().flatten();
            let binds = vec![
                Bind::OptTime(patch.stale_at.map(to_pg)),
                Bind::OptTime(patch.expires_at.map(to_pg)),
                Bind::Bool(set_error),
                Bind::OptText(error.as_ref().map(|e| e.message.clone())),
                Bind::Bool(set_error),
                Bind::OptTime(error.as_ref().map(|e| to_pg(e.at))),
                Bind::Bool(set_error),
                Bind::Int(error.map_or(0, |e| i32::try_from(e.attempts).unwrap_or(i32::MAX))),
                text(key),
                Bind::OptBigInt(expected),
                Bind::OptBigInt(expected),
                text(key),
            ];
            let row: WriteRow = self.run_one::<PatchEntry, _>(binds).await?;
            Ok(saved(&row))
        })
    }

    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Version>, StoreError>> {
        Box::pin(async move {
            let row: RemoveRow = self
                .run_one::<RemoveEntry, _>(vec![text(key), text(key)])
                .await?;
            Ok(row.version.map(Version))
        })
    }

    fn dependents<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
        Box::pin(self.edges::<Dependents>(key))
    }

    fn dependencies<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
        Box::pin(self.edges::<Dependencies>(key))
    }

    fn take_due_refreshes<'a>(
        &'a self,
        now: Timestamp,
        until: Timestamp,
        read_since: Option<Timestamp>,
        limit: usize,
    ) -> BoxFuture<'a, Result<DueRefreshes, StoreError>> {
        Box::pin(async move {
            let since = read_since.map(to_pg);
            let binds = vec![
                Bind::OptTime(since),
                Bind::OptTime(since),
                Bind::Time(to_pg(now)),
                Bind::BigInt(i64::try_from(limit).unwrap_or(i64::MAX)),
                Bind::Time(to_pg(until)),
            ];
            let rows: Vec<DueRow> = self.run::<TakeDueRefreshes, _>(binds).await?;
            let mut taken = DueRefreshes::default();
            for row in rows {
                let key = parse_key(&row.key)?;
                if row.live {
                    taken.refresh.push(key);
                } else {
                    taken.retired.push(key);
                }
            }
            Ok(taken)
        })
    }

    fn claim_tick<'a>(
        &'a self,
        name: &'a str,
        now: Timestamp,
        next: Timestamp,
    ) -> BoxFuture<'a, Result<TickClaim, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                Bind::Text(name.to_owned()),
                Bind::Text(name.to_owned()),
                Bind::Time(to_pg(next)),
                Bind::Time(to_pg(now)),
            ];
            let row: TickRow = self.run_one::<ClaimTick, _>(binds).await?;
            Ok(match (row.existed > 0, row.moved > 0) {
                (false, true) => TickClaim::Started,
                (true, true) => TickClaim::Fired,
                (_, false) => TickClaim::NotDue,
            })
        })
    }

    fn keys_of<'a>(&'a self, primer: &'a str) -> BoxFuture<'a, Result<Vec<Key>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<KeyRow> = self
                .run::<KeysOf, _>(vec![Bind::Text(primer.to_owned())])
                .await?;
            rows.into_iter().map(|row| parse_key(&row.key)).collect()
        })
    }

    fn touch<'a>(
        &'a self,
        keys: &'a [Key],
        at: Timestamp,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let keys = keys.iter().map(|key| key.as_str().to_owned()).collect();
            let binds = vec![
                Bind::Texts(keys),
                Bind::Time(to_pg(at)),
                Bind::Time(to_pg(at)),
            ];
            self.execute::<Touch>(binds).await?;
            Ok(())
        })
    }

    fn watch(&self, watcher: Weak<dyn ChangeWatcher>) {
        self.shared.watchers.add(watcher);
    }

    fn queue(&self) -> Option<Arc<dyn kck_core::Queue>> {
        Some(crate::queue::as_queue(self))
    }

    fn queues_dependents(&self) -> bool {
        true
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                text(key),
                Bind::Text(holder.to_owned()),
                Bind::BigInt(micros(ttl)),
                text(key),
            ];
            let row: LeaseRow = self.run_one::<AcquireLease, _>(binds).await?;
            Ok(if row.acquired > 0 {
                Lease::Acquired
            } else {
                let remaining = row.remaining.unwrap_or(0).unsigned_abs();
                Lease::Held {
                    remaining: Duration::from_micros(remaining),
                }
            })
        })
    }

    fn renew_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                Bind::BigInt(micros(ttl)),
                text(key),
                Bind::Text(holder.to_owned()),
            ];
            Ok(self.execute::<RenewLease>(binds).await? == 1)
        })
    }

    fn release_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let binds = vec![text(key), Bind::Text(holder.to_owned())];
            let _: Vec<ReleaseRow> = self.run::<ReleaseLease, _>(binds).await?;
            Ok(())
        })
    }
}
