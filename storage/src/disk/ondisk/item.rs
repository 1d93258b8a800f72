//! The on-disk item: a fixed header, the key, the value, padded to the block size.
//!
//! ```text
//! 0  magic     u32  "STIT"
//! 4  flags     u16  bit 0: tombstone (the key was removed)
//! 6  key_len   u16
//! 8  value_len u32
//! 12 crc32     u32  over bytes 0..12 and 16..32, the key and the value
//! 16 seq       u64  where it was written: at least its region's open_seq
//! 24 version   u64  the seq of the original insert; a second-chance copy keeps it
//! 32 key, then value
//! ```

use crate::io::aligned::{align_up, AlignedBuf};

/// Bytes of the fixed item header.
pub const HEADER_LEN: usize = 32;
const MAGIC: u32 = u32::from_le_bytes(*b"STIT");
/// Flag: this item records the removal of its key.
pub const FLAG_TOMBSTONE: u16 = 1;

/// The decoded fixed header of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemHeader {
    /// Flag bits.
    pub flags: u16,
    /// Key length.
    pub key_len: u16,
    /// Value length.
    pub value_len: u32,
    /// Stored checksum.
    pub crc: u32,
    /// Write sequence number.
    pub seq: u64,
    /// Version (sequence number of the original insert).
    pub version: u64,
}

impl ItemHeader {
    /// Bytes the item occupies on disk before padding.
    pub fn item_len(&self) -> usize {
        HEADER_LEN + self.key_len as usize + self.value_len as usize
    }

    /// True for a removal record.
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    /// Parses the fixed header; `None` when the magic is absent.
    pub fn decode(b: &[u8]) -> Option<ItemHeader> {
        if b.len() < HEADER_LEN || u32::from_le_bytes(arr(&b[0..4])) != MAGIC {
            return None;
        }
        Some(ItemHeader {
            flags: u16::from_le_bytes(arr(&b[4..6])),
            key_len: u16::from_le_bytes(arr(&b[6..8])),
            value_len: u32::from_le_bytes(arr(&b[8..12])),
            crc: u32::from_le_bytes(arr(&b[12..16])),
            seq: u64::from_le_bytes(arr(&b[16..24])),
            version: u64::from_le_bytes(arr(&b[24..32])),
        })
    }
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

/// Size on disk of an item with this key and value, padded to `block`.
pub fn padded_len(key_len: usize, value_len: usize, block: usize) -> usize {
    align_up((HEADER_LEN + key_len + value_len) as u64, block as u64) as usize
}

/// Writes the image of an item into the start of `b` (at least `padded_len` bytes); bytes past
/// the value are left as they are.
/// `value` is given as consecutive parts, so a value received in pieces needs no joining copy.
pub fn encode_into(b: &mut [u8], key: &[u8], value: &[&[u8]], seq: u64, flags: u16) {
    let value_len: usize = value.iter().map(|p| p.len()).sum();
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..6].copy_from_slice(&flags.to_le_bytes());
    b[6..8].copy_from_slice(&(key.len() as u16).to_le_bytes());
    b[8..12].copy_from_slice(&(value_len as u32).to_le_bytes());
    b[HEADER_LEN..HEADER_LEN + key.len()].copy_from_slice(key);
    let mut at = HEADER_LEN + key.len();
    for p in value {
        b[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    set_seq(b, seq, seq);
}

/// Builds the aligned on-disk image of an item whose version is its seq.
pub fn encode(key: &[u8], value: &[&[u8]], seq: u64, flags: u16, block: usize) -> AlignedBuf {
    let value_len: usize = value.iter().map(|p| p.len()).sum();
    let mut buf = AlignedBuf::recycled(padded_len(key.len(), value_len, block), block);
    let b = buf.as_mut_slice();
    encode_into(b, key, value, seq, flags);
    // The padding is all a reused buffer does not overwrite: zero it, so no stale bytes reach
    // the device.
    b[HEADER_LEN + key.len() + value_len..].fill(0);
    buf
}

/// Rewrites the seq and version of an item image and its checksum.
pub fn set_seq(b: &mut [u8], seq: u64, version: u64) {
    b[16..24].copy_from_slice(&seq.to_le_bytes());
    b[24..32].copy_from_slice(&version.to_le_bytes());
    let body =
        u16::from_le_bytes(arr(&b[6..8])) as usize + u32::from_le_bytes(arr(&b[8..12])) as usize;
    let crc = checksum(b, body);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(item: &[u8], body_len: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&item[0..12]);
    h.update(&item[16..HEADER_LEN]);
    h.update(&item[HEADER_LEN..HEADER_LEN + body_len]);
    h.finalize()
}

/// Checks an item image read back from disk; returns its header when it is intact.
pub fn verify(item: &[u8]) -> Option<ItemHeader> {
    let h = ItemHeader::decode(item)?;
    let len = h.item_len();
    if len > item.len() {
        return None;
    }
    (checksum(item, len - HEADER_LEN) == h.crc).then_some(h)
}

/// The key bytes of a verified item image.
pub fn key_of<'a>(item: &'a [u8], h: &ItemHeader) -> &'a [u8] {
    &item[HEADER_LEN..HEADER_LEN + h.key_len as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_detects_any_flipped_byte() {
        let buf = encode(b"key", &[b"value bytes"], 42, 0, 4096);
        assert_eq!(buf.len(), 4096);
        let h = verify(buf.as_slice()).unwrap();
        assert_eq!((h.key_len, h.value_len, h.seq, h.version), (3, 11, 42, 42));
        for i in 0..HEADER_LEN + 14 {
            let mut bad = buf.as_slice().to_vec();
            bad[i] ^= 0x10;
            assert!(verify(&bad).is_none(), "flip at {i} not detected");
        }
    }

    #[test]
    fn reseq_keeps_the_item_valid() {
        let mut buf = encode(b"k", &[b"v"], 1, 0, 4096);
        set_seq(buf.as_mut_slice(), 9, 1);
        let h = verify(buf.as_slice()).unwrap();
        assert_eq!((h.seq, h.version), (9, 1));
    }

    #[test]
    fn truncated_image_fails() {
        let buf = encode(b"k", &[&[9u8; 5000]], 1, 0, 4096);
        assert_eq!(buf.len(), 8192);
        assert!(verify(&buf.as_slice()[..4096]).is_none());
    }
}
