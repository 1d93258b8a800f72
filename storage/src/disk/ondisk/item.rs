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

use bytes::Bytes;

use super::codec::{Reader, Writer};
use crate::error::StorageError;
use crate::io::aligned::{align_up, AlignedBuf};
use crate::io::growing::GrowingBuf;

/// Bytes of the fixed item header.
pub const HEADER_LEN: usize = 32;
const MAGIC: u32 = u32::from_le_bytes(*b"STIT");
/// Flag: this item records the removal of its key.
pub(crate) const FLAG_TOMBSTONE: u16 = 1;

/// The decoded fixed header of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ItemHeader {
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
    pub(crate) fn item_len(&self) -> usize {
        HEADER_LEN + self.key_len as usize + self.value_len as usize
    }

    /// True for a removal record.
    pub(crate) fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    /// Parses the fixed header; `None` when the magic is absent.
    pub(crate) fn decode(b: &[u8]) -> Option<ItemHeader> {
        let mut r = Reader::at(b, 0);
        if r.u32()? != MAGIC {
            return None;
        }
        Some(ItemHeader {
            flags: r.u16()?,
            key_len: r.u16()?,
            value_len: r.u32()?,
            crc: r.u32()?,
            seq: r.u64()?,
            version: r.u64()?,
        })
    }
}

/// Size on disk of an item with this key and value, padded to `block`.
pub(crate) fn padded_len(key_len: usize, value_len: usize, block: usize) -> usize {
    align_up((HEADER_LEN + key_len + value_len) as u64, block as u64) as usize
}

/// Writes the image of an item into the start of `b` (at least `padded_len` bytes); bytes past
/// the value are left as they are.
/// `value` is given as consecutive parts, so a value received in pieces needs no joining copy.
pub(crate) fn encode_into(b: &mut [u8], key: &[u8], value: &[&[u8]], seq: u64, flags: u16) {
    let value_len: usize = value.iter().map(|p| p.len()).sum();
    Writer::at(b, 0)
        .u32(MAGIC)
        .u16(flags)
        .u16(key.len() as u16)
        .u32(value_len as u32);
    let mut w = Writer::at(b, HEADER_LEN);
    w.bytes(key);
    for p in value {
        w.bytes(p);
    }
    set_seq(b, seq, seq);
}

/// Builds the aligned on-disk image of an item whose version is its seq.
pub(crate) fn encode(
    key: &[u8],
    value: &[&[u8]],
    seq: u64,
    flags: u16,
    block: usize,
) -> AlignedBuf {
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
///
/// `b` is an image this module encoded (at least its padded length); panics otherwise.
pub(crate) fn set_seq(b: &mut [u8], seq: u64, version: u64) {
    Writer::at(b, 16).u64(seq).u64(version);
    let mut r = Reader::at(b, 6);
    let lengths = r.u16().zip(r.u32());
    let (key_len, value_len) = lengths.expect("an item image holds its header");
    let crc = checksum(b, key_len as usize + value_len as usize);
    Writer::at(b, 12).u32(crc);
}

fn checksum(item: &[u8], body_len: usize) -> u32 {
    checksum_of(
        &item[..HEADER_LEN],
        &item[HEADER_LEN..HEADER_LEN + body_len],
    )
}

/// The crc32 of an item with this header (its crc field skipped) and body (key and value).
fn checksum_of(header: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[0..12]);
    h.update(&header[16..HEADER_LEN]);
    h.update(body);
    h.finalize()
}

/// The image of an item whose value arrives in pieces and is read while it does: the key is
/// written up front, the value appended (each piece readable at once, see [`GrowingBuf`]), and
/// the header written last, when the item's sequence number is known.
pub(crate) struct ItemImage {
    buf: GrowingBuf,
    key_len: usize,
    value_len: usize,
}

impl ItemImage {
    /// An image for `key` and a value of `value_len` bytes, padded to `block`.
    ///
    /// The key must fit the header (`u16` length) and the value its `u32`; callers check both.
    pub(crate) fn new(key: &[u8], value_len: usize, block: usize) -> ItemImage {
        let len = padded_len(key.len(), value_len, block);
        // Exact: the memory tier keeps this buffer for as long as it keeps the value.
        let mut raw = AlignedBuf::recycled_exact(len, block);
        let b = raw.as_mut_slice();
        // A reused buffer holds someone else's bytes: the header is written at the end and the
        // value by the caller; the rest is set here, padding zeroed so no stale bytes reach the
        // device.
        b[..HEADER_LEN].fill(0);
        b[HEADER_LEN..HEADER_LEN + key.len()].copy_from_slice(key);
        b[HEADER_LEN + key.len() + value_len..].fill(0);
        ItemImage {
            buf: GrowingBuf::new(raw, HEADER_LEN + key.len()),
            key_len: key.len(),
            value_len,
        }
    }

    /// Bytes of the whole value.
    pub(crate) fn value_len(&self) -> usize {
        self.value_len
    }

    /// Bytes of the value still to come.
    pub(crate) fn remaining(&self) -> usize {
        self.value_len - self.buf.window().len()
    }

    /// Why the image may not be stored yet: part of its value has not arrived.
    pub(crate) fn incomplete(&self) -> Option<StorageError> {
        (self.remaining() > 0).then(|| StorageError::Incomplete {
            missing: self.remaining(),
            size: self.value_len,
        })
    }

    /// Appends the first [`ItemImage::remaining`] bytes at most of `bytes`; returns a view of
    /// what it took.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Bytes {
        let n = bytes.len().min(self.remaining());
        let at = self.buf.window().end;
        self.buf.write(at, &bytes[..n]);
        self.buf.freeze(n);
        self.buf.view(at..at + n).unwrap_or_default()
    }

    /// The value so far (all of it once [`ItemImage::remaining`] is 0).
    pub(crate) fn value(&self) -> Bytes {
        self.buf.view(self.buf.window()).unwrap_or_default()
    }

    /// Writes the header of a complete image (an error while any of its value is missing)
    /// and lends it for the device to write.
    pub(crate) fn seal(mut self, seq: u64) -> Result<AlignedBuf, StorageError> {
        if let Some(e) = self.incomplete() {
            return Err(e);
        }
        let mut header = [0u8; HEADER_LEN];
        Writer::at(&mut header, 0)
            .u32(MAGIC)
            .u16(0)
            .u16(self.key_len as u16)
            .u32(self.value_len as u32);
        Writer::at(&mut header, 16).u64(seq).u64(seq);
        let body = HEADER_LEN..HEADER_LEN + self.key_len + self.value_len;
        let crc = self.buf.read_all(|b| checksum_of(&header, &b[body]));
        Writer::at(&mut header, 12).u32(crc);
        self.buf.write(0, &header);
        Ok(self.buf.lend())
    }
}

/// Checks an item image read back from disk; returns its header when it is intact.
pub(crate) fn verify(item: &[u8]) -> Option<ItemHeader> {
    let h = ItemHeader::decode(item)?;
    let len = h.item_len();
    if len > item.len() {
        return None;
    }
    (checksum(item, len - HEADER_LEN) == h.crc).then_some(h)
}

/// The key bytes of a verified item image.
pub(crate) fn key_of<'a>(item: &'a [u8], h: &ItemHeader) -> &'a [u8] {
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
    fn a_gathered_image_is_the_encoded_one() {
        let mut img = ItemImage::new(b"key", 11, 4096);
        let first = img.append(b"value ");
        assert_eq!(img.remaining(), 5);
        // Only what fits is taken.
        assert_eq!(&img.append(b"bytes and more")[..], b"bytes");
        assert_eq!(&first[..], b"value ");
        assert_eq!(&img.value()[..], b"value bytes");
        let sealed = img.seal(42).expect("complete");
        let encoded = encode(b"key", &[b"value bytes"], 42, 0, 4096);
        assert_eq!(sealed.as_slice(), encoded.as_slice());
    }

    #[test]
    fn an_incomplete_image_is_never_sealed() {
        let mut img = ItemImage::new(b"k", 10, 4096);
        img.append(b"12345");
        assert!(img.seal(1).is_err());
    }

    #[test]
    fn truncated_image_fails() {
        let buf = encode(b"k", &[&[9u8; 5000]], 1, 0, 4096);
        assert_eq!(buf.len(), 8192);
        assert!(verify(&buf.as_slice()[..4096]).is_none());
    }
}
