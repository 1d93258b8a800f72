//! Storability (RFC 9111 §3): whether a response may be stored at all, and Strata's stricter
//! choices, each named in `Cache-Status`.

use http::{header, HeaderMap};

use crate::http::freshness::{has, request_directives, Policy, HEURISTIC, UNDERSTOOD};
use crate::http::vary;

/// Why a response is not stored (RFC 9111 §3, and Strata's stricter choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`: for one user only.
    Private,
    /// A request with `Authorization`, answered without `public`, `s-maxage` or `must-revalidate`.
    Authorization,
    /// A status that is never stored (1xx, 304), one without explicit freshness that is not
    /// heuristically cacheable, or `must-understand` on a status Strata does not implement.
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

impl Policy {
    /// `Ok` when the response may be stored (RFC 9111 §3), else why not.
    pub fn storable(&self, req: &HeaderMap, resp: &HeaderMap) -> Result<(), NotStorable> {
        let d = &self.directives;
        // 1xx and 304 are never stored: a 304 only updates a stored response.
        if self.status < 200 || self.status == 304 {
            return Err(NotStorable::Status);
        }
        // §5.2.2.3: `must-understand` stands in for `no-store` when the status is one whose
        // semantics the cache implements, and forbids storing any other.
        let understood = UNDERSTOOD.contains(&self.status);
        let must_understand = has(d, "must-understand");
        if must_understand && !understood {
            return Err(NotStorable::Status);
        }
        if has(&request_directives(req), "no-store") || (has(d, "no-store") && !must_understand) {
            return Err(NotStorable::NoStore);
        }
        if has(d, "private") {
            return Err(NotStorable::Private);
        }
        if req.contains_key(header::AUTHORIZATION) && !self.shared_with_credentials() {
            return Err(NotStorable::Authorization);
        }
        // §3: any final status may be stored with explicit freshness; without it, only the
        // heuristically cacheable ones (RFC 9110 §15.1).
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
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, SystemTime};

    use http::StatusCode;

    use crate::http::freshness::Overrides;
    use crate::http::headers::map_of as h;

    fn storable(status: u16, pairs: &[(&str, &str)]) -> Result<(), NotStorable> {
        let code = StatusCode::from_u16(status).unwrap();
        let resp = h(pairs);
        Policy::new(code, &resp, SystemTime::now(), &Overrides::default())
            .storable(&HeaderMap::new(), &resp)
    }

    #[test]
    fn any_final_status_with_explicit_freshness_is_storable() {
        let fresh = [("cache-control", "max-age=60")];
        for code in [200, 302, 400, 403, 500, 502, 503, 599] {
            assert_eq!(storable(code, &fresh), Ok(()), "{code}");
        }
        let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        assert_eq!(storable(503, &[("expires", &expires)]), Ok(()));
        // Without it, only the heuristically cacheable ones; 304 and 1xx never.
        let lm = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(86400));
        assert_eq!(storable(404, &[("last-modified", &lm)]), Ok(()));
        assert_eq!(
            storable(500, &[("last-modified", &lm)]),
            Err(NotStorable::Status)
        );
        assert_eq!(storable(304, &fresh), Err(NotStorable::Status));
        assert_eq!(storable(103, &fresh), Err(NotStorable::Status));
    }

    #[test]
    fn must_understand_stores_understood_statuses_only() {
        let cc = [("cache-control", "must-understand, no-store, max-age=60")];
        assert_eq!(storable(200, &cc), Ok(()));
        assert_eq!(storable(404, &cc), Ok(()));
        assert_eq!(storable(299, &cc), Err(NotStorable::Status));
        let without_no_store = [("cache-control", "must-understand, max-age=60")];
        assert_eq!(storable(299, &without_no_store), Err(NotStorable::Status));
        assert_eq!(
            storable(200, &[("cache-control", "no-store, max-age=60")]),
            Err(NotStorable::NoStore)
        );
    }
}
