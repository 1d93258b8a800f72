//! The L2 slab store: items appended into regions on one device, found through an in-memory index.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::aligned::AlignedBuf;
use crate::device::{Device, DeviceKind};
use crate::engine::{EngineKind, IoEngine, PsyncEngine};
use crate::error::{Result, StorageError};
use crate::index::{Entry, Index};
use crate::item::{self, HEADER_LEN};
use crate::key::key_hash;
use crate::region::{Active, Allocator, RegionHeader};
use crate::superblock::{foreign_signature, Superblock, FORMAT_VERSION};

/// Where region 0 starts: the superblock's block, rounded up so regions are MiB-aligned.
const DATA_OFFSET: u64 = 1 << 20;

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
    /// Format even when the device holds other data or a cache of another geometry.
    pub overwrite: bool,
    /// Threads of the psync engine.
    pub io_threads: usize,
}

impl DiskConfig {
    /// Defaults for a file at `path` of `size` bytes.
    pub fn new(path: impl Into<PathBuf>, size: u64) -> Self {
        DiskConfig {
            path: path.into(),
            size,
            region_size: 16 << 20,
            engine: EngineKind::Auto,
            overwrite: false,
            io_threads: 4,
        }
    }
}

/// Counters of the disk store.
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
    /// Reads whose checksum, key or sequence did not match: served as misses.
    pub checksum_failures: u64,
    /// Failed device reads or writes.
    pub io_errors: u64,
    /// Regions reclaimed.
    pub evicted_regions: u64,
    /// Items dropped with reclaimed regions.
    pub evicted_items: u64,
    /// Inserts refused because no region could be reclaimed.
    pub rejected_busy: u64,
    /// Items currently indexed.
    pub items: u64,
    /// Regions on the device.
    pub regions: u32,
    /// Bytes per region.
    pub region_size: u64,
}

/// The raw-disk slab store.
pub struct DiskStore {
    engine: Arc<dyn IoEngine>,
    path: PathBuf,
    block: usize,
    region_size: u64,
    region_count: u32,
    uuid: [u8; 16],
    index: Index,
    /// Writes reserved but not finished, per region: a region with any is never reclaimed.
    pending: Vec<AtomicU32>,
    // A tokio mutex: reserving space may write a region header while holding it.
    alloc: tokio::sync::Mutex<Allocator>,
    seq: AtomicU64,
    counters: Counters,
    direct: bool,
    kind: DeviceKind,
}

impl DiskStore {
    /// Opens (and, if blank or allowed, formats) the device described by `cfg`.
    pub async fn open(cfg: &DiskConfig) -> Result<DiskStore> {
        let dev = Device::open(&cfg.path, cfg.size)?;
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
        let region_count = u32::try_from(region_count)
            .map_err(|_| StorageError::Config("too many regions".into()))?;
        let wanted = Superblock {
            version: FORMAT_VERSION,
            block_size: block as u32,
            device_size: dev.size,
            data_offset: DATA_OFFSET,
            region_count,
            region_size: cfg.region_size,
            uuid: rand::random(),
            created: now_secs(),
            clean_shutdown: 0,
        };
        let sb = claim_device(&dev, wanted, cfg.overwrite)?;
        let engine = open_engine(&dev, cfg)?;
        tracing::info!(
            path = %dev.path.display(),
            engine = engine.name(),
            direct = dev.direct,
            regions = region_count,
            region_size = cfg.region_size,
            "disk store open"
        );
        Ok(DiskStore {
            engine,
            path: dev.path.clone(),
            block,
            region_size: cfg.region_size,
            region_count,
            uuid: sb.uuid,
            index: Index::default(),
            pending: (0..region_count).map(|_| AtomicU32::new(0)).collect(),
            alloc: tokio::sync::Mutex::new(Allocator::new(region_count)),
            seq: AtomicU64::new(1),
            counters: Counters::default(),
            direct: dev.direct,
            kind: dev.kind,
        })
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
        (self.region_size as usize - self.block).saturating_sub(HEADER_LEN + key_len)
    }

    fn region_offset(&self, region: u32) -> u64 {
        DATA_OFFSET + region as u64 * self.region_size
    }

    /// True when `key` is indexed (its bytes may still fail their checksum on read).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.index.get(key_hash(key)).is_some()
    }

    /// Reads the value of `key`; a missing, evicted or corrupt item is `None`.
    pub async fn get(&self, key: &[u8]) -> Option<Bytes> {
        let hash = key_hash(key);
        let Some(entry) = self.index.get(hash) else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let offset = self.region_offset(entry.region) + entry.block as u64 * self.block as u64;
        let buf = AlignedBuf::zeroed(entry.blocks as usize * self.block, self.block);
        let (res, buf) = self.engine.read(offset, buf).await;
        if let Err(e) = res {
            self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %self.path.display(), offset, error = %e, "disk read failed");
            return None;
        }
        let intact = item::verify(buf.as_slice()).filter(|h| {
            h.seq == entry.seq
                && h.flags & item::FLAG_TOMBSTONE == 0
                && &buf.as_slice()[HEADER_LEN..HEADER_LEN + h.key_len as usize] == key
        });
        let Some(h) = intact else {
            // Corrupt, overwritten, or another key with the same hash: never serve these bytes.
            self.counters
                .checksum_failures
                .fetch_add(1, Ordering::Relaxed);
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            self.index.remove_if(hash, &entry);
            tracing::warn!(path = %self.path.display(), region = entry.region, block = entry.block, "item failed verification; dropped");
            return None;
        };
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        let start = HEADER_LEN + h.key_len as usize;
        let end = start + h.value_len as usize;
        Some(Bytes::from_owner(buf).slice(start..end))
    }

    /// Writes `value` under `key`; it becomes readable once the device has it.
    pub async fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let max = self.max_value_len(key.len());
        if value.len() > max || key.len() > u16::MAX as usize {
            return Err(StorageError::TooLarge {
                size: value.len(),
                max,
            });
        }
        let hash = key_hash(key);
        let blocks = (item::padded_len(key.len(), value.len(), self.block) / self.block) as u32;
        let (region, block, seq) = match self.reserve(blocks, hash).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, StorageError::Busy) {
                    self.counters.rejected_busy.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        let buf = item::encode(key, value, seq, 0, self.block);
        let offset = self.region_offset(region) + block as u64 * self.block as u64;
        let (res, _buf) = self.engine.write(offset, buf).await;
        let out = match res {
            Ok(()) => {
                let entry = Entry {
                    region,
                    block,
                    blocks,
                    seq,
                };
                self.index.insert_if_newer(hash, entry);
                self.counters.inserts.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .insert_bytes
                    .fetch_add(value.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
                Err(StorageError::io(&self.path, e))
            }
        };
        // Only after the index is updated: a region with no pending writes is safe to reclaim.
        self.pending[region as usize].fetch_sub(1, Ordering::AcqRel);
        out
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &[u8]) {
        self.index.remove(key_hash(key));
    }

    /// Reserves `blocks` blocks in the active region, opening a new one when it is full.
    async fn reserve(&self, blocks: u32, hash: u64) -> Result<(u32, u32, u64)> {
        let per_region = (self.region_size / self.block as u64) as u32;
        let mut a = self.alloc.lock().await;
        loop {
            if let Some(act) = a.active.as_mut() {
                if act.next_block + blocks <= per_region {
                    let (region, block) = (act.region, act.next_block);
                    act.next_block += blocks;
                    self.pending[region as usize].fetch_add(1, Ordering::AcqRel);
                    a.members[region as usize].push(hash);
                    let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                    return Ok((region, block, seq));
                }
            }
            if let Some(full) = a.active.take() {
                a.sealed.push_back(full.region);
            }
            let region = match a.free.pop_front() {
                Some(r) => r,
                None => self.reclaim_oldest(&mut a)?,
            };
            self.write_region_header(region).await?;
            a.active = Some(Active {
                region,
                next_block: 1,
            });
        }
    }

    /// Reclaims the oldest sealed region with no writes in flight.
    fn reclaim_oldest(&self, a: &mut Allocator) -> Result<u32> {
        let pos = a
            .sealed
            .iter()
            .position(|&r| self.pending[r as usize].load(Ordering::Acquire) == 0)
            .ok_or(StorageError::Busy)?;
        let region = a.sealed.remove(pos).ok_or(StorageError::Busy)?;
        let members = std::mem::take(&mut a.members[region as usize]);
        let mut dropped = 0u64;
        for hash in members {
            if self.index.remove_in_region(hash, region).is_some() {
                dropped += 1;
            }
        }
        self.counters
            .evicted_regions
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .evicted_items
            .fetch_add(dropped, Ordering::Relaxed);
        tracing::debug!(region, dropped, "region reclaimed");
        Ok(region)
    }

    async fn write_region_header(&self, region: u32) -> Result<()> {
        let mut buf = AlignedBuf::zeroed(self.block, self.block);
        RegionHeader {
            region,
            open_seq: self.seq.load(Ordering::Relaxed),
            uuid: self.uuid,
        }
        .encode(buf.as_mut_slice());
        let (res, _) = self.engine.write(self.region_offset(region), buf).await;
        res.map_err(|e| {
            self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
            StorageError::io(&self.path, e)
        })
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
            rejected_busy: l(&c.rejected_busy),
            items: self.index.len() as u64,
            regions: self.region_count,
            region_size: self.region_size,
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Decides whether the device may be used, formatting it when blank or allowed.
fn claim_device(dev: &Device, wanted: Superblock, overwrite: bool) -> Result<Superblock> {
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
        Ok(Some(sb)) if same_geometry(&sb) => return Ok(sb),
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
    format(dev, &wanted)?;
    Ok(wanted)
}

fn format(dev: &Device, sb: &Superblock) -> Result<()> {
    tracing::info!(path = %dev.path.display(), geometry = %sb.describe(), "formatting cache device");
    let mut block = AlignedBuf::zeroed(dev.block_size, dev.block_size);
    sb.encode(block.as_mut_slice());
    let io = |e| StorageError::io(&dev.path, e);
    dev.file.write_all_at(block.as_slice(), 0).map_err(io)?;
    dev.file.sync_data().map_err(io)
}

fn open_engine(dev: &Device, cfg: &DiskConfig) -> Result<Arc<dyn IoEngine>> {
    let file = Arc::new(
        dev.file
            .try_clone()
            .map_err(|e| StorageError::io(&dev.path, e))?,
    );
    match cfg.engine {
        EngineKind::IoUring => Err(StorageError::EngineUnavailable {
            engine: "io_uring",
            reason: "this build has no io_uring engine yet".into(),
        }),
        EngineKind::Auto | EngineKind::Psync => Ok(Arc::new(
            PsyncEngine::new(file, cfg.io_threads).map_err(|e| StorageError::io(&dev.path, e))?,
        )),
    }
}
