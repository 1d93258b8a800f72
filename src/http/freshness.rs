//! Storability, freshness and reuse of stored responses (RFC 9111 for a shared cache, with
//! RFC 5861's stale-while-revalidate and stale-if-error).
//!
//! Written against the RFC rather than on `http-cache-semantics`: that crate ignores `Date` in
//! the age (§4.2.3 apparent age), lets `Pragma` override a present `Cache-Control` (§5.4),
//! treats `proxy-revalidate` as "stale at once", and has no stale-while-revalidate or
//! stale-if-error; the table-driven tests found each of these.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, StatusCode};

use crate::http::date::{http_date, unix};
use crate::http::headers::{cache_control, decimal};
use crate::http::vary;

/// Per-route deviations from the origin's caching instructions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// Freshness lifetime for responses that state none (`routes[].default_ttl`).
    pub default_ttl: Option<Duration>,
    /// Freshness lifetime for 404 and 410 answers that state none (`routes[].negative_ttl`).
    pub negative_ttl: Option<Duration>,
    /// Disregard the origin's `Cache-Control`, `Expires` and `Pragma` (`routes[].ignore_cache_control`).
    pub ignore_cache_control: bool,
}

/// Statuses Strata stores at all (a 206 is stored as the 200 it is part of).
const UNDERSTOOD: [u16; 14] = [
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];
/// Statuses cacheable without explicit freshness (RFC 9110 §15.1: heuristically cacheable).
const HEURISTIC: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];
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

/// Cache-Control directives: lower-cased names with their arguments.
pub type Directives = Vec<(String, Option<String>)>;

/// Why a response is not stored (RFC 9111 §3, and Strata's stricter choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`: for one user only.
    Private,
    /// A request with `Authorization`, answered without `public`, `s-maxage` or `must-revalidate`.
    Authorization,
    /// A status the cache does not store (or one that needs explicit freshness and has none).
    Status,
    /// Stale on arrival and without validators (Strata's choice).
    NoLifetime,
    /// `Vary: *`, which no later request can match.
    VaryStar,
    /// `Set-Cookie`: someone's session (Strata's choice).
    SetCookie,
}

impl NotStorable {
    /// The reason as `Cache-Status: detail=` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::Status => "status",
            NotStorable::NoLifetime => "no-lifetime",
            NotStorable::VaryStar => "vary-star",
            NotStorable::SetCookie => "set-cookie",
        }
    }
}

fn has(d: &Directives, name: &str) -> bool {
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

fn date(h: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    http_date(h.get(name)?.as_bytes()).map(unix)
}

/// Request directives, with `Pragma: no-cache` standing for `no-cache` only when the request
/// has no `Cache-Control` at all (RFC 9111 §5.4).
fn request_directives(req: &HeaderMap) -> Directives {
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
    pub fn new(status: StatusCode, resp: &HeaderMap, now: SystemTime, ov: Overrides) -> Policy {
        // A copy only when the route ignores the origin's caching headers.
        let view = if ov.ignore_cache_control {
            let mut stripped = resp.clone();
            stripped.remove(header::CACHE_CONTROL);
            stripped.remove(header::EXPIRES);
            stripped.remove(header::PRAGMA);
            std::borrow::Cow::Owned(stripped)
        } else {
            std::borrow::Cow::Borrowed(resp)
        };
        let view = view.as_ref();
        let d = cache_control(view);
        let status = if status == StatusCode::PARTIAL_CONTENT {
            200
        } else {
            status.as_u16()
        };
        let response_time = unix(now);
        let date_value = date(view, header::DATE).unwrap_or(response_time);
        // §4.2.3 (the request was sent just before the response arrived: no response_delay).
        let apparent_age = response_time.saturating_sub(date_value);
        let age_value = view
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(delta)
            .unwrap_or(0);
        let initial_age = apparent_age.max(age_value);
        // §4.2.1: s-maxage (shared), max-age, Expires - Date, then a heuristic.
        let explicit_lifetime = secs(&d, "s-maxage")
            .or_else(|| secs(&d, "max-age"))
            .or_else(|| {
                view.get(header::EXPIRES).map(|_| {
                    // An invalid Expires (e.g. "0") means "already expired".
                    date(view, header::EXPIRES).map_or(0, |e| e.saturating_sub(date_value))
                })
            });
        let heuristic = || {
            let lm = date(view, header::LAST_MODIFIED)?;
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
            validators: view.contains_key(header::ETAG) || view.contains_key(header::LAST_MODIFIED),
        }
    }

    /// `Ok` when the response may be stored (RFC 9111 §3), else why not.
    pub fn storable(&self, req: &HeaderMap, resp: &HeaderMap) -> Result<(), NotStorable> {
        let d = &self.directives;
        if has(&request_directives(req), "no-store") || has(d, "no-store") {
            return Err(NotStorable::NoStore);
        }
        if has(d, "private") {
            return Err(NotStorable::Private);
        }
        if req.contains_key(header::AUTHORIZATION)
            && !(has(d, "must-revalidate") || has(d, "public") || has(d, "s-maxage"))
        {
            return Err(NotStorable::Authorization);
        }
        if !UNDERSTOOD.contains(&self.status) {
            return Err(NotStorable::Status);
        }
        if !(self.explicit || HEURISTIC.contains(&self.status)) {
            return Err(NotStorable::Status);
        }
        // Strata's choice: a response that is stale on arrival and cannot be revalidated would
        // only ever be refetched whole; storing it would just wear the disk.
        if self.lifetime <= self.initial_age && !self.validators {
            return Err(NotStorable::NoLifetime);
        }
        if vary::names(resp).is_none() {
            return Err(NotStorable::VaryStar);
        }
        // Strata's choice: a response setting a cookie is someone's session; never shared.
        if resp.contains_key(header::SET_COOKIE) {
            return Err(NotStorable::SetCookie);
        }
        Ok(())
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

    /// The stored headers updated by a 304 (§3.2, §4.3.4) and their new policy, or `None` when
    /// the 304 does not select the stored response: a strong ETag in the 304 selects only a
    /// stored response with that same strong ETag (never a weak one, which would let slices of
    /// two representations be stitched); a weak one selects by weak comparison.
    pub fn revalidated(
        &self,
        stored: &HeaderMap,
        not_modified: &HeaderMap,
        now: SystemTime,
        ov: Overrides,
    ) -> Option<(Policy, HeaderMap)> {
        let tag = |h: &HeaderMap| {
            h.get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        };
        let opaque = |t: &str| t.trim_start_matches("W/").to_string();
        let selected = match (tag(stored), tag(not_modified)) {
            // A strong validator: the stored response must carry the same strong one.
            (old, Some(new)) if !new.starts_with("W/") => old.as_deref() == Some(new.as_str()),
            (Some(old), Some(new)) => opaque(&old) == opaque(&new),
            _ => true,
        };
        if !selected {
            return None;
        }
        let mut merged = stored.clone();
        // Age belongs to the old response: the new one starts from the 304's own.
        merged.remove(header::AGE);
        const KEEP: [header::HeaderName; 4] = [
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::CONTENT_RANGE,
            header::TRANSFER_ENCODING,
        ];
        for name in not_modified.keys() {
            if KEEP.contains(name) {
                continue;
            }
            merged.remove(name);
            for v in not_modified.get_all(name) {
                merged.append(name.clone(), v.clone());
            }
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        Some((Policy::new(status, &merged, now, ov), merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http::headers::map_of as h;

    fn p(pairs: &[(&str, &str)]) -> Policy {
        Policy::new(
            StatusCode::OK,
            &h(pairs),
            SystemTime::now(),
            Overrides::default(),
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
    fn a_304_selects_by_strong_comparison_when_its_etag_is_strong() {
        let now = SystemTime::now();
        let ov = Overrides::default();
        let pol = p(&[("cache-control", "max-age=10")]);
        let sel = |stored: &str, new: &str| {
            let (s, n) = (h(&[("etag", stored)]), h(&[("etag", new)]));
            pol.revalidated(&s, &n, now, ov).is_some()
        };
        assert!(sel("\"a\"", "\"a\""));
        assert!(
            !sel("W/\"a\"", "\"a\""),
            "a strong 304 must not select a weak stored ETag"
        );
        assert!(!sel("\"a\"", "\"b\""));
        assert!(sel("W/\"a\"", "W/\"a\""));
        assert!(sel("\"a\"", "W/\"a\""));
        assert!(!sel("W/\"a\"", "W/\"b\""));
        let none = pol.revalidated(&h(&[]), &h(&[("etag", "\"a\"")]), now, ov);
        assert!(
            none.is_none(),
            "a strong 304 selects no response stored without an ETag"
        );
        let merged = pol.revalidated(&h(&[("etag", "W/\"a\"")]), &h(&[]), now, ov);
        assert!(
            merged.is_some(),
            "a 304 without validators updates the one stored response"
        );
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
}
