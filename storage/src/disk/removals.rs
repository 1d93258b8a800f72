//! Removals remembered for a while, so an insert already in flight when its key was removed (an
//! older version) does not bring the key back.

use std::collections::{HashMap, VecDeque};

/// The last few thousand removals (hash → sequence at removal); older ones cannot race an
/// insert any more.
#[derive(Default)]
pub(crate) struct RecentRemovals {
    by_hash: HashMap<u64, u64>,
    order: VecDeque<u64>,
}

impl RecentRemovals {
    const KEEP: usize = 4096;

    /// Records that `hash` was removed when the sequence stood at `seq`.
    pub(crate) fn record(&mut self, hash: u64, seq: u64) {
        if self.by_hash.insert(hash, seq).is_none() {
            self.order.push_back(hash);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.by_hash.remove(&old);
            }
        }
    }

    /// True when `hash` was removed after an item of version `seq` was reserved.
    pub(crate) fn removed_after(&self, hash: u64, seq: u64) -> bool {
        self.by_hash.get(&hash).is_some_and(|&at| at > seq)
    }
}
