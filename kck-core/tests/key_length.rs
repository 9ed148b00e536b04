//! Keys longer than `MAX_KEY_LEN` bytes are refused with
//! `KeyError::TooLong`, the same on every store; a key at the limit works.

mod common;

use std::convert::Infallible;

use common::on_every_store;
use kck_core::key::{KeyError, MAX_KEY_LEN};
use kck_core::{Ctx, Error, ErrorKind, Key, TypedKey, primer};

#[primer(key = "long/{name}")]
async fn long(_ctx: &Ctx, name: String) -> Result<usize, Infallible> {
    Ok(name.len())
}

/// The parameter that makes `long/{name}` exactly `len` bytes long.
fn name_for(len: usize) -> String {
    "n".repeat(len - "long/".len())
}

fn assert_too_long(error: &Error) {
    assert_eq!(error.kind(), ErrorKind::InvalidKey, "{error}");
    match error {
        Error::InvalidKey(KeyError::TooLong { prefix, len, max }) => {
            assert_eq!((*len, *max), (MAX_KEY_LEN + 1, MAX_KEY_LEN));
            assert_eq!(prefix.len(), 64);
        }
        other => panic!("expected a key too long, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.len() < 200, "the key is truncated: {message}");
    assert!(message.contains("past the maximum of 1024"), "{message}");
}

#[test]
fn parsing_a_key_past_the_limit_is_too_long() {
    let at_limit = format!("long/{}", name_for(MAX_KEY_LEN));
    assert!(Key::parse(&at_limit).is_ok());
    let past = format!("long/{}", name_for(MAX_KEY_LEN + 1));
    let error = Key::parse(&past).unwrap_err();
    assert_too_long(&Error::InvalidKey(error));
}

on_every_store! {
    #[tokio::test]
    async fn a_key_at_the_limit_is_computed_and_stored(test, _source) {
        let name = name_for(MAX_KEY_LEN);
        assert_eq!(*long(&test, name.clone()).await.unwrap(), MAX_KEY_LEN - 5);
        let key = long::key(name);
        assert_eq!(key.as_str().len(), MAX_KEY_LEN);
        assert!(test.storage().entries().load(&key).await.unwrap().is_some());
        let parsed = test.parse_key(key.as_str()).unwrap();
        assert!(TypedKey::<long>::from_key(parsed).is_ok());
    }

    #[tokio::test]
    async fn a_key_past_the_limit_is_too_long_and_nothing_is_stored(test, _source) {
        let name = name_for(MAX_KEY_LEN + 1);
        let error = long(&test, name.clone()).await.unwrap_err();
        assert_too_long(&error);
        let key = long::key(name);
        assert!(test.storage().entries().load(&key).await.unwrap().is_none());

        assert_too_long(&test.parse_key(key.as_str()).unwrap_err());
        assert_too_long(&test.refresh_key(&key).await.unwrap_err());
        assert_too_long(&test.get_json(&key).await.unwrap_err());
        assert_too_long(&test.cache().set(&key, 1).await.unwrap_err());
        assert!(test.storage().entries().load(&key).await.unwrap().is_none());
    }
}
