//! The YAML configuration: parsing, `${ENV}` expansion, and validation that names the bad key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use strata_storage::EngineKind;

use crate::auth::{JwtAuth, JwtConfig};
use crate::route::Origin;

/// The whole configuration of a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public listener (`listen`).
    pub listen: SocketAddr,
    /// Admin listener (`admin`).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Worker threads of the proxy (`threads`, default: one per core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// How long a shutdown waits for in-flight requests (`shutdown_grace`, default 5s).
    #[serde(default = "default_grace")]
    pub shutdown_grace: Dur,
    /// Logging (`log`).
    #[serde(default)]
    pub log: LogConfig,
    /// TLS towards origins (`tls`).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Cache tiers (`cache`).
    pub cache: CacheConfig,
    /// Routes (`routes`), matched by longest `path_prefix`.
    pub routes: Vec<RouteConfig>,
}

/// `admin:`: the admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `admin.listen`.
    pub listen: SocketAddr,
}

/// `log:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `log.format`: `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// `log.level`: a tracing filter such as `info` or `strata=debug` (default `info`; `RUST_LOG` wins).
    #[serde(default)]
    pub level: Option<String>,
}

/// `tls:`: how HTTPS origins are verified.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `tls.ca_file`: a PEM bundle trusted for HTTPS origins instead of the system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `cache:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `cache.memory`: L1 budget.
    pub memory: Size,
    /// `cache.disk`: the L2 device; absent means memory only.
    #[serde(default)]
    pub disk: Option<DiskConfig>,
    /// `cache.slice`: size of the pieces large objects are stored in (default 1MiB).
    #[serde(default = "default_slice")]
    pub slice: Size,
    /// `cache.lock_timeout`: how long a client waits on another's fill that makes no progress
    /// before fetching for itself (default 5s).
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Dur,
}

/// `cache.disk:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// `cache.disk.path`: a file (created and preallocated) or a block device.
    pub path: PathBuf,
    /// `cache.disk.size`: size of a file; ignored for a block device.
    #[serde(default)]
    pub size: Option<Size>,
    /// `cache.disk.io`: `auto`, `io_uring` or `psync`.
    #[serde(default)]
    pub io: IoEngine,
    /// `cache.disk.region_size`: bytes per region (default 16MiB).
    #[serde(default = "default_region")]
    pub region_size: Size,
    /// `cache.disk.overwrite`: format the device even if it holds other data (default false).
    #[serde(default)]
    pub overwrite: bool,
    /// `cache.disk.queue_depth`: io_uring queue depth (default 64).
    #[serde(default = "default_queue_depth")]
    pub queue_depth: u32,
}

/// `cache.disk.io`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoEngine(pub EngineKind);

impl<'de> Deserialize<'de> for IoEngine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(IoEngine).map_err(serde::de::Error::custom)
    }
}

/// `routes[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `routes[].name`: a label for logs and metrics.
    pub name: String,
    /// `routes[].path_prefix`: requests whose path starts with it use this route.
    pub path_prefix: String,
    /// `routes[].origin`: base URL the prefix maps to (`http://` or `https://`).
    #[serde(default)]
    pub origin: Option<String>,
    /// `routes[].s3`: an S3 bucket instead of an HTTP origin.
    #[serde(default)]
    pub s3: Option<crate::s3::S3Config>,
    /// `routes[].negative_ttl`: freshness for 404 and 410 answers that state none (default: not stored).
    #[serde(default)]
    pub negative_ttl: Option<Dur>,
    /// `routes[].default_ttl`: freshness for responses that state none (default: RFC heuristics only).
    #[serde(default)]
    pub default_ttl: Option<Dur>,
    /// `routes[].ignore_cache_control`: disregard the origin's Cache-Control, Expires and
    /// Pragma and use `default_ttl` (a deliberate deviation from RFC 9111; default false).
    #[serde(default)]
    pub ignore_cache_control: bool,
    /// `routes[].auth`: who may use the route.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// `routes[].auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `routes[].auth.jwt`.
    pub jwt: JwtConfig,
}

/// A byte size written as `256MiB`, `1GiB`, `4096` …
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(s) => parse_size::Config::new()
                .with_binary()
                .parse_size(s.trim())
                .map(Size)
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "invalid size `{s}` ({e}); write e.g. 256MiB or 2GiB"
                    ))
                }),
        }
    }
}

/// A duration written as `10m`, `1s`, `250ms` …
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{s}` ({e}); write e.g. 10m or 30s"
            ))
        })
    }
}

fn default_grace() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_slice() -> Size {
    Size(1 << 20)
}
fn default_lock_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_queue_depth() -> u32 {
    64
}
fn default_region() -> Size {
    Size(16 << 20)
}

/// A configuration error; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML is malformed or a key is unknown or has a bad value.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value parsed but is not acceptable.
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads, expands and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        // Relative paths in the file are relative to the file, not to where strata was started.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(d) = cfg.cache.disk.as_mut() {
            if d.path.is_relative() {
                d.path = base.join(&d.path);
            }
        }
        for (i, r) in cfg.routes.iter_mut().enumerate() {
            let Some(auth) = r.auth.as_mut() else {
                continue;
            };
            for p in [&mut auth.jwt.public_key_file, &mut auth.jwt.jwks_file]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
            if let Err((key, message)) = JwtAuth::new(&auth.jwt) {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: format!("routes[{i}].auth.jwt.{key}"),
                    message,
                });
            }
        }
        if let Some(ca) = cfg.tls.ca_file.as_mut() {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
            if !ca.is_file() {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: "tls.ca_file".into(),
                    message: format!("{} is not a readable file", ca.display()),
                });
            }
        }
        Ok(cfg)
    }

    /// Parses and validates configuration text; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let text = expand_env(text).map_err(parse_err)?;
        let de = serde_norway::Deserializer::from_str(&text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            if key == "." || key.is_empty() {
                parse_err(inner)
            } else {
                parse_err(format!("{key}: {inner}"))
            }
        })?;
        cfg.validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((k.to_string(), m));
        let slice = self.cache.slice.0;
        if !(64 * 1024..=64 << 20).contains(&slice) {
            return bad(
                "cache.slice",
                format!("{slice} bytes is outside 64KiB..=64MiB"),
            );
        }
        if let Some(d) = &self.cache.disk {
            if d.size.is_none() && !is_block_device(&d.path) {
                return bad(
                    "cache.disk.size",
                    "required when cache.disk.path is a file".into(),
                );
            }
            if d.size.is_some_and(|s| s.0 < 8 << 20) {
                return bad("cache.disk.size", "must be at least 8MiB".into());
            }
            let region = d.region_size.0;
            if region < 1 << 20 || !region.is_multiple_of(4096) {
                return bad(
                    "cache.disk.region_size",
                    format!("{region} bytes must be at least 1MiB and a multiple of 4KiB"),
                );
            }
            if region < 2 * slice + 64 * 1024 {
                return bad(
                    "cache.disk.region_size",
                    format!(
                        "{region} bytes cannot hold a slice of {slice} bytes (cache.slice); \
                         a region must be larger than twice the slice"
                    ),
                );
            }
            if !(2..=4096).contains(&d.queue_depth) {
                return bad("cache.disk.queue_depth", "must be within 2..=4096".into());
            }
        }
        if self.threads == Some(0) {
            return bad("threads", "must be at least 1".into());
        }
        if self.routes.is_empty() {
            return bad("routes", "at least one route is required".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.name.trim().is_empty() {
                return bad(&format!("routes[{i}].name"), "must not be empty".into());
            }
            if !names.insert(r.name.as_str()) {
                return bad(
                    &format!("routes[{i}].name"),
                    format!("`{}` is used by another route", r.name),
                );
            }
            if !r.path_prefix.starts_with('/') {
                return bad(
                    &format!("routes[{i}].path_prefix"),
                    format!("`{}` must start with /", r.path_prefix),
                );
            }
            match (&r.origin, &r.s3) {
                (Some(o), None) => {
                    if let Err(e) = Origin::parse(o) {
                        return bad(&format!("routes[{i}].origin"), e);
                    }
                }
                (None, Some(s3)) => {
                    if let Err((key, e)) = s3.validate() {
                        return bad(&format!("routes[{i}].s3.{key}"), e);
                    }
                }
                (Some(_), Some(_)) => {
                    return bad(
                        &format!("routes[{i}].s3"),
                        "give either origin or s3, not both".into(),
                    )
                }
                (None, None) => {
                    return bad(
                        &format!("routes[{i}].origin"),
                        "required (or give s3)".into(),
                    )
                }
            }
            if r.ignore_cache_control && r.default_ttl.is_none() {
                return bad(
                    &format!("routes[{i}].default_ttl"),
                    "required when ignore_cache_control is true".into(),
                );
            }
        }
        Ok(())
    }
}

fn is_block_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
}

/// Replaces `${NAME}` with the environment variable NAME; an unset variable is an error.
fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${ in configuration".to_string())?;
        let name = &after[..end];
        let value = std::env::var(name)
            .map_err(|_| format!("environment variable {name} (used as ${{{name}}}) is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:9090
cache:
  memory: 256MiB
  disk:
    path: ./var/cache.img
    size: 2GiB
    io: auto
  slice: 1MiB
routes:
  - name: debian
    path_prefix: /debian/
    origin: http://deb.debian.org/debian/
";

    fn parse(t: &str) -> Result<Config, String> {
        Config::parse(t, Path::new("c.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_documented_keys() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.cache.memory, Size(256 << 20));
        assert_eq!(c.cache.disk.as_ref().unwrap().size, Some(Size(2 << 30)));
        assert_eq!(c.cache.slice, Size(1 << 20));
        assert_eq!(c.routes[0].path_prefix, "/debian/");
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = parse(&GOOD.replace("memory: 256MiB", "memroy: 256MiB")).unwrap_err();
        assert!(e.contains("memroy"), "{e}");
        assert!(e.contains("cache"), "{e}");
    }

    #[test]
    fn bad_size_is_named() {
        let e = parse(&GOOD.replace("size: 2GiB", "size: 2 potatoes")).unwrap_err();
        assert!(e.contains("cache.disk.size"), "{e}");
        assert!(e.contains("invalid size"), "{e}");
    }

    #[test]
    fn bad_origin_and_prefix_are_named() {
        let e = parse(&GOOD.replace("http://deb", "ftp://deb")).unwrap_err();
        assert!(e.contains("routes[0].origin"), "{e}");
        let e = parse(&GOOD.replace("path_prefix: /debian/", "path_prefix: debian/")).unwrap_err();
        assert!(e.contains("routes[0].path_prefix"), "{e}");
    }

    #[test]
    fn env_is_expanded_and_missing_env_is_named() {
        std::env::set_var("STRATA_TEST_MEM", "64MiB");
        let c = parse(&GOOD.replace("256MiB", "${STRATA_TEST_MEM}")).unwrap();
        assert_eq!(c.cache.memory, Size(64 << 20));
        let e = parse(&GOOD.replace("256MiB", "${STRATA_TEST_UNSET_VAR}")).unwrap_err();
        assert!(e.contains("STRATA_TEST_UNSET_VAR"), "{e}");
    }
}
