//! Vary: which request headers select a stored variant (the variant's key is the cache
//! plane's, in `cache::key`).

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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http::headers::map_of as map;

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
}
