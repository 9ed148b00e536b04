//! The in-process memo: decoded values and running computations, by key.
//!
//! The memo caches the store. Every slot holds at most one ready value and at
//! most one running computation ("flight"). The memo is sharded, and a shard
//! lock is never held across an `.await` nor while user code runs.
//!
//! Coherence with the store rests on versions, which grow with every write
//! of the store. Every change the cache learns of (its own writes and
//! invalidations, and those of other caches reported by the store) raises
//! the slot's `floor` to the change's version and drops an older value; a
//! value is installed only if it is at least at the floor. So a value read
//! or written before a change can never reappear after it. A slot is kept
//! alive (and its floor with it) while a flight or a pinned write is under
//! way.
//!
//! When the store says changes may have gone unreported, the memo sets its
//! values aside (served only to reads the store cannot answer, for a
//! bounded time) and stops installing until changes are reported again;
//! then the set-aside values go, and installs started before either change
//! are refused by the memo's `epoch`.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use hashbrown::HashTable;

use super::flight::{Flight, Served};
use crate::clock::Timestamp;
use crate::erased::ErasedValue;
use crate::key::Key;
use crate::storage::{ContentHash, EntryMeta, Version};

type Shard = HashTable<(u64, Key, Slot)>;

pub(crate) struct Memo {
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
    /// Whether values are kept at all: off when configured so, and while
    /// the store may miss changes.
    enabled: AtomicBool,
    configured: bool,
    /// Bumped when tracking of changes is lost or regained.
    epoch: AtomicU64,
    /// When the store stopped reporting changes, while it does not.
    lost_at: Mutex<Option<Timestamp>>,
}

pub(crate) struct Slot {
    pub(crate) ready: Option<Ready>,
    pub(crate) flight: Option<Arc<Flight>>,
    /// The version of the latest change known: no older value may be
    /// installed.
    floor: Version,
    /// Operations outside flights that will install a value keep the slot
    /// (and so its floor) alive.
    pins: u32,
    /// A refresh of the value held was already asked for: stale reads ask
    /// once.
    pub(crate) refresh_queued: bool,
    /// Read since the reads were last reported to the store.
    read: AtomicBool,
    /// The value held when the store stopped reporting changes: no longer
    /// trusted, served only while the store cannot be reached (see
    /// [`Memo::fallback`]).
    kept: Option<Ready>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            ready: None,
            flight: None,
            floor: Version(i64::MIN),
            pins: 0,
            refresh_queued: false,
            read: AtomicBool::new(false),
            kept: None,
        }
    }
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.ready.is_none() && self.flight.is_none() && self.pins == 0 && self.kept.is_none()
    }

    /// Notes a read, for [`Memo::take_reads`]; cheap when already noted.
    pub(crate) fn note_read(&self) {
        if !self.read.load(Ordering::Relaxed) {
            self.read.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a stale read should queue a refresh: the first one does.
    pub(crate) fn queue_refresh_once(&mut self) -> bool {
        !std::mem::replace(&mut self.refresh_queued, true)
    }

    /// The entry changed at `version`: drop an older value, and never take
    /// one again.
    fn observe(&mut self, version: Version) {
        if self
            .ready
            .as_ref()
            .is_some_and(|held| held.version < version)
        {
            self.ready = None;
        }
        self.floor = self.floor.max(version);
    }

    /// Installs `ready` unless a change newer than it is known, or a newer
    /// value is already here.
    fn install(&mut self, ready: Ready) {
        let newer = self
            .ready
            .as_ref()
            .is_none_or(|held| held.version < ready.version);
        if ready.version >= self.floor && newer {
            self.ready = Some(ready);
            self.refresh_queued = false;
        }
    }
}

/// Keeps a slot, and so its floor, alive while an operation outside a
/// flight writes the store and then installs what it wrote.
pub(crate) struct Pin<'a> {
    memo: &'a Memo,
    key: Key,
    epoch: u64,
}

impl Pin<'_> {
    pub(crate) fn install(&self, ready: Ready) {
        self.memo.install(&self.key, self.epoch, ready);
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        self.memo.update_existing(&self.key, |slot| {
            slot.pins = slot.pins.saturating_sub(1);
        });
    }
}

/// A decoded value and the metadata reads decide on.
#[derive(Clone)]
pub(crate) struct Ready {
    pub(crate) value: ErasedValue,
    pub(crate) version: Version,
    pub(crate) content_hash: ContentHash,
    pub(crate) changed_at: Timestamp,
    /// The earlier of soft expiry and periodic refresh.
    pub(crate) stale_at: Option<Timestamp>,
    pub(crate) expires_at: Option<Timestamp>,
    /// After a failed refresh: no new attempt before this instant.
    pub(crate) retry_at: Option<Timestamp>,
    /// Failed refreshes in a row.
    pub(crate) attempts: u32,
    /// The earliest instant at which a read must look closer; `None` means
    /// fresh forever, and the hot path does not even read the clock.
    pub(crate) deadline: Option<Timestamp>,
    /// The stored entry at `version` is another code version's (newer: a
    /// rolling deploy), and this value is this process's own, not stored:
    /// a computation from it asks again before it writes.
    pub(crate) over_other_code: bool,
}

impl Ready {
    /// The value, as a read receives it.
    pub(crate) fn served(&self) -> Served {
        Served {
            value: self.value.clone(),
            hash: self.content_hash,
        }
    }

    pub(crate) fn new(
        value: ErasedValue,
        version: Version,
        meta: &EntryMeta,
        retry_at: Option<Timestamp>,
    ) -> Self {
        let stale_at = earliest(meta.stale_at, meta.refresh_at);
        Ready {
            value,
            version,
            content_hash: meta.content_hash,
            changed_at: meta.changed_at,
            stale_at,
            expires_at: meta.expires_at,
            retry_at,
            attempts: meta.last_error.as_ref().map_or(0, |e| e.attempts),
            deadline: earliest(stale_at, meta.expires_at),
            over_other_code: false,
        }
    }
}

pub(crate) fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Memo {
    pub(crate) fn new(shards: usize, enabled: bool) -> Self {
        let shards = shards.clamp(1, 1024).next_power_of_two();
        Memo {
            shards: (0..shards).map(|_| RwLock::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            enabled: AtomicBool::new(enabled),
            configured: enabled,
            epoch: AtomicU64::new(0),
            lost_at: Mutex::new(None),
        }
    }

    /// The current epoch: installs must present the one they started in.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Installs `ready` in the slot of `key`, if the memo keeps values and
    /// tracking has not changed since `epoch`; see [`Slot::install`].
    pub(crate) fn install(&self, key: &Key, epoch: u64, ready: Ready) {
        self.update(key, |slot| {
            // Checked under the shard lock, so `track` cannot interleave.
            if self.enabled.load(Ordering::SeqCst) && self.epoch() == epoch {
                slot.install(ready);
            }
        });
    }

    /// The store lost (`false`, at `now`) or regained (`true`) track of
    /// changes. Lost: values are no longer trusted, and are set aside as
    /// fallbacks for reads the store cannot answer; new values are kept
    /// again only once changes are tracked. Regained: the fallbacks go too,
    /// as any of them may have been changed meanwhile, so every value is
    /// loaded again before it is served as current.
    pub(crate) fn track(&self, tracked: bool, now: Timestamp) {
        self.enabled
            .store(tracked && self.configured, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let mut lost_at = self.lost_at.lock().unwrap_or_else(PoisonError::into_inner);
            *lost_at = if tracked {
                None
            } else {
                Some(lost_at.unwrap_or(now))
            };
        }
        for lock in self.shards.iter() {
            let mut shard = Self::write_shard(lock);
            for (_, _, slot) in shard.iter_mut() {
                if tracked {
                    slot.kept = None;
                } else if let Some(ready) = slot.ready.take() {
                    slot.kept = Some(ready);
                }
                slot.ready = None;
            }
            shard.retain(|(_, _, slot)| !slot.is_empty());
        }
    }

    /// What a read may be served when the store cannot be reached: the
    /// value held, or one set aside at most `bound` ago when the store
    /// stopped reporting changes; never one past its hard expiry.
    pub(crate) fn fallback(&self, key: &Key, now: Timestamp, bound: Duration) -> Option<Ready> {
        let lost_at = *self.lost_at.lock().unwrap_or_else(PoisonError::into_inner);
        let usable = |ready: &Ready| ready.expires_at.is_none_or(|at| now < at);
        self.read(key.as_str(), |slot| {
            if let Some(ready) = slot.ready.as_ref().filter(|ready| usable(ready)) {
                return Some(ready.clone());
            }
            let kept = slot.kept.as_ref().filter(|ready| usable(ready))?;
            let since = now.saturating_duration_since(lost_at?);
            (since <= bound).then(|| kept.clone())
        })
        .flatten()
    }

    fn locate(&self, key: &str) -> (u64, &RwLock<Shard>) {
        let hash = self.hasher.hash_one(key);
        // The table inside a shard uses the low bits (bucket) and the top
        // seven bits (tag) of the hash; pick the shard from bits in between.
        let index = (hash >> 40) as usize & (self.shards.len() - 1);
        (hash, &self.shards[index])
    }

    fn read_shard(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
        // Nothing panics while a shard is locked, so a poisoned shard is
        // still consistent.
        lock.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_shard(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
        lock.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the slot of `key`, if there is one, under a read lock.
    pub(crate) fn read<R>(&self, key: &str, f: impl FnOnce(&Slot) -> R) -> Option<R> {
        let (hash, lock) = self.locate(key);
        let shard = Self::read_shard(lock);
        shard
            .find(hash, |(_, k, _)| k.as_str() == key)
            .map(|(_, _, slot)| f(slot))
    }

    /// Runs `f` on the slot of `key`, creating it if needed, under a write
    /// lock; removes the slot afterwards if `f` left it empty.
    pub(crate) fn update<R>(&self, key: &Key, f: impl FnOnce(&mut Slot) -> R) -> R {
        let (hash, lock) = self.locate(key.as_str());
        let mut shard = Self::write_shard(lock);
        let entry = shard.entry(
            hash,
            |(_, k, _)| k == key,
            |(stored_hash, _, _)| *stored_hash,
        );
        let mut occupied = entry.or_insert_with(|| (hash, key.clone(), Slot::default()));
        let result = f(&mut occupied.get_mut().2);
        if occupied.get().2.is_empty() {
            occupied.remove();
        }
        result
    }

    /// Like [`Memo::update`], but does nothing if there is no slot.
    pub(crate) fn update_existing<R>(
        &self,
        key: &Key,
        f: impl FnOnce(&mut Slot) -> R,
    ) -> Option<R> {
        let (hash, lock) = self.locate(key.as_str());
        let mut shard = Self::write_shard(lock);
        let mut occupied = shard.find_entry(hash, |(_, k, _)| k == key).ok()?;
        let result = f(&mut occupied.get_mut().2);
        if occupied.get().2.is_empty() {
            occupied.remove();
        }
        Some(result)
    }

    /// Pins the slot of `key`; see [`Pin`].
    pub(crate) fn pin(&self, key: &Key) -> Pin<'_> {
        let epoch = self.epoch();
        self.update(key, |slot| slot.pins += 1);
        Pin {
            memo: self,
            key: key.clone(),
            epoch,
        }
    }

    /// The entry of `key` changed at `version`; see [`Slot::observe`]. Slots
    /// of keys nobody reads or writes here are not created.
    pub(crate) fn observe(&self, key: &Key, version: Version) {
        self.update_existing(key, |slot| slot.observe(version));
    }

    /// Drops the copy of `key`, so the next read loads the entry: for a
    /// caller that knows the store holds a change this memo may not have
    /// been told of yet.
    pub(crate) fn forget(&self, key: &Key) {
        self.update_existing(key, |slot| slot.ready = None);
    }

    /// The keys read since the last call.
    pub(crate) fn take_reads(&self) -> Vec<Key> {
        let mut keys = Vec::new();
        for lock in self.shards.iter() {
            let shard = Self::read_shard(lock);
            for (_, key, slot) in shard.iter() {
                if slot.read.swap(false, Ordering::Relaxed) {
                    keys.push(key.clone());
                }
            }
        }
        keys
    }

    /// The number of slots (ready values and running computations).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|lock| Self::read_shard(lock).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::EntryMeta;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(minutes: u64) -> Timestamp {
        Timestamp::UNIX_EPOCH + MINUTE * minutes as u32
    }

    fn ready(version: i64, expires_at: Option<Timestamp>) -> Ready {
        let meta = EntryMeta {
            computed_at: at(0),
            changed_at: at(0),
            stale_at: None,
            refresh_at: None,
            expires_at,
            content_hash: crate::storage::ContentHash::of(b"1"),
            code_version: String::new(),
            compute_duration: Duration::ZERO,
            last_error: None,
            read_at: None,
        };
        Ready::new(Arc::new(1_i64), Version(version), &meta, None)
    }

    fn memo_with(key: &Key, ready: Ready) -> Memo {
        let memo = Memo::new(1, true);
        memo.install(key, memo.epoch(), ready);
        memo
    }

    fn fallback_version(memo: &Memo, key: &Key, now: Timestamp, bound: Duration) -> Option<i64> {
        memo.fallback(key, now, bound).map(|ready| ready.version.0)
    }

    #[test]
    fn a_trusted_copy_is_a_fallback_until_its_hard_expiry() {
        let key = Key::parse("a").unwrap();
        let memo = memo_with(&key, ready(3, Some(at(10))));
        assert_eq!(
            fallback_version(&memo, &key, at(9), Duration::ZERO),
            Some(3)
        );
        assert_eq!(fallback_version(&memo, &key, at(10), Duration::ZERO), None);
    }

    #[test]
    fn a_copy_set_aside_when_changes_go_unreported_is_a_fallback_within_the_bound() {
        let key = Key::parse("a").unwrap();
        let memo = memo_with(&key, ready(3, Some(at(60))));
        memo.track(false, at(5));
        assert!(
            memo.read(key.as_str(), |slot| slot.ready.is_none())
                .unwrap()
        );
        let bound = MINUTE * 2;
        assert_eq!(fallback_version(&memo, &key, at(7), bound), Some(3));
        assert_eq!(fallback_version(&memo, &key, at(8), bound), None);
        // A second loss does not restart the bound.
        memo.track(false, at(6));
        assert_eq!(fallback_version(&memo, &key, at(8), bound), None);
    }

    #[test]
    fn a_set_aside_copy_is_never_served_past_its_hard_expiry() {
        let key = Key::parse("a").unwrap();
        let memo = memo_with(&key, ready(3, Some(at(6))));
        memo.track(false, at(5));
        assert_eq!(fallback_version(&memo, &key, at(6), MINUTE * 10), None);
    }

    #[test]
    fn set_aside_copies_go_once_changes_are_reported_again() {
        let key = Key::parse("a").unwrap();
        let memo = memo_with(&key, ready(3, None));
        memo.track(false, at(5));
        memo.track(true, at(6));
        assert_eq!(fallback_version(&memo, &key, at(6), MINUTE * 10), None);
        assert_eq!(memo.len(), 0);
    }
}
