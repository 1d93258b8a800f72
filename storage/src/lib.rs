//! Strata's storage: a two-tier key/value cache of byte values. It knows nothing of HTTP.
//!
//! # Layout
//! - [`tiered`]: `TieredCache`, the public entry point, and the admission policy between tiers.
//! - [`memory`]: the L1 memory tier (byte budget, S3-FIFO + TinyLFU).
//! - [`disk`]: the L2 slab store: regions appended to, an index, region eviction.
//! - [`region`], [`item`], [`summary`], [`superblock`]: the on-disk formats.
//! - [`recovery`]: finding intact items after a restart or a crash.
//! - [`inspect`]: a read-only report of a cache device.
//! - [`index`]: the in-memory index of the disk store, in [`table`]s of bounded slack.
//! - [`device`]: opening files and block devices with O_DIRECT.
//! - [`engine`]: the io engines behind one trait.
//! - [`aligned`]: aligned buffers for direct IO, and [`bufpool`], which keeps idle ones for reuse.

pub mod disk;
pub mod error;
pub mod io;
pub mod key;
pub mod memory;
pub mod tiered;

pub use disk::format;
pub use disk::inspect::{inspect, Report as InspectReport};
pub use disk::ondisk::item::HEADER_LEN as ITEM_HEADER_LEN;
pub use disk::ondisk::superblock::Superblock;
pub use disk::{DiskConfig, DiskStats, DiskStore, EvictionPolicy};
pub use error::{Result, StorageError};
pub use io::aligned::AlignedBuf;
pub use io::device::{Device, DeviceKind};
pub use io::engine::{start as start_engine, IoEngine};
pub use io::engine::{EngineKind, EngineOptions};
pub use memory::{MemoryStats, MemoryTier};
pub use tiered::{Admission, TieredCache, TieredCacheConfig, TieredStats};
