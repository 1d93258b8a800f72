//! Reading the configuration file: `${ENV}` expansion, YAML parsing that names the bad key,
//! and the checks that need nothing but the values.

use std::path::Path;
use std::path::PathBuf;

use super::env::{expand_values, EnvError};
use super::Config;

/// A configuration error; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// `${ENV}` could not be expanded.
    #[error("{path}: {source}")]
    Env {
        /// The file.
        path: PathBuf,
        /// What could not be expanded.
        source: EnvError,
    },
    /// The YAML is malformed, or a key is unknown or has a bad value (the message names it).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, starting with the key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `routes[0].origin`.
        key: String,
        /// Why the value cannot work.
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ConfigError {
    /// An unacceptable value at `key` of the file at `path`.
    pub fn invalid(
        path: &Path,
        key: impl Into<String>,
        reason: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Config {
    /// Reads, expands and checks the file at `path`; relative paths in it become relative to
    /// the file.
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
            if let Some(p) = d.purge_log.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        }
        for r in cfg.routes.iter_mut() {
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
        }
        if let Some(p) = cfg.upgrade_socket.as_mut().filter(|p| p.is_relative()) {
            *p = base.join(&*p);
        }
        if let Some(ca) = cfg.tls.ca_file.as_mut() {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
            if !ca.is_file() {
                let why = format!("{} is not a readable file", ca.display());
                return Err(ConfigError::invalid(path, "tls.ca_file", why));
            }
        }
        Ok(cfg)
    }

    /// Parses and checks configuration text; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut doc: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        expand_values(&mut doc).map_err(|source| ConfigError::Env {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            if key == "." || key.is_empty() {
                parse_err(inner)
            } else {
                parse_err(format!("{key}: {inner}"))
            }
        })?;
        cfg.validate()
            .map_err(|(key, reason)| ConfigError::invalid(path, key, reason))?;
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
            match d.region_size.map(|r| r.0) {
                // Fitted regions are at least half the largest (`largest_region`), unless the
                // device holds only two; those two must still hold two slices each.
                None => {
                    let need = 2 * min_region(slice) + (1 << 20);
                    if d.size.is_some_and(|s| s.0 < need) {
                        return bad(
                            "cache.disk.size",
                            format!(
                                "too small for two regions of two {slice}-byte slices \
                                 (cache.slice): at least {need} bytes"
                            ),
                        );
                    }
                }
                Some(region) => {
                    if region < 1 << 20 || !region.is_multiple_of(4096) {
                        return bad(
                            "cache.disk.region_size",
                            format!("{region} bytes must be at least 1MiB and a multiple of 4KiB"),
                        );
                    }
                    if region > strata_storage::MAX_REGION_SIZE {
                        return bad(
                            "cache.disk.region_size",
                            format!(
                                "{region} bytes is too large: at most {} bytes (1GiB)",
                                strata_storage::MAX_REGION_SIZE
                            ),
                        );
                    }
                    if region < min_region(slice) {
                        return bad(
                            "cache.disk.region_size",
                            format!(
                                "{region} bytes cannot hold a slice of {slice} bytes (cache.slice); \
                                 a region must be larger than twice the slice"
                            ),
                        );
                    }
                }
            }
            if !(2..=4096).contains(&d.queue_depth) {
                return bad("cache.disk.queue_depth", "must be within 2..=4096".into());
            }
        }
        if self.threads == Some(0) {
            return bad("threads", "must be at least 1".into());
        }
        for (key, d) in [
            ("limits.header_timeout", self.limits.header_timeout),
            ("limits.idle_timeout", self.limits.idle_timeout),
        ] {
            if d.0.is_zero() {
                return bad(key, "must be more than zero".into());
            }
        }
        if !is_token(&self.via) {
            return bad(
                "via",
                format!(
                    "`{}` must be a token (letters, digits, !#$%&'*+-.^_`|~)",
                    self.via
                ),
            );
        }
        if http::HeaderName::from_bytes(self.cache.tag_header.as_bytes()).is_err() {
            return bad(
                "cache.tag_header",
                format!("`{}` is not a header field name", self.cache.tag_header),
            );
        }
        if self
            .admin
            .as_ref()
            .and_then(|a| a.token.as_ref())
            .is_some_and(|t| t.len() < 16 || t.chars().any(|c| c.is_whitespace()))
        {
            return bad(
                "admin.token",
                "must be at least 16 characters without spaces".into(),
            );
        }
        for (i, name) in self.cache.targeted_cache_control.iter().enumerate() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad(
                    &format!("cache.targeted_cache_control[{i}]"),
                    format!("`{name}` is not a header field name"),
                );
            }
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
            // The origin's and the bucket's values are checked by building the route.
            let given = [r.origin.is_some(), !r.origins.is_empty(), r.s3.is_some()];
            match given.iter().filter(|&&g| g).count() {
                1 => {}
                0 => {
                    return bad(
                        &format!("routes[{i}].origin"),
                        "required (or give origins, or s3)".into(),
                    )
                }
                _ => {
                    return bad(
                        &format!("routes[{i}].origin"),
                        "give one of origin, origins and s3".into(),
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

/// The smallest region that holds two slices of `slice` bytes with their item headers.
fn min_region(slice: u64) -> u64 {
    2 * slice + 64 * 1024
}

/// The largest region a node fits its device with when `cache.disk.region_size` is unset:
/// 16 MiB, or room for four slices if that is more (fitted regions are over half of it).
pub(crate) fn largest_region(slice: u64) -> u64 {
    (16 << 20).max((2 * min_region(slice)).next_multiple_of(4096))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Size;

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

    /// Unset, the region size is fitted to the device: a file too small for two regions of
    /// two slices is refused naming its size, and the largest region grows with the slice.
    #[test]
    fn an_unset_region_size_is_fitted_and_checked_against_the_file() {
        let cfg = parse(GOOD).expect("good");
        assert!(cfg
            .cache
            .disk
            .as_ref()
            .is_some_and(|d| d.region_size.is_none()));
        let small = GOOD
            .replace("size: 2GiB", "size: 16MiB")
            .replace("slice: 1MiB", "slice: 4MiB");
        let e = parse(&small).unwrap_err();
        assert!(
            e.contains("cache.disk.size") && e.contains("two regions"),
            "{e}"
        );
        assert!(parse(&small.replace("size: 16MiB", "size: 20MiB")).is_ok());
        assert_eq!(largest_region(1 << 20), 16 << 20);
        assert_eq!(largest_region(8 << 20), 2 * (16 << 20) + (128 << 10));
    }

    #[test]
    fn region_size_of_4gib_is_refused_naming_the_key() {
        let with = |r: &str| GOOD.replace("io: auto", &format!("io: auto\n    region_size: {r}"));
        let e = parse(&with("4GiB")).unwrap_err();
        assert!(e.contains("cache.disk.region_size"), "{e}");
        assert!(e.contains("at most"), "{e}");
        assert!(parse(&with("1GiB")).is_ok());
    }

    #[test]
    fn bad_prefix_is_named() {
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

    #[test]
    fn zero_client_timeouts_are_named() {
        for key in ["header_timeout", "idle_timeout"] {
            let e = parse(&format!("{GOOD}limits:\n  {key}: 0s\n")).unwrap_err();
            assert!(e.contains(&format!("limits.{key}")), "{e}");
        }
        let c = parse(GOOD).unwrap();
        assert_eq!(c.limits.header_timeout.0.as_secs(), 10);
    }
}
