//! The L2 slab store: items appended into regions on one device, found through an in-memory index.
//!
//! Writes reserve space in the active region under one lock and run outside it, so the device
//! sees a stream of adjacent writes. A region that fills is sealed: its summary (the list of
//! its items) is written after the last item and the region header is pointed at it. When no
//! region is free, the oldest sealed one is reclaimed: its items are dropped from the index,
//! except (with second chance) items read since they were written, which are copied into the
//! reclaimed region first.

pub mod index;
pub mod inspect;
pub mod listing;
pub mod ondisk;

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::disk::index::{Entry, Index};
use crate::disk::listing::scan_region;
use crate::disk::ondisk::item::{self, FLAG_TOMBSTONE, HEADER_LEN};
use crate::disk::ondisk::region::RegionHeader;
use crate::disk::ondisk::summary::{self, SummaryEntry};
use crate::disk::ondisk::superblock::{foreign_signature, Superblock, FORMAT_VERSION};
use crate::error::{Result, StorageError};
use crate::io::aligned::AlignedBuf;
use crate::io::device::{Device, DeviceKind};
use crate::io::engine::{self, Done, EngineKind, EngineOptions, IoEngine, IoFuture};
use crate::key::key_hash;

/// Where region 0 starts: the superblock's block, rounded up so regions are MiB-aligned.
pub const DATA_OFFSET: u64 = 1 << 20;

/// What happens to the items of a region that is reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// All are dropped (plain region FIFO).
    Fifo,
    /// Items read since they were written are copied forward once (up to half a region).
    #[default]
    SecondChance,
}

/// How to open the disk store.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// A regular file (created and preallocated) or a block device.
    pub path: PathBuf,
    /// Size of a regular file; a block device uses its own size.
    pub size: u64,
    /// Bytes per region (a multiple of the block size, default 16 MiB).
    pub region_size: u64,
    /// Which io engine runs.
    pub engine: EngineKind,
    /// Engine tuning.
    pub engine_options: EngineOptions,
    /// Format even when the device holds other data or a cache of another geometry.
    pub overwrite: bool,
    /// Reclaim policy.
    pub eviction: EvictionPolicy,
}

impl DiskConfig {
    /// Defaults for a file at `path` of `size` bytes.
    pub fn new(path: impl Into<PathBuf>, size: u64) -> Self {
        DiskConfig {
            path: path.into(),
            size,
            region_size: 16 << 20,
            engine: EngineKind::Auto,
            engine_options: EngineOptions::default(),
            overwrite: false,
            eviction: EvictionPolicy::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    insert_bytes: AtomicU64,
    checksum_failures: AtomicU64,
    io_errors: AtomicU64,
    evicted_regions: AtomicU64,
    evicted_items: AtomicU64,
    reinserted_items: AtomicU64,
    rejected_busy: AtomicU64,
}

/// A snapshot of the disk store's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Reads that returned a value.
    pub hits: u64,
    /// Reads that found nothing (or nothing intact).
    pub misses: u64,
    /// Items written.
    pub inserts: u64,
    /// Value bytes written.
    pub insert_bytes: u64,
    /// Reads whose checksum did not match: served as misses.
    pub checksum_failures: u64,
    /// Failed device reads or writes.
    pub io_errors: u64,
    /// Regions reclaimed.
    pub evicted_regions: u64,
    /// Items dropped with reclaimed regions.
    pub evicted_items: u64,
    /// Items given a second chance (copied forward) when their region was reclaimed.
    pub reinserted_items: u64,
    /// Inserts refused because no region could be reclaimed.
    pub rejected_busy: u64,
    /// Items currently indexed.
    pub items: u64,
    /// Heap bytes of the index.
    pub index_bytes: u64,
    /// Regions on the device.
    pub regions: u32,
    /// Bytes per region.
    pub region_size: u64,
    /// Items found at start-up.
    pub recovered_items: u64,
    /// Milliseconds start-up recovery took.
    pub recovery_ms: u64,
    /// Whether the previous run ended with a clean shutdown.
    pub last_shutdown_clean: bool,
}

/// The region being filled.
struct Active {
    region: u32,
    next_block: u32,
    open_seq: u64,
    entries: Vec<SummaryEntry>,
}

/// What is known of a sealed region without reading it.
#[derive(Debug, Clone, Copy)]
struct Sealed {
    open_seq: u64,
    summary: Option<(u32, u32)>,
}

/// Which regions are free, filling or sealed.
struct Allocator {
    active: Option<Active>,
    free: VecDeque<u32>,
    /// Sealed regions, oldest first: the reclaim order.
    sealed: VecDeque<(u32, Sealed)>,
}

/// An item copied forward when its region is reclaimed.
struct HotItem {
    hash: u64,
    image: AlignedBuf,
    len: usize,
    version: u64,
}

/// The raw-disk slab store.
pub struct DiskStore {
    engine: Arc<dyn IoEngine>,
    file: std::fs::File,
    path: PathBuf,
    block: usize,
    region_size: u64,
    region_count: u32,
    superblock: Superblock,
    index: Index,
    /// Writes reserved but not finished, per region: a region with any is never reclaimed.
    pending: Arc<Vec<AtomicU32>>,
    /// Keys removed lately, with the sequence at removal: an insert that was already in flight
    /// then (an older version) must not bring the key back.
    removed: parking_lot::Mutex<RecentRemovals>,
    // A tokio mutex: sealing and reclaiming do IO while holding it (once per region).
    alloc: tokio::sync::Mutex<Allocator>,
    seq: AtomicU64,
    counters: Counters,
    direct: bool,
    kind: DeviceKind,
    eviction: EvictionPolicy,
    recovered_items: u64,
    recovery_ms: u64,
    closed: AtomicBool,
}

impl DiskStore {
    /// Opens the device described by `cfg`: recovers a cache of the same geometry, formats a
    /// blank device (or any device when `overwrite` is set), refuses anything else untouched.
    pub async fn open(cfg: &DiskConfig) -> Result<DiskStore> {
        let started = Instant::now();
        let dev = Device::open(&cfg.path, cfg.size)?;
        let block = dev.block_size;
        let wanted = geometry(cfg, &dev)?;
        let region_count = wanted.region_count;
        let (sb, formatted) = claim_device(&dev, wanted, cfg.overwrite)?;
        let file = Arc::new(
            dev.file
                .try_clone()
                .map_err(|e| StorageError::io(&dev.path, e))?,
        );
        let engine = engine::start(cfg.engine, file, cfg.engine_options).map_err(|(name, e)| {
            StorageError::EngineUnavailable {
                engine: name,
                reason: e.to_string(),
            }
        })?;
        let mut store = DiskStore {
            engine,
            file: dev.file,
            path: dev.path,
            block,
            region_size: cfg.region_size,
            region_count,
            superblock: sb,
            index: Index::default(),
            pending: Arc::new((0..region_count).map(|_| AtomicU32::new(0)).collect()),
            removed: parking_lot::Mutex::new(RecentRemovals::default()),
            alloc: tokio::sync::Mutex::new(Allocator {
                active: None,
                free: (0..region_count).collect(),
                sealed: VecDeque::new(),
            }),
            seq: AtomicU64::new(1),
            counters: Counters::default(),
            direct: dev.direct,
            kind: dev.kind,
            eviction: cfg.eviction,
            recovered_items: 0,
            recovery_ms: 0,
            closed: AtomicBool::new(false),
        };
        if !formatted {
            store.recover().await?;
        }
        // Until a clean close says otherwise, the next start must assume a crash.
        let mut sb = store.superblock.clone();
        sb.clean_shutdown = 0;
        store.write_superblock(&sb)?;
        store.recovery_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            path = %store.path.display(),
            engine = store.engine.name(),
            direct = store.direct,
            regions = region_count,
            region_size = cfg.region_size,
            recovered_items = store.recovered_items,
            last_shutdown_clean = store.superblock.clean_shutdown == 1,
            ms = store.recovery_ms,
            "disk store open"
        );
        Ok(store)
    }

    fn write_superblock(&self, sb: &Superblock) -> Result<()> {
        write_superblock(&self.file, &self.path, self.block, sb)
    }

    /// Rebuilds the index and the allocator from region headers, summaries and scans.
    async fn recover(&mut self) -> Result<()> {
        let block = self.block;
        // Reads are submitted when created, so issuing them all before awaiting overlaps them.
        let reads: Vec<_> = (0..self.region_count)
            .map(|r| {
                self.engine
                    .read(self.region_offset(r), AlignedBuf::recycled(block, block))
            })
            .collect();
        let mut live = Vec::new();
        for (r, fut) in reads.into_iter().enumerate() {
            let (res, buf) = fut.await;
            res.map_err(|e| StorageError::io(&self.path, e))?;
            if let Some(h) = RegionHeader::decode(buf.as_slice()) {
                if h.uuid == self.superblock.uuid && h.region == r as u32 {
                    live.push(h);
                }
            }
        }
        live.sort_by_key(|h| h.open_seq);
        let summaries: Vec<_> = live
            .iter()
            .map(|h| h.summary.map(|at| self.read_summary(h.region, at)))
            .collect();
        let mut max_seq = 0u64;
        let mut alloc = Allocator {
            active: None,
            free: VecDeque::new(),
            sealed: VecDeque::new(),
        };
        let mut in_use = vec![false; self.region_count as usize];
        for (h, summary) in live.iter().zip(summaries) {
            let listed = match summary {
                Some(fut) => {
                    let (res, buf) = fut.await;
                    res.ok()
                        .and_then(|_| summary::decode(buf.as_slice(), h.open_seq))
                }
                None => None,
            };
            let entries = match listed {
                Some(e) => e,
                None => self.scan(h.region, h.open_seq).await?,
            };
            max_seq = max_seq.max(h.open_seq);
            for e in &entries {
                max_seq = max_seq.max(e.seq);
                self.apply(h.region, e);
            }
            in_use[h.region as usize] = true;
            alloc.sealed.push_back((
                h.region,
                Sealed {
                    open_seq: h.open_seq,
                    summary: h.summary,
                },
            ));
        }
        alloc.free = (0..self.region_count)
            .filter(|&r| !in_use[r as usize])
            .collect();
        self.alloc = tokio::sync::Mutex::new(alloc);
        self.seq = AtomicU64::new(max_seq + 1);
        self.recovered_items = self.index.len() as u64;
        Ok(())
    }

    /// Applies one recovered item or tombstone to the index (entries arrive in sequence order).
    fn apply(&self, region: u32, e: &SummaryEntry) {
        if e.tombstone {
            if self
                .index
                .get(e.hash)
                .is_some_and(|cur| cur.version < e.version)
            {
                self.index.remove(e.hash);
            }
        } else {
            self.index.insert_if_newer(
                e.hash,
                Entry::new(self.abs_block(region, e.block), e.blocks, e.version),
            );
        }
    }

    /// Reads a whole region and finds its intact items.
    async fn scan(&self, region: u32, open_seq: u64) -> Result<Vec<SummaryEntry>> {
        let buf = AlignedBuf::zeroed(self.region_size as usize, self.block);
        let (res, buf) = self.engine.read(self.region_offset(region), buf).await;
        res.map_err(|e| StorageError::io(&self.path, e))?;
        Ok(scan_region(buf.as_slice(), self.block, open_seq))
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name of the io engine in use.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Whether IO bypasses the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// File or block device.
    pub fn device_kind(&self) -> DeviceKind {
        self.kind
    }

    /// Largest value storable under a key of `key_len` bytes.
    pub fn max_value_len(&self, key_len: usize) -> usize {
        // Half a region, so that a region always holds a large item plus its summary.
        (self.region_size as usize / 2).saturating_sub(HEADER_LEN + key_len)
    }

    fn region_offset(&self, region: u32) -> u64 {
        DATA_OFFSET + region as u64 * self.region_size
    }

    /// Device offset of `block` of `region`.
    fn block_offset(&self, region: u32, block: u32) -> u64 {
        self.region_offset(region) + block as u64 * self.block as u64
    }

    /// Reads a region's summary of `n` blocks at block `b`; issued at once, so several overlap.
    fn read_summary(&self, region: u32, (b, n): (u32, u32)) -> IoFuture {
        let buf = AlignedBuf::zeroed(n as usize * self.block, self.block);
        self.engine.read(self.block_offset(region, b), buf)
    }

    /// Block number counted from region 0 (what the index stores).
    fn abs_block(&self, region: u32, block: u32) -> u32 {
        region * self.blocks_per_region() + block
    }

    fn blocks_per_region(&self) -> u32 {
        (self.region_size / self.block as u64) as u32
    }

    fn summary_blocks(&self, count: usize) -> u32 {
        summary::encoded_len(count).div_ceil(self.block) as u32
    }

    /// True when `key` is indexed (its bytes may still fail their checksum on read).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.index.get(key_hash(key)).is_some()
    }

    /// Reads the value of `key`; a missing, evicted or corrupt item is `None`.
    pub async fn get(&self, key: &[u8]) -> Option<Bytes> {
        let found = self.read_item(key).await;
        let c = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        found
    }

    async fn read_item(&self, key: &[u8]) -> Option<Bytes> {
        let hash = key_hash(key);
        let entry = self.index.get(hash)?;
        let offset = DATA_OFFSET + entry.block as u64 * self.block as u64;
        let buf = AlignedBuf::recycled(entry.blocks() as usize * self.block, self.block);
        let (res, buf) = self.engine.read(offset, buf).await;
        if let Err(e) = res {
            self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %self.path.display(), offset, error = %e, "disk read failed");
            return None;
        }
        let Some(h) = item::verify(buf.as_slice()) else {
            // Corrupt on the device (or torn by a crash): never serve these bytes.
            if self.index.remove_if(hash, &entry).is_some() {
                self.counters
                    .checksum_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %self.path.display(), block = entry.block, "item failed its checksum; dropped");
            }
            return None;
        };
        if h.version != entry.version || h.is_tombstone() || item::key_of(buf.as_slice(), &h) != key
        {
            // The region was reclaimed under this read, or another key shares the hash.
            return None;
        }
        // The hot bit is only set, and only second chance reads it: skip the shard lock otherwise.
        if self.eviction == EvictionPolicy::SecondChance && !entry.is_hot() {
            self.index.mark_hot(hash, &entry);
        }
        let start = HEADER_LEN + h.key_len as usize;
        let end = start + h.value_len as usize;
        Some(Bytes::from_owner(buf).slice(start..end))
    }

    /// Writes `value` under `key`; it becomes readable once the device has it.
    pub async fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert_parts(key, &[value]).await.map(|_| ())
    }

    /// Writes a value given in consecutive parts; returns the value as written (a view of the
    /// write buffer, so a caller can keep it in memory without another copy).
    pub async fn insert_parts(&self, key: &[u8], parts: &[&[u8]]) -> Result<Bytes> {
        let value_len: usize = parts.iter().map(|p| p.len()).sum();
        let max = self.max_value_len(key.len());
        if value_len > max || key.len() > u16::MAX as usize {
            return Err(StorageError::TooLarge {
                size: value_len,
                max,
            });
        }
        let hash = key_hash(key);
        let blocks = (item::padded_len(key.len(), value_len, self.block) / self.block) as u32;
        let reserved = {
            let mut a = self.alloc.lock().await;
            self.reserve(&mut a, blocks, hash, false).await
        };
        let (region, block, seq) = reserved.inspect_err(|e| {
            if matches!(e, StorageError::Busy) {
                self.counters.rejected_busy.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        let buf = item::encode(key, parts, seq, 0, self.block);
        let release = Some(self.release(region));
        let buf = self.write_at(region, block, buf, release).await?;
        let at = self.abs_block(region, block);
        if !self.removed.lock().removed_after(hash, seq) {
            self.index
                .insert_if_newer(hash, Entry::new(at, blocks, seq));
        }
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        self.counters
            .insert_bytes
            .fetch_add(value_len as u64, Ordering::Relaxed);
        let start = HEADER_LEN + key.len();
        Ok(Bytes::from_owner(buf).slice(start..start + value_len))
    }

    /// The hook that ends a reserved write: the region's writes-in-flight count drops once the
    /// device is done with it, even if the inserting task was cancelled meanwhile.
    fn release(&self, region: u32) -> Done {
        let pending = self.pending.clone();
        Box::new(move || {
            pending[region as usize].fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Forgets `key`, durably: a removal record is written so a restart does not bring it back.
    pub async fn remove(&self, key: &[u8]) -> Result<()> {
        let hash = key_hash(key);
        // Under the allocator lock, so a concurrent reclaim cannot copy the item forward after
        // it was removed here.
        let mut a = self.alloc.lock().await;
        self.removed
            .lock()
            .record(hash, self.seq.load(Ordering::Relaxed));
        if self.index.remove(hash).is_none() {
            return Ok(());
        }
        let blocks = (item::padded_len(key.len(), 0, self.block) / self.block) as u32;
        let (region, block, seq) = self.reserve(&mut a, blocks, hash, true).await?;
        drop(a);
        let buf = item::encode(key, &[], seq, FLAG_TOMBSTONE, self.block);
        let release = Some(self.release(region));
        self.write_at(region, block, buf, release).await.map(drop)
    }

    /// Writes `buf` at `block` of `region`, counting failures; hands the buffer back.
    async fn write_at(
        &self,
        region: u32,
        block: u32,
        buf: AlignedBuf,
        done: Option<Done>,
    ) -> Result<AlignedBuf> {
        let (res, buf) = self
            .engine
            .write(self.block_offset(region, block), buf, done)
            .await;
        match res {
            Ok(()) => Ok(buf),
            Err(e) => {
                self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
                Err(StorageError::io(&self.path, e))
            }
        }
    }

    /// Reserves `blocks` blocks in the active region, sealing and opening regions as needed.
    async fn reserve(
        &self,
        a: &mut Allocator,
        blocks: u32,
        hash: u64,
        tombstone: bool,
    ) -> Result<(u32, u32, u64)> {
        let per_region = self.blocks_per_region();
        loop {
            if let Some(act) = a.active.as_mut() {
                let after = self.summary_blocks(act.entries.len() + 1);
                if act.next_block + blocks + after <= per_region {
                    let (region, block) = (act.region, act.next_block);
                    act.next_block += blocks;
                    let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                    act.entries.push(SummaryEntry {
                        hash,
                        block,
                        blocks,
                        tombstone,
                        seq,
                        version: seq,
                    });
                    self.pending[region as usize].fetch_add(1, Ordering::AcqRel);
                    return Ok((region, block, seq));
                }
            }
            self.seal_active(a).await;
            let (region, hot) = match a.free.pop_front() {
                Some(r) => (r, Vec::new()),
                None => self.reclaim(a).await?,
            };
            match self.open_region(region, hot).await {
                Ok(act) => a.active = Some(act),
                Err(e) => {
                    // Nothing of the new generation was written: the region is free again.
                    a.free.push_back(region);
                    return Err(e);
                }
            }
        }
    }

    /// Seals the active region, if any, and lists it for reclaim.
    async fn seal_active(&self, a: &mut Allocator) {
        let Some(full) = a.active.take() else { return };
        // Listed as sealed before its summary is written: if that is interrupted, the region
        // stays reclaimable (and recoverable by a scan), never lost.
        a.sealed.push_back((
            full.region,
            Sealed {
                open_seq: full.open_seq,
                summary: None,
            },
        ));
        let sealed = self.seal(&full).await;
        // Still the last entry: nothing else touches the list while the allocator is locked.
        if let Some(slot) = a.sealed.back_mut() {
            slot.1 = sealed;
        }
    }

    /// Writes the summary and the sealed header of a full region.
    async fn seal(&self, act: &Active) -> Sealed {
        let n = self.summary_blocks(act.entries.len());
        let mut buf = AlignedBuf::zeroed(n as usize * self.block, self.block);
        summary::encode(&act.entries, act.open_seq, buf.as_mut_slice());
        let mut sealed = Sealed {
            open_seq: act.open_seq,
            summary: None,
        };
        // A region whose summary cannot be written is still recoverable by a scan.
        if self
            .write_at(act.region, act.next_block, buf, None)
            .await
            .is_ok()
        {
            let header = RegionHeader {
                region: act.region,
                open_seq: act.open_seq,
                uuid: self.superblock.uuid,
                summary: Some((act.next_block, n)),
            };
            if self.write_header(&header).await.is_ok() {
                sealed.summary = header.summary;
            }
        }
        sealed
    }

    async fn write_header(&self, h: &RegionHeader) -> Result<()> {
        let mut buf = AlignedBuf::zeroed(self.block, self.block);
        h.encode(buf.as_mut_slice());
        self.write_at(h.region, 0, buf, None).await.map(drop)
    }

    /// Starts a new generation of `region`, copying `hot` items into it first.
    async fn open_region(&self, region: u32, hot: Vec<HotItem>) -> Result<Active> {
        let open_seq = self.seq.load(Ordering::Relaxed);
        self.write_header(&RegionHeader {
            region,
            open_seq,
            uuid: self.superblock.uuid,
            summary: None,
        })
        .await?;
        let mut act = Active {
            region,
            next_block: 1,
            open_seq,
            entries: Vec::with_capacity(hot.len()),
        };
        if hot.is_empty() {
            return Ok(act);
        }
        let total: usize = hot.iter().map(|h| h.len).sum();
        let mut batch = AlignedBuf::zeroed(total, self.block);
        let mut placed = Vec::with_capacity(hot.len());
        let mut off = 0;
        for h in &hot {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let dst = &mut batch.as_mut_slice()[off..off + h.len];
            dst.copy_from_slice(&h.image.as_slice()[..h.len]);
            item::set_seq(dst, seq, h.version);
            let blocks = (h.len / self.block) as u32;
            let block = act.next_block + (off / self.block) as u32;
            act.entries.push(SummaryEntry {
                hash: h.hash,
                block,
                blocks,
                tombstone: false,
                seq,
                version: h.version,
            });
            placed.push(Entry::new(self.abs_block(region, block), blocks, h.version));
            off += h.len;
        }
        if self
            .write_at(region, act.next_block, batch, None)
            .await
            .is_ok()
        {
            for (h, e) in hot.iter().zip(placed) {
                // A newer version inserted meanwhile wins over this copy.
                if self.index.insert_if_newer(h.hash, e) {
                    self.counters
                        .reinserted_items
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        act.next_block += (total / self.block) as u32;
        Ok(act)
    }

    /// Reclaims the oldest sealed region with no writes in flight; returns it and the items
    /// that earn a second chance.
    async fn reclaim(&self, a: &mut Allocator) -> Result<(u32, Vec<HotItem>)> {
        let pos = a
            .sealed
            .iter()
            .position(|(r, _)| self.pending[*r as usize].load(Ordering::Acquire) == 0)
            .ok_or(StorageError::Busy)?;
        let (region, sealed) = a.sealed.remove(pos).ok_or(StorageError::Busy)?;
        let listed = match sealed.summary {
            Some(at) => {
                let (res, buf) = self.read_summary(region, at).await;
                res.ok()
                    .and_then(|_| summary::decode(buf.as_slice(), sealed.open_seq))
            }
            None => None,
        };
        let entries = match listed {
            Some(e) => e,
            None => match self.scan(region, sealed.open_seq).await {
                Ok(e) => e,
                Err(e) => {
                    // Still holding its items: back in line, at the front.
                    a.sealed.push_front((region, sealed));
                    return Err(e);
                }
            },
        };
        let cap = self.blocks_per_region() / 2;
        let mut hot_blocks = 0;
        let mut hot = Vec::new();
        let mut dropped = 0u64;
        for e in entries.iter().filter(|e| !e.tombstone) {
            let here = Entry::new(self.abs_block(region, e.block), e.blocks, e.version);
            let Some(cur) = self.index.remove_if(e.hash, &here) else {
                continue;
            };
            let second_chance = self.eviction == EvictionPolicy::SecondChance
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
                let buf = AlignedBuf::recycled(e.blocks as usize * self.block, self.block);
                (e, self.engine.read(self.block_offset(region, e.block), buf))
            })
            .collect();
        let mut items = Vec::with_capacity(reads.len());
        for (e, fut) in reads {
            let (res, image) = fut.await;
            let intact =
                res.is_ok() && item::verify(image.as_slice()).is_some_and(|h| h.seq == e.seq);
            if intact {
                items.push(HotItem {
                    hash: e.hash,
                    len: e.blocks as usize * self.block,
                    image,
                    version: e.version,
                });
            } else {
                dropped += 1;
            }
        }
        self.counters
            .evicted_regions
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .evicted_items
            .fetch_add(dropped, Ordering::Relaxed);
        tracing::debug!(
            region,
            dropped,
            second_chance = items.len(),
            "region reclaimed"
        );
        Ok((region, items))
    }

    /// Seals the active region and records a clean shutdown, so the next start reads only
    /// summaries. Idempotent; the store stays usable for reads.
    pub async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut a = self.alloc.lock().await;
        if let Some(region) = a.active.as_ref().map(|act| act.region) {
            // Wait (a little) for writes in flight, so the summary describes landed items.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            // Their completions may have no one left to deliver them (a serving runtime that
            // shut down first): deliver them from here.
            self.engine.complete_finished();
            while self.pending[region as usize].load(Ordering::Acquire) > 0
                && Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                self.engine.complete_finished();
            }
        }
        self.seal_active(&mut a).await;
        let mut sb = self.superblock.clone();
        sb.clean_shutdown = 1;
        self.write_superblock(&sb)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DiskStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DiskStats {
            hits: l(&c.hits),
            misses: l(&c.misses),
            inserts: l(&c.inserts),
            insert_bytes: l(&c.insert_bytes),
            checksum_failures: l(&c.checksum_failures),
            io_errors: l(&c.io_errors),
            evicted_regions: l(&c.evicted_regions),
            evicted_items: l(&c.evicted_items),
            reinserted_items: l(&c.reinserted_items),
            rejected_busy: l(&c.rejected_busy),
            items: self.index.len() as u64,
            index_bytes: self.index.memory_bytes() as u64,
            regions: self.region_count,
            region_size: self.region_size,
            recovered_items: self.recovered_items,
            recovery_ms: self.recovery_ms,
            last_shutdown_clean: self.superblock.clean_shutdown == 1,
        }
    }
}

/// The last few thousand removals (hash → sequence at removal); older ones cannot race an
/// insert any more.
#[derive(Default)]
struct RecentRemovals {
    by_hash: std::collections::HashMap<u64, u64>,
    order: VecDeque<u64>,
}

impl RecentRemovals {
    const KEEP: usize = 4096;

    fn record(&mut self, hash: u64, seq: u64) {
        if self.by_hash.insert(hash, seq).is_none() {
            self.order.push_back(hash);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.by_hash.remove(&old);
            }
        }
    }

    /// True when `hash` was removed after an item of version `seq` was reserved.
    fn removed_after(&self, hash: u64, seq: u64) -> bool {
        self.by_hash.get(&hash).is_some_and(|&at| at > seq)
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Decides whether the device may be used (blank, ours, or `overwrite`). Returns the superblock
/// in force and whether it is a new format, which the caller writes.
fn claim_device(dev: &Device, wanted: Superblock, overwrite: bool) -> Result<(Superblock, bool)> {
    let head_len = DATA_OFFSET.min(dev.size) as usize;
    let mut head = AlignedBuf::zeroed(head_len, dev.block_size);
    dev.file
        .read_exact_at(head.as_mut_slice(), 0)
        .map_err(|e| StorageError::io(&dev.path, e))?;
    let same_geometry = |sb: &Superblock| {
        sb.version == wanted.version
            && sb.block_size == wanted.block_size
            && sb.device_size == wanted.device_size
            && sb.data_offset == wanted.data_offset
            && sb.region_count == wanted.region_count
            && sb.region_size == wanted.region_size
    };
    match Superblock::decode(head.as_slice(), &dev.path) {
        Ok(Some(sb)) if same_geometry(&sb) => return Ok((sb, false)),
        Ok(Some(sb)) if !overwrite => {
            return Err(StorageError::GeometryMismatch {
                path: dev.path.clone(),
                found: format!("{}; configured {}", sb.describe(), wanted.describe()),
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
    Ok((wanted, true))
}

/// Formats `path` as an empty cache of this geometry, whatever it holds (the operator asked).
pub fn format(cfg: &DiskConfig) -> Result<Superblock> {
    let dev = Device::open(&cfg.path, cfg.size)?;
    let sb = geometry(cfg, &dev)?;
    // A new uuid makes every region of an earlier cache unreadable.
    write_superblock(&dev.file, &dev.path, dev.block_size, &sb)?;
    Ok(sb)
}

/// The superblock of a new cache of the configured geometry on `dev`; refuses geometries the
/// store cannot address.
fn geometry(cfg: &DiskConfig, dev: &Device) -> Result<Superblock> {
    let block = dev.block_size;
    if cfg.region_size < (1 << 20) || !cfg.region_size.is_multiple_of(block as u64) {
        return Err(StorageError::Config(format!(
            "region size {} must be at least 1MiB and a multiple of {block}",
            cfg.region_size
        )));
    }
    let region_count = dev.size.saturating_sub(DATA_OFFSET) / cfg.region_size;
    if region_count < 2 {
        return Err(StorageError::Config(format!(
            "device of {} bytes holds fewer than 2 regions of {} bytes",
            dev.size, cfg.region_size
        )));
    }
    let region_count =
        u32::try_from(region_count).map_err(|_| StorageError::Config("too many regions".into()))?;
    if region_count as u64 * cfg.region_size / block as u64 > u32::MAX as u64 {
        return Err(StorageError::Config(format!(
            "device of {} bytes is larger than the {} TiB one store addresses; use a partition",
            dev.size,
            (u32::MAX as u64 * block as u64) >> 40
        )));
    }
    Ok(Superblock {
        version: FORMAT_VERSION,
        block_size: block as u32,
        device_size: dev.size,
        data_offset: DATA_OFFSET,
        region_count,
        region_size: cfg.region_size,
        uuid: rand::random(),
        created: now_secs(),
        clean_shutdown: 0,
    })
}

/// Writes `sb` as the device's superblock, durably.
fn write_superblock(
    file: &std::fs::File,
    path: &Path,
    block: usize,
    sb: &Superblock,
) -> Result<()> {
    let mut buf = AlignedBuf::zeroed(block, block);
    sb.encode(buf.as_mut_slice());
    let io = |e| StorageError::io(path, e);
    file.write_all_at(buf.as_slice(), 0).map_err(io)?;
    file.sync_data().map_err(io)
}
