//! Reloading the configuration on SIGHUP: routes (origins, auth, rules), the targeted fields,
//! the access log switch, the log level and the HTTPS certificates (files read again) change
//! live; what cannot (listeners, threads, the cache tiers, TLS trust, `via`) is reported and
//! keeps its running value.
//!
//! The new file is checked exactly as `strata check` and start-up check it, and swapped in
//! whole or not at all: a request holds the route it started with to its end, so in-flight
//! requests finish on the configuration they began with.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::node::build;
use crate::node::tls::Certificates;
use crate::proxy::Live;

/// Changes the log filter of the running process (`log.level`); `Err` carries why not.
pub(crate) type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Reloads the configuration file of a running node.
pub(crate) struct Reloader {
    path: PathBuf,
    live: Live,
    /// The configuration in force (what a reload is compared with).
    current: Mutex<Config>,
    log_level: Option<LogLevelSetter>,
    /// The HTTPS listener's certificates, if it has one.
    certificates: Option<Arc<Certificates>>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reloaded {
    /// Routes now in force.
    pub(crate) routes: usize,
    /// Keys whose new values wait for a restart.
    pub(crate) need_restart: Vec<&'static str>,
}

impl Reloader {
    /// A reloader for the node started on `cfg`, read from `path`.
    pub(crate) fn new(
        path: &Path,
        cfg: Config,
        live: Live,
        log_level: Option<LogLevelSetter>,
        certificates: Option<Arc<Certificates>>,
    ) -> Reloader {
        Reloader {
            path: path.to_path_buf(),
            live,
            current: Mutex::new(cfg),
            log_level,
            certificates,
        }
    }

    /// Reads, checks and applies the configuration file; on any error nothing changes.
    pub(crate) fn reload(&self) -> Result<Reloaded, crate::config::ConfigError> {
        let new = Config::load(&self.path)?;
        let router = build::router(&new, &self.path)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let need_restart = fixed_changes(&current, &new);
        // The certificate files are read again even when the file names did not change: that
        // is how a renewed certificate is taken. They go first: a bad one refuses the reload.
        if let (Some(certs), Some(h)) = (&self.certificates, &new.https) {
            certs
                .reload(h)
                .map_err(|(key, e)| crate::config::ConfigError::invalid(&self.path, key, e))?;
        }
        // The trust store is fixed while running: the checks use the one in force.
        router.start_health_checks(current.tls.ca_file.as_deref());
        self.live.router.store(Arc::new(router));
        self.live
            .access_log
            .store(new.log.access, Ordering::Relaxed);
        if new.log.level != current.log.level {
            if let Some(set) = &self.log_level {
                let level = new.log.level.as_deref().unwrap_or("info");
                if let Err(why) = set(level) {
                    tracing::warn!(level, reason = %why, "log.level not changed");
                }
            }
        }
        let routes = new.routes.len();
        // What could not change keeps running as it was: remember it as it runs.
        let mut kept = new;
        keep_fixed(&current, &mut kept);
        *current = kept;
        Ok(Reloaded {
            routes,
            need_restart,
        })
    }

    /// Reloads, logging the outcome (a refused file leaves the node as it was).
    pub(crate) fn reload_logged(&self) {
        match self.reload() {
            Ok(r) => {
                tracing::info!(routes = r.routes, "configuration reloaded");
                if !r.need_restart.is_empty() {
                    tracing::warn!(
                        keys = %r.need_restart.join(", "),
                        "these settings cannot change while running; they take effect at the next start"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration stays")
            }
        }
    }
}

/// The keys, among those a running node cannot change, whose values differ.
fn fixed_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let d = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let listener = |c: &Config| d(&(c.h2c, c.https.as_ref().map(|h| (h.listen, h.http2))));
    let pairs: [(&'static str, String, String); 16] = [
        ("https.listen/http2, h2c", listener(old), listener(new)),
        ("limits", d(&old.limits), d(&new.limits)),
        (
            "forwarded_headers",
            d(&old.forwarded_headers),
            d(&new.forwarded_headers),
        ),
        (
            "cache.tag_header",
            d(&old.cache.tag_header),
            d(&new.cache.tag_header),
        ),
        (
            "upgrade_socket",
            d(&old.upgrade_socket),
            d(&new.upgrade_socket),
        ),
        ("listen", d(&old.listen), d(&new.listen)),
        ("admin", d(&old.admin), d(&new.admin)),
        ("threads", d(&old.threads), d(&new.threads)),
        (
            "shutdown_grace",
            d(&old.shutdown_grace),
            d(&new.shutdown_grace),
        ),
        ("tls", d(&old.tls), d(&new.tls)),
        ("log.format", d(&old.log.format), d(&new.log.format)),
        ("via", d(&old.via), d(&new.via)),
        ("cache.memory", d(&old.cache.memory), d(&new.cache.memory)),
        ("cache.disk", d(&old.cache.disk), d(&new.cache.disk)),
        ("cache.slice", d(&old.cache.slice), d(&new.cache.slice)),
        (
            "cache.lock_timeout/max_object_size",
            d(&(old.cache.lock_timeout, old.cache.max_object_size)),
            d(&(new.cache.lock_timeout, new.cache.max_object_size)),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(k, _, _)| k)
        .collect()
}

/// Copies into `new` the settings that kept their running values.
fn keep_fixed(running: &Config, new: &mut Config) {
    new.listen = running.listen;
    new.admin = running.admin.clone();
    new.threads = running.threads;
    new.shutdown_grace = running.shutdown_grace;
    new.tls = running.tls.clone();
    new.log.format = running.log.format;
    new.via = running.via.clone();
    new.forwarded_headers = running.forwarded_headers;
    new.limits = running.limits.clone();
    new.upgrade_socket = running.upgrade_socket.clone();
    new.h2c = running.h2c;
    // The listener stays as it started; its certificates and minimum version were reloaded.
    new.https = match (&running.https, new.https.take()) {
        (Some(r), Some(n)) => Some(crate::config::HttpsConfig {
            listen: r.listen,
            http2: r.http2,
            ..n
        }),
        (r, _) => r.clone(),
    };
    let targeted = std::mem::take(&mut new.cache.targeted_cache_control);
    new.cache = running.cache.clone();
    new.cache.targeted_cache_control = targeted;
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listen: 127.0.0.1:8080
cache:
  memory: 64MiB
routes:
  - name: a
    path_prefix: /a/
    origin: http://127.0.0.1:1/
";

    fn setup(dir: &Path, text: &str) -> Reloader {
        let path = dir.join("c.yaml");
        std::fs::write(&path, text).unwrap();
        let cfg = Config::load(&path).unwrap();
        let router = build::router(&cfg, &path).unwrap();
        let live = Live::new(router, cfg.log.access);
        Reloader::new(&path, cfg, live, None, None)
    }

    #[test]
    fn a_new_route_is_swapped_in_and_fixed_keys_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let r = setup(dir.path(), BASE);
        assert!(r.live.router.load().find(None, "/b/x").is_none());
        let more = BASE.replace("memory: 64MiB", "memory: 32MiB")
            + "  - name: b\n    path_prefix: /b/\n    origin: http://127.0.0.1:2/\n";
        std::fs::write(dir.path().join("c.yaml"), more).unwrap();
        let done = r.reload().unwrap();
        assert_eq!(
            done,
            Reloaded {
                routes: 2,
                need_restart: vec!["cache.memory"]
            }
        );
        assert_eq!(r.live.router.load().find(None, "/b/x").unwrap().name, "b");
        // The memory tier kept its size: a second reload of the same file reports it again.
        assert_eq!(r.reload().unwrap().need_restart, vec!["cache.memory"]);
    }

    #[test]
    fn a_broken_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = setup(dir.path(), BASE);
        for broken in [
            BASE.replace("path_prefix", "path_prefx"),
            BASE.replace("http://127.0.0.1:1/", "ftp://x/"),
            "listen: [".to_string(),
        ] {
            std::fs::write(dir.path().join("c.yaml"), &broken).unwrap();
            assert!(r.reload().is_err(), "{broken}");
            assert_eq!(r.live.router.load().find(None, "/a/x").unwrap().name, "a");
        }
    }
}
