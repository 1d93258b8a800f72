//! Purging: rules that make stored responses older than them (to the millisecond) misses, by exact URL, by key
//! prefix or by tag (the origin's `Surrogate-Key`-style header, `cache.tag_header`).
//!
//! A purge records a rule and returns at once, whatever it covers: lookups treat a matching
//! object stored before the rule as missing and remove it then (lazy reclaim), so purging a
//! million objects costs one rule. Rules are appended to a log (`cache.disk.purge_log`,
//! synced before the purge is acknowledged) and read back at start, so a purged object never
//! comes back from the disk tier after a restart.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::cache::record::ObjectMeta;
use crate::http::date::unix_ms;

/// What a purge rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One URL's key (all its variants).
    Key(String),
    /// Every key starting with this.
    Prefix(String),
    /// Every object tagged with this.
    Tag(String),
}

impl Target {
    /// The kind, as the log and metrics spell it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Target::Key(_) => "path",
            Target::Prefix(_) => "prefix",
            Target::Tag(_) => "tag",
        }
    }

    fn value(&self) -> &str {
        match self {
            Target::Key(v) | Target::Prefix(v) | Target::Tag(v) => v,
        }
    }
}

/// Why a purge was not recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PurgeError {
    /// The log could not be written: the purge would not survive a restart.
    #[error("purge log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A value holds a tab or a line break (the log's separators) or is empty.
    #[error("a purge target must be non-empty and hold no tab or line break")]
    BadValue,
}

#[derive(Default)]
struct Rules {
    keys: HashMap<String, u64>,
    prefixes: Vec<(String, u64)>,
    tags: HashMap<String, u64>,
}

impl Rules {
    fn add(&mut self, t: Target, at: u64) {
        match t {
            Target::Key(k) => {
                let e = self.keys.entry(k).or_insert(at);
                *e = (*e).max(at);
            }
            Target::Prefix(p) => match self.prefixes.iter_mut().find(|(q, _)| *q == p) {
                Some((_, t)) => *t = (*t).max(at),
                None => self.prefixes.push((p, at)),
            },
            Target::Tag(g) => {
                let e = self.tags.entry(g).or_insert(at);
                *e = (*e).max(at);
            }
        }
    }
}

/// The purge rules of a node.
pub(crate) struct Purges {
    rules: RwLock<Rules>,
    log: Option<(PathBuf, Mutex<std::fs::File>)>,
    /// The response header whose values tag an object (lower-case).
    tag_header: String,
}

impl Purges {
    /// Rules read back from `log` (created if missing), tagging by `tag_header`; without a log
    /// purges last until the node stops.
    pub(crate) fn open(log: Option<&Path>, tag_header: &str) -> Result<Purges, PurgeError> {
        let mut rules = Rules::default();
        let log = match log {
            None => None,
            Some(path) => {
                let err = |source| PurgeError::Log {
                    path: path.to_path_buf(),
                    source,
                };
                match std::fs::read(path) {
                    Ok(bytes) => load(&bytes, &mut rules),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(err(e)),
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(err)?;
                Some((path.to_path_buf(), Mutex::new(file)))
            }
        };
        Ok(Purges {
            rules: RwLock::new(rules),
            log,
            tag_header: tag_header.to_ascii_lowercase(),
        })
    }

    /// Records a purge of `target` as of now (Unix milliseconds, returned); it holds once this
    /// returns.
    pub(crate) fn purge(&self, target: Target) -> Result<u64, PurgeError> {
        let v = target.value();
        if v.is_empty() || v.contains(['\t', '\n', '\r']) {
            return Err(PurgeError::BadValue);
        }
        let at = unix_ms(std::time::SystemTime::now());
        if let Some((path, file)) = &self.log {
            let line = format!("{at}\t{}\t{v}\n", target.kind());
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(line.as_bytes())
                .and_then(|()| f.sync_data())
                .map_err(|source| PurgeError::Log {
                    path: path.clone(),
                    source,
                })?;
        }
        self.rules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(target, at);
        Ok(at)
    }

    /// Whether the object stored under the URL key `base_key` is purged: a rule that matches
    /// it is as new as the object or newer (same second included: a purge never misses what
    /// was stored just before it).
    pub(crate) fn purged(&self, base_key: &str, meta: &ObjectMeta) -> bool {
        let r = self.rules.read().unwrap_or_else(|p| p.into_inner());
        let hit = |at: u64| at >= meta.stored_at_ms;
        if r.keys.get(base_key).is_some_and(|&at| hit(at)) {
            return true;
        }
        if r.prefixes
            .iter()
            .any(|(p, at)| hit(*at) && base_key.starts_with(p.as_str()))
        {
            return true;
        }
        if r.tags.is_empty() {
            return false;
        }
        meta.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&self.tag_header))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split([' ', ',', '\t']))
            .filter(|t| !t.is_empty())
            .any(|t| r.tags.get(t).is_some_and(|&at| hit(at)))
    }

    /// How many rules of each kind are in force (keys, prefixes, tags).
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let r = self.rules.read().unwrap_or_else(|p| p.into_inner());
        (r.keys.len(), r.prefixes.len(), r.tags.len())
    }
}

/// Reads log lines `at \t kind \t value`; a torn or foreign line (a crash mid-append) is
/// skipped, never fatal.
fn load(bytes: &[u8], rules: &mut Rules) {
    for line in bytes.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let mut f = line.splitn(3, '\t');
        let (Some(at), Some(kind), Some(v)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(at) = at.parse::<u64>() else { continue };
        if v.is_empty() {
            continue;
        }
        let t = match kind {
            "path" => Target::Key(v.to_string()),
            "prefix" => Target::Prefix(v.to_string()),
            "tag" => Target::Tag(v.to_string()),
            _ => continue,
        };
        rules.add(t, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::SystemTime;

    fn meta(stored_at_ms: u64, tags: &str) -> ObjectMeta {
        ObjectMeta {
            headers: vec![("surrogate-key".into(), tags.as_bytes().to_vec())],
            stored_at_ms,
            ..ObjectMeta::for_test(1, 1 << 20)
        }
    }

    #[test]
    fn rules_match_older_objects_only_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("purges");
        let p = Purges::open(Some(&log), "Surrogate-Key").unwrap();
        // A minute either side of the purges: a loaded machine may take more than a few
        // milliseconds between taking `now` and recording them.
        let now = unix_ms(SystemTime::now());
        let old = meta(now - 60_000, "a b");
        let new = meta(now + 60_000, "a b");
        assert!(!p.purged("k1", &old));
        p.purge(Target::Key("k1".into())).unwrap();
        p.purge(Target::Prefix("pre/".into())).unwrap();
        p.purge(Target::Tag("b".into())).unwrap();
        assert!(p.purged("k1", &old) && !p.purged("k1", &new));
        let older = |tags| meta(now - 60_000, tags);
        assert!(p.purged("pre/x", &older("")) && !p.purged("pr", &older("")));
        assert!(p.purged("other", &old) && !p.purged("other", &older("c")));
        drop(p);
        // A torn last line (a crash mid-append) is skipped.
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"123\tpre").unwrap();
        let again = Purges::open(Some(&log), "surrogate-key").unwrap();
        assert_eq!(again.counts(), (1, 1, 1));
        assert!(again.purged("k1", &old) && again.purged("other", &old));
    }

    #[test]
    fn values_with_separators_are_refused() {
        let p = Purges::open(None, "surrogate-key").unwrap();
        for bad in ["", "a\tb", "a\nb"] {
            assert!(p.purge(Target::Tag(bad.into())).is_err(), "{bad:?}");
        }
    }
}
