//! The example configuration (`config.yaml`, a Debian mirror node) in front of a local Debian
//! repository built here with real `.deb` files, used by the real `apt-get`: a second client's
//! downloads never reach the mirror, and a second `update` is answered from the cache or by
//! revalidation. Also: a mirror that sends no lifetime and no validators is still cached.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::nginx::{nginx_bin, Nginx};
use common::*;

/// Where the test's scripts live.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apt")
        .join(name)
}

/// Why the apt test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    for tool in ["apt-get", "dpkg-deb"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    nginx_bin()
        .is_none()
        .then(|| "nginx is not installed".to_string())
}

/// The example configuration, listening on the test's ports, with its origin at `origin`
/// (`http://host:port/`) and a small disk: every replacement must find its text, so the
/// example keeps the shape this test relies on.
fn example_config(addr: std::net::SocketAddr, admin: std::net::SocketAddr, origin: &str) -> String {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml"))
            .expect("config.yaml");
    let mut yaml = example.clone();
    for (from, to) in [
        ("listen: 0.0.0.0:8080", format!("listen: {addr}")),
        ("listen: 127.0.0.1:9090", format!("listen: {admin}")),
        ("size: 2GiB", "size: 256MiB".to_string()),
        ("http://deb.debian.org/", origin.to_string()),
    ] {
        assert!(yaml.contains(from), "config.yaml no longer has `{from}`");
        yaml = yaml.replace(from, &to);
    }
    yaml
}

/// Runs `apt-get ARGS` with its state in `state`, against `url`.
fn apt(state: &Path, url: &str, args: &[&str]) {
    let out = Command::new(script("apt-run.sh"))
        .arg(state)
        .arg(url)
        .args(args)
        .output()
        .expect("run apt-get");
    assert!(
        out.status.success(),
        "apt-get {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (path, status) of each request in nginx's access log from line `from` on.
fn requests(nginx: &Nginx, from: usize) -> Vec<(String, u16)> {
    nginx
        .access_log()
        .iter()
        .skip(from)
        .filter_map(|line| {
            // ... "GET /path HTTP/1.1" 200 ...
            let (_, rest) = line.split_once("\"GET ")?;
            let (path, rest) = rest.split_once(' ')?;
            let status = rest.split_once("\" ")?.1.split(' ').next()?.parse().ok()?;
            Some((path.to_string(), status))
        })
        .collect()
}

/// The `.deb` files apt left in a state directory, with their bytes.
fn debs(state: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<_> = std::fs::read_dir(state.join("archives"))
        .expect("archives")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".deb"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read deb"))
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apt_through_the_example_configuration() {
    if let Some(why) = missing_tools() {
        eprintln!("skipping the apt test: {why}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mirror = work.path().join("mirror");
    for archive in ["debian", "debian-security"] {
        let out = Command::new(script("make-repo.sh"))
            .arg(mirror.join(archive))
            .output()
            .expect("make-repo.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let nginx = Nginx::start_mirror(&mirror);
    let origin = format!("http://127.0.0.1:{}/", nginx.port);
    let node = Strata::start_yaml(tempfile::tempdir().unwrap(), |addr, admin| {
        example_config(addr, admin, &origin)
    });
    let url = node.url("/debian/");
    let packages = [
        "install",
        "--download-only",
        "-y",
        "strata-alpha",
        "strata-delta",
    ];

    // The first client fills the cache.
    let first = work.path().join("client-a");
    apt(&first, &url, &["update"]);
    apt(&first, &url, &packages);
    let got = debs(&first);
    let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "strata-alpha_1.0_all.deb",
            "strata-bravo_1.0_all.deb",
            "strata-delta_1.0_all.deb"
        ]
    );
    for (name, bytes) in &got {
        let pkg = name.split('_').next().unwrap();
        let pool = mirror.join(format!("debian/pool/main/s/{pkg}/{name}"));
        assert!(
            *bytes == std::fs::read(&pool).unwrap(),
            "{name} differs from the mirror's"
        );
    }
    let after_first = nginx.access_log().len();
    let first_debs = requests(&nginx, 0)
        .iter()
        .filter(|(p, _)| p.ends_with(".deb"))
        .count();
    assert_eq!(first_debs, 3, "{:?}", requests(&nginx, 0));

    // A second client: no .deb reaches the mirror, and the bytes are the same.
    let second = work.path().join("client-b");
    apt(&second, &url, &["update"]);
    apt(&second, &url, &packages);
    assert!(debs(&second) == got, "the second client got other bytes");
    let later = requests(&nginx, after_first);
    assert!(
        later.iter().all(|(p, _)| !p.ends_with(".deb")),
        "a .deb went to the mirror again: {later:?}"
    );

    // A second update of the first client: answered from the cache, or revalidated (304);
    // no index is transferred again. (InRelease and Release.gpg do not exist: 404s.)
    let mark = nginx.access_log().len();
    apt(&first, &url, &["update"]);
    let again = requests(&nginx, mark);
    assert!(
        again.iter().all(|(_, s)| *s == 304 || *s == 404),
        "a second update transferred an index again: {again:?}"
    );

    // The security archive is its own route, cached the same way.
    let release = "/debian-security/dists/bookworm/Release";
    assert_eq!(
        get(&node.url(release)).await.1,
        "strata; fwd=uri-miss; stored"
    );
    assert_eq!(get(&node.url(release)).await.1, "strata; hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_without_lifetimes_or_validators_is_still_cached() {
    let origin = TestOrigin::start().await;
    let bare = |body: &'static str| {
        let mut o = Object::new(body);
        o.bare = true;
        o
    };
    let paths = [
        "/debian/dists/bookworm/Release",
        "/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/00ff",
        "/debian/pool/main/h/hello/hello_1.0_amd64.deb",
        "/debian-security/dists/bookworm-security/Release",
    ];
    for p in paths {
        origin.put(p, bare("bytes"));
    }
    let url = origin.url();
    let node = Strata::start_yaml(tempfile::tempdir().unwrap(), |addr, admin| {
        example_config(addr, admin, &url)
    });
    for p in paths {
        let (status, cs, body) = get(&node.url(p)).await;
        assert_eq!(
            (status, cs.as_str(), &body[..]),
            (200, "strata; fwd=uri-miss; stored", &b"bytes"[..]),
            "{p}"
        );
        let (_, cs, _) = get(&node.url(p)).await;
        assert_eq!(cs, "strata; hit", "{p}");
        assert_eq!(origin.hits(p), 1, "{p}");
    }
    // Release is kept briefly (the rule's default_ttl of 2m), a package file for a month.
    let ttl = |p: &str| {
        let url = node.url(p);
        async move {
            let r = reqwest::get(url).await.unwrap();
            let cs = r.headers()["cache-status"].to_str().unwrap().to_string();
            cs.rsplit("ttl=").next().unwrap().parse::<i64>().unwrap()
        }
    };
    let release_ttl = ttl(paths[0]).await;
    let deb_ttl = ttl(paths[2]).await;
    assert!((100..=120).contains(&release_ttl), "{release_ttl}");
    assert!(deb_ttl > 29 * 86400, "{deb_ttl}");
}
