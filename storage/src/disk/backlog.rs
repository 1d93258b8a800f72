//! The write backlog: bytes of inserts admitted and not yet landed. Past its budget an insert
//! is shed (refused at once) instead of queued: a device slower than the network would
//! otherwise gather a queue of item buffers, and their callers, without bound. A cache may
//! always decline to keep something; it may not run out of memory or descriptors doing so.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of writes in flight, and how many may be.
#[derive(Debug)]
pub(crate) struct Backlog {
    queued: AtomicU64,
    budget: u64,
}

/// A place in the backlog, given back when dropped (the write landed, failed or was
/// abandoned by its caller).
#[derive(Debug)]
pub(crate) struct Queued<'a> {
    backlog: &'a Backlog,
    bytes: u64,
}

impl Backlog {
    /// A backlog of at most `budget` bytes (0: unbounded).
    pub(crate) fn new(budget: u64) -> Self {
        Backlog {
            queued: AtomicU64::new(0),
            budget,
        }
    }

    /// A place for a write of `bytes`, or `None` when the backlog is full. A write is always
    /// admitted into an empty backlog, so an item larger than the budget is not refused for
    /// ever.
    pub(crate) fn admit(&self, bytes: u64) -> Option<Queued<'_>> {
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        if self.budget > 0 && before > 0 && before.saturating_add(bytes) > self.budget {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            return None;
        }
        Some(Queued {
            backlog: self,
            bytes,
        })
    }

    /// Bytes admitted and not yet landed.
    pub(crate) fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// The budget (0: unbounded).
    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.backlog.queued.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_past_the_budget_are_refused_until_places_are_given_back() {
        let b = Backlog::new(100);
        let first = b.admit(60).expect("room");
        let second = b.admit(40).expect("room: exactly the budget");
        assert!(b.admit(1).is_none(), "full");
        assert_eq!(b.queued(), 100, "a refusal leaves nothing behind");
        drop(first);
        assert_eq!(b.queued(), 40);
        let third = b.admit(60).expect("room again");
        drop((second, third));
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn an_item_larger_than_the_budget_goes_alone() {
        let b = Backlog::new(100);
        let big = b.admit(500).expect("an empty backlog admits anything");
        assert!(b.admit(1).is_none());
        drop(big);
        assert!(b.admit(1).is_some());
    }

    #[test]
    fn a_zero_budget_is_unbounded() {
        let b = Backlog::new(0);
        let held: Vec<_> = (0..1000)
            .map(|_| b.admit(1 << 20).expect("unbounded"))
            .collect();
        assert_eq!(b.queued(), 1000 << 20);
        drop(held);
        assert_eq!(b.queued(), 0);
    }
}
