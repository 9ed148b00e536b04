//! Metrics through the [`metrics`] crate (feature `metrics`): a listener
//! that turns a cache's events into counters and histograms, one set per
//! primer, and the gauges [`Cache::record_gauges`] sets. Labels are the
//! primer's name and an outcome, never a key: their number stays bounded.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `kck_reads_total` | counter | `primer`, `outcome` = `hit`, `stale`, `miss`, `coalesced` |
//! | `kck_computations_total` | counter | `primer`, `outcome` = `ok`, `error` |
//! | `kck_compute_duration_seconds` | histogram | `primer` |
//! | `kck_augments_total` | counter | `primer`, `outcome` = `applied`, `retried`, `declined` |
//! | `kck_drift_total` | counter | `primer` |
//! | `kck_jobs_total` | counter | `primer`, `outcome` = `started`, `completed`, `retried`, `failed` |
//! | `kck_job_wait_seconds` | histogram | `primer`: from a job's due time to its start |
//! | `kck_propagation_delay_seconds` | histogram | `primer`: from a change to its dependent refreshed |
//! | `kck_jobs` | gauge | `state` = `pending`, `running`, `failed` |
//! | `kck_memo_entries` | gauge | |
//!
//! The counters and histograms are registered with the recorder installed
//! when the cache is built: install yours first.

use std::collections::HashMap;

use metrics::{Counter, Histogram, counter, gauge, histogram};

use crate::cache::Cache;
use crate::error::Error;
use crate::event::{Event, EventKind, EventListener};
use crate::primer::Registry;

/// One primer's counters and histograms.
struct PrimerMeters {
    hit: Counter,
    stale: Counter,
    miss: Counter,
    coalesced: Counter,
    computed: Counter,
    failed: Counter,
    compute_seconds: Histogram,
    augmented: Counter,
    augment_retried: Counter,
    augment_declined: Counter,
    drift: Counter,
    job_started: Counter,
    job_completed: Counter,
    job_retried: Counter,
    job_failed: Counter,
    job_wait: Histogram,
    propagation: Histogram,
}

impl PrimerMeters {
    fn new(primer: &'static str) -> Self {
        let reads = |outcome: &'static str| counter!("kck_reads_total", "primer" => primer, "outcome" => outcome);
        let computations = |outcome: &'static str| counter!("kck_computations_total", "primer" => primer, "outcome" => outcome);
        let augments = |outcome: &'static str| counter!("kck_augments_total", "primer" => primer, "outcome" => outcome);
        let jobs = |outcome: &'static str| counter!("kck_jobs_total", "primer" => primer, "outcome" => outcome);
        PrimerMeters {
            hit: reads("hit"),
            stale: reads("stale"),
            miss: reads("miss"),
            coalesced: reads("coalesced"),
            computed: computations("ok"),
            failed: computations("error"),
            compute_seconds: histogram!("kck_compute_duration_seconds", "primer" => primer),
            augmented: augments("applied"),
            augment_retried: augments("retried"),
            augment_declined: augments("declined"),
            drift: counter!("kck_drift_total", "primer" => primer),
            job_started: jobs("started"),
            job_completed: jobs("completed"),
            job_retried: jobs("retried"),
            job_failed: jobs("failed"),
            job_wait: histogram!("kck_job_wait_seconds", "primer" => primer),
            propagation: histogram!("kck_propagation_delay_seconds", "primer" => primer),
        }
    }
}

/// The listener [`CacheBuilder::metrics`](crate::CacheBuilder::metrics)
/// adds.
pub(crate) struct Meters {
    primers: HashMap<&'static str, PrimerMeters>,
}

impl Meters {
    pub(crate) fn new(registry: &Registry) -> Self {
        Meters {
            primers: registry
                .primers()
                .map(|def| (def.name, PrimerMeters::new(def.name)))
                .collect(),
        }
    }
}

impl EventListener for Meters {
    fn on_event(&self, event: &Event) {
        let Some(m) = self.primers.get(event.key.primer()) else {
            return;
        };
        match &event.kind {
            EventKind::Hit => m.hit.increment(1),
            EventKind::StaleServed => m.stale.increment(1),
            EventKind::Miss => m.miss.increment(1),
            EventKind::Coalesced => m.coalesced.increment(1),
            EventKind::Computed { duration, .. } => {
                m.computed.increment(1);
                m.compute_seconds.record(duration.as_secs_f64());
            }
            EventKind::Failed { .. } => m.failed.increment(1),
            EventKind::Augmented { .. } => m.augmented.increment(1),
            EventKind::AugmentRetried { .. } => m.augment_retried.increment(1),
            EventKind::AugmentDeclined { .. } => m.augment_declined.increment(1),
            EventKind::Drift { .. } => m.drift.increment(1),
            EventKind::JobStarted { waited } => {
                m.job_started.increment(1);
                m.job_wait.record(waited.as_secs_f64());
            }
            EventKind::JobDone {
                since_due,
                propagation,
            } => {
                m.job_completed.increment(1);
                if *propagation {
                    m.propagation.record(since_due.as_secs_f64());
                }
            }
            EventKind::RetryScheduled { .. } => m.job_retried.increment(1),
            EventKind::JobFailed { .. } => m.job_failed.increment(1),
            _ => {}
        }
    }
}

impl Cache {
    /// Sets the gauges `kck_jobs{state}` (from the queue) and
    /// `kck_memo_entries`, through the installed [`metrics`] recorder: call
    /// it before each scrape, or from time to time (`kck-admin` calls it on
    /// every `GET /metrics`).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the queue cannot be counted.
    pub async fn record_gauges(&self) -> Result<(), Error> {
        let counts = self.queue().counts().await?;
        gauge!("kck_jobs", "state" => "pending").set(counts.pending as f64);
        gauge!("kck_jobs", "state" => "running").set(counts.running as f64);
        gauge!("kck_jobs", "state" => "failed").set(counts.failed as f64);
        gauge!("kck_memo_entries").set(self.memo_len() as f64);
        Ok(())
    }
}
