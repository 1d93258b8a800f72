//! Graceful shutdown: on SIGTERM or SIGINT stop taking work, wait for in-flight requests, exit.
//!
//! Pingora's own graceful path sleeps for the whole grace period even when the node is idle,
//! so Strata counts in-flight requests and tells Pingora to stop as soon as they are done.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// In-flight request accounting and the draining flag.
#[derive(Default)]
pub struct Drain {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
}

/// Held by a request while it runs.
pub struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Registers a request; it counts until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Requests currently running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Pingora's shutdown trigger, driven by Unix signals and the drain.
pub struct SignalWatch {
    /// Shared with the proxy.
    pub drain: Arc<Drain>,
    /// Longest wait for in-flight requests (`shutdown_grace`).
    pub grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
        self.drain.draining.store(true, Ordering::Release);
        tracing::info!(in_flight = self.drain.in_flight(), "draining");
        tokio::select! {
            _ = self.drain.wait_idle() => tracing::info!("drained"),
            _ = tokio::time::sleep(self.grace) => {
                tracing::warn!(in_flight = self.drain.in_flight(), "grace period over")
            }
            _ = term.recv() => tracing::warn!("second signal: exiting now"),
            _ = int.recv() => tracing::warn!("second signal: exiting now"),
        }
        ShutdownSignal::FastShutdown
    }
}
