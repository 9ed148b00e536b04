//! Freshness rules, as pure functions of the policy, the entry and the time.

use std::time::Duration;

use std::hash::BuildHasher;

use super::memo::Ready;
use crate::clock::Timestamp;
use crate::key::Key;
use crate::primer::Policy;

/// What a read may do with a ready value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it; start a refresh if `refresh` (not while a failed refresh
    /// backs off).
    Stale { refresh: bool },
    /// Never serve it: a miss.
    Expired,
}

pub(crate) fn classify(ready: &Ready, now: Timestamp) -> Freshness {
    if ready.expires_at.is_some_and(|at| now >= at) {
        return Freshness::Expired;
    }
    if ready.stale_at.is_some_and(|at| now >= at) {
        let refresh = ready.retry_at.is_none_or(|at| now >= at);
        return Freshness::Stale { refresh };
    }
    Freshness::Fresh
}

/// The soft expiry, periodic refresh and hard expiry of a value computed at
/// `computed_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadlines {
    pub(crate) stale_at: Option<Timestamp>,
    pub(crate) refresh_at: Option<Timestamp>,
    pub(crate) expires_at: Option<Timestamp>,
}

impl Deadlines {
    /// The periodic refresh comes up to a tenth of the interval early,
    /// by an amount that depends on the key and the time: products computed
    /// together do not all come due together again.
    pub(crate) fn of(policy: &Policy, key: &Key, computed_at: Timestamp) -> Self {
        let after = |duration: Option<Duration>| duration.map(|d| computed_at + d);
        let refresh_at = policy.refresh.map(|every| {
            let spread = u64::try_from(every.as_micros() / 10).unwrap_or(u64::MAX);
            let seed = foldhash::fast::FixedState::with_seed(computed_at.as_unix_micros() as u64)
                .hash_one(key.as_str());
            let jitter = Duration::from_micros(seed % spread.max(1));
            computed_at + every.saturating_sub(jitter)
        });
        Deadlines {
            stale_at: after(policy.stale_after),
            refresh_at,
            expires_at: after(policy.expire_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::{ContentHash, Version};

    fn ready(stale: Option<i64>, expires: Option<i64>, retry: Option<i64>) -> Ready {
        let at = |s: Option<i64>| s.map(|s| Timestamp::from_unix_micros(s * 1_000_000));
        Ready {
            value: Arc::new(()),
            version: Version(1),
            content_hash: ContentHash::of(b""),
            changed_at: Timestamp::UNIX_EPOCH,
            stale_at: at(stale),
            expires_at: at(expires),
            retry_at: at(retry),
            attempts: 0,
            deadline: None,
            over_other_code: false,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_micros(seconds * 1_000_000)
    }

    #[test]
    fn soft_then_hard_expiry() {
        let r = ready(Some(10), Some(20), None);
        assert_eq!(classify(&r, at(9)), Freshness::Fresh);
        assert_eq!(classify(&r, at(10)), Freshness::Stale { refresh: true });
        assert_eq!(classify(&r, at(20)), Freshness::Expired);
        assert_eq!(
            classify(&ready(None, None, None), at(1 << 40)),
            Freshness::Fresh
        );
    }

    #[test]
    fn no_refresh_while_backing_off() {
        let r = ready(Some(10), None, Some(15));
        assert_eq!(classify(&r, at(12)), Freshness::Stale { refresh: false });
        assert_eq!(classify(&r, at(15)), Freshness::Stale { refresh: true });
    }

    #[test]
    fn periodic_refreshes_come_up_to_a_tenth_early_and_spread() {
        let policy = Policy::DEFAULT.refresh(Duration::from_secs(100));
        let due: Vec<Timestamp> = (0..50)
            .map(|i| {
                let key = Key::parse(&format!("report/{i}")).expect("a key");
                let due = Deadlines::of(&policy, &key, at(1000)).refresh_at;
                due.expect("a refresh time")
            })
            .collect();
        assert!(
            due.iter().all(|&t| t > at(1090) && t <= at(1100)),
            "{due:?}"
        );
        let distinct: std::collections::HashSet<_> = due.iter().collect();
        assert!(distinct.len() > 40, "spread over the keys: {distinct:?}");
        let key = Key::parse("report/1").expect("a key");
        assert_eq!(
            Deadlines::of(&policy, &key, at(1000)),
            Deadlines::of(&policy, &key, at(1000)),
            "the same for the same key and time"
        );
        assert_eq!(
            Deadlines::of(&Policy::DEFAULT, &key, at(1000)).refresh_at,
            None
        );
    }
}
