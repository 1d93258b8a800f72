//! Where things are on the device: region and block addresses, from the superblock's geometry.
//!
//! ```text
//! 0            superblock (one block), then zeros
//! DATA_OFFSET  region 0: its header (one write unit), then items, then (once sealed) its
//!              summary (from a write unit on)
//!              region 1 ...
//! ```
//!
//! Items are addressed in blocks, the device's smallest read alignment (512 bytes for a file
//! on most filesystems), so a small item is padded to little. Every write covers whole write
//! units ([`Geometry::write_unit`], at least 4 KiB): the allocator packs an item into the unit
//! its predecessor ends in by writing that unit again, predecessor's bytes included, once
//! the predecessor's write has landed (see the allocator).

use std::path::Path;

use super::ondisk::item::HEADER_LEN;
use super::ondisk::region::RegionHeader;
use super::ondisk::summary::{self, SummaryEntry};
use super::ondisk::superblock::Superblock;
use super::ondisk::MAX_SEQ;
use crate::error::{Result, StorageError};
use crate::io::device::WRITE_UNIT;

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
    /// The geometry a superblock records, once every field is checked against the others: a
    /// superblock that passes its checksum may still be crafted or damaged, and nothing below
    /// divides by, allocates or adds what this has not bounded.
    ///
    /// - `block_size`: a power of two, at least 512, at most the first MiB (which holds the
    ///   superblock's block) and at most a region;
    /// - `region_size`: at least 1 MiB, at most [`MAX_REGION_SIZE`], a multiple of the block
    ///   and of the write unit;
    /// - `data_offset`: [`DATA_OFFSET`];
    /// - `region_count`: at least 2, and every block of every region numbered by a `u32`;
    /// - `device_size`: holds every region.
    pub(crate) fn checked(sb: &Superblock, path: &Path) -> Result<Self> {
        let bad = |field: &'static str, value: u64| StorageError::CorruptGeometry {
            path: path.to_path_buf(),
            field,
            value,
        };
        let (block, region) = (sb.block_size as u64, sb.region_size);
        if !block.is_power_of_two() || !(512..=DATA_OFFSET).contains(&block) {
            return Err(bad("block_size", block));
        }
        // Regions start on write units (DATA_OFFSET is one), or a write of one unit would
        // straddle two of the device's.
        let unit = block.max(WRITE_UNIT as u64);
        if !(1 << 20..=MAX_REGION_SIZE).contains(&region) || !region.is_multiple_of(unit) {
            return Err(bad("region_size", region));
        }
        if sb.data_offset != DATA_OFFSET {
            return Err(bad("data_offset", sb.data_offset));
        }
        let count = sb.region_count as u64;
        let blocks = count * (region / block);
        if count < 2 || blocks > u32::MAX as u64 {
            return Err(bad("region_count", count));
        }
        // At most 2^32 regions of at most 1 GiB: no overflow.
        let end = DATA_OFFSET + count * region;
        if sb.device_size < end {
            return Err(bad("device_size", sb.device_size));
        }
        Ok(Geometry {
            block: block as usize,
            region_size: region,
            region_count: sb.region_count,
        })
    }

    /// True when a region header read back from region `region` can be used: it names that
    /// region and its sequence numbers are ones the store can count past.
    pub(crate) fn header_fits(&self, h: &RegionHeader, region: u32) -> bool {
        h.region == region && region < self.region_count && h.open_seq <= MAX_SEQ
    }

    /// The summary of the region `h` describes, when it lies inside the region, after its header.
    pub(crate) fn summary_of(&self, h: &RegionHeader) -> Option<(u32, u32)> {
        let (block, blocks) = h.summary?;
        let end = block.checked_add(blocks)?;
        (block >= 1 && end <= self.blocks_per_region()).then_some((block, blocks))
    }

    /// True when a summary entry of the region `h` describes lies between the region's header and
    /// the summary starting at `summary_block`, and its sequence numbers fit the region's open.
    pub(crate) fn entry_fits(
        &self,
        e: &SummaryEntry,
        h: &RegionHeader,
        summary_block: u32,
    ) -> bool {
        let inside = e.block >= 1
            && e.blocks >= 1
            && e.block
                .checked_add(e.blocks)
                .is_some_and(|end| end <= summary_block);
        inside && (h.open_seq..=MAX_SEQ).contains(&e.seq) && e.version <= e.seq
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

    /// The region holding a block counted from region 0.
    pub(crate) fn region_of(&self, abs_block: u32) -> u32 {
        abs_block / self.blocks_per_region().max(1)
    }

    /// Bytes of the unit every write is aligned to and a multiple of: the block, or
    /// [`WRITE_UNIT`] when the block is smaller.
    pub(crate) fn write_unit(&self) -> usize {
        self.block.max(WRITE_UNIT)
    }

    /// Blocks per write unit (1 when the block is the write unit).
    pub(crate) fn unit_blocks(&self) -> u32 {
        (self.write_unit() / self.block) as u32
    }

    /// `block` rounded up to the start of a write unit.
    pub(crate) fn unit_up(&self, block: u32) -> u32 {
        block.next_multiple_of(self.unit_blocks())
    }

    /// `block` rounded down to the start of its write unit.
    pub(crate) fn unit_down(&self, block: u32) -> u32 {
        block - block % self.unit_blocks()
    }

    /// Where the first item of a region goes: after the header's write unit, since the header
    /// is rewritten (as a whole unit) when the region is sealed.
    pub(crate) fn first_item_block(&self) -> u32 {
        self.unit_blocks()
    }

    /// Blocks in one region, its header block included.
    pub(crate) fn blocks_per_region(&self) -> u32 {
        (self.region_size / self.block as u64) as u32
    }

    /// Blocks taken by the summary of `count` items: whole write units, as it is written.
    pub(crate) fn summary_blocks(&self, count: usize) -> u32 {
        let len = summary::encoded_len(count).next_multiple_of(self.write_unit());
        (len / self.block) as u32
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
