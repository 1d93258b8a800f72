//! The README documents every configuration key the code accepts, and no other: the keys the
//! code accepts are learnt from the code itself (the error an unknown key gets lists the keys
//! of its section), the documented ones from the README's configuration block.

use std::collections::BTreeSet;
use std::path::Path;

use strata::config::Config;

/// A configuration that parses, with a spot for an unknown key in the section under test.
const BASE: &str = "listen: 127.0.0.1:8080
admin: {listen: 127.0.0.1:9090 ADMIN}
log: {level: info LOG}
tls: {TLS}
limits: {LIMITS}
https: {listen: 127.0.0.1:8443, certificates: [{cert: /tmp/c.pem, key: /tmp/k.pem CERT}] HTTPS}
cache:
  memory: 64MiB
  disk: {path: /tmp/x.img, size: 64MiB DISK}
  CACHE
routes:
  - name: a
    path_prefix: /a/
    origin: http://127.0.0.1:1/
    rules: [{match: 'x/**' RULE}]
    timeouts: {read: 5s TIMEOUTS}
    ROUTE
  - name: c
    path_prefix: /c/
    origins: [{url: 'http://127.0.0.1:4/' ORIGINS}]
    health_check: {path: / HEALTH}
  - name: b
    path_prefix: /b/
    public: true
    s3:
      endpoint: http://127.0.0.1:2
      bucket: b
      region: r
      replicas: [{endpoint: 'http://127.0.0.1:3', bucket: c, region: r REPLICA}]
      S3
    auth:
      AUTH
      jwt: {algorithms: [HS256], secret: 0123456789abcdef0123456789abcdef JWT}
TOP
";

/// The sections, the placeholder each is probed at, and how an unknown key is spelt there.
/// A new section of the configuration needs a line here (and a spot in `BASE`); the test then
/// holds its keys to the README like the others'.
const SECTIONS: [(&str, &str, &str); 18] = [
    ("routes[].origins[]", "ORIGINS", ", zzz_unknown: 1"),
    ("routes[].health_check", "HEALTH", ", zzz_unknown: 1"),
    ("https", "HTTPS", ", zzz_unknown: 1"),
    ("https.certificates[]", "CERT", ", zzz_unknown: 1"),
    ("limits", "LIMITS", "zzz_unknown: 1"),
    ("", "TOP", "zzz_unknown: 1"),
    ("admin", "ADMIN", ", zzz_unknown: 1"),
    ("log", "LOG", ", zzz_unknown: 1"),
    ("tls", "TLS", "zzz_unknown: 1"),
    ("cache", "CACHE", "zzz_unknown: 1"),
    ("cache.disk", "DISK", ", zzz_unknown: 1"),
    ("routes[]", "ROUTE", "zzz_unknown: 1"),
    ("routes[].rules[]", "RULE", ", zzz_unknown: 1"),
    ("routes[].timeouts", "TIMEOUTS", ", zzz_unknown: 1"),
    ("routes[].s3", "S3", "zzz_unknown: 1"),
    ("routes[].s3.replicas[]", "REPLICA", ", zzz_unknown: 1"),
    ("routes[].auth", "AUTH", "zzz_unknown: 1"),
    ("routes[].auth.jwt", "JWT", ", zzz_unknown: 1"),
];

/// The key names of the backquoted list after "expected" in a serde error.
fn expected_keys(message: &str) -> Vec<String> {
    let Some((_, list)) = message.split_once("expected") else {
        return vec![];
    };
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every key the code accepts, as dotted paths (`[]` for list items).
fn accepted() -> BTreeSet<String> {
    let clean = |s: &str| {
        let mut t = BASE.to_string();
        for (_, placeholder, _) in SECTIONS {
            if placeholder != s {
                t = t.replace(placeholder, "");
            }
        }
        t
    };
    assert!(
        Config::parse(&clean(""), Path::new("t.yaml")).is_ok(),
        "the probe's base configuration must parse"
    );
    let mut keys = BTreeSet::new();
    for (section, placeholder, unknown) in SECTIONS {
        let text = clean(placeholder).replace(placeholder, unknown);
        let err = match Config::parse(&text, Path::new("t.yaml")) {
            Ok(_) => panic!("{section}: an unknown key was accepted"),
            Err(e) => e.to_string(),
        };
        let found = expected_keys(&err);
        assert!(!found.is_empty(), "{section}: no key list in `{err}`");
        for k in found {
            keys.insert(if section.is_empty() {
                k
            } else {
                format!("{section}.{k}")
            });
        }
    }
    keys
}

/// The configuration block of the README.
fn readme_block() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .expect("a Configuration section");
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a yaml block in the Configuration section");
    block.to_string()
}

/// Every key path of a YAML document; the children of `claims` are claim names, not keys.
fn paths(v: &serde_norway::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_norway::Value::Mapping(m) => {
            for (k, child) in m {
                let Some(k) = k.as_str() else { continue };
                let p = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                if k != "claims" {
                    paths(child, &p, out);
                }
            }
        }
        serde_norway::Value::Sequence(items) => {
            for item in items {
                paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_accepted_key_is_documented_and_every_documented_key_accepted() {
    let accepted = accepted();
    let doc: serde_norway::Value =
        serde_norway::from_str(&readme_block()).expect("the README's block is YAML");
    let mut documented = BTreeSet::new();
    paths(&doc, "", &mut documented);
    // A section itself is a key of its parent: compare leaves and sections alike.
    let missing: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "keys the code accepts but the README does not show: {missing:?}\n\
         keys the README shows but the code does not accept: {unknown:?}"
    );
}
