//! A worker's job time-out ends the computation it times out, not only the
//! wait: a read of the same key answers instead of hanging, the key is free
//! for the next attempt, the job is retried, and shutdown is not held up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, Source, SourceDown, source, until};
use kck_core::refresh::Worker;
use kck_core::storage::{JobRequest, Lease, RefreshReason};
use kck_core::{ErrorKind, primer};

#[primer(key = "stuck/{name}")]
async fn stuck(ctx: &kck_core::Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

/// Reads its source, then never ends.
#[primer(key = "endless/{name}")]
async fn endless(ctx: &kck_core::Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await?;
    std::future::pending().await
}

/// Starts a worker with a job time-out of `timeout` (retries an hour apart)
/// and a grace period of `grace` on shutdown, and a job of `key`, whose source
/// hangs; returns once the computation started, with the worker's stop
/// signal and task.
async fn hang_a_job(
    test: &Harness,
    source: &Source,
    key: &kck_core::Key,
    timeout: Duration,
    grace: Duration,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), kck_core::Error>>,
) {
    source.hold();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::builder(test.cache())
        .concurrency(1)
        .job_timeout(timeout)
        .retries(3, Duration::from_secs(3600), Duration::from_secs(3600))
        .grace_period(grace)
        .shutdown(async move {
            let _ = stopped.await;
        })
        .build();
    let running = tokio::spawn(worker.run());
    let job = JobRequest::new(key.clone(), test.now(), RefreshReason::Requested);
    test.queue()
        .enqueue(&[job])
        .await
        .expect("the queue takes the job");
    let name = key.params().next().expect("one parameter").into_owned();
    until(|| source.reads(&name) == 1).await;
    (stop, running)
}

/// Runs a worker with a job time-out of `timeout` on `test`, refreshes a
/// product whose source hangs, and checks what a read of it gets, what the
/// next read gets once the source answers, and that the worker stops.
async fn a_hung_refresh_is_stopped_at_the_job_timeout(
    test: Harness,
    source: Arc<Source>,
    timeout: Duration,
) {
    let key = stuck::key("a".into()).key().clone();
    source.set("a", 1);
    let (stop, running) =
        hang_a_job(&test, &source, &key, timeout, Duration::from_secs(3600)).await;

    // A read joins the hung computation, and is answered when it is stopped.
    let cache = test.cache().clone();
    let reader = tokio::spawn(async move { stuck(&cache, "a".into()).await });
    until(|| test.recorder().count(&key, "coalesced") == 1).await;
    let error = reader
        .await
        .expect("the reader does not panic")
        .expect_err("the computation was stopped");
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    assert!(error.is_transient());
    until(|| test.recorder().count(&key, "retry-scheduled") == 1).await;

    // The stopped computation gave its lease back at once: it is not left
    // to run out (30 s). Checked a few times, as the release is on its way.
    let mut free = false;
    for _ in 0..100 {
        let lease =
            test.storage()
                .coordination()
                .acquire_lease(&key, "probe", Duration::from_secs(60));
        match lease.await.expect("the store answers") {
            Lease::Held { .. } => tokio::time::sleep(Duration::from_millis(20)).await,
            Lease::Acquired => {
                let released = test
                    .storage()
                    .coordination()
                    .release_lease(&key, "probe")
                    .await;
                released.expect("the store answers");
                free = true;
                break;
            }
            _ => {
                free = true;
                break;
            }
        }
    }
    assert!(free, "the lease of the stopped computation is still held");

    // The key is free: the next read computes it.
    source.open();
    let value = stuck(test.cache(), "a".into()).await;
    assert_eq!(*value.expect("computed again"), 1);
    assert_eq!(source.reads("a"), 2);

    // The retry waits an hour; the worker stops at once all the same.
    stop.send(()).expect("the worker listens");
    let stopped = running.await.expect("the worker does not panic");
    stopped.expect("the worker stops cleanly");
}

/// Paused time: the time-out fires when the runtime has nothing else to do.
#[tokio::test(start_paused = true)]
async fn on_memory() {
    let source = Source::new();
    let test = common::on_memory(&source);
    a_hung_refresh_is_stopped_at_the_job_timeout(test, source, Duration::from_secs(60)).await;
}

/// Real time: a database round trip must not count as idle time, so the
/// clock is not paused; the time-out is short instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres() {
    let source = Source::new();
    let Some(test) = common::on_postgres(&source).await else {
        return;
    };
    a_hung_refresh_is_stopped_at_the_job_timeout(test, source, Duration::from_millis(300)).await;
}

/// A worker told to stop while a job hangs stops at the job's time-out,
/// however long its grace period, and the hung computation goes with it.
#[tokio::test(start_paused = true)]
async fn a_hung_job_does_not_hold_up_shutdown_past_its_timeout() {
    let source = Source::new();
    let test = common::on_memory(&source);
    let key = stuck::key("b".into()).key().clone();
    let (stop, running) = hang_a_job(
        &test,
        &source,
        &key,
        Duration::from_secs(60),
        Duration::from_secs(3600),
    )
    .await;
    stop.send(()).expect("the worker listens");
    let started = tokio::time::Instant::now();
    let stopped = running.await.expect("the worker does not panic");
    stopped.expect("the worker stops cleanly");
    assert!(started.elapsed() <= Duration::from_secs(60));
    // Nothing of the computation is left running.
    test.cache().wait_idle().await;
}

/// A job still running when the grace period ends is stopped and given
/// back to the queue, pending and due, its attempt not counted: the next
/// worker takes it at once instead of waiting for its claim to run out.
#[tokio::test(start_paused = true)]
async fn a_job_still_running_after_the_grace_period_is_given_back() {
    let source = Source::new();
    let test = common::on_memory(&source);
    let key = stuck::key("c".into()).key().clone();
    let (stop, running) = hang_a_job(
        &test,
        &source,
        &key,
        Duration::from_secs(3600),
        Duration::from_secs(5),
    )
    .await;
    stop.send(()).expect("the worker listens");
    running
        .await
        .expect("the worker does not panic")
        .expect("the worker stops cleanly");
    let jobs = test.queue().jobs_of(&key).await.expect("the queue answers");
    assert!(jobs.running.is_empty(), "no claim is left: {jobs:?}");
    let pending = jobs.pending.expect("the job is pending again");
    assert_eq!(pending.attempts, 0, "the stopped attempt does not count");
    assert!(pending.due_at <= test.now(), "and it is due");
    // Its computation was stopped with it: nothing of it runs on.
    test.cache().wait_idle().await;
}

/// A job that finishes during the grace period is completed then, not at
/// its end: its claim is no longer renewed, and would otherwise run out
/// (the lease is shorter than the grace period) and the job run twice.
#[tokio::test(start_paused = true)]
async fn a_job_that_finishes_during_the_grace_period_is_completed_at_once() {
    let source = Source::new();
    let test = common::on_memory(&source);
    let done = stuck::key("done".into()).key().clone();
    let hung = endless::key("hung".into()).key().clone();
    source.hold();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = Worker::builder(test.cache())
        .concurrency(2)
        .lease(Duration::from_secs(30))
        .job_timeout(Duration::from_secs(7200))
        .grace_period(Duration::from_secs(3600))
        .shutdown(async move {
            let _ = stopped.await;
        })
        .build();
    let running = tokio::spawn(worker.run());
    let jobs = [&done, &hung]
        .map(|key| JobRequest::new(key.clone(), test.now(), RefreshReason::Requested));
    test.queue()
        .enqueue(&jobs)
        .await
        .expect("the queue takes the jobs");
    until(|| source.reads("done") == 1 && source.reads("hung") == 1).await;
    stop.send(()).expect("the worker listens");
    source.open();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = test
        .queue()
        .jobs_of(&done)
        .await
        .expect("the queue answers");
    assert!(
        settled.running.is_empty() && settled.pending.is_none(),
        "the finished job is completed within the grace period: {settled:?}"
    );
    let still = test
        .queue()
        .jobs_of(&hung)
        .await
        .expect("the queue answers");
    assert_eq!(
        still.running.len(),
        1,
        "the other one still runs: {still:?}"
    );
    running
        .await
        .expect("the worker does not panic")
        .expect("the worker stops cleanly");
    let given_back = test
        .queue()
        .jobs_of(&hung)
        .await
        .expect("the queue answers");
    assert!(given_back.running.is_empty(), "{given_back:?}");
    assert!(
        given_back.pending.is_some(),
        "the hung job is pending again"
    );
    test.cache().wait_idle().await;
}
