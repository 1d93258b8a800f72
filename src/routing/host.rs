//! Which host names a route answers (`routes[].host`): one name, or every name under a
//! domain (`*.example.com`), compared without regard to case, port or a trailing dot.

/// Why a host pattern is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    /// Not a host name (or a `*.` wildcard over one).
    #[error("`{0}` is not a host name or *.domain (letters, digits, - and . only, no port)")]
    Invalid(String),
}

/// A route's host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// Exactly this name (lower-case).
    Exact(String),
    /// Any name ending in this suffix (lower-case, with its leading dot): `*.example.com`
    /// matches `a.example.com` and `a.b.example.com`, not `example.com`.
    Under(String),
}

impl HostPattern {
    /// Parses `routes[].host`.
    pub(crate) fn parse(s: &str) -> Result<HostPattern, HostError> {
        let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower.clone()),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(HostError::Invalid(s.to_string()));
        }
        Ok(if wild {
            HostPattern::Under(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Whether a request's (normalised) host matches.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(n) => host == n,
            HostPattern::Under(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }

    /// Whether several hosts share the route (so its cache keys must name the host).
    pub(crate) fn is_wildcard(&self) -> bool {
        matches!(self, HostPattern::Under(_))
    }
}

/// The host a request names (its URI's authority, else its `Host`), normalised.
pub(crate) fn of_request(req: &pingora::http::RequestHeader) -> Option<String> {
    match req.uri.authority() {
        Some(a) => normalize(a.as_str()),
        None => normalize(req.headers.get(http::header::HOST)?.to_str().ok()?),
    }
}

/// A request's host as routes compare it: lower-case, without port or trailing dot; `None`
/// when it is not a plausible host (such a request only reaches routes for any host).
pub(crate) fn normalize(authority: &str) -> Option<String> {
    let a = authority.trim();
    // [v6]:port, name:port, name
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split_once(']')?.0
    } else {
        a.rsplit_once(':').map_or(a, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                a
            }
        })
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':');
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_not_their_parents() {
        let w = HostPattern::parse("*.Example.com.").unwrap();
        assert!(w.matches("a.example.com") && w.matches("a.b.example.com"));
        assert!(!w.matches("example.com") && !w.matches("aexample.com"));
        let e = HostPattern::parse("CDN.example.com").unwrap();
        assert!(e.matches("cdn.example.com") && !e.matches("x.cdn.example.com"));
        for bad in [
            "",
            "*.",
            "a..b",
            "a b",
            "a:80",
            "*.*.a",
            "ex ample.com",
            "a_b.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_hosts_lose_port_case_and_trailing_dot() {
        assert_eq!(
            normalize("CDN.Example.com:8080").as_deref(),
            Some("cdn.example.com")
        );
        assert_eq!(
            normalize("a.example.com.").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(normalize("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(normalize("bad host"), None);
        assert_eq!(normalize(""), None);
    }
}
