//! Reclaiming a sealed region: its next generation is opened on the device, then its items leave
//! the index, except (with second chance) items read since they were written, which are read back
//! here to be copied into that generation (see `allocator`).

use super::config::EvictionPolicy;
use super::index::Entry;
use super::listing::RegionReader;
use super::ondisk::item;
use super::ondisk::region::RegionHeader;
use super::slab::Slab;
use super::stats::bump;
use crate::error::Result;
use crate::io::aligned::AlignedBuf;

/// An item copied forward when its region is reclaimed: its verified image, as read.
pub(crate) struct HotItem {
    pub(crate) hash: u64,
    pub(crate) image: AlignedBuf,
    /// Bytes of `image` the item takes (a multiple of the block).
    pub(crate) len: usize,
    pub(crate) version: u64,
}

/// A reclaimed region: its new generation, open on the device, and the items to copy into it.
pub(crate) struct Reclaimed {
    /// The region.
    pub(crate) region: u32,
    /// The open_seq its header now carries (no summary).
    pub(crate) open_seq: u64,
    /// The items that earn a second chance.
    pub(crate) hot: Vec<HotItem>,
}

/// Opens the next generation of the sealed region `h`, then drops its items from the index and
/// returns those that earn a second chance. Fails, with the index untouched, when the region
/// cannot be listed or its new header cannot be written.
///
/// The header goes first: while the device still holds the old one, a restart recovers the old
/// generation, so its items must stay indexed (and a removal of one of them must write its
/// removal record) until then. Dropped first, a key removed meanwhile finds nothing to record,
/// and after a crash the old summary would bring it back.
pub(crate) async fn reclaim(slab: &Slab, h: &RegionHeader) -> Result<Reclaimed> {
    if let Some(e) = injected_error!("disk::reclaim") {
        return Err(slab.io_error(e));
    }
    let listing = RegionReader::new(slab, slab.geo)
        .list(h, None)
        .await
        .map_err(|e| slab.io_error(e))?;
    let open_seq = slab.seq.load(std::sync::atomic::Ordering::Relaxed);
    slab.write_header(&RegionHeader {
        region: h.region,
        open_seq,
        uuid: slab.uuid,
        summary: None,
    })
    .await?;
    let (geo, region) = (slab.geo, h.region);
    let cap = geo.blocks_per_region() / 2;
    let mut hot_blocks = 0;
    let mut hot = Vec::new();
    let mut dropped = 0u64;
    for e in listing.entries.iter().filter(|e| !e.tombstone) {
        let here = Entry::new(geo.abs_block(region, e.block), e.blocks, e.version);
        let Some(cur) = slab.index.remove_if(e.hash, &here) else {
            continue;
        };
        let second_chance = slab.eviction == EvictionPolicy::SecondChance
            && cur.is_hot()
            && hot_blocks + e.blocks <= cap;
        if second_chance {
            hot_blocks += e.blocks;
            hot.push(*e);
        } else {
            dropped += 1;
        }
    }
    let reads: Vec<_> = hot
        .iter()
        .map(|e| {
            let buf = AlignedBuf::recycled(e.blocks as usize * geo.block, geo.block);
            (e, slab.engine.read(geo.block_offset(region, e.block), buf))
        })
        .collect();
    let mut items = Vec::with_capacity(reads.len());
    for (e, fut) in reads {
        let (res, image) = fut.await;
        let intact = res.is_ok() && item::verify(image.as_slice()).is_some_and(|h| h.seq == e.seq);
        if intact {
            items.push(HotItem {
                hash: e.hash,
                len: e.blocks as usize * geo.block,
                image,
                version: e.version,
            });
        } else {
            dropped += 1;
        }
    }
    bump(&slab.counters.evicted_regions, 1);
    bump(&slab.counters.evicted_items, dropped);
    tracing::debug!(
        region,
        dropped,
        second_chance = items.len(),
        "region reclaimed"
    );
    Ok(Reclaimed {
        region,
        open_seq,
        hot: items,
    })
}
