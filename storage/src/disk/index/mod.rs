//! The in-memory index of the disk store: key hash → where the newest item lives.
//!
//! 16 bytes per entry plus the 8-byte key hash, in tables that keep 64-80 % of their slots used
//! (see [`table`]): 30-38 bytes per item. Hash collisions are resolved by the full key
//! stored with the item, which every read compares.

use parking_lot::Mutex;

mod table;

use table::Table;

const HOT: u32 = 1 << 31;

/// Location and identity of one item on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// First block of the item, counted from the start of region 0.
    pub block: u32,
    blocks_hot: u32,
    /// Version of the item (its original insert's sequence): newer versions win.
    pub version: u64,
}

impl Entry {
    /// A new, not yet accessed entry.
    pub fn new(block: u32, blocks: u32, version: u64) -> Entry {
        Entry {
            block,
            blocks_hot: blocks & !HOT,
            version,
        }
    }

    /// Padded length in blocks.
    pub fn blocks(&self) -> u32 {
        self.blocks_hot & !HOT
    }

    /// Read since it was written (second-chance candidate).
    pub fn is_hot(&self) -> bool {
        self.blocks_hot & HOT != 0
    }

    fn same_place(&self, o: &Entry) -> bool {
        self.block == o.block && self.version == o.version
    }
}

const SHARDS: usize = 64;

/// A sharded hash table so that lookups on different keys rarely contend.
pub struct Index {
    // parking_lot mutexes: critical sections are a table probe, never an await.
    shards: Vec<Mutex<Table<Entry>>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| Mutex::new(Table::default())).collect(),
        }
    }
}

impl Index {
    fn shard(&self, hash: u64) -> &Mutex<Table<Entry>> {
        &self.shards[(hash >> 58) as usize % SHARDS]
    }

    /// The entry for `hash`, if any.
    pub fn get(&self, hash: u64) -> Option<Entry> {
        self.shard(hash).lock().get(hash).copied()
    }

    /// Records `entry` unless a newer version for the same hash is indexed.
    pub fn insert_if_newer(&self, hash: u64, entry: Entry) -> bool {
        let mut map = self.shard(hash).lock();
        match map.get(hash) {
            Some(cur) if cur.version > entry.version => false,
            _ => {
                map.insert(hash, entry);
                true
            }
        }
    }

    /// Moves `hash` from `old` to `new` only if it still points at `old`.
    pub fn replace_if(&self, hash: u64, old: &Entry, new: Entry) -> bool {
        let mut map = self.shard(hash).lock();
        match map.get_mut(hash) {
            Some(cur) if cur.same_place(old) => {
                *cur = new;
                true
            }
            _ => false,
        }
    }

    /// Marks the entry at `at` as read since written.
    pub fn mark_hot(&self, hash: u64, at: &Entry) {
        if let Some(cur) = self.shard(hash).lock().get_mut(hash) {
            if cur.same_place(at) {
                cur.blocks_hot |= HOT;
            }
        }
    }

    /// Removes the entry for `hash` whatever it is.
    pub fn remove(&self, hash: u64) -> Option<Entry> {
        self.shard(hash).lock().remove(hash)
    }

    /// Removes the entry for `hash` only if it still points at `at`.
    pub fn remove_if(&self, hash: u64, at: &Entry) -> Option<Entry> {
        let mut map = self.shard(hash).lock();
        match map.get(hash) {
            Some(cur) if cur.same_place(at) => map.remove(hash),
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

    /// Heap bytes held by the index (every table slot: key hash + entry).
    pub fn memory_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().memory_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_compact() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert_eq!(std::mem::size_of::<(u64, Entry)>(), 24);
    }

    #[test]
    fn newer_versions_win_and_moves_are_conditional() {
        let ix = Index::default();
        let a = Entry::new(1, 2, 10);
        let b = Entry::new(300, 2, 20);
        assert!(ix.insert_if_newer(7, b));
        assert!(
            !ix.insert_if_newer(7, a),
            "older version must not replace newer"
        );
        let moved = Entry::new(605, 2, 20);
        assert!(!ix.replace_if(7, &a, moved), "not at a");
        assert!(ix.replace_if(7, &b, moved));
        ix.mark_hot(7, &moved);
        assert!(ix.get(7).unwrap().is_hot());
        assert_eq!(ix.get(7).unwrap().blocks(), 2);
        assert!(ix.remove_if(7, &b).is_none());
        assert!(ix.remove_if(7, &moved).is_some());
        assert!(ix.is_empty());
    }
}
