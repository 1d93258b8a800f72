//! Whether an origin response may be stored.
//!
//! A deliberately narrow first rule set: 200 responses to GET without `no-store`, `private`,
//! `Set-Cookie` or `Vary`, to requests without `Authorization`.

use http::{header, HeaderMap, Method, StatusCode};

use crate::headers::cache_control;

/// `Ok` when the response may be stored, else a short reason for `Cache-Status: detail=`.
pub fn storable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
) -> Result<(), &'static str> {
    if method != Method::GET {
        return Err("method");
    }
    if req.contains_key(header::AUTHORIZATION) {
        return Err("authorization");
    }
    if status != StatusCode::OK {
        return Err("status");
    }
    for (d, _) in cache_control(resp) {
        match d.as_str() {
            "no-store" => return Err("no-store"),
            "private" => return Err("private"),
            _ => {}
        }
    }
    if resp.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    if resp.contains_key(header::VARY) {
        return Err("vary");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn rules() {
        let none = HeaderMap::new();
        let ok = StatusCode::OK;
        assert_eq!(storable(&Method::GET, &none, ok, &none), Ok(()));
        assert_eq!(storable(&Method::POST, &none, ok, &none), Err("method"));
        let auth = resp(&[("authorization", "Bearer x")]);
        assert_eq!(
            storable(&Method::GET, &auth, ok, &none),
            Err("authorization")
        );
        assert_eq!(
            storable(&Method::GET, &none, StatusCode::PARTIAL_CONTENT, &none),
            Err("status")
        );
        let cc = resp(&[("cache-control", "public, no-store")]);
        assert_eq!(storable(&Method::GET, &none, ok, &cc), Err("no-store"));
        let cc = resp(&[("cache-control", "private")]);
        assert_eq!(storable(&Method::GET, &none, ok, &cc), Err("private"));
        let ck = resp(&[("set-cookie", "a=b")]);
        assert_eq!(storable(&Method::GET, &none, ok, &ck), Err("set-cookie"));
        let v = resp(&[("vary", "accept-encoding")]);
        assert_eq!(storable(&Method::GET, &none, ok, &v), Err("vary"));
    }
}
