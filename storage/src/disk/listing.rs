//! Rebuilding the index from the device: region summaries where sealed, item scans where not.

use crate::disk::ondisk::item::{self, ItemHeader};
use crate::disk::ondisk::summary::SummaryEntry;
use crate::key::key_hash;

/// Finds the intact items of one region image (`region` is the whole region, header included).
///
/// Items are walked from block 1. Where a block holds no valid item of this generation (a hole
/// left by a write that never landed, or leftovers of an older generation), the walk moves on
/// one block at a time, so every item that can be proven intact is found.
pub fn scan_region(region: &[u8], block: usize, open_seq: u64) -> Vec<SummaryEntry> {
    let blocks = region.len() / block;
    let mut out = Vec::new();
    let mut b = 1;
    while b < blocks {
        let img = &region[b * block..];
        let found = ItemHeader::decode(img)
            .filter(|h| h.seq >= open_seq)
            .and_then(|_| item::verify(img));
        match found {
            Some(h) => {
                let len = item::padded_len(h.key_len as usize, h.value_len as usize, block);
                let n = (len / block) as u32;
                out.push(SummaryEntry {
                    hash: key_hash(item::key_of(img, &h)),
                    block: b as u32,
                    blocks: n,
                    tombstone: h.is_tombstone(),
                    seq: h.seq,
                    version: h.version,
                });
                b += n as usize;
            }
            None => b += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_items_across_holes_and_ignores_old_generations() {
        let block = 4096;
        let mut region = vec![0u8; 64 * block];
        let put = |r: &mut Vec<u8>, at: usize, key: &[u8], len: usize, seq: u64| {
            let img = item::encode(key, &[&vec![7u8; len]], seq, 0, block);
            r[at * block..at * block + img.len()].copy_from_slice(img.as_slice());
            img.len() / block
        };
        let n1 = put(&mut region, 1, b"a", 100, 50);
        // A hole of 3 blocks (a write that never landed), then an item.
        let at2 = 1 + n1 + 3;
        let n2 = put(&mut region, at2, b"b", 9000, 51);
        // An item of an older generation after them.
        put(&mut region, at2 + n2, b"old", 10, 3);
        let found = scan_region(&region, block, 40);
        let keys: Vec<u64> = found.iter().map(|e| e.hash).collect();
        assert_eq!(keys, vec![key_hash(b"a"), key_hash(b"b")]);
        assert_eq!(found[1].block as usize, at2);
        assert_eq!(found[1].blocks, 3);
    }
}
