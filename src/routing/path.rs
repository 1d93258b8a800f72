//! Request paths as routes see them: one normal form, so no spelling of a path reaches
//! another route's origin path without passing that route's checks.

/// A request path as routes see it: `.` and `..` segments resolved (also when written `%2e`),
/// repeated slashes merged. Routing on it means no spelling of a path reaches another route's
/// origin path without passing that route's checks.
pub(crate) fn normalize(path: &str) -> String {
    let decoded = path.replace("%2e", ".").replace("%2E", ".");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut n = format!("/{}", out.join("/"));
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if trailing && n != "/" {
        n.push('/');
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_for_routing() {
        assert_eq!(normalize("//private/x"), "/private/x");
        assert_eq!(normalize("/a/./b/../c"), "/a/c");
        assert_eq!(normalize("/a/%2e%2e/private/"), "/private/");
        assert_eq!(normalize("/../../x"), "/x");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/a/b/"), "/a/b/");
    }
}
