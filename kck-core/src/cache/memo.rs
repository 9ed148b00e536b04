//! The in-process memo: decoded values and running computations, by key.
//!
//! The memo caches the store. Every slot holds at most one ready value and at
//! most one running computation ("flight"). The memo is sharded, and a shard
//! lock is never held across an `.await` nor while user code runs.
//!
//! Coherence with the store rests on one rule: the memo only receives what the
//! store said, and anything that changes an entry's metadata drops the memo's
//! copy and bumps the slot's `generation`. A flight notes the generation when
//! it starts and installs its result only if it is unchanged, so a value read
//! or written before an invalidation can never reappear after it.

use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use super::flight::{Flight, Served};
use crate::clock::Timestamp;
use crate::erased::ErasedValue;
use crate::key::Key;
use crate::store::{ContentHash, EntryMeta, Version};

type Shard = HashTable<(u64, Key, Slot)>;

pub(crate) struct Memo {
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
}

#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) ready: Option<Ready>,
    pub(crate) flight: Option<Arc<Flight>>,
    /// Bumped whenever `ready` is dropped because the entry changed.
    pub(crate) generation: u64,
    /// Operations outside flights that will install a value keep the slot
    /// (and so its generation) alive.
    pub(crate) pins: u32,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.ready.is_none() && self.flight.is_none() && self.pins == 0
    }

    /// Drops the ready value because the entry changed.
    pub(crate) fn invalidate(&mut self) {
        self.ready = None;
        self.generation += 1;
    }

    /// Installs `ready`, read or written when the slot was at `generation`,
    /// unless the entry changed since or a newer version is already here.
    pub(crate) fn install(&mut self, generation: u64, ready: Ready) {
        let newer = self
            .ready
            .as_ref()
            .is_none_or(|held| held.version < ready.version);
        if self.generation == generation && newer {
            self.ready = Some(ready);
        }
    }
}

/// Keeps a slot, and so its generation, alive while an operation outside a
/// flight writes the store and then installs what it wrote.
pub(crate) struct Pin<'a> {
    memo: &'a Memo,
    key: Key,
    generation: u64,
}

impl Pin<'_> {
    pub(crate) fn install(&self, ready: Ready) {
        self.memo
            .update(&self.key, |slot| slot.install(self.generation, ready));
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
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shards.clamp(1, 1024).next_power_of_two();
        Memo {
            shards: (0..shards).map(|_| RwLock::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
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
        let generation = self.update(key, |slot| {
            slot.pins += 1;
            slot.generation
        });
        Pin {
            memo: self,
            key: key.clone(),
            generation,
        }
    }

    /// Drops the ready value of `key` because the entry changed.
    pub(crate) fn invalidate(&self, key: &Key) {
        self.update_existing(key, Slot::invalidate);
    }

    /// The number of slots (ready values and running computations).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|lock| Self::read_shard(lock).len())
            .sum()
    }
}
