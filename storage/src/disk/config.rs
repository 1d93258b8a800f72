//! How to open the disk store: [`DiskConfig`] and the reclaim policy, plain data.

use std::path::PathBuf;

use crate::io::engine::{EngineKind, EngineOptions};

/// What happens to the items of a region that is reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// All are dropped (plain region FIFO).
    Fifo,
    /// Items read since they were written are copied forward once (up to half a region).
    #[default]
    SecondChance,
}

/// How to open the disk store.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// A regular file (created and preallocated) or a block device.
    pub path: PathBuf,
    /// Size of a regular file; a block device uses its own size.
    pub size: u64,
    /// Bytes per region (a multiple of the block size, from 1 MiB to [`MAX_REGION_SIZE`],
    /// default 16 MiB).
    ///
    /// [`MAX_REGION_SIZE`]: crate::MAX_REGION_SIZE
    pub region_size: u64,
    /// Whether `region_size` is the largest region rather than the exact one. A new cache then
    /// divides the device into as few equal regions of at most that size as it can, so none
    /// of the device is left over; an existing cache is recovered whatever region size it was
    /// formatted with. Default false.
    pub region_fit: bool,
    /// The largest value the caller will store (0: no requirement). A device whose regions
    /// cannot hold one, as formatted or as it would be, is refused: with `region_fit`, a
    /// cache formatted with smaller regions, or a small device's fitted regions.
    pub largest_value: u64,
    /// Which io engine runs.
    pub engine: EngineKind,
    /// Engine tuning.
    pub engine_options: EngineOptions,
    /// Format even when the device holds other data or a cache of another geometry.
    pub overwrite: bool,
    /// Reclaim policy.
    pub eviction: EvictionPolicy,
    /// Bytes of inserts that may be in flight at once (default 64 MiB; 0: unbounded); past
    /// it, inserts are shed rather than queued.
    pub write_queue: u64,
}

/// The default [`DiskConfig::write_queue`]: 64 MiB, a few dozen slices; a device that keeps
/// that much waiting is already behind by tens of milliseconds at NVMe speed.
pub const DEFAULT_WRITE_QUEUE: u64 = 64 << 20;

impl DiskConfig {
    /// Defaults for a file at `path` of `size` bytes.
    pub fn new(path: impl Into<PathBuf>, size: u64) -> Self {
        DiskConfig {
            path: path.into(),
            size,
            region_size: 16 << 20,
            region_fit: false,
            largest_value: 0,
            engine: EngineKind::Auto,
            engine_options: EngineOptions::default(),
            overwrite: false,
            eviction: EvictionPolicy::default(),
            write_queue: DEFAULT_WRITE_QUEUE,
        }
    }
}
