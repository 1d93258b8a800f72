//! Region summaries: the list of a sealed region's items, so start-up need not read the items.
//!
//! ```text
//! 0  magic    u32  "STSM"
//! 4  count    u32
//! 8  open_seq u64  must equal the region header's
//! 16 entries  count x 32 bytes: hash u64, block u32, blocks u32 (bit 31: tombstone), seq u64, version u64
//! .. crc32    u32  over everything before it
//! ```

const MAGIC: u32 = u32::from_le_bytes(*b"STSM");
const ENTRY: usize = 32;
const TOMBSTONE_BIT: u32 = 1 << 31;

/// One item as listed in a summary (or found by a scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryEntry {
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
pub fn encoded_len(count: usize) -> usize {
    16 + count * ENTRY + 4
}

/// Serialises a summary into `out` (at least `encoded_len` bytes).
pub fn encode(entries: &[SummaryEntry], open_seq: u64, out: &mut [u8]) {
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    out[8..16].copy_from_slice(&open_seq.to_le_bytes());
    let mut p = 16;
    for e in entries {
        let blocks = e.blocks | if e.tombstone { TOMBSTONE_BIT } else { 0 };
        out[p..p + 8].copy_from_slice(&e.hash.to_le_bytes());
        out[p + 8..p + 12].copy_from_slice(&e.block.to_le_bytes());
        out[p + 12..p + 16].copy_from_slice(&blocks.to_le_bytes());
        out[p + 16..p + 24].copy_from_slice(&e.seq.to_le_bytes());
        out[p + 24..p + 32].copy_from_slice(&e.version.to_le_bytes());
        p += ENTRY;
    }
    let crc = crc32fast::hash(&out[..p]);
    out[p..p + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Parses a summary written for a region opened at `open_seq`; `None` when absent or corrupt.
pub fn decode(b: &[u8], open_seq: u64) -> Option<Vec<SummaryEntry>> {
    if b.len() < 20 || b[0..4] != MAGIC.to_le_bytes() {
        return None;
    }
    let count = u32::from_le_bytes(b[4..8].try_into().ok()?) as usize;
    let end = 16usize.checked_add(count.checked_mul(ENTRY)?)?;
    if end + 4 > b.len() || u64::from_le_bytes(b[8..16].try_into().ok()?) != open_seq {
        return None;
    }
    let crc = u32::from_le_bytes(b[end..end + 4].try_into().ok()?);
    if crc32fast::hash(&b[..end]) != crc {
        return None;
    }
    let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap_or_default());
    let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap_or_default());
    Some(
        (0..count)
            .map(|i| {
                let p = 16 + i * ENTRY;
                let blocks = u32_at(p + 12);
                SummaryEntry {
                    hash: u64_at(p),
                    block: u32_at(p + 8),
                    blocks: blocks & !TOMBSTONE_BIT,
                    tombstone: blocks & TOMBSTONE_BIT != 0,
                    seq: u64_at(p + 16),
                    version: u64_at(p + 24),
                }
            })
            .collect(),
    )
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
