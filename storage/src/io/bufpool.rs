//! Idle IO buffers kept for reuse, so steady-state IO does not allocate. Private to `io`: only
//! [`AlignedBuf`](super::aligned::AlignedBuf) takes and gives raw allocations here.
//!
//! Large aligned allocations come straight from the kernel: every fresh buffer is page-faulted
//! and zeroed page by page, and every free unmaps it (and flushes other CPUs' TLBs). At a few
//! thousand 1 MiB reads a second that cost more than the reads themselves. Buffers are pooled
//! by capacity class (a few classes per doubling), bounded in total idle bytes.
//!
//! Read buffers of [`FINE_FROM`] bytes and more (slices) are classed in 64 KiB steps, in small
//! pages: a 1 MiB slice and its item header take 1 MiB + 64 KiB, not the next class or a 2 MiB
//! huge page. A value gathered from a network (a fill's item image) takes exactly its pages
//! ([`exact_layout`]): the memory tier keeps that buffer as long as it keeps the value, and a
//! class would hold up to a quarter more than the value (a 64 KiB object's image in 80 KiB).

use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::LazyLock;

use parking_lot::Mutex;

/// At most this many idle bytes are kept; beyond it, freed buffers go back to the allocator.
/// Steady IO needs about as many buffers as it has in flight; the memory tier lets slices go in
/// bursts, and those beyond this are not worth keeping idle.
const IDLE_BYTES: usize = 16 << 20;
/// Buffers larger than this (region scans) are never kept.
const MAX_POOLED: usize = 4 << 20;
/// Buffers aligned less than this (not for device IO) are never kept.
const MIN_ALIGN: usize = 512;
/// Buffers from this size on are classed in [`FINE_STEP`] steps.
const FINE_FROM: usize = 512 << 10;
const FINE_STEP: usize = 64 << 10;

/// An idle allocation; only ever handed to one owner at a time.
struct Idle(NonNull<u8>);
// SAFETY: an idle buffer is owned by the pool alone until taken out.
unsafe impl Send for Idle {}

/// Idle buffers by layout, at most `limit` bytes of them.
struct Pool {
    free: HashMap<(usize, usize), Vec<Idle>>,
    bytes: usize,
    limit: usize,
}

impl Pool {
    fn new(limit: usize) -> Self {
        Pool {
            free: HashMap::new(),
            bytes: 0,
            limit,
        }
    }

    fn take(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let idle = self.free.get_mut(&(layout.size(), layout.align()))?.pop()?;
        self.bytes -= layout.size();
        Some(idle.0)
    }

    fn give(&mut self, ptr: NonNull<u8>, layout: Layout) -> bool {
        if self.bytes + layout.size() > self.limit {
            return false;
        }
        self.bytes += layout.size();
        self.free
            .entry((layout.size(), layout.align()))
            .or_default()
            .push(Idle(ptr));
        true
    }
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| Mutex::new(Pool::new(IDLE_BYTES)));

/// The allocation for a buffer of `len` bytes aligned to `align`: a power of two up to 64 KiB,
/// then a multiple of an eighth of the next power of two (at most 25 % slack), and from
/// [`FINE_FROM`] on a multiple of [`FINE_STEP`] (at most 12.5 % slack).
pub(super) fn layout(len: usize, align: usize) -> Layout {
    let len = len.max(1).next_multiple_of(align);
    let pow = len.next_power_of_two();
    let size = if len >= FINE_FROM {
        len.next_multiple_of(FINE_STEP.max(align))
    } else if pow <= 64 << 10 {
        pow
    } else {
        len.next_multiple_of((pow / 8).max(align))
    };
    // Only a non-power-of-two alignment fails, which callers have already ruled out.
    Layout::from_size_align(size, align).expect("aligned layout")
}

/// The allocation for a buffer of exactly `len` bytes (rounded up to `align`): pooled by its
/// own size, apart from the classes of [`layout`].
pub(super) fn exact_layout(len: usize, align: usize) -> Layout {
    let len = len.max(1).next_multiple_of(align);
    // Only a non-power-of-two alignment fails, which callers have already ruled out.
    Layout::from_size_align(len, align).expect("aligned layout")
}

/// A new zeroed allocation of `layout`.
pub(super) fn fresh(layout: Layout) -> NonNull<u8> {
    // SAFETY: layout has a non-zero size.
    let raw = unsafe { std::alloc::alloc_zeroed(layout) };
    let Some(ptr) = NonNull::new(raw) else {
        std::alloc::handle_alloc_error(layout)
    };
    ptr
}

fn poolable(layout: Layout) -> bool {
    layout.align() >= MIN_ALIGN && layout.size() <= MAX_POOLED
}

/// An idle buffer of exactly this layout, if one is kept, now owned by the caller (who frees it
/// with this layout, or gives it back). Its bytes are initialised (by whoever used it last) but
/// unspecified.
pub(super) fn take(layout: Layout) -> Option<NonNull<u8>> {
    if !poolable(layout) {
        return None;
    }
    POOL.lock().take(layout)
}

/// Keeps a buffer of this layout for reuse; false (and nothing kept, the caller still owns it)
/// when the pool is full or does not keep buffers of this layout.
///
/// # Safety
///
/// `ptr` must be an allocation of exactly `layout` from the global allocator, every byte of it
/// initialised, owned by the caller and used by no one after this call when it returns true:
/// the pool hands it to the next [`take`] of this layout, and a later owner may free it.
pub(super) unsafe fn give(ptr: NonNull<u8>, layout: Layout) -> bool {
    poolable(layout) && POOL.lock().give(ptr, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(len: usize) -> usize {
        layout(len, 4096).size()
    }

    #[test]
    fn buffers_are_reused_by_exact_layout_up_to_the_limit() {
        let mut pool = Pool::new(8192);
        let l4 = Layout::from_size_align(4096, 4096).expect("layout");
        let l8 = Layout::from_size_align(8192, 4096).expect("layout");
        let (a, b, c) = (
            NonNull::<u8>::dangling(),
            NonNull::dangling(),
            NonNull::dangling(),
        );
        assert!(pool.give(a, l4));
        assert!(pool.take(l8).is_none(), "another size class");
        assert!(pool.give(b, l4));
        assert!(!pool.give(c, l4), "over the limit");
        assert!(pool.take(l4).is_some());
        assert!(pool.take(l4).is_some());
        assert!(pool.take(l4).is_none());
        assert_eq!(pool.bytes, 0);
        // Dangling pointers never reach the allocator: nothing is freed here.
        std::mem::forget(pool);
    }

    #[test]
    fn capacity_classes_bound_the_slack() {
        assert_eq!(capacity(1), 4096);
        assert_eq!(capacity(5000), 8192);
        assert_eq!(capacity(12 << 10), 16 << 10);
        assert_eq!(capacity(300 << 10), 320 << 10);
        // A 1 MiB slice plus its item header: 64 KiB of slack, not the next class.
        assert_eq!(capacity((1 << 20) + 4096), (1 << 20) + (64 << 10));
        for len in (4096..(4 << 20)).step_by(4096 * 7) {
            let c = capacity(len);
            assert!(c >= len && c.is_multiple_of(4096));
            assert!(len <= 64 << 10 || c - len <= len / 4, "{len} -> {c}");
        }
    }
}
