//! # kck: data products that keep themselves fresh
//!
//! Dashboards, reports and API answers are often built from slow or remote
//! sources. kck turns the async functions that build them into *primers*
//! and serves their results from a cache that computes lazily, shares
//! concurrent computations, tracks dependencies and keeps products fresh.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use kck_core::{primer, Cache, Ctx};
//!
//! /// Raw sales of one register: the slow, remote source.
//! #[primer(key = "register_sales/{register}")]
//! async fn register_sales(_ctx: &Ctx, register: u32) -> Result<Vec<u64>, Infallible> {
//!     Ok(vec![u64::from(register) * 100, 250])
//! }
//!
//! /// A store's total, derived from its registers.
//! #[primer(key = "store_total/{store}", depends_on = [register_sales])]
//! async fn store_total(ctx: &Ctx, store: u32) -> Result<u64, kck_core::Error> {
//!     let mut total = 0;
//!     for register in [store * 10, store * 10 + 1] {
//!         // Read through `ctx`: the edge store_total/1 -> register_sales/10
//!         // is recorded, so a change of those sales refreshes this total.
//!         total += register_sales(ctx, register).await?.iter().sum::<u64>();
//!     }
//!     Ok(total)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder().build()?;
//! let total: Arc<u64> = store_total(&cache, 1).await?;
//! assert_eq!(*total, 1000 + 250 + 1100 + 250);
//! # Ok(()) }
//! ```
//!
//! ## Where things are
//!
//! The root holds what a primer author needs: [`primer`](macro@primer),
//! [`Cache`], [`CacheBuilder`], [`Ctx`], [`Scope`], [`Error`], [`Key`],
//! [`TypedKey`], [`KeyParam`] and [`Primer`]; [`prelude`] imports the
//! common ones at once. The rest is by role:
//!
//! | you are | you need |
//! |---|---|
//! | writing primers | the root, [`augment`] (update products in place), [`key`] (parameter types of your own) |
//! | wiring a service | [`CacheBuilder`], [`refresh`] (workers and the scheduler in processes of their own), [`event`] (listeners), [`clock`] |
//! | inspecting or registering primers by hand | [`primer`](mod@primer) (definitions, policies, the [`Registry`](primer::Registry)) |
//! | writing a store | [`storage`] (one trait per role, and the memory store) |
//! | matching errors | [`error`], [`value`] (why a value was refused) |
//! | operating it: what is cached, in what state, which jobs failed | [`inspect`] ([`Cache::inspect`]) |
//!
//! ## Primers and getters
//!
//! [`#[primer]`](macro@primer) goes on an `async fn(ctx: &Ctx, params…) ->
//! Result<V, E>`. It keeps the function's name for a *getter*,
//! `fn(scope: &impl Scope, params…) -> Result<Arc<V>, kck_core::Error>`,
//! that reads through the cache, and defines a marker type of the same name
//! that implements [`Primer`]: `depends_on = [register_sales]` names it, and
//! `register_sales::key(7)` builds a [`TypedKey`] for [`Cache::peek`],
//! [`Cache::set`], [`Cache::refresh`], [`Cache::invalidate`] and
//! [`Cache::remove`].
//!
//! Options: `key` (required: the name, then one `{placeholder}` per
//! parameter), `refresh`, `stale_after`, `expire_after` (durations such as
//! `"5m"`, checked at compile time), `on_demand`, `stale_if_error`,
//! `on_change = "refresh" | "invalidate"`, `depends_on = [primer, …]`,
//! `prime_on_miss = false`, `version = "…"`, `schedule = "<cron>"` (checked
//! at compile time), `domain = primer` (a parameterless primer listing the
//! parameter sets to keep warm), `augment` (the primer implements
//! [`Augment`]: see [`Cache::augment`]), `verify_every = "1h"` (with
//! `augment`), `crate = path`.
//!
//! ## The contract
//!
//! - **Miss**: a read of a missing product computes it, stores it and
//!   returns it. Concurrent reads of one key share one computation and its
//!   result, value or error: in one process, and across the caches that
//!   share a store (processes on one PostgreSQL database take a lease, and
//!   the others wait for the holder's value). Computations run on their
//!   own Tokio task: a caller that is cancelled leaves the others waiting
//!   for a computation that carries on, and a computation that panics
//!   becomes [`Error::Panicked`] for every waiter, and poisons nothing.
//! - **Soft expiry** (`stale_after`): a stale value is served at once and a
//!   refresh job is queued (one per key: requests merge). **Hard expiry** (`expire_after`): the value is never served;
//!   the read is a miss.
//! - **`on_demand`**: every read computes; reads that arrive while a
//!   computation runs share it.
//! - **Failed refreshes**: with `stale_if_error`, the last good value keeps
//!   being served until its hard expiry, the error is recorded on the entry
//!   and refreshes back off exponentially. Without it, a failed refresh
//!   expires the value, so the next read recomputes and reports the error.
//!   A failed first computation stores nothing.
//! - **Dependencies**: a primer reads others through its `ctx`, only those
//!   its `depends_on` lists ([`Error::UndeclaredDependency`]). A kck error
//!   from such a read, returned by the primer, reaches the caller as it is
//!   (its kind and key intact). When a value changes, the dependents that
//!   read another value are refreshed in the background
//!   (`on_change = "refresh"`) or marked stale (`"invalidate"`); a
//!   dependency that changes while a dependent computes makes it compute
//!   again. A recompute that yields an equal value (same content hash)
//!   touches nothing downstream. A cycle between products is
//!   [`Error::Cycle`], naming the path; it never hangs.
//! - **Versions**: every write bumps the entry's [`Version`]; computations
//!   write with compare-and-set on the version they started from, so one
//!   that lost a race to a newer write or an invalidation is discarded.
//! - **Code versions**: an entry computed by another version of the primer's
//!   code, or one whose value no longer decodes, is a miss, never an
//!   error. By default the code version is a hash of the function's tokens
//!   (attributes, signature, body) without its documentation: editing a
//!   doc comment or a `//` comment keeps the stored products, any other
//!   edit of the function retires them. The hash cannot see what the body
//!   calls; when a helper function, a constant or a dependency changes what
//!   the primer returns, set `version = "…"` by hand (and change it then).
//!
//! ## Keys
//!
//! A [`Key`] is `name/param/param`; parameters are typed ([`KeyParam`]),
//! escaped so a `/` in a value cannot address another key, and canonical, so
//! each key round-trips between its string and its typed parameters.
//! Workers and tools address products by string through
//! [`Cache::parse_key`], [`Cache::get_json`] and [`Cache::refresh_key`].
//! A key is at most [`MAX_KEY_LEN`] bytes (1 KiB, on every store: what
//! PostgreSQL's indexes and notifications carry); a longer one is
//! [`KeyError::TooLong`].
//!
//! ## Values
//!
//! Values are stored as JSON (serde), canonically: map keys sorted, so
//! equal values hash alike. A value that would not read back is refused at
//! write, on every store, with [`Error::Encode`] and an [`EncodeError`] that
//! names the cause, and nothing is stored: a NaN or infinite float
//! ([`EncodeError::NonFinite`], with its path, such as
//! `.sales[3].amount`), arrays and objects nested deeper than
//! [`MAX_VALUE_DEPTH`] (127, what serde_json reads back;
//! [`EncodeError::TooDeep`]), or a string holding the NUL character `\0`,
//! as a value, a `char` or a map key ([`EncodeError::Nul`], with its path:
//! PostgreSQL's `jsonb` cannot hold it, so no store keeps it; other control
//! characters are stored). Augment deltas are checked alike.
//! `-0.0` is stored as `0.0` (PostgreSQL's
//! `jsonb` has no negative zero), so every store reads back the same value.
//!
//! ## Stores
//!
//! A cache keeps serialized entries (JSON, with their metadata and
//! dependency edges) in a store, and decoded values in an in-process
//! memo in front of it, so a hit costs no I/O. A store is a few small
//! traits, one per role ([`storage`]: entries, timetable, coordination,
//! queue), bundled in a [`Storage`]. [`MemoryStore`] is the
//! default; `kck-diesel`'s `PgStore` keeps the cache in PostgreSQL, shared
//! by many processes. A shared store reports every write to every cache,
//! which drops its outdated memo copy; values are versioned across the
//! whole store, so a copy older than a known change is never installed.
//!
//! A read that starts once a computation delivered its result never joins
//! that computation: delivering and leaving the key to new readers are one
//! step. A computed value the store refuses for good (not an outage) is
//! [`Error::SaveFailed`] to its readers, and logged at `warn`. While the
//! store cannot be reached, reads are served what the memo holds, within
//! the bound of [`CacheBuilder::serve_stale_on_store_error`] and never past
//! a product's hard expiry.
//!
//! ## Keeping products fresh
//!
//! Refreshes are jobs in a durable [`Queue`]: the store's own
//! (PostgreSQL's `kck_jobs`, shared by every process) or a [`MemoryQueue`].
//! There is at most one pending job per key; a change queues its
//! dependents' jobs in the same write, so no trigger is lost if the process
//! dies right after. [`Worker`]s claim due jobs under a lease they keep
//! renewing, refresh the keys through the registry, and complete them;
//! failures retry with exponential back-off and jitter, then the job is kept
//! as failed with its error. A worker that died gives its jobs back when
//! their leases run out, and the claim token and the entry version fence
//! out anything it still tries to write. A job that runs past
//! [`WorkerBuilder::job_timeout`] has its computation stopped: whoever
//! waits for it gets [`Error::TimedOut`], and the key is free for the next
//! attempt. A refresh whose save loses to a write it is newer than (one
//! that kept the value, and so was not announced to this process) saves
//! over that write rather than dropping its value; writes newer than it
//! still win.
//!
//! A [`Scheduler`] turns time into jobs: `refresh = "5m"` refreshes each
//! live product every interval after its last computation (up to a tenth
//! early, spread by key, so products computed together do not all come due
//! together), `schedule = "0 6 * * *"` refreshes every product of the
//! primer at each tick of the cron pattern (UTC), and `domain` computes the
//! products a primer's domain lists before anyone asks. Products nobody has
//! read for a day (see [`SchedulerBuilder::idle_after`]) stop being
//! refreshed until they are read again. Schedulers sharing a store divide
//! the work, and each tick fires once across all of them.
//!
//! Every cache runs a worker and a scheduler of its own unless told not to
//! ([`CacheBuilder::local_worker`], [`CacheBuilder::local_scheduler`]); a
//! deployment may instead run them in processes of their own, on any
//! machine that reaches the store.
//!
//! ## Augmenting in place
//!
//! A primer that can take new information (a sale, a reading) implements
//! [`Augment`]: [`Cache::augment`] applies a delta to the stored value and
//! writes the result with compare-and-set on the version, trying again from
//! the newer value when another write won; with no value to start from, or
//! when the primer's function declines, the product is recomputed in full.
//! A dependent that implements [`AugmentFrom`] for it (and lists it in
//! `augment_from`) receives the deltas with its refresh job and is
//! augmented in turn, if the deltas lead without a gap from the value it
//! was computed from to the value now; otherwise it is recomputed.
//! `verify_every` recomputes augmented products in full now and then, and
//! reports ([`EventKind::Drift`]) and replaces a value that drifted.
//!
//! A delta must describe a change the stored value does not include yet: a
//! full recompute that reads the source after the change, racing with the
//! delta, can count it twice. Make deltas idempotent where you can (the
//! cash-register example skips a sale it already has), and let
//! `verify_every` bound the rest.
//!
//! ## Registration
//!
//! Primers register themselves through `inventory`; [`Registry::builder`]
//! registers them explicitly. Either way the registry is validated when the
//! cache is built: unique names, known dependencies, no cycles between
//! primers. A crate of primers that the binary never references is not
//! linked, and its primers are missing: call one of its getters, write
//! `use my_primers as _;`, or register them explicitly.
//!
//! ## Events and testing
//!
//! Every decision is an [`Event`], sent to `tracing` and to listeners given
//! to [`CacheBuilder::on_event`]. The `kck-testing` crate builds on them: a
//! mock clock, stubbed dependencies and assertions such as "this key was
//! computed exactly once".
//!
//! [`Augment`]: augment::Augment
//! [`AugmentFrom`]: augment::AugmentFrom
//! [`EncodeError`]: value::EncodeError
//! [`EncodeError::NonFinite`]: value::EncodeError::NonFinite
//! [`EncodeError::Nul`]: value::EncodeError::Nul
//! [`EncodeError::TooDeep`]: value::EncodeError::TooDeep
//! [`Event`]: event::Event
//! [`EventKind::Drift`]: event::EventKind::Drift
//! [`KeyError::TooLong`]: key::KeyError::TooLong
//! [`MAX_KEY_LEN`]: key::MAX_KEY_LEN
//! [`MAX_VALUE_DEPTH`]: value::MAX_VALUE_DEPTH
//! [`MemoryQueue`]: storage::MemoryQueue
//! [`MemoryStore`]: storage::MemoryStore
//! [`Queue`]: storage::Queue
//! [`Registry::builder`]: primer::Registry::builder
//! [`Scheduler`]: refresh::Scheduler
//! [`SchedulerBuilder::idle_after`]: refresh::SchedulerBuilder::idle_after
//! [`Storage`]: storage::Storage
//! [`Version`]: storage::Version
//! [`Worker`]: refresh::Worker
//! [`WorkerBuilder::job_timeout`]: refresh::WorkerBuilder::job_timeout

// The modules, lowest layer first (ARCHITECTURE.md; tests/architecture.rs
// checks that no module imports from a layer above its own).
mod backoff;
pub mod clock;
mod encode;
mod schedule;

pub mod key;

pub mod storage;

pub mod error;
pub mod event;

pub mod augment;
mod ctx;
mod erased;
pub mod primer;

mod cache;

pub mod inspect;
mod scheduler;
mod worker;

// What a primer author needs, at the root.
pub use cache::{Cache, CacheBuilder};
pub use ctx::{Ctx, Scope, ScopeRef};
pub use error::{Error, ErrorKind};
pub use key::{Key, KeyParam};
pub use primer::{Primer, TypedKey};

pub mod value {
    //! How values are stored: canonical JSON, checked at write.
    //!
    //! A value that would not read back is refused with
    //! [`Error::Encode`](crate::Error::Encode) and an [`EncodeError`]; see
    //! the [crate documentation](crate#values).

    pub use crate::encode::{EncodeError, MAX_VALUE_DEPTH};
}

pub mod refresh {
    //! Keeping products fresh in the background: [`Worker`]s run the
    //! queue's refresh jobs, the [`Scheduler`] turns time into jobs.
    //!
    //! Every cache runs one of each unless told not to
    //! ([`CacheBuilder::local_worker`](crate::CacheBuilder::local_worker),
    //! [`CacheBuilder::local_scheduler`](crate::CacheBuilder::local_scheduler));
    //! a deployment may run them in processes of their own instead.

    pub use crate::scheduler::{Scheduler, SchedulerBuilder, TickReport};
    pub use crate::worker::{Worker, WorkerBuilder};
}

pub mod prelude {
    //! The names a module of primers uses: `use kck_core::prelude::*;`.
    //!
    //! ```
    //! use kck_core::prelude::*;
    //!
    //! #[primer(key = "welcome/{name}")]
    //! async fn welcome(_ctx: &Ctx, name: String) -> Result<String, Error> {
    //!     Ok(format!("hello, {name}"))
    //! }
    //! ```

    pub use crate::augment::{Augment, AugmentFrom, Augmented};
    pub use crate::{Cache, Ctx, Error, Key, Primer, Scope, TypedKey};
    pub use kck_macros::primer;
}

/// Turns an `async fn` into a primer; see the [crate documentation](crate).
///
/// ```
/// use kck_core::{primer, Ctx};
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// struct Rates { eur_usd: f64 }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the rates service is down")]
/// struct RatesDown;
///
/// /// Exchange rates, refreshed every five minutes and served stale if the
/// /// service is down.
/// #[primer(key = "rates", refresh = "5m", expire_after = "1h", stale_if_error)]
/// async fn rates(_ctx: &Ctx) -> Result<Rates, RatesDown> {
///     Ok(Rates { eur_usd: 1.08 })
/// }
/// ```
pub use kck_macros::primer;

/// The code `#[primer]` generates names only this module. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::augment::AugmentHandle;
    pub use crate::cache::{Cache, get};
    pub use crate::ctx::Ctx;
    pub use crate::ctx::Scope;
    pub use crate::erased::PrimerHandle;
    pub use crate::error::Error;
    pub use crate::key::{Key, KeyParam, KeyWriter};
    pub use crate::primer::registry::Registration;
    pub use crate::primer::{OnChange, Policy, Primer, PrimerDef, PrimerOutput, TypedKey};
    pub use futures_util::future::BoxFuture;
    pub use inventory;

    /// Fails to compile, at the parameter's type, unless it is a
    /// [`KeyParam`].
    pub const fn assert_key_param<T: KeyParam>() {}
}
