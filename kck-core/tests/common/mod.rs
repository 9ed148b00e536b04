//! A fake remote source for the primers of the tests, and helpers.

// Each test binary uses its own part of this module.
#![allow(dead_code, unused_macros, unused_imports)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kck_core::{CacheBuilder, Ctx};
use kck_diesel::PgStore;
use kck_testing::TestCache;
use kck_testing::postgres::TestDatabase;
use tokio::sync::watch;

/// What primers in tests read instead of a remote system: values by name,
/// names that fail, a count of reads, and a gate that holds reads until the
/// test opens it.
pub(crate) struct Source {
    values: Mutex<HashMap<String, i64>>,
    failing: Mutex<HashSet<String>>,
    reads: Mutex<HashMap<String, usize>>,
    open: watch::Sender<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source `{0}` is down")]
pub(crate) struct SourceDown(pub(crate) String);

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Source {
    pub(crate) fn new() -> Arc<Source> {
        Arc::new(Source {
            values: Mutex::default(),
            failing: Mutex::default(),
            reads: Mutex::default(),
            open: watch::Sender::new(true),
        })
    }

    pub(crate) fn set(&self, name: &str, value: i64) {
        lock(&self.values).insert(name.to_owned(), value);
    }

    pub(crate) fn fail(&self, name: &str, failing: bool) {
        let mut names = lock(&self.failing);
        if failing {
            names.insert(name.to_owned());
        } else {
            names.remove(name);
        }
    }

    /// Holds every read until [`Source::open`].
    pub(crate) fn hold(&self) {
        self.open.send_replace(false);
    }

    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }

    pub(crate) fn reads(&self, name: &str) -> usize {
        lock(&self.reads).get(name).copied().unwrap_or(0)
    }

    pub(crate) async fn read(&self, name: &str) -> Result<i64, SourceDown> {
        *lock(&self.reads).entry(name.to_owned()).or_default() += 1;
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        if lock(&self.failing).contains(name) {
            return Err(SourceDown(name.to_owned()));
        }
        Ok(lock(&self.values).get(name).copied().unwrap_or(0))
    }
}

/// The source the cache was built with.
pub(crate) fn source(ctx: &Ctx) -> &Source {
    ctx.state::<Arc<Source>>()
        .expect("the test cache is built with a Source")
}

/// A test cache whose primers read `source`, on the memory store.
pub(crate) fn test_cache(source: &Arc<Source>) -> TestCache {
    test_cache_with(source, |builder| builder)
}

/// [`test_cache`], with more of the cache's configuration.
pub(crate) fn test_cache_with(
    source: &Arc<Source>,
    configure: impl Fn(CacheBuilder) -> CacheBuilder + 'static,
) -> TestCache {
    let source = source.clone();
    TestCache::builder()
        .configure(move |builder| configure(builder.state(source.clone())))
        .build()
}

/// A test cache and the store it runs on.
pub(crate) struct Harness {
    test: TestCache,
    _database: Option<TestDatabase>,
}

impl std::ops::Deref for Harness {
    type Target = TestCache;
    fn deref(&self) -> &TestCache {
        &self.test
    }
}

impl kck_core::Scope for Harness {
    fn scope(&self) -> kck_core::ScopeRef<'_> {
        self.test.scope()
    }
}

/// [`test_cache`], as a [`Harness`].
pub(crate) fn on_memory(source: &Arc<Source>) -> Harness {
    on_memory_with(source, |builder| builder)
}

/// [`test_cache_with`], as a [`Harness`].
pub(crate) fn on_memory_with(
    source: &Arc<Source>,
    configure: impl Fn(CacheBuilder) -> CacheBuilder + 'static,
) -> Harness {
    Harness {
        test: test_cache_with(source, configure),
        _database: None,
    }
}

/// A test cache whose primers read `source`, on PostgreSQL: a fresh
/// database of its own. `None` (after a loud message) without PostgreSQL.
pub(crate) async fn on_postgres(source: &Arc<Source>) -> Option<Harness> {
    on_postgres_with(source, |builder| builder).await
}

/// [`on_postgres`], with more of the cache's configuration.
pub(crate) async fn on_postgres_with(
    source: &Arc<Source>,
    configure: impl Fn(CacheBuilder) -> CacheBuilder + 'static,
) -> Option<Harness> {
    let database = TestDatabase::create().await?;
    let store = PgStore::connect(database.url())
        .await
        .expect("the test database accepts connections");
    let source = source.clone();
    let test = TestCache::builder()
        .store(store)
        .configure(move |builder| configure(builder.state(source.clone())))
        .build();
    Some(Harness {
        test,
        _database: Some(database),
    })
}

/// Defines a test twice, as a module with `on_memory` and `on_postgres`:
/// the same body against each store. The body gets the cache as `$test`
/// and the fake source as `$source`.
macro_rules! on_every_store {
    ($(
        #[$attribute:meta]
        async fn $name:ident($test:ident, $source:ident) $body:block
    )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[$attribute]
            async fn on_memory() {
                let $source = common::Source::new();
                let $test = common::on_memory(&$source);
                $body
            }

            #[$attribute]
            async fn on_postgres() {
                let $source = common::Source::new();
                let Some($test) = common::on_postgres(&$source).await else {
                    return;
                };
                $body
            }
        }
    )*};
}

pub(crate) use on_every_store;

/// Yields until `done()`: for waiting on other tasks without sleeping.
pub(crate) async fn until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::task::yield_now().await;
    }
}

/// Waits until `readers` reads of `key` are waiting on (or started) its
/// computation.
pub(crate) async fn until_waiting(test: &TestCache, key: &kck_core::Key, readers: usize) {
    until(|| {
        test.recorder().count(key, "miss") + test.recorder().count(key, "coalesced") >= readers
    })
    .await;
}
