//! Values that would not read back (non-finite floats, nesting past
//! `MAX_VALUE_DEPTH`, strings holding NUL, which PostgreSQL refuses) are
//! refused at write with a typed error naming the cause, and never stored:
//! on every store, from a computation and from `Cache::set`.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;

use common::on_every_store;
use kck_core::value::{EncodeError, MAX_VALUE_DEPTH};
use kck_core::{Ctx, Error, ErrorKind, Key, primer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sale {
    amount: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Day {
    sales: Vec<Sale>,
}

/// A day whose fourth sale has `amount`.
fn day(amount: f64) -> Day {
    let mut sales = vec![Sale { amount: 1.5 }; 3];
    sales.push(Sale { amount });
    Day { sales }
}

fn amount(which: &str) -> f64 {
    match which {
        "nan" => f64::NAN,
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "-0" => -0.0,
        _ => 2.5,
    }
}

#[primer(key = "day/{which}")]
async fn sales_day(_ctx: &Ctx, which: String) -> Result<Day, Infallible> {
    Ok(day(amount(&which)))
}

/// Arrays nested in arrays: `Nest(vec![])` is `[]`, one level deep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Nest(Vec<Nest>);

fn nest(depth: usize) -> Nest {
    (1..depth).fold(Nest(Vec::new()), |inner, _| Nest(vec![inner]))
}

#[primer(key = "nested/{depth}")]
async fn nested(_ctx: &Ctx, depth: usize) -> Result<Nest, Infallible> {
    Ok(nest(depth))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Label {
    text: String,
}

/// Strings from every source: map keys, nested fields, a `char`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    tags: BTreeMap<String, Label>,
    mark: char,
}

fn note(key: &str, text: &str, mark: char) -> Note {
    Note {
        tags: BTreeMap::from([
            (
                "first".to_owned(),
                Label {
                    text: "ok".to_owned(),
                },
            ),
            (
                key.to_owned(),
                Label {
                    text: text.to_owned(),
                },
            ),
        ]),
        mark,
    }
}

/// Other control characters than NUL, which every store keeps.
const CONTROLS: &str = "a\u{1}b\tc\nd\u{1f}e\u{7f}";

/// A note with a NUL where `which` says (`field`, `key`, `char`), and
/// the path to it; or with control characters only (`controls`).
fn nul_note(which: &str) -> (Note, &'static str) {
    match which {
        "field" => (note("a", "x\0y", 'm'), r#".tags["a"].text"#),
        "key" => (note("a\0b", "x", 'm'), r#".tags["a\0b"]"#),
        "char" => (note("a", "x", '\0'), ".mark"),
        _ => (note(CONTROLS, CONTROLS, '\u{1}'), ""),
    }
}

#[primer(key = "note/{which}")]
async fn noted(_ctx: &Ctx, which: String) -> Result<Note, Infallible> {
    Ok(nul_note(&which).0)
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

fn encode_error(error: &Error) -> &EncodeError {
    match error {
        Error::Encode { source, .. } => source,
        other => panic!("expected an encode error, got {other:?}"),
    }
}

fn assert_non_finite(error: &Error, key: &str) {
    assert_eq!(error.kind(), ErrorKind::Encode);
    assert_eq!(error.key().map(Key::as_str), Some(key));
    match encode_error(error) {
        EncodeError::NonFinite { path, .. } => assert_eq!(path, ".sales[3].amount"),
        other => panic!("expected a non-finite float, got {other:?}"),
    }
    assert!(
        error.to_string().contains("at `.sales[3].amount`"),
        "{error}"
    );
}

fn assert_too_deep(error: &Error) {
    assert_eq!(error.kind(), ErrorKind::Encode);
    match encode_error(error) {
        EncodeError::TooDeep { depth, max } => {
            assert_eq!((*depth, *max), (MAX_VALUE_DEPTH + 1, MAX_VALUE_DEPTH));
        }
        other => panic!("expected a too deep value, got {other:?}"),
    }
}

fn assert_nul(error: &Error, key: &str, path: &str) {
    assert_eq!(error.kind(), ErrorKind::Encode);
    assert_eq!(error.key().map(Key::as_str), Some(key));
    match encode_error(error) {
        EncodeError::Nul { path: at } => assert_eq!(at, path),
        other => panic!("expected a NUL, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&format!("at `{path}`")), "{message}");
    assert!(message.contains("PostgreSQL cannot hold it"), "{message}");
}

on_every_store! {
    #[tokio::test]
    async fn a_computed_non_finite_float_is_refused_and_not_stored(test, _source) {
        for which in ["nan", "inf", "-inf"] {
            let text = format!("day/{which}");
            let error = sales_day(&test, which.to_owned()).await.unwrap_err();
            assert_non_finite(&error, &text);
            assert!(test.storage().entries().load(&key(&text)).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn set_refuses_a_non_finite_float_and_keeps_the_stored_value(test, _source) {
        let day_key = sales_day::key("x".to_owned());
        let version = test.set(&day_key, day(2.5)).await.unwrap();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let error = test.set(&day_key, day(bad)).await.unwrap_err();
            assert_non_finite(&error, "day/x");
            let stored = test.storage().entries().load(&day_key).await.unwrap().unwrap();
            assert_eq!(stored.version, version);
            assert_eq!(serde_json::from_slice::<Day>(&stored.value).unwrap(), day(2.5));
        }
        assert_eq!(*sales_day(&test, "x".to_owned()).await.unwrap(), day(2.5));
    }

    #[tokio::test]
    async fn negative_zero_is_stored_as_zero_on_every_store(test, _source) {
        // The computed value is served as it is; the stored one reads back
        // as 0.0 (PostgreSQL's jsonb has no negative zero), equal to it.
        let served = sales_day(&test, "-0".to_owned()).await.unwrap();
        assert!(served.sales[3].amount.is_sign_negative());
        let stored = test.storage().entries().load(&key("day/-0")).await.unwrap().unwrap();
        let read: Day = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(read, *served);
        assert!(read.sales[3].amount.is_sign_positive());

        let set_key = sales_day::key("set".to_owned());
        test.set(&set_key, day(-0.0)).await.unwrap();
        let stored = test.storage().entries().load(&set_key).await.unwrap().unwrap();
        let read: Day = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(read, day(0.0));
    }

    #[tokio::test]
    async fn a_value_nested_to_the_maximum_depth_reads_back(test, _source) {
        let value = nested(&test, MAX_VALUE_DEPTH).await.unwrap();
        assert_eq!(*value, nest(MAX_VALUE_DEPTH));
        let text = format!("nested/{MAX_VALUE_DEPTH}");
        let stored = test.storage().entries().load(&key(&text)).await.unwrap().unwrap();
        let read: Nest = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(read, nest(MAX_VALUE_DEPTH));

        test.set(&nested::key(1), nest(MAX_VALUE_DEPTH)).await.unwrap();
        let stored = test.storage().entries().load(&nested::key(1)).await.unwrap().unwrap();
        let read: Nest = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(read, nest(MAX_VALUE_DEPTH));
    }

    #[tokio::test]
    async fn a_value_nested_past_the_maximum_depth_is_refused(test, _source) {
        // serde_json would write 128 levels, and never read them back.
        let bytes = serde_json::to_vec(&nest(MAX_VALUE_DEPTH + 1)).unwrap();
        assert!(serde_json::from_slice::<Nest>(&bytes).is_err());

        for depth in [MAX_VALUE_DEPTH + 1, 1_000] {
            let error = nested(&test, depth).await.unwrap_err();
            assert_too_deep(&error);
            let text = format!("nested/{depth}");
            assert!(test.storage().entries().load(&key(&text)).await.unwrap().is_none());

            let error = test.set(&nested::key(2), nest(depth)).await.unwrap_err();
            assert_too_deep(&error);
            assert!(test.storage().entries().load(&nested::key(2)).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_computed_string_with_nul_is_refused_and_not_stored(test, _source) {
        for which in ["field", "key", "char"] {
            let text = format!("note/{which}");
            let error = noted(&test, which.to_owned()).await.unwrap_err();
            assert_nul(&error, &text, nul_note(which).1);
            assert!(test.storage().entries().load(&key(&text)).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn set_refuses_a_string_with_nul_and_keeps_the_stored_value(test, _source) {
        let fresh = noted::key("fresh".to_owned());
        let kept = noted::key("kept".to_owned());
        let good = note("a", "x", 'm');
        let version = test.set(&kept, good.clone()).await.unwrap();
        for which in ["field", "key", "char"] {
            let (bad, path) = nul_note(which);
            let error = test.set(&fresh, bad.clone()).await.unwrap_err();
            assert_nul(&error, "note/fresh", path);
            assert!(test.storage().entries().load(&fresh).await.unwrap().is_none());

            let error = test.set(&kept, bad).await.unwrap_err();
            assert_nul(&error, "note/kept", path);
            let stored = test.storage().entries().load(&kept).await.unwrap().unwrap();
            assert_eq!(stored.version, version);
            assert_eq!(serde_json::from_slice::<Note>(&stored.value).unwrap(), good);
        }
        assert_eq!(*noted(&test, "kept".to_owned()).await.unwrap(), good);
    }

    #[tokio::test]
    async fn other_control_characters_are_stored_and_read_back(test, _source) {
        let (controls, _) = nul_note("controls");
        assert_eq!(*noted(&test, "controls".to_owned()).await.unwrap(), controls);
        let stored = test.storage().entries().load(&key("note/controls")).await.unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Note>(&stored.value).unwrap(), controls);

        let set_key = noted::key("set".to_owned());
        test.set(&set_key, controls.clone()).await.unwrap();
        let stored = test.storage().entries().load(&set_key).await.unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Note>(&stored.value).unwrap(), controls);
        assert_eq!(*noted(&test, "set".to_owned()).await.unwrap(), controls);
    }
}
