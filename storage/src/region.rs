//! Regions: the device is split into equal slabs filled append-only and reclaimed whole.
//!
//! Block 0 of every region is its header, written when the region is (re)opened; items follow.
//!
//! ```text
//! 0  magic    u32  "STRG"
//! 4  region   u32
//! 8  open_seq u64  items in this region have seq >= open_seq; older ones are leftovers
//! 16 uuid     [u8; 16]  the superblock's uuid: a region of an earlier format is ignored
//! 32 crc32    u32  over bytes 0..32
//! ```

use std::collections::VecDeque;

const MAGIC: u32 = u32::from_le_bytes(*b"STRG");
const LEN: usize = 36;

/// The header block of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionHeader {
    /// Region number.
    pub region: u32,
    /// First sequence number that may live in this region.
    pub open_seq: u64,
    /// Identity of the cache that wrote it.
    pub uuid: [u8; 16],
}

impl RegionHeader {
    /// Serialises into the start of `block`.
    pub fn encode(&self, block: &mut [u8]) {
        block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        block[4..8].copy_from_slice(&self.region.to_le_bytes());
        block[8..16].copy_from_slice(&self.open_seq.to_le_bytes());
        block[16..32].copy_from_slice(&self.uuid);
        let crc = crc32fast::hash(&block[0..32]);
        block[32..LEN].copy_from_slice(&crc.to_le_bytes());
    }

    /// Parses a header; `None` when absent or corrupt.
    pub fn decode(block: &[u8]) -> Option<RegionHeader> {
        if block.len() < LEN || block[0..4] != MAGIC.to_le_bytes() {
            return None;
        }
        let crc = u32::from_le_bytes(block[32..36].try_into().ok()?);
        if crc32fast::hash(&block[0..32]) != crc {
            return None;
        }
        Some(RegionHeader {
            region: u32::from_le_bytes(block[4..8].try_into().ok()?),
            open_seq: u64::from_le_bytes(block[8..16].try_into().ok()?),
            uuid: block[16..32].try_into().ok()?,
        })
    }
}

/// The region being filled.
#[derive(Debug, Clone, Copy)]
pub struct Active {
    /// Region number.
    pub region: u32,
    /// Next free block inside it.
    pub next_block: u32,
}

/// Which regions are free, filling or sealed, and what each holds.
#[derive(Debug)]
pub struct Allocator {
    /// The region being appended to.
    pub active: Option<Active>,
    /// Regions holding nothing.
    pub free: VecDeque<u32>,
    /// Full regions, oldest first: the eviction order.
    pub sealed: VecDeque<u32>,
    /// Key hashes written into each region, to unindex them when it is reclaimed.
    pub members: Vec<Vec<u64>>,
}

impl Allocator {
    /// All `count` regions free.
    pub fn new(count: u32) -> Self {
        Allocator {
            active: None,
            free: (0..count).collect(),
            sealed: VecDeque::new(),
            members: vec![Vec::new(); count as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_crc() {
        let h = RegionHeader {
            region: 3,
            open_seq: 99,
            uuid: [1; 16],
        };
        let mut b = vec![0u8; 4096];
        h.encode(&mut b);
        assert_eq!(RegionHeader::decode(&b), Some(h));
        b[9] ^= 1;
        assert_eq!(RegionHeader::decode(&b), None);
    }
}
