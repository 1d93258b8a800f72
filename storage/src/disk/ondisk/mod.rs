//! The on-disk formats.
pub mod item;
pub mod region;
pub mod summary;
pub mod superblock;
