//! The test helpers themselves: stubs, the recorder, the assertions and the
//! mock clock.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use kck_core::{Ctx, ErrorKind, Key, primer};
use kck_testing::TestCache;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("remote {0} is down")]
struct RemoteDown(u32);

/// Stands for a remote call: tests must never run it.
#[primer(key = "remote/{id}")]
async fn remote(_ctx: &Ctx, id: u32) -> Result<u64, RemoteDown> {
    panic!("the real remote {id} was called")
}

#[primer(key = "doubled/{id}", depends_on = [remote], stale_after = "1m")]
async fn doubled(ctx: &Ctx, id: u32) -> Result<u64, kck_core::Error> {
    Ok(*remote(ctx, id).await? * 2)
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("the assertion fails");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn values_errors_and_closures_replace_the_primer() {
    let test = TestCache::builder()
        .stub_value(remote::key(1), 10)
        .stub_error(remote::key(2), RemoteDown(2))
        .stub_fn::<remote>(|(id,)| Ok(u64::from(id) * 100))
        .build();
    assert_eq!(*doubled(&test, 1).await.unwrap(), 20);
    let error = doubled(&test, 2).await.unwrap_err();
    assert_eq!(error.compute_error::<RemoteDown>(), Some(&RemoteDown(2)));
    assert_eq!(*doubled(&test, 3).await.unwrap(), 600);
    assert_eq!(
        test.stub_reads(),
        [key("remote/1"), key("remote/2"), key("remote/3")]
    );
}

#[tokio::test]
async fn a_read_without_a_stub_fails_naming_the_key() {
    let test = TestCache::builder().stub_value(remote::key(1), 10).build();
    let error = doubled(&test, 9).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panicked);
    assert!(
        error
            .to_string()
            .contains("kck-testing: no stub for `remote/9`"),
        "{error}"
    );
}

#[tokio::test]
async fn stubs_change_after_the_build_and_the_clock_moves() {
    let test = TestCache::builder().stub_value(remote::key(1), 1).build();
    assert_eq!(*doubled(&test, 1).await.unwrap(), 2);
    test.stub_value(remote::key(1), 5).await;
    let start = test.now();
    test.advance(Duration::from_secs(61));
    assert_eq!(test.now(), start + Duration::from_secs(61));
    test.settle().await;
    assert_eq!(*doubled(&test, 1).await.unwrap(), 10);
    test.assert_computed(&key("doubled/1"), 2);
    assert_eq!(test.computed_keys(), [key("remote/1"), key("doubled/1")]);
}

#[tokio::test]
async fn failed_assertions_explain_themselves() {
    let test = TestCache::builder().stub_value(remote::key(1), 1).build();
    doubled(&test, 1).await.unwrap();
    doubled(&test, 1).await.unwrap();
    let message = panic_message(|| test.assert_computed(&key("doubled/1"), 2));
    assert_eq!(
        message,
        "expected `doubled/1` to be computed 2 time(s), it was computed 1 time(s); its events:\n  miss doubled/1\n  computed doubled/1\n  hit doubled/1"
    );
    let message = panic_message(|| test.assert_stub_read(&key("remote/2")));
    assert_eq!(
        message,
        "expected the stub of `remote/2` to be read; stubs read: [Key(\"remote/1\")]"
    );
    let message = panic_message(|| test.assert_not_computed(&key("remote/1")));
    assert!(
        message.starts_with("expected `remote/1` to be computed 0 time(s)"),
        "{message}"
    );

    test.clear_events();
    assert!(test.events().is_empty());
    test.assert_not_computed(&key("doubled/1"));
}
