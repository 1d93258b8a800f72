//! Removals and the inserts in flight they may race: an insert already in flight when its key
//! was removed (an older version) must not bring the key back, and a removal of a key whose
//! insert is in flight must be recorded on the device.
//!
//! A removal is kept exactly as long as an insert older than it is in flight, and no longer: an
//! insert that starts later has a newer sequence number, which the removal cannot concern. So
//! the check is exact whatever the burst of removals, and memory is bounded by the removals made
//! during the slowest insert in flight.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Removals still relevant to some insert in flight, and the inserts in flight.
#[derive(Default)]
pub(crate) struct Removals {
    /// Key hash → the sequence at its latest removal.
    by_hash: HashMap<u64, u64>,
    /// (sequence at removal, key hash), in the order recorded (sequences never decrease:
    /// removals and reservations are made under the allocator's lock).
    order: VecDeque<(u64, u64)>,
    /// Inserts reserved but not yet indexed (or given up): sequence → key hash.
    in_flight: BTreeMap<u64, u64>,
}

impl Removals {
    /// Records that `hash` was removed when the sequence stood at `seq`; true when an insert of
    /// the same hash is in flight (its item may land on the device, so the removal must be
    /// recorded there too).
    pub(crate) fn record(&mut self, hash: u64, seq: u64) -> bool {
        self.by_hash.insert(hash, seq);
        self.order.push_back((seq, hash));
        self.prune();
        self.in_flight.values().any(|&h| h == hash)
    }

    /// Counts an insert of `hash` reserved at `seq` as in flight; call under the allocator's
    /// lock, with the reservation, so that no removal can come between.
    pub(crate) fn begin_insert(&mut self, seq: u64, hash: u64) {
        self.in_flight.insert(seq, hash);
    }

    /// Ends the insert reserved at `seq` (indexed, failed or abandoned); returns true when its
    /// key `hash` was removed after it was reserved (it must then not be indexed).
    pub(crate) fn end_insert(&mut self, seq: u64, hash: u64) -> bool {
        let removed = self.by_hash.get(&hash).is_some_and(|&at| at > seq);
        self.in_flight.remove(&seq);
        self.prune();
        removed
    }

    /// Forgets the removals no insert in flight is older than.
    fn prune(&mut self) {
        let oldest = self.in_flight.keys().next().copied();
        while let Some(&(at, hash)) = self.order.front() {
            if oldest.is_some_and(|s| at > s) {
                break;
            }
            self.order.pop_front();
            if self.by_hash.get(&hash) == Some(&at) {
                self.by_hash.remove(&hash);
            }
        }
    }

    /// Removals held (for tests of the bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_hash.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_last_exactly_as_long_as_an_older_insert_is_in_flight() {
        let mut r = Removals::default();
        r.begin_insert(10, 7);
        assert!(r.record(7, 11), "an insert of 7 is in flight");
        for h in 100..10_100 {
            assert!(!r.record(h, 12));
        }
        assert!(
            r.end_insert(10, 7),
            "removed after it was reserved, whatever the burst"
        );
        assert_eq!(r.len(), 0, "nothing older in flight: all forgotten");
        r.begin_insert(20, 8);
        assert!(!r.record(9, 21));
        r.begin_insert(22, 9);
        assert!(!r.end_insert(22, 9), "reserved after the removal");
        assert!(!r.end_insert(20, 8));
    }
}
