//! Region health: failures counted per region, and regions that keep failing taken out of use.
//!
//! A device that fails in one place (a worn-out range of flash, a bad sector) fails there again:
//! every read there costs a device round trip and a miss, and every write there is lost. A
//! region whose reads fail (or whose items fail their checksum) [`RETIRE_AFTER`] times in a
//! row with no read succeeding in between, or whose writes fail as often with no write
//! succeeding, is retired for the rest of the run: the allocator neither fills nor reclaims it
//! again, and its items are dropped as they are found broken. Reads and writes count apart (a
//! region may take writes and still not read back). A transient error resets with the next
//! success of its kind and retires nothing.
//!
//! A device whose writes fail everywhere (full, vanished) would otherwise send the allocator
//! through every region, reclaiming good ones for writes that cannot land: after
//! [`SUSPEND_AFTER`] write failures in a row on the device, writes are suspended for a back-off
//! (1 s, doubling to 60 s) and inserts are refused at once; the first write after it probes the
//! device, and one success ends the back-off.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::stats::{bump, Counters};

/// Consecutive failures after which a region is retired.
pub(crate) const RETIRE_AFTER: u32 = 3;

/// Consecutive write failures on the device after which writes are suspended.
pub(crate) const SUSPEND_AFTER: u32 = 8;

/// The first back-off of suspended writes, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// Which way an IO went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// A read (or an item that failed its checksum).
    Read,
    /// A write.
    Write,
}

/// Failures in a row and retirement, per region.
pub(crate) struct Health {
    reads: Vec<AtomicU32>,
    writes: Vec<AtomicU32>,
    retired: Vec<AtomicBool>,
    /// Write failures in a row on the whole device.
    device_writes: AtomicU32,
    /// Milliseconds since `epoch` until which writes are suspended.
    suspended_until: AtomicU64,
    /// The next back-off, in milliseconds.
    backoff_ms: AtomicU64,
    epoch: Instant,
}

impl Health {
    /// Every region healthy.
    pub(crate) fn new(regions: u32) -> Self {
        let counts = || (0..regions).map(|_| AtomicU32::new(0)).collect();
        Health {
            reads: counts(),
            writes: counts(),
            retired: (0..regions).map(|_| AtomicBool::new(false)).collect(),
            device_writes: AtomicU32::new(0),
            suspended_until: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(BACKOFF.0.as_millis() as u64),
            epoch: Instant::now(),
        }
    }

    fn strikes(&self, way: Way) -> &[AtomicU32] {
        match way {
            Way::Read => &self.reads,
            Way::Write => &self.writes,
        }
    }

    /// Counts a failure in `region`; retires it at the [`RETIRE_AFTER`]th in a row.
    pub(crate) fn failed(&self, region: u32, way: Way, counters: &Counters) {
        if way == Way::Write {
            self.device_write_failed(counters);
        }
        let Some(strikes) = self.strikes(way).get(region as usize) else {
            return;
        };
        if strikes.fetch_add(1, Ordering::AcqRel) + 1 < RETIRE_AFTER {
            return;
        }
        if let Some(r) = self.retired.get(region as usize) {
            if !r.swap(true, Ordering::AcqRel) {
                bump(&counters.regions_retired, 1);
                tracing::error!(
                    region,
                    failures = RETIRE_AFTER,
                    ?way,
                    "disk region keeps failing; retired for the rest of the run"
                );
            }
        }
    }

    /// An IO in `region` succeeded: the failures of its kind before it were transient.
    pub(crate) fn succeeded(&self, region: u32, way: Way) {
        let first = BACKOFF.0.as_millis() as u64;
        // Loads first: the common case (nothing failed) writes nothing shared.
        if way == Way::Write
            && (self.device_writes.load(Ordering::Relaxed) != 0
                || self.backoff_ms.load(Ordering::Relaxed) != first)
        {
            self.device_writes.store(0, Ordering::Relaxed);
            self.backoff_ms.store(first, Ordering::Relaxed);
        }
        if let Some(s) = self.strikes(way).get(region as usize) {
            // A load first: the common case (no failures) writes nothing shared.
            if s.load(Ordering::Relaxed) != 0 {
                s.store(0, Ordering::Relaxed);
            }
        }
    }

    fn device_write_failed(&self, counters: &Counters) {
        if self.device_writes.fetch_add(1, Ordering::AcqRel) + 1 < SUSPEND_AFTER {
            return;
        }
        self.device_writes.store(0, Ordering::Release);
        let backoff = self.backoff_ms.load(Ordering::Relaxed);
        let next = (backoff * 2).min(BACKOFF.1.as_millis() as u64);
        self.backoff_ms.store(next, Ordering::Relaxed);
        let until = self.now_ms() + backoff;
        self.suspended_until.fetch_max(until, Ordering::AcqRel);
        bump(&counters.write_suspensions, 1);
        tracing::error!(
            failures = SUSPEND_AFTER,
            backoff_ms = backoff,
            "disk writes keep failing; writes suspended"
        );
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether writes are suspended now (the device kept failing them).
    pub(crate) fn writes_suspended(&self) -> bool {
        self.now_ms() < self.suspended_until.load(Ordering::Acquire)
    }

    /// Whether `region` is out of use.
    pub(crate) fn is_retired(&self, region: u32) -> bool {
        self.retired
            .get(region as usize)
            .is_some_and(|r| r.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_in_a_row_retire_a_region() {
        let (h, c) = (Health::new(4), Counters::default());
        for _ in 0..5 {
            h.failed(1, Way::Read, &c);
            h.failed(1, Way::Read, &c);
            h.succeeded(1, Way::Read);
        }
        assert!(!h.is_retired(1), "transient failures retired the region");
        // Writes that land do not excuse reads that keep failing.
        for _ in 0..RETIRE_AFTER {
            h.failed(2, Way::Read, &c);
            h.succeeded(2, Way::Write);
        }
        h.failed(2, Way::Read, &c);
        assert!(h.is_retired(2));
        assert!(!h.is_retired(0) && !h.is_retired(3));
        assert_eq!(c.regions_retired.load(Ordering::Relaxed), 1);
        assert!(!h.writes_suspended());
        // Out of range (a crafted address): ignored, never a panic.
        h.failed(99, Way::Write, &c);
        assert!(!h.is_retired(99));
    }

    #[test]
    fn writes_failing_everywhere_are_suspended_until_one_lands() {
        let (h, c) = (Health::new(64), Counters::default());
        for r in 0..SUSPEND_AFTER - 1 {
            h.failed(r, Way::Write, &c);
        }
        assert!(!h.writes_suspended());
        h.failed(40, Way::Write, &c);
        assert!(
            h.writes_suspended(),
            "8 write failures in a row on the device"
        );
        assert_eq!(c.write_suspensions.load(Ordering::Relaxed), 1);
        // Failures in regions each once: none of them is retired for it.
        assert!((0..64).all(|r| !h.is_retired(r)));
        // The back-off doubles, and a landed write resets it.
        assert_eq!(h.backoff_ms.load(Ordering::Relaxed), 2000);
        h.succeeded(3, Way::Write);
        assert_eq!(h.backoff_ms.load(Ordering::Relaxed), 1000);
    }
}
