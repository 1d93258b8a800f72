//! Strata's storage: a two-tier key/value cache of byte values. It knows nothing of HTTP.
//!
//! # Layout
//! - `tiered`: [`TieredCache`], the public entry point, and the admission policy between tiers.
//! - `memory`: the L1 memory tier (byte budget, S3-FIFO + TinyLFU).
//! - `disk`: the L2 slab store, [`DiskStore`]: regions filled append-only, an in-memory
//!   index, region eviction with second chance, recovery; its `ondisk` formats over one
//!   little-endian codec; [`inspect`], a read-only report of a device.
//! - `io`: aligned buffers (and their private pool), the device, the io engines (psync,
//!   io_uring) behind one trait.
//! - `writer`: [`ValueWriter`], a value gathered from a network straight into L2's item image,
//!   readable as it arrives.
//! - `key`: the stable hash of cache keys.
//! - `error`: [`StorageError`], one flat enum.
//! - `fuzz` (feature `fuzzing`): entry points for the fuzz targets in `fuzz/`; not part of the
//!   interface.
//!
//! Each layer uses only those below it: `tiered` → `writer`, `memory`, `disk` → `io`; `key`
//! and `error` are used by all.
//!
//! # How data flows
//! - **Insert**: [`TieredCache::insert`] writes through to L2: [`DiskStore`] reserves blocks in
//!   the active region (under the allocator's lock), encodes the item (header, key, value, crc32)
//!   into an aligned buffer and writes it through the io engine outside the lock; once it has
//!   landed the index points the key's hash at it. The value is then offered to L1, whose TinyLFU
//!   filter decides whether it stays in memory. A full region is sealed (its summary written
//!   after its last item); with no free region left the oldest is reclaimed.
//! - **Read**: L1 first; on a miss, the index gives the item's blocks, one read fetches them,
//!   and the item's crc32, version and full key are checked: a mismatch is a miss, never wrong
//!   bytes. An L2 hit is offered to L1.
//! - **Recovery**: at start-up every region header is read; sealed regions are listed from their
//!   summaries, regions open at a crash are scanned item by item, and every item that can be
//!   proved intact is indexed again (newest version wins, removal records apply).
//!
//! # Failpoints
//! With the `failpoints` feature, named points inject errors (the `fail` crate): `disk::seal`,
//! `disk::summary_write`, `disk::region_header_write`, `disk::item_write`, `disk::index_insert`
//! (an insert whose write has landed, before its index entry), `disk::reclaim` and
//! `io::complete` (EIO or ENOSPC as a device reports them), `io::short` (io_uring transfers
//! reported half done, to be resumed). They compile to nothing without it; `tests/failpoints.rs` injects faults at
//! them, `tests/failpoints_races.rs` holds operations there to race others.

/// The IO error injected at the named failpoint when a test configured it (feature
/// `failpoints`); always `None` otherwise.
macro_rules! injected_error {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        let injected = fail::eval($name, |_| {
            std::io::Error::other(concat!("injected at failpoint ", $name))
        });
        #[cfg(not(feature = "failpoints"))]
        let injected: Option<std::io::Error> = None;
        injected
    }};
}

mod disk;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod io;
mod key;
mod memory;
mod tiered;
mod writer;

pub use disk::{
    format, inspect, DiskConfig, DiskStats, DiskStore, EvictionPolicy, InspectReport, Shed,
    Superblock, DEFAULT_WRITE_QUEUE, MAX_REGION_SIZE,
};
pub use error::{Result, StorageError};
pub use io::{DeviceKind, EngineKind, EngineOptions};
pub use memory::{MemoryStats, MemoryTier};
pub use tiered::{Admission, Placement, Tier, TieredCache, TieredCacheConfig, TieredStats};
pub use writer::ValueWriter;

// The io layer and the item header length, for the storage crate's own tests and benches,
// which drive engines directly and size values to whole blocks.
pub use disk::ITEM_HEADER_LEN;
pub use io::{
    start as start_engine, AlignedBuf, CompletionHook, Device, IoEngine, IoFuture, IoResult,
};
