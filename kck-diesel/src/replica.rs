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
use kck_core::storage::{StoredEntry, Version};

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

    /// Whether a replica's answer for `key` (its version, or `None` for no
    /// entry) is at least what this process has seen.
    pub(crate) fn accepts(&self, key: &str, found: Option<Version>) -> bool {
        let floor = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or_else(|| self.forgotten.load(Ordering::SeqCst));
        match found {
            Some(version) => version.0 >= floor,
            // Nothing there: right only if nothing was ever seen.
            None => floor == 0,
        }
    }
}

/// One replica: its pool, and whether it answered last time.
pub(crate) struct Replica {
    pub(crate) server: Arc<str>,
    pub(crate) pool: Pool<AsyncPgConnection>,
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

/// The replicas of a store, taken in turn.
pub(crate) struct Replicas {
    list: Vec<Replica>,
    next: AtomicUsize,
    epoch: Instant,
}

impl Replicas {
    pub(crate) fn new(list: Vec<(Arc<str>, Pool<AsyncPgConnection>)>) -> Replicas {
        Replicas {
            list: list
                .into_iter()
                .map(|(server, pool)| Replica {
                    server,
                    pool,
                    down_since: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                    reads: AtomicU64::new(0),
                    behind: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
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
                down == 0 || now.saturating_sub(down) >= millis(RETRY_AFTER)
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
        if !replica.healthy.swap(true, Ordering::SeqCst) {
            tracing::info!(target: "kck", replica = %replica.server, "the replica answers again");
        }
        replica.down_since.store(0, Ordering::Relaxed);
        let version = found.as_ref().map(|entry| entry.version);
        if floors.accepts(key.as_str(), version) {
            replica.reads.fetch_add(1, Ordering::Relaxed);
            if let Some(version) = version {
                floors.raise(key.as_str(), version);
            }
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
        assert!(floors.accepts("a/1", None));
        assert!(floors.accepts("a/1", Some(Version(3))));
        floors.raise("a/1", Version(5));
        assert!(!floors.accepts("a/1", Some(Version(4))));
        assert!(
            !floors.accepts("a/1", None),
            "seen, so it exists or was removed later"
        );
        assert!(floors.accepts("a/1", Some(Version(5))));
        assert!(floors.accepts("a/1", Some(Version(9))));
        floors.raise("a/1", Version(2));
        assert!(
            !floors.accepts("a/1", Some(Version(4))),
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
            !floors.accepts("k/7", Some(Version(8))),
            "forgotten: the bound applies"
        );
        assert!(floors.accepts("k/7", Some(newest)));
        assert!(!floors.accepts("never/1", None));
        assert!(floors.accepts("newcomer/1", Some(Version(1))), "remembered");
    }
}
