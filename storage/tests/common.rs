//! Helpers shared by the storage tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use strata_storage::{DiskConfig, EngineKind};

/// A directory on the real filesystem (not tmpfs), so O_DIRECT is exercised.
pub(crate) fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir")
}

/// A disk config with small regions, for a file of `size` bytes.
pub(crate) fn config(path: &Path, size: u64, engine: EngineKind) -> DiskConfig {
    let mut c = DiskConfig::new(path.to_path_buf(), size);
    c.region_size = 1 << 20;
    c.engine = engine;
    c
}

/// Deterministic value of `len` bytes for key number `n`, version `v`.
pub(crate) fn value(n: u64, v: u64, len: usize) -> Vec<u8> {
    let mut x = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ v.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Length of the value for key number `n`: from 1 byte to ~300 KiB, many sizes.
pub(crate) fn len_for(n: u64) -> usize {
    match n % 5 {
        0 => 1 + (n as usize % 100),
        1 => 4096 - 32 - 8 + (n as usize % 3),
        2 => 10_000 + (n as usize * 37 % 5000),
        3 => 64 * 1024,
        _ => 100_000 + (n as usize * 7919 % 200_000),
    }
}

pub(crate) fn key(n: u64) -> Vec<u8> {
    format!("key-{n}").into_bytes()
}

/// Checksum of the first MiB of a file.
pub(crate) fn head_digest(path: &PathBuf) -> Vec<u8> {
    let data = std::fs::read(path).expect("read");
    data[..data.len().min(1 << 20)].to_vec()
}
