//! The RFC 9211 `Cache-Status` field Strata adds to every response, with its forward reasons
//! and details as enums: the header and the metrics spell them from one place.

use crate::http::storable::NotStorable;

/// Name of this cache in `Cache-Status`.
pub const CACHE_NAME: &str = "strata";

/// The `Cache-Status` field's name (RFC 9211), made once: a name given as a string is parsed
/// again on every insert.
pub(crate) static CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");

/// Why a request went to the origin (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The cache was not consulted (no route, credentials, a refused request).
    Bypass,
    /// The method is not cacheable.
    Method,
    /// Nothing is stored for the URL.
    UriMiss,
    /// The URL varies and this request's variant is not stored.
    VaryMiss,
    /// A miss of another kind (e.g. an error before the cache could tell).
    Miss,
    /// Part of the response was stored, part had to be fetched.
    Partial,
    /// The stored response was stale.
    Stale,
    /// The request's own directives forbade using the stored response.
    Request,
}

impl Forward {
    /// The token as RFC 9211 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Forward::Bypass => "bypass",
            Forward::Method => "method",
            Forward::UriMiss => "uri-miss",
            Forward::VaryMiss => "vary-miss",
            Forward::Miss => "miss",
            Forward::Partial => "partial",
            Forward::Stale => "stale",
            Forward::Request => "request",
        }
    }

    /// True for the reasons that mean "nothing usable was stored".
    pub fn is_miss(self) -> bool {
        matches!(self, Forward::UriMiss | Forward::VaryMiss | Forward::Miss)
    }
}

/// Strata's `detail` of a response: why it was refused, served stale or not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// No route matches the path.
    NoRoute,
    /// An unsafe method on a read-only route.
    ReadOnly,
    /// An S3 route asked for the bucket itself, not an object.
    NoKey,
    /// An S3 key with an empty leading segment or a dot segment.
    BadKey,
    /// An S3 write to a sub-resource uploads do not need.
    SubResource,
    /// A request path spelled ambiguously (an encoded separator, a malformed escape…).
    BadPath,
    /// A request whose framing or size is refused (both lengths, no Host, huge headers).
    BadRequest,
    /// A JWT-guarded route without a token.
    TokenMissing,
    /// A token that does not verify.
    TokenInvalid,
    /// A valid token whose claims are refused.
    TokenForbidden,
    /// `only-if-cached` and nothing usable was stored.
    OnlyIfCached,
    /// The route's rule for the path says not to cache (`rules[].cache: false`).
    Rule,
    /// The client is over one of its limits (`limits`).
    Limited,
    /// Served stale while one background request revalidates it.
    StaleWhileRevalidate,
    /// Served stale because the origin failed.
    StaleIfError,
    /// The origin refused Strata's own credentials.
    OriginCredentials,
    /// The origin could not be reached or broke the exchange.
    OriginUnreachable,
    /// The request waited for another one's fetch, which failed (unreachable origin or a 5xx
    /// not stored): it shares that failure instead of asking the origin again.
    OriginFailed,
    /// Forwarded, not stored: a response varying on a header the fill did not send, or a
    /// variant of unknown length.
    Vary,
    /// A body delimited by the connection closing: its end cannot be told from a cut.
    CloseDelimited,
    /// Larger than `cache.max_object_size`.
    TooLarge,
    /// The response cannot be stored in slices (its body does not start on a slice boundary or
    /// lacks a length).
    Unsliceable,
    /// The response may not be stored.
    NotStored(NotStorable),
}

impl Detail {
    /// True for the details of an answer Strata wrote itself instead of serving (a refused
    /// request, or an origin that could not be used).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Detail::NoRoute
                | Detail::ReadOnly
                | Detail::NoKey
                | Detail::BadKey
                | Detail::SubResource
                | Detail::BadPath
                | Detail::BadRequest
                | Detail::TokenMissing
                | Detail::TokenInvalid
                | Detail::TokenForbidden
                | Detail::OnlyIfCached
                | Detail::Limited
                | Detail::OriginCredentials
                | Detail::OriginUnreachable
                | Detail::OriginFailed
        )
    }

    /// The detail as the header spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Detail::NoRoute => "no-route",
            Detail::ReadOnly => "read-only",
            Detail::NoKey => "no-key",
            Detail::BadKey => "bad-key",
            Detail::SubResource => "sub-resource",
            Detail::BadPath => "bad-path",
            Detail::BadRequest => "bad-request",
            Detail::TokenMissing => "token-missing",
            Detail::TokenInvalid => "token-invalid",
            Detail::TokenForbidden => "token-forbidden",
            Detail::OnlyIfCached => "only-if-cached",
            Detail::Rule => "rule",
            Detail::Limited => "limited",
            Detail::StaleWhileRevalidate => "stale-while-revalidate",
            Detail::StaleIfError => "stale-if-error",
            Detail::OriginCredentials => "origin-credentials",
            Detail::OriginUnreachable => "origin-unreachable",
            Detail::OriginFailed => "origin-failed",
            Detail::Vary => "vary",
            Detail::CloseDelimited => "close-delimited",
            Detail::TooLarge => "too-large",
            Detail::Unsliceable => "unsliceable",
            Detail::NotStored(n) => n.as_str(),
        }
    }
}

/// What the cache did with one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from the cache without contacting the origin.
    pub hit: bool,
    /// Why the request went to the origin.
    pub fwd: Option<Forward>,
    /// The origin's response was stored.
    pub stored: bool,
    /// The request was collapsed into another one's origin fetch.
    pub collapsed: bool,
    /// Status of the origin's response, when it was forwarded to.
    pub fwd_status: Option<u16>,
    /// Remaining freshness lifetime in seconds, when known.
    pub ttl: Option<i64>,
    /// Why a response was refused, served stale or not stored.
    pub detail: Option<Detail>,
}

impl CacheStatus {
    /// A hit.
    pub fn hit() -> Self {
        CacheStatus {
            hit: true,
            ..Default::default()
        }
    }

    /// Forwarded to the origin for `reason`.
    pub fn fwd(reason: Forward) -> Self {
        CacheStatus {
            fwd: Some(reason),
            ..Default::default()
        }
    }

    /// Forwarded for `reason`, with a detail.
    pub fn fwd_with(reason: Forward, detail: Detail) -> Self {
        CacheStatus {
            fwd: Some(reason),
            detail: Some(detail),
            ..Default::default()
        }
    }

    /// The header value, e.g. `strata; fwd=miss; stored`.
    pub fn header_value(&self) -> String {
        // Written piece by piece: it is formatted for most answers, and for their log lines.
        let mut s = String::with_capacity(48);
        s.push_str(CACHE_NAME);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(f.as_str());
        }
        if let Some(st) = self.fwd_status {
            s.push_str("; fwd-status=");
            s.push_str(itoa::Buffer::new().format(st));
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(t) = self.ttl {
            s.push_str("; ttl=");
            s.push_str(itoa::Buffer::new().format(t));
        }
        if let Some(d) = self.detail {
            s.push_str("; detail=");
            s.push_str(d.as_str());
        }
        s
    }

    /// The outcome in a few words, for metrics (`cache` label): `hit`; `stale` (served from
    /// a stale stored response: while or after revalidating, or because the origin failed);
    /// `miss` (the bytes came from the origin); `pass` (an unsafe method); `bypass` (the
    /// cache was not consulted); `error` (Strata refused or answered an error itself).
    pub fn outcome(&self) -> &'static str {
        let stale_detail = matches!(
            self.detail,
            Some(Detail::StaleWhileRevalidate | Detail::StaleIfError)
        );
        match (self.hit, self.fwd, self.detail) {
            (true, _, _) if stale_detail => "stale",
            (true, _, _) => "hit",
            (_, Some(Forward::Stale | Forward::Request), _)
                if stale_detail || self.fwd_status == Some(304) =>
            {
                "stale"
            }
            (_, Some(Forward::Method), _) => "pass",
            (_, _, Some(d)) if d.is_refusal() => "error",
            (_, Some(Forward::Bypass), _) => "bypass",
            (_, Some(_), _) => "miss",
            (_, None, _) => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_rfc_9211() {
        assert_eq!(CacheStatus::hit().header_value(), "strata; hit");
        let mut s = CacheStatus::fwd(Forward::Miss);
        assert_eq!(s.header_value(), "strata; fwd=miss");
        s.stored = true;
        assert_eq!(s.header_value(), "strata; fwd=miss; stored");
        s.detail = Some(Detail::NotStored(NotStorable::NoStore));
        s.stored = false;
        assert_eq!(s.header_value(), "strata; fwd=miss; detail=no-store");
    }

    #[test]
    fn outcomes_for_metrics() {
        let mut swr = CacheStatus::hit();
        swr.detail = Some(Detail::StaleWhileRevalidate);
        let mut revalidated = CacheStatus::fwd(Forward::Stale);
        revalidated.fwd_status = Some(304);
        let mut refetched = CacheStatus::fwd(Forward::Stale);
        refetched.fwd_status = Some(200);
        for (cs, want) in [
            (CacheStatus::hit(), "hit"),
            (swr, "stale"),
            (revalidated, "stale"),
            (
                CacheStatus::fwd_with(Forward::Stale, Detail::StaleIfError),
                "stale",
            ),
            (refetched, "miss"),
            (CacheStatus::fwd(Forward::UriMiss), "miss"),
            (CacheStatus::fwd(Forward::Partial), "miss"),
            (CacheStatus::fwd(Forward::Method), "pass"),
            (CacheStatus::fwd(Forward::Bypass), "bypass"),
            (
                CacheStatus::fwd_with(Forward::Bypass, Detail::Rule),
                "bypass",
            ),
            (
                CacheStatus::fwd_with(Forward::Bypass, Detail::NoRoute),
                "error",
            ),
            (
                CacheStatus::fwd_with(Forward::UriMiss, Detail::OriginUnreachable),
                "error",
            ),
        ] {
            assert_eq!(cs.outcome(), want, "{}", cs.header_value());
        }
    }
}
