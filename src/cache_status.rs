//! The RFC 9211 `Cache-Status` header Strata adds to every response.

use std::fmt::Write;

/// Name of this cache in `Cache-Status`.
pub const CACHE_NAME: &str = "strata";

/// What the cache did with one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from the cache without contacting the origin.
    pub hit: bool,
    /// Why the request went to the origin (`miss`, `method`, `request`, `bypass`, …).
    pub fwd: Option<&'static str>,
    /// The origin's response was stored.
    pub stored: bool,
    /// The request was collapsed into another one's origin fetch.
    pub collapsed: bool,
    /// Status of the origin's response, when it was forwarded to.
    pub fwd_status: Option<u16>,
    /// Remaining freshness lifetime in seconds, when known.
    pub ttl: Option<i64>,
    /// Free-form detail (why a response was not stored).
    pub detail: Option<String>,
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
    pub fn fwd(reason: &'static str) -> Self {
        CacheStatus {
            fwd: Some(reason),
            ..Default::default()
        }
    }

    /// The header value, e.g. `strata; fwd=miss; stored`.
    pub fn header_value(&self) -> String {
        let mut s = String::from(CACHE_NAME);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            let _ = write!(s, "; fwd={f}");
        }
        if let Some(st) = self.fwd_status {
            let _ = write!(s, "; fwd-status={st}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(t) = self.ttl {
            let _ = write!(s, "; ttl={t}");
        }
        if let Some(d) = &self.detail {
            let _ = write!(s, "; detail={d}");
        }
        s
    }

    /// A short label for metrics: `hit`, `miss`, `stored`, or the forward reason.
    pub fn label(&self) -> &'static str {
        match (self.hit, self.fwd, self.stored) {
            (true, _, _) => "hit",
            (_, Some("uri-miss" | "vary-miss" | "miss"), true) => "miss_stored",
            (_, Some(f), _) => f,
            _ => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_rfc_9211() {
        assert_eq!(CacheStatus::hit().header_value(), "strata; hit");
        let mut s = CacheStatus::fwd("miss");
        assert_eq!(s.header_value(), "strata; fwd=miss");
        s.stored = true;
        assert_eq!(s.header_value(), "strata; fwd=miss; stored");
        s.detail = Some("no-store".into());
        s.stored = false;
        assert_eq!(s.header_value(), "strata; fwd=miss; detail=no-store");
    }
}
