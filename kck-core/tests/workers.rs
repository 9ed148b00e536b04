//! Workers, on the mock clock: failed refreshes are retried with back-off
//! and finally kept as failed; panics and jobs that cannot run never stop a
//! worker; a worker runs until told to stop.

mod common;

use std::time::Duration;

use common::{Source, SourceDown, on_every_store, source, until};
use kck_core::event::EventKind;
use kck_core::refresh::Worker;
use kck_core::storage::{JobRequest, RefreshReason};
use kck_core::{Cache, Ctx, Key, primer};

const SECOND: Duration = Duration::from_secs(1);

#[primer(key = "flaky/{n}", stale_after = "1m", stale_if_error)]
async fn flaky(ctx: &Ctx, n: u32) -> Result<i64, SourceDown> {
    source(ctx).read(&format!("flaky:{n}")).await
}

#[primer(key = "touchy/{n}")]
async fn touchy(ctx: &Ctx, n: u32) -> Result<i64, SourceDown> {
    let value = source(ctx).read("touchy").await?;
    if value < 0 {
        panic!("touchy {n} cannot take {value}");
    }
    Ok(value)
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

/// The retries scheduled for `key` so far: (attempt, due time).
fn retries(test: &kck_testing::TestCache, key: &Key) -> Vec<(u32, kck_core::clock::Timestamp)> {
    test.recorder()
        .events_of(key)
        .into_iter()
        .filter_map(|event| match event.kind {
            EventKind::RetryScheduled { attempt, at, .. } => Some((attempt, at)),
            _ => None,
        })
        .collect()
}

on_every_store! {
    #[tokio::test]
    async fn a_failed_refresh_is_retried_with_back_off_until_it_succeeds(test, source) {
        let key = key("flaky/1");
        source.set("flaky:1", 1);
        flaky(&test, 1).await.unwrap();
        test.advance(2 * 60 * SECOND);
        source.fail("flaky:1", true);
        assert_eq!(*flaky(&test, 1).await.unwrap(), 1, "stale, served");
        test.settle().await;

        // First attempt failed: the next waits 1 s (and up to a quarter more).
        let scheduled = retries(&test, &key);
        assert_eq!(scheduled.len(), 1);
        let (attempt, due) = scheduled[0];
        assert_eq!(attempt, 1);
        let waited = due.saturating_duration_since(test.now());
        assert!(waited >= SECOND && waited <= SECOND * 5 / 4, "{waited:?}");
        test.settle().await;
        assert_eq!(retries(&test, &key).len(), 1, "not before its time");

        // Second attempt fails too: 2 s more.
        test.advance(SECOND * 5 / 4);
        test.settle().await;
        let scheduled = retries(&test, &key);
        assert_eq!(scheduled.len(), 2);
        let waited = scheduled[1].1.saturating_duration_since(test.now());
        assert!(waited >= 2 * SECOND && waited <= SECOND * 5 / 2, "{waited:?}");

        // The source is back: the third attempt succeeds.
        source.fail("flaky:1", false);
        source.set("flaky:1", 3);
        test.advance(SECOND * 5 / 2);
        test.settle().await;
        assert_eq!(*flaky(&test, 1).await.unwrap(), 3);
        let entry = test.entry(&key).await.unwrap().unwrap();
        assert_eq!(entry.meta.last_error, None, "the error is cleared");
        assert_eq!(test.queue().next_due().await.unwrap(), None, "no job left");
        assert_eq!(test.recorder().count(&key, "job-failed"), 0);
    }
}

on_every_store! {
    #[tokio::test]
    async fn after_the_last_attempt_a_job_is_kept_as_failed_with_its_error(test, source) {
        let key = key("flaky/2");
        source.set("flaky:2", 1);
        flaky(&test, 2).await.unwrap();
        test.advance(2 * 60 * SECOND);
        source.fail("flaky:2", true);
        flaky(&test, 2).await.unwrap();
        // The default is five attempts.
        for _ in 0..5 {
            test.settle().await;
            test.advance(300 * SECOND);
        }
        assert_eq!(retries(&test, &key).len(), 4);
        assert_eq!(test.recorder().count(&key, "job-failed"), 1);
        let failed = test.queue().failed(usize::MAX).await.unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].key, key);
        assert_eq!(failed[0].attempts, 5);
        assert_eq!(failed[0].error, "computing `flaky/2` failed: source `flaky:2` is down");
        // The entry records the error, and keeps serving its value.
        let entry = test.entry(&key).await.unwrap().unwrap();
        assert!(entry.meta.last_error.is_some());
        assert_eq!(*flaky(&test, 2).await.unwrap(), 1);
    }
}

on_every_store! {
    #[tokio::test]
    async fn a_panicking_job_is_a_failed_attempt_and_the_worker_goes_on(test, source) {
        source.set("touchy", 1);
        touchy(&test, 1).await.unwrap();
        touchy(&test, 2).await.unwrap();
        source.set("touchy", -1);
        let now = test.now();
        let jobs = [1, 2].map(|n| JobRequest::new(touchy::key(n).into(), now, RefreshReason::Requested));
        test.queue().enqueue(&jobs).await.unwrap();
        test.settle().await;
        let key = key("touchy/1");
        let retry = test.recorder().events_of(&key).into_iter().find_map(|e| match e.kind {
            EventKind::RetryScheduled { error, .. } => Some(error),
            _ => None,
        });
        assert_eq!(retry.as_deref(), Some("computing `touchy/1` panicked: touchy 1 cannot take -1"));

        // Both jobs ran; once the source is sane, the retries succeed.
        source.set("touchy", 5);
        test.advance(2 * SECOND);
        test.settle().await;
        assert_eq!(*touchy(&test, 1).await.unwrap(), 5);
        assert_eq!(*touchy(&test, 2).await.unwrap(), 5);
    }
}

on_every_store! {
    #[tokio::test]
    async fn jobs_for_unknown_primers_or_malformed_keys_fail_at_once(test, _source) {
        let now = test.now();
        let jobs = [
            JobRequest::new(key("ghost/1"), now, RefreshReason::Requested),
            JobRequest::new(key("flaky/one"), now, RefreshReason::Requested),
        ];
        test.queue().enqueue(&jobs).await.unwrap();
        test.settle().await;
        let mut failed = test.queue().failed(usize::MAX).await.unwrap();
        failed.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0].key, key("flaky/one"));
        assert_eq!(failed[0].attempts, 1, "never retried");
        assert_eq!(
            failed[0].error,
            "parameter `n` of key `flaky/one` is invalid: expected an unsigned 32-bit integer"
        );
        assert_eq!(failed[1].key, key("ghost/1"));
        assert_eq!(
            failed[1].error,
            "unknown primer `ghost`: no primer of this name is registered with the cache"
        );
        assert!(test.events().iter().all(|e| e.kind.name() != "retry-scheduled"));
    }
}

/// A worker of its own, on real time: it runs queued jobs as they come, and
/// stops when told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_until_its_shutdown_signal() {
    let source = Source::new();
    source.set("flaky:9", 1);
    let recorder = kck_testing::EventRecorder::default();
    let cache = Cache::builder()
        .state(source.clone())
        .local_worker(false)
        .on_event(recorder.listener())
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::builder(&cache)
        .concurrency(2)
        .shutdown(async move {
            let _ = stopped.await;
        })
        .build();
    let running = tokio::spawn(worker.run());

    let key = key("flaky/9");
    let job = JobRequest::new(key.clone(), cache.now(), RefreshReason::Requested);
    cache.queue().enqueue(&[job]).await.unwrap();
    until(|| recorder.count(&key, "computed") == 1).await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(*flaky(&cache, 9).await.unwrap(), 1);
}
