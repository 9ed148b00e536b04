//! Building a cache.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::background::{Background, Task};
use super::local::{Hooks, Local};
use super::memo::Memo;
use super::peers::Peers;
use super::ports::Ports;
use super::primers::{Primers, Stubs};
use super::propagate::Watcher;
use super::{Cache, Inner};
use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::erased::{ErasedStub, StubFn, erase_stub};
use crate::event::{EventListener, Events};
use crate::primer::Primer;
use crate::primer::{Registry, RegistryError};
use crate::scheduler::Scheduler;
use crate::storage::{MemoryQueue, MemoryStore, Queue, Storage};
use crate::worker::Worker;

/// Builds a [`Cache`].
///
/// ```
/// use std::time::Duration;
/// use kck_core::clock::SystemClock;
/// use kck_core::storage::MemoryStore;
/// use kck_core::Cache;
///
/// # fn main() -> Result<(), kck_core::primer::RegistryError> {
/// let cache = Cache::builder()
///     .store(MemoryStore::new())
///     .clock(SystemClock)
///     .state(String::from("shared with every primer through ctx.state()"))
///     .on_event(|event: &kck_core::event::Event| println!("{event}"))
///     .retry_backoff(Duration::from_secs(1), Duration::from_secs(60))
///     .build()?;
/// # Ok(()) }
/// ```
pub struct CacheBuilder {
    registry: Option<Registry>,
    storage: Storage,
    clock: Arc<dyn Clock>,
    listeners: Vec<Arc<dyn EventListener>>,
    stubs: Vec<(&'static str, ErasedStub)>,
    state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    backoff: Backoff,
    memo_shards: usize,
    memo: bool,
    lease_ttl: Duration,
    queue: Option<Arc<dyn Queue>>,
    local_worker: bool,
    local_scheduler: bool,
    hooks: Hooks,
    serve_stale_on_store_error: Duration,
    #[cfg(feature = "metrics")]
    metrics: bool,
}

impl CacheBuilder {
    pub(super) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, usize::from);
        CacheBuilder {
            registry: None,
            storage: Storage::from(MemoryStore::new()),
            clock: Arc::new(SystemClock),
            listeners: Vec::new(),
            stubs: Vec::new(),
            state: HashMap::new(),
            backoff: Backoff::DEFAULT,
            memo_shards: cores * 32,
            memo: true,
            lease_ttl: Duration::from_secs(30),
            queue: None,
            local_worker: true,
            local_scheduler: true,
            hooks: Hooks::default(),
            #[cfg(feature = "metrics")]
            metrics: false,
            serve_stale_on_store_error: Duration::from_secs(60),
        }
    }

    /// The primers the cache knows. Default: [`Registry::from_inventory`].
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Where entries live: a store (a [`MemoryStore`], or an
    /// `Arc<MemoryStore>` shared with other caches; `kck-diesel`'s
    /// `PgStore`), or a [`Storage`] built from ports. Default: a new
    /// [`MemoryStore`].
    pub fn store(mut self, store: impl Into<Storage>) -> Self {
        self.storage = store.into();
        self
    }

    /// The source of "now". Default: [`SystemClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Adds a listener that receives every [`Event`](crate::event::Event).
    pub fn on_event(mut self, listener: impl EventListener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Counts reads, computations, augments and jobs per primer, and
    /// times computations, job waits and propagation, through the
    /// [`metrics`](https://docs.rs/metrics) crate's installed recorder
    /// (Prometheus, StatsD…); see [`Cache::record_gauges`] for the gauges.
    /// Install the recorder before building the cache: the cache registers
    /// its metrics with it once, at build. Metric names and labels are
    /// listed in the crate's docs ("Metrics").
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Makes `value` available to every primer through
    /// [`Ctx::state`](crate::Ctx::state), by type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// Replaces the computation of primer `P` with `stub`: the cache calls
    /// `stub(params)` instead of the primer, and caches what it returns like
    /// any computed value. This is how tests cut a primer off a remote
    /// source; `kck-testing` builds richer stubs on it. [`Cache::stub`]
    /// does the same once the cache runs.
    pub fn stub<P: Primer>(
        mut self,
        stub: impl Fn(P::Params) -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) -> Self {
        let stub: StubFn<P> = Box::new(stub);
        self.stubs.push((P::DEF.name, erase_stub::<P>(stub)));
        self
    }

    /// The back-off between failed refreshes of one key: `base` after the
    /// first failure, doubling up to `max`. Default: 1 s up to 5 min.
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = Backoff { base, max };
        self
    }

    /// Whether to keep decoded values in process memory (default: yes).
    /// Without the memo, every read loads from the store: useful to measure
    /// the store, or when memory is tight.
    pub fn memo(mut self, enabled: bool) -> Self {
        self.memo = enabled;
        self
    }

    /// How long a computation holds the store's lease on its key before it
    /// must renew it (it renews every third of that while it runs). Another
    /// cache waits at most this long for a computation that died. Default:
    /// 30 seconds.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(3));
        self
    }

    /// The queue of refresh jobs. Default: the store's own queue if it has
    /// one, else a new [`MemoryQueue`].
    pub fn queue(mut self, queue: impl Queue) -> Self {
        self.queue = Some(Arc::new(queue));
        self
    }

    /// Whether the cache runs a worker of its own for its queue (default:
    /// yes). Turn it off in processes that should not refresh anything
    /// (then run [`Worker`](crate::refresh::Worker)s elsewhere), or to drive the
    /// queue by hand, as `kck-testing` does.
    pub fn local_worker(mut self, enabled: bool) -> Self {
        self.local_worker = enabled;
        self
    }

    /// Whether the cache runs a [`Scheduler`](crate::refresh::Scheduler) of its own
    /// (default: yes). Schedulers sharing a store divide the work between
    /// them, so every process may run one; it also reports the reads this
    /// cache's memo serves, without which products read only from memory
    /// would look idle and stop being refreshed. Turn it off to run a tuned
    /// scheduler yourself, or to drive it by hand, as `kck-testing` does.
    pub fn local_scheduler(mut self, enabled: bool) -> Self {
        self.local_scheduler = enabled;
        self
    }

    /// How a read rides out an outage of the store (default: 60 seconds).
    ///
    /// When the store cannot be reached (a transient
    /// [`StoreError`](crate::storage::StoreError)), a read that needs it is served
    /// the copy this cache holds in memory instead of the error, with an
    /// [`OutageServed`](crate::event::EventKind::OutageServed) event, as long as
    /// the copy is not past its hard expiry (`expire_after`), and:
    ///
    /// - the store still reports changes to this cache: the copy is the
    ///   latest version there is; or
    /// - the store stopped reporting changes (on PostgreSQL, its `LISTEN`
    ///   connection went) at most `bound` ago: the copy may have been
    ///   replaced meanwhile by another process, so it is served only this
    ///   long.
    ///
    /// Once the store reports changes again, copies from before are dropped
    /// and loaded again: no value older than one another process wrote is
    /// served as current after an outage. `Duration::ZERO` serves set-aside
    /// copies not at all.
    pub fn serve_stale_on_store_error(mut self, bound: Duration) -> Self {
        self.serve_stale_on_store_error = bound;
        self
    }

    /// A pause point for tests that force an interleaving: `hook` runs in a
    /// flight's task once the flight delivered its outcome, left its slot
    /// and gave back the store's lease, before it tells dependents of a
    /// change. Not part of the stable API.
    #[doc(hidden)]
    pub fn __after_outcome(
        mut self,
        hook: impl Fn(&crate::key::Key) -> futures_util::future::BoxFuture<'static, ()>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.hooks.after_outcome = Some(Arc::new(hook));
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// The registry's validation errors (see [`RegistryBuilder::build`](crate::primer::RegistryBuilder::build)),
    /// and [`RegistryError::UnknownStub`] for a stub of a primer that is not
    /// registered.
    pub fn build(self) -> Result<Cache, RegistryError> {
        let registry = match self.registry {
            Some(registry) => registry,
            None => Registry::from_inventory()?,
        };
        #[cfg(feature = "metrics")]
        let listeners = {
            let mut listeners = self.listeners;
            if self.metrics {
                listeners.push(Arc::new(super::meters::Meters::new(&registry)));
            }
            listeners
        };
        #[cfg(not(feature = "metrics"))]
        let listeners = self.listeners;
        let mut stubs = HashMap::new();
        for (name, stub) in self.stubs {
            if registry.get(name).is_none() {
                return Err(RegistryError::UnknownStub { name });
            }
            stubs.insert(name, stub);
        }
        let holder = format!(
            "{}-{:016x}",
            std::process::id(),
            foldhash::fast::RandomState::default().hash_one(std::process::id())
        );
        let queue = self
            .queue
            .or_else(|| self.storage.queue().cloned())
            .unwrap_or_else(|| Arc::new(MemoryQueue::new()));
        let (local_worker, local_scheduler) = (self.local_worker, self.local_scheduler);
        let inner = Arc::new_cyclic(|inner: &Weak<Inner>| Inner {
            primers: Primers {
                registry,
                stubs: Stubs::new(stubs),
                state: self.state,
                backoff: self.backoff,
            },
            ports: Ports {
                storage: self.storage,
                queue,
            },
            peers: Peers::new(
                Arc::new(Watcher {
                    inner: inner.clone(),
                }),
                holder.clone(),
                self.lease_ttl,
                self.serve_stale_on_store_error,
                self.clock.now(),
            ),
            local: Local::new(Memo::new(self.memo_shards, self.memo), self.hooks),
            background: Background::new(
                local_worker.then(|| worker_task(inner.clone(), holder.clone())),
                local_scheduler.then(|| scheduler_task(inner.clone())),
            ),
            clock: self.clock,
            events: Events::new(listeners),
        });
        inner
            .ports
            .coordination()
            .watch(Arc::downgrade(&inner.peers.watcher));
        inner.background.start();
        Ok(Cache { inner })
    }
}

/// The cache's own worker, holding it only weakly: it ends with the cache.
fn worker_task(inner: Weak<Inner>, holder: String) -> Task {
    Box::new(move || {
        let worker = Worker::local(inner.clone(), &holder);
        Box::pin(async move {
            // A worker reports its errors as events and goes on.
            let _ = worker.run().await;
        })
    })
}

/// The cache's own scheduler, holding it only weakly: it ends with the
/// cache.
fn scheduler_task(inner: Weak<Inner>) -> Task {
    Box::new(move || {
        let scheduler = Scheduler::local(inner.clone());
        Box::pin(async move {
            // A scheduler reports failed ticks through `tracing` and goes on.
            let _ = scheduler.run().await;
        })
    })
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("registry", &self.registry)
            .field("listeners", &self.listeners.len())
            .field(
                "stubs",
                &self.stubs.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
