//! Vary: which request headers select a stored variant, and the key of each variant.

use http::{header, HeaderMap};

/// The request header names a response varies on (lower-case, sorted, without duplicates);
/// `None` for `Vary: *`, which no stored response can satisfy.
pub fn names(resp: &HeaderMap) -> Option<Vec<String>> {
    let mut names: Vec<String> = resp
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.iter().any(|n| n == "*") {
        return None;
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// The key of the variant a request selects: the URL's key and the values of the named
/// headers (all field lines joined), compared as sent: RFC 9111 §4.1 allows normalising them,
/// Strata does not.
pub fn variant_key(key: &str, names: &[String], req: &HeaderMap) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for n in names {
        h.update(n.as_bytes());
        h.update(b"=");
        for v in req.get_all(n.as_str()) {
            h.update(v.as_bytes());
            h.update(b",");
        }
        h.update(b"\n");
    }
    format!("{key}#vary:{:032x}", h.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::headers::map_of as map;

    #[test]
    fn names_are_normalised_and_star_is_none() {
        let r = map(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "accept-encoding"),
        ]);
        assert_eq!(
            names(&r).unwrap(),
            vec!["accept-encoding", "accept-language"]
        );
        assert!(names(&map(&[("vary", "*")])).is_none());
        assert!(names(&HeaderMap::new()).unwrap().is_empty());
    }

    #[test]
    fn variants_differ_by_value() {
        let n = vec!["accept-encoding".to_string()];
        let gz = variant_key("k", &n, &map(&[("accept-encoding", "gzip, br")]));
        let gz2 = variant_key("k", &n, &map(&[("accept-encoding", "gzip, br")]));
        let none = variant_key("k", &n, &HeaderMap::new());
        assert_eq!(gz, gz2);
        assert_ne!(gz, none);
        assert!(gz.starts_with("k#vary:"));
    }
}
