//! Exponential back-off: how long to wait after a failure before the next
//! attempt. One rule for both places that retry: a product whose
//! computation failed (the cache's `retry_backoff`) and a refresh job that
//! failed (the worker's `retries`).

use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use crate::clock::Timestamp;

/// `base`, doubling with each failure in a row, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    pub(crate) const DEFAULT: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    /// The wait after the `attempts`-th failure in a row:
    /// `base * 2^(attempts - 1)`, at most `max`.
    pub(crate) fn delay(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << exponent).min(self.max)
    }

    /// When to try again after the `attempts`-th failure in a row at
    /// `failed_at`.
    pub(crate) fn retry_at(&self, failed_at: Timestamp, attempts: u32) -> Timestamp {
        failed_at + self.delay(attempts)
    }

    /// Like [`Backoff::retry_at`], plus up to a quarter more, spread by
    /// `spread` and the attempt: many things that failed together do not
    /// all come back at once.
    pub(crate) fn spread_retry_at(
        &self,
        failed_at: Timestamp,
        attempts: u32,
        spread: impl Hash,
    ) -> Timestamp {
        let delay = self.delay(attempts);
        let hash = foldhash::fast::FixedState::with_seed(0x6b636b).hash_one((spread, attempts));
        let jitter = delay.mul_f64((hash % 1000) as f64 / 4000.0);
        failed_at + delay + jitter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_micros(seconds * 1_000_000)
    }

    fn ten_seconds_at_most() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let backoff = ten_seconds_at_most();
        let delays: Vec<_> = (1..=6)
            .map(|n| {
                backoff
                    .retry_at(at(0), n)
                    .saturating_duration_since(at(0))
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn spread_adds_at_most_a_quarter_and_differs_by_what_failed() {
        let backoff = ten_seconds_at_most();
        let waits: Vec<Duration> = (0..50_i64)
            .map(|job| {
                backoff
                    .spread_retry_at(at(0), 3, job)
                    .saturating_duration_since(at(0))
            })
            .collect();
        for wait in &waits {
            assert!(
                (Duration::from_secs(4)..=Duration::from_secs(5)).contains(wait),
                "{wait:?}"
            );
        }
        assert!(waits.iter().any(|wait| *wait != waits[0]));
        // The same job and attempt always wait the same.
        assert_eq!(
            backoff.spread_retry_at(at(0), 3, 7_i64),
            backoff.spread_retry_at(at(0), 3, 7_i64)
        );
    }
}
