//! Augment: updating a product in place from new information, instead of
//! recomputing it.
//!
//! A primer that can take a *delta* (a new sale, a corrected reading)
//! implements [`Augment`] and says so with `#[primer(augment, …)]`. Then
//! [`Cache::augment`](crate::Cache::augment) reads the stored value, applies
//! the delta, and writes the result with compare-and-set on the version,
//! trying again from the newer value when another write won the race; where
//! there is no value to start from, or the primer's function declines, the
//! product is recomputed in full instead. Dependents learn of the change as
//! of any other (and are refreshed, or marked stale, as their `on_change`
//! says).
//!
//! A delta must describe a change the stored value does not include yet. A
//! full recompute that reads the source after the change, racing with the
//! delta, can count it twice: `verify_every` bounds how long such drift, or
//! a wrong augment function, can last (see [`Policy::verify_every`]).
//!
//! ```
//! use kck_core::{Augment, Ctx, primer};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Sale { cents: u64 }
//!
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! struct Totals { sales: u64, cents: u64 }
//!
//! #[primer(key = "totals/{store}", augment, verify_every = "1h")]
//! async fn totals(_ctx: &Ctx, store: u32) -> Result<Totals, std::convert::Infallible> {
//!     // The full computation: read every sale of the store, sum them.
//!     Ok(Totals::default())
//! }
//!
//! impl Augment for totals {
//!     type Delta = Sale;
//!
//!     fn augment(totals: &Totals, sale: &Sale) -> Option<Totals> {
//!         Some(Totals { sales: totals.sales + 1, cents: totals.cents + sale.cents })
//!     }
//! }
//! # async fn run(cache: kck_core::Cache) -> Result<(), kck_core::Error> {
//! cache.augment(&totals::key(7), &Sale { cents: 350 }).await?;
//! # Ok(()) }
//! ```
//!
//! [`Policy::verify_every`]: crate::Policy::verify_every

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::erased::ErasedValue;
use crate::primer::Primer;
use crate::store::Version;

/// How a primer applies a delta to its value. Implement it on the marker
/// type `#[primer]` generates, and add `augment` to the attribute.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has `augment` in its `#[primer]` attribute but does not implement `Augment`",
    note = "implement `kck_core::Augment` for `{Self}`: `type Delta` and `fn augment`"
)]
pub trait Augment: Primer {
    /// The new information: serializable, as it may wait in a queue.
    type Delta: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The value with `delta` applied, or `None` if this delta cannot be
    /// applied in place: then the product is recomputed in full.
    fn augment(value: &Self::Value, delta: &Self::Delta) -> Option<Self::Value>;
}

/// What [`Cache::augment`](crate::Cache::augment) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Augmented {
    /// The delta was applied to the stored value.
    Applied {
        /// The entry's version now (unchanged if the delta changed nothing).
        version: Version,
        /// Whether the value changed.
        changed: bool,
    },
    /// There was no value to apply it to, or the primer's function declined:
    /// the product was recomputed in full.
    Recomputed,
}

/// A primer's [`Augment`] implementation, erased: what the registry keeps.
#[derive(Clone, Copy)]
pub struct AugmentHandle {
    /// Applies a serialized delta to a value: `Ok(None)` when the primer
    /// declines, an error when the delta does not decode.
    pub(crate) apply: fn(&ErasedValue, &[u8]) -> Result<Option<ErasedValue>, serde_json::Error>,
}

impl AugmentHandle {
    /// The handle of `P`'s implementation; `#[primer(augment)]` registers
    /// it.
    pub const fn of<P: Augment>() -> Self {
        AugmentHandle { apply: apply::<P> }
    }
}

impl std::fmt::Debug for AugmentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AugmentHandle").finish_non_exhaustive()
    }
}

fn apply<P: Augment>(
    value: &ErasedValue,
    delta: &[u8],
) -> Result<Option<ErasedValue>, serde_json::Error> {
    let delta: P::Delta = serde_json::from_slice(delta)?;
    let value = value.downcast_ref::<P::Value>().ok_or_else(|| {
        <serde_json::Error as serde::de::Error>::custom(format!(
            "a value of another type is cached under primer `{}`",
            P::DEF.name
        ))
    })?;
    Ok(P::augment(value, &delta).map(|value| std::sync::Arc::new(value) as ErasedValue))
}
