//! What a region holds: the items its summary lists when it has a sound one, else the items a
//! scan of the whole region proves intact. One reader for start-up recovery, for reclaim and for
//! `inspect`, over any [`RegionSource`] (the io engine, or a plain file).

use std::future::Future;
use std::io;

use super::geometry::Geometry;
use super::ondisk::item::{self, ItemHeader};
use super::ondisk::region::RegionHeader;
use super::ondisk::summary::{self, SummaryEntry};
use super::ondisk::MAX_SEQ;
use crate::io::aligned::AlignedBuf;
use crate::key::key_hash;

/// Positional reads of whole blocks of the device.
pub(crate) trait RegionSource {
    /// A read in progress: issued when [`RegionSource::read`] is called, so several overlap.
    type Read: Future<Output = io::Result<AlignedBuf>>;

    /// Reads `len` bytes (a multiple of the block) at device offset `offset`.
    fn read(&self, offset: u64, len: usize) -> Self::Read;
}

/// The items of one region, and where the list came from.
#[derive(Debug)]
pub(crate) struct Listing {
    /// Items and removal records, in the order they were written.
    pub(crate) entries: Vec<SummaryEntry>,
    /// True when read from a sound summary, false when found by a scan.
    pub(crate) from_summary: bool,
}

/// Reads region listings from a source of the given geometry.
pub(crate) struct RegionReader<'a, S> {
    src: &'a S,
    geo: Geometry,
}

impl<'a, S: RegionSource> RegionReader<'a, S> {
    /// A reader of `src`, a device of geometry `geo`.
    pub(crate) fn new(src: &'a S, geo: Geometry) -> Self {
        RegionReader { src, geo }
    }

    /// Starts reading the summary of the region `h` describes, if it is sealed: a caller about to
    /// list many regions starts all these reads first, so they overlap.
    ///
    /// A summary said to lie outside the region is not read: the region is scanned.
    pub(crate) fn start_summary(&self, h: &RegionHeader) -> Option<S::Read> {
        let (block, blocks) = self.geo.summary_of(h)?;
        Some(self.src.read(
            self.geo.block_offset(h.region, block),
            blocks as usize * self.geo.block,
        ))
    }

    /// The items of the region `h` describes: its summary's list (read through `started`, from
    /// [`RegionReader::start_summary`], or started now) when the summary reads back sound, else a
    /// scan of the whole region. Only a failed scan is an error.
    pub(crate) async fn list(
        &self,
        h: &RegionHeader,
        started: Option<S::Read>,
    ) -> io::Result<Listing> {
        if let Some(read) = started.or_else(|| self.start_summary(h)) {
            // A summary that cannot be read or decoded, or lists an item outside the region, is
            // not an error: the scan finds as much.
            let sound = |entries: &Vec<SummaryEntry>| {
                let (block, _) = self.geo.summary_of(h).unwrap_or((0, 0));
                entries.len() < block as usize
                    && entries.iter().all(|e| self.geo.entry_fits(e, h, block))
            };
            if let Some(entries) = read
                .await
                .ok()
                .and_then(|buf| summary::decode(buf.as_slice(), h.open_seq))
                .filter(sound)
            {
                return Ok(Listing {
                    entries,
                    from_summary: true,
                });
            }
        }
        let image = self
            .src
            .read(
                self.geo.region_offset(h.region),
                self.geo.region_size as usize,
            )
            .await?;
        Ok(Listing {
            entries: scan_region(image.as_slice(), self.geo.block, h.open_seq),
            from_summary: false,
        })
    }
}

/// Finds the intact items of one region image (`region` is the whole region, header included).
///
/// Items are walked from block 1 (the rest of the header's write unit is zeros). Where a block
/// holds no valid item of this generation (a hole
/// left by a write that never landed, or leftovers of an older generation), the walk moves on
/// one block at a time, so every item that can be proven intact is found. An item whose seq is
/// past [`MAX_SEQ`], or whose version is newer than its own write, is not believed.
pub(crate) fn scan_region(region: &[u8], block: usize, open_seq: u64) -> Vec<SummaryEntry> {
    let blocks = region.len() / block;
    let mut out = Vec::new();
    let mut b = 1;
    while b < blocks {
        let img = &region[b * block..];
        let found = ItemHeader::decode(img)
            .filter(|h| (open_seq..=MAX_SEQ).contains(&h.seq) && h.version <= h.seq)
            .and_then(|_| item::verify(img));
        match found {
            Some(h) => {
                let len = item::padded_len(h.key_len as usize, h.value_len as usize, block);
                let n = (len / block) as u32;
                out.push(SummaryEntry {
                    hash: key_hash(item::key_of(img, &h)),
                    block: b as u32,
                    blocks: n,
                    tombstone: h.is_tombstone(),
                    seq: h.seq,
                    version: h.version,
                });
                b += n as usize;
            }
            None => b += 1,
        }
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_items_across_holes_and_ignores_old_generations() {
        let block = 4096;
        let mut region = vec![0u8; 64 * block];
        let put = |r: &mut Vec<u8>, at: usize, key: &[u8], len: usize, seq: u64| {
            let img = item::encode(key, &[&vec![7u8; len]], seq, 0, block);
            r[at * block..at * block + img.len()].copy_from_slice(img.as_slice());
            img.len() / block
        };
        let n1 = put(&mut region, 1, b"a", 100, 50);
        // A hole of 3 blocks (a write that never landed), then an item.
        let at2 = 1 + n1 + 3;
        let n2 = put(&mut region, at2, b"b", 9000, 51);
        // An item of an older generation after them.
        put(&mut region, at2 + n2, b"old", 10, 3);
        let found = scan_region(&region, block, 40);
        let keys: Vec<u64> = found.iter().map(|e| e.hash).collect();
        assert_eq!(keys, vec![key_hash(b"a"), key_hash(b"b")]);
        assert_eq!(found[1].block as usize, at2);
        assert_eq!(found[1].blocks, 3);
    }
}
