//! Values that would not read back (non-finite floats, nesting past
//! `MAX_VALUE_DEPTH`) are refused at write with a typed error naming the
//! cause, and never stored: on every store, from a computation and from
//! `Cache::set`.

mod common;

use std::convert::Infallible;

use common::on_every_store;
use kck_core::{Ctx, EncodeError, Error, ErrorKind, Key, MAX_VALUE_DEPTH, primer};
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

on_every_store! {
    #[tokio::test]
    async fn a_computed_non_finite_float_is_refused_and_not_stored(test, _source) {
        for which in ["nan", "inf", "-inf"] {
            let text = format!("day/{which}");
            let error = sales_day(&test, which.to_owned()).await.unwrap_err();
            assert_non_finite(&error, &text);
            assert!(test.store().load(&key(&text)).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn set_refuses_a_non_finite_float_and_keeps_the_stored_value(test, _source) {
        let day_key = sales_day::key("x".to_owned());
        let version = test.set(&day_key, day(2.5)).await.unwrap();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let error = test.set(&day_key, day(bad)).await.unwrap_err();
            assert_non_finite(&error, "day/x");
            let stored = test.store().load(&day_key).await.unwrap().unwrap();
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
        let stored = test.store().load(&key("day/-0")).await.unwrap().unwrap();
        let read: Day = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(read, *served);
        assert!(read.sales[3].amount.is_sign_positive());

        let set_key = sales_day::key("set".to_owned());
        test.set(&set_key, day(-0.0)).await.unwrap();
        let stored = test.store().load(&set_key).await.unwrap().unwrap();
        let read: Day = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(read, day(0.0));
    }

    #[tokio::test]
    async fn a_value_nested_to_the_maximum_depth_reads_back(test, _source) {
        let value = nested(&test, MAX_VALUE_DEPTH).await.unwrap();
        assert_eq!(*value, nest(MAX_VALUE_DEPTH));
        let text = format!("nested/{MAX_VALUE_DEPTH}");
        let stored = test.store().load(&key(&text)).await.unwrap().unwrap();
        let read: Nest = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(read, nest(MAX_VALUE_DEPTH));

        test.set(&nested::key(1), nest(MAX_VALUE_DEPTH)).await.unwrap();
        let stored = test.store().load(&nested::key(1)).await.unwrap().unwrap();
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
            assert!(test.store().load(&key(&text)).await.unwrap().is_none());

            let error = test.set(&nested::key(2), nest(depth)).await.unwrap_err();
            assert_too_deep(&error);
            assert!(test.store().load(&nested::key(2)).await.unwrap().is_none());
        }
    }
}
