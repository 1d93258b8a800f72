//! Building a node's parts from its configuration: the one place where every value the
//! config left unchecked (origins, buckets, JWT keys) is checked, for `strata check` and
//! start-up alike, with errors that name the key.

use std::path::Path;
use std::sync::Arc;

use strata_storage::{DiskConfig, EngineOptions, TieredCacheConfig};

use crate::config::{largest_region, Config, ConfigError};
use crate::node::tls::Certificates;
use crate::routing::Router;

/// The storage configuration a node config asks for.
pub(crate) fn storage_config(cfg: &Config) -> TieredCacheConfig {
    TieredCacheConfig {
        memory: cfg.cache.memory.0 as usize,
        disk: cfg.cache.disk.as_ref().map(|d| DiskConfig {
            path: d.path.clone(),
            size: d.size.map_or(0, |s| s.0),
            region_size: d
                .region_size
                .map_or_else(|| largest_region(cfg.cache.slice.0), |r| r.0),
            region_fit: d.region_size.is_none(),
            // A fitted or recovered region must hold a slice (a set one is checked already).
            largest_value: cfg.cache.slice.0,
            engine: d.io.0,
            engine_options: EngineOptions {
                queue_depth: d.queue_depth,
                ..EngineOptions::default()
            },
            overwrite: d.overwrite,
            eviction: Default::default(),
            write_queue: d.write_queue.0,
        }),
        admission: Default::default(),
    }
}

/// Where purge rules are kept: `cache.disk.purge_log`, else beside a cache file (a block
/// device has no "beside": without the key its purges last until the node stops, and the
/// start says so).
pub(crate) fn purge_log(cfg: &Config) -> Option<std::path::PathBuf> {
    let d = cfg.cache.disk.as_ref()?;
    if let Some(p) = &d.purge_log {
        return Some(p.clone());
    }
    let is_file = std::fs::metadata(&d.path).map_or(true, |m| m.is_file());
    if !is_file {
        tracing::warn!(
            device = %d.path.display(),
            "purges are not kept across restarts: set cache.disk.purge_log"
        );
        return None;
    }
    let mut p = d.path.clone().into_os_string();
    p.push(".purges");
    Some(p.into())
}

/// Loads the HTTPS listener's certificates, if `https` is set, naming the key at fault.
pub(crate) fn certificates(
    cfg: &Config,
    path: &Path,
) -> Result<Option<Arc<Certificates>>, ConfigError> {
    let Some(h) = &cfg.https else {
        return Ok(None);
    };
    if h.certificates.is_empty() {
        return Err(ConfigError::invalid(
            path,
            "https.certificates",
            "at least one certificate is required",
        ));
    }
    if cfg.https.as_ref().is_some_and(|h| h.listen == cfg.listen) {
        return Err(ConfigError::invalid(
            path,
            "https.listen",
            "must differ from listen",
        ));
    }
    Certificates::load(h)
        .map(Some)
        .map_err(|(key, e)| ConfigError::invalid(path, key, e))
}

/// Builds the router of `cfg` (read from `path`), naming the key at fault if it cannot work.
pub(crate) fn router(cfg: &Config, path: &Path) -> Result<Router, ConfigError> {
    Router::new(&cfg.routes, &cfg.cache.targeted_cache_control)
        .map_err(|(i, e)| ConfigError::invalid(path, format!("routes[{i}].{}", e.key()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
listen: 127.0.0.1:8080
cache:
  memory: 64MiB
routes:
  - name: a
    path_prefix: /a/
    origin: http://127.0.0.1:1/
  - name: b
    path_prefix: /b/
    s3: {endpoint: 'http://127.0.0.1:2', bucket: b, region: r}
  - name: c
    path_prefix: /c/
    public: true
    s3: {endpoint: 'http://127.0.0.1:2', bucket: c, region: r, access_key_id: k, secret_access_key: s}
";

    fn build(text: &str) -> Result<Router, String> {
        let p = Path::new("c.yaml");
        let cfg = Config::parse(text, p).map_err(|e| e.to_string())?;
        router(&cfg, p).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_origins_buckets_and_keys_are_named() {
        assert!(build(GOOD).is_ok());
        for (from, to, key) in [
            ("http://127.0.0.1:1/", "ftp://x/", "routes[0].origin"),
            ("bucket: b", "bucket: B!", "routes[1].s3.bucket"),
            ("region: r}", "region: r, access_key_id: k}", "routes[1].s3.secret_access_key"),
            ("    public: true\n", "", "routes[2].public"),
            (
                "origin: http://127.0.0.1:1/",
                "origin: http://127.0.0.1:1/\n    auth: {jwt: {algorithms: [HS256], secret: short}}",
                "routes[0].auth.jwt.secret",
            ),
        ] {
            let e = build(&GOOD.replace(from, to)).unwrap_err();
            assert!(e.starts_with(&format!("c.yaml: {key}: ")), "{to}: {e}");
        }
    }
}
