//! Header helpers shared by the hit, miss and pass-through paths: hop-by-hop filtering and
//! the parsing of `Cache-Control`, `Content-Length` and decimal numbers.

use http::header::{self, HeaderMap, HeaderName};

/// A number of decimal digits only (no sign, no spaces), saturating: a value beyond any
/// length or lifetime still means "beyond".
pub fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add((d - b'0') as u64)
    }))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded, never stored.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// True for headers that describe one connection, not the message.
pub fn is_hop_by_hop(name: &HeaderName, connection_listed: &[String]) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n)
        || name == header::TRANSFER_ENCODING
        || connection_listed.iter().any(|c| c == n)
}

/// Header names listed in `Connection` (they are hop-by-hop too).
pub fn connection_listed(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// End-to-end headers of a message: hop-by-hop ones and `Content-Length` removed.
pub fn end_to_end(h: &HeaderMap) -> Vec<(HeaderName, http::HeaderValue)> {
    let listed = connection_listed(h);
    h.iter()
        .filter(|(n, _)| !is_hop_by_hop(n, &listed) && *n != header::CONTENT_LENGTH)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// Cache-Control directives: lower-cased names with their arguments.
pub type Directives = Vec<(String, Option<String>)>;

/// The `Cache-Control` directives of a message, lower-cased, with their arguments.
pub fn cache_control(h: &HeaderMap) -> Directives {
    h.get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_string()),
                ),
                None => (d.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

/// The `Content-Length` of a message, if present and valid.
pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A header map of `(name, value)` pairs, for unit tests.
#[cfg(test)]
pub(crate) fn map_of(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
            v.parse().expect("test header value"),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("content-length", "10".parse().unwrap());
        h.insert("etag", "\"a\"".parse().unwrap());
        let kept: Vec<_> = end_to_end(&h).into_iter().map(|(n, _)| n).collect();
        assert_eq!(kept, vec![header::ETAG]);
    }

    #[test]
    fn parses_cache_control() {
        let mut h = HeaderMap::new();
        h.append("cache-control", "public, max-age=60".parse().unwrap());
        h.append("cache-control", "No-Store".parse().unwrap());
        let cc = cache_control(&h);
        assert!(cc.contains(&("max-age".into(), Some("60".into()))));
        assert!(cc.contains(&("no-store".into(), None)));
    }
}
