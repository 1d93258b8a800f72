//! The superblock at offset 0: what this device is and how it is laid out.
//!
//! ```text
//! 0  magic          [u8; 8]   "STRATAv1"
//! 8  version        u32       FORMAT_VERSION
//! 12 block_size     u32
//! 16 device_size    u64
//! 24 data_offset    u64       where region 0 starts
//! 32 region_count   u32
//! 36 region_size    u64
//! 44 uuid           [u8; 16]  regions carry it: a region of an earlier format is ignored
//! 60 created        u64       unix seconds
//! 68 clean_shutdown u32       1 after a clean close, 0 while open
//! 72 crc32          u32       over bytes 0..72
//! ```
//! The rest of the block is zero.

use std::path::Path;

use super::codec::{Reader, Writer};
use crate::error::{Result, StorageError};

const MAGIC: &[u8; 8] = b"STRATAv1";
/// On-disk format version.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Bytes of the superblock that carry data; the rest of its block is zero.
const ENCODED_LEN: usize = 8 + 4 + 4 + 8 + 8 + 4 + 8 + 16 + 8 + 4 + 4;

/// Device geometry and identity, stored at offset 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Format version.
    pub version: u32,
    /// IO alignment.
    pub block_size: u32,
    /// Device size the cache was formatted for.
    pub device_size: u64,
    /// Byte offset of region 0.
    pub data_offset: u64,
    /// Number of regions.
    pub region_count: u32,
    /// Bytes per region.
    pub region_size: u64,
    /// Random identity of this cache.
    pub uuid: [u8; 16],
    /// Unix seconds of formatting.
    pub created: u64,
    /// 1 when the last shutdown was clean.
    pub clean_shutdown: u32,
}

impl Superblock {
    /// Serialises into the first bytes of `block` (little-endian, crc32 last).
    pub fn encode(&self, block: &mut [u8]) {
        Writer::at(block, 0)
            .bytes(MAGIC)
            .u32(self.version)
            .u32(self.block_size)
            .u64(self.device_size)
            .u64(self.data_offset)
            .u32(self.region_count)
            .u64(self.region_size)
            .bytes(&self.uuid)
            .u64(self.created)
            .u32(self.clean_shutdown);
        let crc = crc32fast::hash(&block[..ENCODED_LEN - 4]);
        Writer::at(block, ENCODED_LEN - 4).u32(crc);
    }

    /// Parses a superblock; `Ok(None)` when the magic is absent, an error when it is corrupt.
    pub fn decode(block: &[u8], path: &Path) -> Result<Option<Superblock>> {
        let mut r = Reader::at(block, 0);
        let stored = Reader::at(block, ENCODED_LEN - 4).u32();
        let Some(stored) = stored.filter(|_| r.bytes(MAGIC.len()) == Some(MAGIC)) else {
            return Ok(None);
        };
        if crc32fast::hash(&block[..ENCODED_LEN - 4]) != stored {
            return Err(StorageError::CorruptSuperblock {
                path: path.to_path_buf(),
            });
        }
        let mut fields = || -> Option<Superblock> {
            Some(Superblock {
                version: r.u32()?,
                block_size: r.u32()?,
                device_size: r.u64()?,
                data_offset: r.u64()?,
                region_count: r.u32()?,
                region_size: r.u64()?,
                uuid: r.array()?,
                created: r.u64()?,
                clean_shutdown: r.u32()?,
            })
        };
        // The block holds ENCODED_LEN bytes (checked above), so every field is there.
        Ok(fields())
    }

    /// A one-line description of the geometry, for errors and `inspect`.
    pub fn describe(&self) -> String {
        format!(
            "format v{}, device {} bytes, {} regions of {} bytes, block {}",
            self.version, self.device_size, self.region_count, self.region_size, self.block_size
        )
    }
}

/// Names a well-known foreign signature in the first bytes of a device, if any.
pub(crate) fn foreign_signature(head: &[u8]) -> Option<&'static str> {
    let at = |off: usize, sig: &[u8]| head.get(off..off + sig.len()) == Some(sig);
    if at(1080, &[0x53, 0xEF]) {
        return Some("has an ext2/3/4 filesystem");
    }
    if at(0, b"XFSB") {
        return Some("has an XFS filesystem");
    }
    if at(65600, b"_BHRfS_M") {
        return Some("has a btrfs filesystem");
    }
    if at(512, b"EFI PART") {
        return Some("has a GPT partition table");
    }
    if at(0, b"LUKS\xba\xbe") {
        return Some("is a LUKS volume");
    }
    if at(4086, b"SWAPSPACE2") || at(4086, b"SWAP-SPACE") {
        return Some("is a swap area");
    }
    if at(510, &[0x55, 0xAA]) {
        return Some("has a DOS partition table or boot sector");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            version: FORMAT_VERSION,
            block_size: 4096,
            device_size: 1 << 30,
            data_offset: 1 << 20,
            region_count: 63,
            region_size: 16 << 20,
            uuid: [7; 16],
            created: 1_700_000_000,
            clean_shutdown: 0,
        }
    }

    #[test]
    fn roundtrip() {
        let mut block = vec![0u8; 4096];
        sample().encode(&mut block);
        let got = Superblock::decode(&block, Path::new("x")).unwrap().unwrap();
        assert_eq!(got, sample());
    }

    #[test]
    fn corrupt_crc_is_an_error_and_absent_magic_is_none() {
        let mut block = vec![0u8; 4096];
        sample().encode(&mut block);
        block[20] ^= 1;
        assert!(Superblock::decode(&block, Path::new("x")).is_err());
        assert!(Superblock::decode(&[0u8; 4096], Path::new("x"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn finds_ext4() {
        let mut head = vec![0u8; 1 << 20];
        assert_eq!(foreign_signature(&head), None);
        head[1080] = 0x53;
        head[1081] = 0xEF;
        assert!(foreign_signature(&head).unwrap().contains("ext"));
    }
}
