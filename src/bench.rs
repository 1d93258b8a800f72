//! Parts of the hit path opened to the criterion benches in `benches/` (feature `bench`): a
//! stored record decoded, and the response header built from it. Nothing here is part of
//! Strata's interface.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use pingora::http::ResponseHeader;

use crate::cache::bench::{stored_response, ObjectMeta, Record};
use crate::cache::key::object_id;
use crate::http::cache_status::CacheStatus;
use crate::http::freshness::{Overrides, Policy};
use crate::http::range::ByteRange;

/// A decoded object record.
pub struct Decoded(Arc<ObjectMeta>);

/// The record of a typical hot object: 8 KiB, the header fields a web server sends.
pub fn typical_record() -> Bytes {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("server", "nginx/1.22.1"),
        ("date", "Tue, 01 Dec 2026 13:32:12 GMT"),
        ("content-type", "application/octet-stream"),
        ("last-modified", "Tue, 01 Dec 2026 13:29:53 GMT"),
        ("etag", "\"6b0ecbd1-2000\""),
        ("expires", "Tue, 01 Dec 2026 14:32:12 GMT"),
        ("cache-control", "max-age=3600"),
        ("accept-ranges", "bytes"),
    ] {
        h.insert(n, HeaderValue::from_static(v));
    }
    let now = SystemTime::now();
    let meta = ObjectMeta {
        status: 200,
        headers: crate::cache::bench::stored_headers(&h),
        length: 8192,
        slice_size: 1 << 20,
        id: object_id("bench/hot", Some(b"\"6b0ecbd1-2000\""), Some(8192), 1 << 20),
        stored_at_ms: crate::http::date::unix_ms(now),
        policy: Policy::new(StatusCode::OK, &h, now, &Overrides::default()),
        full_header: Default::default(),
    };
    meta.encode()
}

/// Decodes a stored record as a hit does; `None` for a Vary record or bytes that are none.
pub fn decode(raw: &[u8]) -> Option<Decoded> {
    match Record::decode(raw)? {
        Record::Object(m) => Some(Decoded(m)),
        Record::Vary(_) => None,
    }
}

/// The response header of a full hit on `d`, as the serving step builds it: from the header
/// kept with the decoding after the first time.
pub fn hit_header(d: &Decoded) -> Option<ResponseHeader> {
    header_of(&d.0)
}

/// The response header of the first hit on a decoding: built from the stored fields.
pub fn first_hit_header(d: &Decoded) -> Option<ResponseHeader> {
    // A clone of a record keeps no built header.
    header_of(&ObjectMeta::clone(&d.0))
}

fn header_of(m: &ObjectMeta) -> Option<ResponseHeader> {
    let br = (m.length > 0).then(|| ByteRange {
        start: 0,
        end: m.length - 1,
    });
    let age = m.policy.age(SystemTime::now());
    let via = HeaderValue::from_static("1.1 strata");
    stored_response(m, StatusCode::OK, br, age, &via, &CacheStatus::hit()).ok()
}
