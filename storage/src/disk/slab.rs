//! [`Slab`]: what every part of the disk store shares outside the allocator's lock — the device
//! seen as regions (IO at region and block addresses through the engine, failures counted per
//! region), the index of what they hold, the write sequence, writes in flight per region, and
//! the counters.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::config::EvictionPolicy;
use super::geometry::Geometry;
use super::health::{Health, Way};
use super::index::Index;
use super::listing::RegionSource;
use super::ondisk::region::RegionHeader;
use super::stats::{bump, Counters};
use crate::error::{Result, StorageError};
use crate::io::aligned::AlignedBuf;
use crate::io::engine::{CompletionHook, IoEngine};

/// The disk store's shared state.
pub(crate) struct Slab {
    pub(crate) engine: Arc<dyn IoEngine>,
    /// The device path, for errors and logs.
    pub(crate) path: PathBuf,
    pub(crate) geo: Geometry,
    /// The superblock's uuid, written into every region header.
    pub(crate) uuid: [u8; 16],
    pub(crate) index: Index,
    /// The next write sequence number.
    pub(crate) seq: AtomicU64,
    /// Writes reserved but not finished, per region: a region with any is never reclaimed.
    pub(crate) pending: Arc<Vec<AtomicU32>>,
    pub(crate) counters: Counters,
    pub(crate) eviction: EvictionPolicy,
    /// Failures per region; regions that keep failing are out of use.
    pub(crate) health: Health,
}

impl Slab {
    /// Takes the next write sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a failed device IO and wraps it with the device path.
    pub(crate) fn io_error(&self, e: io::Error) -> StorageError {
        bump(&self.counters.io_errors, 1);
        StorageError::io(&self.path, e)
    }

    /// Counts a write reserved in `region`; the [`WriteClaim`] that [`Slab::claim`] makes of it
    /// ends it.
    pub(crate) fn begin_write(&self, region: u32) {
        self.pending[region as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// True when `region` has reserved writes not yet finished.
    pub(crate) fn has_pending(&self, region: u32) -> bool {
        self.pending[region as usize].load(Ordering::Acquire) > 0
    }

    /// Takes over the write counted in `region` by [`Slab::begin_write`]: the count drops when
    /// the last clone of the claim is dropped. A writer keeps one until its index entry is in,
    /// and the device's completion hook ([`WriteClaim::hook`]) another until the device is done:
    /// the region is not reclaimed under a write that has landed but is not indexed yet (the
    /// entry would then point into the region's next generation), nor under one still on its
    /// way to the device, even if the writing task was cancelled meanwhile.
    pub(crate) fn claim(&self, region: u32) -> WriteClaim {
        WriteClaim {
            _held: Arc::new(ClaimedWrite {
                pending: self.pending.clone(),
                region,
            }),
        }
    }

    /// Writes `buf` at `block` of `region`, counting failures; hands the buffer back.
    pub(crate) async fn write_at(
        &self,
        region: u32,
        block: u32,
        buf: AlignedBuf,
        done: Option<CompletionHook>,
    ) -> Result<AlignedBuf> {
        let (res, buf) = self
            .engine
            .write(self.geo.block_offset(region, block), buf, done)
            .await;
        match res {
            Ok(()) => {
                self.health.succeeded(region, Way::Write);
                Ok(buf)
            }
            Err(e) => {
                self.health.failed(region, Way::Write, &self.counters);
                Err(self.io_error(e))
            }
        }
    }

    /// Writes a region's header block.
    pub(crate) async fn write_header(&self, h: &RegionHeader) -> Result<()> {
        if let Some(e) = injected_error!("disk::region_header_write") {
            return Err(self.io_error(e));
        }
        // A whole write unit: the region's first items start after it.
        let mut buf = AlignedBuf::zeroed(self.geo.write_unit(), self.geo.block);
        h.encode(buf.as_mut_slice());
        self.write_at(h.region, 0, buf, None).await.map(drop)
    }
}

/// A reserved write's hold on its region (see [`Slab::claim`]).
#[derive(Clone)]
pub(crate) struct WriteClaim {
    /// Only held: its drop, the last of its clones, ends the write's count.
    _held: Arc<ClaimedWrite>,
}

struct ClaimedWrite {
    pending: Arc<Vec<AtomicU32>>,
    region: u32,
}

impl Drop for ClaimedWrite {
    fn drop(&mut self) {
        self.pending[self.region as usize].fetch_sub(1, Ordering::AcqRel);
    }
}

impl WriteClaim {
    /// A completion hook holding the claim until the device is done with the write (or the
    /// engine drops the request).
    pub(crate) fn hook(&self) -> CompletionHook {
        let held = self.clone();
        Box::new(move || drop(held))
    }
}

impl RegionSource for Slab {
    type Read = Pin<Box<dyn Future<Output = io::Result<AlignedBuf>> + Send>>;

    fn read(&self, offset: u64, len: usize) -> Self::Read {
        let read = self
            .engine
            .read(offset, AlignedBuf::zeroed(len, self.geo.block));
        Box::pin(async move {
            let (res, buf) = read.await;
            res.map(|()| buf)
        })
    }
}
