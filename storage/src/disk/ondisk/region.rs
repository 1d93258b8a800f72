//! Regions: the device is split into equal slabs filled append-only and reclaimed whole.
//!
//! Block 0 of every region is its header: written when the region is (re)opened, and rewritten
//! when it is sealed, to point at the summary written after its last item.
//!
//! ```text
//! 0  magic          u32  "STRG"
//! 4  region         u32
//! 8  open_seq       u64  items here have seq >= open_seq; older ones are leftovers
//! 16 uuid           [u8; 16]  the superblock's: a region of an earlier format is ignored
//! 32 summary_block  u32  0 while the region is open
//! 36 summary_blocks u32
//! 40 crc32          u32  over bytes 0..40
//! ```

const MAGIC: u32 = u32::from_le_bytes(*b"STRG");
const LEN: usize = 44;

/// The header block of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionHeader {
    /// Region number.
    pub region: u32,
    /// First sequence number that may live in this region.
    pub open_seq: u64,
    /// Identity of the cache that wrote it.
    pub uuid: [u8; 16],
    /// Where the summary is (first block, block count), once sealed.
    pub summary: Option<(u32, u32)>,
}

impl RegionHeader {
    /// Serialises into the start of `block`.
    pub fn encode(&self, block: &mut [u8]) {
        let (sb, sn) = self.summary.unwrap_or((0, 0));
        block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        block[4..8].copy_from_slice(&self.region.to_le_bytes());
        block[8..16].copy_from_slice(&self.open_seq.to_le_bytes());
        block[16..32].copy_from_slice(&self.uuid);
        block[32..36].copy_from_slice(&sb.to_le_bytes());
        block[36..40].copy_from_slice(&sn.to_le_bytes());
        let crc = crc32fast::hash(&block[0..40]);
        block[40..LEN].copy_from_slice(&crc.to_le_bytes());
    }

    /// Parses a header; `None` when absent or corrupt.
    pub fn decode(block: &[u8]) -> Option<RegionHeader> {
        if block.len() < LEN || block[0..4] != MAGIC.to_le_bytes() {
            return None;
        }
        let u32_at = |p: usize| block[p..p + 4].try_into().ok().map(u32::from_le_bytes);
        if crc32fast::hash(&block[0..40]) != u32_at(40)? {
            return None;
        }
        let (sb, sn) = (u32_at(32)?, u32_at(36)?);
        Some(RegionHeader {
            region: u32_at(4)?,
            open_seq: u64::from_le_bytes(block[8..16].try_into().ok()?),
            uuid: block[16..32].try_into().ok()?,
            summary: (sb > 0 && sn > 0).then_some((sb, sn)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_crc() {
        let mut h = RegionHeader {
            region: 3,
            open_seq: 99,
            uuid: [1; 16],
            summary: None,
        };
        let mut b = vec![0u8; 4096];
        h.encode(&mut b);
        assert_eq!(RegionHeader::decode(&b), Some(h));
        h.summary = Some((100, 2));
        h.encode(&mut b);
        assert_eq!(RegionHeader::decode(&b), Some(h));
        b[9] ^= 1;
        assert_eq!(RegionHeader::decode(&b), None);
    }
}
