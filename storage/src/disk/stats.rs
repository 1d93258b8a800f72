//! The disk store's counters, and [`DiskStats`], a snapshot of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Event counters, bumped with relaxed atomics (each is independent of the others).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) inserts: AtomicU64,
    pub(crate) insert_bytes: AtomicU64,
    pub(crate) checksum_failures: AtomicU64,
    pub(crate) io_errors: AtomicU64,
    pub(crate) evicted_regions: AtomicU64,
    pub(crate) evicted_items: AtomicU64,
    pub(crate) reinserted_items: AtomicU64,
    pub(crate) rejected_busy: AtomicU64,
    pub(crate) shed_writes: AtomicU64,
    pub(crate) regions_retired: AtomicU64,
    pub(crate) write_suspensions: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
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
    /// Inserts shed because the writes in flight had reached `write_queue` bytes (the device
    /// could not keep up).
    pub shed_writes: u64,
    /// Bytes of inserts admitted and not yet landed.
    pub queued_write_bytes: u64,
    /// Regions taken out of use after failing again and again (see the module `health`).
    pub regions_retired: u64,
    /// Times writes were suspended because they kept failing on the whole device.
    pub write_suspensions: u64,
    /// Items currently indexed.
    pub items: u64,
    /// Heap bytes of the index.
    pub index_bytes: u64,
    /// Regions on the device.
    pub regions: u32,
    /// Regions holding data (filling or sealed), as of the last time the allocator was free
    /// to ask.
    pub regions_in_use: u64,
    /// Bytes per region.
    pub region_size: u64,
    /// Items found at start-up.
    pub recovered_items: u64,
    /// Milliseconds start-up recovery took.
    pub recovery_ms: u64,
    /// Whether the previous run ended with a clean shutdown.
    pub last_shutdown_clean: bool,
}

impl Counters {
    /// The event counters of a snapshot; the caller fills in the gauges.
    pub(crate) fn snapshot(&self) -> DiskStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DiskStats {
            hits: l(&self.hits),
            misses: l(&self.misses),
            inserts: l(&self.inserts),
            insert_bytes: l(&self.insert_bytes),
            checksum_failures: l(&self.checksum_failures),
            io_errors: l(&self.io_errors),
            evicted_regions: l(&self.evicted_regions),
            evicted_items: l(&self.evicted_items),
            reinserted_items: l(&self.reinserted_items),
            rejected_busy: l(&self.rejected_busy),
            shed_writes: l(&self.shed_writes),
            regions_retired: l(&self.regions_retired),
            write_suspensions: l(&self.write_suspensions),
            ..DiskStats::default()
        }
    }
}
