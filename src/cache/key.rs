//! Every key the cache plane stores under, in one place.
//!
//! - An object's key is its route's key base and the upstream path: `http://host/path?q`
//!   (with `@host` of the request between them on a route for `*.domain`).
//! - A variant's key adds a hash of the request headers its response varies on.
//! - The metadata record of a key lives at `m:` + key; slice `i` of an object version at
//!   `s:{id}:{i}`, where the id follows a strong ETag (see [`object_id`]).

use http::HeaderMap;

use crate::http::conditional::is_strong_etag;
use crate::http::vary;
use crate::routing::Route;

/// The key of an object: the origin URL it comes from, as the route addresses it, and the
/// request's host when the route serves several (`*.domain`): those hosts' objects differ.
pub(crate) fn cache_key(route: &Route, host: Option<&str>, upstream_path: &str) -> String {
    let base = route.key_base();
    let host = match (&route.host, host) {
        (Some(p), Some(h)) if p.is_wildcard() => Some(h),
        _ => None,
    };
    // Joined by hand, once: every request, hits included, makes its key.
    let at = host.map_or(0, |h| h.len() + 1);
    let mut key = String::with_capacity(base.len() + at + upstream_path.len());
    key.push_str(base);
    if let Some(h) = host {
        key.push('@');
        key.push_str(h);
    }
    key.push_str(upstream_path);
    key
}

/// The key of the variant a request selects: the URL's key and the values of the named
/// headers (all field lines joined), compared as sent, or in their normal form when the
/// route asks (`routes[].vary_normalize`, RFC 9111 §4.1).
pub(crate) fn variant_key(key: &str, names: &[String], req: &HeaderMap, normalize: bool) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for n in names {
        h.update(n.as_bytes());
        h.update(b"=");
        let lines = req.get_all(n.as_str());
        if normalize {
            h.update(&vary::normalised(n, lines.iter().map(|v| v.as_bytes())));
        } else {
            for v in lines {
                h.update(v.as_bytes());
                h.update(b",");
            }
        }
        h.update(b"\n");
    }
    format!("{key}#vary:{:032x}", h.digest128())
}

/// Key of an object's metadata record.
pub(crate) fn meta_key(cache_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(cache_key.len() + 2);
    k.extend_from_slice(b"m:");
    k.extend_from_slice(cache_key.as_bytes());
    k
}

/// Key of one slice of an object version: `s:{id:032x}:{idx}`, written digit by digit (every
/// hit makes a few; the formatting machinery cost more than the lookups they serve).
pub(crate) fn slice_key(id: u128, idx: u64) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut k = Vec::with_capacity(2 + 32 + 1 + 20);
    k.extend_from_slice(b"s:");
    k.extend((0..32).rev().map(|i| HEX[((id >> (i * 4)) & 0xf) as usize]));
    k.push(b':');
    let mut digits = [0u8; 20];
    let (mut n, mut at) = (idx, digits.len());
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    k.extend_from_slice(&digits[at..]);
    k
}

/// Identity of an object version's slices. Only a strong ETag proves two responses carry the
/// same bytes (RFC 9111 §3.4), so only then is the identity derived (a refetch of that version
/// finds its slices); otherwise it is random, and two versions can never mix.
pub(crate) fn object_id(
    cache_key: &str,
    etag: Option<&[u8]>,
    length: Option<u64>,
    slice_size: u32,
) -> u128 {
    let Some(etag) = etag.filter(|e| is_strong_etag(e)) else {
        return rand::random();
    };
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(cache_key.as_bytes());
    h.update(b"\0e");
    h.update(etag);
    h.update(b"\0n");
    h.update(&length.unwrap_or(u64::MAX).to_le_bytes());
    h.update(&slice_size.to_le_bytes());
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http::headers::map_of as map;

    #[test]
    fn variants_differ_by_value() {
        let n = vec!["accept-encoding".to_string()];
        let gz = variant_key("k", &n, &map(&[("accept-encoding", "gzip, br")]), false);
        let gz2 = variant_key("k", &n, &map(&[("accept-encoding", "gzip, br")]), false);
        let none = variant_key("k", &n, &HeaderMap::new(), false);
        assert_eq!(gz, gz2);
        assert_ne!(gz, none);
        assert!(gz.starts_with("k#vary:"));
        let other = map(&[("accept-encoding", "BR,gzip")]);
        assert_ne!(variant_key("k", &n, &other, false), gz);
        assert_eq!(
            variant_key("k", &n, &other, true),
            variant_key("k", &n, &map(&[("accept-encoding", "gzip, br")]), true)
        );
    }

    #[test]
    fn ids_follow_strong_validators_only() {
        let a = object_id("k", Some(b"\"1\""), Some(5), 1024);
        assert_eq!(a, object_id("k", Some(b"\"1\""), Some(5), 1024));
        assert_ne!(a, object_id("k", Some(b"\"2\""), Some(5), 1024));
        assert_ne!(a, object_id("k", Some(b"\"1\""), Some(5), 2048));
        let weak = Some(&b"W/\"1\""[..]);
        assert_ne!(
            object_id("k", weak, Some(5), 1),
            object_id("k", weak, Some(5), 1)
        );
        assert_ne!(object_id("k", None, None, 1), object_id("k", None, None, 1));
    }

    #[test]
    fn meta_and_slice_keys_do_not_collide() {
        assert_eq!(meta_key("http://h/p"), b"m:http://h/p");
        assert_eq!(slice_key(0x12, 3), b"s:00000000000000000000000000000012:3");
    }

    #[test]
    fn slice_keys_are_the_format_they_always_were() {
        // Keys are on disk: a node must find the slices an older one stored.
        let ids = [
            0u128,
            1,
            0xabcdef,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ];
        let idxs = [0u64, 1, 9, 10, 99, 100, 12345, u64::MAX];
        for id in ids {
            for idx in idxs {
                assert_eq!(
                    slice_key(id, idx),
                    format!("s:{id:032x}:{idx}").into_bytes(),
                    "{id:x} {idx}"
                );
            }
        }
    }
}
