//! The cache API besides getters: peek, set, refresh, invalidate, remove,
//! string keys, entry metadata, and what happens to stored values that no
//! longer decode or were computed by other code.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Source, SourceDown, on_every_store, source};
use kck_core::key::KeyError;
use kck_core::storage::Version;
use kck_core::storage::{ContentHash, Entry, EntryMeta, EntryStore, Expect, Saved};
use kck_core::{Ctx, Error, ErrorKind, Key, primer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    store: u32,
    total: i64,
}

#[primer(key = "report/{store}", stale_after = "1m", depends_on = [sales])]
async fn report(ctx: &Ctx, store: u32) -> Result<Report, Error> {
    let total = *sales(ctx, store).await?;
    Ok(Report { store, total })
}

#[primer(key = "sales/{store}")]
async fn sales(ctx: &Ctx, store: u32) -> Result<i64, SourceDown> {
    source(ctx).read(&format!("sales:{store}")).await
}

/// Its value cannot be serialized as JSON (map keys must be strings).
#[primer(key = "unserializable")]
async fn unserializable(_ctx: &Ctx) -> Result<HashMap<(u8, u8), u8>, SourceDown> {
    Ok(HashMap::from([((1, 2), 3)]))
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

on_every_store! {
    #[tokio::test]
    async fn peek_never_computes_and_never_refreshes(test, source) {
        source.set("sales:1", 10);
        assert_eq!(test.peek(&report::key(1)).await.unwrap(), None);
        test.assert_not_computed(&key("report/1"));

        report(&test, 1).await.unwrap();
        test.advance(Duration::from_secs(120));
        let peeked = test.peek(&report::key(1)).await.unwrap().unwrap();
        assert_eq!(peeked.total, 10, "a stale value is peeked");
        test.settle().await;
        test.assert_computed_once(&key("report/1"));
    }
}

on_every_store! {
    #[tokio::test]
    async fn set_writes_a_value_bumps_the_version_and_reaches_dependents(test, source) {
        source.set("sales:1", 10);
        report(&test, 1).await.unwrap();
        let before = test.entry(&key("sales/1")).await.unwrap().unwrap().version;

        let version = test.set(&sales::key(1), 99).await.unwrap();
        assert!(version > before);
        assert_eq!(*sales(&test, 1).await.unwrap(), 99);
        test.settle().await;
        assert_eq!(report(&test, 1).await.unwrap().total, 99);

        // Setting the same value again bumps the version, and changes nothing
        // downstream.
        let again = test.set(&sales::key(1), 99).await.unwrap();
        assert!(again > version);
        test.settle().await;
        test.assert_computed(&key("report/1"), 2);
    }
}

on_every_store! {
    #[tokio::test]
    async fn refresh_recomputes_now_and_returns_the_new_value(test, source) {
        source.set("sales:2", 1);
        assert_eq!(*sales(&test, 2).await.unwrap(), 1);
        source.set("sales:2", 2);
        assert_eq!(*sales(&test, 2).await.unwrap(), 1, "still cached");
        assert_eq!(*test.refresh(&sales::key(2)).await.unwrap(), 2);
        assert_eq!(*sales(&test, 2).await.unwrap(), 2);

        // A failed refresh is reported to whoever asked for it.
        source.fail("sales:2", true);
        let error = test.refresh(&sales::key(2)).await.unwrap_err();
        assert_eq!(
            error.compute_error::<SourceDown>(),
            Some(&SourceDown("sales:2".into()))
        );
    }
}

on_every_store! {
    #[tokio::test]
    async fn remove_forgets_the_entry_and_the_next_read_computes(test, _source) {
        sales(&test, 3).await.unwrap();
        assert!(test.remove(&sales::key(3)).await.unwrap());
        assert!(!test.remove(&sales::key(3)).await.unwrap());
        assert!(test.entry(&key("sales/3")).await.unwrap().is_none());
        sales(&test, 3).await.unwrap();
        test.assert_computed(&key("sales/3"), 2);
    }
}

on_every_store! {
    #[tokio::test]
    async fn entries_carry_versions_timestamps_hashes_and_code_versions(test, source) {
        source.set("sales:4", 7);
        let start = test.now();
        report(&test, 4).await.unwrap();
        let stored = test.entry(&key("report/4")).await.unwrap().unwrap();
        let meta = &stored.meta;
        assert_eq!(meta.computed_at, start);
        assert_eq!(meta.changed_at, start);
        assert_eq!(meta.stale_at, Some(start + Duration::from_secs(60)));
        assert_eq!(meta.expires_at, None);
        assert_eq!(
            meta.code_version,
            <report as kck_core::Primer>::DEF.code_version
        );
        assert_eq!(
            meta.content_hash,
            ContentHash::of(br#"{"store":4,"total":7}"#)
        );
        // As JSON: PostgreSQL keeps it as jsonb, in its own layout.
        let value: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(value, serde_json::json!({ "store": 4, "total": 7 }));
        assert_eq!(
            test.dependencies(&key("report/4")).await.unwrap(),
            [key("sales/4")]
        );
        let sales_version = test.entry(&key("sales/4")).await.unwrap().unwrap().version;
        assert!(stored.version > sales_version, "versions grow across keys");
    }
}

on_every_store! {
    #[tokio::test]
    async fn string_keys_go_through_the_registry(test, source) {
        source.set("sales:5", 12);
        let key = test.parse_key("report/5").unwrap();
        assert_eq!(
            test.get_json(&key).await.unwrap(),
            serde_json::json!({ "store": 5, "total": 12 })
        );
        source.set("sales:5", 13);
        test.refresh_key(&test.parse_key("sales/5").unwrap())
            .await
            .unwrap();
        test.settle().await;
        assert_eq!(test.get_json(&key).await.unwrap()["total"], 13);
    }
}

on_every_store! {
    #[tokio::test]
    async fn malformed_string_keys_get_typed_errors(test, _source) {
        let invalid = |text: &str| match test.parse_key(text) {
            Err(Error::InvalidKey(error)) => error,
            other => panic!("expected an invalid key for {text:?}, got {other:?}"),
        };
        assert_eq!(invalid(""), KeyError::Empty);
        assert!(matches!(
            invalid("report store/1"),
            KeyError::InvalidName { .. }
        ));
        assert!(matches!(
            invalid("report/%zz"),
            KeyError::InvalidEscape { .. }
        ));
        assert!(matches!(
            invalid("report/1/2"),
            KeyError::WrongParamCount {
                expected: 1,
                found: 2,
                ..
            }
        ));
        assert!(matches!(
            invalid("report/seven"),
            KeyError::InvalidParam { param: "store", .. }
        ));
        assert_eq!(
            invalid("report/007").to_string(),
            "key `report/007` is not in canonical form; the same parameters are written `report/7`"
        );
        assert_eq!(
            invalid("report/-1").to_string(),
            "parameter `store` of key `report/-1` is invalid: expected an unsigned 32-bit integer"
        );
        let unknown = test.parse_key("nope/1").unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::UnknownPrimer);
        assert_eq!(
            unknown.to_string(),
            "unknown primer `nope`: no primer of this name is registered with the cache"
        );
        // An unchecked key of an unknown primer is refused the same way.
        let error = test.get_json(&key("nope/1")).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::UnknownPrimer);
    }
}

/// Writes raw bytes as the stored value of `key`, as a process running
/// other code might have.
async fn store_raw(store: &dyn EntryStore, key: &Key, value: &[u8], code_version: &str) -> Version {
    let now = kck_core::clock::Timestamp::UNIX_EPOCH;
    let entry = Entry {
        key: key.clone(),
        value: value.to_vec(),
        meta: EntryMeta {
            computed_at: now,
            changed_at: now,
            stale_at: None,
            refresh_at: None,
            expires_at: None,
            content_hash: ContentHash::of(value),
            code_version: code_version.to_owned(),
            compute_duration: Duration::ZERO,
            last_error: None,
            read_at: None,
        },
        dependencies: Vec::new(),
    };
    match store
        .save(entry, Expect::Any)
        .await
        .expect("the memory store never fails")
    {
        Saved::Written(version) => version,
        Saved::Conflict { .. } => unreachable!("Expect::Any always writes"),
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_value_that_no_longer_decodes_is_a_miss_not_an_error(test, source) {
        source.set("sales:6", 3);
        let code = <report as kck_core::Primer>::DEF.code_version;
        let key = key("report/6");
        let old = store_raw(&**test.storage().entries(), &key, br#"{"store":6,"sum":3}"#, code).await;

        assert_eq!(report(&test, 6).await.unwrap().total, 3);
        assert_eq!(
            test.recorder().kinds_of(&key),
            ["miss", "decode-failed", "computed"]
        );
        let stored = test.entry(&key).await.unwrap().unwrap();
        assert!(stored.version > old, "the recompute replaced the entry");
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_value_from_another_code_version_is_a_miss(test, source) {
        source.set("sales:7", 4);
        let key = key("report/7");
        store_raw(
            &**test.storage().entries(),
            &key,
            br#"{"store":7,"total":1000}"#,
            "old-code",
        )
        .await;

        assert_eq!(report(&test, 7).await.unwrap().total, 4);
        assert_eq!(
            test.recorder().kinds_of(&key),
            ["miss", "outdated", "computed"]
        );
        // `peek` does not serve it either.
        let other = report::key(8);
        store_raw(
            &**test.storage().entries(),
            &other,
            br#"{"store":8,"total":1}"#,
            "old-code",
        )
        .await;
        assert_eq!(test.peek(&other).await.unwrap(), None);
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_value_that_cannot_be_serialized_is_an_encode_error(test, _source) {
        let error = unserializable(&test).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Encode);
        assert!(
            error
                .to_string()
                .starts_with("serializing the value of `unserializable` failed")
        );
        assert!(test.entry(&key("unserializable")).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_getter_of_a_primer_missing_from_the_registry_is_an_unknown_primer() {
    let registry = kck_core::primer::Registry::builder()
        .register::<sales>()
        .build()
        .unwrap();
    let test = kck_testing::TestCache::builder()
        .registry(registry)
        .configure({
            let source = Source::new();
            move |builder| builder.state(source.clone())
        })
        .build();
    assert!(sales(&test, 1).await.is_ok());
    let error = report(&test, 1).await.unwrap_err();
    assert!(matches!(&error, Error::UnknownPrimer { name } if name == "report"));
}

#[tokio::test]
async fn typed_keys_read_their_parameters_back() {
    let key = kck_core::TypedKey::<report>::from_key(key("report/12")).unwrap();
    assert_eq!(key.params(), &(12,));
    let wrong = kck_core::TypedKey::<report>::from_key(self::key("sales/12")).unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "key `sales/12` is not a key of primer `report`"
    );
}

mod renamed {
    //! `crate = path` for a renamed or re-exported kck, and an explicit code
    //! version.
    pub(crate) use ::kck_core as kck;

    #[kck::primer(key = "versioned/{n}", version = "2026-11", crate = kck)]
    pub(crate) async fn versioned(
        _ctx: &kck::Ctx,
        n: u32,
    ) -> Result<u32, std::convert::Infallible> {
        Ok(n)
    }
}

on_every_store! {
    #[tokio::test]
    async fn the_code_version_and_the_crate_path_can_be_given(test, _source) {
        use kck_core::Primer;
        assert_eq!(renamed::versioned::DEF.code_version, "2026-11");
        assert_eq!(*renamed::versioned(&test, 4).await.unwrap(), 4);
        let stored = test.entry(&key("versioned/4")).await.unwrap().unwrap();
        assert_eq!(stored.meta.code_version, "2026-11");
    }
}

#[test]
fn the_code_version_is_derived_from_the_function() {
    use kck_core::Primer;
    let version = sales::DEF.code_version;
    assert_eq!(version.len(), 16);
    assert!(version.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(version, report::DEF.code_version);
}
