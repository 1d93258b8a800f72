//! Request paths as routes see them: one canonical form, routed, keyed and forwarded alike, so
//! no spelling of a path reaches another route's origin path, or another route's cache key.
//!
//! The canonical form decodes percent-escapes of unreserved characters (RFC 3986 §2.3: letters,
//! digits, `-._~`), writes every other escape with upper-case hex, merges repeated slashes and
//! resolves `.` and `..` segments. Spellings that origins decode differently are refused rather
//! than guessed at: an encoded slash or backslash (`%2F`, `%5C`), a raw backslash (some servers
//! treat it as a separator), an encoded NUL or control byte, a malformed escape, and a dot
//! segment carrying parameters (`..;`, which some servers resolve as `..`).

/// Why a request path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with /")]
    NotAbsolute,
    /// `%2F`, `%5C` or `\`: a separator origins may or may not see.
    #[error("the path encodes a slash or backslash")]
    Separator,
    /// `%` not followed by two hex digits.
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    /// A NUL or control byte, raw or encoded.
    #[error("the path holds a control byte")]
    Control,
    /// A dot segment with parameters (`..;x`).
    #[error("a dot segment carries parameters")]
    DotParameters,
}

/// RFC 3986 unreserved characters: their escapes mean the same as the characters.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes what may be decoded and refuses what is ambiguous (see the module doc).
fn canonical_escapes(path: &str) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (h, l) = match (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(PathError::BadEscape),
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' => return Err(PathError::Separator),
                    v if v < 0x20 || v == 0x7f => return Err(PathError::Control),
                    v if unreserved(v) => out.push(v as char),
                    v => out.push_str(&format!("%{v:02X}")),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Separator),
            c if c < 0x20 || c == 0x7f => return Err(PathError::Control),
            _ => {
                // Copy the run of ordinary characters up to the next escape (UTF-8 kept whole).
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'%' || c == b'\\' || c < 0x20 || c == 0x7f)
                    .map_or(b.len(), |n| i + n);
                out.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    Ok(out)
}

/// Whether a segment is `.` or `..` followed by parameters, once its escapes are decoded.
fn is_dot_with_parameters(seg: &str) -> bool {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
    let head = decoded.split(|&b| b == b';').next().unwrap_or(&[]);
    matches!(head, b"." | b"..") && decoded.len() > head.len()
}

/// The canonical form of a request path (see the module doc), or why it is refused.
pub(crate) fn normalize(path: &str) -> Result<String, PathError> {
    if is_canonical(path) {
        return Ok(path.to_owned());
    }
    rewrite(path)
}

/// Whether `path` is already in the canonical form: plain characters only (no escape, no `;`,
/// nothing outside ASCII), and no empty, `.` or `..` segment but a trailing slash. Most paths
/// are, and are answered without taking them apart.
fn is_canonical(path: &str) -> bool {
    // Unreserved characters, the separator, and the sub-delimiters but `;` (RFC 3986 §3.3).
    let plain = |&c: &u8| {
        unreserved(c)
            || matches!(
                c,
                b'/' | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            )
    };
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    // A trailing slash is kept as it is.
    let body = rest.strip_suffix('/').unwrap_or(rest);
    path.as_bytes().iter().all(plain)
        && (rest.is_empty() || body.split('/').all(|seg| !matches!(seg, "" | "." | "..")))
}

/// The canonical form of a path that is not already in it.
fn rewrite(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = canonical_escapes(path)?;
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            // A dot segment with parameters, `;` written as is or escaped (`..;`, `..%3B`):
            // servers that decode it and drop parameters see `..`.
            s if is_dot_with_parameters(s) => return Err(PathError::DotParameters),
            s => out.push(s),
        }
    }
    let mut n = format!("/{}", out.join("/"));
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if trailing && n != "/" {
        n.push('/');
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> String {
        normalize(p).unwrap()
    }

    #[test]
    fn a_path_taken_as_canonical_is_what_rewriting_it_gives() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "/", "a", "b", ".", "..", "%2e", "%41", "%2F", ";", ";x", "-", "~", "_", "!", "'", "(",
            "@", ":", "=", "+", "é", "%", "\\", "\t", "%00", "%3B", "*",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut canonical = 0;
        for _ in 0..50_000 {
            let mut p = String::from("/");
            for _ in 0..rng.random_range(0..8) {
                p.push_str(pieces[rng.random_range(0..pieces.len())]);
            }
            if is_canonical(&p) {
                canonical += 1;
                assert_eq!(rewrite(&p).as_deref(), Ok(p.as_str()), "{p}");
            }
            assert_eq!(normalize(&p), rewrite(&p), "{p}");
        }
        // The generator reaches both sides.
        assert!(canonical > 1_000 && canonical < 40_000, "{canonical}");
        for p in ["/", "/a/b/", "/a.b/c", "/a/..b", "/.well-known/x"] {
            assert!(is_canonical(p), "{p}");
        }
        for p in [
            "", "a", "//a", "/a//b", "/a/./b", "/a/..", "/a/.", "/%41", "/a;b", "/é",
        ] {
            assert!(!is_canonical(p), "{p}");
        }
    }

    #[test]
    fn paths_are_normalised_for_routing() {
        assert_eq!(ok("//private/x"), "/private/x");
        assert_eq!(ok("/a/./b/../c"), "/a/c");
        assert_eq!(ok("/a/%2e%2e/private/"), "/private/");
        assert_eq!(ok("/../../x"), "/x");
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/a/b/"), "/a/b/");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_in_one_spelling() {
        assert_eq!(ok("/%61%62%2D%7e"), "/ab-~");
        assert_eq!(ok("/a%20b/%c3%a9"), "/a%20b/%C3%A9");
        assert_eq!(ok("/caf%C3%A9;v=1"), "/caf%C3%A9;v=1");
        assert_eq!(ok("/pub/%2E%2E/x"), "/x");
        assert_eq!(ok("/é/x"), "/é/x");
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (p, e) in [
            ("/pub/%2E%2E%2Fsecret.txt", PathError::Separator),
            ("/x/..%2fadmin/secret", PathError::Separator),
            ("/x/..%5cadmin", PathError::Separator),
            ("/x/..\\admin", PathError::Separator),
            ("/x/%00", PathError::Control),
            ("/x/%0d%0a", PathError::Control),
            ("/x/%zz", PathError::BadEscape),
            ("/x/%4", PathError::BadEscape),
            ("/x/..;/admin", PathError::DotParameters),
            ("/x/.;a/y", PathError::DotParameters),
            ("/x/..%3b/y", PathError::DotParameters),
            ("/x/.%3B/y", PathError::DotParameters),
            // Found by the path fuzz target.
            (
                "/pub//..%3b/x/.%3b'/4/4eb/..%3b'/$/.%4e4eb/..%3b",
                PathError::DotParameters,
            ),
            ("*", PathError::NotAbsolute),
        ] {
            assert_eq!(normalize(p), Err(e), "{p}");
        }
    }

    /// What an origin makes of a path: one RFC 3986 decoding, then dot segments resolved, with
    /// `\` as a separator and `;` parameters ignored (as lenient servers do).
    fn origin_view(p: &str) -> String {
        let once: Vec<u8> = percent_encoding::percent_decode_str(p).collect();
        let once = String::from_utf8_lossy(&once).replace('\\', "/");
        let mut out: Vec<&str> = Vec::new();
        for seg in once.split('/') {
            match seg.split(';').next().unwrap_or("") {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                _ => out.push(seg),
            }
        }
        format!("/{}", out.join("/"))
    }

    /// Whatever the spelling, a normalised path under a route's prefix stays under it as an
    /// origin decodes it.
    #[test]
    fn no_spelling_leaves_its_prefix() {
        let parts = [
            "a",
            ".",
            "..",
            "%2e",
            "%2E%2e",
            ".%2e",
            "%2F",
            "%5c",
            "\\",
            ";",
            "..;",
            "%25",
            "%252e",
            "%2e%2e%2f",
            "..%3b",
            ".%3B",
            "b",
        ];
        let mut n = 0;
        for x in parts {
            for y in parts {
                for z in parts {
                    let p = format!("/pub/{x}/{y}/{z}");
                    let Ok(norm) = normalize(&p) else { continue };
                    if !norm.starts_with("/pub/") {
                        continue;
                    }
                    n += 1;
                    let seen = origin_view(&norm);
                    assert!(
                        seen.starts_with("/pub/") || seen == "/pub",
                        "{p} -> {norm} -> {seen}"
                    );
                }
            }
        }
        assert!(n > 100, "only {n} spellings stayed under the prefix");
    }
}
