//! The error type of every cache operation.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::encode::EncodeError;
use crate::key::{Key, KeyError};
use crate::storage::StoreError;

/// A boxed error, as primers may return any error type convertible into it
/// (every `std::error::Error + Send + Sync`, `anyhow::Error`, `String`…).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An error of a cache operation.
///
/// Errors are cheap to clone: when many callers wait for one computation,
/// each receives the same error. Use [`Error::kind`] to decide what to do and
/// [`Error::compute_error`] to reach the error a primer returned.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key string is malformed or does not fit its primer.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),

    /// No primer of this name is registered with the cache.
    #[error("unknown primer `{name}`: no primer of this name is registered with the cache")]
    UnknownPrimer {
        /// The name that was looked up.
        name: String,
    },

    /// The primer's computation returned an error.
    #[error("computing `{key}` failed: {source}")]
    Compute {
        /// The product that failed.
        key: Key,
        /// The primer's error.
        #[source]
        source: Arc<dyn StdError + Send + Sync + 'static>,
    },

    /// The primer's computation panicked. The panic is contained: every waiter
    /// gets this error and the cache keeps working.
    #[error("computing `{key}` panicked: {message}")]
    Panicked {
        /// The product whose computation panicked.
        key: Key,
        /// The panic's message, when it was a string.
        message: String,
    },

    /// Products depend on each other in a cycle; `path` starts and ends with
    /// the same key.
    #[error("dependency cycle: {}", DisplayPath(path))]
    Cycle {
        /// The cycle, as the chain of keys that waited for each other.
        path: Vec<Key>,
    },

    /// A primer read another primer that its `depends_on` does not list.
    #[error(
        "primer `{from}` read `{to}`, which its `depends_on` does not list: add `{to}` to `depends_on`"
    )]
    UndeclaredDependency {
        /// The primer that was computing.
        from: &'static str,
        /// The primer it read.
        to: &'static str,
    },

    /// The product is not cached and its primer has `prime_on_miss = false`,
    /// so a read does not compute it.
    #[error("`{key}` is not cached, and its primer does not compute on a miss")]
    NotPrimed {
        /// The missing product.
        key: Key,
    },

    /// The value could not be serialized for the store, or would not read
    /// back (a non-finite float, nesting past
    /// [`MAX_VALUE_DEPTH`](crate::value::MAX_VALUE_DEPTH), a NUL in a string):
    /// nothing was stored.
    #[error("serializing the value of `{key}` failed: {source}")]
    Encode {
        /// The product whose value failed to serialize.
        key: Key,
        /// Why: [`EncodeError`].
        #[source]
        source: Arc<EncodeError>,
    },

    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The computation was dropped before it finished, for example because the
    /// runtime shut down.
    #[error("the computation of `{key}` stopped before it finished")]
    Aborted {
        /// The product whose computation stopped.
        key: Key,
    },

    /// The computation ran past its time limit (a worker's
    /// [`job_timeout`](crate::refresh::WorkerBuilder::job_timeout)) and was stopped:
    /// its waiters get this error, and the key is free for the next attempt.
    #[error("the computation of `{key}` timed out after {after:?} and was stopped")]
    TimedOut {
        /// The product whose computation was stopped.
        key: Key,
        /// The time limit it ran past.
        after: std::time::Duration,
    },

    /// A computed value could not be stored, for a reason that will not go
    /// away by itself (the store refused it; an outage is
    /// [`Error::Store`] and the computed value is served all the same).
    /// The value is not served: a product that can never be stored would
    /// otherwise be recomputed by every read of every process, unnoticed.
    #[error("the value of `{key}` was computed but the store refused it: {source}")]
    SaveFailed {
        /// The product whose value was refused.
        key: Key,
        /// What the store said.
        #[source]
        source: StoreError,
    },

    /// The cache was used outside a Tokio runtime; it runs computations as
    /// Tokio tasks.
    #[error("kck computes on Tokio tasks: call it from within a Tokio runtime")]
    NoRuntime,

    /// The cache's store cannot list its products: it was built without a
    /// [`Catalog`](crate::storage::Catalog) (see
    /// [`Storage::with_catalog`](crate::storage::Storage::with_catalog)).
    #[error("the store cannot list its products: it has no catalog (see Storage::with_catalog)")]
    NoCatalog,
}

/// What kind of [`Error`] happened: match on this to decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::InvalidKey`].
    InvalidKey,
    /// [`Error::UnknownPrimer`].
    UnknownPrimer,
    /// [`Error::Compute`].
    Compute,
    /// [`Error::Panicked`].
    Panicked,
    /// [`Error::Cycle`].
    Cycle,
    /// [`Error::UndeclaredDependency`].
    UndeclaredDependency,
    /// [`Error::NotPrimed`].
    NotPrimed,
    /// [`Error::Encode`].
    Encode,
    /// [`Error::Store`].
    Store,
    /// [`Error::Aborted`].
    Aborted,
    /// [`Error::TimedOut`].
    TimedOut,
    /// [`Error::SaveFailed`].
    SaveFailed,
    /// [`Error::NoRuntime`].
    NoRuntime,
    /// [`Error::NoCatalog`].
    NoCatalog,
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidKey(_) => ErrorKind::InvalidKey,
            Error::UnknownPrimer { .. } => ErrorKind::UnknownPrimer,
            Error::Compute { .. } => ErrorKind::Compute,
            Error::Panicked { .. } => ErrorKind::Panicked,
            Error::Cycle { .. } => ErrorKind::Cycle,
            Error::UndeclaredDependency { .. } => ErrorKind::UndeclaredDependency,
            Error::NotPrimed { .. } => ErrorKind::NotPrimed,
            Error::Encode { .. } => ErrorKind::Encode,
            Error::Store(_) => ErrorKind::Store,
            Error::Aborted { .. } => ErrorKind::Aborted,
            Error::TimedOut { .. } => ErrorKind::TimedOut,
            Error::SaveFailed { .. } => ErrorKind::SaveFailed,
            Error::NoRuntime => ErrorKind::NoRuntime,
            Error::NoCatalog => ErrorKind::NoCatalog,
        }
    }

    /// Whether trying again later may succeed: store outages, and aborted or
    /// timed-out computations. Compute errors are the primer's to judge, through
    /// [`Error::compute_error`].
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store(error) => error.is_transient(),
            Error::Aborted { .. } | Error::TimedOut { .. } => true,
            _ => false,
        }
    }

    /// The key the error is about, when there is one.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Error::Compute { key, .. }
            | Error::Panicked { key, .. }
            | Error::NotPrimed { key }
            | Error::Encode { key, .. }
            | Error::Aborted { key }
            | Error::TimedOut { key, .. }
            | Error::SaveFailed { key, .. } => Some(key),
            Error::Cycle { path } => path.first(),
            _ => None,
        }
    }

    /// The error a primer returned, if this is a compute error of type `E`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use kck_core::{Error, Key};
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("partner API is down")]
    /// struct ApiDown;
    ///
    /// let error = Error::Compute { key: Key::parse("rates")?, source: Arc::new(ApiDown) };
    /// assert!(error.compute_error::<ApiDown>().is_some());
    /// # Ok::<(), kck_core::key::KeyError>(())
    /// ```
    pub fn compute_error<E: StdError + 'static>(&self) -> Option<&E> {
        match self {
            Error::Compute { source, .. } => source.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// The error of the primer computing `key`. A kck error that the primer
    /// passed on (a failed read of a dependency, a cycle, a store outage)
    /// stays as it is, so the root cause and its kind reach the caller.
    pub(crate) fn from_primer(key: &Key, error: BoxError) -> Self {
        match error.downcast::<Error>() {
            Ok(error) => *error,
            Err(error) => Error::Compute {
                key: key.clone(),
                source: Arc::from(error),
            },
        }
    }
}

struct DisplayPath<'a>(&'a [Key]);

impl fmt::Display for DisplayPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            write!(f, "{key}")?;
        }
        Ok(())
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
