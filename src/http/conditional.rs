//! Client preconditions answered from a stored response (RFC 9110 §13.2.2).

use http::{header, HeaderMap, Method, StatusCode};

use crate::http::date::http_date;

/// What preconditions are evaluated against: a stored response's status and validators.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// The stored status (preconditions apply to 2xx only).
    pub status: u16,
    /// The stored `ETag`, if any.
    pub etag: Option<&'a [u8]>,
    /// The stored `Last-Modified`, if any.
    pub last_modified: Option<&'a [u8]>,
}

/// `Some(304 or 412)` when the preconditions say the stored response must not be sent.
pub fn evaluate(method: &Method, req: &HeaderMap, stored: Validators<'_>) -> Option<StatusCode> {
    if !(200..300).contains(&stored.status) {
        return None;
    }
    let etag = stored.etag;
    // Parsed only for a request that carries a date precondition: most carry none.
    let last_modified = || stored.last_modified.and_then(http_date);
    let date = |name: header::HeaderName| req.get(name).and_then(|v| http_date(v.as_bytes()));
    // 1. If-Match (strong comparison), else 2. If-Unmodified-Since.
    if let Some(im) = req.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if !list_matches(im, etag, true) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(ius) = date(header::IF_UNMODIFIED_SINCE) {
        if last_modified().is_some_and(|lm| lm > ius) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    }
    // 3. If-None-Match (weak comparison), else 4. If-Modified-Since (GET and HEAD only).
    let safe = *method == Method::GET || *method == Method::HEAD;
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        if list_matches(inm, etag, false) {
            return Some(if safe {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::PRECONDITION_FAILED
            });
        }
    } else if let Some(ims) = date(header::IF_MODIFIED_SINCE).filter(|_| safe) {
        if last_modified().is_some_and(|lm| lm <= ims) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    }
    None
}

/// Whether an entity-tag list (`*` or tags) matches `etag`.
fn list_matches(list: &str, etag: Option<&[u8]>, strong: bool) -> bool {
    // `*` matches any current representation, with or without an ETag.
    if list.trim() == "*" {
        return true;
    }
    let Some(etag) = etag
        .and_then(|e| std::str::from_utf8(e).ok())
        .map(str::trim)
    else {
        return false;
    };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if strong && etag.starts_with("W/") {
        return false;
    }
    list.split(',')
        .map(str::trim)
        .filter(|t| !strong || !t.starts_with("W/"))
        .any(|t| opaque(t) == opaque(etag))
}

/// True for a strong entity tag (`"…"`, not `W/"…"`): the only kind that proves two responses
/// carry the same bytes (RFC 9110 §8.8.3).
pub fn is_strong_etag(etag: &[u8]) -> bool {
    etag.starts_with(b"\"")
}

/// Headers a 304 carries over from the stored response (RFC 9110 §15.4.5).
pub const NOT_MODIFIED_HEADERS: [&str; 7] = [
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
    "last-modified",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists() {
        assert!(list_matches("\"a\", \"b\"", Some(b"\"b\""), false));
        assert!(list_matches("W/\"b\"", Some(b"\"b\""), false));
        assert!(!list_matches("W/\"b\"", Some(b"\"b\""), true));
        assert!(!list_matches("\"b\"", Some(b"W/\"b\""), true));
        assert!(list_matches("*", Some(b"\"x\""), true));
        assert!(list_matches("*", None, false));
        assert!(!list_matches("\"x\"", None, false));
    }
}
