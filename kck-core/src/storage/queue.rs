//! The refresh queue: jobs that refresh products in the background.
//!
//! A job asks for one key to be refreshed, for one or more reasons. There is
//! at most one *pending* job per key: a second request merges into it,
//! keeping the earliest due time, the highest priority and every reason.
//! Workers claim due jobs with a lease and a claim token, one job of a key
//! at a time; a job whose lease runs out is claimed again, and the token fences out the worker that lost
//! it (it can no longer complete or fail the job). Failed jobs are retried
//! with back-off, then kept as failed with their error.
//!
//! [`MemoryQueue`](super::MemoryQueue) serves one process; `kck-diesel`'s PostgreSQL store is
//! also a queue, shared by every process.

use std::fmt;
use std::sync::Weak;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::common::{JobDelta, StoreError};
use crate::clock::Timestamp;
use crate::key::Key;

/// A queue of refresh jobs. Object safe: the cache holds an `Arc<dyn Queue>`.
///
/// Times are given by the caller (the cache's clock), so a queue decides
/// nothing by a clock of its own.
pub trait Queue: Send + Sync + 'static {
    /// Adds jobs, merging each into the pending job of its key if there is
    /// one (earliest due time, highest priority, union of reasons), and wakes
    /// the watchers.
    fn enqueue<'a>(&'a self, jobs: &'a [JobRequest]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Claims up to `limit` jobs that are due at `now` (or whose lease ran
    /// out), for `worker`, until `now + lease`; highest priority first, then
    /// earliest due. A key's jobs run one at a time: its pending job is not
    /// claimed while another job of the key runs (one whose claim is being
    /// completed in the same call does not count), so the deltas of a later
    /// job are never applied before those of an earlier one.
    fn claim<'a>(
        &'a self,
        worker: &'a str,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<Job>, StoreError>>;

    /// Extends the lease of claimed jobs until `now + lease`; says, for each,
    /// whether the claim still holds.
    fn extend<'a>(
        &'a self,
        claims: &'a [Claim],
        lease: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>>;

    /// Removes jobs done under `claims`; says, for each, whether its claim
    /// still held (`false`: the job was claimed again meanwhile, and stays).
    fn complete<'a>(&'a self, claims: &'a [Claim]) -> BoxFuture<'a, Result<Vec<bool>, StoreError>>;

    /// Completes the jobs done under `done`, as [`Queue::complete`] does,
    /// then claims up to `limit` due jobs, as [`Queue::claim`] does: what a
    /// busy worker does between jobs. A queue that can should do both in
    /// one round trip; the default does one after the other.
    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Claim],
        worker: &'a str,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Turnover, StoreError>> {
        Box::pin(async move {
            let completed = if done.is_empty() {
                Vec::new()
            } else {
                self.complete(done).await?
            };
            let claimed = if limit == 0 {
                Vec::new()
            } else {
                self.claim(worker, limit, lease, now).await?
            };
            Ok(Turnover { completed, claimed })
        })
    }

    /// Puts a failed job back as pending, due at `retry_at`, counting the
    /// attempt; or, with no `retry_at`, keeps it as failed. Records `error`.
    /// `false` if the claim no longer holds.
    fn fail<'a>(
        &'a self,
        claim: &'a Claim,
        error: &'a str,
        retry_at: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives a claimed job back, untouched, as pending (a worker shutting
    /// down).
    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The earliest due time of a pending job that may be claimed (its key
    /// has no job running), or of a running job's lease end: when a worker
    /// should look again.
    fn next_due(&self) -> BoxFuture<'_, Result<Option<Timestamp>, StoreError>>;

    /// Up to `limit` jobs kept as failed, with their errors, by key then
    /// id. Changes nothing.
    fn failed(&self, limit: usize) -> BoxFuture<'_, Result<Vec<FailedJob>, StoreError>>;

    /// Up to `limit` jobs waiting to run (pending, not claimed), in claim
    /// order: highest priority first, then earliest due. Changes nothing:
    /// this is how tests and operators look at the queue.
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PendingJob>, StoreError>>;

    /// Up to `limit` claimed jobs, earliest lease end first: who runs them,
    /// until when. Changes nothing.
    fn running(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RunningJob>, StoreError>>;

    /// How many jobs are pending, running and failed. The count of every
    /// job: meant for gauges read now and then, not for every request.
    fn counts(&self) -> BoxFuture<'_, Result<JobCounts, StoreError>>;

    /// Every job of `key`: its pending job, the ones running, and the ones
    /// kept as failed. Changes nothing.
    fn jobs_of<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<KeyJobs, StoreError>>;

    /// Puts failed job `id` back as pending, due at `now`, with its
    /// attempts counted from zero again (merged into its key's pending job
    /// if there is one, as [`Queue::enqueue`] merges), and wakes the
    /// watchers. `false` if there is no failed job `id`.
    fn retry(&self, id: JobId, now: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Removes pending or failed job `id`; `false` if there is none. A
    /// running job is not removed (its worker finishes it): cancel it once
    /// it is pending or failed again.
    fn cancel(&self, id: JobId) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Registers a watcher woken whenever jobs are enqueued, for as long as
    /// it lives.
    fn watch_jobs(&self, watcher: Weak<dyn JobWatcher>);
}

/// Told when jobs are enqueued, so idle workers wake up.
pub trait JobWatcher: Send + Sync + 'static {
    /// Jobs were enqueued.
    fn enqueued(&self);
}

/// A request for a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// The product to refresh.
    pub key: Key,
    /// When it should run.
    pub due_at: Timestamp,
    /// Higher runs first.
    pub priority: i16,
    /// Why.
    pub reason: RefreshReason,
    /// Deltas of the products it read, to augment it with instead of
    /// recomputing it, where it can; kept in order, and appended to when
    /// requests merge.
    pub deltas: Vec<JobDelta>,
}

impl JobRequest {
    /// A request to refresh `key` at `due_at`, for `reason`, at priority 0.
    pub fn new(key: Key, due_at: Timestamp, reason: RefreshReason) -> Self {
        JobRequest {
            key,
            due_at,
            priority: 0,
            reason,
            deltas: Vec::new(),
        }
    }
}

/// Why a product is refreshed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RefreshReason {
    /// A read found the value stale, or due for its periodic refresh.
    Stale,
    /// A product it read changed.
    DependencyChanged {
        /// The product that changed.
        from: Key,
    },
    /// Its periodic refresh (`refresh = "…"`) is due.
    Interval,
    /// Its primer's schedule (`schedule = "…"`) fired.
    Schedule,
    /// Its primer's domain names it, and it is missing.
    Domain,
    /// [`Cache::refresh`](crate::Cache::refresh) or
    /// [`Cache::refresh_key`](crate::Cache::refresh_key) asked for it.
    Requested,
    /// It was augmented in place, and its last full computation is older
    /// than its primer's `verify_every`: recompute it and compare.
    Verify,
}

impl RefreshReason {
    /// The reason as stored: `stale`, `dependency <key>`, `interval`…
    pub fn to_text(&self) -> String {
        match self {
            RefreshReason::Stale => "stale".to_owned(),
            RefreshReason::DependencyChanged { from } => format!("dependency {from}"),
            RefreshReason::Interval => "interval".to_owned(),
            RefreshReason::Schedule => "schedule".to_owned(),
            RefreshReason::Domain => "domain".to_owned(),
            RefreshReason::Requested => "requested".to_owned(),
            RefreshReason::Verify => "verify".to_owned(),
        }
    }

    /// Reads a reason written by [`RefreshReason::to_text`].
    ///
    /// # Errors
    ///
    /// The text, if it is no reason.
    pub fn from_text(text: &str) -> Result<Self, String> {
        match text.split_once(' ') {
            Some(("dependency", key)) => Key::parse(key)
                .map(|from| RefreshReason::DependencyChanged { from })
                .map_err(|_| text.to_owned()),
            _ => match text {
                "stale" => Ok(RefreshReason::Stale),
                "interval" => Ok(RefreshReason::Interval),
                "schedule" => Ok(RefreshReason::Schedule),
                "domain" => Ok(RefreshReason::Domain),
                "requested" => Ok(RefreshReason::Requested),
                "verify" => Ok(RefreshReason::Verify),
                _ => Err(text.to_owned()),
            },
        }
    }
}

impl fmt::Display for RefreshReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// The identity of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A worker's hold on a claimed job. The token changes with every claim:
/// a worker that lost the job cannot complete or fail it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The job.
    pub job: JobId,
    /// The claim's token.
    pub token: i64,
}

/// A claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The product to refresh.
    pub key: Key,
    /// When it was due.
    pub due_at: Timestamp,
    /// Its priority.
    pub priority: i16,
    /// Every reason merged into it.
    pub reasons: Vec<RefreshReason>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The claim to complete or fail it with.
    pub claim: Claim,
    /// The deltas merged into it, in order.
    pub deltas: Vec<JobDelta>,
}

/// What [`Queue::complete_and_claim`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Turnover {
    /// For each claim given, whether it still held and its job is removed.
    pub completed: Vec<bool>,
    /// The jobs claimed.
    pub claimed: Vec<Job>,
}

/// A job waiting to run, as [`Queue::pending`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    /// The job.
    pub id: JobId,
    /// The product to refresh.
    pub key: Key,
    /// When it is due.
    pub due_at: Timestamp,
    /// Its priority.
    pub priority: i16,
    /// Every reason merged into it.
    pub reasons: Vec<RefreshReason>,
    /// Failed attempts so far: more than 0 for a job waiting for its retry.
    pub attempts: u32,
    /// The error of the last failed attempt, if any.
    pub error: Option<String>,
    /// How many deltas it carries, to augment its product with.
    pub deltas: usize,
}

/// A claimed job, as [`Queue::running`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    /// The job.
    pub id: JobId,
    /// The product it refreshes.
    pub key: Key,
    /// The worker that claimed it.
    pub worker: String,
    /// When its lease ends: another worker may claim it from then on.
    pub lease_until: Timestamp,
    /// When it was due.
    pub due_at: Timestamp,
    /// Its priority.
    pub priority: i16,
    /// Every reason merged into it.
    pub reasons: Vec<RefreshReason>,
    /// Failed attempts before this one.
    pub attempts: u32,
    /// How many deltas it carries.
    pub deltas: usize,
}

/// How many jobs are in each state, as [`Queue::counts`] counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Waiting to run (due or not).
    pub pending: u64,
    /// Claimed by a worker.
    pub running: u64,
    /// Kept as failed.
    pub failed: u64,
}

/// The jobs of one key, as [`Queue::jobs_of`] lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyJobs {
    /// Its pending job: at most one per key.
    pub pending: Option<PendingJob>,
    /// Its running jobs: one, but for a job whose lease ran out and that
    /// no worker claimed again yet.
    pub running: Vec<RunningJob>,
    /// Its jobs kept as failed.
    pub failed: Vec<FailedJob>,
}

/// A job kept as failed after its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedJob {
    /// The job: [`Queue::retry`] and [`Queue::cancel`] take it.
    pub id: JobId,
    /// The product it refreshed.
    pub key: Key,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// Its reasons.
    pub reasons: Vec<RefreshReason>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_as_text() {
        let reasons = [
            RefreshReason::Stale,
            RefreshReason::DependencyChanged {
                from: Key::parse("a/b%2Fc").unwrap(),
            },
            RefreshReason::Interval,
            RefreshReason::Schedule,
            RefreshReason::Domain,
            RefreshReason::Requested,
            RefreshReason::Verify,
        ];
        for reason in reasons {
            assert_eq!(RefreshReason::from_text(&reason.to_text()), Ok(reason));
        }
        assert!(RefreshReason::from_text("whatever").is_err());
    }
}
