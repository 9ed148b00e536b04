//! [`TypedKey`]: the key of one product of a primer, with its typed
//! parameters, and [`Key::of`], which writes one. Keys are the lower
//! concept (`crate::key` knows nothing of primers); what ties a key to a
//! primer lives here.

use std::fmt;
use std::marker::PhantomData;

use super::Primer;
use crate::key::{self, Key, KeyError, KeyParams, KeyWriter};

impl Key {
    /// Builds the key of primer `P` for `params` (in key-template order).
    ///
    /// The key may be longer than [`MAX_KEY_LEN`](crate::key::MAX_KEY_LEN): such a key is refused
    /// with [`KeyError::TooLong`] when it is used (see [`MAX_KEY_LEN`](crate::key::MAX_KEY_LEN)).
    pub fn of<P: Primer>(params: &P::Params) -> Key {
        let mut text = String::with_capacity(P::DEF.name.len() + 16);
        KeyWriter::key_into(&mut text, P::DEF.name, |out| params.write_params(out));
        Key::from_written(&text)
    }
}

/// The key of one product of primer `P`, with its typed parameters.
///
/// The `#[primer]` macro generates a constructor for it on the primer's marker
/// type: `store_report::key(7, day)`. It dereferences to [`Key`], so every
/// untyped operation accepts it too.
pub struct TypedKey<P: Primer> {
    key: Key,
    params: P::Params,
    primer: PhantomData<fn() -> P>,
}

impl<P: Primer> TypedKey<P> {
    /// The key of `P` for `params`, given in key-template order.
    ///
    /// As [`Key::of`], the key may be longer than [`MAX_KEY_LEN`](crate::key::MAX_KEY_LEN): it is
    /// refused when used.
    pub fn new(params: P::Params) -> Self {
        TypedKey {
            key: Key::of::<P>(&params),
            params,
            primer: PhantomData,
        }
    }

    /// Reads the typed parameters back from `key`, which must be a key of
    /// `P` in canonical form.
    ///
    /// ```
    /// # use kck_core::{primer, Ctx, Key, TypedKey};
    /// #[primer(key = "report/{store}/{day}")]
    /// async fn report(_ctx: &Ctx, store: u32, day: String) -> Result<u64, std::convert::Infallible> {
    ///     Ok(0)
    /// }
    ///
    /// let key = TypedKey::<report>::from_key(Key::parse("report/7/monday")?)?;
    /// assert_eq!(key.params(), &(7, "monday".to_owned()));
    /// # Ok::<(), kck_core::key::KeyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`KeyError::WrongPrimer`] for a key of another primer,
    /// [`KeyError::TooLong`], and the errors of
    /// [`Registry::parse_key`](crate::primer::Registry::parse_key) about its
    /// parameters.
    pub fn from_key(key: Key) -> Result<Self, KeyError> {
        if key.primer() != P::DEF.name {
            return Err(KeyError::WrongPrimer {
                key: key.to_string(),
                expected: P::DEF.name,
            });
        }
        let params = key::parse_params::<P::Params>(&key, P::DEF.name, P::DEF.params)?;
        Ok(TypedKey {
            key,
            params,
            primer: PhantomData,
        })
    }

    /// The untyped key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The typed parameters, in key-template order.
    pub fn params(&self) -> &P::Params {
        &self.params
    }
}

impl<P: Primer> std::ops::Deref for TypedKey<P> {
    type Target = Key;
    fn deref(&self) -> &Key {
        &self.key
    }
}

impl<P: Primer> AsRef<Key> for TypedKey<P> {
    fn as_ref(&self) -> &Key {
        &self.key
    }
}

impl<P: Primer> From<TypedKey<P>> for Key {
    fn from(typed: TypedKey<P>) -> Key {
        typed.key
    }
}

impl<P: Primer> Clone for TypedKey<P>
where
    P::Params: Clone,
{
    fn clone(&self) -> Self {
        TypedKey {
            key: self.key.clone(),
            params: self.params.clone(),
            primer: PhantomData,
        }
    }
}

impl<P: Primer> fmt::Debug for TypedKey<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.key, f)
    }
}

impl<P: Primer> fmt::Display for TypedKey<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.key, f)
    }
}
