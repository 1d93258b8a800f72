//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): each takes arbitrary
//! bytes to one parser or decoder of untrusted input and checks what must hold for any input.
//! Nothing here is part of Strata's interface.

use std::path::Path;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::http::freshness::{Overrides, Policy};
use crate::http::{headers, range, vary};

/// Header lines `name: value` of fuzz input, as a map (lines that are no header are skipped).
fn header_map(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (n, v) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            h.append(n, v);
        }
    }
    h
}

/// `Range` against lengths derived from the input: a satisfiable answer lies inside the
/// representation.
pub fn range_header(data: &[u8]) {
    let len = data.first().map_or(0, |&b| 1u64 << (b % 64));
    for len in [0, 1, len, u64::MAX] {
        if let range::RangeRequest::Single(r) = range::evaluate(data, len) {
            assert!(r.start <= r.end && r.end < len, "{r:?} outside {len}");
        }
    }
    let _ = range::hint(data);
    if let Some((r, total)) = range::parse_content_range(data) {
        assert!(r.start <= r.end && r.end < total);
    }
    let _ = range::if_range_matches(data, Some(b"\"x\""), Some(data));
}

/// Response and request headers through the freshness rules: no panic, and the numbers stay
/// within RFC 9111's bounds.
pub fn cache_headers(data: &[u8]) {
    let mid = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (resp, req) = (
        header_map(&data[..mid]),
        header_map(data.get(mid + 1..).unwrap_or(&[])),
    );
    let _ = headers::cache_control(&resp);
    let _ = headers::content_length(&resp);
    let _ = headers::end_to_end(&resp);
    let _ = vary::names(&resp);
    for name in ["accept-encoding", "cookie"] {
        let _ = vary::normalised(name, req.get_all(name).iter().map(|v| v.as_bytes()));
    }
    let now = SystemTime::now();
    // Any final status, the first byte choosing it.
    let status = StatusCode::from_u16(200 + u16::from(data.first().copied().unwrap_or(0)) % 400)
        .unwrap_or(StatusCode::OK);
    let ov = Overrides {
        targeted: vec!["cdn-cache-control".to_string()].into(),
        ..Overrides::default()
    };
    let p = Policy::new(status, &resp, now, &ov);
    assert!(p.age(now) <= 1 << 31 && p.ttl(now) <= 1 << 31);
    let _ = p.storable(&req, &resp);
    let _ = p.reuse(&req, now);
    let _ = p.revalidated(&resp, &req, now, &ov);
    if let Some(v) = resp.get(http::header::EXPIRES) {
        let _ = crate::http::date::http_date(v.as_bytes());
    }
}

/// A request path: the canonical form is a fixed point, and stays under a prefix it starts
/// with whatever one more RFC 3986 decoding an origin applies.
pub fn request_path(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(norm) = crate::routing::normalize(path) else {
        return;
    };
    assert_eq!(
        crate::routing::normalize(&norm).as_deref(),
        Ok(norm.as_str())
    );
    if let Some(rest) = norm.strip_prefix("/pub/") {
        let once: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
        let mut depth = 0i64;
        for seg in once.split(|&b| b == b'/' || b == b'\\') {
            let seg = seg.split(|&b| b == b';').next().unwrap_or(&[]);
            match seg {
                b"" | b"." => {}
                b".." => depth -= 1,
                _ => depth += 1,
            }
            assert!(depth >= 0, "{path} -> {norm} leaves /pub/");
        }
    }
}

/// A configuration file: an error or a configuration, never a panic.
pub fn config_text(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = crate::config::Config::parse(text, Path::new("fuzz.yaml")) {
            let _ = crate::node::build::router(&cfg, Path::new("fuzz.yaml"));
        }
    }
}

/// A stored record: decodes to nothing or to a record that encodes back to the same bytes.
pub fn stored_record(data: &[u8]) {
    crate::cache::fuzz_record(data);
}

/// A request for a JWT-guarded route: token extraction and verification refuse or accept,
/// never panic, and a request that passes has lost its token.
pub fn jwt_request(data: &[u8]) {
    crate::routing::fuzz_jwt(data);
}
