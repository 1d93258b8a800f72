//! The L2 slab store: items appended into regions of one device, found through an in-memory
//! index. [`DiskStore`] is its API; the files below are its parts, each one concept:
//!
//! - [`config`]: [`DiskConfig`] and the [`EvictionPolicy`];
//! - [`claim`]: formatting a blank device, refusing foreign data, [`format`];
//! - [`geometry`]: region and block addresses;
//! - [`slab`]: the state every part shares (device IO by region, the index, the sequence);
//! - [`health`]: failures per region, and regions that keep failing taken out of use;
//! - [`allocator`]: free, filling and sealed regions; reserving space; sealing;
//! - [`pack`]: items packed into whole write units, each starting where the one before ended;
//! - [`backlog`]: bytes of writes in flight, and inserts shed past its budget;
//! - [`reclaim`]: emptying the oldest sealed region, with second chance;
//! - [`listing`]: what a region holds (its summary, else a scan), for recovery, reclaim, inspect;
//! - [`recover`]: rebuilding the index at start-up;
//! - [`removals`]: removals and the inserts in flight they race, so a late insert does not
//!   bring a key back;
//! - [`index`]: key hash → item location, in open-addressing tables of bounded slack;
//! - [`ondisk`]: the byte formats (superblock, region header, item, summary) and their codec;
//! - [`stats`]: counters and [`DiskStats`];
//! - [`inspect`]: a read-only report of a device.

mod allocator;
mod backlog;
mod claim;
mod config;
mod geometry;
mod health;
mod index;
mod inspect;
mod listing;
mod ondisk;
mod pack;
mod reclaim;
mod recover;
mod removals;
mod slab;
mod stats;

/// The formats, the geometry checks and the region scan, for the crate's fuzz entry points
/// (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing {
    pub(crate) use super::geometry::{Geometry, DATA_OFFSET};
    pub(crate) use super::index::Entry;
    pub(crate) use super::listing::scan_region;
    pub(crate) use super::ondisk::item::{self, ItemHeader};
    pub(crate) use super::ondisk::region::RegionHeader;
    pub(crate) use super::ondisk::summary::{self, SummaryEntry};
    pub(crate) use super::ondisk::MAX_SEQ;
}

pub use claim::format;
pub use config::{DiskConfig, EvictionPolicy, DEFAULT_WRITE_QUEUE};
pub use geometry::MAX_REGION_SIZE;
pub use inspect::{inspect, InspectReport};
pub use ondisk::item::HEADER_LEN as ITEM_HEADER_LEN;
pub use ondisk::superblock::Superblock;
pub use stats::DiskStats;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use allocator::{Allocator, Reservation};
use backlog::Backlog;
pub use backlog::Shed;
use claim::{claim_device, new_superblock, now_secs, write_superblock, Claim};
use geometry::Geometry;
use health::{Health, Way};
use index::{Entry, Index};
pub(crate) use ondisk::item::ItemImage;
use ondisk::item::{self, FLAG_TOMBSTONE, HEADER_LEN};
use pack::{unit_write, Packing, PACK_MAX};
use recover::Recovered;
use removals::Removals;
use slab::{Slab, WriteClaim};
use stats::{bump, Counters};

use crate::error::{Result, StorageError};
use crate::io::aligned::AlignedBuf;
use crate::io::device::{Device, DeviceKind};
use crate::io::engine;
use crate::key::key_hash;

/// The raw-disk slab store.
pub struct DiskStore {
    slab: Slab,
    file: std::fs::File,
    superblock: Superblock,
    /// Removals, with the sequence at removal, and the inserts in flight: an insert that was
    /// already in flight at a removal of its key (an older version) must not bring the key back.
    /// A parking_lot mutex: held for a map update (and one index insert), never an await.
    removed: parking_lot::Mutex<Removals>,
    // A tokio mutex: sealing and reclaiming do IO while holding it (once per region).
    alloc: tokio::sync::Mutex<Allocator>,
    /// Inserts admitted and not yet landed; past its budget, inserts are shed.
    backlog: Backlog,
    /// Regions in use when last counted (stats never wait for the allocator).
    regions_in_use: std::sync::atomic::AtomicU64,
    direct: bool,
    kind: DeviceKind,
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
        let wanted = new_superblock(cfg, &dev)?;
        let claim = claim_device(&dev, wanted, cfg.overwrite, cfg.region_fit)?;
        let (Claim::Recover(sb) | Claim::Format(sb)) = &claim;
        let geo = Geometry::checked(sb, &dev.path)?;
        // Keys are short (a URL's key and a prefix); a kilobyte covers any the caller makes.
        if (geo.max_value_len(1024) as u64) < cfg.largest_value {
            return Err(StorageError::RegionsTooSmall {
                path: dev.path.clone(),
                region_size: geo.region_size,
                value: cfg.largest_value,
            });
        }
        let file = Arc::new(
            dev.file
                .try_clone()
                .map_err(|e| StorageError::io(&dev.path, e))?,
        );
        let engine = engine::start(cfg.engine, file, cfg.engine_options)?;
        let mut store = DiskStore {
            slab: Slab {
                engine,
                path: dev.path,
                geo,
                uuid: sb.uuid,
                index: Index::default(),
                seq: AtomicU64::new(1),
                pending: Arc::new((0..geo.region_count).map(|_| AtomicU32::new(0)).collect()),
                counters: Counters::default(),
                eviction: cfg.eviction,
                health: Health::new(geo.region_count),
            },
            file: dev.file,
            superblock: sb.clone(),
            removed: parking_lot::Mutex::new(Removals::default()),
            alloc: tokio::sync::Mutex::new(Allocator::empty(geo.region_count)),
            backlog: Backlog::new(cfg.write_queue),
            regions_in_use: Default::default(),
            direct: dev.direct,
            kind: dev.kind,
            recovered_items: 0,
            recovery_ms: 0,
            closed: AtomicBool::new(false),
        };
        if let Claim::Recover(_) = claim {
            match recover::recover(&store.slab).await? {
                Recovered::InUse(alloc) => {
                    store.alloc = tokio::sync::Mutex::new(alloc);
                    store.recovered_items = store.slab.index.len() as u64;
                }
                Recovered::Unbelievable { max_seq } => {
                    // Our own cache, but its record cannot be believed. It is a cache: it
                    // starts anew under a new identity, so nothing written under the old one
                    // is read again.
                    tracing::error!(
                        path = %store.slab.path.display(),
                        max_seq,
                        "cache device records sequence numbers no store writes; starting it empty"
                    );
                    // The geometry stays the one the device records (the store lays data out
                    // by it); only the identity is new.
                    let fresh = Superblock {
                        uuid: rand::random(),
                        created: now_secs(),
                        ..store.superblock.clone()
                    };
                    store.slab.uuid = fresh.uuid;
                    store.superblock = fresh;
                }
            }
        }
        // Until a clean close says otherwise, the next start must assume a crash.
        let mut sb = store.superblock.clone();
        sb.clean_shutdown = 0;
        store.write_superblock(&sb)?;
        store.recovery_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            path = %store.slab.path.display(),
            engine = store.slab.engine.name(),
            direct = store.direct,
            regions = geo.region_count,
            region_size = geo.region_size,
            recovered_items = store.recovered_items,
            last_shutdown_clean = store.superblock.clean_shutdown == 1,
            ms = store.recovery_ms,
            "disk store open"
        );
        Ok(store)
    }

    fn write_superblock(&self, sb: &Superblock) -> Result<()> {
        write_superblock(&self.file, &self.slab.path, self.slab.geo.block, sb)
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.slab.path
    }

    /// Name of the io engine in use.
    pub fn engine_name(&self) -> &'static str {
        self.slab.engine.name()
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
        self.slab.geo.max_value_len(key_len)
    }

    /// True when `key` is indexed (its bytes may still fail their checksum on read).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.slab.index.get(key_hash(key)).is_some()
    }

    /// Counts `key` as read, as [`DiskStore::get`] would, without reading it: its value was
    /// served from a copy in memory, and second chance should still keep it on the device.
    pub fn touch(&self, key: &[u8]) {
        if self.slab.eviction == EvictionPolicy::SecondChance {
            self.slab.index.touch(key_hash(key));
        }
    }

    /// Reads the value of `key`; a missing, evicted or corrupt item is `None`.
    pub async fn get(&self, key: &[u8]) -> Option<Bytes> {
        let found = self.read_item(key).await;
        let c = &self.slab.counters;
        bump(if found.is_some() { &c.hits } else { &c.misses }, 1);
        found
    }

    async fn read_item(&self, key: &[u8]) -> Option<Bytes> {
        let (slab, geo) = (&self.slab, self.slab.geo);
        let hash = key_hash(key);
        let entry = slab.index.get(hash)?;
        let offset = geo.abs_offset(entry.block);
        let buf = AlignedBuf::recycled(entry.blocks() as usize * geo.block, geo.block);
        let region = geo.region_of(entry.block);
        let (res, buf) = slab.engine.read(offset, buf).await;
        if let Err(e) = res {
            let e = slab.io_error(e);
            slab.health.failed(region, Way::Read, &slab.counters);
            // Dropped: the next request fetches it again and stores it elsewhere, rather than
            // reading a bad place of the device again.
            slab.index.remove_if(hash, &entry);
            tracing::warn!(offset, region, error = %e, "disk read failed; item dropped");
            return None;
        }
        let Some(h) = item::verify(buf.as_slice()) else {
            // Corrupt on the device (or torn by a crash): never serve these bytes.
            if slab.index.remove_if(hash, &entry).is_some() {
                bump(&slab.counters.checksum_failures, 1);
                slab.health.failed(region, Way::Read, &slab.counters);
                tracing::warn!(path = %slab.path.display(), block = entry.block, region, "item failed its checksum; dropped");
            }
            return None;
        };
        slab.health.succeeded(region, Way::Read);
        if h.version != entry.version || h.is_tombstone() || item::key_of(buf.as_slice(), &h) != key
        {
            // The region was reclaimed under this read, or another key shares the hash.
            return None;
        }
        // The hot bit is only set, and only second chance reads it: skip the shard lock otherwise.
        if slab.eviction == EvictionPolicy::SecondChance && !entry.is_hot() {
            slab.index.mark_hot(hash, &entry);
        }
        let start = HEADER_LEN + h.key_len as usize;
        let end = start + h.value_len as usize;
        Some(Bytes::from_owner(buf).slice(start..end))
    }

    /// Writes `value` under `key`; it becomes readable once the device has it.
    pub async fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert_parts(key, &[value], Shed::Allowed)
            .await
            .map(|_| ())
    }

    /// Writes a value given in consecutive parts; returns the value as written (a view of the
    /// write buffer, so a caller can keep it in memory without another copy).
    /// Past `write_queue` bytes in flight the insert is shed ([`StorageError::Overloaded`])
    /// unless `shed` says it may not be.
    pub async fn insert_parts(&self, key: &[u8], parts: &[&[u8]], shed: Shed) -> Result<Bytes> {
        let value_len = parts.iter().map(|p| p.len()).sum();
        let mut image = self.image(key, value_len)?;
        for p in parts {
            image.append(p);
        }
        let value = image.value();
        self.insert_image(key, image, shed).await.map(|()| value)
    }

    /// An empty image of an item of `key` and a value of `value_len` bytes, for the caller to
    /// gather the value into as it arrives; [`StorageError::TooLarge`] when no region holds it.
    pub(crate) fn image(&self, key: &[u8], value_len: usize) -> Result<ItemImage> {
        let geo = self.slab.geo;
        let max = geo.max_value_len(key.len());
        if value_len > max || key.len() > u16::MAX as usize {
            return Err(StorageError::TooLarge {
                size: value_len,
                max,
            });
        }
        // Padded to whole write units: an item that starts at one is written from its image.
        Ok(ItemImage::new(key, value_len, geo.write_unit()))
    }

    /// Writes the item gathered in `image` (made by [`DiskStore::image`] for `key`); it becomes
    /// readable once the device has it. An image whose value is incomplete is refused.
    pub(crate) async fn insert_image(
        &self,
        key: &[u8],
        image: ItemImage,
        shed: Shed,
    ) -> Result<()> {
        let (slab, geo) = (&self.slab, self.slab.geo);
        if let Some(e) = image.incomplete() {
            return Err(e);
        }
        let value_len = image.value_len();
        let hash = key_hash(key);
        let blocks = geo.blocks_of(item::padded_len(key.len(), value_len, geo.block));
        // Held until the write has landed (or failed): the backlog counts it meanwhile.
        let Some(_queued) = self
            .backlog
            .admit(u64::from(blocks) * geo.block as u64, shed)
        else {
            bump(&slab.counters.shed_writes, 1);
            return Err(StorageError::Overloaded {
                queued: self.backlog.queued(),
                budget: self.backlog.budget(),
            });
        };
        let pack = blocks as usize * geo.block <= PACK_MAX;
        let reserved = {
            let mut a = self.alloc.lock().await;
            a.reserve(slab, blocks, hash, false, pack)
                .await
                .map(|(r, packing)| {
                    // In flight from its reservation on, under the allocator's lock: a removal
                    // of the key is either before (an older sequence) or sees the insert in
                    // flight.
                    (r, packing, InFlight::begin(&self.removed, r.seq, hash))
                })
        };
        let (r, packing, in_flight) = reserved.inspect_err(|e| {
            if matches!(e, StorageError::Busy) {
                bump(&slab.counters.rejected_busy, 1);
            }
        })?;
        // Held until the index entry is in: the region is not reclaimed before.
        let claim = slab.claim(r.region);
        let buf = match image.seal(r.seq) {
            Ok(buf) => buf,
            // Complete, as checked above; were it not, the reservation ends unwritten, as a
            // failed write's does.
            Err(e) => {
                self.alloc.lock().await.forget(slab, r).await;
                return Err(e);
            }
        };
        self.write_item(r, blocks, buf, &packing, &claim).await?;
        let at = geo.abs_block(r.region, r.block);
        if let Some(e) = injected_error!("disk::index_insert") {
            // Tests hold the insert here (a callback); an injected error is a lost insert.
            return Err(slab.io_error(e));
        }
        in_flight.end(|| {
            slab.index
                .insert_if_newer(hash, Entry::new(at, blocks, r.seq));
        });
        drop(claim);
        bump(&slab.counters.inserts, 1);
        bump(&slab.counters.insert_bytes, value_len as u64);
        Ok(())
    }

    /// Forgets `key`, durably: a removal record is written so a restart does not bring it back,
    /// whenever the key may be on the device (indexed, or an insert of it in flight).
    pub async fn remove(&self, key: &[u8]) -> Result<()> {
        let (slab, geo) = (&self.slab, self.slab.geo);
        let hash = key_hash(key);
        // Under the allocator lock, so a concurrent reclaim cannot copy the item forward after
        // it was removed here.
        let mut a = self.alloc.lock().await;
        let in_flight = self
            .removed
            .lock()
            .record(hash, slab.seq.load(std::sync::atomic::Ordering::Relaxed));
        // An insert in flight may land its item (and a crash come before it is indexed): the
        // removal record, of a newer sequence, is what keeps it out at recovery.
        if slab.index.remove(hash).is_none() && !in_flight {
            return Ok(());
        }
        let blocks = geo.blocks_of(item::padded_len(key.len(), 0, geo.block));
        let (r, packing) = a.reserve(slab, blocks, hash, true, false).await?;
        let claim = slab.claim(r.region);
        drop(a);
        let buf = item::encode(key, &[], r.seq, FLAG_TOMBSTONE, geo.write_unit());
        self.write_item(r, blocks, buf, &packing, &claim)
            .await
            .map(drop)
    }

    /// Writes an item image into its reservation of `blocks` blocks, in whole write units
    /// (packed as `packing` says). A write that fails is struck from its region's summary (see
    /// [`Allocator::forget`]): recovery must not index bytes that may never have landed over an
    /// older, intact version of the key. One that lands lets the next item pack onto its tail.
    /// The device's completion hook holds a clone of `claim`, so the region stays unreclaimable
    /// until the device is done with the write, whatever becomes of the caller.
    async fn write_item(
        &self,
        r: Reservation,
        blocks: u32,
        image: AlignedBuf,
        packing: &Packing,
        claim: &WriteClaim,
    ) -> Result<AlignedBuf> {
        let (at, buf) = unit_write(&self.slab.geo, r.block, blocks, image, packing);
        let written = match injected_error!("disk::item_write") {
            // Nothing reaches the device: the reservation ends with the caller's claim.
            Some(e) => Err(self.slab.io_error(e)),
            None => {
                self.slab
                    .write_at(r.region, at, buf, Some(claim.hook()))
                    .await
            }
        };
        match &written {
            Ok(_) => packing.land(),
            Err(_) => self.alloc.lock().await.forget(&self.slab, r).await,
        }
        written
    }

    /// Seals the active region and records a clean shutdown, so the next start reads only
    /// summaries. Idempotent; the store stays usable for reads.
    pub async fn close(&self) -> Result<()> {
        if self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        let mut a = self.alloc.lock().await;
        if let Some(region) = a.active_region() {
            // Wait (a little) for writes in flight, so the summary describes landed items.
            let deadline = Instant::now() + Duration::from_secs(5);
            // Their completions may have no one left to deliver them (a serving runtime that
            // shut down first): deliver them from here.
            self.slab.engine.complete_finished();
            while self.slab.has_pending(region) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
                self.slab.engine.complete_finished();
            }
        }
        a.seal_active(&self.slab).await;
        let mut sb = self.superblock.clone();
        sb.clean_shutdown = 1;
        self.write_superblock(&sb)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DiskStats {
        use std::sync::atomic::Ordering;
        if let Ok(a) = self.alloc.try_lock() {
            let n = a.regions_in_use(self.slab.geo.region_count);
            self.regions_in_use.store(u64::from(n), Ordering::Relaxed);
        }
        DiskStats {
            regions_in_use: self.regions_in_use.load(Ordering::Relaxed),
            items: self.slab.index.len() as u64,
            index_bytes: self.slab.index.memory_bytes() as u64,
            regions: self.slab.geo.region_count,
            region_size: self.slab.geo.region_size,
            recovered_items: self.recovered_items,
            recovery_ms: self.recovery_ms,
            queued_write_bytes: self.backlog.queued(),
            last_shutdown_clean: self.superblock.clean_shutdown == 1,
            ..self.slab.counters.snapshot()
        }
    }
}

/// An insert in flight, from its reservation until its index entry is in (or it gives up, or
/// its task is dropped): removals of its key made meanwhile are kept until it ends.
struct InFlight<'a> {
    removals: &'a parking_lot::Mutex<Removals>,
    seq: u64,
    hash: u64,
    ended: bool,
}

impl<'a> InFlight<'a> {
    fn begin(removals: &'a parking_lot::Mutex<Removals>, seq: u64, hash: u64) -> Self {
        removals.lock().begin_insert(seq, hash);
        InFlight {
            removals,
            seq,
            hash,
            ended: false,
        }
    }

    /// Ends the insert, running `index` unless its key was removed since it was reserved. Both
    /// under the removals' lock, so a removal comes either before (and `index` does not run) or
    /// after (and finds the entry to remove).
    fn end(mut self, index: impl FnOnce()) {
        let mut removals = self.removals.lock();
        if !removals.end_insert(self.seq, self.hash) {
            index();
        }
        self.ended = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.removals.lock().end_insert(self.seq, self.hash);
        }
    }
}
