//! Start-up recovery: the index and the allocator rebuilt from region headers, the summaries of
//! sealed regions, and scans of the regions that have none (open when the last run ended).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::allocator::Allocator;
use super::index::Entry;
use super::listing::RegionReader;
use super::ondisk::region::RegionHeader;
use super::ondisk::summary::SummaryEntry;
use super::ondisk::MAX_SEQ;
use super::slab::Slab;
use crate::error::{Result, StorageError};
use crate::io::aligned::AlignedBuf;

/// What recovery found.
pub(crate) enum Recovered {
    /// The regions in use, with the index filled and the next sequence number set.
    InUse(Allocator),
    /// Sequence numbers past [`BELIEVABLE_SEQ`]: a record no store writes (it would take 2^61
    /// writes), so a crafted or corrupt one. Nothing was indexed. Believing it would leave no
    /// room for the sequence numbers of new writes, which recovery would then refuse: writes
    /// acknowledged now, lost at the next start.
    Unbelievable {
        /// The largest sequence number found.
        max_seq: u64,
    },
}

/// The largest sequence number recovery believes: half of what may be written, so a store
/// recovered at the edge still has 2^61 writes of room.
pub(crate) const BELIEVABLE_SEQ: u64 = MAX_SEQ / 2;

/// Fills `slab`'s index with every item that can be proved intact and sets its next sequence
/// number; returns the allocator of the regions found in use.
pub(crate) async fn recover(slab: &Slab) -> Result<Recovered> {
    let geo = slab.geo;
    // Reads are submitted when created, so issuing them all before awaiting overlaps them.
    let reads: Vec<_> = (0..geo.region_count)
        .map(|r| {
            slab.engine.read(
                geo.region_offset(r),
                AlignedBuf::recycled(geo.block, geo.block),
            )
        })
        .collect();
    let mut live = Vec::new();
    for (r, fut) in reads.into_iter().enumerate() {
        let (res, buf) = fut.await;
        res.map_err(|e| StorageError::io(&slab.path, e))?;
        if let Some(h) = RegionHeader::decode(buf.as_slice()) {
            if h.uuid == slab.uuid && geo.header_fits(&h, r as u32) {
                live.push(h);
            }
        }
    }
    live.sort_by_key(|h| h.open_seq);
    let reader = RegionReader::new(slab, geo);
    let summaries: Vec<_> = live.iter().map(|h| reader.start_summary(h)).collect();
    let mut max_seq = 0u64;
    let mut listings = Vec::with_capacity(live.len());
    for (h, summary) in live.iter().zip(summaries) {
        let listing = reader
            .list(h, summary)
            .await
            .map_err(|e| StorageError::io(&slab.path, e))?;
        max_seq = max_seq.max(h.open_seq);
        max_seq = listing.entries.iter().fold(max_seq, |m, e| m.max(e.seq));
        listings.push((h.region, listing));
    }
    if max_seq > BELIEVABLE_SEQ {
        return Ok(Recovered::Unbelievable { max_seq });
    }
    for (region, listing) in &listings {
        for e in &listing.entries {
            apply(slab, *region, e);
        }
    }
    slab.seq.store(max_seq + 1, Ordering::Relaxed);
    Ok(Recovered::InUse(Allocator::recovered(
        geo.region_count,
        VecDeque::from(live),
    )))
}

/// Applies one recovered item or tombstone to the index (entries arrive in sequence order).
fn apply(slab: &Slab, region: u32, e: &SummaryEntry) {
    if e.tombstone {
        if slab
            .index
            .get(e.hash)
            .is_some_and(|cur| cur.version < e.version)
        {
            slab.index.remove(e.hash);
        }
    } else {
        slab.index.insert_if_newer(
            e.hash,
            Entry::new(slab.geo.abs_block(region, e.block), e.blocks, e.version),
        );
    }
}
