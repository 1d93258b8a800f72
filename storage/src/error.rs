//! The storage crate's error type.

use std::io;
use std::path::PathBuf;

/// Errors from the cache tiers and the disk store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An IO call on the cache device failed.
    #[error("io error on cache device {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The device holds data Strata did not write; it is left untouched.
    #[error("refusing to use {path}: it {found}; set cache.disk.overwrite: true (or run `strata format`) to format it")]
    ForeignData { path: PathBuf, found: String },
    /// The device holds a Strata cache whose geometry differs from the configured one.
    #[error("refusing to use {path}: it holds a Strata cache of another geometry ({found}); set cache.disk.overwrite: true (or run `strata format`) to reformat it")]
    GeometryMismatch { path: PathBuf, found: String },
    /// The configuration of a tier is unusable.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// The value does not fit in one region of the disk store.
    #[error("item of {size} bytes is larger than the largest storable item ({max} bytes)")]
    TooLarge { size: usize, max: usize },
    /// The requested io engine is not available on this system.
    #[error("io engine {engine} is unavailable: {reason}")]
    EngineUnavailable {
        engine: &'static str,
        reason: String,
    },
    /// Every region is busy with writes in flight; the insert was not admitted.
    #[error("disk store is busy: no region can be reclaimed right now")]
    Busy,
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
