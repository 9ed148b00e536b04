//! # kck-diesel: the PostgreSQL store of kck
//!
//! [`PgStore`] keeps kck's products in PostgreSQL, through diesel-async and a
//! bb8 pool, so that many processes on many machines share one cache: what
//! one computes, the others read; what one changes, the others see.
//!
//! ```no_run
//! use kck_core::Cache;
//! use kck_diesel::PgStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::connect("postgres://kck@db.internal/reports").await?;
//! let cache = Cache::builder().store(store).build()?;
//! # Ok(()) }
//! ```
//!
//! ## Schema
//!
//! [`PgStore::connect`] creates or upgrades kck's tables with embedded diesel
//! migrations ([`MIGRATIONS`]), one process at a time (or, given
//! [`Migrations::Require`], only checks that they are there and up to
//! date, as a tool that only looks should):
//!
//! - `kck_entries`: one row per product: `key` (primary key), `primer`,
//!   `value` (`jsonb`, so products can be inspected in SQL), `version`
//!   (`bigint`, from the sequence `kck_versions`, so versions grow across
//!   keys), `computed_at`, `changed_at`, `stale_at`, `refresh_at`,
//!   `expires_at` (`timestamptz`), `content_hash` (`bytea`), `code_version`,
//!   `compute_micros`, and the last error (`error_message`, `error_at`,
//!   `error_attempts`).
//! - `kck_edges`: `(dependent, dependency, position)`, "dependent read
//!   dependency", indexed both ways.
//! - `kck_leases`: `(key, holder, expires_at)`: who computes which key.
//!
//! Every write is a single statement (`INSERT .. ON CONFLICT`, or an
//! `UPDATE` guarded by the expected version for compare-and-set) that also
//! replaces the entry's edges and, if the value changed, announces it with
//! `pg_notify`, so an entry, its edges and the announcement commit
//! together. Statements are
//! prepared once per connection and then cost one round trip each.
//!
//! Values are stored as `jsonb`: a string holding the character U+0000
//! cannot be stored (PostgreSQL refuses it) and is reported as a store
//! error.
//!
//! ## One cache, many processes
//!
//! Each process keeps decoded values in its in-process memo, so a hot read
//! costs no round trip. Every change of a value and every invalidation, by
//! any process, is announced on the channel `kck_changes` and heard by every
//! store through a dedicated `LISTEN` connection (never a pooled one), which
//! drops the outdated memo copies. A process hears another's change a
//! moment after it commits; `Coordination::sync` waits until it has heard
//! every change committed so far (a token sent on `kck_sync` comes back on
//! the same connection after them), which tests of several processes use
//! to read another's write deterministically.
//!
//! A write that keeps the value (a refresh that computed the same content,
//! as most periodic refreshes do) is not announced: every memo's copy of the
//! value is still right, and announcing it would cost each process a
//! notification per refresh (PostgreSQL also serializes the commits that
//! notify). What such a write moves forward, the version and the
//! deadlines, each cache learns from the store when its copy's own
//! deadlines pass: a copy that looks stale is checked against the stored
//! entry before a refresh is queued, and one that looks expired is loaded
//! again instead of recomputed.
//!
//! **The bound on staleness.** While the `LISTEN` connection is up, a memo
//! drops a value another process changed as soon as the notification
//! arrives: at the commit, plus network latency. If the connection breaks,
//! every memo sets its values aside and is bypassed (reads go to
//! PostgreSQL) until it is back; a connection that dies silently is noticed
//! by a heartbeat within twice [`PgStoreBuilder::heartbeat`] (10 seconds by
//! default). No memo serves a changed value for longer than that while
//! PostgreSQL answers.
//!
//! **A cold key is computed once per cluster.** A process that misses a key
//! takes a lease on it (a row of `kck_leases`) before computing; others that
//! miss it meanwhile wait for the announcement of its value (checking again
//! at least every second) instead of computing it again. The lease lasts
//! the cache's [`lease_ttl`](kck_core::CacheBuilder::lease_ttl) and is
//! renewed while the computation runs, so a process that dies holding it
//! blocks the key for at most that long.
//!
//! ## Failures
//!
//! A database that cannot be reached makes [`PgStore::connect`] fail with
//! [`StoreError::Unavailable`](kck_core::storage::StoreError::Unavailable), and
//! cache operations fail with that transient error
//! ([`kck_core::Error::is_transient`]) while it is down. The pool and the
//! listener reconnect by themselves: no restart is needed.
//!
//! **Reads ride out a short outage.** A read that needs PostgreSQL while it
//! cannot be reached is served the copy its process holds in memory instead
//! of the error (event `outage-served`), never past the product's hard
//! expiry: a copy the memo still trusts (the outage is not noticed yet, so
//! no change went unheard), or one set aside when the `LISTEN` connection
//! broke, for at most
//! [`serve_stale_on_store_error`](kck_core::CacheBuilder::serve_stale_on_store_error)
//! after that (60 seconds by default). Products this process never read,
//! and on-demand products, get the error. When the `LISTEN` connection is
//! back, the set-aside copies are dropped and every product is loaded again
//! before it is served: once PostgreSQL answers again, no process serves a
//! value older than one another process wrote during the outage.
//!
//! A write PostgreSQL refuses for good (not an outage) is
//! [`kck_core::Error::SaveFailed`] to the reader, logged at `warn`: the
//! value is not served, so a product that can never be stored is not
//! silently recomputed by every read.

mod catalog;
mod connect;
mod convert;
mod coordination;
mod entries;
mod listen;
#[macro_use]
mod sql;
mod queue;
mod queue_sql;
mod replica;
mod statement;
mod store;
mod timetable;

pub use connect::{ConnectError, SslMode, TlsFailure};
pub use replica::ReplicaStats;
pub use store::{MIGRATIONS, Migrations, PgStore, PgStoreBuilder};
