//! The L1 memory tier: a byte-budgeted, scan-resistant cache (S3-FIFO with TinyLFU admission),
//! in two pools: small values (an object's record) in a share of the budget of their own, large
//! ones (slices) in the rest.
//!
//! Every hit asks for an object's record and then its slice. In one pool a record competes
//! with slices for the same bytes and goes about when its slice does, so a hit from the disk
//! tier read twice: the record, then the slice. Its own pool keeps the records of far more
//! objects than L1 holds slices of, for a sixteenth of the budget, as the established caches
//! keep their whole index in memory: a disk hit is then one read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tinyufo::TinyUfo;

use crate::key::key_hash;

/// Weight unit of the large pool: TinyUFO weights are u16, so bytes are counted in KiB.
const UNIT: usize = 1024;
/// Weight unit of the small pool, whose values are a few hundred bytes.
const SMALL_UNIT: usize = 64;
/// Values of at most this many bytes (with their key) go to the small pool.
const SMALL_MAX: usize = 4096;
/// The small pool's share of the budget: one part in this many.
const SMALL_SHARE: usize = 16;

struct MemEntry {
    key: Box<[u8]>,
    value: Bytes,
}

/// One TinyUFO and the unit its weights count in.
struct Pool {
    ufo: TinyUfo<u64, Arc<MemEntry>>,
    unit: usize,
}

impl Pool {
    /// A pool of `budget` bytes counted in `unit`s, for values of about `typical` bytes; none
    /// when the budget is under one unit.
    fn new(budget: usize, unit: usize, typical: usize) -> Option<Pool> {
        let units = budget / unit;
        (units > 0).then(|| Pool {
            ufo: TinyUfo::new(units, (budget / typical).max(1024)),
            unit,
        })
    }

    /// The weight of an entry of `size` bytes.
    fn weight_of(&self, size: usize) -> u16 {
        size.div_ceil(self.unit).clamp(1, u16::MAX as usize) as u16
    }

    /// The bytes `e` counts for in this pool: its key and value, in whole weight units.
    fn bytes_of(&self, e: &MemEntry) -> u64 {
        u64::from(self.weight_of(e.key.len() + e.value.len())) * self.unit as u64
    }

    /// The entry of `key` (its hash `hash`), if held.
    fn get(&self, hash: u64, key: &[u8]) -> Option<Arc<MemEntry>> {
        // Two keys may share a hash: only the exact key counts.
        self.ufo.get(&hash).filter(|e| &*e.key == key)
    }
}

/// Counters of the memory tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Lookups that found the key.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Values offered to the tier.
    pub inserts: u64,
    /// Values refused because they are too large for the budget.
    pub rejected_too_large: u64,
    /// Values evicted (or refused by the admission filter).
    pub evictions: u64,
    /// Configured budget in bytes.
    pub budget: u64,
    /// Bytes held (keys and values, rounded up to the pools' weight units).
    pub used: u64,
    /// Values held.
    pub items: u64,
}

/// A byte-budgeted in-memory cache of values keyed by bytes.
pub struct MemoryTier {
    /// Values of at most [`SMALL_MAX`] bytes.
    small: Option<Pool>,
    /// The others.
    large: Option<Pool>,
    budget: usize,
    max_item: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    rejected: AtomicU64,
    evictions: AtomicU64,
    /// Bytes held (in each pool's weight units), and values held: TinyUFO keeps its totals
    /// private, so the tier counts what it puts in and what comes out.
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl MemoryTier {
    /// A tier holding about `budget` bytes; 0 disables it.
    pub fn new(budget: usize) -> Self {
        let small_budget = budget / SMALL_SHARE;
        // One value may take at most an eighth of the budget, so a single large slice never
        // flushes the working set.
        let max_item = (budget / 8).min(u16::MAX as usize * UNIT);
        MemoryTier {
            small: Pool::new(small_budget, SMALL_UNIT, 1024),
            large: Pool::new(budget - small_budget, UNIT, 16 * 1024),
            budget,
            max_item,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    /// Counts an entry of `bytes` (in whole weight units) going in (+) or out (-).
    fn held(&self, bytes: u64, entering: bool) {
        let (held, entries) = (&self.bytes, &self.entries);
        if entering {
            held.fetch_add(bytes, Ordering::Relaxed);
            entries.fetch_add(1, Ordering::Relaxed);
        } else {
            // Never below zero, whatever order concurrent updates land in.
            let _ = held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
            let _ = entries.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        }
    }

    /// The pools that are enabled, the small one first.
    fn pools(&self) -> impl Iterator<Item = &Pool> {
        [&self.small, &self.large].into_iter().flatten()
    }

    /// The pool a value of `size` bytes (with its key) belongs in.
    fn pool_for(&self, size: usize) -> Option<&Pool> {
        if Self::is_small(size) {
            self.small.as_ref()
        } else {
            self.large.as_ref()
        }
    }

    /// The entry of `key`, if held, in whichever pool.
    fn entry(&self, key: &[u8]) -> Option<Arc<MemEntry>> {
        let hash = key_hash(key);
        // Records are asked for first, and most: the small pool is looked in first.
        self.pools().find_map(|p| p.get(hash, key))
    }

    /// True when a value of `size` bytes (with its key) goes to the small pool.
    pub(crate) fn is_small(size: usize) -> bool {
        size <= SMALL_MAX
    }

    /// The value of `key`, if held.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.count(self.entry(key).map(|e| e.value.clone()))
    }

    /// The value of `key` if held with exactly `len` bytes: looked for in the one pool a value
    /// of that size lives in (a slice of known length need not be looked for among records).
    pub fn get_sized(&self, key: &[u8], len: usize) -> Option<Bytes> {
        let found = self
            .pool_for(key.len() + len)
            .and_then(|p| p.get(key_hash(key), key))
            .map(|e| e.value.clone())
            .filter(|v| v.len() == len);
        self.count(found)
    }

    /// Counts a lookup's result as a hit or a miss, and passes it on.
    fn count(&self, found: Option<Bytes>) -> Option<Bytes> {
        let c = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Offers `value` to the tier; it may be refused by size or by the admission filter.
    pub fn insert(&self, key: &[u8], value: Bytes) {
        if self.pools().next().is_some() {
            self.inserts.fetch_add(1, Ordering::Relaxed);
        }
        if !self.put(key, value, false) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True when an item of `key_len` + `value_len` bytes could be held (the tier is enabled and
    /// the item not too large).
    pub fn can_hold(&self, key_len: usize, value_len: usize) -> bool {
        let size = key_len + value_len;
        size <= self.max_item && self.pool_for(size).is_some()
    }

    /// Stores `value` bypassing the admission filter (for small records that must be found at
    /// once, while their disk write is still in flight).
    pub fn insert_forced(&self, key: &[u8], value: Bytes) {
        self.put(key, value, true);
    }

    /// Puts `value` in its pool (`forced`: past the admission filter); false when too large.
    fn put(&self, key: &[u8], value: Bytes, forced: bool) -> bool {
        if self.pools().next().is_none() {
            return true;
        }
        let size = key.len() + value.len();
        if size > self.max_item {
            return false;
        }
        let Some(pool) = self.pool_for(size) else {
            return false;
        };
        let hash = key_hash(key);
        for other in self.pools() {
            if std::ptr::eq(other, pool) {
                // A value replacing one under the same key takes its place (and its standing
                // with the admission filter); its bytes leave the totals.
                if let Some(old) = pool.get(hash, key) {
                    self.held(pool.bytes_of(&old), false);
                }
            } else if let Some(old) = other.ufo.remove(&hash) {
                // One of the other size class would be left behind.
                self.held(other.bytes_of(&old), false);
            }
        }
        let weight = pool.weight_of(size);
        let entry = Arc::new(MemEntry {
            key: key.into(),
            value,
        });
        let evicted = if forced {
            pool.ufo.force_put(hash, entry, weight)
        } else {
            pool.ufo.put(hash, entry, weight)
        };
        self.evictions
            .fetch_add(evicted.len() as u64, Ordering::Relaxed);
        // What comes back was dropped, the new value itself when admission refused it.
        let unit = pool.unit as u64;
        self.held(u64::from(weight) * unit, true);
        for kv in &evicted {
            self.held(u64::from(kv.weight) * unit, false);
        }
        true
    }

    /// Drops `key`.
    pub fn remove(&self, key: &[u8]) {
        let hash = key_hash(key);
        for pool in self.pools() {
            if let Some(e) = pool.ufo.remove(&hash) {
                self.held(pool.bytes_of(&e), false);
            }
        }
    }

    /// True when `key` is held (without counting as an access).
    pub fn contains(&self, key: &[u8]) -> bool {
        // TinyUFO has no peek; a get only bumps the use counter, which is harmless here.
        self.entry(key).is_some()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MemoryStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MemoryStats {
            hits: l(&self.hits),
            misses: l(&self.misses),
            inserts: l(&self.inserts),
            rejected_too_large: l(&self.rejected),
            evictions: l(&self.evictions),
            budget: self.budget as u64,
            used: l(&self.bytes).min(self.budget as u64),
            items: l(&self.entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_and_returns_values() {
        let m = MemoryTier::new(1 << 20);
        m.insert(b"a", Bytes::from_static(b"hello"));
        assert_eq!(m.get(b"a").as_deref(), Some(&b"hello"[..]));
        assert_eq!(m.get(b"b"), None);
        m.remove(b"a");
        assert_eq!(m.get(b"a"), None);
    }

    #[test]
    fn a_sized_lookup_finds_only_a_value_of_that_length() {
        let m = MemoryTier::new(4 << 20);
        let small = Bytes::from(vec![1u8; 100]);
        let large = Bytes::from(vec![2u8; 64 * 1024]);
        m.insert_forced(b"small", small.clone());
        m.insert_forced(b"large", large.clone());
        assert_eq!(m.get_sized(b"small", 100), Some(small));
        assert_eq!(m.get_sized(b"large", 64 * 1024), Some(large));
        // Another length: not this value, whichever pool that length would be in.
        assert_eq!(m.get_sized(b"small", 99), None);
        assert_eq!(m.get_sized(b"large", 100), None);
        assert_eq!(m.get_sized(b"large", 64 * 1024 + 1), None);
        assert_eq!(m.stats().hits, 2);
        assert_eq!(m.stats().misses, 3);
    }

    #[test]
    fn stays_within_budget() {
        let m = MemoryTier::new(256 * 1024);
        for i in 0..200u32 {
            m.insert(&i.to_le_bytes(), Bytes::from(vec![0u8; 4096]));
        }
        let held = (0..200u32).filter(|i| m.contains(&i.to_le_bytes())).count();
        // 256 KiB of 4 KiB values: at most 64 fit.
        assert!(held <= 64, "held {held}");
        assert!(held > 0);
    }

    /// Slices streaming through L1, each asked for more often than any record, do not push
    /// the records out: those have a share of their own.
    #[test]
    fn records_stay_while_slices_churn() {
        let m = MemoryTier::new(4 << 20);
        let record = |i: u32| (format!("m:{i}").into_bytes(), Bytes::from(vec![1u8; 600]));
        for i in 0..300 {
            let (k, v) = record(i);
            m.insert_forced(&k, v);
            assert!(m.get(&k).is_some());
        }
        // 16 MiB of 64 KiB slices: four times the budget.
        for i in 0..256u32 {
            let k = format!("s:{i}").into_bytes();
            for _ in 0..3 {
                m.get(&k);
                m.insert(&k, Bytes::from(vec![2u8; 64 << 10]));
            }
        }
        let kept = (0..300).filter(|&i| m.contains(&record(i).0)).count();
        assert_eq!(kept, 300, "records pushed out by slices");
        let s = m.stats();
        assert!(s.used <= s.budget, "{s:?}");
    }

    /// A value replaced by one of the other size class leaves no copy behind.
    #[test]
    fn a_value_changing_size_class_is_held_once() {
        let m = MemoryTier::new(4 << 20);
        m.insert_forced(b"k", Bytes::from(vec![1u8; 100]));
        m.insert_forced(b"k", Bytes::from(vec![2u8; 64 << 10]));
        assert_eq!(m.get(b"k").map(|v| v.len()), Some(64 << 10));
        m.insert_forced(b"k", Bytes::from(vec![3u8; 100]));
        assert_eq!(m.get(b"k").map(|v| v.len()), Some(100));
        let s = m.stats();
        assert_eq!((s.items, s.used), (1, 128), "{s:?}");
        m.remove(b"k");
        assert_eq!(m.get(b"k"), None);
        assert_eq!(m.stats().items, 0);
    }

    #[test]
    fn refuses_oversized_values() {
        let m = MemoryTier::new(64 * 1024);
        m.insert(b"big", Bytes::from(vec![0u8; 16 * 1024]));
        assert!(!m.contains(b"big"));
        assert_eq!(m.stats().rejected_too_large, 1);
    }
}
