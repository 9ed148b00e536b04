//! Augment: updating a product in place from new information, instead of
//! recomputing it. See [`Augment`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::encode::{EncodeError, to_checked_json};
use crate::erased::ErasedValue;
use crate::primer::Primer;
use crate::storage::Version;

/// How a primer applies a delta (a new sale, a corrected reading) to its
/// value. Implement it on the marker type `#[primer]` generates, and add
/// `augment` to the attribute. Then [`Cache::augment`](crate::Cache::augment) reads the stored value, applies
/// the delta, and writes the result with compare-and-set on the version,
/// trying again from the newer value when another write won the race; where
/// there is no value to start from, or the primer's function declines, the
/// product is recomputed in full instead. Dependents learn of the change as
/// of any other; those that implement [`AugmentFrom`] for this primer are
/// augmented in turn, the others refreshed (or marked stale, as their
/// `on_change` says).
///
/// A delta must describe a change the stored value does not include yet. A
/// full recompute that reads the source after the change, racing with the
/// delta, can count it twice: `verify_every` bounds how long such drift, or
/// a wrong augment function, can last (see [`Policy::verify_every`]).
///
/// ```
/// use kck_core::augment::Augment;
/// use kck_core::{Ctx, primer};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Sale { cents: u64 }
///
/// #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// struct Totals { sales: u64, cents: u64 }
///
/// #[primer(key = "totals/{store}", augment, verify_every = "1h")]
/// async fn totals(_ctx: &Ctx, store: u32) -> Result<Totals, std::convert::Infallible> {
///     // The full computation: read every sale of the store, sum them.
///     Ok(Totals::default())
/// }
///
/// impl Augment for totals {
///     type Delta = Sale;
///
///     fn augment(totals: &Totals, sale: &Sale) -> Option<Totals> {
///         Some(Totals { sales: totals.sales + 1, cents: totals.cents + sale.cents })
///     }
/// }
/// # async fn run(cache: kck_core::Cache) -> Result<(), kck_core::Error> {
/// cache.augment(&totals::key(7), &Sale { cents: 350 }).await?;
/// # Ok(()) }
/// ```
///
/// [`Policy::verify_every`]: crate::primer::Policy::verify_every
#[diagnostic::on_unimplemented(
    message = "`{Self}` has `augment` in its `#[primer]` attribute but does not implement `Augment`",
    note = "implement `kck_core::augment::Augment` for `{Self}`: `type Delta` and `fn augment`"
)]
pub trait Augment: Primer {
    /// The new information: serializable, as it may wait in a queue.
    type Delta: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The value with `delta` applied, or `None` if this delta cannot be
    /// applied in place: then the product is recomputed in full.
    fn augment(value: &Self::Value, delta: &Self::Delta) -> Option<Self::Value>;
}

/// How a product that reads `U` turns a delta of `U` into a delta of its
/// own: a dependent that implements it (and lists `U` in
/// `#[primer(augment_from = [U])]`) is augmented when `U` is, instead of
/// recomputed.
///
/// The delta reaches the dependent through its refresh job, and is applied
/// only if the dependent's value was computed from the very value of `U`
/// the delta starts from (their content hashes are compared); otherwise,
/// or if `map` returns `None`, the dependent is recomputed as usual.
#[diagnostic::on_unimplemented(
    message = "`{Self}` lists `{U}` in `augment_from` but does not implement `AugmentFrom<{U}>`",
    note = "implement `kck_core::augment::AugmentFrom<{U}>` for `{Self}`: `fn map`"
)]
pub trait AugmentFrom<U: Augment>: Augment {
    /// This product's delta for `delta` of `U`, or `None` to recompute.
    fn map(delta: &U::Delta) -> Option<Self::Delta>;
}

/// Turns a serialized delta of one primer into a serialized delta of
/// another; `Ok(None)` when the dependent declines, an error when the delta
/// does not decode or the mapped one would not read back (see
/// [`EncodeError`]): the dependent is then recomputed instead.
pub type MapDelta = fn(&[u8]) -> Result<Option<Vec<u8>>, EncodeError>;

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
    /// Mappings from the deltas of the primers it reads.
    pub(crate) from: &'static [(&'static str, MapDelta)],
}

impl AugmentHandle {
    /// The handle of `P`'s implementation; `#[primer(augment)]` registers
    /// it.
    pub const fn of<P: Augment>() -> Self {
        AugmentHandle {
            apply: apply::<P>,
            from: &[],
        }
    }

    /// With the mappings of `P`'s [`AugmentFrom`] implementations, by the
    /// upstream primer's name; `#[primer(augment_from = [..])]` builds them
    /// with [`AugmentHandle::map`].
    pub const fn from(mut self, from: &'static [(&'static str, MapDelta)]) -> Self {
        self.from = from;
        self
    }

    /// The mapping of `P`'s [`AugmentFrom<U>`] implementation.
    pub const fn map<P: AugmentFrom<U>, U: Augment>() -> MapDelta {
        map::<P, U>
    }

    /// The mapping from deltas of the primer named `upstream`, if any.
    pub(crate) fn mapping(&self, upstream: &str) -> Option<MapDelta> {
        self.from
            .iter()
            .find(|(name, _)| *name == upstream)
            .map(|(_, map)| *map)
    }
}

fn map<P: AugmentFrom<U>, U: Augment>(delta: &[u8]) -> Result<Option<Vec<u8>>, EncodeError> {
    let delta: U::Delta = serde_json::from_slice(delta)?;
    P::map(&delta)
        .map(|mapped| to_checked_json(&mapped))
        .transpose()
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
