//! Where things are on the device: region and block addresses, from the superblock's geometry.
//!
//! ```text
//! 0            superblock (one block), then zeros
//! DATA_OFFSET  region 0: block 0 its header, then items, then (once sealed) its summary
//!              region 1 ...
//! ```

use super::ondisk::item::HEADER_LEN;
use super::ondisk::summary;
use super::ondisk::superblock::Superblock;

/// Where region 0 starts: the superblock's block, rounded up so regions are MiB-aligned.
pub(crate) const DATA_OFFSET: u64 = 1 << 20;

/// The largest region size: recovery and reclaim read a whole region in one IO, whose length
/// the io engines pass to the kernel as a `u32` (and Linux moves at most 2 GiB - 4 KiB per
/// call), so 1 GiB leaves room. Larger regions would truncate those reads.
pub const MAX_REGION_SIZE: u64 = 1 << 30;

/// The geometry of a formatted device, in the units the store addresses it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// IO alignment, and the unit items are padded to.
    pub(crate) block: usize,
    /// Bytes per region.
    pub(crate) region_size: u64,
    /// Regions on the device.
    pub(crate) region_count: u32,
}

impl Geometry {
    /// The geometry a superblock records.
    pub(crate) fn of(sb: &Superblock) -> Self {
        Geometry {
            block: sb.block_size as usize,
            region_size: sb.region_size,
            region_count: sb.region_count,
        }
    }

    /// Device offset of `region`.
    pub(crate) fn region_offset(&self, region: u32) -> u64 {
        DATA_OFFSET + region as u64 * self.region_size
    }

    /// Device offset of `block` of `region`.
    pub(crate) fn block_offset(&self, region: u32, block: u32) -> u64 {
        self.region_offset(region) + block as u64 * self.block as u64
    }

    /// Device offset of a block counted from the start of region 0 (what the index stores).
    pub(crate) fn abs_offset(&self, abs_block: u32) -> u64 {
        DATA_OFFSET + abs_block as u64 * self.block as u64
    }

    /// Block number counted from region 0 (what the index stores).
    pub(crate) fn abs_block(&self, region: u32, block: u32) -> u32 {
        region * self.blocks_per_region() + block
    }

    /// Blocks in one region, its header block included.
    pub(crate) fn blocks_per_region(&self) -> u32 {
        (self.region_size / self.block as u64) as u32
    }

    /// Blocks taken by the summary of `count` items.
    pub(crate) fn summary_blocks(&self, count: usize) -> u32 {
        summary::encoded_len(count).div_ceil(self.block) as u32
    }

    /// Blocks taken by an item image of `len` bytes (a multiple of the block).
    pub(crate) fn blocks_of(&self, len: usize) -> u32 {
        (len / self.block) as u32
    }

    /// Largest value storable under a key of `key_len` bytes.
    pub(crate) fn max_value_len(&self, key_len: usize) -> usize {
        // Half a region, so that a region always holds a large item plus its summary.
        (self.region_size as usize / 2).saturating_sub(HEADER_LEN + key_len)
    }
}
