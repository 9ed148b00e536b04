//! Type erasure, in one place: a primer's typed functions behind plain
//! function pointers, so the cache can hold primers of every type in one
//! registry and work on them by key.

use std::any::{Any, TypeId};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::augment::AugmentHandle;
use crate::ctx::Ctx;
use crate::encode::{self, EncodeError};
use crate::error::Error;
use crate::key::{self, Key, KeyError};
use crate::primer::{Primer, PrimerDef};

/// A product value of any primer's type.
pub(crate) type ErasedValue = Arc<dyn Any + Send + Sync>;

/// A primer's typed functions, erased.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct PrimerHandle {
    pub(crate) def: &'static PrimerDef,
    pub(crate) primer_type: fn() -> TypeId,
    pub(crate) compute: fn(Arc<Ctx>) -> BoxFuture<'static, Result<ErasedValue, Error>>,
    pub(crate) encode: fn(&ErasedValue) -> Result<Vec<u8>, EncodeError>,
    pub(crate) decode: fn(&[u8]) -> Result<ErasedValue, serde_json::Error>,
    pub(crate) check_key: fn(&Key) -> Result<(), KeyError>,
    pub(crate) to_json: fn(&ErasedValue) -> Result<serde_json::Value, EncodeError>,
    pub(crate) augment: Option<AugmentHandle>,
}

impl PrimerHandle {
    /// The handle of `P`.
    pub const fn of<P: Primer>() -> Self {
        PrimerHandle {
            def: P::DEF,
            primer_type: TypeId::of::<P>,
            compute: compute::<P>,
            encode: encode::<P>,
            decode: decode::<P>,
            check_key: check_key::<P>,
            to_json: to_json::<P>,
            augment: None,
        }
    }

    /// With `P`'s [`Augment`](crate::augment::Augment) implementation, from
    /// [`AugmentHandle::of`].
    pub const fn with_augment(mut self, augment: AugmentHandle) -> Self {
        self.augment = Some(augment);
        self
    }

    pub(crate) fn def(&self) -> &'static PrimerDef {
        self.def
    }
}

impl std::fmt::Debug for PrimerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PrimerHandle").field(&self.def.name).finish()
    }
}

/// A replacement for a primer's computation, installed with
/// [`CacheBuilder::stub`](crate::CacheBuilder::stub) or
/// [`Cache::stub`](crate::Cache::stub).
pub(crate) type StubFn<P> = Box<
    dyn Fn(<P as Primer>::Params) -> Result<<P as Primer>::Value, <P as Primer>::Error>
        + Send
        + Sync,
>;

/// A [`StubFn`] of some primer, erased.
pub(crate) type ErasedStub = Arc<dyn Any + Send + Sync>;

pub(crate) fn erase_stub<P: Primer>(stub: StubFn<P>) -> ErasedStub {
    Arc::new(stub)
}

fn compute<P: Primer>(ctx: Arc<Ctx>) -> BoxFuture<'static, Result<ErasedValue, Error>> {
    Box::pin(async move {
        let params = key::parse_params::<P::Params>(ctx.key(), P::DEF.name, P::DEF.params)?;
        let stub = ctx.stub();
        let result = match stub
            .as_deref()
            .and_then(|stub| stub.downcast_ref::<StubFn<P>>())
        {
            Some(stub) => stub(params),
            None => P::compute(&ctx, params).await,
        };
        match result {
            Ok(value) => Ok(Arc::new(value) as ErasedValue),
            Err(error) => Err(Error::from_primer(ctx.key(), error.into())),
        }
    })
}

fn typed<P: Primer>(value: &ErasedValue) -> Result<&P::Value, serde_json::Error> {
    value.downcast_ref::<P::Value>().ok_or_else(|| {
        <serde_json::Error as serde::ser::Error>::custom(format!(
            "a value of another type was stored under primer `{}`",
            P::DEF.name
        ))
    })
}

/// Encodes a value for the store, refusing what would not read back; see
/// [`encode::to_canonical_json`].
fn encode<P: Primer>(value: &ErasedValue) -> Result<Vec<u8>, EncodeError> {
    encode::to_canonical_json(typed::<P>(value)?)
}

fn decode<P: Primer>(bytes: &[u8]) -> Result<ErasedValue, serde_json::Error> {
    Ok(Arc::new(serde_json::from_slice::<P::Value>(bytes)?))
}

fn check_key<P: Primer>(key: &Key) -> Result<(), KeyError> {
    key::parse_params::<P::Params>(key, P::DEF.name, P::DEF.params).map(drop)
}

fn to_json<P: Primer>(value: &ErasedValue) -> Result<serde_json::Value, EncodeError> {
    Ok(serde_json::to_value(typed::<P>(value)?)?)
}
