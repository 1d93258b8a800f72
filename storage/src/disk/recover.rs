//! Start-up recovery: the index and the allocator rebuilt from region headers, the summaries of
//! sealed regions, and scans of the regions that have none (open when the last run ended).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::allocator::Allocator;
use super::index::Entry;
use super::listing::RegionReader;
use super::ondisk::region::RegionHeader;
use super::ondisk::summary::SummaryEntry;
use super::slab::Slab;
use crate::error::{Result, StorageError};
use crate::io::aligned::AlignedBuf;

/// Fills `slab`'s index with every item that can be proved intact and sets its next sequence
/// number; returns the allocator of the regions found in use.
pub(crate) async fn recover(slab: &Slab) -> Result<Allocator> {
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
    for (h, summary) in live.iter().zip(summaries) {
        let listing = reader
            .list(h, summary)
            .await
            .map_err(|e| StorageError::io(&slab.path, e))?;
        max_seq = max_seq.max(h.open_seq);
        for e in &listing.entries {
            max_seq = max_seq.max(e.seq);
            apply(slab, h.region, e);
        }
    }
    slab.seq.store(max_seq + 1, Ordering::Relaxed);
    Ok(Allocator::recovered(geo.region_count, VecDeque::from(live)))
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
