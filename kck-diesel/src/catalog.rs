//! [`PgStore`] as a [`Catalog`]: pages and counts of `kck_entries`, each
//! read through the index on `(primer, key)` and bounded by the query's
//! scan or cap, so that a store of millions answers in milliseconds.

use diesel::QueryableByName;
use diesel::pg::sql_types::Record;
use diesel::sql_types::{Array, BigInt, Bool, Bytea, Nullable, Text};
use futures_util::future::BoxFuture;
use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{
    Catalog, Census, Entry, KeyJobs, Neighbour, ProductPage, ProductQuery, ProductRecord,
    ProductState, ProductSummary, StoreError, Version,
};

use crate::convert::{corrupt, parse_key, to_pg};
use crate::queue_sql::{AnyJobRow, JobRecord, JobRecordType};
use crate::sql::{EdgeRow, EntryRow, KeyRow};
use crate::statement::{Bind, Sql, statements};
use crate::store::PgStore;

/// The state at a bound instant (binds: now, now) of the entry `$e`, as
/// [`ProductState::of`] decides it; leases are judged by the database's
/// clock, as they are taken. The live leases are one uncorrelated
/// subquery, which PostgreSQL hashes once for a scan of many entries.
macro_rules! state_of {
    ($e:literal) => {
        concat!(
            "CASE WHEN ", $e, ".error_message IS NOT NULL THEN 'failing' \
                  WHEN ", $e, ".expires_at <= {}::timestamptz THEN 'expired' \
                  WHEN ", $e, ".key IN (SELECT l.key FROM kck_leases l \
                                        WHERE l.expires_at > clock_timestamp()) THEN 'computing' \
                  WHEN ", $e, ".stale_at <= {}::timestamptz THEN 'stale' \
                  ELSE 'fresh' END"
        )
    };
}

/// The columns of a [`SummaryRow`] but `value` and `state`, of the entry
/// `e`.
macro_rules! entry_columns {
    () => {
        "e.key, e.version, e.computed_at, e.changed_at, e.stale_at, e.refresh_at, e.expires_at, \
         e.content_hash, e.code_version, e.compute_micros, e.error_message, e.error_at, \
         e.error_attempts, e.read_at, pg_column_size(e.value)::bigint AS size"
    };
}

/// The columns of a [`SummaryRow`] but `value`, of the entry `e`. Binds:
/// now, now.
macro_rules! summary_columns {
    () => {
        concat!(entry_columns!(), ", ", state_of!("e"), " AS state")
    };
}

/// The entries at the other end of `e`'s edges, as an array of
/// `(key, version, state, current)` records: `$far` is the edge's column
/// naming them, `$near` the one naming `e`, `$seen` what a current edge
/// saw. Binds: now, now.
macro_rules! neighbours {
    ($far:literal, $near:literal, $seen:literal, $order:literal) => {
        concat!(
            "ARRAY(SELECT ROW(x.",
            $far,
            ", n.version, \
                              CASE WHEN n.key IS NOT NULL THEN ",
            state_of!("n"),
            " END, COALESCE(x.seen = ",
            $seen,
            ", false)) \
                   FROM kck_edges x LEFT JOIN kck_entries n ON n.key = x.",
            $far,
            " \
                   WHERE x.",
            $near,
            " = e.key ORDER BY x.",
            $order,
            ")"
        )
    };
}

/// A page: the entries `$scanned` selects (in listing order), each with
/// its state, those in the wanted state only, up to a limit. One pass over
/// the index on `(primer, key)` that stops once the page is full. Binds
/// after `$scanned`'s: now, now, state (nullable) twice, limit.
macro_rules! page {
    ($scanned:expr) => {
        concat!(
            "SELECT ''::text AS value, ",
            entry_columns!(),
            ", s.state FROM (",
            $scanned,
            ") AS e, LATERAL (SELECT ",
            state_of!("e"),
            " AS state) AS s \
             WHERE {}::text IS NULL OR s.state = {} \
             ORDER BY e.primer, e.key LIMIT {}"
        )
    };
}

/// The `$columns` of the entries a page examines, of every primer. Binds:
/// the cursor's primer and key ('' for the first page), how many.
macro_rules! scanned_all {
    ($columns:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM kck_entries WHERE (primer, key) > ({}, {}) \
             ORDER BY primer, key LIMIT {}"
        )
    };
}

/// The `$columns` of the entries a page examines, of one primer. Binds:
/// the primer, the cursor's key ('' for the first page), how many.
macro_rules! scanned_primer {
    ($columns:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM kck_entries WHERE primer = {} AND key > {} \
             ORDER BY primer, key LIMIT {}"
        )
    };
}

/// The keys of the entries `$scanned` selects from an offset on: a short
/// page asks for the last entry it examined and the one after (binds: as
/// `$scanned`'s, then the offset).
macro_rules! scan_end {
    ($scanned:expr) => {
        concat!(
            "SELECT key FROM (",
            $scanned,
            ") AS s ORDER BY primer, key OFFSET {}"
        )
    };
}

statements! {
    /// One entry as a page lists it. Binds: now, now, key.
    ProductOf = concat!(
        "SELECT ''::text AS value, ",
        summary_columns!(),
        " FROM kck_entries e WHERE e.key = {}"
    );

    /// One entry with its value, its neighbours and its jobs. Binds: now (six
    /// times), key.
    DetailOf = concat!(
        "SELECT e.value::text AS value, ",
        summary_columns!(),
        ", ",
        neighbours!("dependency", "dependent", "n.content_hash", "position"),
        " AS dependencies, ",
        neighbours!("dependent", "dependency", "e.content_hash", "dependent"),
        " AS dependents, \
         ARRAY(SELECT ROW(j.id, j.status, j.due_at, j.priority, j.reasons, j.attempts, j.error, \
                          COALESCE(j.worker, ''), j.lease_until, \
                          jsonb_array_length(j.deltas)::bigint) \
               FROM kck_jobs j WHERE j.key = e.key ORDER BY j.id) AS jobs \
         FROM kck_entries e WHERE e.key = {}"
    );

    /// Entries with their values and dependencies, in listing order.
    /// Binds: the cursor's primer and key ('' for the first page), how
    /// many.
    EntriesAfter = "SELECT e.key, e.version, e.value::text AS value, e.computed_at, e.changed_at, \
                    e.stale_at, e.refresh_at, e.expires_at, e.content_hash, e.code_version, \
                    e.compute_micros, e.error_message, e.error_at, e.error_attempts, e.read_at, \
                    ARRAY(SELECT ROW(d.dependency, d.seen) FROM kck_edges d \
                          WHERE d.dependent = e.key ORDER BY d.position) AS dependencies \
                    FROM kck_entries e WHERE (e.primer, e.key) > ({}, {}) \
                    ORDER BY e.primer, e.key LIMIT {}";

    /// A page of products of every primer.
    PageAll = page!(scanned_all!("*"));
    /// A page of one primer's products.
    PagePrimer = page!(scanned_primer!("*"));
    /// Where a short page of every primer ended.
    ScanEndAll = scan_end!(scanned_all!("primer, key"));
    /// Where a short page of one primer ended.
    ScanEndPrimer = scan_end!(scanned_primer!("primer, key"));

    /// A primer's entries per state, the first `cap` of them. Binds: now,
    /// now, primer, cap + 1, cap, cap.
    CensusOf = concat!(
        "WITH counted AS MATERIALIZED ( \
             SELECT state, row_number() OVER (ORDER BY key) AS n FROM ( \
                 SELECT e.key, ",
        state_of!("e"),
        " AS state FROM kck_entries e WHERE e.primer = {} ORDER BY e.key LIMIT {} \
             ) AS s \
         ) \
         SELECT state, count(*) FILTER (WHERE n <= {}) AS count, bool_or(n > {}) AS more \
         FROM counted GROUP BY state"
    );
}

/// An entry, its state and its size.
#[derive(Debug, QueryableByName)]
struct SummaryRow {
    #[diesel(embed)]
    entry: EntryRow,
    #[diesel(sql_type = BigInt)]
    size: i64,
    #[diesel(sql_type = Text)]
    state: String,
}

impl SummaryRow {
    fn into_summary(self) -> Result<ProductSummary, StoreError> {
        let state = state(&self.entry.key, &self.state)?;
        let stored = self.entry.into_entry()?;
        Ok(ProductSummary {
            key: stored.key,
            version: stored.version,
            meta: stored.meta,
            state,
            size: self.size.unsigned_abs(),
        })
    }
}

/// An entry, its value and what it read: `(key, seen)` in first-read order.
#[derive(Debug, QueryableByName)]
struct ExportRow {
    #[diesel(embed)]
    entry: EntryRow,
    #[diesel(sql_type = Array<Record<(Text, Nullable<Bytea>)>>)]
    dependencies: Vec<(String, Option<Vec<u8>>)>,
}

impl ExportRow {
    fn into_entry(self) -> Result<(Version, Entry), StoreError> {
        let dependencies = self
            .dependencies
            .into_iter()
            .map(|(key, seen)| EdgeRow { key, seen }.into_edge())
            .collect::<Result<Vec<_>, _>>()?;
        let stored = self.entry.into_entry()?;
        let entry = Entry {
            key: stored.key,
            value: stored.value,
            meta: stored.meta,
            dependencies,
        };
        Ok((stored.version, entry))
    }
}

/// A neighbour as `neighbours!` lists it: key, version, state, current.
type NeighbourRecord = (String, Option<i64>, Option<String>, bool);

/// The SQL type of `neighbours!`.
type NeighbourRecords = Array<Record<(Text, Nullable<BigInt>, Nullable<Text>, Bool)>>;

/// An entry, its value, its neighbours and its jobs.
#[derive(Debug, QueryableByName)]
struct DetailRow {
    #[diesel(embed)]
    summary: SummaryRow,
    #[diesel(sql_type = NeighbourRecords)]
    dependencies: Vec<NeighbourRecord>,
    #[diesel(sql_type = NeighbourRecords)]
    dependents: Vec<NeighbourRecord>,
    #[diesel(sql_type = Array<JobRecordType>)]
    jobs: Vec<JobRecord>,
}

impl DetailRow {
    fn into_record(mut self) -> Result<ProductRecord, StoreError> {
        let value = std::mem::take(&mut self.summary.entry.value);
        let value = serde_json::from_str(&value).map_err(|error| {
            corrupt(
                &self.summary.entry.key,
                format!("the stored value is not JSON: {error}"),
            )
        })?;
        let neighbours = |records: Vec<NeighbourRecord>| {
            records
                .into_iter()
                .map(|(key, version, state, current)| {
                    let stored = match (version, state) {
                        (Some(version), Some(text)) => {
                            Some((Version(version), self::state(&key, &text)?))
                        }
                        _ => None,
                    };
                    Ok(Neighbour {
                        key: parse_key(&key)?,
                        stored,
                        current,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        };
        let mut jobs = KeyJobs::default();
        for job in self.jobs {
            AnyJobRow::of_record(self.summary.entry.key.clone(), job).file(&mut jobs)?;
        }
        Ok(ProductRecord {
            jobs: Some(jobs),
            dependencies: neighbours(self.dependencies)?,
            dependents: neighbours(self.dependents)?,
            summary: self.summary.into_summary()?,
            value,
        })
    }
}

/// The count of one state.
#[derive(Debug, QueryableByName)]
struct CountRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = Bool)]
    more: bool,
}

fn state(key: &str, text: &str) -> Result<ProductState, StoreError> {
    text.parse()
        .map_err(|_| corrupt(key, format!("unknown state `{text}`")))
}

/// The binds that select the entries after a page's cursor: of its
/// primer, if it has one (a cursor of another primer starts the primer
/// afresh), else of every primer.
fn after_binds(query: &ProductQuery) -> [Bind; 2] {
    let after = |key: Option<&Key>| key.map_or_else(String::new, |key| key.as_str().to_owned());
    match &query.primer {
        Some(primer) => [
            Bind::Text(primer.clone()),
            Bind::Text(after(
                query.after.as_ref().filter(|key| key.primer() == primer),
            )),
        ],
        None => [
            Bind::Text(
                query
                    .after
                    .as_ref()
                    .map_or_else(String::new, |key| key.primer().to_owned()),
            ),
            Bind::Text(after(query.after.as_ref())),
        ],
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX - 1)
}

impl PgStore {
    /// A page, in one statement unless it comes back short of a state
    /// filter's limit: then a second, index-only, says where its scan ended.
    async fn page<P: Sql, E: Sql>(&self, query: &ProductQuery) -> Result<ProductPage, StoreError> {
        // Without a state filter every entry examined is listed: examine
        // one more than the page lists, to know whether any is left.
        let (examine, list) = match query.state {
            None => {
                let list = query.scan.min(query.limit);
                (list + 1, list)
            }
            Some(_) => (query.scan, query.limit),
        };
        let wanted = query.state.map(|state| state.name().to_owned());
        let mut binds = Vec::from(after_binds(query));
        binds.extend([
            Bind::BigInt(count(examine)),
            Bind::Time(to_pg(query.now)),
            Bind::Time(to_pg(query.now)),
            Bind::OptText(wanted.clone()),
            Bind::OptText(wanted),
            Bind::BigInt(count(list) + 1),
        ]);
        let rows: Vec<SummaryRow> = self.run::<P, _>(binds).await?;
        let mut products = rows
            .into_iter()
            .map(SummaryRow::into_summary)
            .collect::<Result<Vec<_>, StoreError>>()?;
        if products.len() > list {
            // Full: everything up to its last product was examined.
            products.truncate(list);
            let next = products.last().map(|product| product.key.clone());
            return Ok(ProductPage { products, next });
        }
        if query.state.is_none() {
            return Ok(ProductPage {
                products,
                next: None,
            });
        }
        // Short: it examined `scan` entries, or every one left. The next
        // page starts after the last examined, if another follows it.
        let mut binds = Vec::from(after_binds(query));
        binds.extend([
            Bind::BigInt(count(query.scan) + 1),
            Bind::BigInt(count(query.scan) - 1),
        ]);
        let ends: Vec<KeyRow> = self.run::<E, _>(binds).await?;
        let next = match ends.as_slice() {
            [last, _] => Some(parse_key(&last.key)?),
            _ => None,
        };
        Ok(ProductPage { products, next })
    }
}

impl Catalog for PgStore {
    fn products<'a>(
        &'a self,
        query: &'a ProductQuery,
    ) -> BoxFuture<'a, Result<ProductPage, StoreError>> {
        Box::pin(async move {
            if query.limit == 0 || query.scan == 0 {
                return Ok(ProductPage {
                    products: Vec::new(),
                    next: query.after.clone(),
                });
            }
            match query.primer {
                Some(_) => self.page::<PagePrimer, ScanEndPrimer>(query).await,
                None => self.page::<PageAll, ScanEndAll>(query).await,
            }
        })
    }

    fn entries<'a>(
        &'a self,
        after: Option<&'a Key>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(Version, Entry)>, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                Bind::Text(after.map_or_else(String::new, |key| key.primer().to_owned())),
                Bind::Text(after.map_or_else(String::new, |key| key.as_str().to_owned())),
                Bind::BigInt(count(limit)),
            ];
            let rows: Vec<ExportRow> = self.run::<EntriesAfter, _>(binds).await?;
            rows.into_iter().map(ExportRow::into_entry).collect()
        })
    }

    fn product<'a>(
        &'a self,
        key: &'a Key,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ProductSummary>, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                Bind::Time(to_pg(now)),
                Bind::Time(to_pg(now)),
                Bind::Text(key.as_str().to_owned()),
            ];
            let rows: Vec<SummaryRow> = self.run::<ProductOf, _>(binds).await?;
            rows.into_iter()
                .next()
                .map(SummaryRow::into_summary)
                .transpose()
        })
    }

    fn detail<'a>(
        &'a self,
        key: &'a Key,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ProductRecord>, StoreError>> {
        Box::pin(async move {
            let mut binds = vec![Bind::Time(to_pg(now)); 6];
            binds.push(Bind::Text(key.as_str().to_owned()));
            let rows: Vec<DetailRow> = self.run::<DetailOf, _>(binds).await?;
            rows.into_iter()
                .next()
                .map(DetailRow::into_record)
                .transpose()
        })
    }

    fn census<'a>(
        &'a self,
        primer: &'a str,
        now: Timestamp,
        cap: usize,
    ) -> BoxFuture<'a, Result<Census, StoreError>> {
        Box::pin(async move {
            let cap = i64::try_from(cap).unwrap_or(i64::MAX - 1);
            let binds = vec![
                Bind::Time(to_pg(now)),
                Bind::Time(to_pg(now)),
                Bind::Text(primer.to_owned()),
                Bind::BigInt(cap + 1),
                Bind::BigInt(cap),
                Bind::BigInt(cap),
            ];
            let rows: Vec<CountRow> = self.run::<CensusOf, _>(binds).await?;
            let mut census = Census {
                complete: true,
                ..Census::default()
            };
            for row in rows {
                census.add(state(primer, &row.state)?, row.count.unsigned_abs());
                census.complete &= !row.more;
            }
            Ok(census)
        })
    }
}
