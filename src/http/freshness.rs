//! Storability, freshness and reuse of stored responses (RFC 9111 for a shared cache, with
//! RFC 5861's stale-while-revalidate and stale-if-error).
//!
//! Written against the RFC rather than on `http-cache-semantics`: that crate ignores `Date` in
//! the age (§4.2.3 apparent age), lets `Pragma` override a present `Cache-Control` (§5.4),
//! treats `proxy-revalidate` as "stale at once", and has no stale-while-revalidate or
//! stale-if-error; the table-driven tests found each of these.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, StatusCode};

use crate::http::date::{http_date, unix};
use crate::http::headers::{cache_control, decimal};
use crate::http::targeted;

/// Per-route (and per-rule) deviations from the origin's caching instructions, and the
/// targeted fields Strata obeys.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Freshness lifetime for responses that state none (`default_ttl`).
    pub default_ttl: Option<Duration>,
    /// Freshness lifetime for 404 and 410 answers that state none (`routes[].negative_ttl`).
    pub negative_ttl: Option<Duration>,
    /// Disregard the origin's `Cache-Control`, targeted fields, `Expires` and `Pragma`
    /// (`ignore_cache_control`).
    pub ignore_cache_control: bool,
    /// A stale-while-revalidate window for responses that state none.
    pub stale_while_revalidate: Option<Duration>,
    /// A stale-if-error window for responses that state none.
    pub stale_if_error: Option<Duration>,
    /// Targeted cache-control fields (RFC 9213), lower-case, in order of precedence
    /// (`cache.targeted_cache_control`).
    pub targeted: Arc<[String]>,
}

/// Statuses whose semantics Strata implements (`must-understand` lets these be stored despite
/// `no-store`); a 206 is stored as the 200 it is part of.
pub(crate) const UNDERSTOOD: [u16; 14] = [
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];
/// Statuses cacheable without explicit freshness (RFC 9110 §15.1: heuristically cacheable).
pub(crate) const HEURISTIC: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];
/// The heuristic lifetime is this fraction of the time since Last-Modified (RFC 9111 §4.2.2)...
const HEURISTIC_FRACTION: f64 = 0.1;
/// ...capped, so a file untouched for years is still checked weekly.
const HEURISTIC_MAX: u64 = 7 * 86400;

/// The caching policy of one stored response: what its freshness is and how it may be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Unix seconds when the response was received (or last validated).
    pub(crate) response_time: u64,
    /// Its age when received (RFC 9111 §4.2.3 corrected_initial_age).
    pub(crate) initial_age: u64,
    /// Freshness lifetime in seconds (§4.2.1), 0 when none.
    pub(crate) lifetime: u64,
    /// The response's Cache-Control directives as the policy sees them (after overrides).
    pub(crate) directives: Vec<(String, Option<String>)>,
    /// Whether the lifetime or storability came from something explicit (not a heuristic).
    pub(crate) explicit: bool,
    /// The status it was stored with (a 206 counts as its 200).
    pub(crate) status: u16,
    /// Whether it carries an ETag or Last-Modified (so it can be revalidated cheaply).
    pub(crate) validators: bool,
}

/// How a stored response may be used for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reuse {
    /// Use it as is (it is fresh, or the client accepts it stale with `max-stale`).
    Fresh,
    /// Ask the origin first.
    Validate {
        /// Only the request's directives forbid using it (RFC 9211 `fwd=request`).
        by_request: bool,
        /// May be served stale while revalidating in the background.
        while_revalidate: bool,
        /// May be served stale if the origin fails.
        if_error: bool,
    },
}

pub use crate::http::headers::Directives;

pub(crate) fn has(d: &Directives, name: &str) -> bool {
    d.iter().any(|(k, _)| k == name)
}

/// Largest delta-seconds value kept; larger ones mean "this much" (RFC 9111 §1.2.2).
const DELTA_MAX: u64 = 1 << 31;

/// A delta-seconds value: digits only, clamped to [`DELTA_MAX`].
fn delta(v: &str) -> Option<u64> {
    decimal(v.trim()).map(|n| n.min(DELTA_MAX))
}

fn secs(d: &Directives, name: &str) -> Option<u64> {
    d.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| delta(v.as_deref()?))
}

/// The `Age` of a response (RFC 9111 §5.1): one delta-seconds value. A list, a second field
/// or anything but digits is invalid, and an invalid age makes the response stale.
fn age_value(h: &HeaderMap) -> u64 {
    let mut ages = h.get_all(header::AGE).iter();
    match (ages.next(), ages.next()) {
        (None, _) => 0,
        (Some(v), None) => v.to_str().ok().and_then(delta).unwrap_or(DELTA_MAX),
        (Some(_), Some(_)) => DELTA_MAX,
    }
}

fn date(h: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    http_date(h.get(name)?.as_bytes()).map(unix)
}

/// Request directives, with `Pragma: no-cache` standing for `no-cache` only when the request
/// has no `Cache-Control` at all (RFC 9111 §5.4).
pub(crate) fn request_directives(req: &HeaderMap) -> Directives {
    let mut d = cache_control(req);
    if !req.contains_key(header::CACHE_CONTROL) {
        let pragma_no_cache = req
            .get_all(header::PRAGMA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("no-cache"))
            });
        if pragma_no_cache {
            d.push(("no-cache".into(), None));
        }
    }
    d
}

impl Policy {
    /// The policy of a response (`status`, `resp`) received at `now`.
    pub fn new(status: StatusCode, resp: &HeaderMap, now: SystemTime, ov: &Overrides) -> Policy {
        // RFC 9213: the first targeted field on the list with a valid value replaces
        // Cache-Control and Expires for Strata's decisions.
        let targeted = if ov.ignore_cache_control {
            None
        } else {
            targeted::directives(resp, &ov.targeted)
        };
        let obeys_origin = !ov.ignore_cache_control && targeted.is_none();
        let mut d = match targeted {
            Some(d) => d,
            None if ov.ignore_cache_control => Directives::new(),
            None => cache_control(resp),
        };
        for (name, window) in [
            ("stale-while-revalidate", ov.stale_while_revalidate),
            ("stale-if-error", ov.stale_if_error),
        ] {
            if let Some(w) = window.filter(|_| !has(&d, name)) {
                d.push((name.to_string(), Some(w.as_secs().to_string())));
            }
        }
        let status = if status == StatusCode::PARTIAL_CONTENT {
            200
        } else {
            status.as_u16()
        };
        let response_time = unix(now);
        let date_value = date(resp, header::DATE).unwrap_or(response_time);
        // §4.2.3 (the request was sent just before the response arrived: no response_delay).
        let apparent_age = response_time.saturating_sub(date_value);
        let initial_age = apparent_age.max(age_value(resp));
        // §4.2.1: s-maxage (shared), max-age, Expires - Date, then a heuristic.
        let explicit_lifetime = secs(&d, "s-maxage")
            .or_else(|| secs(&d, "max-age"))
            .or_else(|| {
                resp.get(header::EXPIRES).filter(|_| obeys_origin).map(|_| {
                    // An invalid Expires (e.g. "0") means "already expired".
                    date(resp, header::EXPIRES).map_or(0, |e| e.saturating_sub(date_value))
                })
            });
        let heuristic = || {
            let lm = date(resp, header::LAST_MODIFIED)?;
            let since = date_value.saturating_sub(lm) as f64;
            Some(((since * HEURISTIC_FRACTION) as u64).min(HEURISTIC_MAX))
        };
        let negative = matches!(status, 404 | 410)
            .then_some(ov.negative_ttl)
            .flatten();
        let (lifetime, explicit) = match (explicit_lifetime, negative.or(ov.default_ttl)) {
            (Some(l), _) => (l, true),
            (None, Some(ttl)) => (ttl.as_secs(), true),
            (None, None) if HEURISTIC.contains(&status) || has(&d, "public") => {
                (heuristic().unwrap_or(0), has(&d, "public"))
            }
            (None, None) => (0, false),
        };
        Policy {
            response_time,
            initial_age,
            lifetime,
            directives: d,
            explicit,
            status,
            validators: resp.contains_key(header::ETAG) || resp.contains_key(header::LAST_MODIFIED),
        }
    }

    /// Current age in seconds (§4.2.3 current_age).
    pub fn age(&self, now: SystemTime) -> u64 {
        self.initial_age
            .saturating_add(unix(now).saturating_sub(self.response_time))
            .min(DELTA_MAX)
    }

    /// Remaining freshness in seconds: negative once stale.
    pub fn ttl(&self, now: SystemTime) -> i64 {
        self.lifetime.min(DELTA_MAX) as i64 - self.age(now) as i64
    }

    /// Whether the response may be stored from, and reused for, requests with
    /// `Authorization` (RFC 9111 §3.5: `public`, `s-maxage` or `must-revalidate`).
    pub fn shared_with_credentials(&self) -> bool {
        let d = &self.directives;
        has(d, "public") || has(d, "s-maxage") || has(d, "must-revalidate")
    }

    /// True when the response demands validation before every reuse (`no-cache`).
    pub fn no_cache(&self) -> bool {
        has(&self.directives, "no-cache")
    }

    /// Whether the stored response may answer a request with headers `req` (§4, §5.2.1).
    pub fn reuse(&self, req: &HeaderMap, now: SystemTime) -> Reuse {
        let d = &self.directives;
        let r = request_directives(req);
        let age = self.age(now);
        let ttl = self.ttl(now);
        let stale = ttl <= 0;
        let staleness = (-ttl).max(0) as u64;
        // must-revalidate, and for a shared cache proxy-revalidate and s-maxage, forbid
        // serving stale in any circumstance (§4.2.4, §5.2.2).
        let strict = has(d, "must-revalidate") || has(d, "proxy-revalidate") || has(d, "s-maxage");
        let by_request = !stale && !self.no_cache();
        let validate = |while_revalidate: bool, if_error: bool| Reuse::Validate {
            by_request,
            while_revalidate,
            if_error,
        };
        let window = |name: &str, from_request: bool| {
            let limit = secs(d, name).or(if from_request { secs(&r, name) } else { None });
            stale && !strict && !self.no_cache() && limit.is_some_and(|l| staleness <= l)
        };
        let if_error = window("stale-if-error", true);
        if self.no_cache() || has(&r, "no-cache") {
            return validate(false, if_error);
        }
        if secs(&r, "max-age").is_some_and(|m| age > m) {
            return validate(false, if_error);
        }
        if secs(&r, "min-fresh").is_some_and(|m| ttl < m as i64) {
            return validate(false, if_error);
        }
        if !stale {
            return Reuse::Fresh;
        }
        let max_stale_ok = r
            .iter()
            .find(|(k, _)| k == "max-stale")
            .is_some_and(|(_, v)| match v.as_deref().map(str::trim) {
                None => true,
                Some(n) => n.parse::<u64>().is_ok_and(|n| staleness <= n),
            });
        if max_stale_ok && !strict {
            return Reuse::Fresh;
        }
        validate(window("stale-while-revalidate", false), if_error)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::http::headers::map_of as h;

    /// The policy of a 200 with these header fields, received now.
    pub(crate) fn p(pairs: &[(&str, &str)]) -> Policy {
        Policy::new(
            StatusCode::OK,
            &h(pairs),
            SystemTime::now(),
            &Overrides::default(),
        )
    }

    #[test]
    fn lifetime_precedence() {
        assert_eq!(
            p(&[("cache-control", "s-maxage=10, max-age=20")]).lifetime,
            10
        );
        assert_eq!(
            p(&[("cache-control", "max-age=20"), ("expires", "0")]).lifetime,
            20
        );
        assert_eq!(p(&[("expires", "0")]).lifetime, 0);
        let now = SystemTime::now();
        let lm = httpdate::fmt_http_date(now - Duration::from_secs(1000));
        assert_eq!(p(&[("last-modified", &lm)]).lifetime, 100);
    }

    #[test]
    fn age_counts_the_date_and_the_age_header() {
        let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(100));
        assert!(p(&[("date", &old)]).age(SystemTime::now()) >= 100);
        assert_eq!(p(&[("age", "42")]).age(SystemTime::now()), 42);
    }

    #[test]
    fn huge_numbers_are_clamped_not_wrapped() {
        let pol = p(&[
            ("cache-control", "max-age=99999999999999999999999"),
            ("age", "18446744073709551615"),
        ]);
        assert_eq!(pol.lifetime, DELTA_MAX);
        assert!(pol.age(SystemTime::now()) <= DELTA_MAX);
        assert!(
            pol.ttl(SystemTime::now()) <= 0,
            "an age that large is stale, not fresh"
        );
    }

    #[test]
    fn pragma_only_without_cache_control() {
        let pol = p(&[("cache-control", "max-age=100")]);
        let now = SystemTime::now();
        assert!(matches!(
            pol.reuse(&h(&[("pragma", "no-cache")]), now),
            Reuse::Validate {
                by_request: true,
                ..
            }
        ));
        assert_eq!(
            pol.reuse(
                &h(&[("pragma", "no-cache"), ("cache-control", "max-age=500")]),
                now
            ),
            Reuse::Fresh
        );
    }

    #[test]
    fn an_invalid_age_makes_the_response_stale() {
        let now = SystemTime::now();
        for bad in [
            &[("age", "5, 6")][..],
            &[("age", "5"), ("age", "6")],
            &[("age", "x")],
            &[("age", "-1")],
            &[("age", "1.5")],
        ] {
            let mut pairs = vec![("cache-control", "max-age=3600")];
            pairs.extend_from_slice(bad);
            assert!(p(&pairs).ttl(now) <= 0, "{bad:?} kept it fresh");
        }
        assert!(p(&[("cache-control", "max-age=3600"), ("age", " 7 ")]).ttl(now) > 3000);
    }

    #[test]
    fn targeted_fields_replace_cache_control_and_expires() {
        let ov = Overrides {
            targeted: vec!["cdn-cache-control".to_string()].into(),
            ..Overrides::default()
        };
        let now = SystemTime::now();
        let pol = |pairs: &[(&str, &str)]| Policy::new(StatusCode::OK, &h(pairs), now, &ov);
        let past = httpdate::fmt_http_date(now - Duration::from_secs(60));
        let both = pol(&[
            ("cache-control", "no-store"),
            ("expires", &past),
            ("cdn-cache-control", "max-age=600"),
        ]);
        assert_eq!(both.lifetime, 600);
        assert!(both.storable(&HeaderMap::new(), &HeaderMap::new()).is_ok());
        let private = pol(&[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "private"),
        ]);
        assert_eq!(
            private
                .storable(&HeaderMap::new(), &HeaderMap::new())
                .map_err(|why| why.as_str()),
            Err("private")
        );
        // An invalid targeted field is as if absent.
        assert_eq!(
            pol(&[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "max-age=")
            ])
            .lifetime,
            60
        );
        // Expires counts only without a targeted field.
        assert_eq!(
            pol(&[("cdn-cache-control", "no-cache"), ("expires", &past)]).lifetime,
            0
        );
    }

    #[test]
    fn rule_windows_apply_when_the_response_states_none() {
        let ov = Overrides {
            stale_while_revalidate: Some(Duration::from_secs(30)),
            ..Overrides::default()
        };
        let now = SystemTime::now();
        let pol = |cc: &str| {
            Policy::new(
                StatusCode::OK,
                &h(&[("cache-control", cc), ("etag", "\"a\""), ("age", "70")]),
                now,
                &ov,
            )
        };
        assert!(matches!(
            pol("max-age=60").reuse(&HeaderMap::new(), now),
            Reuse::Validate {
                while_revalidate: true,
                ..
            }
        ));
        assert!(matches!(
            pol("max-age=60, stale-while-revalidate=5").reuse(&HeaderMap::new(), now),
            Reuse::Validate {
                while_revalidate: false,
                ..
            }
        ));
    }
}
