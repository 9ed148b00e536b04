//! Stubs: primers that return given values instead of running, installed
//! in every cache of a test and changeable at any time.
//!
//! A primer is *stubbed* from its first stub until its last one is removed.
//! Meanwhile the cache calls a dispatcher instead of the primer: the stub of
//! the key read, else the primer's fallback (`stub_fn`), else a panic that
//! names the key. The dispatcher holds only the primer's stubs and the log
//! of reads, never a cache, so caches and stubs do not keep each other
//! alive.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kck_core::{Cache, Key, Primer};

type Produce<P> = Box<dyn Fn() -> Result<<P as Primer>::Value, <P as Primer>::Error> + Send + Sync>;
type Fallback<P> = Arc<
    dyn Fn(<P as Primer>::Params) -> Result<<P as Primer>::Value, <P as Primer>::Error>
        + Send
        + Sync,
>;

/// The stubs of one primer.
struct StubSet<P: Primer> {
    values: HashMap<Key, Produce<P>>,
    fallback: Option<Fallback<P>>,
}

impl<P: Primer> StubSet<P> {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.fallback.is_none()
    }
}

/// The keys whose stubs were read, in first-read order.
type Reads = Arc<Mutex<Vec<Key>>>;

/// Puts a primer's dispatcher in a cache.
type Install = Box<dyn Fn(&Cache) -> Result<(), kck_core::Error> + Send + Sync>;

/// A stubbed primer: its stubs, and how to put its dispatcher in a cache
/// or take it out.
struct Stubbed {
    /// An `Arc<Mutex<StubSet<P>>>`.
    set: Arc<dyn Any + Send + Sync>,
    install: Install,
    uninstall: fn(&Cache) -> bool,
}

impl Stubbed {
    /// Its stubs, as primer `P`'s.
    fn set<P: Primer>(&self) -> Option<Arc<Mutex<StubSet<P>>>> {
        self.set.clone().downcast::<Mutex<StubSet<P>>>().ok()
    }
}

/// The stubs of a test, shared by every cache ("process") it runs.
#[derive(Clone, Default)]
pub(crate) struct Stubs {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    primers: HashMap<&'static str, Stubbed>,
    reads: Reads,
    /// The caches the stubs are installed in.
    caches: Vec<Cache>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[track_caller]
fn install(stubbed: &Stubbed, name: &str, cache: &Cache) {
    if let Err(error) = (stubbed.install)(cache) {
        panic!("kck-testing: cannot stub `{name}`: {error}");
    }
}

impl Stubs {
    /// Runs `f` on the stub set of `P`, creating it (and installing its
    /// dispatcher in every cache) if `P` is not stubbed yet.
    #[track_caller]
    fn with_set<P: Primer, R>(&self, f: impl FnOnce(&mut StubSet<P>) -> R) -> R {
        let mut shared = lock(&self.shared);
        if !shared.primers.contains_key(P::DEF.name) {
            let stubbed = stubbed::<P>(shared.reads.clone());
            for cache in &shared.caches {
                install(&stubbed, P::DEF.name, cache);
            }
            shared.primers.insert(P::DEF.name, stubbed);
        }
        let Some(set) = shared.primers.get(P::DEF.name).and_then(Stubbed::set::<P>) else {
            unreachable!("the stubs of a primer are kept under its name")
        };
        drop(shared);
        f(&mut lock(&set))
    }

    /// Stubs `key` of `P` with `produce`.
    #[track_caller]
    pub(crate) fn add_value<P: Primer>(
        &self,
        key: Key,
        produce: impl Fn() -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) {
        self.with_set::<P, _>(|set| set.values.insert(key, Box::new(produce)));
    }

    /// Sends every key of `P` without a stub of its own to `stub`.
    #[track_caller]
    pub(crate) fn set_fallback<P: Primer>(
        &self,
        stub: impl Fn(P::Params) -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) {
        self.with_set::<P, _>(|set| set.fallback = Some(Arc::new(stub)));
    }

    /// Removes the stub of `key`; once `P` has no stub left, the primer
    /// runs again. Says whether `key` had a stub.
    pub(crate) fn remove_value<P: Primer>(&self, key: &Key) -> bool {
        let mut shared = lock(&self.shared);
        let Some(set) = shared.primers.get(P::DEF.name).and_then(Stubbed::set::<P>) else {
            return false;
        };
        let (removed, empty) = {
            let mut set = lock(&set);
            let removed = set.values.remove(key).is_some();
            (removed, set.is_empty())
        };
        if empty {
            uninstall(&mut shared, P::DEF.name);
        }
        removed
    }

    /// Removes every stub of `P`: the primer runs again. Says whether it
    /// was stubbed.
    pub(crate) fn remove_primer<P: Primer>(&self) -> bool {
        uninstall(&mut lock(&self.shared), P::DEF.name)
    }

    /// Whether `key` has a stub of its own (not the fallback).
    pub(crate) fn has_value<P: Primer>(&self, key: &Key) -> bool {
        let shared = lock(&self.shared);
        shared
            .primers
            .get(P::DEF.name)
            .and_then(Stubbed::set::<P>)
            .is_some_and(|set| lock(&set).values.contains_key(key))
    }

    /// Installs every stub in `cache`, and every later one too.
    ///
    /// # Panics
    ///
    /// If a stubbed primer is not registered in `cache`.
    #[track_caller]
    pub(crate) fn attach(&self, cache: &Cache) {
        let mut shared = lock(&self.shared);
        for (name, stubbed) in &shared.primers {
            install(stubbed, name, cache);
        }
        shared.caches.push(cache.clone());
    }

    /// The caches the stubs are installed in.
    pub(crate) fn caches(&self) -> Vec<Cache> {
        lock(&self.shared).caches.clone()
    }

    /// The stubbed keys read so far, in order, once each.
    pub(crate) fn reads(&self) -> Vec<Key> {
        let reads = lock(&self.shared).reads.clone();
        lock(&reads).clone()
    }
}

/// Takes the dispatcher of primer `name` out of every cache.
fn uninstall(shared: &mut Shared, name: &str) -> bool {
    let Some(stubbed) = shared.primers.remove(name) else {
        return false;
    };
    for cache in &shared.caches {
        (stubbed.uninstall)(cache);
    }
    true
}

/// A new, empty stub set of `P`, and its dispatcher's installer.
fn stubbed<P: Primer>(reads: Reads) -> Stubbed {
    let set = Arc::new(Mutex::new(StubSet::<P> {
        values: HashMap::new(),
        fallback: None,
    }));
    let dispatched = set.clone();
    Stubbed {
        set,
        install: Box::new(move |cache: &Cache| {
            let (set, reads) = (dispatched.clone(), reads.clone());
            cache.stub::<P>(move |params| dispatch::<P>(&set, &reads, params))
        }),
        uninstall: Cache::unstub::<P>,
    }
}

/// What the cache calls instead of primer `P`.
fn dispatch<P: Primer>(
    set: &Mutex<StubSet<P>>,
    reads: &Mutex<Vec<Key>>,
    params: P::Params,
) -> Result<P::Value, P::Error> {
    let key = Key::of::<P>(&params);
    {
        let mut reads = lock(reads);
        if !reads.contains(&key) {
            reads.push(key.clone());
        }
    }
    let fallback = {
        let set = lock(set);
        if let Some(produce) = set.values.get(&key) {
            return produce();
        }
        set.fallback.clone()
    };
    match fallback {
        Some(fallback) => fallback(params),
        // Contained by the cache and reported as `Error::Panicked` with
        // this message.
        None => panic!(
            "kck-testing: no stub for `{key}`: add one with stub_value, stub_error or stub_fn"
        ),
    }
}
