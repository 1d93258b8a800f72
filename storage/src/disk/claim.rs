//! Claiming a device: a blank one (or any, when the operator asks) is formatted, a cache of the
//! same geometry is recovered, anything else is refused untouched.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::config::DiskConfig;
use super::geometry::{DATA_OFFSET, MAX_REGION_SIZE};
use super::ondisk::superblock::{foreign_signature, Superblock, FORMAT_VERSION};
use crate::error::{Result, StorageError};
use crate::io::aligned::AlignedBuf;
use crate::io::device::{Device, WRITE_UNIT};

/// Whether a claimed device holds a cache to recover or is to be formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// A cache of the configured geometry: recover it.
    Recover(Superblock),
    /// Blank, or `overwrite` was asked: a new cache with this superblock, which the caller
    /// writes.
    Format(Superblock),
}

/// Decides whether the device may be used (blank, ours, or `overwrite`).
/// `fit`: the region size was not fixed by the operator ([`DiskConfig::region_fit`]), so a cache
/// formatted with another one is still recovered.
pub(crate) fn claim_device(
    dev: &Device,
    wanted: Superblock,
    overwrite: bool,
    fit: bool,
) -> Result<Claim> {
    let head_len = DATA_OFFSET.min(dev.size) as usize;
    let mut head = AlignedBuf::zeroed(head_len, dev.block_size);
    dev.file
        .read_exact_at(head.as_mut_slice(), 0)
        .map_err(|e| StorageError::io(&dev.path, e))?;
    let same_geometry = |sb: &Superblock| {
        sb.version == wanted.version
            // A cache formatted with larger blocks (before small items were packed, or on
            // another filesystem) is still read: the device can do IO at its block.
            && (sb.block_size == wanted.block_size
                || (sb.block_size as usize).is_multiple_of(dev.block_size))
            && sb.device_size == wanted.device_size
            && sb.data_offset == wanted.data_offset
            && (fit
                || (sb.region_count == wanted.region_count && sb.region_size == wanted.region_size))
    };
    match Superblock::decode(head.as_slice(), &dev.path) {
        Ok(Some(sb)) if same_geometry(&sb) => return Ok(Claim::Recover(sb)),
        Ok(Some(sb)) if !overwrite => {
            return Err(StorageError::GeometryMismatch {
                path: dev.path.clone(),
                found: sb.describe(),
                configured: wanted.describe(),
            })
        }
        Err(e) if !overwrite => return Err(e),
        Ok(None) if !overwrite && !head.as_slice().iter().all(|&b| b == 0) => {
            let found = foreign_signature(head.as_slice())
                .unwrap_or("holds data that is not a Strata cache (its first MiB is not blank)");
            return Err(StorageError::ForeignData {
                path: dev.path.clone(),
                found: found.to_string(),
            });
        }
        _ => {}
    }
    tracing::info!(path = %dev.path.display(), geometry = %wanted.describe(), "formatting cache device");
    Ok(Claim::Format(wanted))
}

/// Formats `path` as an empty cache of this geometry, whatever it holds (the operator asked).
pub fn format(cfg: &DiskConfig) -> Result<Superblock> {
    let dev = Device::open(&cfg.path, cfg.size)?;
    let sb = new_superblock(cfg, &dev)?;
    // A new uuid makes every region of an earlier cache unreadable.
    write_superblock(&dev.file, &dev.path, dev.block_size, &sb)?;
    Ok(sb)
}

/// The superblock of a new cache of the configured geometry on `dev`; refuses geometries the
/// store cannot address.
pub(crate) fn new_superblock(cfg: &DiskConfig, dev: &Device) -> Result<Superblock> {
    // The device's block, doubled (up to a write unit) while its blocks would not be numbered
    // by a u32: 512-byte blocks address 2 TiB.
    let mut block = dev.block_size;
    while block < WRITE_UNIT && dev.size / block as u64 > u32::MAX as u64 {
        block *= 2;
    }
    // Regions start on write units, so every write lands on whole units of the device.
    let unit = block.max(WRITE_UNIT);
    let region_size = if cfg.region_fit {
        fitted_region(dev.size, cfg.region_size, unit as u64)
    } else {
        cfg.region_size
    };
    if region_size > MAX_REGION_SIZE {
        return Err(StorageError::RegionTooLarge {
            region_size,
            max: MAX_REGION_SIZE,
        });
    }
    if region_size < (1 << 20) || !region_size.is_multiple_of(unit as u64) {
        return Err(StorageError::RegionSize {
            region_size,
            block: unit,
        });
    }
    let region_count = dev.size.saturating_sub(DATA_OFFSET) / region_size;
    if region_count < 2 {
        return Err(StorageError::TooFewRegions {
            device_size: dev.size,
            region_size,
        });
    }
    // Items are addressed by a u32 block number counted from region 0 (so are regions).
    let too_large = StorageError::DeviceTooLarge {
        device_size: dev.size,
        max_tib: (u32::MAX as u64 * block as u64) >> 40,
    };
    if region_count * region_size / block as u64 > u32::MAX as u64 {
        return Err(too_large);
    }
    let region_count = u32::try_from(region_count).map_err(|_| too_large)?;
    Ok(Superblock {
        version: FORMAT_VERSION,
        block_size: block as u32,
        device_size: dev.size,
        data_offset: DATA_OFFSET,
        region_count,
        region_size,
        uuid: rand::random(),
        created: now_secs(),
        clean_shutdown: 0,
    })
}

/// The region size that divides a device of `device_size` bytes into as few equal regions of
/// at most `largest` bytes as it can (at least two), in whole blocks: a fixed size leaves the
/// rest of the device over, up to a whole region (16 MiB regions on a 192 MiB device make 11,
/// as the superblock's first MiB is not theirs). `largest` itself when the result would be
/// under 1 MiB (which `new_superblock` then refuses with the reason).
fn fitted_region(device_size: u64, largest: u64, block: u64) -> u64 {
    let usable = device_size.saturating_sub(DATA_OFFSET);
    if largest == 0 || block == 0 {
        return largest;
    }
    let count = usable.div_ceil(largest).max(2);
    let size = usable / count / block * block;
    if size < 1 << 20 {
        largest
    } else {
        size
    }
}

/// Writes `sb` as the device's superblock, durably.
pub(crate) fn write_superblock(
    file: &File,
    path: &Path,
    block: usize,
    sb: &Superblock,
) -> Result<()> {
    // A whole write unit (the first MiB holds nothing else).
    let mut buf = AlignedBuf::zeroed(block.max(WRITE_UNIT), block);
    sb.encode(buf.as_mut_slice());
    let io = |e| StorageError::io(path, e);
    file.write_all_at(buf.as_slice(), 0).map_err(io)?;
    file.sync_data().map_err(io)
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::device::DeviceKind;

    /// A device of `size` bytes that is never read or written: `new_superblock` only looks at
    /// its geometry.
    fn device(size: u64) -> Device {
        Device {
            file: tempfile::tempfile().expect("temp file"),
            path: "dev.img".into(),
            size,
            block_size: 4096,
            kind: DeviceKind::File,
            direct: false,
        }
    }

    #[test]
    fn region_size_of_4gib_or_more_is_refused() {
        let dev = device(40 << 30);
        for region_size in [4 << 30, 8 << 30, MAX_REGION_SIZE + 4096] {
            let mut cfg = DiskConfig::new("dev.img", dev.size);
            cfg.region_size = region_size;
            match new_superblock(&cfg, &dev) {
                Err(StorageError::RegionTooLarge {
                    region_size: got,
                    max,
                }) => {
                    assert_eq!((got, max), (region_size, MAX_REGION_SIZE));
                }
                other => panic!("region size {region_size}: {other:?}"),
            }
        }
        let mut cfg = DiskConfig::new("dev.img", dev.size);
        cfg.region_size = MAX_REGION_SIZE;
        let sb = new_superblock(&cfg, &dev).expect("the largest region size is accepted");
        assert_eq!(sb.region_size, MAX_REGION_SIZE);
    }

    /// Fitted regions take the whole device (less than a block per region left over), are
    /// never larger than asked and are as few as that allows; exact ones leave the rest.
    #[test]
    fn fitted_regions_fill_the_device() {
        for (mib, want) in [(192u64, 12u32), (8, 2), (1025, 64), (100 << 10, 6401)] {
            let dev = device(mib << 20);
            let mut cfg = DiskConfig::new("dev.img", dev.size);
            // Exact 16 MiB regions do not fit an 8 MiB device at all.
            let exact = new_superblock(&cfg, &dev).map_or(0, |sb| sb.region_count);
            cfg.region_fit = true;
            let sb = new_superblock(&cfg, &dev).expect("fitted");
            assert_eq!(sb.region_count, want, "{mib} MiB");
            assert!(sb.region_size <= 16 << 20 && sb.region_size.is_multiple_of(4096));
            let left = dev.size - DATA_OFFSET - u64::from(sb.region_count) * sb.region_size;
            assert!(
                left < u64::from(sb.region_count) * 4096,
                "{mib} MiB: {left} bytes left"
            );
            assert!(sb.region_count >= exact);
        }
        let dev = device(192 << 20);
        let exact = new_superblock(&DiskConfig::new("dev.img", dev.size), &dev).expect("exact");
        assert_eq!(
            exact.region_count, 11,
            "16 MiB regions leave a region's worth over"
        );
    }

    /// With 512-byte blocks (a cache file), fitted regions are still whole write units, so
    /// every region starts on one and no write straddles two of the device's.
    #[test]
    fn fitted_regions_of_small_blocks_are_whole_write_units() {
        for size in [192u64 << 20, 10 << 30, 100 << 30, (5 << 30) + 12_345] {
            let mut dev = device(size);
            dev.block_size = 512;
            let mut cfg = DiskConfig::new("dev.img", dev.size);
            cfg.region_fit = true;
            let sb = new_superblock(&cfg, &dev).expect("fitted");
            assert_eq!(sb.block_size, 512);
            assert!(
                sb.region_size.is_multiple_of(4096),
                "{size}: {}",
                sb.region_size
            );
        }
    }

    /// A device smaller than two regions of 1 MiB is refused, fitted or not.
    #[test]
    fn a_device_too_small_for_two_regions_is_refused() {
        let dev = device(2 << 20);
        let mut cfg = DiskConfig::new("dev.img", dev.size);
        cfg.region_fit = true;
        assert!(matches!(
            new_superblock(&cfg, &dev),
            Err(StorageError::TooFewRegions { .. })
        ));
    }
}
