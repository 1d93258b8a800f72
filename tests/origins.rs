//! Several origin servers behind one route (`routes[].origins`): real nginx servers, one
//! killed mid-run and started again; every origin down.

mod common;

use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::*;

/// A route over the two servers, probed every 100 ms.
fn node_over(a: &Nginx, b: &Nginx, rules: &str) -> Strata {
    let mut cfg = NodeConfig::new("http://unused/");
    cfg.routes = format!(
        "  - name: pool\n    path_prefix: /\n    origins:\n      - url: http://127.0.0.1:{}/\n      - url: http://127.0.0.1:{}/\n        weight: 2\n    health_check: {{path: /health, interval: 100ms, timeout: 500ms, fall: 2, rise: 2}}\n    retries: 1\n    timeouts: {{connect: 1s, read: 5s}}\n{rules}",
        a.port, b.port
    );
    Strata::start(&cfg)
}

/// A directory of objects the servers share, and a health page.
fn files(n: usize) -> (tempfile::TempDir, Vec<bytes::Bytes>) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("health"), b"ok\n").unwrap();
    let bodies: Vec<_> = (0..n)
        .map(|i| {
            let b = random_bytes(20_000 + i * 10, 500 + i as u64);
            std::fs::write(root.path().join(format!("f{i}")), &b).unwrap();
            b
        })
        .collect();
    (root, bodies)
}

/// GETs of every object, each checked; the statuses other than 200.
async fn round(node: &Strata, bodies: &[bytes::Bytes]) -> Vec<u16> {
    let mut bad = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let (s, _, got) = get(&node.url(&format!("/f{i}"))).await;
        if s != 200 {
            bad.push(s);
        } else {
            assert!(got == *b, "object {i} differs");
        }
    }
    bad
}

fn served(n: &Nginx, what: &str) -> usize {
    n.access_log().iter().filter(|l| l.contains(what)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_passed_over_without_client_errors_and_rejoins() {
    let (root, bodies) = files(30);
    // Nothing is stored: every request goes to a server.
    let no_store = "add_header Cache-Control no-store;";
    let mut a = Nginx::start_with(root.path(), None, no_store);
    let b = Nginx::start_with(root.path(), None, no_store);
    let node = node_over(&a, &b, "");
    assert!(round(&node, &bodies).await.is_empty());
    let (a_before, b_before) = (served(&a, "GET /f"), served(&b, "GET /f"));
    assert!(
        a_before > 0 && b_before > a_before,
        "weights 1:2: {a_before} and {b_before}"
    );

    a.kill();
    let killed = Instant::now();
    // Right away, before any probe could tell: a refused connection goes to the other server.
    for _ in 0..3 {
        assert!(
            round(&node, &bodies).await.is_empty(),
            "a client saw an error"
        );
    }
    assert!(node
        .log_with("unhealthy")
        .contains("origin server unhealthy"));
    eprintln!(
        "marked down {:?} after the kill (interval 100ms, fall 2)",
        killed.elapsed()
    );

    a.restart();
    let restarted = Instant::now();
    assert!(node.log_with("healthy again").contains("healthy again"));
    eprintln!("back {:?} after the restart (rise 2)", restarted.elapsed());
    let a_again = served(&a, "GET /f");
    assert!(round(&node, &bodies).await.is_empty());
    assert!(served(&a, "GET /f") > a_again, "the server did not rejoin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_server_down_stale_is_served_where_allowed_and_502_otherwise() {
    let (root, bodies) = files(2);
    let mut a = Nginx::start_with(root.path(), None, "");
    let mut b = Nginx::start_with(root.path(), None, "");
    // Stored for a second, then stale for a day if the origin fails.
    let rules = "    rules:\n      - match: 'f0'\n        ttl: 1s\n        stale_if_error: 1d\n";
    let node = node_over(&a, &b, rules);
    assert_eq!(get(&node.url("/f0")).await.2, bodies[0]);
    a.kill();
    b.kill();
    // Stale is a matter of the clock: the stored copy's second must pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, cs, got) = get(&node.url("/f0")).await;
    assert_eq!((s, got), (200, bodies[0].clone()));
    assert!(cs.contains("detail=stale-if-error"), "{cs}");
    let (s, _, _) = get(&node.url("/f1")).await;
    assert_eq!(s, 502);
}

#[test]
fn origins_are_checked_by_strata_check() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.yaml");
    let base =
        "listen: 127.0.0.1:1\ncache: {memory: 1MiB}\nroutes:\n  - name: p\n    path_prefix: /\n";
    for (route, key) in [
        (
            "    origins: [{url: 'http://127.0.0.1:2/a/'}, {url: 'http://127.0.0.1:3/b/'}]\n",
            "routes[0].origins[1].url",
        ),
        (
            "    origins: [{url: 'http://127.0.0.1:2/', weight: 0}]\n",
            "routes[0].origins[0].weight",
        ),
        (
            "    origins: [{url: 'http://127.0.0.1:2/'}]\n    origin: http://127.0.0.1:3/\n",
            "routes[0].origin",
        ),
        (
            "    origins: [{url: 'http://127.0.0.1:2/'}]\n    health_check: {path: health}\n",
            "routes[0].health_check.path",
        ),
    ] {
        std::fs::write(&conf, format!("{base}{route}")).unwrap();
        let (ok, text) = strata_cmd(&["check"], &conf);
        assert!(!ok, "{route}");
        assert!(text.contains(key), "{route}: {text}");
    }
}
