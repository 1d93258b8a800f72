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
pub(crate) struct Entry {
    /// First block of the item, counted from the start of region 0.
    pub block: u32,
    blocks_hot: u32,
    /// Version of the item (its original insert's sequence): newer versions win.
    pub version: u64,
}

impl Entry {
    /// A new, not yet accessed entry.
    pub(crate) fn new(block: u32, blocks: u32, version: u64) -> Entry {
        Entry {
            block,
            blocks_hot: blocks & !HOT,
            version,
        }
    }

    /// Padded length in blocks.
    pub(crate) fn blocks(&self) -> u32 {
        self.blocks_hot & !HOT
    }

    /// Read since it was written (second-chance candidate).
    pub(crate) fn is_hot(&self) -> bool {
        self.blocks_hot & HOT != 0
    }

    fn same_place(&self, o: &Entry) -> bool {
        self.block == o.block && self.version == o.version
    }
}

const SHARDS: usize = 64;

/// A sharded hash table so that lookups on different keys rarely contend.
pub(crate) struct Index {
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
    pub(crate) fn get(&self, hash: u64) -> Option<Entry> {
        self.shard(hash).lock().get(hash).copied()
    }

    /// Records `entry` unless a newer version for the same hash is indexed.
    pub(crate) fn insert_if_newer(&self, hash: u64, entry: Entry) -> bool {
        let mut map = self.shard(hash).lock();
        match map.get(hash) {
            Some(cur) if cur.version > entry.version => false,
            _ => {
                map.insert(hash, entry);
                true
            }
        }
    }

    /// Marks the entry at `at` as read since written.
    pub(crate) fn mark_hot(&self, hash: u64, at: &Entry) {
        if let Some(cur) = self.shard(hash).lock().get_mut(hash) {
            if cur.same_place(at) {
                cur.blocks_hot |= HOT;
            }
        }
    }

    /// Marks the entry for `hash`, whatever its place, read since it was written: for a value
    /// read from a copy held elsewhere (in memory).
    pub(crate) fn touch(&self, hash: u64) {
        if let Some(cur) = self.shard(hash).lock().get_mut(hash) {
            cur.blocks_hot |= HOT;
        }
    }

    /// Removes the entry for `hash` whatever it is.
    pub(crate) fn remove(&self, hash: u64) -> Option<Entry> {
        self.shard(hash).lock().remove(hash)
    }

    /// Removes the entry for `hash` only if it still points at `at`.
    pub(crate) fn remove_if(&self, hash: u64, at: &Entry) -> Option<Entry> {
        let mut map = self.shard(hash).lock();
        match map.get(hash) {
            Some(cur) if cur.same_place(at) => map.remove(hash),
            _ => None,
        }
    }

    /// Number of indexed items.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Heap bytes held by the index (every table slot: key hash + entry).
    pub(crate) fn memory_bytes(&self) -> usize {
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
        assert!(ix.insert_if_newer(7, moved), "the same version may move");
        ix.mark_hot(7, &b);
        assert!(!ix.get(7).unwrap().is_hot(), "not at b any more");
        ix.mark_hot(7, &moved);
        assert!(ix.get(7).unwrap().is_hot());
        assert_eq!(ix.get(7).unwrap().blocks(), 2);
        assert!(ix.remove_if(7, &b).is_none());
        assert!(ix.remove_if(7, &moved).is_some());
        assert_eq!(ix.len(), 0);
    }
}
