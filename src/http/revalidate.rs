//! Revalidation (RFC 9111 §4.3.3, §4.3.4): which stored response a 304 selects, and the
//! stored response updated by it.

use std::time::SystemTime;

use http::{header, HeaderMap, StatusCode};

use crate::http::freshness::{Overrides, Policy};

impl Policy {
    /// The stored headers updated by a 304 (§3.2, §4.3.4) and their new policy, or `None` when
    /// the 304 does not select the stored response: a strong ETag in the 304 selects only a
    /// stored response with that same strong ETag (never a weak one, which would let slices of
    /// two representations be stitched); a weak one selects by weak comparison.
    pub fn revalidated(
        &self,
        stored: &HeaderMap,
        not_modified: &HeaderMap,
        now: SystemTime,
        ov: &Overrides,
    ) -> Option<(Policy, HeaderMap)> {
        let tag = |h: &HeaderMap| {
            h.get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        };
        let opaque = |t: &str| t.trim_start_matches("W/").to_string();
        let selected = match (tag(stored), tag(not_modified)) {
            // A strong validator: the stored response must carry the same strong one.
            (old, Some(new)) if !new.starts_with("W/") => old.as_deref() == Some(new.as_str()),
            (Some(old), Some(new)) => opaque(&old) == opaque(&new),
            _ => true,
        };
        if !selected {
            return None;
        }
        let mut merged = stored.clone();
        // Age belongs to the old response: the new one starts from the 304's own.
        merged.remove(header::AGE);
        const KEEP: [header::HeaderName; 4] = [
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::CONTENT_RANGE,
            header::TRANSFER_ENCODING,
        ];
        for name in not_modified.keys() {
            if KEEP.contains(name) {
                continue;
            }
            merged.remove(name);
            for v in not_modified.get_all(name) {
                merged.append(name.clone(), v.clone());
            }
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        Some((Policy::new(status, &merged, now, ov), merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http::freshness::tests::p;
    use crate::http::headers::map_of as h;

    #[test]
    fn a_304_selects_by_strong_comparison_when_its_etag_is_strong() {
        let now = SystemTime::now();
        let ov = &Overrides::default();
        let pol = p(&[("cache-control", "max-age=10")]);
        let sel = |stored: &str, new: &str| {
            let (s, n) = (h(&[("etag", stored)]), h(&[("etag", new)]));
            pol.revalidated(&s, &n, now, ov).is_some()
        };
        assert!(sel("\"a\"", "\"a\""));
        assert!(
            !sel("W/\"a\"", "\"a\""),
            "a strong 304 must not select a weak stored ETag"
        );
        assert!(!sel("\"a\"", "\"b\""));
        assert!(sel("W/\"a\"", "W/\"a\""));
        assert!(sel("\"a\"", "W/\"a\""));
        assert!(!sel("W/\"a\"", "W/\"b\""));
        let none = pol.revalidated(&h(&[]), &h(&[("etag", "\"a\"")]), now, ov);
        assert!(
            none.is_none(),
            "a strong 304 selects no response stored without an ETag"
        );
        let merged = pol.revalidated(&h(&[("etag", "W/\"a\"")]), &h(&[]), now, ov);
        assert!(
            merged.is_some(),
            "a 304 without validators updates the one stored response"
        );
    }
}
