//! Storability, freshness and reuse of stored responses (RFC 9111), on `http-cache-semantics`.
//!
//! The crate does the policy arithmetic (age, freshness lifetime, request directives,
//! revalidation headers, merging a 304). Strata adds what it leaves out: stale-while-revalidate
//! and stale-if-error (RFC 5861), the shared-cache ban on serving stale under
//! `proxy-revalidate` and `s-maxage`, `Vary: *`, its `Set-Cookie` rule, and per-route overrides.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

use crate::headers::cache_control;

/// Per-route deviations from the origin's caching instructions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// Freshness lifetime for responses that state none (`routes[].default_ttl`).
    pub default_ttl: Option<Duration>,
    /// Disregard the origin's `Cache-Control`, `Expires` and `Pragma` (`routes[].ignore_cache_control`).
    pub ignore_cache_control: bool,
}

/// The caching policy of one stored response.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    inner: CachePolicy,
    /// The response directives as the policy sees them (after overrides).
    directives: Vec<(String, Option<String>)>,
}

/// How a stored response may be used for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reuse {
    /// Use it as is.
    Fresh,
    /// Ask the origin first (a conditional request when validators exist).
    Validate {
        /// Validators to send.
        conditionals: Vec<(header::HeaderName, HeaderValue)>,
        /// May be served stale while revalidating in the background.
        while_revalidate: bool,
        /// May be served stale if the origin fails.
        if_error: bool,
    },
}

fn now_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The request the policy is about: the origin path with the client's headers (its `Host`
/// replaced, so requests arriving under any name match).
fn request(path: &str, headers: &HeaderMap, host: &str) -> Request<()> {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(())
        .unwrap_or_default();
    *req.headers_mut() = headers.clone();
    if let Ok(h) = HeaderValue::from_str(host) {
        req.headers_mut().insert(header::HOST, h);
    }
    req
}

fn arg_secs(directives: &[(String, Option<String>)], name: &str) -> Option<u64> {
    directives
        .iter()
        .find(|(d, _)| d == name)
        .and_then(|(_, v)| v.as_deref()?.parse().ok())
}

fn has(directives: &[(String, Option<String>)], name: &str) -> bool {
    directives.iter().any(|(d, _)| d == name)
}

impl Policy {
    /// The policy of a response (`status`, `resp`) to a GET of `path` with `req` headers.
    pub fn new(
        path: &str,
        host: &str,
        req: &HeaderMap,
        status: StatusCode,
        resp: &HeaderMap,
        now: SystemTime,
        ov: Overrides,
    ) -> Policy {
        let mut view = resp.clone();
        if ov.ignore_cache_control {
            view.remove(header::CACHE_CONTROL);
            view.remove(header::EXPIRES);
            view.remove(header::PRAGMA);
        }
        let explicit = view.contains_key(header::EXPIRES)
            || cache_control(&view)
                .iter()
                .any(|(d, _)| d == "max-age" || d == "s-maxage");
        if let (false, Some(ttl)) = (explicit, ov.default_ttl) {
            if let Ok(v) = HeaderValue::from_str(&format!("max-age={}", ttl.as_secs())) {
                view.append(header::CACHE_CONTROL, v);
            }
        }
        // A 206 stands for the whole representation: Strata stores all of it, as slices.
        let status = if status == StatusCode::PARTIAL_CONTENT {
            StatusCode::OK
        } else {
            status
        };
        let mut res = Response::builder()
            .status(status)
            .body(())
            .unwrap_or_default();
        *res.headers_mut() = view.clone();
        let opts = CacheOptions {
            shared: true,
            ..Default::default()
        };
        let inner = CachePolicy::new_options(&request(path, req, host), &res, now, opts);
        Policy {
            inner,
            directives: cache_control(&view),
        }
    }

    /// `Ok` when the response may be stored, else a short reason (for `Cache-Status: detail=`).
    pub fn storable(&self, req: &HeaderMap, resp: &HeaderMap) -> Result<(), &'static str> {
        let vary_star = resp
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim() == "*");
        if vary_star {
            return Err("vary-star");
        }
        // Strata's choice: a response setting a cookie is someone's session; never shared.
        if resp.contains_key(header::SET_COOKIE) {
            return Err("set-cookie");
        }
        if self.inner.is_storable() {
            return Ok(());
        }
        let req_cc = cache_control(req);
        Err(
            if has(&self.directives, "no-store") || has(&req_cc, "no-store") {
                "no-store"
            } else if has(&self.directives, "private") {
                "private"
            } else if req.contains_key(header::AUTHORIZATION) {
                "authorization"
            } else {
                "status"
            },
        )
    }

    /// Current age of the response in seconds.
    pub fn age(&self, now: SystemTime) -> u64 {
        self.inner.age(now).as_secs()
    }

    /// Remaining freshness in seconds: negative once stale. `stored_at` is when it arrived.
    pub fn ttl(&self, now: SystemTime, stored_at: u64) -> i64 {
        let ttl = self.inner.time_to_live(now).as_secs() as i64;
        if ttl > 0 {
            return ttl;
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(stored_at);
        let lifetime = self.inner.time_to_live(at).as_secs() + self.inner.age(at).as_secs();
        lifetime as i64 - self.age(now) as i64
    }

    /// Whether the stored response may answer a request with headers `req` (whose `Host` is
    /// replaced by `host`), or must be validated first.
    pub fn reuse(
        &self,
        path: &str,
        host: &str,
        req: &HeaderMap,
        now: SystemTime,
        stored_at: u64,
    ) -> Reuse {
        let stale = self.inner.is_stale(now);
        // proxy-revalidate and s-maxage forbid a shared cache to serve stale, whatever the client says.
        let strict = has(&self.directives, "must-revalidate")
            || has(&self.directives, "proxy-revalidate")
            || has(&self.directives, "s-maxage")
            || has(&self.directives, "no-cache");
        let request = request(path, req, host);
        let parts = match self.inner.before_request(&request, now) {
            BeforeRequest::Fresh(_) if !(stale && strict) => return Reuse::Fresh,
            BeforeRequest::Fresh(_) => None,
            BeforeRequest::Stale { request, .. } => Some(request),
        };
        let mut conditionals = Vec::new();
        if let Some(p) = parts {
            for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                if let Some(v) = p.headers.get(&name) {
                    conditionals.push((name, v.clone()));
                }
            }
        }
        let staleness = (-self.ttl(now, stored_at)).max(0) as u64;
        let req_cc = cache_control(req);
        let window = |name: &str, from_request: bool| {
            let limit = arg_secs(&self.directives, name).or(if from_request {
                arg_secs(&req_cc, name)
            } else {
                None
            });
            stale && !strict && limit.is_some_and(|l| staleness <= l)
        };
        let no_cache_request = has(&req_cc, "no-cache")
            || (req_cc.is_empty()
                && req
                    .get(header::PRAGMA)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("no-cache")));
        Reuse::Validate {
            conditionals,
            while_revalidate: window("stale-while-revalidate", false) && !no_cache_request,
            if_error: window("stale-if-error", true),
        }
    }

    /// Merges a 304 into the policy: the new policy and the updated response headers.
    pub fn revalidated(
        &self,
        path: &str,
        host: &str,
        req: &HeaderMap,
        resp: &HeaderMap,
        now: SystemTime,
    ) -> Option<(Policy, HeaderMap)> {
        let mut res = Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(())
            .unwrap_or_default();
        *res.headers_mut() = resp.clone();
        match self
            .inner
            .after_response(&request(path, req, host), &res, now)
        {
            AfterResponse::NotModified(inner, parts) => {
                let directives = cache_control(&parts.headers);
                Some((Policy { inner, directives }, parts.headers))
            }
            AfterResponse::Modified(..) => None,
        }
    }

    /// Serialised form, kept in the object's metadata record.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the serialised form.
    pub fn decode(b: &[u8]) -> Option<Policy> {
        serde_json::from_slice(b).ok()
    }

    /// Unix seconds of `now`.
    pub fn unix(now: SystemTime) -> u64 {
        now_secs(now)
    }
}
