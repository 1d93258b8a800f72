//! A read-only report of a cache device: what `strata inspect` prints.
//!
//! It lists regions with the store's own region reader, over a plain file: its reads are done
//! when asked for, so the reader's futures complete on their first poll.

use std::fs::File;
use std::future::{ready, Future, Ready};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::geometry::{Geometry, DATA_OFFSET};
use super::listing::{RegionReader, RegionSource};
use super::ondisk::region::RegionHeader;
use super::ondisk::superblock::{foreign_signature, Superblock};
use crate::error::{Result, StorageError};
use crate::io::aligned::AlignedBuf;

/// What a device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectReport {
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

/// A device read synchronously, through the page cache.
struct FileSource<'a>(&'a File);

impl RegionSource for FileSource<'_> {
    type Read = Ready<io::Result<AlignedBuf>>;

    fn read(&self, offset: u64, len: usize) -> Self::Read {
        let mut buf = AlignedBuf::zeroed(len, 1);
        ready(
            self.0
                .read_exact_at(buf.as_mut_slice(), offset)
                .map(|()| buf),
        )
    }
}

/// The output of a future that completes on its first poll, as every future over a
/// [`FileSource`] does.
fn at_once<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        // Only `Ready` reads are awaited: there is nothing to wait for.
        Poll::Pending => unreachable!("a read of a file source is ready at once"),
    }
}

/// Reads the superblock and every region header and summary of `path`, writing nothing. A
/// superblock whose geometry does not hold together, or describes a device larger than `path`,
/// is refused.
pub fn inspect(path: &Path) -> Result<InspectReport> {
    let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut head = vec![0u8; DATA_OFFSET as usize];
    let n = read_up_to(&file, &mut head, 0).map_err(|e| StorageError::io(path, e))?;
    head.truncate(n);
    let Some(sb) = Superblock::decode(&head, path)? else {
        return Err(StorageError::ForeignData {
            path: path.to_path_buf(),
            found: foreign_signature(&head)
                .unwrap_or("has no Strata superblock")
                .to_string(),
        });
    };
    let geo = Geometry::checked(&sb, path)?;
    // The geometry holds together, but only the device's own size says it is there: a region
    // scan reads (and allocates) a whole region.
    let size = (&file)
        .seek(SeekFrom::End(0))
        .map_err(|e| StorageError::io(path, e))?;
    if sb.device_size > size {
        return Err(StorageError::CorruptGeometry {
            path: path.to_path_buf(),
            field: "device_size",
            value: sb.device_size,
        });
    }
    let mut report = InspectReport {
        superblock: sb.clone(),
        regions_in_use: 0,
        regions_sealed: 0,
        items: 0,
        tombstones: 0,
        item_bytes: 0,
    };
    let mut hbuf = vec![0u8; geo.block];
    let src = FileSource(&file);
    let reader = RegionReader::new(&src, geo);
    for r in 0..sb.region_count {
        file.read_exact_at(&mut hbuf, geo.region_offset(r))
            .map_err(|e| StorageError::io(path, e))?;
        let Some(h) =
            RegionHeader::decode(&hbuf).filter(|h| h.uuid == sb.uuid && geo.header_fits(h, r))
        else {
            continue;
        };
        report.regions_in_use += 1;
        let listing = at_once(reader.list(&h, None)).map_err(|e| StorageError::io(path, e))?;
        if listing.from_summary {
            report.regions_sealed += 1;
        }
        for e in listing.entries {
            if e.tombstone {
                report.tombstones += 1;
            } else {
                report.items += 1;
            }
            report.item_bytes += e.blocks as u64 * geo.block as u64;
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
