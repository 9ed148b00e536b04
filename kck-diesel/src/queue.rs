//! [`PgStore`] as a [`Queue`]: refresh jobs in `kck_jobs`, shared by every
//! worker of every process.

use std::sync::Weak;
use std::time::Duration;

use futures_util::future::BoxFuture;
use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{
    Claim, FailedJob, Job, JobCounts, JobId, JobRequest, JobWatcher, KeyJobs, PendingJob, Queue,
    RefreshReason, RunningJob, StoreError, Turnover,
};

use crate::convert::{
    corrupt, deltas_from_json, deltas_to_json, from_pg, micros, parse_key, to_pg,
};
use crate::queue_sql::{
    AnyJobRow, CancelJob, ClaimJobs, ClaimedRow, CompleteJobs, CountJobs, CountsRow, DueRow,
    Enqueue, ExtendJobs, FailJob, FailedJobs, FailedRow, IdRow, JobsOf, NextDue, PendingJobs,
    PendingRow, RequeueJob, RetryJob, RowsRow, RunningJobs, RunningRow,
};
use crate::statement::Bind;
use crate::store::PgStore;

fn reasons(key: &str, texts: Vec<String>) -> Result<Vec<RefreshReason>, StoreError> {
    texts
        .iter()
        .map(|text| {
            RefreshReason::from_text(text)
                .map_err(|text| corrupt(key, format!("unknown job reason `{text}`")))
        })
        .collect()
}

impl ClaimedRow {
    /// The job claimed, if the row holds one.
    fn into_job(self) -> Result<Option<Job>, StoreError> {
        let (
            Some(id),
            Some(key),
            Some(due_at),
            Some(priority),
            Some(reasons),
            Some(attempts),
            Some(token),
            Some(deltas),
        ) = (
            self.id,
            self.key,
            self.due_at,
            self.priority,
            self.reasons,
            self.attempts,
            self.token,
            self.deltas,
        )
        else {
            return Ok(None);
        };
        Ok(Some(Job {
            reasons: self::reasons(&key, reasons)?,
            due_at: from_pg(due_at),
            priority,
            attempts: u32::try_from(attempts).unwrap_or(0),
            claim: Claim {
                job: JobId(id),
                token,
            },
            deltas: deltas_from_json(&key, &deltas)?,
            key: parse_key(&key)?,
        }))
    }
}

impl FailedRow {
    fn into_failed(self) -> Result<FailedJob, StoreError> {
        let key = parse_key(&self.key)?;
        Ok(FailedJob {
            id: JobId(self.id),
            reasons: reasons(&self.key, self.reasons)?,
            key,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            error: self.error,
        })
    }
}

impl PendingRow {
    fn into_pending(self) -> Result<PendingJob, StoreError> {
        Ok(PendingJob {
            id: JobId(self.id),
            reasons: reasons(&self.key, self.reasons)?,
            key: parse_key(&self.key)?,
            due_at: from_pg(self.due_at),
            priority: self.priority,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            error: self.error,
            deltas: usize::try_from(self.deltas).unwrap_or(0),
        })
    }
}

impl RunningRow {
    fn into_running(self) -> Result<RunningJob, StoreError> {
        Ok(RunningJob {
            id: JobId(self.id),
            reasons: reasons(&self.key, self.reasons)?,
            key: parse_key(&self.key)?,
            worker: self.worker,
            lease_until: from_pg(self.lease_until),
            due_at: from_pg(self.due_at),
            priority: self.priority,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            deltas: usize::try_from(self.deltas).unwrap_or(0),
        })
    }
}

impl AnyJobRow {
    /// Files the job under its status in `jobs`.
    pub(crate) fn file(self, jobs: &mut KeyJobs) -> Result<(), StoreError> {
        match self.status.as_str() {
            "pending" => {
                jobs.pending = Some(
                    PendingRow {
                        id: self.id,
                        key: self.key,
                        due_at: self.due_at,
                        priority: self.priority,
                        reasons: self.reasons,
                        attempts: self.attempts,
                        error: self.error,
                        deltas: self.deltas,
                    }
                    .into_pending()?,
                );
            }
            "running" => {
                let lease_until = self
                    .lease_until
                    .ok_or_else(|| corrupt(&self.key, "a running job without a lease"))?;
                jobs.running.push(
                    RunningRow {
                        id: self.id,
                        key: self.key,
                        worker: self.worker,
                        lease_until,
                        due_at: self.due_at,
                        priority: self.priority,
                        reasons: self.reasons,
                        attempts: self.attempts,
                        deltas: self.deltas,
                    }
                    .into_running()?,
                );
            }
            _ => jobs.failed.push(
                FailedRow {
                    id: self.id,
                    key: self.key,
                    attempts: self.attempts,
                    error: self.error.unwrap_or_default(),
                    reasons: self.reasons,
                }
                .into_failed()?,
            ),
        }
        Ok(())
    }
}

impl PgStore {
    /// Puts a held job back as pending; see [`RequeueJob`].
    async fn requeue(
        &self,
        claim: &Claim,
        due_at: Option<Timestamp>,
        failed: bool,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let binds = vec![
            Bind::BigInt(claim.job.0),
            Bind::BigInt(claim.token),
            Bind::OptTime(due_at.map(to_pg)),
            Bind::Int(i32::from(failed)),
            Bind::OptText(error.map(str::to_owned)),
        ];
        let row: RowsRow = self.run_one::<RequeueJob, _>(binds).await?;
        Ok(row.rows > 0)
    }
}

impl Queue for PgStore {
    fn enqueue<'a>(&'a self, jobs: &'a [JobRequest]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if jobs.is_empty() {
                return Ok(());
            }
            let deltas = jobs
                .iter()
                .map(|j| deltas_to_json(&j.key, &j.deltas))
                .collect::<Result<Vec<_>, _>>()?;
            let binds = vec![
                Bind::Texts(jobs.iter().map(|j| j.key.as_str().to_owned()).collect()),
                Bind::Times(jobs.iter().map(|j| to_pg(j.due_at)).collect()),
                Bind::SmallInts(jobs.iter().map(|j| j.priority).collect()),
                Bind::Texts(jobs.iter().map(|j| j.reason.to_text()).collect()),
                Bind::Texts(deltas),
            ];
            let _: RowsRow = self.run_one::<Enqueue, _>(binds).await?;
            Ok(())
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<Job>, StoreError>> {
        Box::pin(async move {
            let turnover = self
                .complete_and_claim(&[], worker, limit, lease, now)
                .await?;
            Ok(turnover.claimed)
        })
    }

    fn complete_and_claim<'a>(
        &'a self,
        done: &'a [Claim],
        worker: &'a str,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Turnover, StoreError>> {
        Box::pin(async move {
            let ids = Bind::BigInts(done.iter().map(|c| c.job.0).collect());
            let limit = Bind::BigInt(i64::try_from(limit).unwrap_or(i64::MAX));
            let binds = vec![
                ids.clone(),
                Bind::BigInts(done.iter().map(|c| c.token).collect()),
                Bind::Time(to_pg(now)),
                ids,
                limit.clone(),
                Bind::Time(to_pg(now)),
                limit.clone(),
                limit,
                Bind::Text(worker.to_owned()),
                Bind::Time(to_pg(now)),
                Bind::BigInt(micros(lease)),
            ];
            let rows: Vec<ClaimedRow> = self.run::<ClaimJobs, _>(binds).await?;
            let completed = rows.first().map_or_else(
                || vec![false; done.len()],
                |row| done.iter().map(|c| row.done.contains(&c.job.0)).collect(),
            );
            let mut jobs = Vec::with_capacity(rows.len());
            for row in rows {
                jobs.extend(row.into_job()?);
            }
            Ok(Turnover {
                completed,
                claimed: jobs,
            })
        })
    }

    fn extend<'a>(
        &'a self,
        claims: &'a [Claim],
        lease: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                Bind::Time(to_pg(now)),
                Bind::BigInt(micros(lease)),
                Bind::BigInts(claims.iter().map(|c| c.job.0).collect()),
                Bind::BigInts(claims.iter().map(|c| c.token).collect()),
            ];
            let held: Vec<IdRow> = self.run::<ExtendJobs, _>(binds).await?;
            Ok(claims
                .iter()
                .map(|claim| held.iter().any(|row| row.id == claim.job.0))
                .collect())
        })
    }

    fn complete<'a>(&'a self, claims: &'a [Claim]) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                Bind::BigInts(claims.iter().map(|c| c.job.0).collect()),
                Bind::BigInts(claims.iter().map(|c| c.token).collect()),
            ];
            let done: Vec<IdRow> = self.run::<CompleteJobs, _>(binds).await?;
            Ok(claims
                .iter()
                .map(|claim| done.iter().any(|row| row.id == claim.job.0))
                .collect())
        })
    }

    fn fail<'a>(
        &'a self,
        claim: &'a Claim,
        error: &'a str,
        retry_at: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            match retry_at {
                Some(at) => self.requeue(claim, Some(at), true, Some(error)).await,
                None => {
                    let binds = vec![
                        Bind::Text(error.to_owned()),
                        Bind::BigInt(claim.job.0),
                        Bind::BigInt(claim.token),
                    ];
                    Ok(self.execute::<FailJob>(binds).await? == 1)
                }
            }
        })
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.requeue(claim, None, false, None))
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<Timestamp>, StoreError>> {
        Box::pin(async move {
            let row: DueRow = self.run_one::<NextDue, _>(Vec::new()).await?;
            Ok(row.due.map(from_pg))
        })
    }

    fn failed(&self, limit: usize) -> BoxFuture<'_, Result<Vec<FailedJob>, StoreError>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows: Vec<FailedRow> = self.run::<FailedJobs, _>(vec![Bind::BigInt(limit)]).await?;
            rows.into_iter().map(FailedRow::into_failed).collect()
        })
    }

    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PendingJob>, StoreError>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows: Vec<PendingRow> = self
                .run::<PendingJobs, _>(vec![Bind::BigInt(limit)])
                .await?;
            rows.into_iter().map(PendingRow::into_pending).collect()
        })
    }

    fn running(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RunningJob>, StoreError>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows: Vec<RunningRow> = self
                .run::<RunningJobs, _>(vec![Bind::BigInt(limit)])
                .await?;
            rows.into_iter().map(RunningRow::into_running).collect()
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<JobCounts, StoreError>> {
        Box::pin(async move {
            let row: CountsRow = self.run_one::<CountJobs, _>(Vec::new()).await?;
            Ok(JobCounts {
                pending: row.pending.unsigned_abs(),
                running: row.running.unsigned_abs(),
                failed: row.failed.unsigned_abs(),
            })
        })
    }

    fn jobs_of<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<KeyJobs, StoreError>> {
        Box::pin(async move {
            let rows: Vec<AnyJobRow> = self
                .run::<JobsOf, _>(vec![Bind::Text(key.as_str().to_owned())])
                .await?;
            let mut jobs = KeyJobs::default();
            for row in rows {
                row.file(&mut jobs)?;
            }
            Ok(jobs)
        })
    }

    fn retry(&self, id: JobId, now: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let binds = vec![Bind::BigInt(id.0), Bind::Time(to_pg(now))];
            let row: RowsRow = self.run_one::<RetryJob, _>(binds).await?;
            Ok(row.rows > 0)
        })
    }

    fn cancel(&self, id: JobId) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move { Ok(self.execute::<CancelJob>(vec![Bind::BigInt(id.0)]).await? == 1) })
    }

    fn watch_jobs(&self, watcher: Weak<dyn JobWatcher>) {
        self.watchers().add_jobs(watcher);
    }
}
