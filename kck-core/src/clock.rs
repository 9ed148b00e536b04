//! Time. This is the only module that reads the wall clock.

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant in UTC, with microsecond precision (as PostgreSQL's
/// `timestamptz`).
///
/// ```
/// use std::time::Duration;
/// use kck_core::clock::Timestamp;
///
/// let t = Timestamp::from_unix_micros(1_795_000_000_000_000);
/// assert_eq!((t + Duration::from_secs(60)).saturating_duration_since(t), Duration::from_secs(60));
/// assert_eq!(t.to_string(), "2026-11-18T11:06:40.000000Z");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    /// The instant `micros` microseconds after (or before, if negative) the
    /// Unix epoch.
    pub const fn from_unix_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_unix_micros(self) -> i64 {
        self.0
    }

    /// Converts a [`SystemTime`], saturating outside the representable range.
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Timestamp(i64::try_from(after.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => {
                Timestamp(i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m))
            }
        }
    }

    /// `self + duration`, saturating at the end of time.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(micros))
    }

    /// `self - duration`, saturating at the beginning of time.
    pub fn saturating_sub(self, duration: Duration) -> Self {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(micros))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        let micros = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_micros(micros.unsigned_abs())
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, duration: Duration) -> Timestamp {
        self.saturating_add(duration)
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, duration: Duration) -> Timestamp {
        self.saturating_sub(duration)
    }
}

/// RFC 3339 in UTC: `2026-11-26T12:00:00.000000Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a date.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The source of "now" for every freshness decision kck makes.
///
/// Production code uses [`SystemClock`]; tests use [`MockClock`] and move
/// time by hand.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// A clock that only moves when told to. Share it with `Arc` between the
/// cache and the test.
///
/// ```
/// use std::time::Duration;
/// use kck_core::clock::{Clock, MockClock, Timestamp};
///
/// let clock = MockClock::new(Timestamp::UNIX_EPOCH);
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now(), Timestamp::from_unix_micros(90_000_000));
/// ```
#[derive(Debug)]
pub struct MockClock {
    micros: AtomicI64,
}

impl MockClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        MockClock {
            micros: AtomicI64::new(start.as_unix_micros()),
        }
    }

    /// Moves the clock forward by `duration`.
    pub fn advance(&self, duration: Duration) {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        self.micros.fetch_add(micros, Ordering::SeqCst);
    }

    /// Sets the clock to `time` (which may be in the past).
    pub fn set(&self, time: Timestamp) {
        self.micros.store(time.as_unix_micros(), Ordering::SeqCst);
    }
}

impl Default for MockClock {
    /// A clock standing at 2026-01-01T00:00:00Z.
    fn default() -> Self {
        MockClock::new(Timestamp::from_unix_micros(1_767_225_600_000_000))
    }
}

impl Clock for MockClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_rfc3339() {
        assert_eq!(
            Timestamp::UNIX_EPOCH.to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(1_767_225_600_000_000).to_string(),
            "2026-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(951_827_696_123_456).to_string(),
            "2000-02-29T12:34:56.123456Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(-1).to_string(),
            "1969-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_unix_micros(i64::MAX - 1);
        assert_eq!(
            t + Duration::from_secs(1),
            Timestamp::from_unix_micros(i64::MAX)
        );
        assert_eq!(
            Timestamp::UNIX_EPOCH.saturating_duration_since(t),
            Duration::ZERO
        );
    }
}
