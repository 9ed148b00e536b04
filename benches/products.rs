//! The 1,000,000 products the catalog and admin benchmarks measure, and
//! raw queries on them: the baselines, prepared once per connection as
//! kck's own statements are.

#![allow(dead_code)]

use std::marker::PhantomData;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Text, Untyped};
use diesel_async::RunQueryDsl;
use kck_core::clock::Timestamp;
use kck_diesel::PgStore;
use kck_testing::postgres::TestDatabase;

/// How many products.
pub(crate) const PRODUCTS: u32 = 1_000_000;
/// Over how many primers: product `n` is `primer_{n % 10}/{n:07}`.
pub(crate) const PRIMERS: u32 = 10;

/// The text of a raw query, with a `{}` for each (text) bind parameter.
pub(crate) trait RawSql: Send + Sync + 'static {
    const SQL: &'static str;
}

/// A raw query with its text binds: one type per text, so that diesel
/// prepares it once per connection, as kck's own statements are.
pub(crate) struct Raw<S: RawSql> {
    binds: Vec<String>,
    sql: PhantomData<S>,
}

impl<S: RawSql> Raw<S> {
    pub(crate) fn new(binds: Vec<String>) -> Self {
        assert_eq!(binds.len(), S::SQL.matches("{}").count(), "{}", S::SQL);
        Raw {
            binds,
            sql: PhantomData,
        }
    }
}

impl<S: RawSql> QueryId for Raw<S> {
    type QueryId = S;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: RawSql> Query for Raw<S> {
    type SqlType = Untyped;
}

impl<S: RawSql> QueryFragment<Pg> for Raw<S> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        for (i, part) in S::SQL.split("{}").enumerate() {
            if i > 0 {
                out.push_bind_param::<Text, _>(&self.binds[i - 1])?;
            }
            out.push_sql(part);
        }
        Ok(())
    }
}

/// Declares raw queries: `Name = "SELECT ... {} ...";`.
macro_rules! raw_sql {
    ($( $(#[$doc:meta])* $name:ident = $sql:expr; )*) => {$(
        $(#[$doc])*
        struct $name;
        impl crate::products::RawSql for $name {
            const SQL: &'static str = $sql;
        }
    )*};
}

pub(crate) use raw_sql;

pub(crate) async fn raw<S: RawSql, R>(store: &PgStore, binds: &[&str]) -> Vec<R>
where
    R: QueryableByName<Pg> + Send + 'static,
{
    let mut conn = store.pool().get().await.expect("a connection");
    let query = Raw::<S>::new(binds.iter().map(|bind| (*bind).to_owned()).collect());
    query.load(&mut *conn).await.expect("the raw query runs")
}

/// Runs one statement on a connection of the store's pool.
pub(crate) async fn execute(store: &PgStore, sql: &str) {
    let mut conn = store.pool().get().await.expect("a connection");
    diesel::sql_query(sql)
        .execute(&mut *conn)
        .await
        .expect("executed");
}

/// `at` as SQL.
pub(crate) fn sql_time(at: Timestamp) -> String {
    format!(
        "to_timestamp({}::double precision / 1e6)",
        at.as_unix_micros()
    )
}

/// Fills `kck_entries` with `PRODUCTS` rows: product `n` is
/// `primer_{n % 10}/{n:07}`; by a hash of `n`, 1% failing, 1% expired, 10%
/// stale, the rest fresh at `now`. Two statements, one per core, together.
pub(crate) async fn fill(store: &PgStore, now: Timestamp) {
    let hour = Duration::from_secs(3600);
    let (computed, past, future, later) = (
        sql_time(now - hour),
        sql_time(now - Duration::from_secs(60)),
        sql_time(now + hour),
        sql_time(now + 24 * hour),
    );
    let half = PRODUCTS / 2;
    let halves = [(0, half - 1), (half, PRODUCTS - 1)].map(|(from, to)| {
        format!(
            "INSERT INTO kck_entries (key, primer, value, version, computed_at, changed_at, \
                 stale_at, refresh_at, expires_at, content_hash, code_version, compute_micros, \
                 error_message, error_at, error_attempts, read_at) \
             SELECT 'primer_' || (n % {PRIMERS}) || '/' || lpad(n::text, 7, '0'), \
                    'primer_' || (n % {PRIMERS}), \
                    jsonb_build_object('id', n, 'total', (n * 37 % 100000) / 100.0, \
                        'currency', 'EUR', 'label', 'product number ' || n, 'lines', n % 7), \
                    nextval('kck_versions'), {computed}, {computed}, \
                    CASE WHEN h BETWEEN 20 AND 29 THEN {past} ELSE {future} END, \
                    NULL, \
                    CASE WHEN h = 13 THEN {past} ELSE {later} END, \
                    decode(md5(n::text), 'hex'), 'v1', 1000 + n % 5000, \
                    CASE WHEN h = 7 THEN 'upstream timed out' END, \
                    CASE WHEN h = 7 THEN {past} END, \
                    CASE WHEN h = 7 THEN 1 ELSE 0 END, \
                    {computed} \
             FROM (SELECT n, mod(abs(hashint4(n)::bigint), 100) AS h \
                   FROM generate_series({from}, {to}) AS n) AS g"
        )
    });
    let [first, second] = halves;
    tokio::join!(execute(store, &first), execute(store, &second));
    // As a long-lived table would be: visible to index-only scans, and no
    // autovacuum of the fill in the middle of the measures.
    execute(store, "VACUUM ANALYZE kck_entries").await;
}

/// A new database filled with the products at `now`, and how long the
/// fill took; or `None` (said on stderr) without PostgreSQL. Keep the database: dropping it drops the
/// products.
pub(crate) async fn filled(now: Timestamp) -> Option<(TestDatabase, PgStore, Duration)> {
    let Some(db) = TestDatabase::create().await else {
        eprintln!("no PostgreSQL: nothing measured");
        return None;
    };
    let store = PgStore::connect(db.url()).await.expect("connects");
    let started = std::time::Instant::now();
    fill(&store, now).await;
    let took = started.elapsed();
    println!("filled {PRODUCTS} products in {took:.1?}");
    Some((db, store, took))
}
