//! Workers: they claim refresh jobs from the queue, run them, keep their
//! leases alive, and settle them (complete, retry with back-off, keep as
//! failed), until shut down. What a job does is the cache's
//! (`cache/job.rs`); how a worker is configured is `builder.rs`.

mod builder;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::builder::Config;
pub use self::builder::WorkerBuilder;
use crate::cache::{Cache, CacheRef, JobOutcome};
use crate::error::{Error, panic_message};
use crate::event::EventKind;
use crate::key::Key;
use crate::storage::{Claim, Job, JobWatcher, RefreshReason, Turnover};

/// Claims refresh jobs from the cache's queue and runs them.
///
/// A worker runs next to a web server or in a process of its own, on any
/// machine that shares the cache's store and queue. It claims due jobs
/// (leased, so a worker that dies gives them back when the lease runs out),
/// refreshes their keys through the registry, keeps its leases alive while
/// they run, and completes them, or retries them with exponential back-off
/// and jitter, or keeps them as failed after the last attempt. A job that
/// fails, panics or names an unknown primer never stops the worker.
///
/// ```no_run
/// # async fn run(cache: kck_core::Cache) -> Result<(), kck_core::Error> {
/// use std::time::Duration;
/// use kck_core::refresh::Worker;
///
/// let worker = Worker::builder(&cache)
///     .concurrency(16)
///     .job_timeout(Duration::from_secs(120))
///     .retries(5, Duration::from_secs(1), Duration::from_secs(300))
///     .shutdown(async { /* resolve on SIGTERM, for example */ })
///     .build();
/// worker.run().await
/// # }
/// ```
pub struct Worker {
    source: CacheRef,
    config: Arc<Config>,
    /// Taken by [`Worker::run`]; in a mutex so a worker can be shared.
    shutdown: Mutex<Option<BoxFuture<'static, ()>>>,
}

/// How long a worker keeps finished jobs before completing them, waiting
/// for half its capacity to free up so one round trip settles them all and
/// claims their successors. Far below any lease.
const BATCH_WAIT: Duration = Duration::from_millis(10);

/// Wakes an idle worker when jobs are enqueued.
struct Wake(Notify);

impl JobWatcher for Wake {
    fn enqueued(&self) {
        self.0.notify_waiters();
    }
}

impl Worker {
    /// Runs until the shutdown signal (or, for a cache's local worker, until
    /// the cache is dropped): claims due jobs as capacity allows, and sleeps
    /// until the next is due, a job ends, or new jobs are announced.
    ///
    /// # Errors
    ///
    /// None so far: queue errors are reported as events and retried.
    pub async fn run(self) -> Result<(), Error> {
        let Worker {
            source,
            config,
            shutdown,
        } = self;
        let wake = Arc::new(Wake(Notify::new()));
        if let Some(cache) = source.get() {
            let watcher: Arc<dyn JobWatcher> = wake.clone();
            cache.inner.ports.queue.watch_jobs(Arc::downgrade(&watcher));
        }
        let shutdown = shutdown
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = match shutdown {
            Some(signal) => signal,
            None => Box::pin(std::future::pending()),
        };
        let mut running = Running::default();
        // Jobs done, to complete with the next claim: one round trip settles
        // a batch of finished jobs and takes new ones.
        let mut done: Vec<Claim> = Vec::new();
        let mut done_since: Option<Instant> = None;
        loop {
            let Some(cache) = source.get() else { break };
            let woken = wake.0.notified();
            // What this cache had queued before looking: once nothing is due
            // and nothing runs, all of it is worked through.
            let queued = cache.inner.background.queued();
            while let Some(finished) = running.try_join_next() {
                note_finished(finished, &mut done, &mut done_since);
            }
            let capacity = config.concurrency.saturating_sub(running.len());
            // Claim in batches, once half the capacity is free (or nothing
            // runs); settle finished jobs at the latest after a short wait,
            // before their leases can run out.
            let batch = capacity >= config.concurrency.div_ceil(2) || running.is_empty();
            let overdue = done_since.is_some_and(|since| since.elapsed() >= BATCH_WAIT);
            let mut claimed = false;
            if batch || overdue {
                let limit = if batch { capacity } else { 0 };
                let (completed, jobs) = settle_and_claim(&cache, &config, &done, limit).await;
                if completed {
                    done.clear();
                    done_since = None;
                }
                for job in jobs {
                    claimed = true;
                    let claim = job.claim.clone();
                    running.spawn(process(cache.clone(), config.clone(), job), claim);
                }
            }
            if source.is_local() && !claimed && running.is_empty() && done.is_empty() {
                cache.inner.background.worked_through(queued);
            }
            // Jobs running or just claimed wake the loop when they end; only
            // an idle worker needs to know when the next job is due.
            let idle = if claimed || !running.is_empty() || !done.is_empty() {
                config.poll
            } else {
                idle_time(&cache, &config).await
            };
            drop(cache);
            let settle_by = done_since.map(|since| since + BATCH_WAIT);
            tokio::select! {
                () = &mut shutdown => break,
                Some(finished) = running.join_next(), if !running.is_empty() => {
                    note_finished(finished, &mut done, &mut done_since);
                }
                () = woken => {}
                () = sleep_until_some(settle_by) => {}
                () = tokio::time::sleep(idle) => {}
            }
        }
        // Let running jobs finish, settling them as they do (their claims
        // are no longer renewed); the ones still running at the end of the
        // grace period are stopped and given back to the queue, to be
        // claimed again at once.
        let give_up_at = Instant::now() + config.grace;
        let mut late = Vec::new();
        while !running.is_empty() {
            let settle_by = done_since.map(|since| since + BATCH_WAIT);
            tokio::select! {
                Some(finished) = running.join_next() => {
                    note_finished(finished, &mut done, &mut done_since);
                }
                () = sleep_until_some(settle_by) => {
                    let Some(cache) = source.get() else { break };
                    if settle_and_claim(&cache, &config, &done, 0).await.0 {
                        done.clear();
                        done_since = None;
                    }
                }
                () = tokio::time::sleep_until(give_up_at) => {
                    late = running.abort_all(&mut done, &mut done_since).await;
                }
            }
        }
        if let Some(cache) = source.get() {
            for claim in &late {
                // A claim that cannot be given back runs out instead.
                let _ = cache.inner.ports.queue.release(claim).await;
            }
            settle_and_claim(&cache, &config, &done, 0).await;
        }
        Ok(())
    }

    /// Runs every job due now, and the jobs they cause that are due now
    /// too, then returns how many ran. Tests use it to drive the queue on a
    /// mock clock.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the queue fails.
    pub async fn run_due(&self) -> Result<usize, Error> {
        let Some(cache) = self.source.get() else {
            return Ok(0);
        };
        let mut ran = 0;
        loop {
            let now = cache.now();
            let jobs = cache
                .inner
                .ports
                .queue
                .claim(&self.config.id, 1024, self.config.lease, now)
                .await?;
            if jobs.is_empty() {
                return Ok(ran);
            }
            ran += jobs.len();
            let jobs = jobs
                .into_iter()
                .map(|job| process(cache.clone(), self.config.clone(), job));
            let done: Vec<Claim> = futures_util::future::join_all(jobs)
                .await
                .into_iter()
                .flatten()
                .collect();
            if !done.is_empty() {
                cache.inner.ports.queue.complete(&done).await?;
            }
            cache.wait_idle().await;
        }
    }
}

/// Completes the jobs in `done` and claims up to `limit` new ones, in one
/// round trip; says whether `done` was settled (its claims completed, or
/// lost to another worker) along with the jobs claimed.
async fn settle_and_claim(
    cache: &Cache,
    config: &Config,
    done: &[Claim],
    limit: usize,
) -> (bool, Vec<Job>) {
    if done.is_empty() && limit == 0 {
        return (true, Vec::new());
    }
    let queue = &cache.inner.ports.queue;
    let answer = queue
        .complete_and_claim(done, &config.id, limit, config.lease, cache.now())
        .await;
    match answer {
        Ok(Turnover { completed, claimed }) => {
            if completed.iter().any(|held| !held) {
                tracing::debug!(target: "kck", worker = %config.id, "lost the claim on a finished job before completing it");
            }
            (true, claimed)
        }
        Err(error) => {
            tracing::warn!(target: "kck", %error, worker = %config.id, "cannot settle or claim jobs");
            (false, Vec::new())
        }
    }
}

/// The jobs a worker runs, with their claims.
#[derive(Default)]
struct Running {
    tasks: JoinSet<Option<Claim>>,
    claims: HashMap<tokio::task::Id, Claim>,
}

/// A job's end, as [`JoinSet`] reports it.
type Finished = Result<Option<Claim>, tokio::task::JoinError>;

impl Running {
    fn spawn(&mut self, job: impl Future<Output = Option<Claim>> + Send + 'static, claim: Claim) {
        let id = self.tasks.spawn(job).id();
        self.claims.insert(id, claim);
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn ended(
        &mut self,
        finished: Result<(tokio::task::Id, Option<Claim>), tokio::task::JoinError>,
    ) -> Finished {
        let id = match &finished {
            Ok((id, _)) => *id,
            Err(error) => error.id(),
        };
        self.claims.remove(&id);
        finished.map(|(_, claim)| claim)
    }

    fn try_join_next(&mut self) -> Option<Finished> {
        let finished = self.tasks.try_join_next_with_id()?;
        Some(self.ended(finished))
    }

    async fn join_next(&mut self) -> Option<Finished> {
        let finished = self.tasks.join_next_with_id().await?;
        Some(self.ended(finished))
    }

    /// Stops every job still running and returns their claims; the jobs
    /// that ended meanwhile are noted as [`note_finished`] does.
    async fn abort_all(
        &mut self,
        done: &mut Vec<Claim>,
        since: &mut Option<Instant>,
    ) -> Vec<Claim> {
        self.tasks.abort_all();
        let mut late = Vec::new();
        while let Some(finished) = self.tasks.join_next_with_id().await {
            match finished {
                Err(error) if error.is_cancelled() => late.extend(self.claims.remove(&error.id())),
                finished => note_finished(self.ended(finished), done, since),
            }
        }
        late
    }
}

/// Takes a finished job's claim to complete, if it is done.
fn note_finished(
    finished: Result<Option<Claim>, tokio::task::JoinError>,
    done: &mut Vec<Claim>,
    since: &mut Option<Instant>,
) {
    if let Ok(Some(claim)) = finished {
        done.push(claim);
        since.get_or_insert_with(Instant::now);
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How long to sleep: until the next job is due, at most the poll
/// interval.
async fn idle_time(cache: &Cache, config: &Config) -> Duration {
    match cache.inner.ports.queue.next_due().await {
        Ok(Some(due)) => due.saturating_duration_since(cache.now()).min(config.poll),
        _ => config.poll,
    }
}

/// Runs one job; returns its claim to complete if it is done, or settles
/// it with the queue otherwise: retry, or keep as failed. Never panics: a
/// panic in the job counts as a failed attempt.
async fn process(cache: Cache, config: Arc<Config>, job: Job) -> Option<Claim> {
    cache.inner.local.flights.begin();
    let key = job.key.clone();
    let mut running = JobInFlight {
        cache: &cache,
        key: &key,
        ended: false,
    };
    let done = settle(&cache, &config, job).await;
    running.ended = true;
    done
}

/// A job this process runs. Dropped before it ended (a worker shutting
/// down past its grace period gives the job back), it stops the job's
/// computation too: it must not run on beside the next worker's, nor keep
/// [`Cache::wait_idle`] waiting.
struct JobInFlight<'a> {
    cache: &'a Cache,
    key: &'a Key,
    ended: bool,
}

impl Drop for JobInFlight<'_> {
    fn drop(&mut self) {
        let inner = &self.cache.inner;
        if !self.ended {
            inner.abandon_job(self.key);
        }
        inner.local.flights.end();
    }
}

async fn settle(cache: &Cache, config: &Config, job: Job) -> Option<Claim> {
    let waited = cache.now().saturating_duration_since(job.due_at);
    cache
        .inner
        .events
        .emit(&job.key, EventKind::JobStarted { waited });
    let run = AssertUnwindSafe(while_held(
        cache,
        config,
        &job,
        cache.inner.run_job(&job, config.job_timeout),
    ));
    let outcome = run.catch_unwind().await.unwrap_or_else(|panic| {
        JobOutcome::Retry(format!("the job panicked: {}", panic_message(&*panic)))
    });
    let inner = &cache.inner;
    let queue = &inner.ports.queue;
    let settled = match outcome {
        JobOutcome::Done => {
            let propagation = job
                .reasons
                .iter()
                .any(|reason| matches!(reason, RefreshReason::DependencyChanged { .. }));
            inner.events.emit(
                &job.key,
                EventKind::JobDone {
                    since_due: cache.now().saturating_duration_since(job.due_at),
                    propagation,
                },
            );
            return Some(job.claim);
        }
        JobOutcome::Retry(error) if job.attempts + 1 < config.attempts => {
            let attempt = job.attempts + 1;
            let at = config
                .backoff
                .spread_retry_at(cache.now(), attempt, job.claim.job.0);
            inner.events.emit(
                &job.key,
                EventKind::RetryScheduled {
                    attempt,
                    at,
                    error: error.clone(),
                },
            );
            queue.fail(&job.claim, &error, Some(at)).await
        }
        JobOutcome::Retry(error) | JobOutcome::GiveUp(error) => {
            let attempts = job.attempts + 1;
            inner.events.emit(
                &job.key,
                EventKind::JobFailed {
                    attempts,
                    error: error.clone(),
                },
            );
            queue.fail(&job.claim, &error, None).await
        }
    };
    match settled {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(target: "kck", key = %job.key, "lost the claim on a job before settling it")
        }
        Err(error) => tracing::warn!(target: "kck", key = %job.key, %error, "cannot settle a job"),
    }
    None
}

/// Runs `work` while renewing the job's claim every third of its lease.
async fn while_held<F: Future<Output = JobOutcome>>(
    cache: &Cache,
    config: &Config,
    job: &Job,
    work: F,
) -> JobOutcome {
    let claims = std::slice::from_ref(&job.claim);
    let heartbeat = async {
        loop {
            tokio::time::sleep(config.lease / 3).await;
            let extended = cache
                .inner
                .ports
                .queue
                .extend(claims, config.lease, cache.now())
                .await;
            if !matches!(extended.as_deref(), Ok([true])) {
                // Lost the claim: finish all the same; the version fence
                // keeps an older write from replacing a newer one.
                return;
            }
        }
    };
    let work = std::pin::pin!(work);
    match futures_util::future::select(work, std::pin::pin!(heartbeat)).await {
        futures_util::future::Either::Left((outcome, _)) => outcome,
        futures_util::future::Either::Right(((), work)) => work.await,
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.config.id)
            .field("concurrency", &self.config.concurrency)
            .finish_non_exhaustive()
    }
}
