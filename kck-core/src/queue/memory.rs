//! The in-memory queue: one process, nothing persisted.

use std::collections::{BTreeMap, HashMap};
use std::future::ready;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Claim, FailedJob, Job, JobId, JobRequest, JobWatcher, Queue, RefreshReason};
use crate::clock::Timestamp;
use crate::key::Key;
use crate::store::StoreError;

/// A [`Queue`] in process memory: the default queue, for a cache whose
/// workers run in the same process.
#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    watchers: Mutex<Vec<Weak<dyn JobWatcher>>>,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<i64, Row>,
    /// The pending job of each key.
    pending: HashMap<Key, i64>,
    last_id: i64,
    last_token: i64,
}

struct Row {
    key: Key,
    status: Status,
    due_at: Timestamp,
    priority: i16,
    reasons: Vec<RefreshReason>,
    attempts: u32,
    error: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Running { token: i64, until: Timestamp },
    Failed,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        MemoryQueue::default()
    }

    /// The number of jobs, pending, running or failed.
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Whether there is no job at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        let watchers: Vec<Arc<dyn JobWatcher>> = {
            let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
            watchers.retain(|watcher| watcher.strong_count() > 0);
            watchers.iter().filter_map(Weak::upgrade).collect()
        };
        for watcher in watchers {
            watcher.enqueued();
        }
    }
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("jobs", &self.len())
            .finish_non_exhaustive()
    }
}

fn merge_reasons(into: &mut Vec<RefreshReason>, reasons: impl IntoIterator<Item = RefreshReason>) {
    for reason in reasons {
        if !into.contains(&reason) {
            into.push(reason);
        }
    }
}

impl State {
    /// Adds a pending job, or merges it into the key's pending job.
    fn add_pending(
        &mut self,
        key: Key,
        due_at: Timestamp,
        priority: i16,
        reasons: Vec<RefreshReason>,
        attempts: u32,
    ) {
        if let Some(row) = self.pending.get(&key).and_then(|id| self.jobs.get_mut(id)) {
            row.due_at = row.due_at.min(due_at);
            row.priority = row.priority.max(priority);
            row.attempts = row.attempts.max(attempts);
            merge_reasons(&mut row.reasons, reasons);
            return;
        }
        self.last_id += 1;
        self.pending.insert(key.clone(), self.last_id);
        self.jobs.insert(
            self.last_id,
            Row {
                key,
                status: Status::Pending,
                due_at,
                priority,
                reasons,
                attempts,
                error: None,
            },
        );
    }

    /// The running job held by `claim`.
    fn held(&mut self, claim: &Claim) -> Option<&mut Row> {
        self.jobs.get_mut(&claim.job.0).filter(
            |row| matches!(row.status, Status::Running { token, .. } if token == claim.token),
        )
    }

    /// Takes the job held by `claim` out, to complete it or put it back.
    fn take_held(&mut self, claim: &Claim) -> Option<Row> {
        self.held(claim)?;
        self.jobs.remove(&claim.job.0)
    }
}

impl Queue for MemoryQueue {
    fn enqueue<'a>(&'a self, jobs: &'a [JobRequest]) -> BoxFuture<'a, Result<(), StoreError>> {
        {
            let mut state = self.lock();
            for job in jobs {
                state.add_pending(
                    job.key.clone(),
                    job.due_at,
                    job.priority,
                    vec![job.reason.clone()],
                    0,
                );
            }
        }
        if !jobs.is_empty() {
            self.wake();
        }
        Box::pin(ready(Ok(())))
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<Job>, StoreError>> {
        let _ = worker;
        let mut state = self.lock();
        let mut due: Vec<(i16, Timestamp, i64)> = state
            .jobs
            .iter()
            .filter(|(_, row)| match row.status {
                Status::Pending => row.due_at <= now,
                Status::Running { until, .. } => until <= now,
                Status::Failed => false,
            })
            .map(|(id, row)| (-row.priority, row.due_at, *id))
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, _, id) in due {
            state.last_token += 1;
            let token = state.last_token;
            let Some(row) = state.jobs.get_mut(&id) else {
                continue;
            };
            let was_pending = row.status == Status::Pending;
            row.status = Status::Running {
                token,
                until: now + lease,
            };
            let job = Job {
                key: row.key.clone(),
                due_at: row.due_at,
                priority: row.priority,
                reasons: row.reasons.clone(),
                attempts: row.attempts,
                claim: Claim {
                    job: JobId(id),
                    token,
                },
            };
            if was_pending {
                state.pending.remove(&job.key);
            }
            claimed.push(job);
        }
        Box::pin(ready(Ok(claimed)))
    }

    fn extend<'a>(
        &'a self,
        claims: &'a [Claim],
        lease: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        let mut state = self.lock();
        let held = claims
            .iter()
            .map(|claim| match state.held(claim) {
                Some(row) => {
                    row.status = Status::Running {
                        token: claim.token,
                        until: now + lease,
                    };
                    true
                }
                None => false,
            })
            .collect();
        Box::pin(ready(Ok(held)))
    }

    fn complete<'a>(&'a self, claims: &'a [Claim]) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        let mut state = self.lock();
        let done = claims
            .iter()
            .map(|claim| state.take_held(claim).is_some())
            .collect();
        Box::pin(ready(Ok(done)))
    }

    fn fail<'a>(
        &'a self,
        claim: &'a Claim,
        error: &'a str,
        retry_at: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut state = self.lock();
        let held = match retry_at {
            Some(at) => match state.take_held(claim) {
                Some(row) => {
                    let attempts = row.attempts.saturating_add(1);
                    let key = row.key.clone();
                    state.add_pending(row.key, at, row.priority, row.reasons, attempts);
                    if let Some(id) = state.pending.get(&key).copied()
                        && let Some(row) = state.jobs.get_mut(&id)
                    {
                        row.error = Some(error.to_owned());
                    }
                    true
                }
                None => false,
            },
            None => match state.held(claim) {
                Some(row) => {
                    row.status = Status::Failed;
                    row.attempts = row.attempts.saturating_add(1);
                    row.error = Some(error.to_owned());
                    true
                }
                None => false,
            },
        };
        Box::pin(ready(Ok(held)))
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut state = self.lock();
        let released = match state.take_held(claim) {
            Some(row) => {
                state.add_pending(row.key, row.due_at, row.priority, row.reasons, row.attempts);
                true
            }
            None => false,
        };
        drop(state);
        if released {
            self.wake();
        }
        Box::pin(ready(Ok(released)))
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<Timestamp>, StoreError>> {
        let next = self
            .lock()
            .jobs
            .values()
            .filter_map(|row| match row.status {
                Status::Pending => Some(row.due_at),
                Status::Running { until, .. } => Some(until),
                Status::Failed => None,
            })
            .min();
        Box::pin(ready(Ok(next)))
    }

    fn failed(&self) -> BoxFuture<'_, Result<Vec<FailedJob>, StoreError>> {
        let failed = self
            .lock()
            .jobs
            .values()
            .filter(|row| row.status == Status::Failed)
            .map(|row| FailedJob {
                key: row.key.clone(),
                attempts: row.attempts,
                error: row.error.clone().unwrap_or_default(),
                reasons: row.reasons.clone(),
            })
            .collect();
        Box::pin(ready(Ok(failed)))
    }

    fn watch_jobs(&self, watcher: Weak<dyn JobWatcher>) {
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(watcher);
    }
}
