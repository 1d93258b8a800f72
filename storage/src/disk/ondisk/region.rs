//! Regions: the device is split into equal slabs filled append-only and reclaimed whole.
//!
//! Block 0 of every region is its header, alone in the region's first write unit: written when
//! the region is (re)opened, and rewritten (the whole unit) when it is sealed, to point at the
//! summary written after its last item.
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

use super::codec::{Reader, Writer};

const MAGIC: u32 = u32::from_le_bytes(*b"STRG");
const LEN: usize = 44;

/// The header block of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegionHeader {
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
    pub(crate) fn encode(&self, block: &mut [u8]) {
        let (sb, sn) = self.summary.unwrap_or((0, 0));
        let mut w = Writer::at(block, 0);
        w.u32(MAGIC)
            .u32(self.region)
            .u64(self.open_seq)
            .bytes(&self.uuid)
            .u32(sb)
            .u32(sn);
        let end = w.pos();
        let crc = crc32fast::hash(&block[..end]);
        Writer::at(block, end).u32(crc);
    }

    /// Parses a header; `None` when absent or corrupt.
    pub(crate) fn decode(block: &[u8]) -> Option<RegionHeader> {
        let mut r = Reader::at(block, 0);
        if r.u32()? != MAGIC {
            return None;
        }
        let (region, open_seq, uuid) = (r.u32()?, r.u64()?, r.array()?);
        let (sb, sn) = (r.u32()?, r.u32()?);
        if crc32fast::hash(&block[..LEN - 4]) != r.u32()? {
            return None;
        }
        Some(RegionHeader {
            region,
            open_seq,
            uuid,
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
