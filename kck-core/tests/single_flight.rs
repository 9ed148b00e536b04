//! Single flight: concurrent reads of one key share one computation, its
//! value, its error or its panic; cancelled callers hurt nobody.

mod common;

use std::future::Future as _;
use std::sync::Arc;

use common::{Source, SourceDown, on_every_store, source, test_cache, until, until_waiting};
use kck_core::{Ctx, ErrorKind, primer};

#[primer(key = "slow_number/{name}")]
async fn slow_number(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

#[primer(key = "exploding/{n}")]
async fn exploding(ctx: &Ctx, n: u32) -> Result<i64, SourceDown> {
    let value = source(ctx).read("exploding").await?;
    if value == 0 {
        panic!("boom {n}");
    }
    Ok(value)
}

on_every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_reads_run_one_computation_and_share_its_value(test, source) {
        source.set("a", 7);
        source.hold();
        let test = Arc::new(test);
        let readers: Vec<_> = (0..100)
            .map(|_| {
                let test = test.clone();
                tokio::spawn(async move { slow_number(&*test, "a".into()).await })
            })
            .collect();
        // Every reader is waiting on the held source; one computation runs.
        until_waiting(&test, &slow_number::key("a".into()), 100).await;
        source.open();
        let mut values = Vec::new();
        for reader in readers {
            values.push(reader.await.unwrap().unwrap());
        }
        assert!(values.iter().all(|v| **v == 7));
        assert!(values.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        assert_eq!(source.reads("a"), 1);
        test.assert_computed_once(&slow_number::key("a".into()));
    }
}

on_every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_share_one_error(test, source) {
        source.fail("b", true);
        source.hold();
        let test = Arc::new(test);
        let readers: Vec<_> = (0..20)
            .map(|_| {
                let test = test.clone();
                tokio::spawn(async move { slow_number(&*test, "b".into()).await })
            })
            .collect();
        until_waiting(&test, &slow_number::key("b".into()), 20).await;
        source.open();
        let mut errors = Vec::new();
        for reader in readers {
            errors.push(reader.await.unwrap().unwrap_err());
        }
        assert_eq!(source.reads("b"), 1);
        for error in &errors {
            assert_eq!(error.kind(), ErrorKind::Compute);
            assert_eq!(
                error.compute_error::<SourceDown>(),
                Some(&SourceDown("b".into()))
            );
        }
        // A failed first computation stores nothing: the next read tries again.
        source.fail("b", false);
        source.set("b", 3);
        assert_eq!(*slow_number(&*test, "b".into()).await.unwrap(), 3);
        assert_eq!(source.reads("b"), 2);
    }
}

on_every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_computation_fails_every_waiter_and_poisons_nothing(test, source) {
        source.hold();
        let test = Arc::new(test);
        let readers: Vec<_> = (0..10)
            .map(|_| {
                let test = test.clone();
                tokio::spawn(async move { exploding(&*test, 1).await })
            })
            .collect();
        until_waiting(&test, &exploding::key(1), 10).await;
        source.open();
        for reader in readers {
            let error = reader.await.unwrap().unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Panicked);
            assert!(error.to_string().contains("boom 1"), "{error}");
        }
        // The same key computes again, and other keys are unaffected.
        source.set("exploding", 5);
        assert_eq!(*exploding(&*test, 1).await.unwrap(), 5);
        assert_eq!(*exploding(&*test, 2).await.unwrap(), 5);
    }
}

on_every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_caller_does_not_stop_the_computation_others_wait_for(test, source) {
        source.set("c", 11);
        source.hold();
        let test = Arc::new(test);
        let first = {
            let test = test.clone();
            tokio::spawn(async move { slow_number(&*test, "c".into()).await })
        };
        let second = {
            let test = test.clone();
            tokio::spawn(async move { slow_number(&*test, "c".into()).await })
        };
        // Wait until the computation is running, then cancel the first caller.
        until_waiting(&test, &slow_number::key("c".into()), 2).await;
        until(|| source.reads("c") == 1).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        source.open();
        assert_eq!(*second.await.unwrap().unwrap(), 11);
        assert_eq!(source.reads("c"), 1);
    }
}

on_every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_readers_of_a_cold_key_run_the_computation_once(test, source) {
        source.set("cold", 1);
        source.hold();
        let test = Arc::new(test);
        let readers: Vec<_> = (0..10_000)
            .map(|_| {
                let test = test.clone();
                tokio::spawn(async move { slow_number(&*test, "cold".into()).await.map(|v| *v) })
            })
            .collect();
        until_waiting(&test, &slow_number::key("cold".into()), 10_000).await;
        source.open();
        for reader in readers {
            assert_eq!(reader.await.unwrap().unwrap(), 1);
        }
        assert_eq!(source.reads("cold"), 1);
    }
}

#[test]
fn outside_a_tokio_runtime_reads_fail_with_a_clear_error() {
    let source = Source::new();
    let test = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async { test_cache(&source) })
    };
    let mut read = std::pin::pin!(slow_number(&test, "x".into()));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    let std::task::Poll::Ready(result) = read.as_mut().poll(&mut context) else {
        panic!("a read outside a runtime must fail at once");
    };
    assert_eq!(result.unwrap_err().kind(), ErrorKind::NoRuntime);
}

#[test]
fn a_computation_dropped_with_its_runtime_fails_its_waiters_instead_of_hanging() {
    let source = Source::new();
    source.set("d", 1);
    source.hold();
    let leader_runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let test = Arc::new(leader_runtime.block_on(async { test_cache(&source) }));
    let waiter_runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // The computation starts on the leader's runtime and waits on the source.
    let leader = {
        let test = test.clone();
        leader_runtime.spawn(async move { slow_number(&*test, "d".into()).await })
    };
    leader_runtime.block_on(until(|| source.reads("d") == 1));
    // Another runtime's read joins it.
    let waiter = {
        let test = test.clone();
        waiter_runtime.spawn(async move { slow_number(&*test, "d".into()).await })
    };
    waiter_runtime.block_on(until_waiting(&test, &slow_number::key("d".into()), 2));

    // The leader's runtime goes away with the computation on it.
    drop(leader);
    drop(leader_runtime);
    let error = waiter_runtime.block_on(waiter).unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Aborted);
    assert!(error.is_transient());

    // The key is not blocked: the next read computes.
    source.open();
    assert_eq!(
        *waiter_runtime
            .block_on(slow_number(&*test, "d".into()))
            .unwrap(),
        1
    );
}
