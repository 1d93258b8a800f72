//! Heap buffers aligned for O_DIRECT IO.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::io::bufpool;

/// A heap buffer whose address and length are multiples of its alignment; kept for reuse in a
/// pool private to the io layer when dropped.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// The allocation: at least `len` bytes, all of them initialised.
    layout: Layout,
    /// Set for a buffer lent by a [`GrowingBuf`](super::growing::GrowingBuf): the allocation
    /// belongs to that buffer (shared with readers of it); this one only keeps it alive and
    /// never writes through a reference.
    lent: Option<Arc<AlignedBuf>>,
}

// SAFETY: AlignedBuf owns its allocation (like Vec<u8>), or, lent, shares it through an Arc
// with readers that only read; no interior shared state.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reading the bytes (and a lent buffer refuses
// `as_mut_slice`).
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zeroed bytes aligned to `align`; `len` is rounded up to a multiple of `align`.
    ///
    /// Panics only on a non-power-of-two alignment (a programming error, never input-driven).
    pub fn zeroed(len: usize, align: usize) -> Self {
        let (mut buf, fresh) = Self::alloc(len, align, bufpool::layout);
        if !fresh {
            buf.as_mut_slice().fill(0);
        }
        buf
    }

    /// `len` bytes aligned to `align` whose contents are unspecified (a reused buffer's): for
    /// buffers that are overwritten whole, as by a read.
    pub fn recycled(len: usize, align: usize) -> Self {
        Self::alloc(len, align, bufpool::layout).0
    }

    /// Like [`AlignedBuf::recycled`], but with no slack beyond `align`: for a buffer the memory
    /// tier keeps as long as it keeps its value (a value gathered from a network), where a size
    /// class would hold up to a quarter more than the value.
    pub fn recycled_exact(len: usize, align: usize) -> Self {
        Self::alloc(len, align, bufpool::exact_layout).0
    }

    /// A pooled buffer, or a fresh zeroed one (then true).
    fn alloc(len: usize, align: usize, layout: fn(usize, usize) -> Layout) -> (Self, bool) {
        assert!(align.is_power_of_two(), "alignment must be a power of two");
        let len = align_up(len.max(1) as u64, align as u64) as usize;
        let layout = layout(len, align);
        let (ptr, fresh) = match bufpool::take(layout) {
            Some(ptr) => (ptr, false),
            None => (bufpool::fresh(layout), true),
        };
        let buf = AlignedBuf {
            ptr,
            len,
            layout,
            lent: None,
        };
        (buf, fresh)
    }

    /// A buffer that shares `owner`'s allocation for an io engine to write from.
    pub(crate) fn lent(owner: Arc<AlignedBuf>) -> Self {
        AlignedBuf {
            ptr: owner.ptr,
            len: owner.len,
            layout: owner.layout,
            lent: Some(owner),
        }
    }

    /// Length in bytes (a multiple of the alignment).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a buffer holds at least one aligned block.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bytes, read-only.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for layout.size() >= len initialised bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    ///
    /// Panics on a lent buffer (others may be reading it): only reads take one, and reads are
    /// given buffers of their own.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        assert!(self.lent.is_none(), "a lent buffer is read-only");
        // SAFETY: ptr is valid for layout.size() >= len initialised bytes while self lives, and
        // &mut self guarantees exclusive access for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer for IO submission; valid while `self` is alive and not moved out of. The
    /// device may write through it only for a read, into a buffer that is not lent.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Raw pointer to the first byte.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.lent.take().is_some() {
            // The owner frees (or pools) the allocation once its last user is gone.
            return;
        }
        // SAFETY: ptr is an allocation of exactly self.layout from the global allocator (fresh
        // or taken from the pool with this layout), all of it initialised (fresh buffers are
        // zeroed), owned by self alone, and self is never used again after drop.
        if !unsafe { bufpool::give(self.ptr, self.layout) } {
            // SAFETY: ptr was allocated with exactly this layout and is freed once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len())
            .field("align", &self.layout.align())
            .finish()
    }
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub(crate) fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let mut b = AlignedBuf::zeroed(5000, 4096);
        assert_eq!(b.len(), 8192);
        assert_eq!(b.as_mut_ptr() as usize % 4096, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[8191] = 7;
        assert_eq!(b.as_slice()[8191], 7);
    }

    #[test]
    fn zeroed_is_zero_even_when_reused() {
        // An alignment no other test uses, so a reused buffer is one this test dirtied.
        let align = 1 << 14;
        for _ in 0..4 {
            let mut a = AlignedBuf::recycled(3 * align, align);
            assert_eq!(a.len(), 3 * align);
            assert_eq!(a.as_mut_ptr() as usize % align, 0);
            a.as_mut_slice().fill(0xee);
            drop(a);
            let b = AlignedBuf::zeroed(3 * align, align);
            assert!(b.as_slice().iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn align_up_rounds() {
        assert_eq!(align_up(0, 4096), 0);
        assert_eq!(align_up(1, 4096), 4096);
        assert_eq!(align_up(4096, 4096), 4096);
        assert_eq!(align_up(4097, 512), 4608);
    }
}
