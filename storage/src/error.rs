//! The storage crate's error type: one flat enum, each variant keeping its cause.

use std::io;
use std::path::PathBuf;

/// Errors from the cache tiers and the disk store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An IO call on the cache device failed.
    #[error("io error on cache device {path}: {source}")]
    Io {
        /// The device.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The device holds data Strata did not write; it is left untouched.
    #[error("refusing to use {path}: it {found}; set cache.disk.overwrite: true (or run `strata format`) to format it")]
    ForeignData {
        /// The device.
        path: PathBuf,
        /// What it holds, as a phrase ("has an XFS filesystem").
        found: String,
    },
    /// The device holds a Strata cache whose geometry differs from the configured one.
    #[error("refusing to use {path}: it holds a Strata cache of another geometry ({found}; configured {configured}); set cache.disk.overwrite: true (or run `strata format`) to reformat it")]
    GeometryMismatch {
        /// The device.
        path: PathBuf,
        /// The geometry on the device (`Superblock::describe`).
        found: String,
        /// The geometry the configuration asks for.
        configured: String,
    },
    /// The device has a Strata superblock that fails its checksum; it is left untouched.
    #[error("refusing to use {path}: it holds a Strata superblock with a bad checksum; set cache.disk.overwrite: true (or run `strata format`) to reformat it")]
    CorruptSuperblock {
        /// The device.
        path: PathBuf,
    },
    /// The device's superblock passes its checksum but describes a geometry that does not hold
    /// together (a crafted or damaged image); it is left untouched.
    #[error(
        "refusing to read {path}: its superblock's {field} ({value}) does not fit its geometry"
    )]
    CorruptGeometry {
        /// The device.
        path: PathBuf,
        /// The superblock field at fault.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The configured region size is unusable.
    #[error("invalid storage configuration: region size {region_size} must be at least 1MiB and a multiple of {block}")]
    RegionSize {
        /// The configured region size.
        region_size: u64,
        /// The device's block size.
        block: usize,
    },
    /// The configured region size is larger than one region scan can read.
    #[error("invalid storage configuration: region size {region_size} is larger than the largest supported ({max} bytes)")]
    RegionTooLarge {
        /// The configured region size.
        region_size: u64,
        /// The largest region size the store accepts ([`crate::MAX_REGION_SIZE`]).
        max: u64,
    },
    /// The device's regions cannot hold a value as large as the caller will store.
    #[error("invalid storage configuration: {path}: its regions of {region_size} bytes cannot hold values of {value} bytes (a value takes at most half a region)")]
    RegionsTooSmall {
        /// The device.
        path: std::path::PathBuf,
        /// The region size it has (or would be formatted with).
        region_size: u64,
        /// The largest value the caller stores ([`DiskConfig::largest_value`]).
        ///
        /// [`DiskConfig::largest_value`]: crate::DiskConfig::largest_value
        value: u64,
    },
    /// The device is too small for two regions.
    #[error("invalid storage configuration: device of {device_size} bytes holds fewer than 2 regions of {region_size} bytes")]
    TooFewRegions {
        /// Bytes of the device.
        device_size: u64,
        /// The configured region size.
        region_size: u64,
    },
    /// The device is larger than one store can address.
    #[error("invalid storage configuration: device of {device_size} bytes is larger than the {max_tib} TiB one store addresses; use a partition")]
    DeviceTooLarge {
        /// Bytes of the device.
        device_size: u64,
        /// The largest addressable device, in TiB.
        max_tib: u64,
    },
    /// A cache file of less than 8 MiB was asked for.
    #[error("invalid storage configuration: cache file size {size} is too small (at least 8MiB)")]
    FileTooSmall {
        /// The configured size.
        size: u64,
    },
    /// The path exists but is neither a regular file nor a block device.
    #[error("invalid storage configuration: {path} is neither a regular file nor a block device")]
    NotFileOrBlockDevice {
        /// The path.
        path: PathBuf,
    },
    /// The device is mounted or opened exclusively by another program.
    #[error("invalid storage configuration: {path} is in use (mounted or opened exclusively by another program)")]
    DeviceBusy {
        /// The device.
        path: PathBuf,
        /// What the system said (EBUSY).
        #[source]
        source: io::Error,
    },
    /// The cache file is locked by another store (another node, or `strata format`, on the
    /// same file).
    #[error("refusing to use {path}: it is in use by another Strata store (another node or `strata format` has it open)")]
    DeviceLocked {
        /// The file.
        path: PathBuf,
        /// What the system said (EWOULDBLOCK).
        #[source]
        source: io::Error,
    },
    /// An io engine name that is not one of `auto`, `io_uring` or `psync`.
    #[error("unknown io engine `{name}` (expected auto, io_uring or psync)")]
    UnknownEngine {
        /// The name given.
        name: String,
    },
    /// The value does not fit in one region of the disk store.
    #[error("item of {size} bytes is larger than the largest storable item ({max} bytes)")]
    TooLarge {
        /// Bytes of the value.
        size: usize,
        /// The largest storable value under this key.
        max: usize,
    },
    /// A value gathered in pieces was inserted before all of it arrived: never stored.
    #[error("value of {size} bytes is missing its last {missing} bytes")]
    Incomplete {
        /// Bytes not gathered.
        missing: usize,
        /// Bytes the value was to have.
        size: usize,
    },
    /// The requested io engine is not available on this system.
    #[error("io engine {engine} is unavailable: {source}")]
    EngineUnavailable {
        /// The engine's name.
        engine: &'static str,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// Every region is busy with writes in flight; the insert was not admitted.
    #[error("disk store is busy: no region can be reclaimed right now")]
    Busy,
    /// The writes in flight have reached their budget (the device is slower than what comes
    /// in): the insert was shed, not queued.
    #[error("disk write shed: {queued} bytes of writes in flight reach the budget of {budget}")]
    Overloaded {
        /// Bytes of writes in flight.
        queued: u64,
        /// The budget (`write_queue`).
        budget: u64,
    },
    /// Writes are suspended for a while: they kept failing on the whole device.
    #[error("disk writes suspended: the device kept failing them; retried after a back-off")]
    WritesSuspended,
    /// Every region of the device was retired after failing again and again.
    #[error("disk store has no usable region left: every region was retired after IO errors")]
    NoUsableRegion,
}

/// Result alias for the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Wraps an io error with the device path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}
