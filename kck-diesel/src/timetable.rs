//! The timetable port on PostgreSQL: refresh times and reads on
//! `kck_entries`, schedule ticks in `kck_ticks`.

use futures_util::future::BoxFuture;
use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{DueRefreshes, StoreError, TickClaim, Timetable};

use crate::convert::{parse_key, to_pg};
use crate::sql::{ClaimTick, DueRow, KeyRow, KeysOf, TakeDueRefreshes, TickRow, Touch};
use crate::statement::Bind;
use crate::store::PgStore;

impl Timetable for PgStore {
    fn take_due_refreshes<'a>(
        &'a self,
        now: Timestamp,
        until: Timestamp,
        read_since: Option<Timestamp>,
        limit: usize,
    ) -> BoxFuture<'a, Result<DueRefreshes, StoreError>> {
        Box::pin(async move {
            let since = read_since.map(to_pg);
            let binds = vec![
                Bind::OptTime(since),
                Bind::OptTime(since),
                Bind::Time(to_pg(now)),
                Bind::BigInt(i64::try_from(limit).unwrap_or(i64::MAX)),
                Bind::Time(to_pg(until)),
            ];
            let rows: Vec<DueRow> = self.run::<TakeDueRefreshes, _>(binds).await?;
            let mut taken = DueRefreshes::default();
            for row in rows {
                let key = parse_key(&row.key)?;
                if row.live {
                    taken.refresh.push(key);
                } else {
                    taken.retired.push(key);
                }
            }
            Ok(taken)
        })
    }

    fn claim_tick<'a>(
        &'a self,
        name: &'a str,
        now: Timestamp,
        next: Timestamp,
    ) -> BoxFuture<'a, Result<TickClaim, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                Bind::Text(name.to_owned()),
                Bind::Text(name.to_owned()),
                Bind::Time(to_pg(next)),
                Bind::Time(to_pg(now)),
            ];
            let row: TickRow = self.run_one::<ClaimTick, _>(binds).await?;
            Ok(match (row.existed > 0, row.moved > 0) {
                (false, true) => TickClaim::Started,
                (true, true) => TickClaim::Fired,
                (_, false) => TickClaim::NotDue,
            })
        })
    }

    fn keys_of<'a>(&'a self, primer: &'a str) -> BoxFuture<'a, Result<Vec<Key>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<KeyRow> = self
                .run::<KeysOf, _>(vec![Bind::Text(primer.to_owned())])
                .await?;
            rows.into_iter().map(|row| parse_key(&row.key)).collect()
        })
    }

    fn touch<'a>(
        &'a self,
        keys: &'a [Key],
        at: Timestamp,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let keys = keys.iter().map(|key| key.as_str().to_owned()).collect();
            let binds = vec![
                Bind::Texts(keys),
                Bind::Time(to_pg(at)),
                Bind::Time(to_pg(at)),
            ];
            self.execute::<Touch>(binds).await?;
            Ok(())
        })
    }
}
