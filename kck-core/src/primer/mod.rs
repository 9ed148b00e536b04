//! Primers: the recipes of product families.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::ctx::Ctx;
use crate::error::{BoxError, Error};
use crate::key::{Key, KeyParams};

pub(crate) mod registry;
mod typed_key;

pub use crate::schedule::{Schedule, ScheduleError};
pub use registry::{Registry, RegistryBuilder, RegistryError};
pub use typed_key::TypedKey;

/// A primer: the registered recipe for one family of data products.
///
/// `#[primer]` implements this trait on a marker type named after the
/// function, so `depends_on = [register_sales]` and
/// `Cache::peek(&register_sales::key(..))` name the primer as a type. You may
/// implement it by hand; then register it with
/// [`RegistryBuilder::register`](crate::primer::RegistryBuilder::register).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a kck primer",
    label = "not a primer",
    note = "primers are `async fn`s annotated with `#[kck_core::primer(...)]`"
)]
pub trait Primer: Sized + Send + Sync + 'static {
    /// The parameters, as a tuple in key-template order.
    type Params: KeyParams;
    /// The product.
    type Value: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The error the computation may return.
    type Error: Into<BoxError> + Send + 'static;

    /// The name: the first segment of every key. Equal to `DEF.name`; apart,
    /// so primers can name each other (and themselves) in `depends_on`.
    const NAME: &'static str;

    /// Name, key template, policy and dependencies.
    const DEF: &'static PrimerDef;

    /// Computes the product for `params`. `ctx` records what it reads.
    fn compute(ctx: &Ctx, params: Self::Params) -> BoxFuture<'_, Result<Self::Value, Self::Error>>;
}

/// The static description of a primer.
#[derive(Debug)]
#[non_exhaustive]
pub struct PrimerDef {
    /// The name: the first segment of every key of this primer.
    pub name: &'static str,
    /// The key template, such as `store_report/{store}/{day}`.
    pub template: &'static str,
    /// The parameter names, in key order.
    pub params: &'static [&'static str],
    /// When products are computed, refreshed, served stale or dropped.
    pub policy: Policy,
    /// The names of the primers this one may read.
    pub depends_on: &'static [&'static str],
    /// The version of the code; stored entries of another version are
    /// treated as missing.
    pub code_version: &'static str,
    /// Where the primer is defined, `file:line`.
    pub location: &'static str,
    /// The keys to keep warm before anyone asks, if the primer names a
    /// domain (`#[primer(domain = …)]`).
    pub domain: Option<DomainFn>,
}

/// A primer's domain: the keys of the products to keep warm, computed
/// (usually by reading another primer) through the cache.
pub type DomainFn = for<'a> fn(&'a Cache) -> BoxFuture<'a, Result<Vec<Key>, Error>>;

impl PrimerDef {
    /// A description; `#[primer]` calls this.
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        name: &'static str,
        template: &'static str,
        params: &'static [&'static str],
        policy: Policy,
        depends_on: &'static [&'static str],
        code_version: &'static str,
        location: &'static str,
    ) -> Self {
        PrimerDef {
            name,
            template,
            params,
            policy,
            depends_on,
            code_version,
            location,
            domain: None,
        }
    }

    /// Sets [`PrimerDef::domain`].
    pub const fn with_domain(mut self, domain: DomainFn) -> Self {
        self.domain = Some(domain);
        self
    }
}

/// The freshness policy of a primer. See the crate documentation for the
/// exact semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Recompute a product this long after its last successful compute.
    pub refresh: Option<Duration>,
    /// Soft expiry: after this, reads serve the value and trigger a refresh.
    pub stale_after: Option<Duration>,
    /// Hard expiry: after this, the value is never served.
    pub expire_after: Option<Duration>,
    /// Recompute on every read (concurrent reads share one computation).
    pub on_demand: bool,
    /// When a refresh fails, keep serving the last good value (until its hard
    /// expiry) instead of the error.
    pub stale_if_error: bool,
    /// What a change of a dependency does to this primer's products.
    pub on_change: OnChange,
    /// Whether a read of a missing product computes it.
    pub prime_on_miss: bool,
    /// A cron pattern (UTC): every product of the primer, and every key of
    /// its domain, is refreshed at each of its ticks, once across the
    /// cluster.
    pub schedule: Option<&'static str>,
    /// For a primer that augments its products in place: recompute an
    /// augmented product in full once its last full computation is this
    /// old, and compare. A difference is reported as
    /// [`EventKind::Drift`](crate::event::EventKind::Drift) and the recomputed
    /// value replaces the augmented one.
    pub verify_every: Option<Duration>,
}

impl Policy {
    /// No expiry, refresh on dependency change, compute on a miss.
    pub const DEFAULT: Policy = Policy {
        refresh: None,
        stale_after: None,
        expire_after: None,
        on_demand: false,
        stale_if_error: false,
        on_change: OnChange::Refresh,
        prime_on_miss: true,
        schedule: None,
        verify_every: None,
    };

    /// Sets [`Policy::refresh`].
    pub const fn refresh(mut self, every: Duration) -> Self {
        self.refresh = Some(every);
        self
    }

    /// Sets [`Policy::stale_after`].
    pub const fn stale_after(mut self, after: Duration) -> Self {
        self.stale_after = Some(after);
        self
    }

    /// Sets [`Policy::expire_after`].
    pub const fn expire_after(mut self, after: Duration) -> Self {
        self.expire_after = Some(after);
        self
    }

    /// Sets [`Policy::on_demand`].
    pub const fn on_demand(mut self, yes: bool) -> Self {
        self.on_demand = yes;
        self
    }

    /// Sets [`Policy::stale_if_error`].
    pub const fn stale_if_error(mut self, yes: bool) -> Self {
        self.stale_if_error = yes;
        self
    }

    /// Sets [`Policy::on_change`].
    pub const fn on_change(mut self, on_change: OnChange) -> Self {
        self.on_change = on_change;
        self
    }

    /// Sets [`Policy::schedule`]. The pattern is checked when the registry
    /// is built (and by `#[primer]`, at compile time).
    pub const fn schedule(mut self, pattern: &'static str) -> Self {
        self.schedule = Some(pattern);
        self
    }

    /// Sets [`Policy::verify_every`].
    pub const fn verify_every(mut self, every: Duration) -> Self {
        self.verify_every = Some(every);
        self
    }

    /// Sets [`Policy::prime_on_miss`].
    pub const fn prime_on_miss(mut self, yes: bool) -> Self {
        self.prime_on_miss = yes;
        self
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::DEFAULT
    }
}

/// What happens to a product when a product it read changes value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnChange {
    /// Recompute it in the background as soon as possible.
    #[default]
    Refresh,
    /// Mark it stale: the next read serves it and triggers a refresh.
    Invalidate,
}

/// The `Result<Value, Error>` a primer function returns; lets `#[primer]`
/// accept aliases such as `anyhow::Result<T>`.
#[diagnostic::on_unimplemented(
    message = "a primer must return `Result<Value, Error>`, not `{Self}`",
    label = "not a `Result`"
)]
#[doc(hidden)]
pub trait PrimerOutput {
    /// The product.
    type Value;
    /// The error.
    type Error;
}

impl<V, E> PrimerOutput for Result<V, E> {
    type Value = V;
    type Error = E;
}
