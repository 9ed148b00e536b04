//! Encoding values for the store: canonical JSON, refused when it would not
//! read back.
//!
//! JSON has no NaN or infinity (serde_json writes them as `null`, which then
//! fails to decode), serde_json's reader stops at 128 levels of nesting, and
//! PostgreSQL's `jsonb` refuses a string holding NUL (`\u0000`) where the
//! memory store would keep it.
//! A value that would not read back is refused before it is written, by one
//! pass over its `Serialize` impl that produces nothing: every read would
//! otherwise find an undecodable entry and recompute it, forever.

use std::cell::Cell;
use std::fmt::{self, Write as _};

use serde::Serialize;
use serde::ser::{self, Impossible};

/// The deepest nesting of JSON arrays and objects a value may have: a value
/// nested deeper is refused with [`EncodeError::TooDeep`].
///
/// serde_json reads at most 127 levels back (its recursion limit is 128).
/// Each sequence, tuple, map, struct and byte string is one level;
/// newtype variants add the one-key object that wraps them, tuple and
/// struct variants add two; newtype structs and `Option` add none.
pub const MAX_VALUE_DEPTH: usize = 127;

/// Why a value could not be encoded for the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A float is NaN or infinite: JSON cannot carry it (it would be written
    /// as `null` and never read back).
    #[error("non-finite float {value} at `{path}`: JSON cannot carry NaN or infinity")]
    NonFinite {
        /// Where the float is, jq style: `.sales[3].amount`, `.` for the
        /// value itself.
        path: String,
        /// The float (NaN, `inf` or `-inf`).
        value: f64,
    },
    /// A string of the value holds the NUL character (`\0`): serde_json
    /// writes it as `\u0000`, which PostgreSQL's `jsonb` refuses, so no
    /// store keeps it. Strings, `char`s, map keys and `collect_str` output
    /// are checked; other control characters are fine.
    #[error("string with a NUL character (`\\0`) at `{path}`: PostgreSQL cannot hold it")]
    Nul {
        /// Where the string is, as for [`EncodeError::NonFinite`]; for a
        /// map key, the path ends with the key itself: `.tags["a\0b"]`.
        path: String,
    },
    /// The value nests arrays and objects deeper than [`MAX_VALUE_DEPTH`]:
    /// it would not read back.
    #[error("value nested {depth} levels deep, past the maximum of {max}")]
    TooDeep {
        /// The depth the check stopped at: the first past `max`.
        depth: usize,
        /// [`MAX_VALUE_DEPTH`].
        max: usize,
    },
    /// The serializer failed: the value's `Serialize` impl returned an error,
    /// or a map key is not a string, a number or a `bool`.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Serializes canonically: through `serde_json::Value`, whose maps are
/// sorted, so equal values give equal bytes (and equal content hashes) even
/// when they hold `HashMap`s. Refuses what would not read back.
///
/// `-0.0` is written as `0.0`: PostgreSQL's `jsonb` has no negative zero,
/// so every store reads back the same value, and equal values hash alike.
pub(crate) fn to_canonical_json<V: Serialize + ?Sized>(value: &V) -> Result<Vec<u8>, EncodeError> {
    let negative_zero = checked(value)?;
    let mut json = serde_json::to_value(value)?;
    if negative_zero {
        positive_zeros(&mut json);
    }
    Ok(serde_json::to_vec(&json)?)
}

/// Replaces every `-0.0` in `json` with `0.0`. Recursion is bounded by
/// [`MAX_VALUE_DEPTH`]: the value was checked.
fn positive_zeros(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::Number(number) => {
            if number
                .as_f64()
                .is_some_and(|x| x == 0.0 && x.is_sign_negative())
                && let Some(zero) = serde_json::Number::from_f64(0.0)
            {
                *number = zero;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(positive_zeros),
        serde_json::Value::Object(map) => map.values_mut().for_each(positive_zeros),
        _ => {}
    }
}

/// Serializes as it is (a delta, which is not hashed), refusing what would
/// not read back.
pub(crate) fn to_checked_json<V: Serialize + ?Sized>(value: &V) -> Result<Vec<u8>, EncodeError> {
    checked(value)?;
    Ok(serde_json::to_vec(value)?)
}

/// Whether `value` reads back from JSON on every store: finite floats only,
/// no NUL in a string, nested at most [`MAX_VALUE_DEPTH`] deep. An error of
/// the value's own `Serialize` impl passes: the serializer reports it.
/// Returns whether the value holds a `-0.0`.
fn checked<V: Serialize + ?Sized>(value: &V) -> Result<bool, EncodeError> {
    let negative_zero = Cell::new(false);
    let checker = Checker {
        depth: 0,
        negative_zero: &negative_zero,
    };
    match value.serialize(checker) {
        Ok(()) | Err(Refusal::Custom) => Ok(negative_zero.get()),
        Err(Refusal::At { cause, mut path }) => {
            path.reverse();
            let path = render(&path);
            Err(match cause {
                Cause::NonFinite(value) => EncodeError::NonFinite { path, value },
                Cause::Nul => EncodeError::Nul { path },
            })
        }
        Err(Refusal::TooDeep { depth }) => Err(EncodeError::TooDeep {
            depth,
            max: MAX_VALUE_DEPTH,
        }),
    }
}

/// One step of a path into a value.
#[derive(Debug)]
enum Step {
    Field(&'static str),
    Index(usize),
    Key(String),
}

fn render(path: &[Step]) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let mut out = String::new();
    for step in path {
        // Writing to a `String` cannot fail.
        let _ = match step {
            Step::Field(name) => write!(out, ".{name}"),
            Step::Index(index) => write!(out, "[{index}]"),
            Step::Key(key) => write!(out, "[{key:?}]"),
        };
    }
    out
}

/// What is refused at one place in a value.
#[derive(Debug)]
enum Cause {
    /// A NaN or infinite float.
    NonFinite(f64),
    /// A string holding NUL.
    Nul,
}

/// Why the check stopped.
#[derive(Debug)]
enum Refusal {
    /// Refused at `path`. The path is collected as the error unwinds, so a
    /// value that passes pays nothing for it (innermost step first).
    At {
        cause: Cause,
        path: Vec<Step>,
    },
    TooDeep {
        depth: usize,
    },
    /// The value's `Serialize` impl failed: left to serde_json.
    Custom,
}

impl Refusal {
    /// Refused right here: the callers above add their steps.
    fn here(cause: Cause) -> Self {
        Refusal::At {
            cause,
            path: Vec::new(),
        }
    }

    /// The refusal, one step further out.
    fn at(mut self, step: impl FnOnce() -> Step) -> Self {
        if let Refusal::At { path, .. } = &mut self {
            path.push(step());
        }
        self
    }
}

/// Refuses a string holding NUL. `contains` finds a byte with `memchr`.
fn no_nul(text: &str) -> Result<(), Refusal> {
    if text.contains('\0') {
        Err(Refusal::here(Cause::Nul))
    } else {
        Ok(())
    }
}

/// A `fmt::Write` that keeps nothing, and stops at the first NUL written.
#[derive(Default)]
struct NulScan {
    found: bool,
}

impl fmt::Write for NulScan {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if text.contains('\0') {
            self.found = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Refusal {}

impl ser::Error for Refusal {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Refusal::Custom
    }
}

/// A serializer that writes nothing: it counts the JSON nesting depth as
/// serde_json's reader would, and refuses non-finite floats and strings
/// holding NUL.
#[derive(Clone, Copy)]
struct Checker<'a> {
    /// The arrays and objects around the value being checked.
    depth: usize,
    /// Set on meeting a `-0.0`.
    negative_zero: &'a Cell<bool>,
}

impl<'a> Checker<'a> {
    /// `levels` more levels of nesting, if allowed.
    fn enter(self, levels: usize) -> Result<Checker<'a>, Refusal> {
        let depth = self.depth + levels;
        if depth > MAX_VALUE_DEPTH {
            return Err(Refusal::TooDeep { depth });
        }
        Ok(Checker { depth, ..self })
    }

    fn float(self, value: f64) -> Result<(), Refusal> {
        if value.is_finite() {
            if value == 0.0 && value.is_sign_negative() {
                self.negative_zero.set(true);
            }
            Ok(())
        } else {
            Err(Refusal::here(Cause::NonFinite(value)))
        }
    }
}

macro_rules! pass {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method(self, _value: $ty) -> Result<(), Refusal> {
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for Checker<'a> {
    type Ok = ();
    type Error = Refusal;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Fields<'a>;

    pass! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128,
        serialize_unit_struct: &'static str,
    }

    fn serialize_char(self, value: char) -> Result<(), Refusal> {
        if value == '\0' {
            return Err(Refusal::here(Cause::Nul));
        }
        Ok(())
    }

    fn serialize_str(self, value: &str) -> Result<(), Refusal> {
        no_nul(value)
    }

    fn serialize_f32(self, value: f32) -> Result<(), Refusal> {
        self.float(f64::from(value))
    }

    fn serialize_f64(self, value: f64) -> Result<(), Refusal> {
        self.float(value)
    }

    fn serialize_bytes(self, _value: &[u8]) -> Result<(), Refusal> {
        // An array of numbers.
        self.enter(1).map(drop)
    }

    fn serialize_none(self) -> Result<(), Refusal> {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Refusal> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Refusal> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<(), Refusal> {
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Refusal> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Refusal> {
        // `{"variant": value}`
        value
            .serialize(self.enter(1)?)
            .map_err(|refusal| refusal.at(|| Step::Field(variant)))
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>, Refusal> {
        Ok(Seq::new(self.enter(1)?, None))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Seq<'a>, Refusal> {
        Ok(Seq::new(self.enter(1)?, None))
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Seq<'a>, Refusal> {
        Ok(Seq::new(self.enter(1)?, None))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Seq<'a>, Refusal> {
        // `{"variant": [..]}`
        Ok(Seq::new(self.enter(2)?, Some(variant)))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Map<'a>, Refusal> {
        Ok(Map {
            inner: self.enter(1)?,
            key: String::new(),
        })
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Fields<'a>, Refusal> {
        Ok(Fields {
            inner: self.enter(1)?,
            variant: None,
        })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Fields<'a>, Refusal> {
        // `{"variant": {..}}`
        Ok(Fields {
            inner: self.enter(2)?,
            variant: Some(variant),
        })
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), Refusal> {
        // Scanned as it is formatted, without keeping it. A `Display` error
        // of its own is serde_json's to report.
        let mut scan = NulScan::default();
        let _ = write!(scan, "{value}");
        if scan.found {
            return Err(Refusal::here(Cause::Nul));
        }
        Ok(())
    }
}

/// The elements of an array.
struct Seq<'a> {
    inner: Checker<'a>,
    index: usize,
    /// The variant whose object wraps the array, if any.
    variant: Option<&'static str>,
}

impl<'a> Seq<'a> {
    fn new(inner: Checker<'a>, variant: Option<&'static str>) -> Self {
        Seq {
            inner,
            index: 0,
            variant,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Refusal> {
        let index = self.index;
        self.index += 1;
        let variant = self.variant;
        value.serialize(self.inner).map_err(|refusal| {
            let refusal = refusal.at(|| Step::Index(index));
            match variant {
                Some(variant) => refusal.at(|| Step::Field(variant)),
                None => refusal,
            }
        })
    }
}

macro_rules! seq_impls {
    ($($trait:ident::$method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Refusal;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Refusal> {
                self.element(value)
            }

            fn end(self) -> Result<(), Refusal> {
                Ok(())
            }
        }
    )*};
}

seq_impls!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// The fields of an object.
struct Fields<'a> {
    inner: Checker<'a>,
    /// The variant whose object wraps this one, if any.
    variant: Option<&'static str>,
}

impl Fields<'_> {
    fn field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Refusal> {
        let variant = self.variant;
        value.serialize(self.inner).map_err(|refusal| {
            let refusal = refusal.at(|| Step::Field(name));
            match variant {
                Some(variant) => refusal.at(|| Step::Field(variant)),
                None => refusal,
            }
        })
    }
}

macro_rules! fields_impls {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Fields<'_> {
            type Ok = ();
            type Error = Refusal;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                value: &T,
            ) -> Result<(), Refusal> {
                self.field(name, value)
            }

            fn end(self) -> Result<(), Refusal> {
                Ok(())
            }
        }
    )*};
}

fields_impls!(SerializeStruct, SerializeStructVariant);

/// The entries of a map: each key is written (in one reused buffer) to be
/// checked for NUL and to name the path of a refused value.
struct Map<'a> {
    inner: Checker<'a>,
    key: String,
}

impl ser::SerializeMap for Map<'_> {
    type Ok = ();
    type Error = Refusal;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Refusal> {
        self.key.clear();
        // A key serde_json cannot write is its error to report, not ours.
        if key.serialize(KeyText(&mut self.key)).is_ok() {
            no_nul(&self.key).map_err(|refusal| refusal.at(|| Step::Key(self.key.clone())))?;
        }
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Refusal> {
        value
            .serialize(self.inner)
            .map_err(|refusal| refusal.at(|| Step::Key(self.key.clone())))
    }

    fn end(self) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Writes a map key as text, as serde_json would write it.
struct KeyText<'a>(&'a mut String);

macro_rules! key_display {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method(self, value: $ty) -> Result<(), Refusal> {
            let _ = write!(self.0, "{value}");
            Ok(())
        }
    )*};
}

impl ser::Serializer for KeyText<'_> {
    type Ok = ();
    type Error = Refusal;
    type SerializeSeq = Impossible<(), Refusal>;
    type SerializeTuple = Impossible<(), Refusal>;
    type SerializeTupleStruct = Impossible<(), Refusal>;
    type SerializeTupleVariant = Impossible<(), Refusal>;
    type SerializeMap = Impossible<(), Refusal>;
    type SerializeStruct = Impossible<(), Refusal>;
    type SerializeStructVariant = Impossible<(), Refusal>;

    key_display! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
        serialize_str: &str, serialize_f32: f32, serialize_f64: f64,
    }

    fn serialize_bytes(self, _value: &[u8]) -> Result<(), Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_none(self) -> Result<(), Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_unit(self) -> Result<(), Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Refusal> {
        self.0.push_str(variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Refusal> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Refusal> {
        Err(Refusal::Custom)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Refusal> {
        Err(Refusal::Custom)
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), Refusal> {
        let _ = write!(self.0, "{value}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Serialize)]
    struct Sale {
        amount: f64,
    }

    #[derive(Serialize)]
    struct Day {
        sales: Vec<Sale>,
    }

    #[derive(Serialize)]
    enum Shape {
        Point(f32),
        Pair(f64, f64),
        Named { x: f64 },
    }

    fn path_of<V: Serialize>(value: &V) -> String {
        match check(value) {
            Err(EncodeError::NonFinite { path, .. }) => path,
            other => panic!("expected a non-finite float, got {other:?}"),
        }
    }

    #[test]
    fn paths_name_the_float() {
        let day = Day {
            sales: vec![Sale { amount: 1.0 }, Sale { amount: f64::NAN }],
        };
        assert_eq!(path_of(&day), ".sales[1].amount");
        assert_eq!(path_of(&f64::INFINITY), ".");
        assert_eq!(path_of(&Shape::Point(f32::NEG_INFINITY)), ".Point");
        assert_eq!(path_of(&Shape::Pair(0.0, f64::NAN)), ".Pair[1]");
        assert_eq!(path_of(&Shape::Named { x: f64::NAN }), ".Named.x");
        let map = BTreeMap::from([(7, vec![Some(f64::NAN)])]);
        assert_eq!(path_of(&map), r#"["7"][0]"#);
        assert!(check(&day.sales[0]).is_ok());
    }

    fn check<V: Serialize>(value: &V) -> Result<bool, EncodeError> {
        checked(value)
    }

    fn nul_path_of<V: Serialize + ?Sized>(value: &V) -> String {
        match checked(value) {
            Err(EncodeError::Nul { path }) => path,
            other => panic!("expected a NUL, got {other:?}"),
        }
    }

    /// Serializes as `<text>`, through `collect_str`.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Shown(&'static str);

    impl Serialize for Shown {
        fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&format_args!("<{}>", self.0))
        }
    }

    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    struct Name(String);

    #[derive(Serialize)]
    struct Tagged {
        tags: BTreeMap<String, Vec<String>>,
        mark: char,
    }

    fn tagged(key: &str, text: &str, mark: char) -> Tagged {
        Tagged {
            tags: BTreeMap::from([(key.to_owned(), vec!["ok".to_owned(), text.to_owned()])]),
            mark,
        }
    }

    #[test]
    fn nul_is_refused_wherever_a_string_comes_from() {
        assert_eq!(nul_path_of("a\0"), ".");
        assert_eq!(nul_path_of(&tagged("a", "x\0y", 'm')), r#".tags["a"][1]"#);
        assert_eq!(nul_path_of(&tagged("a", "x", '\0')), ".mark");
        assert_eq!(nul_path_of(&tagged("a\0b", "x", 'm')), r#".tags["a\0b"]"#);
        assert_eq!(nul_path_of(&BTreeMap::from([('\0', 1)])), r#"["\0"]"#);
        let name = BTreeMap::from([(Name("x\0".to_owned()), 1)]);
        assert_eq!(nul_path_of(&name), r#"["x\0"]"#);
        assert_eq!(nul_path_of(&Shown("a\0")), ".");
        assert_eq!(nul_path_of(&[Shown("a"), Shown("\0")]), "[1]");
        let shown = BTreeMap::from([(Shown("\0"), [1.0])]);
        assert_eq!(nul_path_of(&shown), r#"["<\0>"]"#);
        let value = serde_json::json!({"a": [{"b\u{0}": 1}]});
        assert_eq!(nul_path_of(&value), r#"["a"][0]["b\0"]"#);

        // Deltas as well as values.
        assert!(matches!(
            to_checked_json(&tagged("a", "\0", 'm')),
            Err(EncodeError::Nul { .. })
        ));
        assert!(matches!(
            to_canonical_json(&tagged("a", "\0", 'm')),
            Err(EncodeError::Nul { .. })
        ));
        let error = checked("\0").unwrap_err().to_string();
        assert_eq!(
            error,
            "string with a NUL character (`\\0`) at `.`: PostgreSQL cannot hold it"
        );
    }

    #[test]
    fn other_control_characters_pass() {
        let text = "\u{1}\t\n\r\u{1b}\u{1f}\u{7f}";
        let value = tagged(text, text, '\u{1}');
        assert!(!checked(&value).expect("passes"));
        let bytes = to_canonical_json(&value).expect("encodes");
        let read: serde_json::Value = serde_json::from_slice(&bytes).expect("reads back");
        assert_eq!(read["tags"][text][1], text);
        assert_eq!(read["mark"], "\u{1}");
        checked(&Shown(text)).expect("passes");
        checked(&BTreeMap::from([(Shown(text), 1)])).expect("passes");
    }

    #[test]
    fn negative_zero_is_written_as_zero() {
        assert_eq!(to_canonical_json(&-0.0_f64).unwrap(), b"0.0");
        assert_eq!(to_canonical_json(&[1.0, -0.0_f64]).unwrap(), b"[1.0,0.0]");
    }

    #[test]
    fn depth_counts_as_the_reader_does() {
        fn nested(depth: usize) -> serde_json::Value {
            (0..depth).fold(serde_json::Value::Null, |inner, _| {
                serde_json::Value::Array(vec![inner])
            })
        }
        for depth in [0, 1, MAX_VALUE_DEPTH] {
            check(&nested(depth)).expect("readable");
            let bytes = to_canonical_json(&nested(depth)).expect("encodes");
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("reads back");
        }
        let bytes = serde_json::to_vec(&nested(MAX_VALUE_DEPTH + 1)).expect("writes");
        assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_err());
        assert!(matches!(
            check(&nested(MAX_VALUE_DEPTH + 1)),
            Err(EncodeError::TooDeep {
                depth: 128,
                max: 127
            })
        ));
        // Variants wrap their content in an object.
        let struct_variant = (0..MAX_VALUE_DEPTH - 2).fold(serde_json::Value::Null, |inner, _| {
            serde_json::Value::Array(vec![inner])
        });
        #[derive(Serialize)]
        enum Wrap {
            V { inner: serde_json::Value },
        }
        check(&Wrap::V {
            inner: struct_variant.clone(),
        })
        .expect("127 levels");
        assert!(
            check(&Wrap::V {
                inner: serde_json::Value::Array(vec![struct_variant])
            })
            .is_err()
        );
    }
}
