//! Upgrading the binary without dropping a request (Pingora's graceful upgrade):
//!
//! 1. the new binary starts with `--upgrade` on the same configuration and waits on the
//!    upgrade socket (`upgrade_socket`) for the listening sockets;
//! 2. SIGQUIT to the old node: it sends them over, stops keeping connections alive, serves
//!    what is in flight for `shutdown_grace`, seals its cache and exits;
//! 3. the new node opens the cache device as soon as the old one has let go of it (until
//!    then new connections wait in the listen backlog; none is refused) and serves.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use strata_storage::{StorageError, TieredCache};

use crate::config::Config;
use crate::node::build;

/// Longest wait for the old node to hand the cache over, beyond its grace period: Pingora's
/// own pause after sending the sockets, and sealing the device.
const HANDOVER_SLACK: Duration = Duration::from_secs(30);

/// The Unix socket the listeners are handed over on: `upgrade_socket`, or one per public port
/// in the temporary directory.
pub(crate) fn socket(cfg: &Config) -> PathBuf {
    cfg.upgrade_socket.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("strata-upgrade-{}.sock", cfg.listen.port()))
    })
}

/// Opens the cache tiers; when upgrading, waits while the old node still holds the device.
pub(crate) async fn open_cache(cfg: &Config, upgrading: bool) -> Result<TieredCache, StorageError> {
    let limit = cfg.shutdown_grace.0 + HANDOVER_SLACK;
    let started = Instant::now();
    let mut told = false;
    loop {
        match TieredCache::open(build::storage_config(cfg)).await {
            // A cache file is locked by the old node; a block device is held by it (O_EXCL).
            Err(StorageError::DeviceLocked { .. } | StorageError::DeviceBusy { .. })
                if upgrading && started.elapsed() < limit =>
            {
                if !told {
                    tracing::info!("upgrade: waiting for the old node to release the cache device");
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}
