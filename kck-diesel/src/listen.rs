//! The LISTEN side: one dedicated connection per store hears every write
//! and lease release of every process, and tells the caches of this one.
//!
//! While the connection is up, PostgreSQL delivers every notification. When
//! it fails (or stops answering the heartbeat), the caches are told that
//! changes may go unreported: they empty their memos and read through to
//! the database until the connection is back.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use futures_util::StreamExt;
use kck_core::Key;
use kck_core::storage::{ChangeWatcher, JobWatcher, StoreError, Version};
use tokio::sync::oneshot;

use crate::connect::Target;
use crate::convert::query_error;
use crate::queue_sql::JOBS_CHANNEL;
use crate::replica::Floors;
use crate::sql::{CHANNEL, SYNC_CHANNEL};

/// The caches to tell, whether changes are being heard, and the sync
/// barriers waiting for their token to come back.
#[derive(Default)]
pub(crate) struct Watchers {
    list: Mutex<Vec<Weak<dyn ChangeWatcher>>>,
    jobs: Mutex<Vec<Weak<dyn JobWatcher>>>,
    tracking: AtomicBool,
    syncs: Mutex<HashMap<String, oneshot::Sender<()>>>,
    /// Makes this store's tokens unlike any other's.
    sync_salt: RandomState,
    next_sync: AtomicU64,
    /// The newest version seen of each key, which a replica's answer must
    /// reach (see `replica.rs`).
    pub(crate) floors: Floors,
}

impl Watchers {
    pub(crate) fn add(&self, watcher: Weak<dyn ChangeWatcher>) {
        if !self.tracking()
            && let Some(watcher) = watcher.upgrade()
        {
            watcher.tracking(false);
        }
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(watcher);
    }

    pub(crate) fn add_jobs(&self, watcher: Weak<dyn JobWatcher>) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(watcher);
    }

    /// Wakes the workers: jobs were queued.
    fn jobs_queued(&self) {
        let live: Vec<Arc<dyn JobWatcher>> = {
            let mut list = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|watcher| watcher.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for watcher in live {
            watcher.enqueued();
        }
    }

    fn each(&self, f: impl Fn(&dyn ChangeWatcher)) {
        let live: Vec<Arc<dyn ChangeWatcher>> = {
            let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|watcher| watcher.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for watcher in live {
            f(&*watcher);
        }
    }

    pub(crate) fn set_tracking(&self, tracked: bool) {
        if self.tracking.swap(tracked, Ordering::SeqCst) != tracked {
            self.each(|watcher| watcher.tracking(tracked));
        }
    }

    /// Whether changes are being heard now.
    pub(crate) fn tracking(&self) -> bool {
        AtomicBool::load(&self.tracking, Ordering::SeqCst)
    }

    /// A new sync token, and what its return will send.
    pub(crate) fn sync_token(&self) -> (String, oneshot::Receiver<()>) {
        let n = self.next_sync.fetch_add(1, Ordering::SeqCst);
        let token = format!("{:016x}-{n}", self.sync_salt.hash_one(n));
        let (sender, receiver) = oneshot::channel();
        self.syncs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), sender);
        (token, receiver)
    }

    /// Forgets a sync token that will not be waited for.
    pub(crate) fn drop_sync(&self, token: &str) {
        self.syncs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
    }

    /// A sync token came back: every earlier change was passed on.
    fn synced(&self, token: &str) {
        let sender = self
            .syncs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }

    /// Passes a notification on: `<version> <key>` or `! <key>`.
    fn dispatch(&self, payload: &str) {
        let Some((head, key)) = payload.split_once(' ') else {
            tracing::warn!(target: "kck", payload, "unexpected notification");
            return;
        };
        let Ok(key) = Key::parse(key) else {
            tracing::warn!(target: "kck", payload, "notification for an invalid key");
            return;
        };
        match head {
            "!" => self.each(|watcher| watcher.released(&key)),
            version => match version.parse() {
                Ok(version) => {
                    self.floors.raise(key.as_str(), Version(version));
                    self.each(|watcher| watcher.changed(&key, Version(version)));
                }
                Err(_) => tracing::warn!(target: "kck", payload, "unexpected notification"),
            },
        }
    }
}

/// Opens a connection that listens on kck's channels: never a pooled
/// connection. Built from a tokio-postgres client and its connection (as
/// every connection of kck is), so that diesel-async delivers
/// notifications.
pub(crate) async fn connect(
    target: &Target,
    timeout: Duration,
) -> Result<AsyncPgConnection, StoreError> {
    // One time-out for connecting and subscribing together.
    let deadline = tokio::time::Instant::now() + timeout;
    let mut conn = target.connect(timeout).await?;
    let listen = async {
        for channel in [CHANNEL, JOBS_CHANNEL, SYNC_CHANNEL] {
            diesel::sql_query(format!("LISTEN \"{}\"", target.channel(channel)))
                .execute(&mut conn)
                .await
                .map_err(query_error)?;
        }
        Ok::<_, StoreError>(())
    };
    tokio::time::timeout_at(deadline, listen)
        .await
        .map_err(|_| StoreError::unavailable("timed out subscribing to kck's channels"))??;
    Ok(conn)
}

/// Listens forever: passes notifications on while the connection lives,
/// reconnects (backing off up to five seconds) when it dies.
pub(crate) async fn run(
    mut conn: AsyncPgConnection,
    watchers: Arc<Watchers>,
    target: Target,
    heartbeat: Duration,
) {
    let channels = Channels {
        jobs: target.channel(JOBS_CHANNEL),
        sync: target.channel(SYNC_CHANNEL),
    };
    loop {
        watchers.set_tracking(true);
        serve(&mut conn, &watchers, &channels, heartbeat).await;
        watchers.set_tracking(false);
        tracing::warn!(target: "kck", "lost the LISTEN connection to PostgreSQL; reconnecting");
        let mut backoff = Duration::from_millis(100);
        conn = loop {
            match connect(&target, heartbeat).await {
                Ok(conn) => break conn,
                Err(error) => {
                    tracing::debug!(target: "kck", %error, "reconnecting the LISTEN connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
    }
}

/// The names of the channels other than the changes' (which is the rest).
struct Channels {
    jobs: String,
    sync: String,
}

/// Passes notifications on until the connection fails or misses a
/// heartbeat: after `heartbeat` without news, a `SELECT 1` must answer
/// within `heartbeat`.
async fn serve(
    conn: &mut AsyncPgConnection,
    watchers: &Watchers,
    channels: &Channels,
    heartbeat: Duration,
) {
    loop {
        let next = {
            let mut notifications = pin!(conn.notifications_stream());
            tokio::time::timeout(heartbeat, notifications.next()).await
        };
        match next {
            Ok(Some(Ok(notification))) if notification.channel == channels.jobs => {
                watchers.jobs_queued();
            }
            Ok(Some(Ok(notification))) if notification.channel == channels.sync => {
                watchers.synced(&notification.payload);
            }
            Ok(Some(Ok(notification))) => watchers.dispatch(&notification.payload),
            Ok(Some(Err(_)) | None) => return,
            Err(_quiet) => {
                let ping = diesel::sql_query("SELECT 1").execute(conn);
                if !matches!(tokio::time::timeout(heartbeat, ping).await, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
