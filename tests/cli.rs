//! `strata check`: configuration errors name the key and exit non-zero.

mod common;

use std::process::Command;

use common::strata_cmd;

fn check(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, yaml).unwrap();
    strata_cmd(&["check"], &p)
}

const GOOD: &str = "listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:9090
cache:
  memory: 256MiB
  disk:
    path: ./var/cache.img
    size: 2GiB
    io: auto
  slice: 1MiB
routes:
  - name: debian
    path_prefix: /debian/
    origin: http://deb.debian.org/debian/
";

#[test]
fn the_example_config_is_valid() {
    let (ok, text) = check(GOOD);
    assert!(ok, "{text}");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let (ok, text) = strata_cmd(&["check"], &example);
    assert!(ok, "{text}");
}

#[test]
fn a_typo_in_a_key_is_named() {
    let (ok, text) = check(&GOOD.replace("  slice:", "  slcie:"));
    assert!(!ok);
    assert!(text.contains("cache") && text.contains("slcie"), "{text}");
    let (ok, text) = check(&GOOD.replace("path_prefix", "path_prefx"));
    assert!(!ok);
    assert!(
        text.contains("routes[0]") && text.contains("path_prefx"),
        "{text}"
    );
}

#[test]
fn a_bad_size_is_named() {
    let (ok, text) = check(&GOOD.replace("memory: 256MiB", "memory: lots"));
    assert!(!ok);
    assert!(
        text.contains("cache.memory") && text.contains("invalid size"),
        "{text}"
    );
}

#[test]
fn bad_values_are_named() {
    for (from, to, key) in [
        ("listen: 127.0.0.1:8080", "listen: nowhere", "listen"),
        ("io: auto", "io: aio", "cache.disk.io"),
        ("slice: 1MiB", "slice: 1KiB", "cache.slice"),
        ("http://deb", "gopher://deb", "routes[0].origin"),
    ] {
        let (ok, text) = check(&GOOD.replace(from, to));
        assert!(!ok, "{to}");
        assert!(text.contains(key), "{to}: {text}");
    }
    // A rule with a broken glob, or with both kinds of lifetime, is named by its index.
    let rules = |body: &str| format!("{GOOD}    rules:\n      - match: 'pool/**'\n{body}");
    for (body, key) in [
        ("      - match: 'dists/[bad'\n", "routes[0].rules[1].match"),
        (
            "      - match: 'x/**'\n        ttl: 1h\n        default_ttl: 1h\n",
            "routes[0].rules[1].ttl",
        ),
        ("      - match: 'x/**'\n        tll: 1h\n", "tll"),
    ] {
        let (ok, text) = check(&rules(body));
        assert!(!ok, "{body}");
        assert!(text.contains(key), "{body}: {text}");
    }
    for (yaml, key) in [
        (format!("{GOOD}via: 'two words'\n"), "via"),
        (
            GOOD.replace(
                "  slice: 1MiB",
                "  slice: 1MiB\n  targeted_cache_control: ['bad name']",
            ),
            "cache.targeted_cache_control[0]",
        ),
    ] {
        let (ok, text) = check(&yaml);
        assert!(!ok && text.contains(key), "{key}: {text}");
    }
    let (ok, text) = check("listen: [");
    assert!(!ok);
    assert!(text.contains("c.yaml"), "{text}");
}

#[test]
fn format_then_inspect_a_cache_file() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = dir.path().join("cache.img");
    // Foreign bytes: only an explicit `strata format` may overwrite them.
    std::fs::write(&img, vec![0xabu8; 16 << 20]).unwrap();
    let conf = dir.path().join("c.yaml");
    std::fs::write(
        &conf,
        GOOD.replace("./var/cache.img", img.to_str().unwrap())
            .replace("size: 2GiB", "size: 16MiB\n    region_size: 4MiB"),
    )
    .unwrap();
    let run = |args: &[&str]| strata_cmd(args, &conf);
    let (ok, text) = run(&["inspect"]);
    assert!(!ok && text.contains("not a Strata cache"), "{text}");
    let (ok, text) = run(&["format"]);
    assert!(ok, "{text}");
    assert!(text.contains("3 regions of 4194304 bytes"), "{text}");
    let (ok, text) = run(&["inspect"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("regions:         3 of 4194304 bytes (0 in use"),
        "{text}"
    );
    assert!(text.contains("items:           0"), "{text}");
}

#[test]
fn key_files_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("keys.json"), r#"{"keys":[]}"#).unwrap();
    let yaml = GOOD.to_string()
        + "    auth:\n      jwt:\n        algorithms: [RS256]\n        jwks_file: keys.json\n";
    std::fs::write(conf_dir.join("c.yaml"), yaml).unwrap();
    // Started from the parent directory, with the config named by a relative path.
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(dir.path())
        .args(["check", "--config", "conf/c.yaml"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
}
