//! A route's per-path caching rules (`routes[].rules`): globs over the path below the route's
//! prefix, evaluated in order, the first match setting lifetimes, stale windows, whether to
//! cache at all and whether the query is part of the key.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::RuleConfig;
use crate::http::freshness::Overrides;

/// What applies to the requests of one path.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Freshness overrides (the route's, with the rule's fields over them).
    pub(crate) overrides: Overrides,
    /// Whether responses are cached at all.
    pub(crate) cache: bool,
    /// Whether the query string is part of the key (and sent to the origin).
    pub(crate) query: bool,
}

/// Why a rule cannot be built; [`RuleError::key`] names the key relative to the route.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RuleError {
    /// The glob does not compile.
    #[error("`{pattern}` is not a glob: {source}")]
    Glob {
        /// Index of the rule.
        index: usize,
        /// The pattern as written.
        pattern: String,
        /// What the glob compiler said.
        source: globset::Error,
    },
    /// `ttl` and `default_ttl` are both set: one would silently lose.
    #[error("set ttl (replaces the origin's lifetime) or default_ttl (used when it states none), not both")]
    BothTtls {
        /// Index of the rule.
        index: usize,
    },
}

impl RuleError {
    /// The key at fault, relative to the route.
    pub(crate) fn key(&self) -> String {
        match self {
            RuleError::Glob { index, .. } => format!("rules[{index}].match"),
            RuleError::BothTtls { index } => format!("rules[{index}].ttl"),
        }
    }
}

/// A route's rules, compiled into one matcher.
#[derive(Debug)]
pub(crate) struct Rules {
    set: GlobSet,
    rules: Vec<Rule>,
    /// What applies where no rule matches: the route's own settings.
    default: Rule,
}

impl Rules {
    /// Compiles `cfgs` over the route's own overrides `base`.
    pub(crate) fn new(cfgs: &[RuleConfig], base: &Overrides) -> Result<Rules, RuleError> {
        let mut set = GlobSetBuilder::new();
        let mut rules = Vec::with_capacity(cfgs.len());
        for (index, c) in cfgs.iter().enumerate() {
            set.add(glob(&c.pattern).map_err(|source| RuleError::Glob {
                index,
                pattern: c.pattern.clone(),
                source,
            })?);
            if c.ttl.is_some() && c.default_ttl.is_some() {
                return Err(RuleError::BothTtls { index });
            }
            let mut overrides = base.clone();
            if let Some(d) = c.default_ttl {
                overrides.default_ttl = Some(d.0);
            }
            if let Some(t) = c.ttl {
                overrides.default_ttl = Some(t.0);
                overrides.ignore_cache_control = true;
            }
            if let Some(w) = c.stale_while_revalidate {
                overrides.stale_while_revalidate = Some(w.0);
            }
            if let Some(w) = c.stale_if_error {
                overrides.stale_if_error = Some(w.0);
            }
            rules.push(Rule {
                overrides,
                cache: c.cache.unwrap_or(true),
                query: c.query.unwrap_or(true),
            });
        }
        let set = set.build().map_err(|source| RuleError::Glob {
            index: 0,
            pattern: String::new(),
            source,
        })?;
        Ok(Rules {
            set,
            rules,
            default: Rule {
                overrides: base.clone(),
                cache: true,
                query: true,
            },
        })
    }

    /// The rule for `path` (below the route's prefix, no query): the first that matches, or
    /// the route's own settings.
    pub(crate) fn find(&self, path: &str) -> &Rule {
        if self.rules.is_empty() {
            return &self.default;
        }
        // `matches` lists every matching glob; the first written wins.
        self.set
            .matches(path)
            .into_iter()
            .min()
            .and_then(|i| self.rules.get(i))
            .unwrap_or(&self.default)
    }
}

/// A glob where `*` stays within one path segment and `**` crosses segments.
fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use crate::config::Dur;

    fn rule(pattern: &str) -> RuleConfig {
        RuleConfig {
            pattern: pattern.into(),
            ..RuleConfig::default()
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let hour = Some(Dur(Duration::from_secs(3600)));
        let rules = Rules::new(
            &[
                RuleConfig {
                    ttl: hour,
                    ..rule("dists/**/by-hash/**")
                },
                RuleConfig {
                    default_ttl: Some(Dur(Duration::from_secs(60))),
                    ..rule("dists/**")
                },
                RuleConfig {
                    cache: Some(false),
                    query: Some(false),
                    ..rule("*.php")
                },
            ],
            &Overrides::default(),
        )
        .unwrap();
        let by_hash = rules.find("dists/bookworm/main/binary-amd64/by-hash/SHA256/ab");
        assert!(by_hash.overrides.ignore_cache_control);
        let release = rules.find("dists/bookworm/Release");
        assert_eq!(
            (
                release.overrides.default_ttl,
                release.overrides.ignore_cache_control
            ),
            (Some(Duration::from_secs(60)), false)
        );
        // `*` does not cross a slash.
        assert!(rules.find("index.php").cache.not());
        assert!(rules.find("a/index.php").cache);
        assert!(rules
            .find("pool/main/x.deb")
            .overrides
            .default_ttl
            .is_none());
    }

    #[test]
    fn bad_rules_name_their_key() {
        let e = Rules::new(&[rule("ok/**"), rule("a[")], &Overrides::default()).unwrap_err();
        assert_eq!(e.key(), "rules[1].match");
        let both = RuleConfig {
            ttl: Some(Dur(Duration::from_secs(1))),
            default_ttl: Some(Dur(Duration::from_secs(1))),
            ..rule("x")
        };
        let e = Rules::new(&[both], &Overrides::default()).unwrap_err();
        assert_eq!(e.key(), "rules[0].ttl");
    }

    use std::ops::Not;
}
