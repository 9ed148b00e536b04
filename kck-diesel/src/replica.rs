//! Read replicas: loads of entries may go to a hot standby, when it holds
//! at least what this process has seen of the key; everything else (every
//! write, claim, fence, lease, listen, and every other read) stays on the
//! primary.
//!
//! **Never back in time.** The store keeps the newest version it has seen
//! of each key ([`Floors`]): written by this process, told by `NOTIFY`,
//! answered by a conflict, or loaded. A replica's answer older than that
//! (or missing where a version was seen) is not used: the primary is read
//! instead. Versions come from one sequence per database, so "older" is a
//! comparison of numbers. While the `LISTEN` connection is down, changes
//! may go unheard, and loads go to the primary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::Pool;
use kck_core::Key;
use kck_core::storage::{StoreError, StoredEntry, Version};

use crate::connect::ConnectError;
use crate::convert::{pool_error, query_error};

/// How many keys' versions are remembered; past that, all are forgotten
/// at once and replaced by one bound, the newest of them (see
/// [`Floors::raise`]).
const MAX_FLOORS: usize = 200_000;

/// How long a replica that failed is left alone before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The newest version this process has seen of each key.
#[derive(Debug, Default)]
pub(crate) struct Floors {
    /// Whether the store has replicas; without, nothing is remembered.
    enabled: AtomicBool,
    seen: Mutex<HashMap<String, i64>>,
    /// The newest version among forgotten keys: a key not remembered may
    /// have been seen at any version up to it.
    forgotten: AtomicI64,
}

impl Floors {
    /// Starts remembering: the store reads from replicas.
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// `key` was seen at `version`.
    pub(crate) fn raise(&self, key: &str, version: Version) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        self.raise_in(&mut seen, key, version);
    }

    /// Whether a replica's answer for `key` (its version, or `None` for no
    /// entry) is at least what this process has seen; if it is, the
    /// answer is seen from now on. One lock for both.
    pub(crate) fn admit(&self, key: &str, found: Option<Version>) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let floor = seen
            .get(key)
            .copied()
            .unwrap_or_else(|| self.forgotten.load(Ordering::SeqCst));
        match found {
            Some(version) if version.0 >= floor => {
                self.raise_in(&mut seen, key, version);
                true
            }
            Some(_) => false,
            // Nothing there: right only if nothing was ever seen.
            None => floor == 0,
        }
    }

    fn raise_in(&self, seen: &mut HashMap<String, i64>, key: &str, version: Version) {
        if let Some(floor) = seen.get_mut(key) {
            *floor = (*floor).max(version.0);
            return;
        }
        if seen.len() >= MAX_FLOORS {
            let newest = seen.values().copied().max().unwrap_or(0);
            self.forgotten.fetch_max(newest, Ordering::SeqCst);
            seen.clear();
        }
        seen.insert(key.to_owned(), version.0);
    }
}

/// What a server says of itself, to tell a standby of the primary's
/// database from anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    database: String,
    /// `pg_control_system()`'s, which a standby shares with its primary;
    /// `None` where the role may not read it.
    system: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct Facts {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    in_recovery: bool,
    #[diesel(sql_type = diesel::sql_types::Text)]
    database: String,
}

#[derive(diesel::QueryableByName)]
struct SystemId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

impl Identity {
    /// The server's identity, and whether it is in recovery (a standby).
    pub(crate) async fn of(conn: &mut AsyncPgConnection) -> Result<(bool, Identity), StoreError> {
        // Here only: its `load` would shadow the atomics'.
        use diesel_async::RunQueryDsl as _;
        let facts: Facts = diesel::sql_query(
            "SELECT pg_is_in_recovery() AS in_recovery, current_database()::text AS database",
        )
        .get_result(conn)
        .await
        .map_err(query_error)?;
        let system =
            diesel::sql_query("SELECT system_identifier::text AS id FROM pg_control_system()")
                .get_result::<SystemId>(conn)
                .await
                .ok()
                .map(|row| row.id);
        Ok((
            facts.in_recovery,
            Identity {
                database: facts.database,
                system,
            },
        ))
    }

    /// Why a server of this identity cannot serve as a replica of
    /// `primary`; `None` if it can.
    pub(crate) fn refused(
        &self,
        in_recovery: bool,
        server: &str,
        primary: &Identity,
        primary_server: &str,
    ) -> Option<ConnectError> {
        let server = server.to_owned();
        if !in_recovery {
            return Some(ConnectError::NotAReplica { server });
        }
        if let (Some(own), Some(primary)) = (&self.system, &primary.system)
            && own != primary
        {
            return Some(ConnectError::ReplicaOfAnotherPrimary {
                server,
                primary: primary_server.to_owned(),
            });
        }
        (self.database != primary.database).then(|| ConnectError::ReplicaOfAnotherDatabase {
            server,
            database: self.database.clone(),
            expected: primary.database.clone(),
        })
    }
}

/// One replica: its pool, and whether it answered last time.
pub(crate) struct Replica {
    pub(crate) server: Arc<str>,
    pub(crate) pool: Pool<AsyncPgConnection>,
    /// Checked to be a standby of the primary's database (at start, or,
    /// if it was down then, when it first answered).
    verified: AtomicBool,
    /// Found to be no standby of the primary's database: never used.
    disabled: AtomicBool,
    /// When it last failed, in milliseconds since `epoch`; 0: it did not.
    down_since: AtomicU64,
    healthy: AtomicBool,
    reads: AtomicU64,
    behind: AtomicU64,
    failures: AtomicU64,
}

/// What a replica has done, for operators: [`PgStore::replicas`](crate::PgStore::replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// `host:port/database`.
    pub server: String,
    /// Whether it answered the last time it was asked.
    pub healthy: bool,
    /// Loads it answered that were used.
    pub reads: u64,
    /// Loads it answered with a version older than this process had seen
    /// (then read from the primary).
    pub behind: u64,
    /// Loads it failed (then read from the primary).
    pub failures: u64,
}

impl Replica {
    pub(crate) fn new(server: Arc<str>, pool: Pool<AsyncPgConnection>, verified: bool) -> Replica {
        Replica {
            server,
            pool,
            verified: AtomicBool::new(verified),
            disabled: AtomicBool::new(false),
            down_since: AtomicU64::new(0),
            healthy: AtomicBool::new(verified),
            reads: AtomicU64::new(0),
            behind: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

/// The replicas of a store, taken in turn.
pub(crate) struct Replicas {
    list: Vec<Replica>,
    next: AtomicUsize,
    epoch: Instant,
    /// The primary's identity, which each replica's must match.
    primary: Identity,
    primary_server: Arc<str>,
}

impl Replicas {
    pub(crate) fn new(list: Vec<Replica>, primary: Identity, primary_server: Arc<str>) -> Replicas {
        Replicas {
            list,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            primary,
            primary_server,
        }
    }

    /// Makes sure `replica` is a standby of the primary's database, once:
    /// `Ok(false)` if it is not (it is disabled, with an error logged),
    /// `Err` if it cannot be asked now.
    pub(crate) async fn verify(&self, replica: &Replica) -> Result<bool, StoreError> {
        if replica.verified.load(Ordering::SeqCst) {
            return Ok(true);
        }
        let mut conn = replica.pool.get().await.map_err(pool_error)?;
        let (in_recovery, identity) = Identity::of(&mut conn).await?;
        match identity.refused(
            in_recovery,
            &replica.server,
            &self.primary,
            &self.primary_server,
        ) {
            Some(refused) => {
                replica.disabled.store(true, Ordering::SeqCst);
                tracing::error!(target: "kck", error = %refused, "a replica is refused; the primary answers instead");
                Ok(false)
            }
            None => {
                replica.verified.store(true, Ordering::SeqCst);
                Ok(true)
            }
        }
    }

    /// The next replica to ask, skipping those that failed within
    /// [`RETRY_AFTER`].
    pub(crate) fn pick(&self) -> Option<&Replica> {
        let now = self.millis();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..self.list.len())
            .map(|i| &self.list[(start + i) % self.list.len()])
            .find(|replica| {
                let down = replica.down_since.load(Ordering::Relaxed);
                !replica.disabled.load(Ordering::Relaxed)
                    && (down == 0 || now.saturating_sub(down) >= millis(RETRY_AFTER))
            })
    }

    /// What `replica` answered: the entry, used if `floors` accept it.
    pub(crate) fn answered(
        &self,
        replica: &Replica,
        key: &Key,
        found: Option<StoredEntry>,
        floors: &Floors,
    ) -> Option<Option<StoredEntry>> {
        // Reads only, on the hot path, unless it was down.
        if !replica.healthy.load(Ordering::Relaxed) && !replica.healthy.swap(true, Ordering::SeqCst)
        {
            tracing::info!(target: "kck", replica = %replica.server, "the replica answers again");
        }
        if replica.down_since.load(Ordering::Relaxed) != 0 {
            replica.down_since.store(0, Ordering::Relaxed);
        }
        let version = found.as_ref().map(|entry| entry.version);
        if floors.admit(key.as_str(), version) {
            replica.reads.fetch_add(1, Ordering::Relaxed);
            Some(found)
        } else {
            replica.behind.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// `replica` failed: the primary answers, and the replica is left
    /// alone for a while.
    pub(crate) fn failed(&self, replica: &Replica, error: &dyn std::fmt::Display) {
        replica.failures.fetch_add(1, Ordering::Relaxed);
        replica
            .down_since
            .store(self.millis().max(1), Ordering::Relaxed);
        if replica.healthy.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                target: "kck",
                replica = %replica.server,
                %error,
                "a replica failed; reading the primary instead, and trying it again in {RETRY_AFTER:?}"
            );
        }
    }

    pub(crate) fn stats(&self) -> Vec<ReplicaStats> {
        self.list
            .iter()
            .map(|replica| ReplicaStats {
                server: replica.server.to_string(),
                healthy: replica.healthy.load(Ordering::SeqCst),
                reads: replica.reads.load(Ordering::Relaxed),
                behind: replica.behind.load(Ordering::Relaxed),
                failures: replica.failures.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn millis(&self) -> u64 {
        millis(self.epoch.elapsed()).max(1)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_answer_older_than_what_was_seen_is_refused() {
        let floors = Floors::default();
        floors.enable();
        // Never seen: anything goes, even nothing.
        assert!(floors.admit("a/1", None));
        assert!(floors.admit("a/1", Some(Version(3))));
        floors.raise("a/1", Version(5));
        assert!(!floors.admit("a/1", Some(Version(4))));
        assert!(
            !floors.admit("a/1", None),
            "seen, so it exists or was removed later"
        );
        assert!(floors.admit("a/1", Some(Version(5))));
        assert!(floors.admit("a/1", Some(Version(9))));
        floors.raise("a/1", Version(2));
        assert!(
            !floors.admit("a/1", Some(Version(4))),
            "a floor never goes down"
        );
    }

    #[test]
    fn forgotten_keys_keep_a_bound() {
        let floors = Floors::default();
        floors.enable();
        for n in 0..MAX_FLOORS {
            floors.raise(
                &format!("k/{n}"),
                Version(i64::try_from(n).unwrap_or(0) + 1),
            );
        }
        floors.raise("newcomer/1", Version(1));
        let newest = Version(i64::try_from(MAX_FLOORS).unwrap_or(0));
        assert!(
            !floors.admit("k/7", Some(Version(8))),
            "forgotten: the bound applies"
        );
        assert!(floors.admit("k/7", Some(newest)));
        assert!(!floors.admit("never/1", None));
        assert!(floors.admit("newcomer/1", Some(Version(1))), "remembered");
    }
}
