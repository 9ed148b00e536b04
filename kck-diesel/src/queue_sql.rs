//! The SQL of the PostgreSQL queue, and the rows it returns.
//!
//! Claims take due jobs with `FOR UPDATE SKIP LOCKED`, so workers never wait
//! for each other nor take the same job; every claim gets a new token from a
//! sequence, and every later step on a job checks it. New jobs are announced
//! on the channel `kck_jobs`.

use diesel::QueryableByName;
use diesel::pg::data_types::PgTimestamp;
use diesel::pg::sql_types::Record;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, SmallInt, Text, Timestamptz};

use crate::statement::statements;

/// The channel new jobs are announced on.
pub(crate) const JOBS_CHANNEL: &str = "kck_jobs";

statements! {
    /// Queues jobs. Binds: keys, due times, priorities, reasons, deltas (as
    /// JSON arrays) (arrays of one element per request).
    Enqueue = concat!(
        "WITH requests AS ( \
             SELECT * FROM unnest({}::text[], {}::timestamptz[], {}::smallint[], {}::text[], {}::text[]) \
                 WITH ORDINALITY AS r(key, due_at, priority, reason, deltas, n) \
         ), jobs AS ( \
             SELECT key, min(due_at) AS due_at, max(priority) AS priority, \
                    array_agg(DISTINCT reason) AS reasons, 0 AS attempts, NULL::text AS error, \
                    COALESCE(( \
                        SELECT jsonb_agg(d.delta ORDER BY x.n, d.i) \
                        FROM requests x, jsonb_array_elements(x.deltas::jsonb) WITH ORDINALITY AS d(delta, i) \
                        WHERE x.key = requests.key \
                    ), '[]'::jsonb) AS deltas \
             FROM requests GROUP BY key \
         ), queued AS (",
        insert_pending!(),
        ") SELECT (SELECT count(*) FROM queued) AS rows, \
                  (SELECT count(pg_notify(concat('kck_jobs', current_setting('kck.channel_suffix', true)), '')) \
                   FROM (SELECT 1 FROM queued LIMIT 1) AS queued_any) AS notified"
    );

    /// Completes the jobs done under the claims given, then claims due
    /// jobs: first those whose claim ran out (but for the ones just
    /// completed), then pending ones in priority order whose key has no
    /// other job running, each through its index. (A pending job is made
    /// only after the key's earlier job was claimed, so the snapshot that
    /// sees it sees that job running.) One row for each job claimed, or a single row of nulls if
    /// none was; every row lists the jobs completed. Binds: done ids, done
    /// tokens, now, done ids, limit, now, limit, limit, worker, now, lease
    /// in microseconds.
    ClaimJobs = "WITH done AS ( \
             DELETE FROM kck_jobs WHERE status = 'running' \
                 AND (id, token) IN (SELECT * FROM unnest({}::bigint[], {}::bigint[])) \
             RETURNING id \
         ), expired AS ( \
             SELECT id FROM kck_jobs WHERE status = 'running' AND lease_until <= {} \
                 AND id <> ALL({}::bigint[]) \
             ORDER BY lease_until LIMIT {} FOR UPDATE SKIP LOCKED \
         ), pending AS ( \
             SELECT id FROM kck_jobs AS p WHERE status = 'pending' AND due_at <= {} \
                 AND NOT EXISTS ( \
                     SELECT 1 FROM kck_jobs AS r WHERE r.key = p.key AND r.status = 'running' \
                         AND r.id NOT IN (SELECT id FROM done)) \
             ORDER BY priority DESC, due_at, id LIMIT {} FOR UPDATE SKIP LOCKED \
         ), candidates AS ( \
             SELECT id FROM expired UNION ALL SELECT id FROM pending LIMIT {} \
         ), claimed AS ( \
             UPDATE kck_jobs AS j SET status = 'running', token = nextval('kck_claims'), \
                 worker = {}, lease_until = {} + {} * interval '1 microsecond' \
             FROM candidates AS c WHERE j.id = c.id \
             RETURNING j.id, j.key, j.due_at, j.priority, j.reasons, j.attempts, j.token, j.deltas \
         ) \
         SELECT (SELECT COALESCE(array_agg(id), ARRAY[]::bigint[]) FROM done) AS done, \
                c.id, c.key, c.due_at, c.priority, c.reasons, c.attempts, c.token, \
                c.deltas::text AS deltas \
         FROM (SELECT 1) AS one LEFT JOIN claimed AS c ON true \
         ORDER BY c.priority DESC, c.due_at, c.id";

    /// Extends leases still held. Binds: now, lease in microseconds, job
    /// ids, tokens.
    ExtendJobs = "UPDATE kck_jobs SET lease_until = {} + {} * interval '1 microsecond' \
         WHERE status = 'running' \
           AND (id, token) IN (SELECT * FROM unnest({}::bigint[], {}::bigint[])) \
         RETURNING id";

    /// Removes jobs done under their claims. Binds: ids, tokens.
    CompleteJobs = "DELETE FROM kck_jobs WHERE status = 'running' \
             AND (id, token) IN (SELECT * FROM unnest({}::bigint[], {}::bigint[])) \
         RETURNING id";

    /// Puts a job held under its claim back as pending, merging it into its
    /// key's pending job. Binds: id, token, due time (null: keep), attempts
    /// to add, error (null: keep).
    RequeueJob = concat!(
        "WITH held AS ( \
             DELETE FROM kck_jobs WHERE id = {} AND token = {} AND status = 'running' \
             RETURNING key, due_at, priority, reasons, attempts, error, deltas \
         ), jobs AS ( \
             SELECT key, COALESCE({}, due_at) AS due_at, priority, reasons, \
                    attempts + {} AS attempts, COALESCE({}, error) AS error, deltas \
             FROM held \
         ), queued AS (",
        insert_pending!(),
        ") SELECT (SELECT count(*) FROM held) AS rows, \
                  (SELECT count(pg_notify(concat('kck_jobs', current_setting('kck.channel_suffix', true)), '')) FROM held) AS notified"
    );

    /// Keeps a job held under its claim as failed. Binds: error, id, token.
    FailJob = "UPDATE kck_jobs SET status = 'failed', attempts = attempts + 1, error = {}, \
                   worker = NULL, lease_until = NULL \
               WHERE id = {} AND token = {} AND status = 'running'";

    /// When a worker should look again. Binds: none.
    NextDue = "SELECT least( \
             (SELECT due_at FROM kck_jobs AS p WHERE status = 'pending' \
                  AND NOT EXISTS (SELECT 1 FROM kck_jobs AS r \
                                  WHERE r.key = p.key AND r.status = 'running') \
                  ORDER BY due_at LIMIT 1), \
             (SELECT lease_until FROM kck_jobs WHERE status = 'running' ORDER BY lease_until LIMIT 1) \
         ) AS due";

    /// Jobs waiting to run, in claim order. Binds: limit.
    PendingJobs = "SELECT id, key, due_at, priority, reasons, attempts, error, \
                          jsonb_array_length(deltas)::bigint AS deltas \
                   FROM kck_jobs WHERE status = 'pending' \
                   ORDER BY priority DESC, due_at, id LIMIT {}";

    /// The jobs kept as failed, by key then id. Binds: limit.
    FailedJobs = "SELECT id, key, attempts, COALESCE(error, '') AS error, reasons \
                  FROM kck_jobs WHERE status = 'failed' ORDER BY key, id LIMIT {}";

    /// Claimed jobs, earliest lease end first. Binds: limit.
    RunningJobs = "SELECT id, key, COALESCE(worker, '') AS worker, lease_until, due_at, priority, \
                          reasons, attempts, jsonb_array_length(deltas)::bigint AS deltas \
                   FROM kck_jobs WHERE status = 'running' \
                   ORDER BY lease_until, id LIMIT {}";

    /// Puts a failed job back as pending, its attempts counted from zero,
    /// merging it into its key's pending job. Binds: id, due time.
    RetryJob = concat!(
        "WITH held AS ( \
             DELETE FROM kck_jobs WHERE id = {} AND status = 'failed' \
             RETURNING key, priority, reasons, deltas \
         ), jobs AS ( \
             SELECT key, {}::timestamptz AS due_at, priority, reasons, 0 AS attempts, \
                    NULL::text AS error, deltas \
             FROM held \
         ), queued AS (",
        insert_pending!(),
        ") SELECT (SELECT count(*) FROM held) AS rows, \
                  (SELECT count(pg_notify(concat('kck_jobs', current_setting('kck.channel_suffix', true)), '')) FROM held) AS notified"
    );

    /// How many jobs are in each state. Binds: none.
    CountJobs = "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, \
                        count(*) FILTER (WHERE status = 'running') AS running, \
                        count(*) FILTER (WHERE status = 'failed') AS failed \
                 FROM kck_jobs";

    /// Every job of a key. Binds: key.
    JobsOf = "SELECT id, key, status, due_at, priority, reasons, attempts, error, \
                     COALESCE(worker, '') AS worker, lease_until, \
                     jsonb_array_length(deltas)::bigint AS deltas \
              FROM kck_jobs WHERE key = {} ORDER BY id";

    /// Removes a pending or failed job. Binds: id.
    CancelJob = "DELETE FROM kck_jobs WHERE id = {} AND status IN ('pending', 'failed')";
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

/// The jobs completed, and one claimed (none on the row of nulls).
#[derive(Debug, QueryableByName)]
pub(crate) struct ClaimedRow {
    #[diesel(sql_type = Array<BigInt>)]
    pub(crate) done: Vec<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) key: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(crate) due_at: Option<PgTimestamp>,
    #[diesel(sql_type = Nullable<SmallInt>)]
    pub(crate) priority: Option<i16>,
    #[diesel(sql_type = Nullable<Array<Text>>)]
    pub(crate) reasons: Option<Vec<String>>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub(crate) attempts: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) token: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) deltas: Option<String>,
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
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Text)]
    pub(crate) key: String,
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
    #[diesel(sql_type = Text)]
    pub(crate) error: String,
    #[diesel(sql_type = Array<Text>)]
    pub(crate) reasons: Vec<String>,
}

/// A job waiting to run.
#[derive(Debug, QueryableByName)]
pub(crate) struct PendingRow {
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
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) error: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub(crate) deltas: i64,
}

/// A claimed job.
#[derive(Debug, QueryableByName)]
pub(crate) struct RunningRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Text)]
    pub(crate) key: String,
    #[diesel(sql_type = Text)]
    pub(crate) worker: String,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) lease_until: PgTimestamp,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) due_at: PgTimestamp,
    #[diesel(sql_type = SmallInt)]
    pub(crate) priority: i16,
    #[diesel(sql_type = Array<Text>)]
    pub(crate) reasons: Vec<String>,
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
    #[diesel(sql_type = BigInt)]
    pub(crate) deltas: i64,
}

/// A job of any status.
#[derive(Debug, QueryableByName)]
pub(crate) struct AnyJobRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Text)]
    pub(crate) key: String,
    #[diesel(sql_type = Text)]
    pub(crate) status: String,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) due_at: PgTimestamp,
    #[diesel(sql_type = SmallInt)]
    pub(crate) priority: i16,
    #[diesel(sql_type = Array<Text>)]
    pub(crate) reasons: Vec<String>,
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) error: Option<String>,
    #[diesel(sql_type = Text)]
    pub(crate) worker: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(crate) lease_until: Option<PgTimestamp>,
    #[diesel(sql_type = BigInt)]
    pub(crate) deltas: i64,
}

/// An [`AnyJobRow`] but its key, as a record: id, status, due_at,
/// priority, reasons, attempts, error, worker, lease_until, deltas.
pub(crate) type JobRecord = (
    i64,
    String,
    PgTimestamp,
    i16,
    Vec<String>,
    i32,
    Option<String>,
    String,
    Option<PgTimestamp>,
    i64,
);

/// The SQL type of a [`JobRecord`].
pub(crate) type JobRecordType = Record<(
    BigInt,
    Text,
    Timestamptz,
    SmallInt,
    Array<Text>,
    Integer,
    Nullable<Text>,
    Text,
    Nullable<Timestamptz>,
    BigInt,
)>;

impl AnyJobRow {
    /// The job of `key` that `record` describes.
    pub(crate) fn of_record(key: String, record: JobRecord) -> Self {
        let (id, status, due_at, priority, reasons, attempts, error, worker, lease_until, deltas) =
            record;
        AnyJobRow {
            id,
            key,
            status,
            due_at,
            priority,
            reasons,
            attempts,
            error,
            worker,
            lease_until,
            deltas,
        }
    }
}

/// How many jobs are in each state.
#[derive(Debug, QueryableByName)]
pub(crate) struct CountsRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) pending: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) running: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) failed: i64,
}
