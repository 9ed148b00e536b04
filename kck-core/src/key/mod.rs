//! Keys: the address of one data product.
//!
//! A key is the primer's name followed by its parameters, separated by `/`:
//! `store_report/7/2026-11-26`. Each parameter is percent-escaped (`%` becomes
//! `%25`, `/` becomes `%2F`), so no parameter value can reach into another key.
//! Keys are *canonical*: a string key is accepted only in the exact form that
//! formatting its typed parameters produces, so every key round-trips between
//! its string and its typed parameters. A key is at most [`MAX_KEY_LEN`]
//! bytes long.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::sync::Arc;

mod param;

pub use param::{KeyParam, KeyParams, KeyWriter, ParamError};

/// The longest key, in bytes (of its escaped text): 1 KiB, the same on
/// every store.
///
/// PostgreSQL indexes keys in B-trees whose entries hold about 2,700 bytes,
/// two keys to an entry for dependency edges; a longer key (about 8 KB)
/// would not even fit a notification. A longer key is
/// [`KeyError::TooLong`]: when parsed, and when a primer computes it or a
/// cache operation checks it against its primer. Keep parameters short: put
/// a long text in a product's value, or pass a digest of it as the
/// parameter.
pub const MAX_KEY_LEN: usize = 1024;

/// The address of one data product: `primer_name/param/param…`.
///
/// A `Key` is cheap to clone (it shares its text) and is always well formed:
/// a valid primer name and correctly escaped parameters. Whether the
/// parameters suit the primer is checked by
/// [`Registry::parse_key`](crate::primer::Registry::parse_key).
///
/// ```
/// use kck_core::Key;
///
/// let key = Key::parse("store_report/7/2026-11-26")?;
/// assert_eq!(key.primer(), "store_report");
/// assert_eq!(key.params().collect::<Vec<_>>(), ["7", "2026-11-26"]);
///
/// // A `/` inside a parameter is escaped and cannot address another key.
/// let key = Key::parse("file/a%2Fb")?;
/// assert_eq!(key.params().collect::<Vec<_>>(), ["a/b"]);
/// # Ok::<(), kck_core::key::KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Arc<str>);

impl Key {
    /// Parses and validates the syntax of a key: a valid primer name, then
    /// parameters whose only escapes are `%25` and `%2F`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Empty`], [`KeyError::TooLong`] (past [`MAX_KEY_LEN`]
    /// bytes), [`KeyError::InvalidName`] or [`KeyError::InvalidEscape`].
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        check_len(text)?;
        let (name, rest) = text.split_once('/').unwrap_or((text, ""));
        if !is_valid_primer_name(name) {
            return Err(KeyError::InvalidName {
                key: text.to_owned(),
                name: name.to_owned(),
            });
        }
        if text.len() > name.len() && rest.split('/').any(|segment| unescape(segment).is_none()) {
            return Err(KeyError::InvalidEscape {
                key: text.to_owned(),
            });
        }
        Ok(Key(Arc::from(text)))
    }

    /// Wraps text that was written by a [`KeyWriter`] after a primer name, so
    /// it is well formed by construction.
    pub(crate) fn from_written(text: &str) -> Key {
        Key(Arc::from(text))
    }

    /// [`KeyError::TooLong`] if the key is longer than [`MAX_KEY_LEN`]
    /// bytes. Keys built from typed parameters ([`Key::of`],
    /// [`TypedKey::new`], generated getters) are checked with this before
    /// they reach a store.
    pub(crate) fn check_len(&self) -> Result<(), KeyError> {
        check_len(&self.0)
    }

    /// The whole key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the primer this key belongs to: the first segment.
    pub fn primer(&self) -> &str {
        self.0.split_once('/').map_or(&*self.0, |(name, _)| name)
    }

    /// The parameters, unescaped, in key order.
    pub fn params(&self) -> impl Iterator<Item = Cow<'_, str>> + '_ {
        self.raw_params()
            .map(|segment| unescape(segment).unwrap_or(Cow::Borrowed(segment)))
    }

    /// The parameters as they appear in the key, still escaped.
    pub(crate) fn raw_params(&self) -> impl Iterator<Item = &str> + '_ {
        let rest = self.0.split_once('/').map(|(_, rest)| rest);
        rest.into_iter().flat_map(|rest| rest.split('/'))
    }

    /// The number of parameters.
    pub fn param_count(&self) -> usize {
        self.raw_params().count()
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<Key> for Key {
    fn as_ref(&self) -> &Key {
        self
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", &*self.0)
    }
}

/// [`KeyError::TooLong`] past [`MAX_KEY_LEN`] bytes.
fn check_len(text: &str) -> Result<(), KeyError> {
    if text.len() <= MAX_KEY_LEN {
        return Ok(());
    }
    let mut end = PREFIX_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Err(KeyError::TooLong {
        prefix: text[..end].to_owned(),
        len: text.len(),
        max: MAX_KEY_LEN,
    })
}

/// How much of a key too long to use [`KeyError::TooLong`] keeps.
const PREFIX_LEN: usize = 64;

/// Whether `name` can name a primer: non-empty ASCII letters, digits, `_`,
/// `-` and `.`.
pub fn is_valid_primer_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Undoes [`KeyWriter`]'s escaping; `None` for any escape other than `%25` and `%2F`.
fn unescape(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        out.push(match escape {
            "%25" => '%',
            "%2F" => '/',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// Parses the parameters of `key` as `P`'s typed parameters, checking its
/// length, their number, their values and that the key is in canonical
/// form. Every computation starts here, and so does every check of a key
/// against its primer.
pub(crate) fn parse_params<Params: KeyParams>(
    key: &Key,
    primer: &'static str,
    param_names: &'static [&'static str],
) -> Result<Params, KeyError> {
    key.check_len()?;
    let segments: Vec<Cow<'_, str>> = key.params().collect();
    if segments.len() != Params::ARITY {
        return Err(KeyError::WrongParamCount {
            key: key.to_string(),
            primer,
            expected: Params::ARITY,
            found: segments.len(),
        });
    }
    let params =
        Params::parse_params(&segments).map_err(|(index, reason)| KeyError::InvalidParam {
            key: key.to_string(),
            param: param_names.get(index).copied().unwrap_or("?"),
            reason,
        })?;
    let mut canonical = String::with_capacity(key.as_str().len());
    KeyWriter::key_into(&mut canonical, primer, |out| params.write_params(out));
    if canonical != key.as_str() {
        return Err(KeyError::NotCanonical {
            key: key.to_string(),
            canonical,
        });
    }
    Ok(params)
}

/// Why a key string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is the empty string.
    #[error("empty key")]
    Empty,
    /// The first segment is not a valid primer name.
    #[error(
        "invalid primer name `{name}` in key `{key}`: use ASCII letters, digits, `_`, `-` and `.`"
    )]
    InvalidName {
        /// The rejected key.
        key: String,
        /// Its first segment.
        name: String,
    },
    /// A `%` that does not start `%25` or `%2F`.
    #[error("invalid escape in key `{key}`: only `%25` (for `%`) and `%2F` (for `/`) are allowed")]
    InvalidEscape {
        /// The rejected key.
        key: String,
    },
    /// The key belongs to another primer than the one expected.
    #[error("key `{key}` is not a key of primer `{expected}`")]
    WrongPrimer {
        /// The rejected key.
        key: String,
        /// The primer expected.
        expected: &'static str,
    },
    /// The key has more or fewer parameters than its primer takes.
    #[error("key `{key}` has {found} parameter(s) but primer `{primer}` takes {expected}")]
    WrongParamCount {
        /// The rejected key.
        key: String,
        /// The primer it names.
        primer: &'static str,
        /// How many parameters the primer takes.
        expected: usize,
        /// How many the key has.
        found: usize,
    },
    /// A parameter does not parse as the primer's parameter type.
    #[error("parameter `{param}` of key `{key}` is invalid: {reason}")]
    InvalidParam {
        /// The rejected key.
        key: String,
        /// The name of the parameter, as in the key template.
        param: &'static str,
        /// What the parameter type said.
        #[source]
        reason: ParamError,
    },
    /// The parameters parse, but format differently (`007` for `7`); only the
    /// canonical form addresses the product.
    #[error("key `{key}` is not in canonical form; the same parameters are written `{canonical}`")]
    NotCanonical {
        /// The rejected key.
        key: String,
        /// The canonical form of the same parameters.
        canonical: String,
    },
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("key `{prefix}…` is {len} bytes long, past the maximum of {max}")]
    TooLong {
        /// The key's first 64 bytes (or fewer, to end on a character).
        prefix: String,
        /// The key's length in bytes.
        len: usize,
        /// [`MAX_KEY_LEN`].
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::param::escape_into;
    use super::*;

    #[test]
    fn escaping_round_trips_and_hides_separators() {
        for raw in ["", "plain", "a/b", "100%", "%2F", "/%/%25/", "ünï/cödé"] {
            let mut escaped = String::new();
            escape_into(raw, &mut escaped);
            assert!(!escaped.contains('/'), "{escaped}");
            assert_eq!(unescape(&escaped).as_deref(), Some(raw));
        }
    }

    #[test]
    fn only_the_two_escapes_are_accepted() {
        for bad in ["%", "%2", "%2f", "%41", "a%zz", "%%"] {
            assert_eq!(unescape(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_rejects_malformed_keys() {
        assert_eq!(Key::parse(""), Err(KeyError::Empty));
        assert!(matches!(
            Key::parse("bad name/1"),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            Key::parse("/1"),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            Key::parse("name/a%2fb"),
            Err(KeyError::InvalidEscape { .. })
        ));
    }

    #[test]
    fn keys_past_the_maximum_length_are_too_long() {
        // `é` is two bytes: the 64th byte of the key is inside one.
        let at_max = format!("p/x{}y", "é".repeat((MAX_KEY_LEN - 4) / 2));
        assert_eq!(at_max.len(), MAX_KEY_LEN);
        assert_eq!(Key::parse(&at_max).map(|key| key.check_len()), Ok(Ok(())));
        let past = format!("{at_max}x");
        let Err(KeyError::TooLong { prefix, len, max }) = Key::parse(&past) else {
            panic!("a key of {} bytes parses", past.len());
        };
        assert_eq!((prefix.len(), len, max), (63, MAX_KEY_LEN + 1, MAX_KEY_LEN));
        assert!(past.starts_with(&prefix));
        assert!(Key::from_written(&past).check_len().is_err());
    }

    #[test]
    fn segments() {
        let key = Key::parse("p").unwrap();
        assert_eq!((key.primer(), key.param_count()), ("p", 0));
        let key = Key::parse("p/").unwrap();
        assert_eq!(key.params().collect::<Vec<_>>(), [""]);
        let key = Key::parse("p/a%25/b%2Fc").unwrap();
        assert_eq!(key.params().collect::<Vec<_>>(), ["a%", "b/c"]);
    }
}
