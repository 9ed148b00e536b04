//! Typed key parameters.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A type that can be a parameter of a primer, and so a segment of its keys.
///
/// kck implements it for the integers, `bool`, `char`, `String` (primers may
/// also take `&str`), `Box<str>`, `Arc<str>`, and, behind the `chrono` and
/// `uuid` features, `chrono::NaiveDate` and `uuid::Uuid`. Implement it for
/// your own newtypes by delegating:
///
/// ```
/// use kck_core::key::{KeyWriter, ParamError};
/// use kck_core::KeyParam;
///
/// #[derive(Debug, Clone, Copy, PartialEq)]
/// struct StoreId(u32);
///
/// impl KeyParam for StoreId {
///     fn write_key(&self, out: &mut KeyWriter<'_>) {
///         self.0.write_key(out)
///     }
///     fn parse_key(text: &str) -> Result<Self, ParamError> {
///         u32::parse_key(text).map(StoreId)
///     }
/// }
/// ```
///
/// `write_key` writes plain text: kck escapes it. `parse_key` receives that
/// text back, unescaped. kck checks that parsing then writing gives the same
/// text, so a key has exactly one spelling (`7`, never `007` or `+7`) and
/// `parse_key` may be lenient.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a primer parameter: it does not implement `kck_core::KeyParam`",
    label = "not a key parameter",
    note = "implement `kck_core::KeyParam` for it, usually by delegating to a field"
)]
pub trait KeyParam: Sized + Send + Sync + 'static {
    /// Writes the parameter's text (unescaped) into a key.
    fn write_key(&self, out: &mut KeyWriter<'_>);

    /// Parses the parameter from the text [`write_key`](KeyParam::write_key)
    /// wrote.
    ///
    /// # Errors
    ///
    /// A [`ParamError`] saying what was expected.
    fn parse_key(text: &str) -> Result<Self, ParamError>;
}

/// Why a key segment is not a valid parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParamError {
    reason: Cow<'static, str>,
}

impl ParamError {
    /// An error with a short, lower-case explanation, such as
    /// `"expected an unsigned integer"`.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        ParamError {
            reason: reason.into(),
        }
    }

    /// The explanation.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

macro_rules! int_params {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        #[diagnostic::do_not_recommend]
        impl KeyParam for $ty {
            fn write_key(&self, out: &mut KeyWriter<'_>) {
                out.write_str(itoa::Buffer::new().format(*self));
            }
            fn parse_key(text: &str) -> Result<Self, ParamError> {
                text.parse().map_err(|_| ParamError::new(concat!("expected ", $what)))
            }
        }
    )*};
}

int_params! {
    u8 => "an integer from 0 to 255",
    u16 => "an integer from 0 to 65535",
    u32 => "an unsigned 32-bit integer",
    u64 => "an unsigned 64-bit integer",
    u128 => "an unsigned 128-bit integer",
    usize => "an unsigned integer",
    i8 => "an integer from -128 to 127",
    i16 => "a 16-bit integer",
    i32 => "a 32-bit integer",
    i64 => "a 64-bit integer",
    i128 => "a 128-bit integer",
    isize => "an integer",
}

#[diagnostic::do_not_recommend]
impl KeyParam for bool {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.write_str(if *self { "true" } else { "false" });
    }
    fn parse_key(text: &str) -> Result<Self, ParamError> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ParamError::new("expected `true` or `false`")),
        }
    }
}

#[diagnostic::do_not_recommend]
impl KeyParam for char {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.write_str(self.encode_utf8(&mut [0; 4]));
    }
    fn parse_key(text: &str) -> Result<Self, ParamError> {
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Ok(c),
            _ => Err(ParamError::new("expected exactly one character")),
        }
    }
}

#[diagnostic::do_not_recommend]
impl KeyParam for String {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.write_str(self);
    }
    fn parse_key(text: &str) -> Result<Self, ParamError> {
        Ok(text.to_owned())
    }
}

#[diagnostic::do_not_recommend]
impl KeyParam for Box<str> {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.write_str(self);
    }
    fn parse_key(text: &str) -> Result<Self, ParamError> {
        Ok(text.into())
    }
}

#[diagnostic::do_not_recommend]
impl KeyParam for Arc<str> {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.write_str(self);
    }
    fn parse_key(text: &str) -> Result<Self, ParamError> {
        Ok(text.into())
    }
}

/// `YYYY-MM-DD`, as `NaiveDate` displays it.
#[cfg(feature = "chrono")]
#[diagnostic::do_not_recommend]
impl KeyParam for chrono::NaiveDate {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        use std::fmt::Write as _;
        // Writing into a `KeyWriter` cannot fail.
        let _ = write!(out, "{self}");
    }
    fn parse_key(text: &str) -> Result<Self, ParamError> {
        text.parse()
            .map_err(|_| ParamError::new("expected a date such as 2026-11-26"))
    }
}

/// The hyphenated lower-case form.
#[cfg(feature = "uuid")]
#[diagnostic::do_not_recommend]
impl KeyParam for uuid::Uuid {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.write_str(
            self.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        );
    }
    fn parse_key(text: &str) -> Result<Self, ParamError> {
        uuid::Uuid::try_parse(text).map_err(|_| ParamError::new("expected a hyphenated UUID"))
    }
}

/// The parameters of a primer as one tuple, in key-template order.
///
/// Implemented for tuples of up to eight [`KeyParam`]s; the `#[primer]` macro
/// picks the tuple.
#[diagnostic::on_unimplemented(
    message = "a parameter of this primer cannot be part of its key",
    label = "each parameter must implement `kck_core::KeyParam` (see the other error)",
    note = "primers take at most eight parameters"
)]
pub trait KeyParams: Sized + Send + Sync + 'static {
    /// The number of parameters.
    const ARITY: usize;

    /// Appends `/param` for each parameter.
    fn write_params(&self, out: &mut KeyWriter<'_>);

    /// Parses unescaped segments; on failure, the index of the bad one.
    ///
    /// # Errors
    ///
    /// The index of the first segment that does not parse, and why.
    fn parse_params(segments: &[Cow<'_, str>]) -> Result<Self, (usize, ParamError)>;
}

macro_rules! tuple_params {
    ($arity:literal; $($name:ident $index:tt),*) => {
        #[diagnostic::do_not_recommend]
        impl<$($name: KeyParam),*> KeyParams for ($($name,)*) {
            const ARITY: usize = $arity;

            #[allow(unused_variables)]
            fn write_params(&self, out: &mut KeyWriter<'_>) {
                $(out.param(&self.$index);)*
            }

            #[allow(unused_variables)]
            fn parse_params(segments: &[Cow<'_, str>]) -> Result<Self, (usize, ParamError)> {
                Ok(($(
                    $name::parse_key(segments.get($index).map_or("", |s| s))
                        .map_err(|e| ($index, e))?,
                )*))
            }
        }
    };
}

tuple_params!(0;);
tuple_params!(1; A 0);
tuple_params!(2; A 0, B 1);
tuple_params!(3; A 0, B 1, C 2);
tuple_params!(4; A 0, B 1, C 2, D 3);
tuple_params!(5; A 0, B 1, C 2, D 3, E 4);
tuple_params!(6; A 0, B 1, C 2, D 3, E 4, F 5);
tuple_params!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_params!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// Appends parameters to a key under construction, escaping them.
///
/// [`KeyParam::write_key`] receives one; implementations write the
/// parameter's text with [`KeyWriter::write_str`] (or `write!`, as it
/// implements [`fmt::Write`]) and never see the escaping.
pub struct KeyWriter<'a> {
    out: &'a mut String,
}

impl<'a> KeyWriter<'a> {
    pub(crate) fn new(out: &'a mut String) -> Self {
        KeyWriter { out }
    }

    /// Appends a whole key to `out`: the primer's name, then the
    /// parameters `params` writes. Every key built from typed parameters is
    /// written here, and so is the canonical form a parsed key is checked
    /// against.
    pub(crate) fn key_into(
        out: &mut String,
        primer: &str,
        params: impl FnOnce(&mut KeyWriter<'_>),
    ) {
        out.push_str(primer);
        params(&mut KeyWriter::new(out));
    }

    /// Appends `text` to the current parameter, escaping `%` and `/`.
    pub fn write_str(&mut self, text: &str) {
        escape_into(text, self.out);
    }

    /// Starts a new parameter segment and writes `value` into it.
    #[doc(hidden)]
    pub fn param<T: KeyParam>(&mut self, value: &T) {
        self.out.push('/');
        value.write_key(self);
    }

    /// Starts a new parameter segment holding `text`.
    #[doc(hidden)]
    pub fn str_param(&mut self, text: &str) {
        self.out.push('/');
        self.write_str(text);
    }
}

impl fmt::Write for KeyWriter<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape_into(text, self.out);
        Ok(())
    }
}

pub(super) fn escape_into(text: &str, out: &mut String) {
    if !text.bytes().any(|b| b == b'%' || b == b'/') {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}
