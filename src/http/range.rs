//! Byte ranges (RFC 9110 §14): parsing `Range`, evaluating `If-Range`, slice arithmetic, and
//! the span of the representation a response body holds.

use http::{header, HeaderMap, StatusCode};

use crate::http::headers::{content_length, decimal};

/// An inclusive byte range within a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` value for a representation of `total` bytes.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, total)
    }

    /// Slices `first..=last` of `slice` bytes that hold this range.
    pub fn slices(&self, slice: u64) -> (u64, u64) {
        (self.start / slice, self.end / slice)
    }
}

/// What to do with a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send the whole representation (200).
    Full,
    /// One satisfiable range (206).
    Single(ByteRange),
    /// Nothing satisfiable (416 with `Content-Range: bytes */len`).
    Unsatisfiable,
}

/// More ranges than this in one header are not worth parsing: the header is ignored.
const MAX_RANGES: usize = 100;

enum Spec {
    /// first-pos and optional last-pos.
    Int(u64, Option<u64>),
    /// suffix-length.
    Suffix(u64),
}

fn parse_specs(value: &str) -> Option<Vec<Spec>> {
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    if set.bytes().filter(|&b| b == b',').count() >= MAX_RANGES {
        return None;
    }
    let mut specs = Vec::new();
    for part in set.split(',') {
        let part = part.trim();
        if part.is_empty() {
            // RFC 9110 list syntax tolerates empty elements.
            continue;
        }
        let (a, b) = part.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let spec = if a.is_empty() {
            Spec::Suffix(decimal(b)?)
        } else {
            let first = decimal(a)?;
            let last = if b.is_empty() {
                None
            } else {
                Some(decimal(b)?)
            };
            if last.is_some_and(|l| l < first) {
                // An invalid range-spec: the whole header is ignored (RFC 9110 §14.2 allows it).
                return None;
            }
            Spec::Int(first, last)
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// Evaluates a `Range` header value against a representation of `len` bytes.
///
/// Malformed or invalid headers are ignored (`Full`). Of several ranges, only a single one is
/// served as 206; a multi-range request is answered with the whole representation (200), which
/// RFC 9110 permits, rather than `multipart/byteranges`.
pub fn evaluate(value: &[u8], len: u64) -> RangeRequest {
    let Some(specs) = std::str::from_utf8(value).ok().and_then(parse_specs) else {
        return RangeRequest::Full;
    };
    let satisfiable: Vec<ByteRange> = specs
        .iter()
        .filter_map(|s| match *s {
            Spec::Int(first, last) if first < len => Some(ByteRange {
                start: first,
                end: last.map_or(len - 1, |l| l.min(len - 1)),
            }),
            Spec::Suffix(n) if n > 0 && len > 0 => Some(ByteRange {
                start: len.saturating_sub(n),
                end: len - 1,
            }),
            _ => None,
        })
        .collect();
    match satisfiable.as_slice() {
        [] => RangeRequest::Unsatisfiable,
        [one] => RangeRequest::Single(*one),
        _ => RangeRequest::Full,
    }
}

/// What a `Range` header asks for before the representation's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeHint {
    /// The whole representation (no header, a malformed one, or several ranges).
    Full,
    /// From `start`, to `end` when given.
    From {
        /// The first byte.
        start: u64,
        /// The last byte, if given.
        end: Option<u64>,
    },
    /// The last bytes: the start depends on the length.
    Suffix,
}

/// Reads a `Range` header without knowing the length, to decide what to ask the origin for.
pub fn hint(value: &[u8]) -> RangeHint {
    let specs = std::str::from_utf8(value).ok().and_then(parse_specs);
    match specs.as_deref() {
        Some([Spec::Int(start, end)]) => RangeHint::From {
            start: *start,
            end: *end,
        },
        Some([Spec::Suffix(_)]) => RangeHint::Suffix,
        _ => RangeHint::Full,
    }
}

/// Whether an `If-Range` value matches the stored validators (RFC 9110 §13.1.5): an entity-tag
/// must match the ETag strongly; a date must equal Last-Modified exactly.
pub fn if_range_matches(
    if_range: &[u8],
    etag: Option<&[u8]>,
    last_modified: Option<&[u8]>,
) -> bool {
    let v = if_range.trim_ascii();
    if v.starts_with(b"W/") {
        return false;
    }
    if v.starts_with(b"\"") {
        return etag.is_some_and(|e| !e.starts_with(b"W/") && e.trim_ascii() == v);
    }
    last_modified.is_some_and(|lm| lm.trim_ascii() == v)
}

/// Parses an origin's `Content-Range: bytes a-b/len`; `None` unless all three are numbers.
pub fn parse_content_range(v: &[u8]) -> Option<(ByteRange, u64)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let rest = s.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let r = ByteRange {
        start: a.trim().parse().ok()?,
        end: b.trim().parse().ok()?,
    };
    let total: u64 = total.trim().parse().ok()?;
    (r.start <= r.end && r.end < total).then_some((r, total))
}

/// Where a response body sits in the representation, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodySpan {
    /// Offset of the body's first byte in the representation.
    pub start: u64,
    /// Length of the whole representation.
    pub total: u64,
}

/// The span of a response body: a 206's `Content-Range`, else all of `Content-Length`
/// (nothing for 204 and 304); `None` when the header does not say.
pub fn body_span(status: StatusCode, h: &HeaderMap) -> Option<BodySpan> {
    match status {
        StatusCode::PARTIAL_CONTENT => h
            .get(header::CONTENT_RANGE)
            .and_then(|v| parse_content_range(v.as_bytes()))
            .map(|(r, total)| BodySpan {
                start: r.start,
                total,
            }),
        StatusCode::NOT_MODIFIED | StatusCode::NO_CONTENT => Some(BodySpan { start: 0, total: 0 }),
        _ => content_length(h).map(|total| BodySpan { start: 0, total }),
    }
}

/// The last byte of the representation a body of `total` bytes holds (`total - 1` unless a
/// 206 says less).
pub fn body_end(status: StatusCode, h: &HeaderMap, total: u64) -> u64 {
    match status {
        StatusCode::PARTIAL_CONTENT => h
            .get(header::CONTENT_RANGE)
            .and_then(|v| parse_content_range(v.as_bytes()))
            .map_or(0, |(r, _)| r.end),
        _ => total.saturating_sub(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: u64, e: u64) -> RangeRequest {
        RangeRequest::Single(ByteRange { start: s, end: e })
    }

    #[test]
    fn single_ranges() {
        assert_eq!(evaluate(b"bytes=0-99", 1000), r(0, 99));
        assert_eq!(evaluate(b"bytes=500-", 1000), r(500, 999));
        assert_eq!(evaluate(b"bytes=-100", 1000), r(900, 999));
        assert_eq!(evaluate(b"bytes=-5000", 1000), r(0, 999));
        assert_eq!(evaluate(b"bytes=990-5000", 1000), r(990, 999));
        assert_eq!(evaluate(b"bytes=999-999", 1000), r(999, 999));
        assert_eq!(evaluate(b"BYTES = 1-2", 1000), r(1, 2));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(evaluate(b"bytes=1000-", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(evaluate(b"bytes=-0", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(evaluate(b"bytes=0-", 0), RangeRequest::Unsatisfiable);
        assert_eq!(
            evaluate(b"bytes=99999999999999999999999999-", 1000),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn malformed_is_ignored() {
        for bad in [
            &b"bytes=abc"[..],
            b"bytes=5-1",
            b"items=0-1",
            b"bytes=",
            b"bytes=1",
            b"bytes=-",
            b"bytes=1-2-3",
            b"bytes=0x10-20",
            b"\xff\xfe",
        ] {
            assert_eq!(evaluate(bad, 1000), RangeRequest::Full, "{bad:?}");
        }
    }

    #[test]
    fn overflowing_numbers_saturate() {
        assert_eq!(
            evaluate(b"bytes=0-99999999999999999999999999", 1000),
            r(0, 999)
        );
        assert_eq!(
            evaluate(b"bytes=-99999999999999999999999999", 1000),
            r(0, 999)
        );
    }

    #[test]
    fn many_ranges_are_ignored_cheaply() {
        let many = format!("bytes={}", vec!["0-1"; 10_000].join(","));
        assert_eq!(evaluate(many.as_bytes(), 1000), RangeRequest::Full);
        assert_eq!(evaluate(b"bytes=0-1,5-6", 1000), RangeRequest::Full);
        // Unsatisfiable parts of a set are dropped; one satisfiable range remains.
        assert_eq!(evaluate(b"bytes=0-1,5000-6000", 1000), r(0, 1));
    }

    #[test]
    fn if_range() {
        let etag = Some(&b"\"abc\""[..]);
        let lm = Some(&b"Tue, 15 Nov 1994 12:45:26 GMT"[..]);
        assert!(if_range_matches(b"\"abc\"", etag, lm));
        assert!(!if_range_matches(b"\"abd\"", etag, lm));
        assert!(!if_range_matches(b"W/\"abc\"", etag, lm));
        assert!(!if_range_matches(b"\"abc\"", Some(b"W/\"abc\""), lm));
        assert!(if_range_matches(b"Tue, 15 Nov 1994 12:45:26 GMT", etag, lm));
        assert!(!if_range_matches(
            b"Tue, 15 Nov 1994 12:45:27 GMT",
            etag,
            lm
        ));
        assert!(!if_range_matches(
            b"Tue, 15 Nov 1994 12:45:26 GMT",
            etag,
            None
        ));
    }

    #[test]
    fn hints() {
        assert_eq!(
            hint(b"bytes=10-20"),
            RangeHint::From {
                start: 10,
                end: Some(20)
            }
        );
        assert_eq!(
            hint(b"bytes=10-"),
            RangeHint::From {
                start: 10,
                end: None
            }
        );
        assert_eq!(hint(b"bytes=-5"), RangeHint::Suffix);
        assert_eq!(hint(b"bytes=0-1,3-4"), RangeHint::Full);
        assert_eq!(hint(b"garbage"), RangeHint::Full);
    }

    #[test]
    fn content_range() {
        let (r, t) = parse_content_range(b"bytes 0-1023/4096").unwrap();
        assert_eq!((r.start, r.end, t), (0, 1023, 4096));
        assert_eq!(r.content_range(t), "bytes 0-1023/4096");
        assert!(parse_content_range(b"bytes */4096").is_none());
        assert!(parse_content_range(b"bytes 10-5/4096").is_none());
        assert!(parse_content_range(b"bytes 0-5000/4096").is_none());
        assert_eq!(
            ByteRange {
                start: 1500,
                end: 5000
            }
            .slices(1024),
            (1, 4)
        );
    }
}
