//! The coordination port on PostgreSQL: compute leases in `kck_leases`,
//! change notices by `LISTEN`/`NOTIFY`.
use std::sync::Weak;
use std::time::Duration;

use futures_util::future::BoxFuture;
use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{CODE_VERSION_TTL, ChangeWatcher, Coordination, Lease, StoreError};

use crate::convert::{key_bind as text, micros, to_pg};
use crate::sql::{
    AcquireLease, CodeVersionRow, LeaseRow, NewestCodeVersion, NotifySync, ReleaseLease,
    ReleaseRow, RenewLease,
};
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

    fn newest_code_version<'a>(
        &'a self,
        primer: &'a str,
        code_version: &'a str,
        started_at: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move {
            let binds = vec![
                Bind::Text(primer.to_owned()),
                Bind::Text(code_version.to_owned()),
                Bind::Time(to_pg(started_at)),
                Bind::Time(to_pg(now)),
                Bind::Text(primer.to_owned()),
                Bind::Text(code_version.to_owned()),
                Bind::Time(to_pg(now - CODE_VERSION_TTL)),
            ];
            let row: CodeVersionRow = self.run_one::<NewestCodeVersion, _>(binds).await?;
            Ok(row.code_version)
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

    /// Sends a token on `kck_sync` and waits for this store's `LISTEN`
    /// connection to hear it: PostgreSQL delivers notifications in commit
    /// order, so every change committed before was passed on by then. At
    /// once while changes are not being heard (the caches then read
    /// through to the database).
    fn sync(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if !self.watchers().tracking() {
                return Ok(());
            }
            let (token, heard) = self.watchers().sync_token();
            let sent = self
                .execute::<NotifySync>(vec![Bind::Text(token.clone())])
                .await;
            if let Err(error) = sent {
                self.watchers().drop_sync(&token);
                return Err(error);
            }
            match tokio::time::timeout(SYNC_TIMEOUT, heard).await {
                Ok(Ok(())) => Ok(()),
                _ => {
                    self.watchers().drop_sync(&token);
                    Err(StoreError::unavailable(
                        "the LISTEN connection did not hear this store's sync notification",
                    ))
                }
            }
        })
    }
}

/// How long [`Coordination::sync`] waits for its token to come back.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
