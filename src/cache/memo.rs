//! Decoded records of the objects hits keep asking for. A hit whose record is the very value
//! decoded last time (the same bytes, at the same place in memory) reuses that decoding, and
//! with it the response header built from it (see [`ObjectMeta::full_header`]), instead of
//! decoding and building again on every hit.
//!
//! Identity, not equality, decides: the memo holds a clone of the bytes it decoded, so while
//! an entry lives no other value can occupy their place, and a record replaced in the tiers
//! (a revalidation, a purge, a refetch) comes back as other bytes and is decoded afresh. The
//! memo is bounded by a count of entries; past it, an arbitrary entry of the shard goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::cache::record::{ObjectMeta, Record};

/// Shards, so hits on different keys rarely wait for one another.
const SHARDS: usize = 16;
/// Entries per shard: 4 096 records in all. Only records read from the memory tier come here,
/// so the bytes an entry holds are, while L1 keeps them, the ones L1 holds.
const PER_SHARD: usize = 256;

/// The record bytes an entry was decoded from, and the decoding.
type Entry = (Bytes, Arc<ObjectMeta>);

/// Decoded object records by metadata key.
pub(crate) struct Memo {
    shards: Vec<Mutex<HashMap<Vec<u8>, Entry>>>,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Memo {
    fn shard(&self, key: &[u8]) -> MutexGuard<'_, HashMap<Vec<u8>, Entry>> {
        let i = xxhash_rust::xxh3::xxh3_64(key) as usize % SHARDS;
        // A poisoned shard only means a panic mid-update of a map that stays valid.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record `raw` read under `key`: the decoding kept from last time if `raw` is the
    /// value decoded then, else decoded now (and kept, if it describes an object).
    pub(crate) fn decode(&self, key: &[u8], raw: Bytes) -> Option<Record> {
        if let Some((kept, meta)) = self.shard(key).get(key) {
            if kept.as_ptr() == raw.as_ptr() && kept.len() == raw.len() {
                return Some(Record::Object(meta.clone()));
            }
        }
        let record = Record::decode(&raw)?;
        let mut shard = self.shard(key);
        match &record {
            Record::Object(meta) => {
                if shard.len() >= PER_SHARD && !shard.contains_key(key) {
                    if let Some(old) = shard.keys().next().cloned() {
                        shard.remove(&old);
                    }
                }
                shard.insert(key.to_vec(), (raw, meta.clone()));
            }
            Record::Vary(_) => {
                shard.remove(key);
            }
        }
        Some(record)
    }

    /// Entries held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(length: u64) -> Bytes {
        ObjectMeta::for_test(length, 1024).encode()
    }

    fn object(r: Option<Record>) -> Arc<ObjectMeta> {
        match r {
            Some(Record::Object(m)) => m,
            _ => panic!("not an object record"),
        }
    }

    #[test]
    fn the_same_bytes_reuse_the_decoding_and_other_bytes_are_decoded_afresh() {
        let memo = Memo::default();
        let raw = record(10);
        let a = object(memo.decode(b"k", raw.clone()));
        let b = object(memo.decode(b"k", raw.clone()));
        assert!(Arc::ptr_eq(&a, &b), "the same bytes: the same decoding");
        // Equal bytes elsewhere in memory (a record stored again): decoded again.
        let copy = Bytes::copy_from_slice(&raw);
        let c = object(memo.decode(b"k", copy));
        assert!(!Arc::ptr_eq(&a, &c));
        // A changed record under the key: its own decoding.
        let d = object(memo.decode(b"k", record(20)));
        assert_eq!(d.length, 20);
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn bytes_that_do_not_decode_are_no_record_and_vary_records_are_not_kept() {
        let memo = Memo::default();
        assert!(memo.decode(b"k", Bytes::from_static(b"garbage")).is_none());
        let vary = Record::encode_vary(&["accept-encoding".to_string()]);
        assert!(matches!(memo.decode(b"v", vary), Some(Record::Vary(_))));
        assert_eq!(memo.len(), 0);
    }

    #[test]
    fn the_memo_is_bounded() {
        let memo = Memo::default();
        let raw = record(10);
        for i in 0..(SHARDS * PER_SHARD * 3) {
            memo.decode(format!("k{i}").as_bytes(), raw.clone());
        }
        assert!(memo.len() <= SHARDS * PER_SHARD, "{}", memo.len());
    }
}
