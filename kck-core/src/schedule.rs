//! Cron schedules (`#[primer(schedule = "0 3 * * *")]`), evaluated in UTC.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::clock::Timestamp;

/// A parsed cron pattern, such as `0 3 * * *` (03:00 every day) or
/// `*/15 * * * * *` (every fifteen seconds: a sixth, leading field counts
/// seconds). Patterns are evaluated in UTC.
///
/// ```
/// use kck_core::clock::Timestamp;
/// use kck_core::primer::Schedule;
///
/// let nightly: Schedule = "0 3 * * *".parse()?;
/// // 2026-11-26T12:00:00Z
/// let noon = Timestamp::from_unix_micros(1_795_694_400_000_000);
/// let next = nightly.next_after(noon).expect("a next tick");
/// assert_eq!(next.to_string(), "2026-11-27T03:00:00.000000Z");
/// # Ok::<(), kck_core::primer::ScheduleError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    pattern: String,
    cron: Cron,
}

/// A cron pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule `{pattern}`: {reason}")]
pub struct ScheduleError {
    /// The pattern.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Schedule {
    /// Parses a cron pattern: five fields (minute, hour, day of month,
    /// month, day of week), or six with seconds first; names (`MON`, `JAN`)
    /// and nicknames (`@daily`) are accepted.
    ///
    /// # Errors
    ///
    /// [`ScheduleError`] naming the pattern and the problem.
    pub fn parse(pattern: &str) -> Result<Schedule, ScheduleError> {
        let cron = Cron::from_str(pattern).map_err(|error| ScheduleError {
            pattern: pattern.to_owned(),
            reason: error.to_string(),
        })?;
        Ok(Schedule {
            pattern: pattern.to_owned(),
            cron,
        })
    }

    /// The pattern, as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The first tick strictly after `time`, if the pattern has one (a
    /// pattern such as `0 0 30 2 *`, the 30th of February, has none).
    pub fn next_after(&self, time: Timestamp) -> Option<Timestamp> {
        let time = DateTime::<Utc>::from_timestamp_micros(time.as_unix_micros())?;
        let next = self.cron.find_next_occurrence(&time, false).ok()?;
        Some(Timestamp::from_unix_micros(next.timestamp_micros()))
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        Schedule::parse(pattern)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.pattern).finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        let time: DateTime<Utc> = text.parse().expect("an RFC 3339 time");
        Timestamp::from_unix_micros(time.timestamp_micros())
    }

    #[test]
    fn next_ticks_are_strictly_later_and_in_utc() {
        let nightly = Schedule::parse("0 3 * * *").expect("valid");
        assert_eq!(
            nightly.next_after(at("2026-11-26T02:59:59Z")),
            Some(at("2026-11-26T03:00:00Z"))
        );
        assert_eq!(
            nightly.next_after(at("2026-11-26T03:00:00Z")),
            Some(at("2026-11-27T03:00:00Z")),
            "a tick is not after itself"
        );
        let seconds = Schedule::parse("*/15 * * * * *").expect("valid");
        assert_eq!(
            seconds.next_after(at("2026-11-26T03:00:01.5Z")),
            Some(at("2026-11-26T03:00:15Z"))
        );
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        let error = Schedule::parse("61 * * * *").expect_err("minute 61");
        assert_eq!(error.pattern, "61 * * * *");
        assert!(!error.reason.is_empty());
        assert!(Schedule::parse("").is_err());
        assert!(Schedule::parse("every day").is_err());
    }

    #[test]
    fn impossible_patterns_have_no_next_tick() {
        let never = Schedule::parse("0 0 30 2 *").expect("parses");
        assert_eq!(never.next_after(at("2026-11-26T00:00:00Z")), None);
    }
}
