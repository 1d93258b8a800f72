//! The L1 memory tier: a byte-budgeted, scan-resistant cache (S3-FIFO with TinyLFU admission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tinyufo::TinyUfo;

use crate::key::key_hash;

/// Weight unit of the underlying cache: TinyUFO weights are u16, so bytes are counted in KiB.
const UNIT: usize = 1024;

struct MemEntry {
    key: Box<[u8]>,
    value: Bytes,
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
    /// Bytes held (keys and values, in the tier's 4 KiB-ish weight units).
    pub used: u64,
    /// Values held.
    pub items: u64,
}

/// A byte-budgeted in-memory cache of values keyed by bytes.
pub struct MemoryTier {
    ufo: Option<TinyUfo<u64, Arc<MemEntry>>>,
    budget: usize,
    max_item: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    rejected: AtomicU64,
    evictions: AtomicU64,
    /// Weight units held, and values held: TinyUFO keeps its totals private, so the tier
    /// counts what it puts in and what comes out.
    units: AtomicU64,
    entries: AtomicU64,
}

impl MemoryTier {
    /// A tier holding about `budget` bytes; 0 disables it.
    pub fn new(budget: usize) -> Self {
        let units = budget / UNIT;
        // One value may take at most an eighth of the budget, so a single large slice never
        // flushes the small-object working set.
        let max_item = (budget / 8).min(u16::MAX as usize * UNIT);
        let ufo = (units > 0).then(|| TinyUfo::new(units, (budget / (16 * 1024)).max(1024)));
        MemoryTier {
            ufo,
            budget,
            max_item,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            units: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    /// Counts an entry of `weight` units going in (+) or out (-).
    fn held(&self, weight: u64, entering: bool) {
        let (units, entries) = (&self.units, &self.entries);
        if entering {
            units.fetch_add(weight, Ordering::Relaxed);
            entries.fetch_add(1, Ordering::Relaxed);
        } else {
            // Never below zero, whatever order concurrent updates land in.
            let _ = units.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(weight))
            });
            let _ = entries.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        }
    }

    /// The weight of an entry of `size` bytes.
    fn weight_of(size: usize) -> u16 {
        size.div_ceil(UNIT).clamp(1, u16::MAX as usize) as u16
    }

    /// The value of `key`, if held.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let found = self
            .ufo
            .as_ref()
            .and_then(|u| u.get(&key_hash(key)))
            // Two keys may share a hash: only the exact key counts.
            .filter(|e| &*e.key == key)
            .map(|e| e.value.clone());
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
        if self.ufo.is_some() {
            self.inserts.fetch_add(1, Ordering::Relaxed);
        }
        if !self.put(key, value, false) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True when an item of `key_len` + `value_len` bytes could be held (the tier is enabled and
    /// the item not too large).
    pub fn can_hold(&self, key_len: usize, value_len: usize) -> bool {
        self.ufo.is_some() && key_len + value_len <= self.max_item
    }

    /// Stores `value` bypassing the admission filter (for small records that must be found at
    /// once, while their disk write is still in flight).
    pub fn insert_forced(&self, key: &[u8], value: Bytes) {
        self.put(key, value, true);
    }

    /// Puts `value` in TinyUFO (`forced`: past the admission filter); false when too large.
    fn put(&self, key: &[u8], value: Bytes, forced: bool) -> bool {
        let Some(ufo) = &self.ufo else { return true };
        let size = key.len() + value.len();
        if size > self.max_item {
            return false;
        }
        let weight = Self::weight_of(size);
        let hash = key_hash(key);
        // A value replacing one under the same key takes its place in the totals.
        if let Some(old) = ufo.get(&hash).filter(|e| &*e.key == key) {
            self.held(
                Self::weight_of(old.key.len() + old.value.len()).into(),
                false,
            );
        }
        let entry = Arc::new(MemEntry {
            key: key.into(),
            value,
        });
        let evicted = if forced {
            ufo.force_put(hash, entry, weight)
        } else {
            ufo.put(hash, entry, weight)
        };
        self.evictions
            .fetch_add(evicted.len() as u64, Ordering::Relaxed);
        // What comes back was dropped, the new value itself when admission refused it.
        self.held(weight.into(), true);
        for kv in &evicted {
            self.held(kv.weight.into(), false);
        }
        true
    }

    /// Drops `key`.
    pub fn remove(&self, key: &[u8]) {
        if let Some(u) = &self.ufo {
            if let Some(e) = u.remove(&key_hash(key)) {
                self.held(Self::weight_of(e.key.len() + e.value.len()).into(), false);
            }
        }
    }

    /// True when `key` is held (without counting as an access).
    pub fn contains(&self, key: &[u8]) -> bool {
        // TinyUFO has no peek; a get only bumps the use counter, which is harmless here.
        self.ufo
            .as_ref()
            .and_then(|u| u.get(&key_hash(key)))
            .is_some_and(|e| &*e.key == key)
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
            used: l(&self.units)
                .saturating_mul(UNIT as u64)
                .min(self.budget as u64),
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

    #[test]
    fn refuses_oversized_values() {
        let m = MemoryTier::new(64 * 1024);
        m.insert(b"big", Bytes::from(vec![0u8; 16 * 1024]));
        assert!(!m.contains(b"big"));
        assert_eq!(m.stats().rejected_too_large, 1);
    }
}
