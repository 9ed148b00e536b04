//! The in-memory queue: one process, nothing persisted.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::ready;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::clock::Timestamp;
use crate::key::Key;
use crate::storage::{
    Claim, FailedJob, Job, JobCounts, JobDelta, JobId, JobRequest, JobWatcher, KeyJobs, PendingJob,
    Queue, RefreshReason, RunningJob, StoreError,
};

/// A [`Queue`] in process memory: the default queue, for a cache whose
/// workers run in the same process.
#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    watchers: Mutex<Vec<Weak<dyn JobWatcher>>>,
}

/// The jobs, and indexes over them so that claims and the next due time
/// cost as much as the jobs they return, not as the jobs there are.
#[derive(Default)]
struct State {
    jobs: BTreeMap<i64, Row>,
    /// The pending job of each key.
    pending: HashMap<Key, i64>,
    /// Pending jobs in claim order: highest priority, then earliest due.
    order: BTreeSet<(Reverse<i16>, Timestamp, i64)>,
    /// Pending jobs by due time.
    due: BTreeSet<(Timestamp, i64)>,
    /// Running jobs by the end of their lease.
    leases: BTreeSet<(Timestamp, i64)>,
    /// How many jobs of each key run: a key's pending job waits for them.
    running: HashMap<Key, u32>,
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
    deltas: Vec<JobDelta>,
    /// The worker of the last claim.
    worker: Option<Arc<str>>,
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
    /// Takes job `id` out of the indexes, before it changes.
    fn unindex(&mut self, id: i64) {
        let Some(row) = self.jobs.get(&id) else {
            return;
        };
        match row.status {
            Status::Pending => {
                self.order.remove(&(Reverse(row.priority), row.due_at, id));
                self.due.remove(&(row.due_at, id));
            }
            Status::Running { until, .. } => {
                self.leases.remove(&(until, id));
                if let Some(count) = self.running.get_mut(&row.key) {
                    *count -= 1;
                    if *count == 0 {
                        self.running.remove(&row.key);
                    }
                }
            }
            Status::Failed => {}
        }
    }

    /// Puts job `id` back in the indexes, once it changed.
    fn index(&mut self, id: i64) {
        let Some(row) = self.jobs.get(&id) else {
            return;
        };
        match row.status {
            Status::Pending => {
                self.order.insert((Reverse(row.priority), row.due_at, id));
                self.due.insert((row.due_at, id));
            }
            Status::Running { until, .. } => {
                self.leases.insert((until, id));
                *self.running.entry(row.key.clone()).or_default() += 1;
            }
            Status::Failed => {}
        }
    }

    /// Changes job `id`, keeping the indexes right.
    fn change(&mut self, id: i64, f: impl FnOnce(&mut Row)) {
        self.unindex(id);
        if let Some(row) = self.jobs.get_mut(&id) {
            f(row);
        }
        self.index(id);
    }

    /// Whether pending job `id` must wait for a job of its key that runs:
    /// one key's jobs run one at a time, in order, so that the deltas of a
    /// later job are never applied before an earlier job's.
    fn waits(&self, id: i64) -> bool {
        self.jobs
            .get(&id)
            .is_some_and(|row| self.running.contains_key(&row.key))
    }

    /// Up to `limit` jobs to claim at `now`: those whose lease ran out, then
    /// due pending jobs in claim order, but for those whose key has a job
    /// running.
    fn claimable(&self, limit: usize, now: Timestamp) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .leases
            .iter()
            .take_while(|(until, _)| *until <= now)
            .take(limit)
            .map(|(_, id)| *id)
            .collect();
        let mut from = (
            Reverse(i16::MAX),
            Timestamp::from_unix_micros(i64::MIN),
            i64::MIN,
        );
        while ids.len() < limit {
            let Some(&(priority, due_at, id)) = self.order.range(from..).next() else {
                break;
            };
            if due_at <= now {
                if !self.waits(id) {
                    ids.push(id);
                }
                from = (priority, due_at, id.saturating_add(1));
            } else {
                // Nothing more is due at this priority: go to the next one.
                let Some(lower) = priority.0.checked_sub(1) else {
                    break;
                };
                from = (
                    Reverse(lower),
                    Timestamp::from_unix_micros(i64::MIN),
                    i64::MIN,
                );
            }
        }
        ids
    }

    /// Adds a pending job, or merges it into the key's pending job.
    fn add_pending(
        &mut self,
        key: Key,
        due_at: Timestamp,
        priority: i16,
        reasons: Vec<RefreshReason>,
        attempts: u32,
        deltas: Vec<JobDelta>,
    ) {
        if let Some(&id) = self.pending.get(&key) {
            self.change(id, |row| {
                row.due_at = row.due_at.min(due_at);
                row.priority = row.priority.max(priority);
                row.attempts = row.attempts.max(attempts);
                merge_reasons(&mut row.reasons, reasons);
                row.deltas.extend(deltas);
            });
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
                deltas,
                worker: None,
            },
        );
        self.index(self.last_id);
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
        self.unindex(claim.job.0);
        self.jobs.remove(&claim.job.0)
    }
}

impl Row {
    fn pending(&self, id: i64) -> PendingJob {
        PendingJob {
            id: JobId(id),
            key: self.key.clone(),
            due_at: self.due_at,
            priority: self.priority,
            reasons: self.reasons.clone(),
            attempts: self.attempts,
            error: self.error.clone(),
            deltas: self.deltas.len(),
        }
    }

    fn running(&self, id: i64, lease_until: Timestamp) -> RunningJob {
        RunningJob {
            id: JobId(id),
            key: self.key.clone(),
            worker: self.worker.as_deref().unwrap_or_default().to_owned(),
            lease_until,
            due_at: self.due_at,
            priority: self.priority,
            reasons: self.reasons.clone(),
            attempts: self.attempts,
            deltas: self.deltas.len(),
        }
    }

    fn failed(&self, id: i64) -> FailedJob {
        FailedJob {
            id: JobId(id),
            key: self.key.clone(),
            attempts: self.attempts,
            error: self.error.clone().unwrap_or_default(),
            reasons: self.reasons.clone(),
        }
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
                    job.deltas.clone(),
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
        let mut state = self.lock();
        let ids = state.claimable(limit, now);
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            state.last_token += 1;
            let token = state.last_token;
            let Some(was_pending) = state.jobs.get(&id).map(|row| row.status == Status::Pending)
            else {
                continue;
            };
            state.change(id, |row| {
                row.status = Status::Running {
                    token,
                    until: now + lease,
                };
                row.worker = Some(Arc::from(worker));
            });
            let Some(row) = state.jobs.get(&id) else {
                continue;
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
                deltas: row.deltas.clone(),
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
            .map(|claim| {
                let held = state.held(claim).is_some();
                if held {
                    state.change(claim.job.0, |row| {
                        row.status = Status::Running {
                            token: claim.token,
                            until: now + lease,
                        };
                    });
                }
                held
            })
            .collect();
        Box::pin(ready(Ok(held)))
    }

    fn complete<'a>(&'a self, claims: &'a [Claim]) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        let mut state = self.lock();
        let mut unblocked = false;
        let done = claims
            .iter()
            .map(|claim| match state.take_held(claim) {
                Some(row) => {
                    unblocked |= state.pending.contains_key(&row.key);
                    true
                }
                None => false,
            })
            .collect();
        drop(state);
        if unblocked {
            // A pending job that waited for this one can run now.
            self.wake();
        }
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
                    state.add_pending(row.key, at, row.priority, row.reasons, attempts, row.deltas);
                    if let Some(row) = state
                        .pending
                        .get(&key)
                        .copied()
                        .and_then(|id| state.jobs.get_mut(&id))
                    {
                        row.error = Some(error.to_owned());
                    }
                    true
                }
                None => false,
            },
            None => {
                let held = state.held(claim).is_some();
                if held {
                    state.change(claim.job.0, |row| {
                        row.status = Status::Failed;
                        row.attempts = row.attempts.saturating_add(1);
                        row.error = Some(error.to_owned());
                    });
                }
                held
            }
        };
        Box::pin(ready(Ok(held)))
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut state = self.lock();
        let released = match state.take_held(claim) {
            Some(row) => {
                state.add_pending(
                    row.key,
                    row.due_at,
                    row.priority,
                    row.reasons,
                    row.attempts,
                    row.deltas,
                );
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
        let state = self.lock();
        // Pending jobs waiting for a running job of their key are due when
        // it ends; at most one waits per running job.
        let pending = state
            .due
            .iter()
            .find(|(_, id)| !state.waits(*id))
            .map(|(at, _)| *at);
        let lease = state.leases.first().map(|(at, _)| *at);
        let next = pending.into_iter().chain(lease).min();
        drop(state);
        Box::pin(ready(Ok(next)))
    }

    fn failed(&self, limit: usize) -> BoxFuture<'_, Result<Vec<FailedJob>, StoreError>> {
        let state = self.lock();
        let mut failed: Vec<(&Key, i64, &Row)> = state
            .jobs
            .iter()
            .filter(|(_, row)| row.status == Status::Failed)
            .map(|(&id, row)| (&row.key, id, row))
            .collect();
        failed.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let failed = failed
            .into_iter()
            .take(limit)
            .map(|(_, id, row)| row.failed(id))
            .collect();
        drop(state);
        Box::pin(ready(Ok(failed)))
    }

    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PendingJob>, StoreError>> {
        let state = self.lock();
        let pending = state
            .order
            .iter()
            .take(limit)
            .filter_map(|(_, _, id)| Some(state.jobs.get(id)?.pending(*id)))
            .collect();
        drop(state);
        Box::pin(ready(Ok(pending)))
    }

    fn running(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RunningJob>, StoreError>> {
        let state = self.lock();
        let running = state
            .leases
            .iter()
            .take(limit)
            .filter_map(|&(until, id)| Some(state.jobs.get(&id)?.running(id, until)))
            .collect();
        drop(state);
        Box::pin(ready(Ok(running)))
    }

    fn counts(&self) -> BoxFuture<'_, Result<JobCounts, StoreError>> {
        let state = self.lock();
        let counts = JobCounts {
            pending: state.order.len() as u64,
            running: state.leases.len() as u64,
            failed: (state.jobs.len() - state.order.len() - state.leases.len()) as u64,
        };
        drop(state);
        Box::pin(ready(Ok(counts)))
    }

    fn jobs_of<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<KeyJobs, StoreError>> {
        let state = self.lock();
        let mut jobs = KeyJobs::default();
        for (&id, row) in state.jobs.iter().filter(|(_, row)| row.key == *key) {
            match row.status {
                Status::Pending => jobs.pending = Some(row.pending(id)),
                Status::Running { until, .. } => jobs.running.push(row.running(id, until)),
                Status::Failed => jobs.failed.push(row.failed(id)),
            }
        }
        drop(state);
        Box::pin(ready(Ok(jobs)))
    }

    fn retry(&self, id: JobId, now: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut state = self.lock();
        let failed = state
            .jobs
            .get(&id.0)
            .is_some_and(|row| row.status == Status::Failed);
        if failed && let Some(row) = state.jobs.remove(&id.0) {
            state.add_pending(row.key, now, row.priority, row.reasons, 0, row.deltas);
        }
        drop(state);
        if failed {
            self.wake();
        }
        Box::pin(ready(Ok(failed)))
    }

    fn cancel(&self, id: JobId) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut state = self.lock();
        let cancelled = match state.jobs.get(&id.0).map(|row| row.status) {
            Some(Status::Pending | Status::Failed) => {
                state.unindex(id.0);
                if let Some(row) = state.jobs.remove(&id.0)
                    && state.pending.get(&row.key) == Some(&id.0)
                {
                    state.pending.remove(&row.key);
                }
                true
            }
            Some(Status::Running { .. }) | None => false,
        };
        drop(state);
        Box::pin(ready(Ok(cancelled)))
    }

    fn watch_jobs(&self, watcher: Weak<dyn JobWatcher>) {
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(watcher);
    }
}
