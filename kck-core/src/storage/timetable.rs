//! The timetable port: which entries are due for a refresh, which ticks of
//! a schedule fired, and when entries were last read.

use futures_util::future::BoxFuture;

use super::common::StoreError;
use crate::clock::Timestamp;
use crate::key::Key;

/// What the [`Scheduler`](crate::refresh::Scheduler) asks of a store: the entries
/// due for their periodic refresh, the ticks of cron schedules (decided
/// once across every cache of the store), the keys of a primer, and the
/// reads caches report.
///
/// Object safe; the cache holds an `Arc<dyn Timetable>`.
pub trait Timetable: Send + Sync + 'static {
    /// Takes up to `limit` entries due for their periodic refresh at `now`
    /// (`refresh_at <= now`), earliest first, skipping entries another
    /// scheduler is taking at the same moment:
    ///
    /// - those read at or after `read_since` (every one, when `None`) are
    ///   *live*: their refresh time moves to `until`, so that no scheduler
    ///   takes them again meanwhile (the refresh itself sets the next one),
    ///   and they are returned in [`DueRefreshes::refresh`];
    /// - the others are *retired*: their refresh time is cleared, so they
    ///   cost nothing until [`touch`](Timetable::touch) reports a read, which
    ///   makes them due at once. They are returned in
    ///   [`DueRefreshes::retired`].
    ///
    /// The cost must grow with `limit`, not with the number of entries
    /// (PgStore reads an index on the refresh time).
    fn take_due_refreshes<'a>(
        &'a self,
        now: Timestamp,
        until: Timestamp,
        read_since: Option<Timestamp>,
        limit: usize,
    ) -> BoxFuture<'a, Result<DueRefreshes, StoreError>>;

    /// A tick of the schedule `name`, decided once across every cache of
    /// the store, atomically: with no record of `name` yet, records `next`
    /// and returns [`TickClaim::Started`]; if the recorded tick is at or
    /// before `now`, records `next` and returns [`TickClaim::Fired`];
    /// otherwise (not due, or another scheduler just claimed it) changes
    /// nothing and returns [`TickClaim::NotDue`].
    fn claim_tick<'a>(
        &'a self,
        name: &'a str,
        now: Timestamp,
        next: Timestamp,
    ) -> BoxFuture<'a, Result<TickClaim, StoreError>>;

    /// The keys of the entries of a primer.
    fn keys_of<'a>(&'a self, primer: &'a str) -> BoxFuture<'a, Result<Vec<Key>, StoreError>>;

    /// Records that `keys` were read at `at` (keeping later reads), without
    /// changing their versions. A retired entry (see
    /// [`take_due_refreshes`](Timetable::take_due_refreshes)) becomes due for
    /// its refresh at `at`. Unknown keys are ignored.
    fn touch<'a>(&'a self, keys: &'a [Key], at: Timestamp)
    -> BoxFuture<'a, Result<(), StoreError>>;
}

/// What [`Timetable::claim_tick`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickClaim {
    /// The schedule had no record: this claim started it.
    Started,
    /// The recorded tick was due: this claim fired it.
    Fired,
    /// Not due, or claimed by another scheduler.
    NotDue,
}

/// What [`Timetable::take_due_refreshes`] took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueRefreshes {
    /// Live entries to refresh now.
    pub refresh: Vec<Key>,
    /// Entries nobody read for long enough: no longer refreshed on schedule
    /// until read again.
    pub retired: Vec<Key>,
}

impl DueRefreshes {
    /// How many entries were taken.
    pub fn len(&self) -> usize {
        self.refresh.len() + self.retired.len()
    }

    /// Whether none was due.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
