//! Single flight: one running computation per key, shared by every reader
//! that wants it, and the wait-for graph that turns a cycle into an error
//! instead of a hang.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::erased::ErasedValue;
use crate::error::Error;
use crate::key::Key;
use crate::storage::ContentHash;

/// What a flight was started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlightMode {
    /// A read: use the stored value if it is fresh, compute otherwise.
    Get,
    /// A refresh: compute, whatever is stored.
    Refresh,
}

/// A value as a read receives it, with the hash of its content, so a
/// computation can later tell whether what it read has changed.
#[derive(Clone)]
pub(crate) struct Served {
    pub(crate) value: ErasedValue,
    pub(crate) hash: ContentHash,
}

/// The result of a flight, shared by all its waiters.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// A value: loaded, or computed.
    Value(Served),
    /// The computation failed. `fallback` is the last good value when the
    /// primer serves it after errors (`stale_if_error`).
    Failed {
        error: Error,
        fallback: Option<Served>,
    },
}

impl Outcome {
    pub(crate) fn failed(error: Error) -> Self {
        Outcome::Failed {
            error,
            fallback: None,
        }
    }

    /// What a read gets: the value, or the fallback after an error.
    pub(crate) fn for_reader(self) -> Result<Served, Error> {
        match self {
            Outcome::Value(served)
            | Outcome::Failed {
                fallback: Some(served),
                ..
            } => Ok(served),
            Outcome::Failed { error, .. } => Err(error),
        }
    }

    /// What an explicit refresh gets: the new value, or the error.
    pub(crate) fn for_refresher(self) -> Result<Served, Error> {
        match self {
            Outcome::Value(served) => Ok(served),
            Outcome::Failed { error, .. } => Err(error),
        }
    }
}

/// One running computation of one key.
pub(crate) struct Flight {
    pub(crate) id: u64,
    pub(crate) mode: FlightMode,
    /// The memo's epoch when the flight started: what it installs must
    /// come from the same epoch.
    pub(crate) epoch: u64,
    outcome: watch::Sender<Option<Outcome>>,
    /// Becomes `true` when the flight has left its slot.
    ended: watch::Sender<bool>,
    /// Stops the flight's task, once it has one.
    task: OnceLock<AbortHandle>,
}

impl Flight {
    pub(crate) fn new(id: u64, mode: FlightMode, epoch: u64) -> Self {
        Flight {
            id,
            mode,
            epoch,
            outcome: watch::Sender::new(None),
            ended: watch::Sender::new(false),
            task: OnceLock::new(),
        }
    }

    /// Notes the task that runs the flight, so [`Flight::stop`] can stop it.
    pub(crate) fn run_on(&self, task: AbortHandle) {
        let _ = self.task.set(task);
    }

    /// Stops the flight's task, if it has one: the task is dropped at its
    /// next await, and its guard gives back what it held (see
    /// `FlightGuard`'s `Drop`).
    pub(crate) fn stop(&self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }

    /// Delivers the outcome to every waiter, present and future. Only the
    /// first delivery counts: a read that was served a stale value is not
    /// served again by the refresh that follows.
    pub(crate) fn deliver(&self, outcome: Outcome) {
        self.outcome.send_if_modified(move |slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some(outcome);
            true
        });
    }

    /// Whether an outcome was delivered.
    pub(crate) fn is_delivered(&self) -> bool {
        self.outcome.borrow().is_some()
    }

    /// Marks the flight as gone from its slot.
    pub(crate) fn end(&self) {
        self.ended.send_replace(true);
    }

    /// Waits until the flight has left its slot.
    pub(crate) async fn ended(&self) {
        let mut receiver = self.ended.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = receiver.wait_for(|ended| *ended).await;
    }

    /// Waits for the outcome. The flight's task always delivers one (its
    /// guard delivers [`Error::Aborted`] if the task is dropped).
    pub(crate) async fn wait(&self, key: &Key) -> Outcome {
        let mut receiver = self.outcome.subscribe();
        let outcome = match receiver.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| Outcome::failed(Error::Aborted { key: key.clone() }))
    }
}

/// Which computing key waits for which: the edges of the wait-for graph. A
/// computation that would wait for itself, directly or through others, gets
/// [`Error::Cycle`] instead.
#[derive(Default)]
pub(crate) struct WaitGraph {
    edges: Mutex<HashMap<Key, Vec<Key>>>,
}

impl WaitGraph {
    /// Records that the computation of `waiter` waits for `target`, unless
    /// that closes a cycle; then returns the cycle, from `waiter` back to it.
    pub(crate) fn enter(&self, waiter: &Key, target: &Key) -> Result<WaitEdge<'_>, Error> {
        let mut edges = self.edges.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = path_between(&edges, target, waiter) {
            let mut cycle = Vec::with_capacity(path.len() + 1);
            cycle.push(waiter.clone());
            cycle.extend(path);
            return Err(Error::Cycle { path: cycle });
        }
        edges
            .entry(waiter.clone())
            .or_default()
            .push(target.clone());
        Ok(WaitEdge {
            graph: self,
            waiter: waiter.clone(),
            target: target.clone(),
        })
    }
}

/// A path `from -> … -> to` along wait edges, if there is one.
fn path_between(edges: &HashMap<Key, Vec<Key>>, from: &Key, to: &Key) -> Option<Vec<Key>> {
    let mut path = vec![from.clone()];
    let mut visited = vec![from.clone()];
    fn walk(
        edges: &HashMap<Key, Vec<Key>>,
        to: &Key,
        path: &mut Vec<Key>,
        visited: &mut Vec<Key>,
    ) -> bool {
        let Some(last) = path.last().cloned() else {
            return false;
        };
        if &last == to {
            return true;
        }
        for next in edges.get(&last).into_iter().flatten() {
            if visited.contains(next) {
                continue;
            }
            visited.push(next.clone());
            path.push(next.clone());
            if walk(edges, to, path, visited) {
                return true;
            }
            path.pop();
        }
        false
    }
    walk(edges, to, &mut path, &mut visited).then_some(path)
}

/// Removes its wait edge when the wait ends.
pub(crate) struct WaitEdge<'a> {
    graph: &'a WaitGraph,
    waiter: Key,
    target: Key,
}

impl Drop for WaitEdge<'_> {
    fn drop(&mut self) {
        let mut edges = self
            .graph
            .edges
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(targets) = edges.get_mut(&self.waiter) {
            if let Some(at) = targets.iter().position(|t| t == &self.target) {
                targets.swap_remove(at);
            }
            if targets.is_empty() {
                edges.remove(&self.waiter);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Key {
        Key::parse(text).unwrap()
    }

    #[test]
    fn a_self_wait_is_a_cycle() {
        let graph = WaitGraph::default();
        let Err(Error::Cycle { path }) = graph.enter(&key("a"), &key("a")) else {
            panic!("expected a cycle");
        };
        assert_eq!(path, [key("a"), key("a")]);
    }

    #[test]
    fn a_cycle_through_others_names_the_path_and_edges_are_released() {
        let graph = WaitGraph::default();
        let ab = graph.enter(&key("a"), &key("b")).unwrap();
        let bc = graph.enter(&key("b"), &key("c")).unwrap();
        let Err(Error::Cycle { path }) = graph.enter(&key("c"), &key("a")) else {
            panic!("expected a cycle");
        };
        assert_eq!(path, [key("c"), key("a"), key("b"), key("c")]);
        drop(ab);
        drop(bc);
        assert!(graph.enter(&key("c"), &key("a")).is_ok());
    }
}
