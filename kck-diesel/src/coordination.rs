//! The coordination port on PostgreSQL: compute leases in `kck_leases`,
//! change notices by `LISTEN`/`NOTIFY`.
use std::sync::Weak;
use std::time::Duration;

use futures_util::future::BoxFuture;
use kck_core::Key;
use kck_core::storage::{ChangeWatcher, Coordination, Lease, StoreError};

use crate::convert::{key_bind as text, micros};
use crate::sql::{AcquireLease, LeaseRow, ReleaseLease, ReleaseRow, RenewLease};
use crate::statement::Bind;
use crate::store::PgStore;

impl Coordination for PgStore {
    fn watch(&self, watcher: Weak<dyn ChangeWatcher>) {
        self.watchers().add(watcher);
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                text(key),
                Bind::Text(holder.to_owned()),
                Bind::BigInt(micros(ttl)),
                text(key),
            ];
            let row: LeaseRow = self.run_one::<AcquireLease, _>(binds).await?;
            Ok(if row.acquired > 0 {
                Lease::Acquired
            } else {
                let remaining = row.remaining.unwrap_or(0).unsigned_abs();
                Lease::Held {
                    remaining: Duration::from_micros(remaining),
                }
            })
        })
    }

    fn renew_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                Bind::BigInt(micros(ttl)),
                text(key),
                Bind::Text(holder.to_owned()),
            ];
            Ok(self.execute::<RenewLease>(binds).await? == 1)
        })
    }

    fn release_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let binds = vec![text(key), Bind::Text(holder.to_owned())];
            let _: Vec<ReleaseRow> = self.run::<ReleaseLease, _>(binds).await?;
            Ok(())
        })
    }
}
