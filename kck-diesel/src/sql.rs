//! The SQL of the PostgreSQL store, and the rows it returns.
//!
//! Every write is one statement: the entry, its edges and the `NOTIFY` that
//! tells other processes (when the value changed) commit together, and the
//! statement also reports the version written (or, on a conflict, the
//! version found).

use diesel::QueryableByName;
use diesel::pg::data_types::PgTimestamp;
use diesel::sql_types::{BigInt, Bool, Bytea, Integer, Nullable, Text, Timestamptz};

use crate::statement::statements;

/// The channel every write and lease release is announced on. The payload
/// is `<version> <key>` for a change, `! <key>` for a released lease. With
/// a schema of its own, a store's channels end in `.<schema>`, from the
/// session's `kck.channel_suffix` (see `Target::channel`).
pub(crate) const CHANNEL: &str = "kck_changes";

/// Merges the reasons of two jobs, each once, in first-seen order.
macro_rules! merged_reasons {
    () => {
        "ARRAY(SELECT r FROM unnest(j.reasons || EXCLUDED.reasons) WITH ORDINALITY AS t(r, n) \
               GROUP BY r ORDER BY min(n))"
    };
}

/// Inserts pending jobs from a `jobs(key, due_at, priority, reasons,
/// attempts, error, deltas)` CTE, merging each into its key's pending job
/// (its deltas after those already there).
macro_rules! insert_pending {
    () => {
        concat!(
            "INSERT INTO kck_jobs AS j (key, status, due_at, priority, reasons, attempts, error, deltas) \
             SELECT key, 'pending', due_at, priority, reasons, attempts, error, deltas FROM jobs \
             ON CONFLICT (key) WHERE status = 'pending' DO UPDATE SET \
                 due_at = LEAST(j.due_at, EXCLUDED.due_at), \
                 priority = GREATEST(j.priority, EXCLUDED.priority), \
                 reasons = ",
            merged_reasons!(),
            ", attempts = GREATEST(j.attempts, EXCLUDED.attempts), \
                 error = COALESCE(EXCLUDED.error, j.error), \
                 deltas = j.deltas || EXCLUDED.deltas \
             RETURNING 1"
        )
    };
}

/// The columns written by a save, in bind order after the key.
macro_rules! entry_columns {
    () => {
        "primer, value, version, computed_at, changed_at, stale_at, refresh_at, expires_at, \
         content_hash, code_version, compute_micros, error_message, error_at, error_attempts"
    };
}

/// The values of a save, after the key: 14 columns, 13 binds. The read
/// time (the 14th bind) is written apart: a save keeps the later one.
macro_rules! entry_values {
    () => {
        "{}, {}::jsonb, nextval('kck_versions'), {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}"
    };
}

/// What every write statement ends with: its edges (binds: the
/// dependencies as a text array, twice, then what was seen of each as a
/// bytea array), the refresh jobs of the dependents that saw another value
/// when the value changed (binds: the new content hash, twice, the jobs'
/// due time and their deltas, as a JSON array), and the report (bind: the key) with the `NOTIFY` that tells
/// other processes, sent only when the value changed (bind: the new content
/// hash): a write that keeps the value leaves every memo's copy right, and
/// what it moves (the deadlines, the version) each cache checks with the
/// store when its copy's deadlines pass.
macro_rules! write_tail {
    () => {
        concat!(
            "), unlinked AS ( \
                 DELETE FROM kck_edges \
                 WHERE dependent = (SELECT key FROM written) AND NOT (dependency = ANY({})) \
             ), linked AS ( \
                 INSERT INTO kck_edges (dependent, dependency, seen, position) \
                 SELECT w.key, d.dependency, d.seen, d.position::integer \
                 FROM written w, \
                      unnest({}::text[], {}::bytea[]) WITH ORDINALITY AS d(dependency, seen, position) \
                 ON CONFLICT (dependent, dependency) \
                 DO UPDATE SET seen = EXCLUDED.seen, position = EXCLUDED.position \
             ), dependents AS ( \
                 SELECT e.dependent AS key FROM kck_edges e, written w \
                 WHERE e.dependency = w.key AND e.seen IS DISTINCT FROM {} \
                   AND (SELECT content_hash FROM kck_entries WHERE key = w.key) IS DISTINCT FROM {} \
             ), jobs AS ( \
                 SELECT d.key, {}::timestamptz AS due_at, 0::smallint AS priority, \
                        ARRAY['dependency ' || w.key] AS reasons, 0 AS attempts, NULL::text AS error, \
                        {}::jsonb AS deltas \
                 FROM dependents d, written w \
             ), queued AS (",
            insert_pending!(),
            ") \
             SELECT (SELECT version FROM written) AS written, \
                    (SELECT version FROM kck_entries WHERE key = {}) AS current, \
                    (SELECT count(pg_notify(concat('kck_changes', current_setting('kck.channel_suffix', true)), w.version || ' ' || w.key)) FROM written w \
                     WHERE (SELECT content_hash FROM kck_entries WHERE key = w.key) IS DISTINCT FROM {}) AS notified, \
                    (SELECT count(pg_notify(concat('kck_jobs', current_setting('kck.channel_suffix', true)), '')) FROM (SELECT 1 FROM queued LIMIT 1) AS queued_any) AS jobs_notified"
        )
    };
}

/// The channel a store's sync barriers travel on: `<token>`.
pub(crate) const SYNC_CHANNEL: &str = "kck_sync";

statements! {
    /// Sends a sync barrier's token. Binds: the token.
    NotifySync = "SELECT pg_notify(concat('kck_sync', current_setting('kck.channel_suffix', true)), {})";

    /// The entry of a key, its value as JSON text.
    LoadEntry = "SELECT key, version, value::text AS value, computed_at, changed_at, stale_at, \
                 refresh_at, expires_at, content_hash, code_version, compute_micros, \
                 error_message, error_at, error_attempts, read_at \
                 FROM kck_entries WHERE key = {}";

    /// Saves whatever is there. Binds: key, 13 values, the read time, then
    /// the tail's.
    SaveAny = concat!(
        "WITH written AS ( INSERT INTO kck_entries AS e (key, ", entry_columns!(), ", read_at) ",
        "VALUES ({}, ", entry_values!(), ", {}) ",
        "ON CONFLICT (key) DO UPDATE SET primer = EXCLUDED.primer, value = EXCLUDED.value, \
         version = EXCLUDED.version, computed_at = EXCLUDED.computed_at, \
         changed_at = EXCLUDED.changed_at, stale_at = EXCLUDED.stale_at, \
         refresh_at = EXCLUDED.refresh_at, expires_at = EXCLUDED.expires_at, \
         content_hash = EXCLUDED.content_hash, code_version = EXCLUDED.code_version, \
         compute_micros = EXCLUDED.compute_micros, error_message = EXCLUDED.error_message, \
         error_at = EXCLUDED.error_at, error_attempts = EXCLUDED.error_attempts, \
         read_at = GREATEST(e.read_at, EXCLUDED.read_at), retired = false ",
        "RETURNING e.key, e.version ",
        write_tail!()
    );

    /// Saves only if there is no entry. Binds: as [`SaveAny`].
    SaveAbsent = concat!(
        "WITH written AS ( INSERT INTO kck_entries (key, ", entry_columns!(), ", read_at) ",
        "VALUES ({}, ", entry_values!(), ", {}) ",
        "ON CONFLICT (key) DO NOTHING RETURNING key, version ",
        write_tail!()
    );

    /// Saves only over the expected version. Binds: 13 values, the read
    /// time, key, the expected version, then the tail's.
    SaveOver = concat!(
        "WITH written AS ( UPDATE kck_entries AS e SET (", entry_columns!(), ") = ",
        "ROW(", entry_values!(), "), read_at = GREATEST(e.read_at, {}), retired = false ",
        "WHERE e.key = {} AND e.version = {} RETURNING e.key, e.version ",
        write_tail!()
    );

    /// Updates metadata, if the entry exists (and, when given, is at the
    /// expected version). Binds: stale_at, expires_at, then three times
    /// whether to set the error with its message, time and attempts, then
    /// key, expected version (nullable) twice, key.
    PatchEntry = "WITH written AS ( \
            UPDATE kck_entries SET \
                stale_at = LEAST(stale_at, {}), \
                expires_at = LEAST(expires_at, {}), \
                error_message = CASE WHEN {} THEN {} ELSE error_message END, \
                error_at = CASE WHEN {} THEN {} ELSE error_at END, \
                error_attempts = CASE WHEN {} THEN {} ELSE error_attempts END, \
                version = nextval('kck_versions') \
            WHERE key = {} AND ({}::bigint IS NULL OR version = {}) \
            RETURNING key, version \
        ) \
        SELECT (SELECT version FROM written) AS written, \
               (SELECT version FROM kck_entries WHERE key = {}) AS current, \
               (SELECT count(pg_notify(concat('kck_changes', current_setting('kck.channel_suffix', true)), version || ' ' || key)) FROM written) AS notified";

    /// Removes an entry and its edges to its dependencies. Binds: key, key.
    RemoveEntry = "WITH removed AS ( DELETE FROM kck_entries WHERE key = {} RETURNING key ), \
             unlinked AS ( DELETE FROM kck_edges WHERE dependent = {} ), \
             tombstone AS MATERIALIZED ( SELECT key, nextval('kck_versions') AS version FROM removed ) \
        SELECT (SELECT version FROM tombstone) AS version, \
               (SELECT count(pg_notify(concat('kck_changes', current_setting('kck.channel_suffix', true)), version || ' ' || key)) FROM tombstone) AS notified";

    /// The keys that read a key, and what they saw of it.
    Dependents = "SELECT dependent AS key, seen FROM kck_edges WHERE dependency = {} ORDER BY dependent";

    /// What a key read, in first-read order.
    Dependencies = "SELECT dependency AS key, seen FROM kck_edges WHERE dependent = {} ORDER BY position";

    /// Takes the due entries (see `Timetable::take_due_refreshes`) through the
    /// index on the refresh time. Binds: read_since twice, now, limit,
    /// until.
    TakeDueRefreshes = "WITH due AS ( \
            SELECT key, ({}::timestamptz IS NULL OR COALESCE(read_at >= {}, false)) AS live \
            FROM kck_entries WHERE refresh_at <= {} \
            ORDER BY refresh_at LIMIT {} FOR UPDATE SKIP LOCKED \
        ), taken AS ( \
            UPDATE kck_entries e SET \
                retired = NOT due.live, \
                refresh_at = CASE WHEN due.live THEN {}::timestamptz END \
            FROM due WHERE e.key = due.key \
            RETURNING e.key, due.live \
        ) \
        SELECT key, live FROM taken ORDER BY key";

    /// Fires a schedule's tick if it is due (see `Timetable::claim_tick`).
    /// Binds: name, name, next, now.
    ClaimTick = "WITH old AS ( SELECT 1 FROM kck_ticks WHERE name = {} ), \
             moved AS ( \
                 INSERT INTO kck_ticks AS t (name, next_at) VALUES ({}, {}) \
                 ON CONFLICT (name) DO UPDATE SET next_at = EXCLUDED.next_at \
                 WHERE t.next_at <= {} \
                 RETURNING 1 \
             ) \
        SELECT (SELECT count(*) FROM old) AS existed, (SELECT count(*) FROM moved) AS moved";

    /// The keys of a primer's entries. Binds: primer.
    KeysOf = "SELECT key FROM kck_entries WHERE primer = {} ORDER BY key";

    /// The content hashes of keys (as an edge's `seen`). Binds: keys.
    ContentHashes = "SELECT key, content_hash AS seen FROM kck_entries WHERE key = ANY({}::text[])";

    /// Records reads, locking the rows in key order so that concurrent
    /// reports cannot deadlock. Binds: keys, then the time twice.
    Touch = "WITH locked AS ( \
            SELECT key FROM kck_entries WHERE key = ANY({}) ORDER BY key FOR UPDATE \
        ) \
        UPDATE kck_entries e SET \
            read_at = GREATEST(e.read_at, {}), \
            refresh_at = CASE WHEN e.retired THEN {} ELSE e.refresh_at END, \
            retired = false \
        FROM locked WHERE e.key = locked.key";

    /// Takes the lease on a key if it is free, expired or already ours.
    /// Binds: key, holder, ttl in microseconds, key.
    AcquireLease = "WITH taken AS ( \
            INSERT INTO kck_leases AS l (key, holder, expires_at) \
            VALUES ({}, {}, clock_timestamp() + {} * interval '1 microsecond') \
            ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
            WHERE l.expires_at < clock_timestamp() OR l.holder = EXCLUDED.holder \
            RETURNING 1 \
        ) \
        SELECT (SELECT count(*) FROM taken) AS acquired, \
               (SELECT GREATEST(0, extract(epoch FROM expires_at - clock_timestamp()) * 1000000)::bigint \
                FROM kck_leases WHERE key = {}) AS remaining";

    /// Extends a lease its holder still holds. Binds: ttl in microseconds,
    /// key, holder.
    RenewLease = "UPDATE kck_leases SET expires_at = clock_timestamp() + {} * interval '1 microsecond' \
                  WHERE key = {} AND holder = {}";

    /// Gives a lease back and announces it. Binds: key, holder.
    ///
    /// The release never depends on the announcement: a payload of 8,000
    /// bytes or more makes `pg_notify` fail, which would roll the DELETE
    /// back and leave the lease to run out. Keys of at most `MAX_KEY_LEN`
    /// (1 KiB) always fit; a longer one (written before the limit) is
    /// released unannounced, and its waiters see it at their next recheck.
    ReleaseLease = "WITH released AS ( \
            DELETE FROM kck_leases WHERE key = {} AND holder = {} RETURNING key \
        ) \
        SELECT count(pg_notify(concat('kck_changes', current_setting('kck.channel_suffix', true)), '! ' || key)) AS notified FROM released \
        WHERE octet_length(key) < 7998";
}

/// A row of `kck_entries`.
#[derive(Debug, QueryableByName)]
pub(crate) struct EntryRow {
    #[diesel(sql_type = Text)]
    pub(crate) key: String,
    #[diesel(sql_type = BigInt)]
    pub(crate) version: i64,
    #[diesel(sql_type = Text)]
    pub(crate) value: String,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) computed_at: PgTimestamp,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) changed_at: PgTimestamp,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(crate) stale_at: Option<PgTimestamp>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(crate) refresh_at: Option<PgTimestamp>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(crate) expires_at: Option<PgTimestamp>,
    #[diesel(sql_type = Bytea)]
    pub(crate) content_hash: Vec<u8>,
    #[diesel(sql_type = Text)]
    pub(crate) code_version: String,
    #[diesel(sql_type = BigInt)]
    pub(crate) compute_micros: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) error_message: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(crate) error_at: Option<PgTimestamp>,
    #[diesel(sql_type = Integer)]
    pub(crate) error_attempts: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(crate) read_at: Option<PgTimestamp>,
}

/// An entry taken by `TakeDueRefreshes`.
#[derive(Debug, QueryableByName)]
pub(crate) struct DueRow {
    #[diesel(sql_type = Text)]
    pub(crate) key: String,
    #[diesel(sql_type = Bool)]
    pub(crate) live: bool,
}

/// What `ClaimTick` reports.
#[derive(Debug, QueryableByName)]
pub(crate) struct TickRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) existed: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) moved: i64,
}

/// A key.
#[derive(Debug, QueryableByName)]
pub(crate) struct KeyRow {
    #[diesel(sql_type = Text)]
    pub(crate) key: String,
}

/// What a write statement reports.
#[derive(Debug, QueryableByName)]
pub(crate) struct WriteRow {
    /// The version written, if the condition held.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) written: Option<i64>,
    /// The version before the statement.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) current: Option<i64>,
    #[diesel(sql_type = BigInt)]
    #[allow(dead_code)]
    pub(crate) notified: i64,
}

/// What a removal reports.
#[derive(Debug, QueryableByName)]
pub(crate) struct RemoveRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) version: Option<i64>,
    #[diesel(sql_type = BigInt)]
    #[allow(dead_code)]
    pub(crate) notified: i64,
}

/// One end of an edge, and what was seen of the dependency.
#[derive(Debug, QueryableByName)]
pub(crate) struct EdgeRow {
    #[diesel(sql_type = Text)]
    pub(crate) key: String,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub(crate) seen: Option<Vec<u8>>,
}

/// What a lease acquisition reports.
#[derive(Debug, QueryableByName)]
pub(crate) struct LeaseRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) acquired: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) remaining: Option<i64>,
}

/// What a lease release reports.
#[derive(Debug, QueryableByName)]
pub(crate) struct ReleaseRow {
    #[diesel(sql_type = BigInt)]
    #[allow(dead_code)]
    pub(crate) notified: i64,
}

statements! {
    /// Records that a cache of a code version of a primer, started then,
    /// is there now (a version keeps its latest start and its latest
    /// presence) and returns the newest version among those there since
    /// the cut-off: the latest start, then the greatest version. The
    /// insert's row is not yet visible to the statement's reads of the
    /// table: it comes from `RETURNING`. Binds: primer, code version,
    /// started at, now, primer, code version, cut-off.
    NewestCodeVersion = "WITH registered AS ( \
          INSERT INTO kck_code_versions (primer, code_version, started_at, seen_at) \
          VALUES ({}, {}, {}, {}) \
          ON CONFLICT (primer, code_version) DO UPDATE \
          SET started_at = greatest(kck_code_versions.started_at, excluded.started_at), \
              seen_at = greatest(kck_code_versions.seen_at, excluded.seen_at) \
          RETURNING code_version, started_at) \
        SELECT code_version FROM ( \
          SELECT code_version, started_at FROM kck_code_versions \
          WHERE primer = {} AND code_version <> {} AND seen_at >= {} \
          UNION ALL SELECT code_version, started_at FROM registered) AS versions \
        ORDER BY started_at DESC, code_version DESC LIMIT 1";
}

/// The newest code version of a primer.
#[derive(Debug, QueryableByName)]
pub(crate) struct CodeVersionRow {
    #[diesel(sql_type = Text)]
    pub(crate) code_version: String,
}
