//! Idle IO buffers kept for reuse, so steady-state IO does not allocate.
//!
//! Large aligned allocations come straight from the kernel: every fresh buffer is page-faulted
//! and zeroed page by page, and every free unmaps it (and flushes other CPUs' TLBs). At a few
//! thousand 1 MiB reads a second that cost more than the reads themselves. Buffers are pooled
//! by capacity class (a few classes per doubling), bounded in total idle bytes.

use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::LazyLock;

use parking_lot::Mutex;

/// At most this many idle bytes are kept; beyond it, freed buffers go back to the allocator.
pub const IDLE_BYTES: usize = 64 << 20;
/// Buffers larger than this (region scans) are never kept.
pub const MAX_POOLED: usize = 4 << 20;
/// Buffers aligned less than this (not for device IO) are never kept.
const MIN_ALIGN: usize = 512;

/// An idle allocation; only ever handed to one owner at a time.
struct Idle(NonNull<u8>);
// SAFETY: an idle buffer is owned by the pool alone until taken out.
unsafe impl Send for Idle {}

#[derive(Default)]
struct Pool {
    free: HashMap<(usize, usize), Vec<Idle>>,
    bytes: usize,
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(Default::default);

/// The capacity a buffer of `len` bytes aligned to `align` is allocated with: a power of two up
/// to 64 KiB, then a multiple of an eighth of the next power of two (at most 25 % slack).
pub fn capacity(len: usize, align: usize) -> usize {
    let len = len.max(1).next_multiple_of(align);
    let pow = len.next_power_of_two();
    if pow <= 64 << 10 {
        pow
    } else {
        len.next_multiple_of((pow / 8).max(align))
    }
}

fn poolable(layout: Layout) -> bool {
    layout.align() >= MIN_ALIGN && layout.size() <= MAX_POOLED
}

/// An idle buffer of exactly this layout, if one is kept. Its bytes are initialised (by
/// whoever used it last) but unspecified.
pub fn take(layout: Layout) -> Option<NonNull<u8>> {
    if !poolable(layout) {
        return None;
    }
    let mut p = POOL.lock();
    let idle = p.free.get_mut(&(layout.size(), layout.align()))?.pop()?;
    p.bytes -= layout.size();
    Some(idle.0)
}

/// Keeps a buffer of this layout for reuse; false (and nothing kept) when the pool is full.
pub fn give(ptr: NonNull<u8>, layout: Layout) -> bool {
    if !poolable(layout) {
        return false;
    }
    let mut p = POOL.lock();
    if p.bytes + layout.size() > IDLE_BYTES {
        return false;
    }
    p.bytes += layout.size();
    p.free
        .entry((layout.size(), layout.align()))
        .or_default()
        .push(Idle(ptr));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_classes_bound_the_slack() {
        assert_eq!(capacity(1, 4096), 4096);
        assert_eq!(capacity(5000, 4096), 8192);
        assert_eq!(capacity(12 << 10, 4096), 16 << 10);
        assert_eq!(capacity(1 << 20, 4096), 1 << 20);
        // A 1 MiB slice plus its item header: 1.25 MiB, not 2 MiB.
        assert_eq!(capacity((1 << 20) + 4096, 4096), (5 << 20) / 4);
        for len in (4096..(4 << 20)).step_by(4096 * 7) {
            let c = capacity(len, 4096);
            assert!(c >= len && c.is_multiple_of(4096));
            assert!(len <= 64 << 10 || c - len <= len / 4, "{len} -> {c}");
        }
    }
}
