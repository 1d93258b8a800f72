//! A read-only report of a cache device: what `strata inspect` prints.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::disk::listing::scan_region;
use crate::disk::ondisk::region::RegionHeader;
use crate::disk::ondisk::summary;
use crate::disk::ondisk::superblock::{foreign_signature, Superblock};
use crate::disk::DATA_OFFSET;
use crate::error::{Result, StorageError};

/// What a device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The superblock.
    pub superblock: Superblock,
    /// Regions holding items of this cache.
    pub regions_in_use: u32,
    /// Of those, regions sealed with a summary.
    pub regions_sealed: u32,
    /// Items (latest writes; removal records excluded).
    pub items: u64,
    /// Removal records.
    pub tombstones: u64,
    /// Bytes occupied by items, padding included.
    pub item_bytes: u64,
}

/// Reads the superblock and every region header and summary of `path`, writing nothing.
pub fn inspect(path: &Path) -> Result<Report> {
    let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut head = vec![0u8; 1 << 20];
    let n = read_up_to(&file, &mut head, 0).map_err(|e| StorageError::io(path, e))?;
    head.truncate(n);
    let sb = match Superblock::decode(&head, path)? {
        Some(sb) => sb,
        None => {
            return Err(StorageError::ForeignData {
                path: path.to_path_buf(),
                found: foreign_signature(&head)
                    .unwrap_or("has no Strata superblock")
                    .to_string(),
            })
        }
    };
    let block = sb.block_size as usize;
    let mut report = Report {
        superblock: sb.clone(),
        regions_in_use: 0,
        regions_sealed: 0,
        items: 0,
        tombstones: 0,
        item_bytes: 0,
    };
    let mut hbuf = vec![0u8; block];
    for r in 0..sb.region_count {
        let off = DATA_OFFSET + r as u64 * sb.region_size;
        file.read_exact_at(&mut hbuf, off)
            .map_err(|e| StorageError::io(path, e))?;
        let Some(h) = RegionHeader::decode(&hbuf).filter(|h| h.uuid == sb.uuid && h.region == r)
        else {
            continue;
        };
        report.regions_in_use += 1;
        let listed = h.summary.and_then(|(b, n)| {
            let mut buf = vec![0u8; n as usize * block];
            file.read_exact_at(&mut buf, off + b as u64 * block as u64)
                .ok()?;
            summary::decode(&buf, h.open_seq)
        });
        let entries = match listed {
            Some(e) => {
                report.regions_sealed += 1;
                e
            }
            None => {
                let mut buf = vec![0u8; sb.region_size as usize];
                file.read_exact_at(&mut buf, off)
                    .map_err(|e| StorageError::io(path, e))?;
                scan_region(&buf, block, h.open_seq)
            }
        };
        for e in entries {
            if e.tombstone {
                report.tombstones += 1;
            } else {
                report.items += 1;
            }
            report.item_bytes += e.blocks as u64 * block as u64;
        }
    }
    Ok(report)
}

fn read_up_to(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}
