//! Which regions are free, filling or sealed, and how space is reserved in them.
//!
//! Writes reserve blocks in the active region under the allocator's lock and run outside it, so
//! the device sees a stream of adjacent writes. A region that fills is sealed: its summary (the
//! list of its items) is written after its last item and its header is pointed at it. When no
//! region is free, the oldest sealed one with no write in flight is reclaimed, and the items that
//! earn a second chance are copied into its new generation first.

use std::collections::VecDeque;
use std::sync::Arc;

use super::index::Entry;
use super::ondisk::item;
use super::ondisk::region::RegionHeader;
use super::ondisk::summary::{self, SummaryEntry};
use super::pack::{unit_write, Packing, Tail};
use super::reclaim::{reclaim, Reclaimed};
use super::slab::Slab;
use super::stats::bump;
use crate::error::{Result, StorageError};
use crate::io::aligned::AlignedBuf;

/// The region being filled.
pub(crate) struct Active {
    region: u32,
    next_block: u32,
    open_seq: u64,
    entries: Vec<SummaryEntry>,
    /// The write unit the last item ends in, when it ends inside one.
    tail: Option<Arc<Tail>>,
}

/// Space reserved for one item: where it goes and its sequence number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    pub(crate) region: u32,
    pub(crate) block: u32,
    pub(crate) seq: u64,
    /// A removal record.
    pub(crate) tombstone: bool,
}

/// The regions by state; used under the store's allocator lock.
pub(crate) struct Allocator {
    active: Option<Active>,
    free: VecDeque<u32>,
    /// Headers of sealed regions, oldest first (the reclaim order); a region whose summary
    /// could not be written has none (it is scanned when reclaimed).
    sealed: VecDeque<RegionHeader>,
}

impl Allocator {
    /// Every region of a new cache free.
    pub(crate) fn empty(region_count: u32) -> Self {
        Allocator {
            active: None,
            free: (0..region_count).collect(),
            sealed: VecDeque::new(),
        }
    }

    /// The state recovery found: `sealed` regions in use, oldest first; the others free.
    pub(crate) fn recovered(region_count: u32, sealed: VecDeque<RegionHeader>) -> Self {
        let mut in_use = vec![false; region_count as usize];
        for h in &sealed {
            in_use[h.region as usize] = true;
        }
        Allocator {
            active: None,
            free: (0..region_count).filter(|&r| !in_use[r as usize]).collect(),
            sealed,
        }
    }

    /// Regions holding data (filling or sealed).
    pub(crate) fn regions_in_use(&self, region_count: u32) -> u32 {
        region_count.saturating_sub(self.free.len() as u32)
    }

    /// The region being filled, if any.
    pub(crate) fn active_region(&self) -> Option<u32> {
        self.active.as_ref().map(|a| a.region)
    }

    /// Reserves `blocks` blocks in the active region for an item of `hash`, sealing and opening
    /// regions as needed; with `pack`, right after the item before when that one's write has
    /// landed (see [`super::pack`]), else from the next write unit.
    pub(crate) async fn reserve(
        &mut self,
        slab: &Slab,
        blocks: u32,
        hash: u64,
        tombstone: bool,
        pack: bool,
    ) -> Result<(Reservation, Packing)> {
        let geo = slab.geo;
        if slab.health.writes_suspended() {
            return Err(StorageError::WritesSuspended);
        }
        let per_region = slab.geo.blocks_per_region();
        loop {
            if self
                .active
                .as_ref()
                .is_some_and(|a| slab.health.is_retired(a.region))
            {
                // Left as it is: written no more, never sealed (sealing writes to it) nor
                // reclaimed. What of it still reads intact is served until it fails.
                self.active = None;
            }
            if let Some(act) = self.active.as_mut() {
                let prefix = act
                    .tail
                    .as_ref()
                    .filter(|t| pack && t.has_landed() && t.block == geo.unit_down(act.next_block))
                    .cloned();
                let block = match prefix {
                    Some(_) => act.next_block,
                    None => geo.unit_up(act.next_block),
                };
                let end = block + blocks;
                let after = geo.summary_blocks(act.entries.len() + 1);
                if geo.unit_up(end) + after <= per_region {
                    let region = act.region;
                    act.next_block = end;
                    let tail = Tail::after(&geo, end);
                    act.tail.clone_from(&tail);
                    let seq = slab.next_seq();
                    act.entries.push(SummaryEntry {
                        hash,
                        block,
                        blocks,
                        tombstone,
                        seq,
                        version: seq,
                    });
                    slab.begin_write(region);
                    let r = Reservation {
                        region,
                        block,
                        seq,
                        tombstone,
                    };
                    return Ok((r, Packing { prefix, tail }));
                }
            }
            self.seal_active(slab).await;
            // Retired regions leave the free list for good.
            self.free.retain(|&r| !slab.health.is_retired(r));
            let act = match self.free.pop_front() {
                Some(region) => match open_free(slab, region).await {
                    Ok(act) => act,
                    Err(e) => {
                        // Nothing of the new generation was written: the region is free again
                        // (unless that failure retired it).
                        if !slab.health.is_retired(region) {
                            self.free.push_back(region);
                        }
                        return Err(e);
                    }
                },
                None => open_reclaimed(slab, self.reclaim_oldest(slab).await?).await,
            };
            self.active = Some(act);
        }
    }

    /// Reclaims the oldest sealed region with no writes in flight: its new generation is open on
    /// the device, with the items that earn a second chance still to copy.
    async fn reclaim_oldest(&mut self, slab: &Slab) -> Result<Reclaimed> {
        // A retired region is never reused: it leaves the reclaim order, its items with it
        // (dropped from the index one by one as their reads fail).
        self.sealed.retain(|h| !slab.health.is_retired(h.region));
        if self.sealed.is_empty() {
            return Err(StorageError::NoUsableRegion);
        }
        let pos = self
            .sealed
            .iter()
            .position(|h| !slab.has_pending(h.region))
            .ok_or(StorageError::Busy)?;
        let h = self.sealed.remove(pos).ok_or(StorageError::Busy)?;
        match reclaim(slab, &h).await {
            Ok(reclaimed) => Ok(reclaimed),
            Err(e) => {
                // Still holding its items: back in line, at the front.
                self.sealed.push_front(h);
                Err(e)
            }
        }
    }

    /// Strikes the item of reservation `r`, whose write failed, from its region's summary: from
    /// the list of the active region, or, when its region was sealed meanwhile, by pointing the
    /// region's header at no summary (the region is then scanned, which finds only intact items).
    /// A removal record stays listed: applied at recovery, it can only make its key a miss.
    pub(crate) async fn forget(&mut self, slab: &Slab, r: Reservation) {
        if r.tombstone {
            return;
        }
        if let Some(act) = self.active.as_mut().filter(|a| a.region == r.region) {
            if act.open_seq <= r.seq {
                act.entries.retain(|e| e.seq != r.seq);
            }
            return;
        }
        let Some(h) = self
            .sealed
            .iter_mut()
            .find(|h| h.region == r.region && h.open_seq <= r.seq && h.summary.is_some())
        else {
            // Reclaimed since (or never summarised): nothing lists the item.
            return;
        };
        h.summary = None;
        let unsummarised = *h;
        if let Err(e) = slab.write_header(&unsummarised).await {
            tracing::warn!(region = r.region, error = %e, "a summary lists an item whose write failed");
        }
    }

    /// Seals the active region, if any, and lists it for reclaim.
    pub(crate) async fn seal_active(&mut self, slab: &Slab) {
        let Some(full) = self.active.take() else {
            return;
        };
        // Listed as sealed before its summary is written: if that is interrupted, the region
        // stays reclaimable (and recoverable by a scan), never lost.
        self.sealed.push_back(RegionHeader {
            region: full.region,
            open_seq: full.open_seq,
            uuid: slab.uuid,
            summary: None,
        });
        let summary = seal(slab, &full).await;
        // Still the last entry: nothing else touches the list while the allocator is locked.
        if let Some(h) = self.sealed.back_mut() {
            h.summary = summary;
        }
    }
}

/// Writes the summary and the sealed header of a full region; returns where the summary is, or
/// `None` when the region could not be sealed (it is then still recoverable by a scan).
async fn seal(slab: &Slab, act: &Active) -> Option<(u32, u32)> {
    if let Some(e) = injected_error!("disk::seal") {
        let e = slab.io_error(e);
        tracing::warn!(region = act.region, error = %e, "region left unsealed");
        return None;
    }
    let n = slab.geo.summary_blocks(act.entries.len());
    let mut buf = AlignedBuf::zeroed(n as usize * slab.geo.block, slab.geo.block);
    summary::encode(&act.entries, act.open_seq, buf.as_mut_slice());
    // From the next write unit: the last item's unit is not written again.
    let at = slab.geo.unit_up(act.next_block);
    let written = match injected_error!("disk::summary_write") {
        Some(e) => Err(slab.io_error(e)),
        None => slab.write_at(act.region, at, buf, None).await,
    };
    written.ok()?;
    let header = RegionHeader {
        region: act.region,
        open_seq: act.open_seq,
        uuid: slab.uuid,
        summary: Some((at, n)),
    };
    slab.write_header(&header).await.ok()?;
    header.summary
}

/// Starts the first generation of a free region.
async fn open_free(slab: &Slab, region: u32) -> Result<Active> {
    let open_seq = slab.seq.load(std::sync::atomic::Ordering::Relaxed);
    slab.write_header(&RegionHeader {
        region,
        open_seq,
        uuid: slab.uuid,
        summary: None,
    })
    .await?;
    Ok(Active {
        region,
        next_block: slab.geo.first_item_block(),
        open_seq,
        entries: Vec::new(),
        tail: None,
    })
}

/// Fills the new generation of a reclaimed region (its header already written) with the items
/// given a second chance.
async fn open_reclaimed(slab: &Slab, reclaimed: Reclaimed) -> Active {
    let Reclaimed {
        region,
        open_seq,
        hot,
    } = reclaimed;
    let geo = slab.geo;
    let mut act = Active {
        region,
        next_block: geo.first_item_block(),
        open_seq,
        entries: Vec::with_capacity(hot.len()),
        tail: None,
    };
    if hot.is_empty() {
        return act;
    }
    let total: usize = hot.iter().map(|h| h.len).sum();
    // Packed as they were, in whole write units.
    let mut batch = AlignedBuf::zeroed(total.next_multiple_of(geo.write_unit()), geo.block);
    let mut placed = Vec::with_capacity(hot.len());
    let mut off = 0;
    for h in &hot {
        let seq = slab.next_seq();
        let dst = &mut batch.as_mut_slice()[off..off + h.len];
        dst.copy_from_slice(&h.image.as_slice()[..h.len]);
        item::set_seq(dst, seq, h.version);
        let blocks = geo.blocks_of(h.len);
        let block = act.next_block + geo.blocks_of(off);
        act.entries.push(SummaryEntry {
            hash: h.hash,
            block,
            blocks,
            tombstone: false,
            seq,
            version: h.version,
        });
        placed.push(Entry::new(geo.abs_block(region, block), blocks, h.version));
        off += h.len;
    }
    let batch_blocks = geo.blocks_of(total);
    let end = act.next_block + batch_blocks;
    let packing = Packing {
        prefix: None,
        tail: Tail::after(&geo, end),
    };
    let (at, batch) = unit_write(&geo, act.next_block, batch_blocks, batch, &packing);
    if slab.write_at(region, at, batch, None).await.is_ok() {
        packing.land();
        act.tail = packing.tail;
        for (h, e) in hot.iter().zip(placed) {
            // A newer version inserted meanwhile wins over this copy.
            if slab.index.insert_if_newer(h.hash, e) {
                bump(&slab.counters.reinserted_items, 1);
            }
        }
    } else {
        bump(&slab.counters.evicted_items, hot.len() as u64);
    }
    act.next_block = end;
    act
}
