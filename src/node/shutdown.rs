//! The node's signals: SIGHUP reloads the configuration; SIGTERM or SIGINT stop taking work,
//! wait for in-flight requests, and exit; SIGQUIT hands the listeners to a new node started
//! with `--upgrade`, then drains and exits.
//!
//! Pingora's own graceful path sleeps for the whole grace period even when the node is idle,
//! so Strata counts in-flight requests and tells Pingora to stop as soon as they are done.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::node::notify::notify;
use crate::node::reload::Reloader;
use crate::proxy::Drain;

/// Pingora's shutdown trigger, driven by Unix signals and the drain.
pub(crate) struct SignalWatch {
    /// Shared with the proxy.
    pub(crate) drain: Arc<Drain>,
    /// Longest wait for in-flight requests (`shutdown_grace`).
    pub(crate) grace: Duration,
    /// Applies the configuration file again on SIGHUP.
    pub(crate) reloader: Reloader,
}

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        // Pingora asks for this signal once its services run: the node serves.
        notify("READY=1");
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!(signal = "SIGTERM", "shutdown requested");
                    break;
                }
                _ = int.recv() => {
                    tracing::info!(signal = "SIGINT", "shutdown requested");
                    break;
                }
                _ = quit.recv() => {
                    // A new node waits for the listeners: Pingora hands them over, then this
                    // one serves what is in flight for shutdown_grace and exits. Clients on
                    // kept-alive connections are moved over by closing them after their
                    // request.
                    tracing::info!(signal = "SIGQUIT", "upgrade: handing the listeners over");
                    notify("STOPPING=1");
                    self.drain.start();
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "reloading the configuration");
                    notify("RELOADING=1");
                    self.reloader.reload_logged();
                    notify("READY=1");
                }
            }
        }
        notify("STOPPING=1");
        self.drain.start();
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
