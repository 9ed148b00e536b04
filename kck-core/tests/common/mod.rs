//! A fake remote source for the primers of the tests, and helpers.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kck_core::Ctx;
use kck_testing::TestCache;
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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

/// A test cache whose primers read `source`.
pub(crate) fn test_cache(source: &Arc<Source>) -> TestCache {
    let source = source.clone();
    TestCache::builder()
        .configure(move |builder| builder.state(source))
        .build()
}

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
