//! SIGHUP reloads the configuration file: a new route serves, a download in flight finishes on
//! the configuration it started with, a broken file is refused while the old one keeps
//! serving, and settings that cannot change live are reported.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Sends SIGHUP to the node.
fn hangup(node: &Strata) {
    // SAFETY: kill(2) with the pid of a child this test started and a valid signal number.
    let rc = unsafe { libc::kill(node.pid(), libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP failed");
}

/// Polls `cond` until it holds (a reload lands in the background; bounded at 10 s).
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_routes_and_refuses_a_broken_file() {
    let origin = TestOrigin::start().await;
    let url = origin.url();
    let len = 8u64 << 20;
    let mut slow = Object::generated(len, 3);
    slow.chunk_delay = Duration::from_millis(10);
    origin.put("/slow", slow);
    origin.put("/b/x", Object::new("route b"));
    let mut cfg = NodeConfig::new(&url);
    let node = Strata::start(&cfg);
    let conf = node.dir.path().join("strata.yaml");
    let written = std::fs::read_to_string(&conf).unwrap();
    assert_eq!(get(&node.url("/b/x")).await.2, &b"route b"[..]);
    assert_eq!(origin.hits("/b/x"), 1);

    // A download in flight on the old configuration.
    let slow_url = node.url("/slow");
    let download = tokio::spawn(async move {
        let r = reqwest::get(slow_url).await.unwrap();
        r.bytes().await.unwrap()
    });
    origin.wait_hits("/slow", 1, Duration::from_secs(10)).await;

    // A new route in front of the catch-all, and a smaller memory tier (not live).
    cfg.routes = format!("  - name: b\n    path_prefix: /b/\n    origin: {url}b/\n") + &cfg.routes;
    let new = written
        .replace(&NodeConfig::new(&url).routes, &cfg.routes)
        .replace("memory: 64MiB", "memory: 32MiB");
    assert_ne!(new, written);
    std::fs::write(&conf, &new).unwrap();
    hangup(&node);
    // Route b has its own keys: its first request is a miss.
    eventually("the new route serves", async || {
        get(&node.url("/b/x")).await.1 == "strata; fwd=uri-miss; stored"
    })
    .await;
    assert_eq!(origin.hits("/b/x"), 2);
    let log = node.log_with("cache.memory");
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        log.contains("cache.memory"),
        "the fixed setting is not reported: {log}"
    );

    let body = download.await.unwrap();
    assert!(
        body == generated(3, 0, len),
        "the download in flight was cut or corrupted"
    );

    // A broken file is refused; the running configuration serves on.
    std::fs::write(&conf, new.replace("path_prefix: /b/", "path_prefx: /b/")).unwrap();
    hangup(&node);
    eventually("the refusal is logged", async || {
        node.log_text().contains("configuration reload refused")
    })
    .await;
    assert!(
        node.log_text().contains("path_prefx"),
        "the bad key is not named"
    );
    let (s, cs, _) = get(&node.url("/b/x")).await;
    assert_eq!((s, cs.as_str()), (200, "strata; hit"));
    assert!(get(&node.url("/slow")).await.2 == generated(3, 0, len));
    let mut node = node;
    assert!(node.child.try_wait().unwrap().is_none(), "the node exited");
}
