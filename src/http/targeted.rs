//! Targeted cache-control fields (RFC 9213): `CDN-Cache-Control` and fields like it, which
//! speak to one class of caches and take precedence over `Cache-Control` for them.
//!
//! A targeted field is a Structured Field Dictionary (RFC 9651), unlike `Cache-Control`; a
//! value that does not parse as one is ignored, as if the field were absent.

use http::HeaderMap;
use sfv::{BareItem, ListEntry, Parser};

use crate::http::headers::Directives;

/// Longest targeted field value Strata parses (all field lines joined); longer ones are
/// ignored like invalid ones.
const MAX_FIELD: usize = 8 * 1024;

/// The directives of the first field in `names` (lower-case, in order of precedence) that the
/// response carries with a valid value; `None` when there is none, and `Cache-Control` rules.
pub fn directives(resp: &HeaderMap, names: &[String]) -> Option<Directives> {
    names.iter().find_map(|n| parse(resp, n))
}

/// The directives of field `name`, if present and a valid dictionary.
fn parse(resp: &HeaderMap, name: &str) -> Option<Directives> {
    let mut lines = resp.get_all(name).iter().peekable();
    lines.peek()?;
    // Several field lines are one value joined with commas (RFC 9110 §5.3).
    let mut value = Vec::new();
    for (i, line) in lines.enumerate() {
        if i > 0 {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(line.as_bytes());
        if value.len() > MAX_FIELD {
            return None;
        }
    }
    let dict = Parser::parse_dictionary(&value).ok()?;
    let mut d = Directives::with_capacity(dict.len());
    for (key, entry) in dict {
        let value = match entry {
            ListEntry::Item(item) => match item.bare_item {
                // `private=?0` turns a directive off: it is left out.
                BareItem::Boolean(false) => continue,
                BareItem::Boolean(true) => None,
                BareItem::Integer(n) => Some(n.to_string()),
                BareItem::String(s) | BareItem::Token(s) => Some(s),
                // A decimal or byte sequence is no valid argument of any directive Strata
                // uses: kept as a flag, its argument (like `max-age=1.5`) unusable.
                BareItem::Decimal(_) | BareItem::ByteSeq(_) => Some(String::new()),
            },
            ListEntry::InnerList(_) => Some(String::new()),
        };
        d.push((key, value));
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http::headers::map_of as h;

    fn names() -> Vec<String> {
        vec!["strata-cache-control".into(), "cdn-cache-control".into()]
    }

    #[test]
    fn first_listed_valid_field_wins() {
        let resp = h(&[
            ("cdn-cache-control", "max-age=60"),
            ("strata-cache-control", "max-age=5, private"),
        ]);
        let d = directives(&resp, &names()).unwrap();
        assert_eq!(
            d,
            vec![
                ("max-age".to_string(), Some("5".to_string())),
                ("private".to_string(), None)
            ]
        );
    }

    #[test]
    fn invalid_values_are_ignored() {
        // Not a dictionary (upper-case keys are invalid): the next field on the list is used.
        let resp = h(&[
            ("strata-cache-control", "Max-Age=5"),
            ("cdn-cache-control", "no-store"),
        ]);
        assert_eq!(
            directives(&resp, &names()).unwrap(),
            vec![("no-store".to_string(), None)]
        );
        assert!(directives(&h(&[("cdn-cache-control", "max-age=\"")]), &names()).is_none());
        assert!(directives(&h(&[("cache-control", "max-age=5")]), &names()).is_none());
    }

    #[test]
    fn false_flags_are_off_and_lines_are_joined() {
        let resp = h(&[
            ("cdn-cache-control", "private=?0"),
            ("cdn-cache-control", "max-age=30"),
        ]);
        assert_eq!(
            directives(&resp, &names()).unwrap(),
            vec![("max-age".to_string(), Some("30".to_string()))]
        );
    }
}
