//! The scheduler: it turns time into refresh jobs.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::cache::{Cache, CacheRef, Inner};
use crate::error::Error;
use crate::event::EventKind;
use crate::key::Key;
use crate::primer::PrimerDef;
use crate::storage::{JobRequest, RefreshReason, TickClaim};

/// Turns time into refresh jobs, for the workers to run.
///
/// On every tick, a scheduler:
///
/// 1. reports to the store which products the cache's memo served since the
///    last tick (reads served from memory never reach the store otherwise);
/// 2. takes the products due for their periodic refresh (`refresh = "5m"`:
///    every interval from the last successful compute, up to a tenth early
///    so that products computed together spread out) and queues a job for
///    each. Products nobody has read for [`idle_after`](SchedulerBuilder::idle_after)
///    are *retired* instead: they stop being refreshed until someone reads
///    them again;
/// 3. fires the cron schedules (`schedule = "0 3 * * *"`, UTC) that are
///    due: every stored product of the primer, and every key of its domain,
///    gets a job;
/// 4. every [`domain_every`](SchedulerBuilder::domain_every), evaluates the
///    domains (`domain = stores`) and queues a job for each key of a domain
///    that has no product yet, so it is warm before anyone asks.
///
/// Any number of schedulers may share a store, in one process or many: the
/// store hands each due product to one of them, and each tick of a schedule
/// or domain fires in one of them. The work of a tick grows with the number
/// of products due, not with the number stored.
///
/// Every [`Cache`] runs a scheduler of its own unless built with
/// [`local_scheduler(false)`](crate::CacheBuilder::local_scheduler); build
/// one explicitly to tune it or to run it in a process of its own:
///
/// ```no_run
/// # async fn run(cache: kck_core::Cache) -> Result<(), kck_core::Error> {
/// use std::time::Duration;
/// use kck_core::refresh::Scheduler;
///
/// Scheduler::builder(&cache)
///     .tick(Duration::from_secs(5))
///     .idle_after(Some(Duration::from_secs(7 * 24 * 3600)))
///     .shutdown(async { /* resolve on SIGTERM, for example */ })
///     .build()
///     .run()
///     .await
/// # }
/// ```
pub struct Scheduler {
    source: CacheRef,
    config: Config,
    shutdown: Mutex<Option<BoxFuture<'static, ()>>>,
}

#[derive(Debug, Clone)]
struct Config {
    tick: Duration,
    batch: usize,
    recheck: Duration,
    idle_after: Option<Duration>,
    domain_every: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick: Duration::from_secs(1),
            batch: 1000,
            recheck: Duration::from_secs(60),
            idle_after: Some(Duration::from_secs(24 * 3600)),
            domain_every: Duration::from_secs(60),
        }
    }
}

/// Builds a [`Scheduler`].
pub struct SchedulerBuilder {
    cache: Cache,
    config: Config,
    shutdown: Option<BoxFuture<'static, ()>>,
}

impl SchedulerBuilder {
    /// How often [`Scheduler::run`] ticks (default: every second). The
    /// periodic refreshes and schedules are as precise as this.
    pub fn tick(mut self, every: Duration) -> Self {
        self.config.tick = every.max(Duration::from_millis(1));
        self
    }

    /// The most due products taken from the store at once (default 1000);
    /// a tick takes batches until none is left.
    pub fn batch(mut self, products: usize) -> Self {
        self.config.batch = products.max(1);
        self
    }

    /// How long a product handed to the queue stays out of the scheduler's
    /// sight (default: a minute). Its refresh sets its next refresh time;
    /// if the refresh fails for good, the product is due again after this.
    pub fn recheck(mut self, after: Duration) -> Self {
        self.config.recheck = after;
        self
    }

    /// Products nobody has read for this long stop being refreshed on
    /// their interval, until they are read again (default: a day). `None`
    /// refreshes every product forever.
    pub fn idle_after(mut self, idle: Option<Duration>) -> Self {
        self.config.idle_after = idle;
        self
    }

    /// How often domains are evaluated to warm their missing keys (default:
    /// a minute), once across all schedulers of the store.
    pub fn domain_every(mut self, every: Duration) -> Self {
        self.config.domain_every = every.max(Duration::from_millis(1));
        self
    }

    /// Stops [`Scheduler::run`] when `signal` resolves.
    pub fn shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// The scheduler.
    pub fn build(self) -> Scheduler {
        Scheduler {
            source: CacheRef::Held(self.cache),
            config: self.config,
            shutdown: Mutex::new(self.shutdown),
        }
    }
}

/// What one tick of a [`Scheduler`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct TickReport {
    /// Products whose reads were reported to the store.
    pub reads: usize,
    /// Jobs queued for periodic refreshes.
    pub interval: Vec<Key>,
    /// Products retired for want of readers.
    pub retired: Vec<Key>,
    /// Jobs queued by cron schedules.
    pub scheduled: Vec<Key>,
    /// Jobs queued to warm missing keys of domains.
    pub warmed: Vec<Key>,
    /// Domains that could not be evaluated, and why. The rest of the tick
    /// went on.
    pub domain_errors: Vec<(&'static str, Error)>,
}

impl TickReport {
    /// The number of jobs queued.
    pub fn queued(&self) -> usize {
        self.interval.len() + self.scheduled.len() + self.warmed.len()
    }
}

impl Scheduler {
    /// A builder for a scheduler of `cache`.
    pub fn builder(cache: &Cache) -> SchedulerBuilder {
        SchedulerBuilder {
            cache: cache.clone(),
            config: Config::default(),
            shutdown: None,
        }
    }

    /// The scheduler a cache runs for itself, holding it only weakly: it
    /// ends with the cache.
    pub(crate) fn local(inner: Weak<Inner>) -> Scheduler {
        Scheduler {
            source: CacheRef::Local(inner),
            config: Config::default(),
            shutdown: Mutex::new(None),
        }
    }

    /// Ticks every [`tick`](SchedulerBuilder::tick) until the shutdown
    /// signal (or, for a cache's local scheduler, until the cache is
    /// dropped). A tick that fails is reported through `tracing` and the
    /// next one tries again.
    ///
    /// # Errors
    ///
    /// None so far.
    pub async fn run(self) -> Result<(), Error> {
        let shutdown = self
            .shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = match shutdown {
            Some(signal) => signal,
            None => Box::pin(std::future::pending()),
        };
        loop {
            let Some(cache) = self.source.get() else {
                break;
            };
            match self.tick_on(&cache).await {
                Ok(report) => {
                    for (domain, error) in &report.domain_errors {
                        tracing::warn!(target: "kck", %error, domain, "cannot evaluate a domain");
                    }
                }
                Err(error) => tracing::warn!(target: "kck", %error, "scheduler tick failed"),
            }
            drop(cache);
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.tick) => {}
            }
        }
        Ok(())
    }

    /// Runs one tick now, by the cache's clock; see [`Scheduler`]. Tests
    /// drive the scheduler on a mock clock with it.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store or the queue fails; the jobs queued
    /// before the failure stay queued. A domain that fails does not fail
    /// the tick: see [`TickReport::domain_errors`].
    pub async fn tick(&self) -> Result<TickReport, Error> {
        match self.source.get() {
            Some(cache) => self.tick_on(&cache).await,
            None => Ok(TickReport::default()),
        }
    }

    async fn tick_on(&self, cache: &Cache) -> Result<TickReport, Error> {
        let mut report = TickReport {
            reads: cache.report_reads().await?,
            ..TickReport::default()
        };
        self.interval_refreshes(cache, &mut report).await?;
        for def in cache.registry().primers() {
            self.schedule(cache, def, &mut report).await?;
            self.warm(cache, def, &mut report).await?;
        }
        Ok(report)
    }

    /// Queues the periodic refreshes due, batch by batch.
    async fn interval_refreshes(
        &self,
        cache: &Cache,
        report: &mut TickReport,
    ) -> Result<(), Error> {
        let inner = &cache.inner;
        let now = cache.now();
        let read_since = self.config.idle_after.map(|idle| now.saturating_sub(idle));
        loop {
            let due = inner
                .ports
                .timetable()
                .take_due_refreshes(
                    now,
                    now + self.config.recheck,
                    read_since,
                    self.config.batch,
                )
                .await?;
            let full = due.len() >= self.config.batch;
            for key in &due.retired {
                inner.events.emit(key, EventKind::Retired);
            }
            queue(cache, &due.refresh, RefreshReason::Interval).await?;
            report.interval.extend(due.refresh);
            report.retired.extend(due.retired);
            if !full {
                return Ok(());
            }
        }
    }

    /// Fires the primer's cron schedule, if it has one and it is due.
    async fn schedule(
        &self,
        cache: &Cache,
        def: &'static PrimerDef,
        report: &mut TickReport,
    ) -> Result<(), Error> {
        let Some(schedule) = cache.registry().schedule(def.name) else {
            return Ok(());
        };
        let now = cache.now();
        let Some(next) = schedule.next_after(now) else {
            return Ok(());
        };
        // Named with the pattern: a changed schedule starts afresh.
        let name = format!("schedule {} {}", def.name, schedule.pattern());
        if cache
            .storage()
            .timetable()
            .claim_tick(&name, now, next)
            .await?
            != TickClaim::Fired
        {
            return Ok(());
        }
        let mut keys = cache.storage().timetable().keys_of(def.name).await?;
        if def.domain.is_some() {
            match domain_keys(cache, def).await {
                Ok(domain) => {
                    let stored: HashSet<Key> = keys.iter().cloned().collect();
                    keys.extend(domain.into_iter().filter(|key| !stored.contains(key)));
                }
                Err(error) => report.domain_errors.push((def.name, error)),
            }
        }
        queue(cache, &keys, RefreshReason::Schedule).await?;
        report.scheduled.extend(keys);
        Ok(())
    }

    /// Warms the missing keys of the primer's domain, if it has one and its
    /// turn has come.
    async fn warm(
        &self,
        cache: &Cache,
        def: &'static PrimerDef,
        report: &mut TickReport,
    ) -> Result<(), Error> {
        if def.domain.is_none() {
            return Ok(());
        }
        let now = cache.now();
        let name = format!("domain {}", def.name);
        let next = now + self.config.domain_every;
        if cache
            .storage()
            .timetable()
            .claim_tick(&name, now, next)
            .await?
            == TickClaim::NotDue
        {
            return Ok(());
        }
        let domain = match domain_keys(cache, def).await {
            Ok(domain) => domain,
            Err(error) => {
                report.domain_errors.push((def.name, error));
                return Ok(());
            }
        };
        let stored: HashSet<Key> = cache
            .storage()
            .timetable()
            .keys_of(def.name)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<Key> = domain
            .into_iter()
            .filter(|key| !stored.contains(key))
            .collect();
        queue(cache, &missing, RefreshReason::Domain).await?;
        report.warmed.extend(missing);
        Ok(())
    }
}

/// The keys of a primer's domain, checked to be the primer's own.
async fn domain_keys(cache: &Cache, def: &'static PrimerDef) -> Result<Vec<Key>, Error> {
    let Some(domain) = def.domain else {
        return Ok(Vec::new());
    };
    let mut keys = domain(cache).await?;
    keys.retain(|key| key.primer() == def.name);
    keys.sort();
    keys.dedup();
    Ok(keys)
}

async fn queue(cache: &Cache, keys: &[Key], reason: RefreshReason) -> Result<(), Error> {
    let now = cache.now();
    let jobs = keys
        .iter()
        .map(|key| JobRequest::new(key.clone(), now, reason.clone()))
        .collect();
    cache.inner.try_queue_refresh(jobs).await
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("local", &self.source.is_local())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SchedulerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
