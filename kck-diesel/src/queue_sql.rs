//! The SQL of the PostgreSQL queue, and the rows it returns.
//!
//! Claims take due jobs with `FOR UPDATE SKIP LOCKED`, so workers never wait
//! for each other nor take the same job; every claim gets a new token from a
//! sequence, and every later step on a job checks it. New jobs are announced
//! on the channel `kck_jobs`.

use diesel::QueryableByName;
use diesel::pg::data_types::PgTimestamp;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, SmallInt, Text, Timestamptz};

use crate::statement::statements;

/// The channel new jobs are announced on.
pub(crate) const JOBS_CHANNEL: &str = "kck_jobs";

statements! {
    /// Queues jobs. Binds: keys, due times, priorities, reasons (arrays of
    /// one element per request).
    Enqueue = concat!(
        "WITH requests AS ( \
             SELECT * FROM unnest({}::text[], {}::timestamptz[], {}::smallint[], {}::text[]) \
                 AS r(key, due_at, priority, reason) \
         ), jobs AS ( \
             SELECT key, min(due_at) AS due_at, max(priority) AS priority, \
                    array_agg(DISTINCT reason) AS reasons, 0 AS attempts, NULL::text AS error \
             FROM requests GROUP BY key \
         ), queued AS (",
        insert_pending!(),
        ") SELECT (SELECT count(*) FROM queued) AS rows, \
                  (SELECT count(pg_notify('kck_jobs', '')) \
                   FROM (SELECT 1 FROM queued LIMIT 1) AS queued_any) AS notified"
    );

    /// Claims due jobs. Binds: now, now, limit, worker, now, lease in
    /// microseconds.
    ClaimJobs = "WITH candidates AS ( \
             SELECT id FROM kck_jobs \
             WHERE (status = 'pending' AND due_at <= {}) OR (status = 'running' AND lease_until <= {}) \
             ORDER BY priority DESC, due_at, id \
             LIMIT {} \
             FOR UPDATE SKIP LOCKED \
         ), claimed AS ( \
             UPDATE kck_jobs AS j SET status = 'running', token = nextval('kck_claims'), \
                 worker = {}, lease_until = {} + {} * interval '1 microsecond' \
             FROM candidates AS c WHERE j.id = c.id \
             RETURNING j.id, j.key, j.due_at, j.priority, j.reasons, j.attempts, j.token \
         ) \
         SELECT * FROM claimed ORDER BY priority DESC, due_at, id";

    /// Extends leases still held. Binds: now, lease in microseconds, job
    /// ids, tokens.
    ExtendJobs = "UPDATE kck_jobs SET lease_until = {} + {} * interval '1 microsecond' \
         WHERE status = 'running' \
           AND (id, token) IN (SELECT * FROM unnest({}::bigint[], {}::bigint[])) \
         RETURNING id";

    /// Removes a job done under its claim. Binds: id, token.
    CompleteJob = "DELETE FROM kck_jobs WHERE id = {} AND token = {} AND status = 'running'";

    /// Puts a job held under its claim back as pending, merging it into its
    /// key's pending job. Binds: id, token, due time (null: keep), attempts
    /// to add, error (null: keep).
    RequeueJob = concat!(
        "WITH held AS ( \
             DELETE FROM kck_jobs WHERE id = {} AND token = {} AND status = 'running' \
             RETURNING key, due_at, priority, reasons, attempts, error \
         ), jobs AS ( \
             SELECT key, COALESCE({}, due_at) AS due_at, priority, reasons, \
                    attempts + {} AS attempts, COALESCE({}, error) AS error \
             FROM held \
         ), queued AS (",
        insert_pending!(),
        ") SELECT (SELECT count(*) FROM held) AS rows, \
                  (SELECT count(pg_notify('kck_jobs', '')) FROM held) AS notified"
    );

    /// Keeps a job held under its claim as failed. Binds: error, id, token.
    FailJob = "UPDATE kck_jobs SET status = 'failed', attempts = attempts + 1, error = {}, \
                   worker = NULL, lease_until = NULL \
               WHERE id = {} AND token = {} AND status = 'running'";

    /// When a worker should look again. Binds: none.
    NextDue = "SELECT least( \
             (SELECT min(due_at) FROM kck_jobs WHERE status = 'pending'), \
             (SELECT min(lease_until) FROM kck_jobs WHERE status = 'running') \
         ) AS due";

    /// The jobs kept as failed. Binds: none.
    FailedJobs = "SELECT key, attempts, COALESCE(error, '') AS error, reasons \
                  FROM kck_jobs WHERE status = 'failed' ORDER BY key, id";
}

/// How many rows a statement touched, and how many notifications it sent.
#[derive(Debug, QueryableByName)]
pub(crate) struct RowsRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) rows: i64,
    #[diesel(sql_type = BigInt)]
    #[allow(dead_code)]
    pub(crate) notified: i64,
}

/// A claimed job.
#[derive(Debug, QueryableByName)]
pub(crate) struct ClaimedRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Text)]
    pub(crate) key: String,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) due_at: PgTimestamp,
    #[diesel(sql_type = SmallInt)]
    pub(crate) priority: i16,
    #[diesel(sql_type = Array<Text>)]
    pub(crate) reasons: Vec<String>,
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
    #[diesel(sql_type = BigInt)]
    pub(crate) token: i64,
}

/// A job id.
#[derive(Debug, QueryableByName)]
pub(crate) struct IdRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
}

/// The next due time.
#[derive(Debug, QueryableByName)]
pub(crate) struct DueRow {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(crate) due: Option<PgTimestamp>,
}

/// A failed job.
#[derive(Debug, QueryableByName)]
pub(crate) struct FailedRow {
    #[diesel(sql_type = Text)]
    pub(crate) key: String,
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
    #[diesel(sql_type = Text)]
    pub(crate) error: String,
    #[diesel(sql_type = Array<Text>)]
    pub(crate) reasons: Vec<String>,
}
