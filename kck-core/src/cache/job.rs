//! What a refresh job means: recompute the product, augment it in place
//! from the deltas of what it read, or only mark it stale; then tell its
//! dependents. Callable without a worker: the worker only claims jobs,
//! keeps their leases and settles them with the queue.

use std::sync::Arc;
use std::time::Duration;

use super::Inner;
use super::augment::{InPlace, Read};
use crate::augment::AugmentHandle;
use crate::erased::PrimerHandle;
use crate::error::Error;
use crate::event::{EventKind, InvalidationCause};
use crate::key::Key;
use crate::primer::OnChange;
use crate::storage::{ContentHash, Job, RefreshReason};

/// How a job went, for the worker to settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobOutcome {
    Done,
    /// Worth another attempt.
    Retry(String),
    /// Never worth another attempt (an unknown primer, a malformed key).
    GiveUp(String),
}

impl Inner {
    /// Stops the computation a job of this process started for `key`, if it
    /// still runs: a worker that gives the job back must not leave it
    /// running beside the next worker's. Its waiters get
    /// [`Error::Aborted`]; the store's lease goes back as its task drops.
    pub(crate) fn abandon_job(&self, key: &Key) {
        let flight = self
            .local
            .memo
            .read(key.as_str(), |slot| slot.flight.clone())
            .flatten();
        if let Some(flight) = flight {
            self.stop_flight(key, &flight, Error::Aborted { key: key.clone() });
        }
    }

    /// Does what `job` asks: marks the product stale, augments it from the
    /// deltas of its dependencies, or recomputes it (its computation given
    /// `timeout` at most), and tells its dependents of a change. The queue
    /// is left alone: settling the job (complete, retry, keep as failed) is
    /// the worker's.
    pub(crate) async fn run_job(self: &Arc<Self>, job: &Job, timeout: Duration) -> JobOutcome {
        let handle = match self.primers.registry.handle(job.key.primer()) {
            Ok(handle) => *handle,
            Err(error) => return JobOutcome::GiveUp(error.to_string()),
        };
        if let Err(error) = (handle.check_key)(&job.key) {
            return JobOutcome::GiveUp(Error::from(error).to_string());
        }
        // A dependent that only asked to be told of changes is marked stale.
        let changed_from = job.reasons.iter().find_map(|reason| match reason {
            RefreshReason::DependencyChanged { from } => Some(from.clone()),
            _ => None,
        });
        let only_changes = job
            .reasons
            .iter()
            .all(|reason| matches!(reason, RefreshReason::DependencyChanged { .. }));
        if let (Some(from), true, OnChange::Invalidate) =
            (changed_from, only_changes, handle.def.policy.on_change)
        {
            let cause = InvalidationCause::DependencyChanged { from };
            return match self.mark_stale(&job.key, cause).await {
                Ok(_) => JobOutcome::Done,
                Err(error) => JobOutcome::Retry(error.to_string()),
            };
        }
        if !job.deltas.is_empty() && only_changes {
            match self.augment_from_deltas(handle, job).await {
                Ok(true) => return JobOutcome::Done,
                Ok(false) => {}
                Err(error) => return JobOutcome::Retry(error.to_string()),
            }
        }
        if only_changes {
            match self.saw_every_change(&job.key, &job.reasons).await {
                Ok(true) => return JobOutcome::Done,
                Ok(false) => {}
                Err(error) => return JobOutcome::Retry(error.to_string()),
            }
        }
        // The change that queued this job committed with it, but this process
        // may not have been told of it yet: read the changed products from the
        // store, not from the memo.
        for reason in &job.reasons {
            if let RefreshReason::DependencyChanged { from } = reason {
                self.local.memo.forget(from);
            }
        }
        // Verifying an augmented product: what it was, to compare.
        let verified = if job.reasons.contains(&RefreshReason::Verify) {
            match self
                .ports
                .entries()
                .content_hashes(std::slice::from_ref(&job.key))
                .await
            {
                Ok(hashes) => hashes.into_iter().next().flatten(),
                Err(error) => return JobOutcome::Retry(error.to_string()),
            }
        } else {
            None
        };
        let refresh = self.refresh_within(&job.key, handle, job.reasons.clone(), Some(timeout));
        match refresh.await {
            Ok(served) => {
                if let Some(augmented) = verified.filter(|hash| *hash != served.hash) {
                    let recomputed = served.hash;
                    tracing::warn!(
                        target: "kck",
                        key = %job.key,
                        %augmented,
                        %recomputed,
                        "an augmented product drifted from its full computation; the recomputed value replaces it"
                    );
                    self.events.emit(
                        &job.key,
                        EventKind::Drift {
                            augmented,
                            recomputed,
                        },
                    );
                }
                JobOutcome::Done
            }
            Err(error) => JobOutcome::Retry(error.to_string()),
        }
    }

    /// Whether the stored product already read the current value of every
    /// product whose change queued the job: it was computed again after
    /// the changes (a reader's computation that read them, often the very
    /// one that computed them), so the job has nothing left to do.
    async fn saw_every_change(&self, key: &Key, reasons: &[RefreshReason]) -> Result<bool, Error> {
        let changed: Vec<Key> = reasons
            .iter()
            .filter_map(|reason| match reason {
                RefreshReason::DependencyChanged { from } => Some(from.clone()),
                _ => None,
            })
            .collect();
        let entries = self.ports.entries();
        let dependencies = entries.dependencies(key).await?;
        let seen: Vec<Option<ContentHash>> = changed
            .iter()
            .map(|from| {
                dependencies
                    .iter()
                    .find(|edge| &edge.key == from)
                    .and_then(|edge| edge.seen)
            })
            .collect();
        if seen.iter().any(Option::is_none) {
            return Ok(false);
        }
        let current = entries.content_hashes(&changed).await?;
        Ok(seen == current)
    }

    /// Augments the job's product with the deltas of the products it read,
    /// where they lead, without a gap, on from the values it was computed
    /// from; `false` if it must be recomputed instead (a product it read
    /// changed, and no delta starts from the value it read).
    ///
    /// Deltas that stop short of a product's value now (it changed again
    /// while this job ran) are applied all the same: its edge then records
    /// the value the deltas led to. The rest comes with the job the later
    /// change queued; in case it does not, the write queues the product
    /// again, a second later (see `Inner::behind_on`).
    async fn augment_from_deltas(
        self: &Arc<Self>,
        handle: PrimerHandle,
        job: &Job,
    ) -> Result<bool, Error> {
        let Some(augment) = handle.augment else {
            return Ok(false);
        };
        let turn = self.local.augmenting.of(&job.key);
        let _turn = turn.lock().await;
        // Another process may augment or recompute the product between the
        // plan and the write: then plan again from what it wrote.
        for _ in 0..4 {
            if let Some(done) = self.plan_and_augment(handle, augment, job).await? {
                return Ok(done);
            }
        }
        Ok(false)
    }

    /// One attempt of [`Inner::augment_from_deltas`]; `None` if the
    /// product's edges moved meanwhile.
    async fn plan_and_augment(
        self: &Arc<Self>,
        handle: PrimerHandle,
        augment: AugmentHandle,
        job: &Job,
    ) -> Result<Option<bool>, Error> {
        // What the product read of each changed product, and what that is now.
        let dependencies = self.ports.entries().dependencies(&job.key).await?;
        let mut changed: Vec<(&Key, ContentHash)> = Vec::with_capacity(job.reasons.len());
        for reason in &job.reasons {
            let RefreshReason::DependencyChanged { from } = reason else {
                return Ok(Some(false));
            };
            let seen = dependencies
                .iter()
                .find(|edge| &edge.key == from)
                .and_then(|edge| edge.seen);
            let Some(seen) = seen else {
                return Ok(Some(false));
            };
            changed.push((from, seen));
        }
        let keys: Vec<Key> = changed.iter().map(|(from, _)| (*from).clone()).collect();
        let current = self.ports.entries().content_hashes(&keys).await?;
        // The deltas in the order they happened: each one that starts where
        // its product's chain ends extends it, as a delta of this product.
        let mut at: Vec<ContentHash> = changed.iter().map(|(_, seen)| *seen).collect();
        let mut deltas = Vec::new();
        for delta in &job.deltas {
            let Some(i) = changed.iter().position(|(from, _)| *from == &delta.from) else {
                continue;
            };
            if delta.before != at[i] {
                continue;
            }
            let Some(map) = augment.mapping(delta.from.primer()) else {
                return Ok(Some(false));
            };
            match map(&delta.delta) {
                Ok(Some(mapped)) => deltas.push(mapped),
                Ok(None) | Err(_) => return Ok(Some(false)),
            }
            at[i] = delta.after;
        }
        let mut reads = Vec::new();
        for (((from, seen), at), current) in changed.iter().zip(at).zip(current) {
            if at == *seen && current != Some(*seen) {
                // A change that no delta describes: recompute.
                return Ok(Some(false));
            }
            if at != *seen {
                reads.push(Read {
                    key: (*from).clone(),
                    before: *seen,
                    after: at,
                });
            }
        }
        if reads.is_empty() {
            // Every change is already in the value.
            return Ok(Some(true));
        }
        // Deltas that stop short of a product's value now are applied all the
        // same; the write then queues the product again for the rest.
        match self
            .augment_in_place(&job.key, handle, augment, &deltas, &reads)
            .await?
        {
            InPlace::Applied(_) => Ok(Some(true)),
            InPlace::ReadMoved => Ok(None),
            InPlace::Cannot(reason) => {
                self.events.emit(
                    &job.key,
                    EventKind::AugmentDeclined {
                        reason: reason.to_owned(),
                    },
                );
                Ok(Some(false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;
    use crate::clock::Timestamp;
    use crate::event::{Event, EventListener};
    use crate::primer::Registry;
    use crate::storage::{Claim, JobId};
    use crate::{Cache, Ctx};

    /// How many times `job_lazy` computed.
    static LAZY_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[crate::primer(key = "job_base/{n}", crate = crate)]
    async fn job_base(_ctx: &Ctx, n: u32) -> Result<u32, Infallible> {
        Ok(n * 2)
    }

    #[crate::primer(key = "job_lazy/{n}", depends_on = [job_base], on_change = "invalidate", crate = crate)]
    async fn job_lazy(ctx: &Ctx, n: u32) -> Result<u32, crate::Error> {
        LAZY_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(*job_base(ctx, n).await? + 1)
    }

    #[derive(Clone, Default)]
    struct Kinds(Arc<Mutex<Vec<(String, &'static str)>>>);

    impl EventListener for Kinds {
        fn on_event(&self, event: &Event) {
            let kind = match event.kind {
                EventKind::Computed { .. } => "computed",
                EventKind::Invalidated { .. } => "invalidated",
                _ => return,
            };
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((event.key.to_string(), kind));
        }
    }

    impl Kinds {
        fn seen(&self) -> Vec<(String, &'static str)> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    /// A cache with no worker of its own: jobs run only when a test runs
    /// them.
    fn cache(kinds: &Kinds) -> Cache {
        let registry = Registry::builder()
            .register::<job_base>()
            .register::<job_lazy>()
            .build()
            .expect("the test primers register");
        Cache::builder()
            .registry(registry)
            .local_worker(false)
            .local_scheduler(false)
            .on_event(kinds.clone())
            .build()
            .expect("the cache builds")
    }

    fn job(key: &str, reasons: Vec<RefreshReason>) -> Job {
        Job {
            key: Key::parse(key).expect("a well-formed key"),
            due_at: Timestamp::UNIX_EPOCH,
            priority: 0,
            reasons,
            attempts: 0,
            claim: Claim {
                job: JobId(1),
                token: 1,
            },
            deltas: Vec::new(),
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_job_runs_without_a_worker_and_leaves_the_queue_alone() {
        let kinds = Kinds::default();
        let cache = cache(&kinds);
        let job = job("job_base/21", vec![RefreshReason::Requested]);
        assert_eq!(cache.inner.run_job(&job, TIMEOUT).await, JobOutcome::Done);
        assert_eq!(
            cache.get_json(&job.key).await.expect("computed"),
            serde_json::json!(42)
        );
        assert!(
            kinds
                .seen()
                .contains(&("job_base/21".to_owned(), "computed"))
        );
        assert_eq!(
            cache.queue().next_due().await.expect("the queue answers"),
            None
        );
    }

    #[tokio::test]
    async fn a_job_for_an_unknown_primer_or_a_malformed_key_is_given_up() {
        let cache = cache(&Kinds::default());
        let unknown = job("nobody/1", vec![RefreshReason::Requested]);
        let outcome = cache.inner.run_job(&unknown, TIMEOUT).await;
        assert!(
            matches!(outcome, JobOutcome::GiveUp(ref error) if error.contains("nobody")),
            "{outcome:?}"
        );
        let malformed = job("job_base/not-a-number", vec![RefreshReason::Requested]);
        let outcome = cache.inner.run_job(&malformed, TIMEOUT).await;
        assert!(matches!(outcome, JobOutcome::GiveUp(_)), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_changed_dependency_only_marks_a_product_that_invalidates_stale() {
        let kinds = Kinds::default();
        let cache = cache(&kinds);
        let lazy = Key::parse("job_lazy/5").expect("a well-formed key");
        assert_eq!(
            cache.get_json(&lazy).await.expect("computed"),
            serde_json::json!(11)
        );
        let computed = LAZY_RUNS.load(Ordering::SeqCst);
        let changed = job(
            "job_lazy/5",
            vec![RefreshReason::DependencyChanged {
                from: Key::parse("job_base/5").expect("a well-formed key"),
            }],
        );
        assert_eq!(
            cache.inner.run_job(&changed, TIMEOUT).await,
            JobOutcome::Done
        );
        assert!(
            kinds
                .seen()
                .contains(&("job_lazy/5".to_owned(), "invalidated"))
        );
        assert_eq!(LAZY_RUNS.load(Ordering::SeqCst), computed, "not recomputed");
    }
}
