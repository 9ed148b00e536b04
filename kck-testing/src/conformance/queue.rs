//! The queue port: the contract every [`Queue`] must keep.
//!
//! It checks: one pending job per key, merged (earliest due time, highest
//! priority, every reason); one running job per key, the next waiting for
//! it; claims in priority then due order, only of due
//! jobs; leases that run out make a job claimable again, and the token then
//! fences the first claimant out; completing finished jobs and claiming new
//! ones at once, even a finished job whose lease ran out; retries come back pending at their time
//! with the attempt counted; deltas kept in order through merges and
//! retries; a job given up is kept as failed with its
//! error; a released job is pending again; the listing of pending jobs,
//! which changes nothing; the next due time; and that
//! watchers hear of new jobs.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{
    Claim, ContentHash, JobCounts, JobDelta, JobId, JobRequest, JobWatcher, KeyJobs, PendingJob,
    Queue, RefreshReason, Turnover,
};
use tokio::sync::watch;

fn key(text: &str) -> Key {
    Key::parse(text).unwrap_or_else(|error| panic!("a valid key: {error}"))
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_767_225_600_000_000 + seconds * 1_000_000)
}

const LEASE: Duration = Duration::from_secs(30);

/// Runs every check against `queue`, which must be empty and used by no one
/// else meanwhile. Times are far in the future of any real clock's jobs.
///
/// # Panics
///
/// On the first broken rule, saying which.
pub async fn check_queue(queue: Arc<dyn Queue>) {
    let (wake, woken) = Counter::new();
    queue.watch_jobs(Arc::downgrade(&wake) as Weak<dyn JobWatcher>);

    merging(&*queue).await;
    ordering(&*queue).await;
    leases_and_fencing(&*queue).await;
    retries_and_failures(&*queue).await;
    operators(&*queue).await;
    release(&*queue).await;
    batches(&*queue).await;
    deltas(&*queue).await;
    let mut woken = woken;
    let heard = tokio::time::timeout(Duration::from_secs(10), woken.wait_for(|n| *n > 0)).await;
    assert!(matches!(heard, Ok(Ok(_))), "watchers hear of new jobs");
}

async fn enqueue(queue: &dyn Queue, jobs: &[JobRequest]) {
    queue
        .enqueue(jobs)
        .await
        .unwrap_or_else(|e| panic!("enqueue: {e}"));
}

async fn claim(
    queue: &dyn Queue,
    worker: &str,
    limit: usize,
    now: Timestamp,
) -> Vec<kck_core::storage::Job> {
    queue
        .claim(worker, limit, LEASE, now)
        .await
        .unwrap_or_else(|e| panic!("claim: {e}"))
}

async fn complete(queue: &dyn Queue, claim: &Claim) -> bool {
    let done = queue
        .complete(std::slice::from_ref(claim))
        .await
        .unwrap_or_else(|e| panic!("complete: {e}"));
    assert_eq!(done.len(), 1, "complete answers for each claim");
    done[0]
}

async fn merging(queue: &dyn Queue) {
    let k = key("queue_merge/1");
    let dependency = RefreshReason::DependencyChanged {
        from: key("queue_merge/source"),
    };
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(20), RefreshReason::Stale)],
    )
    .await;
    let mut urgent = JobRequest::new(k.clone(), at(10), dependency.clone());
    urgent.priority = 5;
    enqueue(
        queue,
        &[
            urgent,
            JobRequest::new(k.clone(), at(30), RefreshReason::Stale),
        ],
    )
    .await;
    assert!(
        claim(queue, "w", 10, at(9)).await.is_empty(),
        "nothing is due before its time"
    );
    let listed = pending(queue, 10).await;
    assert_eq!(listed.len(), 1, "one pending job per key, listed once");
    assert_eq!(
        (listed[0].key.clone(), listed[0].due_at, listed[0].priority),
        (k.clone(), at(10), 5),
        "the listing shows the merged job"
    );
    assert_eq!(
        listed[0].reasons,
        [RefreshReason::Stale, dependency.clone()]
    );
    assert_eq!((listed[0].attempts, listed[0].error.clone()), (0, None));
    assert_eq!(pending(queue, 10).await, listed, "listing changes nothing");
    let jobs = claim(queue, "w", 10, at(10)).await;
    assert_eq!(jobs.len(), 1, "one pending job per key");
    let job = &jobs[0];
    assert_eq!(job.key, k);
    assert_eq!(job.due_at, at(10), "the earliest due time wins");
    assert_eq!(job.priority, 5, "the highest priority wins");
    assert_eq!(
        job.reasons,
        [RefreshReason::Stale, dependency],
        "every reason is kept, once"
    );
    assert_eq!(job.attempts, 0);

    // A claimed job does not absorb new requests: they make a new job.
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(10), RefreshReason::Interval)],
    )
    .await;
    assert!(
        claim(queue, "w", 10, at(10)).await.is_empty(),
        "a key's jobs run one at a time: the new job waits for the running one"
    );
    assert_eq!(
        next_due(queue).await,
        Some(at(10) + LEASE),
        "a waiting job is not due before the running job's lease ends"
    );
    assert!(complete(queue, &job.claim).await);
    let again = claim(queue, "w", 10, at(10)).await;
    assert_eq!(
        again.len(),
        1,
        "a request for a running key made a new pending job, claimed once that job ended"
    );
    assert_eq!(again[0].reasons, [RefreshReason::Interval]);
    assert!(complete(queue, &again[0].claim).await);
    assert!(!complete(queue, &job.claim).await, "a job completes once");

    // The waiting job is claimed in the call that completes the running one.
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(10), RefreshReason::Stale)],
    )
    .await;
    let first = claim(queue, "w", 10, at(10)).await;
    assert_eq!(first.len(), 1);
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(10), RefreshReason::Interval)],
    )
    .await;
    let turnover = queue
        .complete_and_claim(&[first[0].claim.clone()], "w", 10, LEASE, at(10))
        .await
        .unwrap_or_else(|e| panic!("complete_and_claim: {e}"));
    assert_eq!(turnover.completed, [true]);
    assert_eq!(
        turnover.claimed.len(),
        1,
        "completing a key's job lets its waiting job be claimed at once"
    );
    assert_eq!(turnover.claimed[0].reasons, [RefreshReason::Interval]);
    assert!(complete(queue, &turnover.claimed[0].claim).await);
}

async fn next_due(queue: &dyn Queue) -> Option<Timestamp> {
    queue
        .next_due()
        .await
        .unwrap_or_else(|e| panic!("next_due: {e}"))
}

async fn ordering(queue: &dyn Queue) {
    let mut low = JobRequest::new(key("queue_order/low"), at(100), RefreshReason::Stale);
    low.priority = -1;
    let late = JobRequest::new(key("queue_order/late"), at(102), RefreshReason::Stale);
    let early = JobRequest::new(key("queue_order/early"), at(101), RefreshReason::Stale);
    let mut high = JobRequest::new(key("queue_order/high"), at(103), RefreshReason::Stale);
    high.priority = 3;
    let mut later = JobRequest::new(key("queue_order/later"), at(500), RefreshReason::Stale);
    later.priority = 9;
    enqueue(queue, &[low, late, early, high, later]).await;
    let listed: Vec<Key> = pending(queue, 10)
        .await
        .into_iter()
        .map(|j| j.key)
        .collect();
    assert_eq!(
        listed,
        ["later", "high", "early", "late", "low"].map(|n| key(&format!("queue_order/{n}"))),
        "pending jobs are listed in claim order, due or not"
    );
    assert_eq!(
        pending(queue, 2).await.len(),
        2,
        "at most `limit` are listed"
    );
    let jobs = claim(queue, "w", 10, at(200)).await;
    let order: Vec<Key> = jobs.iter().map(|j| j.key.clone()).collect();
    assert_eq!(
        order,
        ["high", "early", "late", "low"].map(|n| key(&format!("queue_order/{n}"))),
        "higher priority first, then earlier due; a job not yet due waits"
    );
    assert!(
        claim(queue, "w", 10, at(201)).await.is_empty(),
        "claimed jobs are not claimed twice while their lease runs"
    );
    for job in &jobs {
        assert!(complete(queue, &job.claim).await);
    }
    let later = claim(queue, "w", 10, at(500)).await;
    assert_eq!(later.len(), 1, "the later job is claimed when due");
    assert!(complete(queue, &later[0].claim).await);
}

async fn leases_and_fencing(queue: &dyn Queue) {
    let k = key("queue_lease/1");
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(1000), RefreshReason::Stale)],
    )
    .await;
    let first = claim(queue, "a", 1, at(1000)).await.remove(0);
    let extended = queue
        .extend(std::slice::from_ref(&first.claim), LEASE, at(1020))
        .await;
    assert_eq!(
        extended.ok(),
        Some(vec![true]),
        "the holder extends its lease"
    );
    assert!(
        claim(queue, "b", 1, at(1049)).await.is_empty(),
        "an extended lease holds"
    );
    let second = claim(queue, "b", 1, at(1051)).await;
    assert_eq!(
        second.len(),
        1,
        "a job whose lease ran out is claimed again"
    );
    let second = &second[0];
    assert_ne!(
        second.claim.token, first.claim.token,
        "each claim has its own token"
    );
    assert!(
        !complete(queue, &first.claim).await,
        "the first claimant is fenced out"
    );
    assert_eq!(
        queue
            .extend(std::slice::from_ref(&first.claim), LEASE, at(1052))
            .await
            .ok(),
        Some(vec![false]),
        "and cannot extend"
    );
    let failed = queue.fail(&first.claim, "late", None).await.ok();
    assert_eq!(failed, Some(false), "nor fail the job");
    assert!(
        complete(queue, &second.claim).await,
        "the second claimant completes"
    );
}

async fn retries_and_failures(queue: &dyn Queue) {
    let k = key("queue_retry/1");
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(2000), RefreshReason::Stale)],
    )
    .await;
    let job = claim(queue, "w", 1, at(2000)).await.remove(0);
    let retried = queue.fail(&job.claim, "boom", Some(at(2010))).await.ok();
    assert_eq!(retried, Some(true));
    assert_eq!(
        queue.next_due().await.ok().flatten(),
        Some(at(2010)),
        "the retry is the next due"
    );
    assert!(
        claim(queue, "w", 1, at(2009)).await.is_empty(),
        "a retry waits for its time"
    );
    let listed = pending(queue, 10).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].due_at,
            listed[0].attempts,
            listed[0].error.as_deref()
        ),
        (at(2010), 1, Some("boom")),
        "a job waiting for its retry is listed with its attempts and error"
    );
    let job = claim(queue, "w", 1, at(2010)).await.remove(0);
    assert_eq!(job.attempts, 1, "the attempt is counted");
    assert_eq!(
        queue.fail(&job.claim, "boom again", None).await.ok(),
        Some(true)
    );
    assert!(
        claim(queue, "w", 1, at(9999)).await.is_empty(),
        "a failed job is not claimed"
    );
    let failed = queue
        .failed(usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("failed: {e}"));
    assert!(
        failed
            .windows(2)
            .all(|w| (&w[0].key, w[0].id.0) < (&w[1].key, w[1].id.0)),
        "failed jobs are listed by key, then id"
    );
    let first = queue
        .failed(1)
        .await
        .unwrap_or_else(|e| panic!("failed: {e}"));
    assert_eq!(first, failed[..1], "a limit keeps the first failed jobs");
    let failed: Vec<_> = failed.into_iter().filter(|f| f.key == k).collect();
    assert_eq!(failed.len(), 1, "the job is kept as failed");
    assert_eq!(failed[0].attempts, 2);
    assert_eq!(failed[0].error, "boom again", "with its last error");
    assert_eq!(failed[0].reasons, [RefreshReason::Stale]);
    assert!(
        pending(queue, 10).await.is_empty(),
        "a failed job is not listed as pending"
    );
}

/// What an operator sees and does: running jobs with their worker, ids on
/// every listing, retrying a failed job (merged into a pending one of its
/// key), cancelling pending and failed jobs but not running ones.
async fn operators(queue: &dyn Queue) {
    let failed_of = |key: Key| async move {
        let failed = queue
            .failed(usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("failed: {e}"));
        failed
            .into_iter()
            .filter(|f| f.key == key)
            .collect::<Vec<_>>()
    };
    let pending_of = |key: Key| async move {
        let listed = pending(queue, 100).await;
        listed
            .into_iter()
            .filter(|p| p.key == key)
            .collect::<Vec<_>>()
    };

    // A running job is listed with its worker and lease, and stays.
    let counted = counts(queue).await;
    let k = key("queue_ops/1");
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(5000), RefreshReason::Stale)],
    )
    .await;
    assert_eq!(
        counts(queue).await,
        JobCounts {
            pending: counted.pending + 1,
            ..counted
        },
        "a new job is counted as pending"
    );
    let job = claim(queue, "worker-ops", 1, at(5000)).await.remove(0);
    assert_eq!(
        counts(queue).await,
        JobCounts {
            running: counted.running + 1,
            ..counted
        },
        "a claimed job is counted as running"
    );
    let running = queue
        .running(100)
        .await
        .unwrap_or_else(|e| panic!("running: {e}"));
    let running: Vec<_> = running.into_iter().filter(|r| r.key == k).collect();
    assert_eq!(running.len(), 1, "a claimed job is listed as running");
    assert_eq!(
        (
            running[0].id,
            running[0].worker.as_str(),
            running[0].lease_until
        ),
        (job.claim.job, "worker-ops", at(5000) + LEASE),
        "with its id, worker and lease"
    );
    assert_eq!(running[0].reasons, [RefreshReason::Stale]);
    enqueue(
        queue,
        &[JobRequest::new(
            k.clone(),
            at(5001),
            RefreshReason::Interval,
        )],
    )
    .await;
    let of_key = jobs_of(queue, &k).await;
    assert_eq!(of_key.running, running, "a key's jobs: the running one");
    assert_eq!(
        of_key
            .pending
            .as_ref()
            .map(|p| (p.due_at, p.reasons.clone())),
        Some((at(5001), vec![RefreshReason::Interval])),
        "and the pending one"
    );
    assert!(of_key.failed.is_empty());
    let pending_id = of_key.pending.map(|p| p.id);
    assert_eq!(
        queue.cancel(pending_id.unwrap_or(JobId(0))).await.ok(),
        Some(true)
    );
    assert_eq!(
        queue.cancel(job.claim.job).await.ok(),
        Some(false),
        "a running job is not cancelled"
    );
    assert!(
        complete(queue, &job.claim).await,
        "and its worker completes it"
    );

    // A pending job is cancelled by its id, once.
    let k = key("queue_ops/2");
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(5000), RefreshReason::Stale)],
    )
    .await;
    let listed = pending_of(k.clone()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        queue.cancel(listed[0].id).await.ok(),
        Some(true),
        "cancel a pending job"
    );
    assert!(
        pending_of(k.clone()).await.is_empty(),
        "a cancelled job is gone"
    );
    assert_eq!(
        queue.cancel(listed[0].id).await.ok(),
        Some(false),
        "cancel it again"
    );

    // A failed job is retried: pending again, due now, attempts from zero.
    let k = key("queue_retry/1");
    let failed = failed_of(k.clone()).await;
    assert_eq!(failed.len(), 1, "the failed job of the retries check");
    let id = failed[0].id;
    assert_eq!(
        queue.retry(id, at(6000)).await.ok(),
        Some(true),
        "retry a failed job"
    );
    assert!(
        failed_of(k.clone()).await.is_empty(),
        "it is no longer failed"
    );
    let listed = pending_of(k.clone()).await;
    assert_eq!(listed.len(), 1, "it is pending");
    assert_eq!(
        (listed[0].due_at, listed[0].attempts),
        (at(6000), 0),
        "due now, its attempts counted afresh"
    );
    assert_eq!(
        queue.retry(id, at(6000)).await.ok(),
        Some(false),
        "retry it again"
    );
    let job = claim(queue, "w", 1, at(6000)).await.remove(0);
    assert_eq!(job.key, k, "the retried job runs");
    assert!(complete(queue, &job.claim).await);

    // A retry merges into the pending job of its key.
    let k = key("queue_ops/3");
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(6100), RefreshReason::Stale)],
    )
    .await;
    let job = claim(queue, "w", 1, at(6100)).await.remove(0);
    assert_eq!(
        queue.fail(&job.claim, "broken", None).await.ok(),
        Some(true)
    );
    enqueue(
        queue,
        &[JobRequest::new(
            k.clone(),
            at(7000),
            RefreshReason::Interval,
        )],
    )
    .await;
    let failed = failed_of(k.clone()).await;
    assert_eq!(queue.retry(failed[0].id, at(6500)).await.ok(), Some(true));
    let listed = pending_of(k.clone()).await;
    assert_eq!(listed.len(), 1, "one pending job per key");
    assert_eq!(listed[0].due_at, at(6500), "the earliest due time");
    assert!(
        listed[0].reasons.contains(&RefreshReason::Stale)
            && listed[0].reasons.contains(&RefreshReason::Interval),
        "both reasons: {:?}",
        listed[0].reasons
    );
    assert_eq!(queue.cancel(listed[0].id).await.ok(), Some(true));

    // A failed job is cancelled; unknown ids change nothing.
    let k = key("queue_ops/4");
    enqueue(
        queue,
        &[JobRequest::new(k.clone(), at(6200), RefreshReason::Stale)],
    )
    .await;
    let job = claim(queue, "w", 1, at(6200)).await.remove(0);
    assert_eq!(
        queue.fail(&job.claim, "broken", None).await.ok(),
        Some(true)
    );
    let failed = failed_of(k.clone()).await;
    assert_eq!(
        queue.cancel(failed[0].id).await.ok(),
        Some(true),
        "cancel a failed job"
    );
    assert!(
        failed_of(k).await.is_empty(),
        "a cancelled failed job is gone"
    );
    let unknown = JobId(i64::MAX);
    assert_eq!(queue.retry(unknown, at(6300)).await.ok(), Some(false));
    assert_eq!(queue.cancel(unknown).await.ok(), Some(false));
}

async fn counts(queue: &dyn Queue) -> JobCounts {
    queue
        .counts()
        .await
        .unwrap_or_else(|e| panic!("counts: {e}"))
}

async fn jobs_of(queue: &dyn Queue, key: &Key) -> KeyJobs {
    queue
        .jobs_of(key)
        .await
        .unwrap_or_else(|e| panic!("jobs of {key}: {e}"))
}

async fn pending(queue: &dyn Queue, limit: usize) -> Vec<PendingJob> {
    queue
        .pending(limit)
        .await
        .unwrap_or_else(|e| panic!("pending: {e}"))
}

async fn release(queue: &dyn Queue) {
    let k = key("queue_release/1");
    enqueue(
        queue,
        &[JobRequest::new(
            k.clone(),
            at(3000),
            RefreshReason::Schedule,
        )],
    )
    .await;
    let job = claim(queue, "w", 1, at(3000)).await.remove(0);
    assert_eq!(queue.release(&job.claim).await.ok(), Some(true));
    let again = claim(queue, "w", 1, at(3000)).await;
    assert_eq!(again.len(), 1, "a released job is pending again");
    assert_eq!(again[0].attempts, 0, "a release is not a failure");
    assert!(complete(queue, &again[0].claim).await);
}

async fn batches(queue: &dyn Queue) {
    let keys: Vec<Key> = (1..=4).map(|n| key(&format!("queue_batch/{n}"))).collect();
    let requests: Vec<JobRequest> = keys
        .iter()
        .map(|k| JobRequest::new(k.clone(), at(4000), RefreshReason::Stale))
        .collect();
    enqueue(queue, &requests[..2]).await;
    let first = claim(queue, "w", 2, at(4000)).await;
    assert_eq!(first.len(), 2);
    let fenced = claim(queue, "x", 1, at(4000) + LEASE).await;
    assert_eq!(fenced.len(), 1, "one lease ran out and was claimed again");
    enqueue(queue, &requests[2..]).await;
    // The other first claim is finished after its lease ran out too: still
    // held, so it completes, and is not claimed again by the same call.
    let stale = first
        .iter()
        .find(|job| job.key != fenced[0].key)
        .unwrap_or_else(|| panic!("two different jobs"));
    let done = [stale.claim.clone(), fenced[0].claim.clone()];
    let older = first
        .iter()
        .find(|job| job.key == fenced[0].key)
        .unwrap_or_else(|| panic!("the fenced job"));
    let Turnover { completed, claimed } = queue
        .complete_and_claim(
            &[done[0].clone(), older.claim.clone()],
            "w",
            10,
            LEASE,
            at(4000) + LEASE,
        )
        .await
        .unwrap_or_else(|e| panic!("complete and claim: {e}"));
    assert_eq!(
        completed,
        [true, false],
        "held claims complete, lost ones do not"
    );
    let mut new: Vec<Key> = claimed.iter().map(|job| job.key.clone()).collect();
    new.sort();
    assert_eq!(new, keys[2..], "the new jobs are claimed in the same call");
    let rest: Vec<Claim> = std::iter::once(done[1].clone())
        .chain(claimed.into_iter().map(|job| job.claim))
        .collect();
    let Turnover { completed, claimed } = queue
        .complete_and_claim(&rest, "x", 10, LEASE, at(4000) + LEASE)
        .await
        .unwrap_or_else(|e| panic!("complete and claim: {e}"));
    assert_eq!(completed, [true, true, true]);
    assert!(claimed.is_empty(), "nothing else is due");
}

async fn deltas(queue: &dyn Queue) {
    let k = key("queue_deltas/1");
    let from = key("queue_deltas/source");
    let delta = |n: u8| JobDelta {
        from: from.clone(),
        before: ContentHash([n; 16]),
        after: ContentHash([n + 1; 16]),
        delta: format!("{{\"cents\":{n}}}").into_bytes(),
    };
    let request = |deltas: Vec<JobDelta>| {
        let mut request = JobRequest::new(
            k.clone(),
            at(5000),
            RefreshReason::DependencyChanged { from: from.clone() },
        );
        request.deltas = deltas;
        request
    };
    enqueue(queue, &[request(vec![delta(1)])]).await;
    enqueue(
        queue,
        &[
            request(vec![delta(2), delta(3)]),
            JobRequest::new(k.clone(), at(5000), RefreshReason::Stale),
            request(vec![delta(4)]),
        ],
    )
    .await;
    let listed = pending(queue, 10).await;
    assert_eq!(
        listed.iter().map(|j| j.deltas).collect::<Vec<_>>(),
        [4],
        "the listing counts the deltas"
    );
    let job = claim(queue, "w", 10, at(5000)).await.remove(0);
    let expected: Vec<JobDelta> = (1..=4).map(delta).collect();
    assert_eq!(
        job.deltas, expected,
        "deltas are kept in order when jobs merge"
    );
    let retried = queue.fail(&job.claim, "later", Some(at(5001))).await.ok();
    assert_eq!(retried, Some(true));
    let job = claim(queue, "w", 10, at(5001)).await.remove(0);
    assert_eq!(job.deltas, expected, "and through a retry");
    assert!(complete(queue, &job.claim).await);
}

/// Counts the times it is woken.
struct Counter(watch::Sender<u64>);

impl Counter {
    fn new() -> (Arc<Counter>, watch::Receiver<u64>) {
        let sender = watch::Sender::new(0);
        let receiver = sender.subscribe();
        (Arc::new(Counter(sender)), receiver)
    }
}

impl JobWatcher for Counter {
    fn enqueued(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}
