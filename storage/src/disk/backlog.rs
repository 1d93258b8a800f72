//! The write backlog: bytes of inserts admitted and not yet landed. Past its budget an insert
//! is shed (refused at once) instead of queued: a device slower than the network would
//! otherwise gather a queue of item buffers, and their callers, without bound. A cache may
//! always decline to keep something; it may not run out of memory or descriptors doing so.

use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a write may be shed when the backlog is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Shed it: the value may go missing from the tiers without harm (nobody is waiting to
    /// read it back).
    Allowed,
    /// Queue it whatever the backlog holds: a reader will come back for it. The backlog is
    /// then bounded by those readers, not by the budget.
    Never,
}

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
    pub(crate) fn admit(&self, bytes: u64, shed: Shed) -> Option<Queued<'_>> {
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        let full = self.budget > 0 && before > 0 && before.saturating_add(bytes) > self.budget;
        if full && shed == Shed::Allowed {
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
        let first = b.admit(60, Shed::Allowed).expect("room");
        let second = b
            .admit(40, Shed::Allowed)
            .expect("room: exactly the budget");
        assert!(b.admit(1, Shed::Allowed).is_none(), "full");
        assert_eq!(b.queued(), 100, "a refusal leaves nothing behind");
        drop(first);
        assert_eq!(b.queued(), 40);
        let third = b.admit(60, Shed::Allowed).expect("room again");
        drop((second, third));
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn an_item_larger_than_the_budget_goes_alone() {
        let b = Backlog::new(100);
        let big = b
            .admit(500, Shed::Allowed)
            .expect("an empty backlog admits anything");
        assert!(b.admit(1, Shed::Allowed).is_none());
        drop(big);
        assert!(b.admit(1, Shed::Allowed).is_some());
    }

    #[test]
    fn a_write_that_may_not_be_shed_is_queued_past_the_budget() {
        let b = Backlog::new(100);
        let first = b.admit(100, Shed::Allowed).expect("room");
        assert!(b.admit(50, Shed::Allowed).is_none());
        let needed = b.admit(50, Shed::Never).expect("never shed");
        assert_eq!(b.queued(), 150);
        drop((first, needed));
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn a_zero_budget_is_unbounded() {
        let b = Backlog::new(0);
        let held: Vec<_> = (0..1000)
            .map(|_| b.admit(1 << 20, Shed::Allowed).expect("unbounded"))
            .collect();
        assert_eq!(b.queued(), 1000 << 20);
        drop(held);
        assert_eq!(b.queued(), 0);
    }
}
