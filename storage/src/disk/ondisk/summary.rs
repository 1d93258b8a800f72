//! Region summaries: the list of a sealed region's items, so start-up need not read the items.
//!
//! ```text
//! 0  magic    u32  "STSM"
//! 4  count    u32
//! 8  open_seq u64  must equal the region header's
//! 16 entries  count x 32 bytes: hash u64, block u32, blocks u32 (bit 31: tombstone), seq u64, version u64
//! .. crc32    u32  over everything before it
//! ```

use super::codec::{Reader, Writer};

const MAGIC: u32 = u32::from_le_bytes(*b"STSM");
const ENTRY: usize = 32;
const TOMBSTONE_BIT: u32 = 1 << 31;

/// One item as listed in a summary (or found by a scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SummaryEntry {
    /// Hash of the key.
    pub hash: u64,
    /// First block of the item inside its region.
    pub block: u32,
    /// Padded length in blocks.
    pub blocks: u32,
    /// A removal record.
    pub tombstone: bool,
    /// Write sequence number.
    pub seq: u64,
    /// Version (original insert's seq).
    pub version: u64,
}

/// Bytes a summary of `count` entries takes before padding.
pub(crate) fn encoded_len(count: usize) -> usize {
    16 + count * ENTRY + 4
}

/// Serialises a summary into `out` (at least `encoded_len` bytes).
pub(crate) fn encode(entries: &[SummaryEntry], open_seq: u64, out: &mut [u8]) {
    let mut w = Writer::at(out, 0);
    w.u32(MAGIC).u32(entries.len() as u32).u64(open_seq);
    for e in entries {
        let blocks = e.blocks | if e.tombstone { TOMBSTONE_BIT } else { 0 };
        w.u64(e.hash)
            .u32(e.block)
            .u32(blocks)
            .u64(e.seq)
            .u64(e.version);
    }
    let end = w.pos();
    let crc = crc32fast::hash(&out[..end]);
    Writer::at(out, end).u32(crc);
}

/// Parses a summary written for a region opened at `open_seq`; `None` when absent or corrupt.
pub(crate) fn decode(b: &[u8], open_seq: u64) -> Option<Vec<SummaryEntry>> {
    let mut r = Reader::at(b, 0);
    if r.u32()? != MAGIC {
        return None;
    }
    let count = r.u32()? as usize;
    if r.u64()? != open_seq {
        return None;
    }
    let end = 16usize.checked_add(count.checked_mul(ENTRY)?)?;
    let crc = Reader::at(b, end).u32()?;
    if crc32fast::hash(&b[..end]) != crc {
        return None;
    }
    (0..count)
        .map(|_| {
            let (hash, block, blocks) = (r.u64()?, r.u32()?, r.u32()?);
            Some(SummaryEntry {
                hash,
                block,
                blocks: blocks & !TOMBSTONE_BIT,
                tombstone: blocks & TOMBSTONE_BIT != 0,
                seq: r.u64()?,
                version: r.u64()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let entries = vec![
            SummaryEntry {
                hash: 1,
                block: 1,
                blocks: 3,
                tombstone: false,
                seq: 10,
                version: 10,
            },
            SummaryEntry {
                hash: 2,
                block: 4,
                blocks: 1,
                tombstone: true,
                seq: 11,
                version: 11,
            },
        ];
        let mut buf = vec![0u8; 4096];
        encode(&entries, 10, &mut buf);
        assert_eq!(decode(&buf, 10), Some(entries));
        assert_eq!(decode(&buf, 11), None, "summary of another generation");
        buf[30] ^= 1;
        assert_eq!(decode(&buf, 10), None);
    }
}
