//! [`ValueWriter`]: a value of known length gathered from a network for one insert into the
//! tiers, readable piece by piece as it arrives.
//!
//! The pieces go straight into the disk tier's item image (the aligned buffer the device
//! writes from), and readers get views of that same buffer: from the network to the device,
//! and on into the memory tier, the value is held once. With no disk tier (or none that can
//! hold the value) the image is a plain buffer for the memory tier.

use bytes::Bytes;

use crate::disk::ItemImage;
use crate::error::StorageError;

/// Where a gathered value goes.
pub(crate) enum Destination {
    /// Both tiers: the image is the disk tier's.
    Disk,
    /// The memory tier only (there is no disk tier).
    Memory,
    /// The disk tier refused the value (too large for it); the insert reports why.
    Refused(StorageError),
}

/// A value being gathered for [`TieredCache::insert_value`](crate::TieredCache::insert_value);
/// made by [`TieredCache::writer`](crate::TieredCache::writer).
pub struct ValueWriter {
    pub(crate) image: ItemImage,
    pub(crate) destination: Destination,
}

impl ValueWriter {
    /// Appends the first [`ValueWriter::remaining`] bytes at most of `bytes`; returns a view of
    /// what it took, readable at once (no copy of its own).
    pub fn append(&mut self, bytes: &[u8]) -> Bytes {
        self.image.append(bytes)
    }

    /// Bytes of the value still to come.
    pub fn remaining(&self) -> usize {
        self.image.remaining()
    }
}
