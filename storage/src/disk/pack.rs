//! Packing items into write units: an item is addressed in blocks (512 bytes on most files),
//! but every write covers whole write units (4 KiB). The unit an item ends in is its *tail*:
//! the next item may start inside it, right after, if its write covers the unit again with the
//! tail's bytes before its own. That is only safe once the tail's write has landed: two writes
//! of one unit in flight at once may land in either order, and the older would wipe the newer.
//! So an item packs only onto a tail that has landed; otherwise it starts at the next unit, and
//! the rest of the tail's unit stays a hole (as every unit's rest did when items were padded to
//! whole units).
//!
//! Rewriting the tail's bytes is crash-safe: they are written again as they are, so a write
//! torn by a crash leaves them intact whichever sectors landed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::geometry::Geometry;
use crate::io::aligned::AlignedBuf;

/// The largest item packed: a packed item is copied behind its predecessor's bytes, which for
/// a large one (a 1 MiB slice) would cost more CPU and memory than the less than 4 KiB it saves;
/// it starts at the next unit and is written from its own image.
pub(crate) const PACK_MAX: usize = 128 << 10;

/// The write unit an item ends in, part filled: its bytes up to the item's end, and whether
/// the write that holds them has landed.
pub(crate) struct Tail {
    /// The first block of the unit (in its region).
    pub(crate) block: u32,
    /// The unit's bytes before the free space: set by the writer before its write is issued.
    bytes: Mutex<Vec<u8>>,
    /// Set once the device has the bytes.
    landed: AtomicBool,
}

impl Tail {
    /// The tail unit starting at `block`, not written yet.
    pub(crate) fn new(block: u32) -> Arc<Tail> {
        Arc::new(Tail {
            block,
            bytes: Mutex::new(Vec::new()),
            landed: AtomicBool::new(false),
        })
    }

    /// The tail an item (or a run of items) ending at block `end` leaves: none when it ends
    /// on a unit.
    pub(crate) fn after(geo: &Geometry, end: u32) -> Option<Arc<Tail>> {
        (end != geo.unit_up(end)).then(|| Tail::new(geo.unit_down(end)))
    }

    /// True once the write that holds the tail's bytes has landed: an item may then pack onto it.
    pub(crate) fn has_landed(&self) -> bool {
        self.landed.load(Ordering::Acquire)
    }

    /// Records that the tail's write landed (its bytes were set before the write was issued).
    pub(crate) fn land(&self) {
        self.landed.store(true, Ordering::Release);
    }

    /// Sets the tail's bytes (before the write that holds them is issued).
    fn set(&self, bytes: &[u8]) {
        let mut b = self.bytes.lock();
        b.clear();
        b.extend_from_slice(bytes);
    }
}

/// How a reserved item is written: onto the tail before it, and leaving one of its own.
#[derive(Default)]
pub(crate) struct Packing {
    /// The landed tail the item starts in; `None` when it starts at a unit.
    pub(crate) prefix: Option<Arc<Tail>>,
    /// The unit the item ends in, when it ends inside one; the writer sets its bytes.
    pub(crate) tail: Option<Arc<Tail>>,
}

impl Packing {
    /// Records that the item's write landed: the next item may pack onto its tail.
    pub(crate) fn land(&self) {
        if let Some(tail) = &self.tail {
            tail.land();
        }
    }
}

/// The write of an item reserved at `block` for `blocks` blocks, whose image (starting with the
/// item) is `image`: the block to write at and the buffer, whole write units. Sets the tail's
/// bytes from the buffer. A packed item is copied behind its prefix's bytes; an item starting
/// at a unit is written from its own image, which is whole units (item images are padded to
/// them when made, and a run of items copied forward is gathered into them).
pub(crate) fn unit_write(
    geo: &Geometry,
    block: u32,
    blocks: u32,
    image: AlignedBuf,
    packing: &Packing,
) -> (u32, AlignedBuf) {
    let b = geo.block;
    let item_len = blocks as usize * b;
    let (at, buf) = match &packing.prefix {
        Some(prefix) => {
            let before = prefix.bytes.lock();
            let o = (block - prefix.block) as usize * b;
            let len = (o + item_len).next_multiple_of(geo.write_unit());
            let mut buf = AlignedBuf::recycled(len, b);
            let dst = buf.as_mut_slice();
            // The prefix's bytes end at its item's last block; the blocks up to `o` were its
            // padding (zero). A reused buffer's bytes are all overwritten.
            let kept = before.len().min(o);
            dst[..kept].copy_from_slice(&before[..kept]);
            dst[kept..o].fill(0);
            dst[o..o + item_len].copy_from_slice(&image.as_slice()[..item_len]);
            dst[o + item_len..].fill(0);
            (prefix.block, buf)
        }
        None => {
            debug_assert!(image.len().is_multiple_of(geo.write_unit()));
            (block, image)
        }
    };
    if let Some(tail) = &packing.tail {
        let from = (tail.block - at) as usize * b;
        let to = (block + blocks - at) as usize * b;
        tail.set(&buf.as_slice()[from..to]);
    }
    (at, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        Geometry {
            block: 512,
            region_size: 1 << 20,
            region_count: 2,
        }
    }

    fn image(fill: u8, len: usize, padded: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(padded, 512);
        buf.as_mut_slice()[..len].fill(fill);
        buf
    }

    #[test]
    fn an_item_at_a_unit_is_written_from_its_image_and_leaves_its_tail() {
        let g = geo();
        // 600 bytes: two blocks, in the unit at block 8.
        let tail = Tail::new(8);
        let packing = Packing {
            prefix: None,
            tail: Some(tail.clone()),
        };
        let img = image(1, 600, 4096);
        let ptr = img.as_slice().as_ptr();
        let (at, buf) = unit_write(&g, 8, 2, img, &packing);
        assert_eq!((at, buf.len()), (8, 4096));
        assert_eq!(buf.as_slice().as_ptr(), ptr, "not copied");
        assert_eq!(tail.bytes.lock().len(), 1024);
        assert!(!tail.has_landed());
    }

    #[test]
    fn a_packed_item_rewrites_its_prefix_and_extends_the_tail() {
        let g = geo();
        let first = Tail::new(8);
        let (_, _) = unit_write(
            &g,
            8,
            2,
            image(1, 600, 4096),
            &Packing {
                prefix: None,
                tail: Some(first.clone()),
            },
        );
        first.land();
        // The next item, 5 000 bytes (10 blocks), starts at block 10 and ends in the unit at 16.
        let second = Tail::new(16);
        let (at, buf) = unit_write(
            &g,
            10,
            10,
            image(2, 5000, 8192),
            &Packing {
                prefix: Some(first),
                tail: Some(second.clone()),
            },
        );
        assert_eq!((at, buf.len()), (8, 8192));
        let s = buf.as_slice();
        assert!(s[..600].iter().all(|&x| x == 1));
        assert!(s[600..1024].iter().all(|&x| x == 0));
        assert!(s[1024..1024 + 5000].iter().all(|&x| x == 2));
        assert!(s[1024 + 5000..].iter().all(|&x| x == 0));
        // Its tail: the unit at block 16 up to its item's end (block 20).
        let t = second.bytes.lock();
        assert_eq!(t.len(), 2048);
        assert_eq!(&t[..], &s[4096..6144]);
    }
}
