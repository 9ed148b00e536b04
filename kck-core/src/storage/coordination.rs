//! The coordination port: how caches sharing a store hear of each other's
//! writes and take turns computing a product.

use std::sync::Weak;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::common::{StoreError, Version};
use crate::clock::Timestamp;
use crate::key::Key;

/// What a store shared by several caches (processes on one database, or
/// caches on one [`MemoryStore`](crate::storage::MemoryStore)) does for them: it
/// tells every cache about the writes of the others ([`Coordination::watch`])
/// and lets one cache compute a missing product while the others wait for
/// it ([`Coordination::acquire_lease`]).
///
/// Optional: every method has a default that suits a store serving one
/// cache, which is what [`Storage::new`](crate::storage::Storage::new)
/// assumes when it is given no coordination.
pub trait Coordination: Send + Sync + 'static {
    /// Registers a cache to be told about every write, removal and lease
    /// release, its own included, for as long as `watcher` lives. Default:
    /// nothing to tell.
    fn watch(&self, watcher: Weak<dyn ChangeWatcher>) {
        let _ = watcher;
    }

    /// Takes the lease to compute `key` for `ttl`, unless another holder
    /// has it. Default: [`Lease::NotShared`].
    fn acquire_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease, StoreError>> {
        let _ = (key, holder, ttl);
        Box::pin(std::future::ready(Ok(Lease::NotShared)))
    }

    /// Extends a lease `holder` holds; `false` if it no longer holds it.
    fn renew_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = (key, holder, ttl);
        Box::pin(std::future::ready(Ok(true)))
    }

    /// Gives a lease back and tells the watchers.
    fn release_lease<'a>(
        &'a self,
        key: &'a Key,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = (key, holder);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Records that a cache running `code_version` of `primer`, started
    /// at `started_at`, is there at `now` (a code version keeps its latest
    /// start and its latest `now`), and returns the newest code version of
    /// `primer` among those there within [`CODE_VERSION_TTL`] of `now`: the
    /// one whose latest start is the latest (on a tie, the greater
    /// version).
    ///
    /// The rule of rolling deploys: a cache whose code is not the newest
    /// computes over an entry of other code without storing the result (it
    /// serves it from its memory), so that old and new code do not
    /// overwrite each other's products, and their dependents', back and
    /// forth. A rollback is the newest start again, and wins; a version
    /// whose caches are gone stops counting after [`CODE_VERSION_TTL`].
    /// Default: `code_version` (a store serving one cache has no other
    /// code).
    fn newest_code_version<'a>(
        &'a self,
        primer: &'a str,
        code_version: &'a str,
        started_at: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        let _ = (primer, started_at, now);
        Box::pin(std::future::ready(Ok(code_version.to_owned())))
    }

    /// Returns once this store has told its watchers of every change
    /// committed before the call, by any process: a barrier for tests that
    /// write in one cache and read through another. A store that tells its
    /// watchers as it writes has nothing to wait for. Default: returns at
    /// once.
    fn sync(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// How long a code version counts for
/// [`Coordination::newest_code_version`] after a cache running it was last
/// there. A cache says it is there whenever it meets an entry of other
/// code, and at least every [`CODE_VERSION_ANNOUNCE`] while it computes.
pub const CODE_VERSION_TTL: Duration = Duration::from_secs(10 * 60);

/// How often a computing cache says its code version is still there.
pub const CODE_VERSION_ANNOUNCE: Duration = Duration::from_secs(60);

/// The coordination of a store that serves one cache: nothing to tell, no
/// lease needed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Alone;

impl Coordination for Alone {}

/// What a shared store tells each cache about writes, its own and others'.
pub trait ChangeWatcher: Send + Sync + 'static {
    /// The entry of `key` was written with another value, patched or
    /// removed; `version` is the version of that change. A write that keeps
    /// the value (the same content hash) may go unreported: caches check a
    /// copy whose deadlines passed with the store.
    fn changed(&self, key: &Key, version: Version);

    /// The lease on `key` was given back: whoever waits for it may go on.
    fn released(&self, key: &Key);

    /// `false`: changes may go unreported from now on (the store lost its
    /// notification channel); `true`: they are reported again.
    fn tracking(&self, tracked: bool);
}

/// The answer of [`Coordination::acquire_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The store serves this cache alone: no lease is needed, and there is
    /// nothing to renew or release.
    NotShared,
    /// The caller holds the lease, and must renew it while it computes and
    /// release it when done.
    Acquired,
    /// Another holder has it, for at most this long.
    Held {
        /// The time left on the other holder's lease.
        remaining: Duration,
    },
}
