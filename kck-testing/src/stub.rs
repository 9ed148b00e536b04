//! Stubs: primers that return given values instead of running.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kck_core::{CacheBuilder, Key, Primer, TypedKey};

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

/// The stubs of every primer, and the log of stub reads. Shared with the
/// closures installed in the cache, so stubs can change after the build.
#[derive(Clone, Default)]
pub(crate) struct Stubs {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Per primer name, an `Arc<Mutex<StubSet<P>>>`.
    sets: HashMap<&'static str, Arc<dyn Any + Send + Sync>>,
    /// One per stubbed primer: installs its stub in the cache builder.
    installers: Vec<Box<dyn FnOnce(CacheBuilder) -> CacheBuilder + Send>>,
    reads: Vec<Key>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stubs {
    /// The stub set of `P`, created (with its installer) on first use.
    fn set<P: Primer>(&self) -> Arc<Mutex<StubSet<P>>> {
        let mut inner = lock(&self.inner);
        if let Some(set) = inner.sets.get(P::DEF.name)
            && let Ok(set) = set.clone().downcast::<Mutex<StubSet<P>>>()
        {
            return set;
        }
        let set = Arc::new(Mutex::new(StubSet::<P> {
            values: HashMap::new(),
            fallback: None,
        }));
        inner.sets.insert(P::DEF.name, set.clone());
        let stubs = self.clone();
        let installed = set.clone();
        inner
            .installers
            .push(Box::new(move |builder: CacheBuilder| {
                builder.stub::<P>(move |params| stubs.call::<P>(&installed, params))
            }));
        set
    }

    fn call<P: Primer>(
        &self,
        set: &Mutex<StubSet<P>>,
        params: P::Params,
    ) -> Result<P::Value, P::Error> {
        let key = Key::of::<P>(&params);
        {
            let mut inner = lock(&self.inner);
            if !inner.reads.contains(&key) {
                inner.reads.push(key.clone());
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

    pub(crate) fn add_value<P: Primer>(
        &mut self,
        key: TypedKey<P>,
        produce: impl Fn() -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) {
        let set = self.set::<P>();
        lock(&set).values.insert(key.into(), Box::new(produce));
    }

    pub(crate) fn set_fallback<P: Primer>(
        &mut self,
        stub: impl Fn(P::Params) -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) {
        let set = self.set::<P>();
        lock(&set).fallback = Some(Arc::new(stub));
    }

    /// Replaces the stub of `key` after the cache was built.
    #[track_caller]
    pub(crate) fn set_value<P: Primer>(
        &self,
        key: TypedKey<P>,
        produce: impl Fn() -> Result<P::Value, P::Error> + Send + Sync + 'static,
    ) {
        let set = {
            let inner = lock(&self.inner);
            inner
                .sets
                .get(P::DEF.name)
                .and_then(|set| set.clone().downcast::<Mutex<StubSet<P>>>().ok())
        };
        let Some(set) = set else {
            panic!(
                "kck-testing: `{}` was not stubbed when the test cache was built",
                P::DEF.name
            );
        };
        lock(&set).values.insert(key.into(), Box::new(produce));
    }

    /// Installs every stub in `builder`.
    pub(crate) fn install(&self, mut builder: CacheBuilder) -> CacheBuilder {
        let installers = std::mem::take(&mut lock(&self.inner).installers);
        for install in installers {
            builder = install(builder);
        }
        builder
    }

    pub(crate) fn reads(&self) -> Vec<Key> {
        lock(&self.inner).reads.clone()
    }
}
