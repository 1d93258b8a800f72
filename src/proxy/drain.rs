//! In-flight request accounting and the draining flag: requests hold a guard while they run,
//! and shutdown waits for the count to reach zero.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// In-flight request accounting and the draining flag.
#[derive(Default)]
pub(crate) struct Drain {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
}

/// Held by a request while it runs.
pub(crate) struct RequestGuard(Arc<Drain>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Registers a request; it counts until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// Starts draining: readiness turns false and connections are no longer kept alive.
    pub(crate) fn start(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// True once shutdown has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Requests currently running.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no request runs.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}
