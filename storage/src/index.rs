//! The in-memory index of the disk store: key hash → where the newest item lives.

use std::collections::HashMap;

use parking_lot::Mutex;

/// Location of one item on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Region number.
    pub region: u32,
    /// Offset inside the region, in blocks.
    pub block: u32,
    /// Padded length, in blocks.
    pub blocks: u32,
    /// Sequence number of the item; a read that finds another sequence there is a miss.
    pub seq: u64,
}

const SHARDS: usize = 64;

/// A sharded hash map so that lookups on different keys rarely contend.
pub struct Index {
    // parking_lot mutexes: critical sections are a hash-map probe, never an await.
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Index {
    fn shard(&self, hash: u64) -> &Mutex<HashMap<u64, Entry>> {
        &self.shards[(hash >> 58) as usize % SHARDS]
    }

    /// The entry for `hash`, if any.
    pub fn get(&self, hash: u64) -> Option<Entry> {
        self.shard(hash).lock().get(&hash).copied()
    }

    /// Records `entry` unless a newer item for the same hash is already indexed.
    pub fn insert_if_newer(&self, hash: u64, entry: Entry) -> bool {
        let mut map = self.shard(hash).lock();
        match map.get(&hash) {
            Some(cur) if cur.seq > entry.seq => false,
            _ => {
                map.insert(hash, entry);
                true
            }
        }
    }

    /// Removes the entry for `hash` whatever it is.
    pub fn remove(&self, hash: u64) -> Option<Entry> {
        self.shard(hash).lock().remove(&hash)
    }

    /// Removes the entry for `hash` only if it is still `expected`.
    pub fn remove_if(&self, hash: u64, expected: &Entry) -> bool {
        let mut map = self.shard(hash).lock();
        if map.get(&hash) == Some(expected) {
            map.remove(&hash);
            true
        } else {
            false
        }
    }

    /// Removes the entry for `hash` if it points into `region`.
    pub fn remove_in_region(&self, hash: u64, region: u32) -> Option<Entry> {
        let mut map = self.shard(hash).lock();
        match map.get(&hash) {
            Some(e) if e.region == region => map.remove(&hash),
            _ => None,
        }
    }

    /// Number of indexed items.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
