//! Request hygiene checked before routing: messages whose framing or size intermediaries read
//! differently are refused, not passed on.
//!
//! Pingora's parser refuses most malformed requests itself (duplicate or invalid
//! `Content-Length`, obfuscated `Transfer-Encoding`, a request line past its limit, TLS bytes
//! on the plain port), and reads a request with both `Content-Length` and `Transfer-Encoding`
//! as RFC 9112 §6.1 says: the encoding wins, the length is dropped, and the connection closes
//! after the answer, so nothing smuggled behind it is read. What is left to Strata: an
//! HTTP/1.1 request without `Host` (§3.2), and header sections too large to be reasonable.

use http::{header, StatusCode, Version};
use pingora::http::RequestHeader;

/// Largest request header section accepted, names and values together.
pub(crate) const MAX_HEADER_BYTES: usize = 64 << 10;

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    /// HTTP/1.1 without `Host`.
    #[error("an HTTP/1.1 request needs a Host header")]
    NoHost,
    /// A header section over [`MAX_HEADER_BYTES`].
    #[error("request header fields too large")]
    TooLarge,
}

impl Malformed {
    /// The status to answer with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Malformed::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks a request's framing and size.
pub(crate) fn check(req: &RequestHeader) -> Result<(), Malformed> {
    let h = &req.headers;
    if req.version == Version::HTTP_11 && !h.contains_key(header::HOST) {
        return Err(Malformed::NoHost);
    }
    let size: usize = h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if size > MAX_HEADER_BYTES {
        return Err(Malformed::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn host_and_size() {
        assert_eq!(check(&req(&[("host", "x")])), Ok(()));
        assert_eq!(check(&req(&[])), Err(Malformed::NoHost));
        let big = "a".repeat(MAX_HEADER_BYTES);
        assert_eq!(
            check(&req(&[("host", "x"), ("x-big", &big)])),
            Err(Malformed::TooLarge)
        );
    }
}
