//! `TieredCache`: the memory tier over the disk store, and the admission policy between them.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::disk::{DiskConfig, DiskStats, DiskStore, ItemImage, Shed};
use crate::error::{Result, StorageError};
use crate::key::key_hash;
use crate::memory::{MemoryStats, MemoryTier};
use crate::writer::{Destination, ValueWriter};

/// Which tier receives a new value. Kept in one place so its effect can be measured.
///
/// Write-through stays by measurement (`benches/tiers.rs`, the peer rig's Zipf workload at its
/// budgets): the tiers already hold different objects, since L2 drops at reclaim what L1
/// serves (it is never read there), so 171 of 3 199 objects held were in both. Writing L1's
/// evictions back to L2, or admitting to L2 only on a key's second miss, moved the hit ratio
/// by less than 0.001. What bounds it is L2's capacity in objects (item padding to the block,
/// the open region, the device's rounding into regions), not which tier takes what: fitting
/// regions to the device and packing items into 512-byte blocks took the bench from 0.902 to
/// 0.931.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// Every value is written to L2 (so it survives a restart and L1 eviction) and offered to
    /// L1, whose TinyLFU filter decides whether it stays in memory. An L2 hit is offered to L1.
    #[default]
    WriteThrough,
}

/// How to build a [`TieredCache`].
#[derive(Debug, Clone)]
pub struct TieredCacheConfig {
    /// L1 budget in bytes (0 disables the memory tier).
    pub memory: usize,
    /// The L2 device, if any.
    pub disk: Option<DiskConfig>,
    /// Placement of new values.
    pub admission: Admission,
}

/// A tier of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// L1, in memory.
    Memory,
    /// L2, on the device.
    Disk,
}

/// Which tiers hold a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placement {
    /// The memory tier holds it.
    pub memory: bool,
    /// The disk tier indexes it.
    pub disk: bool,
}

/// Counters of both tiers.
#[derive(Debug, Clone, Default)]
pub struct TieredStats {
    /// The memory tier.
    pub memory: MemoryStats,
    /// The disk tier, when configured.
    pub disk: Option<DiskStats>,
}

/// A key/value cache of byte values over a memory tier and a disk tier.
pub struct TieredCache {
    l1: MemoryTier,
    l2: Option<DiskStore>,
    admission: Admission,
    /// Removals by key: a value read or written before a removal of its key is not put into L1
    /// after it.
    removals: Removals,
}

/// Removal generations of keys, striped by key hash: a value read (or written) while its key
/// was removed must not reach L1 after the removal, or L1 would serve it while L2 has forgotten
/// it (or holds a newer one). One counter per stripe rather than per key keeps this a fixed
/// 8 KiB; a removal then also holds back the L1 update of the keys sharing its stripe (1 in
/// [`Removals::STRIPES`]), which only costs them an L2 read. One global counter would let any
/// stream of removals keep every new value out of L1.
struct Removals {
    stripes: Box<[AtomicU64]>,
}

impl Removals {
    const STRIPES: usize = 1024;

    fn new() -> Self {
        Removals {
            stripes: (0..Self::STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn stripe(&self, key: &[u8]) -> &AtomicU64 {
        &self.stripes[key_hash(key) as usize % Self::STRIPES]
    }

    /// The removal generation of `key`'s stripe, taken before reading or writing its value.
    fn generation(&self, key: &[u8]) -> u64 {
        self.stripe(key).load(Ordering::Acquire)
    }

    /// Records a removal of `key`, before it leaves either tier.
    fn removed(&self, key: &[u8]) {
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
    }
}

/// A caller's values below this size are copied into L1 rather than kept as views of a larger
/// buffer, so L1's byte budget counts what it really holds.
const COPY_BELOW: usize = 64 * 1024;

fn compact(v: Bytes) -> Bytes {
    if v.len() < COPY_BELOW {
        Bytes::copy_from_slice(&v)
    } else {
        v
    }
}

/// Where a value offered to L1 comes from.
#[derive(Clone, Copy)]
enum Source {
    /// The caller's own bytes.
    Caller,
    /// A view of a disk IO buffer: pooled memory, larger than the value (the item header, the
    /// key and the buffer's size class). L1 keeps a copy, so its budget counts what it holds
    /// and the buffer goes back to the pool once the caller is done with it.
    Disk,
}

/// Alignment of a value gathered for memory only: a page, like the disk tier's images, so
/// both come from the same pool of buffers.
const GATHER_ALIGN: usize = 4096;

/// A disk write shed because the device is behind is not a failure of the insert: the value
/// is in memory (if L1 admits it), and the shed is counted in the disk store's stats.
fn kept_in_memory(e: StorageError) -> Result<()> {
    match e {
        StorageError::Overloaded { .. } => Ok(()),
        e => Err(e),
    }
}

impl TieredCache {
    /// Opens the tiers described by `cfg`.
    pub async fn open(cfg: TieredCacheConfig) -> Result<TieredCache> {
        let l2 = match &cfg.disk {
            Some(d) => Some(DiskStore::open(d).await?),
            None => None,
        };
        Ok(TieredCache {
            l1: MemoryTier::new(cfg.memory),
            l2,
            admission: cfg.admission,
            removals: Removals::new(),
        })
    }

    /// The value of `key` from whichever tier holds it intact.
    pub async fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.get_from(key).await.map(|(v, _)| v)
    }

    /// The value of `key` and the tier it was read from.
    pub async fn get_from(&self, key: &[u8]) -> Option<(Bytes, Tier)> {
        let held = self.l1.get(key);
        self.get_after_l1(key, held).await
    }

    /// The value of `key` if it is `len` bytes long, and the tier it was read from: memory is
    /// asked only where a value of that length lives (for a slice, whose length its object's
    /// record gives). A value of another length is read from the disk, and the caller, which
    /// expects `len` bytes, refuses it.
    pub async fn get_sized(&self, key: &[u8], len: usize) -> Option<(Bytes, Tier)> {
        let held = self.l1.get_sized(key, len);
        self.get_after_l1(key, held).await
    }

    /// `held` (what memory holds of `key`), else the value from the disk, offered to memory.
    async fn get_after_l1(&self, key: &[u8], held: Option<Bytes>) -> Option<(Bytes, Tier)> {
        if let Some(v) = held {
            // A record served from memory is still counted as read on disk: memory keeps far
            // more records than slices, and one aged out of the device would leave its object's
            // slices there unreachable after a restart.
            if let Some(d) = self
                .l2
                .as_ref()
                .filter(|_| MemoryTier::is_small(key.len() + v.len()))
            {
                d.touch(key);
            }
            return Some((v, Tier::Memory));
        }
        let generation = self.removals.generation(key);
        let v = self.l2.as_ref()?.get(key).await?;
        match self.admission {
            Admission::WriteThrough => self.offer_l1(key, &v, Source::Disk, generation),
        }
        Some((v, Tier::Disk))
    }

    fn offer_l1(&self, key: &[u8], v: &Bytes, source: Source, generation: u64) {
        if self.removals.generation(key) == generation {
            let v = match source {
                Source::Disk if self.l1.can_hold(key.len(), v.len()) => Bytes::copy_from_slice(v),
                // Not copied for nothing: L1 is off, or counts the value as too large and drops it.
                Source::Disk => v.clone(),
                Source::Caller => compact(v.clone()),
            };
            self.l1.insert(key, v);
        }
    }

    /// Stores `value` under `key`; returns once the value is where the policy puts it.
    pub async fn insert(&self, key: &[u8], value: Bytes) -> Result<()> {
        match self.admission {
            Admission::WriteThrough => {
                let generation = self.removals.generation(key);
                let l2 = match &self.l2 {
                    Some(d) => d.insert(key, &value).await,
                    None => Ok(()),
                };
                self.offer_l1(key, &value, Source::Caller, generation);
                l2.or_else(kept_in_memory)
            }
        }
    }

    /// Stores a value given in consecutive parts (as received from a network), joining them
    /// only once: into L2's write buffer, which L1 then shares.
    /// `shed`: whether the disk write may be shed when the device is behind (the value is then
    /// kept in memory only, if L1 takes it).
    pub async fn insert_parts(&self, key: &[u8], parts: &[Bytes], shed: Shed) -> Result<()> {
        let mut w = self.writer(key, parts.iter().map(|p| p.len()).sum());
        for p in parts {
            w.append(p);
        }
        self.insert_value(key, w, shed).await
    }

    /// A writer to gather a value of `value_len` bytes for `key` into, then insert with
    /// [`TieredCache::insert_value`]: the bytes go straight where L2 writes them from.
    pub fn writer(&self, key: &[u8], value_len: usize) -> ValueWriter {
        let (image, destination) = match self.l2.as_ref().map(|d| d.image(key, value_len)) {
            Some(Ok(image)) => (image, Destination::Disk),
            Some(Err(e)) => (
                ItemImage::new(&[], value_len, GATHER_ALIGN),
                Destination::Refused(e),
            ),
            None => (
                ItemImage::new(&[], value_len, GATHER_ALIGN),
                Destination::Memory,
            ),
        };
        ValueWriter { image, destination }
    }

    /// Stores the value gathered in `w` (made by [`TieredCache::writer`] for `key`), as
    /// [`TieredCache::insert_parts`] does; a value not gathered whole is refused
    /// ([`StorageError::Incomplete`]). L1 shares the gathered bytes; it copies none.
    pub async fn insert_value(&self, key: &[u8], w: ValueWriter, shed: Shed) -> Result<()> {
        if let Some(e) = w.image.incomplete() {
            return Err(e);
        }
        let Admission::WriteThrough = self.admission;
        let generation = self.removals.generation(key);
        let value = w.image.value();
        let written = match (&self.l2, w.destination) {
            (Some(d), Destination::Disk) => d.insert_image(key, w.image, shed).await,
            (_, Destination::Refused(e)) => return Err(e),
            _ => Ok(()),
        };
        match written {
            // Shed (the device is behind): memory keeps it meanwhile.
            Ok(()) | Err(StorageError::Overloaded { .. }) => {
                self.offer_l1(key, &value, Source::Caller, generation);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Makes a small value visible at once from memory; the caller writes it to L2 (with
    /// [`TieredCache::insert_disk`]) without having to wait for that.
    pub fn insert_memory_now(&self, key: &[u8], value: Bytes) {
        self.l1.insert_forced(key, value);
    }

    /// Writes `value` to L2 only, leaving L1 alone: for a value [`TieredCache::insert_memory_now`]
    /// already put there. Offering it to L1 again when the write lands could put back an older
    /// value over a newer one written to memory meanwhile (a late write of a record that a
    /// revalidation has replaced since).
    pub async fn insert_disk(&self, key: &[u8], value: Bytes) -> Result<()> {
        match &self.l2 {
            Some(d) => d.insert(key, &value).await.or_else(kept_in_memory),
            None => Ok(()),
        }
    }

    /// Forgets `key` in both tiers (durably in L2).
    pub async fn remove(&self, key: &[u8]) -> Result<()> {
        self.removals.removed(key);
        self.l1.remove(key);
        match &self.l2 {
            Some(d) => d.remove(key).await,
            None => Ok(()),
        }
    }

    /// Flushes what a clean restart needs (seals L2's active region); call before exiting.
    pub async fn close(&self) -> Result<()> {
        match &self.l2 {
            Some(d) => d.close().await,
            None => Ok(()),
        }
    }

    /// True when some tier holds `key` (a disk item may still fail verification when read).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.l1.contains(key) || self.l2.as_ref().is_some_and(|d| d.contains(key))
    }

    /// Which tiers hold `key` now (for inspection; a disk item may still fail verification).
    pub fn placement(&self, key: &[u8]) -> Placement {
        Placement {
            memory: self.l1.contains(key),
            disk: self.l2.as_ref().is_some_and(|d| d.contains(key)),
        }
    }

    /// The disk store, when configured.
    pub fn disk(&self) -> Option<&DiskStore> {
        self.l2.as_ref()
    }

    /// A snapshot of both tiers' counters.
    pub fn stats(&self) -> TieredStats {
        TieredStats {
            memory: self.l1.stats(),
            disk: self.l2.as_ref().map(|d| d.stats()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A removal moves the generation of its own key's stripe only.
    #[test]
    fn a_removal_moves_only_its_stripe() {
        let r = Removals::new();
        let (a, b) = (&b"a"[..], &b"b"[..]);
        assert!(
            !std::ptr::eq(r.stripe(a), r.stripe(b)),
            "pick keys of two stripes"
        );
        let (ga, gb) = (r.generation(a), r.generation(b));
        r.removed(a);
        assert_ne!(r.generation(a), ga);
        assert_eq!(r.generation(b), gb);
    }

    /// L1 keeps a copy of a disk buffer's value (so the buffer returns to the pool) and a view
    /// of a caller's large value (no copy needed).
    #[tokio::test]
    async fn memory_copies_disk_values_and_keeps_large_caller_values() {
        let cache = TieredCache::open(TieredCacheConfig {
            memory: 16 << 20,
            disk: None,
            admission: Default::default(),
        })
        .await
        .expect("memory-only cache");
        let big = Bytes::from(vec![7u8; 300_000]);
        cache.offer_l1(b"disk", &big, Source::Disk, 0);
        cache.offer_l1(b"caller", &big, Source::Caller, 0);
        let disk = cache.l1.get(b"disk").expect("disk value in L1");
        let caller = cache.l1.get(b"caller").expect("caller value in L1");
        assert_eq!(disk, big);
        assert_ne!(
            disk.as_ptr(),
            big.as_ptr(),
            "L1 kept a view of a disk buffer"
        );
        assert_eq!(
            caller.as_ptr(),
            big.as_ptr(),
            "a large caller value was copied"
        );
    }

    /// A cache of 16 MiB of memory over a 32 MiB file in `dir`.
    async fn two_tiers(dir: &std::path::Path) -> TieredCache {
        let mut disk = crate::DiskConfig::new(dir.join("c.img"), 32 << 20);
        disk.region_size = 1 << 20;
        TieredCache::open(TieredCacheConfig {
            memory: 16 << 20,
            disk: Some(disk),
            admission: Default::default(),
        })
        .await
        .expect("cache")
    }

    /// A value gathered piece by piece is readable as it arrives (views that outlive the
    /// writer), refused while incomplete, and stored whole in both tiers.
    #[tokio::test]
    async fn a_gathered_value_is_readable_as_it_arrives_and_stored_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = two_tiers(dir.path()).await;
        let value: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = cache.writer(b"k", value.len());
        let first = w.append(&value[..1000]);
        assert_eq!(&first[..], &value[..1000]);
        let mut short = cache.writer(b"short", 10);
        short.append(b"12345");
        assert!(matches!(
            cache.insert_value(b"short", short, Shed::Allowed).await,
            Err(StorageError::Incomplete {
                missing: 5,
                size: 10
            })
        ));
        assert!(!cache.contains(b"short"));
        for piece in value[1000..].chunks(4096) {
            w.append(piece);
        }
        assert_eq!(w.remaining(), 0);
        assert!(
            w.append(b"more").is_empty(),
            "nothing past the value is taken"
        );
        cache
            .insert_value(b"k", w, Shed::Allowed)
            .await
            .expect("stored");
        assert_eq!(&first[..], &value[..1000], "a view outlives its writer");
        assert_eq!(cache.get(b"k").await.as_deref(), Some(&value[..]));
        let disk = cache.disk().expect("disk tier");
        assert_eq!(disk.get(b"k").await.as_deref(), Some(&value[..]));
    }

    /// A late disk write of an older value must not replace, in memory, a newer one put there
    /// meanwhile: the write of a record that a revalidation has replaced since.
    #[tokio::test]
    async fn a_late_disk_write_leaves_a_newer_memory_value_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = two_tiers(dir.path()).await;
        let (old, new) = (Bytes::from_static(b"v1"), Bytes::from_static(b"v2"));
        cache.insert_memory_now(b"record", new.clone());
        cache.insert_disk(b"record", old).await.expect("disk write");
        assert_eq!(cache.get(b"record").await, Some(new));
    }
}
