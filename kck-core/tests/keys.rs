//! Typed, escaped, canonical keys: every key round-trips between its string
//! and its typed parameters, and no parameter value can address another key.

use std::convert::Infallible;

use kck_core::key::{KeyWriter, ParamError};
use kck_core::primer::Registry;
use kck_core::{Ctx, Key, KeyParam, TypedKey, primer};
use proptest::prelude::*;

/// A user's newtype parameter.
#[derive(Debug, Clone, PartialEq)]
struct Sku(String);

impl KeyParam for Sku {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.write_str("sku-");
        self.0.write_key(out);
    }
    fn parse_key(text: &str) -> Result<Self, ParamError> {
        text.strip_prefix("sku-")
            .map(|rest| Sku(rest.to_owned()))
            .ok_or_else(|| ParamError::new("expected `sku-` and a code"))
    }
}

#[primer(key = "mixed/{id}/{name}/{flag}/{letter}/{sku}")]
async fn mixed(
    _ctx: &Ctx,
    id: i64,
    name: String,
    flag: bool,
    letter: char,
    sku: Sku,
) -> Result<String, Infallible> {
    Ok(format!("{id}{name}{flag}{letter}{sku:?}"))
}

#[primer(key = "reordered/{b}/{a}")]
async fn reordered(_ctx: &Ctx, a: u8, b: &str) -> Result<String, Infallible> {
    Ok(format!("{a}{b}"))
}

#[primer(key = "constant")]
async fn constant(_ctx: &Ctx) -> Result<u8, Infallible> {
    Ok(1)
}

fn registry() -> Registry {
    Registry::from_inventory().expect("valid primers")
}

#[test]
fn keys_follow_the_template_order_and_escape_separators() {
    assert_eq!(reordered::key(3, "x/y").as_str(), "reordered/x%2Fy/3");
    assert_eq!(reordered::key(3, "100%").as_str(), "reordered/100%25/3");
    assert_eq!(constant::key().as_str(), "constant");
    let key = mixed::key(-5, "a b".into(), true, '/', Sku("x".into()));
    assert_eq!(key.as_str(), "mixed/-5/a b/true/%2F/sku-x");
    assert_eq!(
        key.key().params().collect::<Vec<_>>(),
        ["-5", "a b", "true", "/", "sku-x"]
    );
}

#[test]
fn a_newtype_parameter_reports_its_own_error() {
    let error = registry().parse_key("mixed/1/n/true/x/nope").unwrap_err();
    assert_eq!(
        error.to_string(),
        "parameter `sku` of key `mixed/1/n/true/x/nope` is invalid: expected `sku-` and a code"
    );
}

#[cfg(feature = "chrono")]
mod dates {
    use super::*;
    use chrono::NaiveDate;

    #[primer(key = "daily/{day}")]
    async fn daily(_ctx: &Ctx, day: NaiveDate) -> Result<u32, Infallible> {
        Ok(0)
    }

    #[test]
    fn dates_are_iso_8601() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert_eq!(daily::key(day).as_str(), "daily/2026-11-26");
        let parsed = TypedKey::<daily>::from_key(registry().parse_key("daily/2026-11-26").unwrap());
        assert_eq!(parsed.unwrap().params(), &(day,));
        assert!(registry().parse_key("daily/2026-13-01").is_err());
        assert!(
            registry().parse_key("daily/2026-1-1").is_err(),
            "not canonical"
        );
    }
}

#[cfg(feature = "uuid")]
#[test]
fn uuids_are_hyphenated_lower_case() {
    let id = uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
    let mut text = String::new();
    // Written through the same path a key uses.
    let key_text = {
        #[primer(key = "by_id/{id}")]
        async fn by_id(_ctx: &Ctx, id: uuid::Uuid) -> Result<u32, Infallible> {
            Ok(0)
        }
        text.push_str(by_id::key(id).as_str());
        text
    };
    assert_eq!(key_text, "by_id/12345678-9abc-def0-1234-56789abcdef0");
}

proptest! {
    #[test]
    fn typed_parameters_round_trip_through_their_string(
        id in any::<i64>(),
        name in any::<String>(),
        flag in any::<bool>(),
        letter in any::<char>(),
        code in any::<String>(),
    ) {
        let typed = mixed::key(id, name.clone(), flag, letter, Sku(code.clone()));
        prop_assert_eq!(typed.as_str().matches('/').count(), 5);
        let parsed = registry().parse_key(typed.as_str()).unwrap();
        let back = TypedKey::<mixed>::from_key(parsed).unwrap();
        prop_assert_eq!(back.params(), &(id, name, flag, letter, Sku(code)));
    }

    #[test]
    fn every_accepted_string_is_the_canonical_form_of_its_parameters(
        text in "(mixed|reordered)(/[-a-z0-9%2F5]{0,6}){0,6}",
    ) {
        if let Ok(key) = registry().parse_key(&text) {
            let rewritten = match key.primer() {
                "mixed" => TypedKey::<mixed>::new(TypedKey::<mixed>::from_key(key).unwrap().params().clone()).to_string(),
                _ => TypedKey::<reordered>::new(TypedKey::<reordered>::from_key(key).unwrap().params().clone()).to_string(),
            };
            prop_assert_eq!(rewritten, text);
        }
    }

    #[test]
    fn distinct_values_never_share_a_key(a in any::<String>(), b in any::<String>()) {
        prop_assume!(a != b);
        prop_assert_ne!(reordered::key(1, &a).key().clone(), reordered::key(1, &b).key().clone());
    }

    #[test]
    fn key_parsing_never_panics(text in any::<String>()) {
        let _ = Key::parse(&text);
        let _ = registry().parse_key(&text);
    }
}
