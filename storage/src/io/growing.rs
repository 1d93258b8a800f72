//! An aligned buffer that one writer fills while readers hold views of what it has written:
//! how a value arriving from a network is gathered straight into the image the device writes,
//! and read by clients meanwhile, so a fill holds its bytes once.
//!
//! The buffer has a *window*, a range that only grows at its end. Bytes inside it are frozen:
//! readers get [`Bytes`] views of them, and nobody writes them again. The writer writes only
//! outside it (the value's next bytes, or a header before the value), through raw pointers, so
//! no `&mut` ever overlaps a reader's `&`. Once written, the buffer is lent to an io engine as
//! an [`AlignedBuf`] that keeps it alive; it returns to the pool when the last view is dropped.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::io::aligned::AlignedBuf;

/// The writer's handle: the only one that may write, so it is neither `Clone` nor shared.
pub(crate) struct GrowingBuf {
    buf: Arc<AlignedBuf>,
    /// The frozen bytes: readable by anyone, never written again.
    window: Range<usize>,
}

impl GrowingBuf {
    /// Takes `buf` (its bytes as the caller left them) with an empty window at `at`.
    ///
    /// Panics if `at` is past the end (a programming error).
    pub(crate) fn new(buf: AlignedBuf, at: usize) -> Self {
        assert!(at <= buf.len(), "window start past the buffer");
        GrowingBuf {
            buf: Arc::new(buf),
            window: at..at,
        }
    }

    /// The frozen range.
    pub(crate) fn window(&self) -> Range<usize> {
        self.window.clone()
    }

    /// Copies `bytes` to offset `at`, which must lie outside the window and inside the buffer.
    ///
    /// Panics otherwise (a programming error: the callers compute `at` from their own layout).
    pub(crate) fn write(&mut self, at: usize, bytes: &[u8]) {
        let end = at.checked_add(bytes.len()).expect("offset overflow");
        assert!(end <= self.buf.len(), "write past the buffer");
        assert!(
            end <= self.window.start || at >= self.window.end || bytes.is_empty(),
            "write into frozen bytes"
        );
        // SAFETY: the range is inside the allocation (checked above) and outside the window,
        // which is the only part any view or shared reference covers; `&mut self` makes this
        // the only writer, and `bytes` cannot alias the range (it would have to be a view of
        // it, and views cover only the window).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.buf.as_ptr().cast_mut().add(at),
                bytes.len(),
            )
        }
    }

    /// Freezes the next `n` bytes after the window (already written): they become readable.
    ///
    /// Panics past the buffer's end.
    pub(crate) fn freeze(&mut self, n: usize) {
        let end = self.window.end.checked_add(n).expect("window overflow");
        assert!(end <= self.buf.len(), "window past the buffer");
        self.window.end = end;
    }

    /// A view of `range`, which must lie inside the window (else `None`).
    pub(crate) fn view(&self, range: Range<usize>) -> Option<Bytes> {
        if range.start < self.window.start || range.end > self.window.end || range.is_empty() {
            return (range.is_empty()).then(Bytes::new);
        }
        Some(Bytes::from_owner(View {
            buf: self.buf.clone(),
            range,
        }))
    }

    /// Reads the whole buffer (window or not): the writer is not writing meanwhile.
    pub(crate) fn read_all<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: `&self` excludes the only writer for the call; views only read.
        f(unsafe { std::slice::from_raw_parts(self.buf.as_ptr(), self.buf.len()) })
    }

    /// Ends writing: the buffer as an [`AlignedBuf`] to hand to an io engine, alive (with every
    /// view) until the last of them is dropped.
    pub(crate) fn lend(self) -> AlignedBuf {
        AlignedBuf::lent(self.buf)
    }
}

/// Frozen bytes of a [`GrowingBuf`], the owner behind a [`Bytes`] view.
struct View {
    buf: Arc<AlignedBuf>,
    range: Range<usize>,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range was inside the window when the view was made, and frozen bytes
        // are never written again; the Arc keeps the allocation alive.
        unsafe {
            std::slice::from_raw_parts(self.buf.as_ptr().add(self.range.start), self.range.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_see_frozen_bytes_while_the_writer_goes_on() {
        let mut g = GrowingBuf::new(AlignedBuf::zeroed(8192, 4096), 32);
        g.write(32, b"hello");
        g.freeze(5);
        let first = g.view(32..37).expect("inside the window");
        g.write(37, b" world");
        g.freeze(6);
        // A header before the window may still be written.
        g.write(0, b"HDR");
        assert_eq!(&first[..], b"hello");
        assert_eq!(&g.view(32..43).expect("window")[..], b"hello world");
        assert!(g.view(32..44).is_none(), "past the window");
        assert!(g.view(0..3).is_none(), "before the window");
        g.read_all(|b| assert_eq!(&b[..3], b"HDR"));
        let lent = g.lend();
        drop(lent);
        // The view outlives both the writer and the lent buffer.
        assert_eq!(&first[..], b"hello");
    }

    #[test]
    #[should_panic(expected = "frozen")]
    fn frozen_bytes_are_never_written() {
        let mut g = GrowingBuf::new(AlignedBuf::zeroed(4096, 4096), 0);
        g.write(0, b"abc");
        g.freeze(3);
        g.write(2, b"x");
    }
}
