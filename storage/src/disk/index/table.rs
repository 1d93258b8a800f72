//! An open-addressing table from key hash to a small value (the index's entry), grown in small
//! steps so that its slack stays bounded: once past its first growth, 64 % to 80 % of its slots
//! (24 bytes each for the index) are used.
//!
//! A general-purpose map doubles when full, so right after growing it spends more than twice
//! the bytes per item; an index of millions of items should cost about the same per item at
//! every fill level. Linear probing with backward-shift deletion (no tombstones).

//!
//! The table knows nothing of what it stores: the index (its parent module) gives it values of
//! its own `Entry` type, so the table depends on nothing of the index.

const MIN_SLOTS: usize = 16;

/// One slot: key hash 0 marks an empty one; a real hash of 0 is stored as 1 (a collision the
/// full-key check on read already handles).
#[derive(Clone, Copy)]
struct Slot<V> {
    hash: u64,
    value: V,
}

impl<V: Copy + Default> Slot<V> {
    fn empty() -> Self {
        Slot {
            hash: 0,
            value: V::default(),
        }
    }
}

/// A map from (non-zero) key hash to a `V`.
pub(crate) struct Table<V> {
    slots: Box<[Slot<V>]>,
    len: usize,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            slots: Box::default(),
            len: 0,
        }
    }
}

fn stored(hash: u64) -> u64 {
    hash.max(1)
}

/// True when `x` lies in the cyclic range `(a, b]`.
fn between(x: usize, a: usize, b: usize) -> bool {
    if a <= b {
        a < x && x <= b
    } else {
        a < x || x <= b
    }
}

impl<V: Copy + Default> Table<V> {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held (all slots, used or not).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot<V>>()
    }

    /// Where `hash` would sit with no collisions. The index picks shards by the hash's top bits,
    /// so the position is taken from a rotation that puts other bits on top.
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash.rotate_left(8)) * self.slots.len() as u128) >> 64) as usize
    }

    fn find(&self, hash: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let hash = stored(hash);
        let n = self.slots.len();
        let mut i = self.home(hash);
        // Terminates: the load factor keeps at least a fifth of the slots empty.
        loop {
            match self.slots[i].hash {
                0 => return None,
                h if h == hash => return Some(i),
                _ => i = (i + 1) % n,
            }
        }
    }

    /// The entry for `hash`.
    pub(crate) fn get(&self, hash: u64) -> Option<&V> {
        self.find(hash).map(|i| &self.slots[i].value)
    }

    /// The entry for `hash`, writable.
    pub(crate) fn get_mut(&mut self, hash: u64) -> Option<&mut V> {
        self.find(hash).map(|i| &mut self.slots[i].value)
    }

    /// Sets the entry for `hash`; returns the one it replaces.
    pub(crate) fn insert(&mut self, hash: u64, value: V) -> Option<V> {
        if let Some(i) = self.find(hash) {
            return Some(std::mem::replace(&mut self.slots[i].value, value));
        }
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.grow();
        }
        self.place(stored(hash), value);
        self.len += 1;
        None
    }

    /// Puts a hash known to be absent into the first free slot from its home.
    fn place(&mut self, hash: u64, value: V) {
        let n = self.slots.len();
        let mut i = self.home(hash);
        while self.slots[i].hash != 0 {
            i = (i + 1) % n;
        }
        self.slots[i] = Slot { hash, value };
    }

    /// A quarter more slots (at least [`MIN_SLOTS`]), every entry moved to its new place.
    fn grow(&mut self) {
        let n = (self.slots.len() + self.slots.len() / 4).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![Slot::empty(); n].into_boxed_slice());
        for s in old.iter().filter(|s| s.hash != 0) {
            self.place(s.hash, s.value);
        }
    }

    /// Removes the entry for `hash`.
    pub(crate) fn remove(&mut self, hash: u64) -> Option<V> {
        let mut hole = self.find(hash)?;
        let removed = self.slots[hole].value;
        let n = self.slots.len();
        // Entries after the hole whose home is not between the hole and them move back into it,
        // so every entry stays reachable from its home without tombstones.
        let mut j = (hole + 1) % n;
        while self.slots[j].hash != 0 {
            if !between(self.home(self.slots[j].hash), hole, j) {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = (j + 1) % n;
        }
        self.slots[hole] = Slot::empty();
        self.len -= 1;
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::index::Entry;
    use std::collections::HashMap;

    fn rng(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Random inserts, replacements and removals agree with a std map, including hashes that
    /// share a home slot and runs that wrap around the table's end.
    #[test]
    fn behaves_like_a_map() {
        let mut t = Table::default();
        let mut model = HashMap::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        for step in 0..200_000u64 {
            let r = rng(&mut x);
            // A small key space (many collisions of home and of hash), sometimes hash 0 and 1.
            let hash = match r % 100 {
                0 => 0,
                1 => 1,
                _ => ((r >> 8) % 3000).wrapping_mul(0x9E37_79B9_7F4A_7C15) + (r >> 40) % 3,
            };
            let entry = Entry::new(step as u32, 1, step);
            match (r >> 20) % 3 {
                0 | 1 => assert_eq!(
                    t.insert(hash, entry),
                    model.insert(stored(hash), entry),
                    "insert at {step}"
                ),
                _ => assert_eq!(
                    t.remove(hash),
                    model.remove(&stored(hash)),
                    "remove at {step}"
                ),
            }
            if step % 1000 == 0 {
                assert_eq!(t.len(), model.len());
                for (h, e) in &model {
                    assert_eq!(t.get(*h), Some(e));
                }
            }
        }
    }

    #[test]
    fn slack_stays_bounded_while_growing() {
        let mut t = Table::default();
        let mut x = 7u64;
        for i in 0..100_000u64 {
            t.insert(rng(&mut x), Entry::new(i as u32, 1, i));
            if t.len() >= 200 {
                let per_item = t.memory_bytes() as f64 / t.len() as f64;
                assert!(
                    per_item <= 24.0 / 0.64 + 0.5,
                    "{per_item} B/item at {}",
                    t.len()
                );
            }
        }
        assert!(t.memory_bytes() / t.len() < 40);
    }
}
