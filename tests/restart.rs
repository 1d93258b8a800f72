//! A restart keeps the cache: objects stored before a stop are hits after the next start.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_survive_a_restart_as_hits() {
    let origin = TestOrigin::start().await;
    let bodies: Vec<_> = (0..6u64)
        .map(|i| random_bytes(100_000 + i as usize * 700_000, 40 + i))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        origin.put(&format!("/r{i}"), Object::new(b.clone()));
    }
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "0".into();
    let node = Strata::start(&cfg);
    for i in 0..bodies.len() {
        assert_eq!(
            get(&node.url(&format!("/r{i}"))).await.1,
            "strata; fwd=uri-miss; stored"
        );
    }
    let dir = node.stop();

    let node = Strata::start_in(&cfg, dir);
    let log = node.log_with("last_shutdown_clean");
    assert!(log.contains("last_shutdown_clean=true"), "{log}");
    for (i, b) in bodies.iter().enumerate() {
        let (s, cs, got) = get(&node.url(&format!("/r{i}"))).await;
        assert_eq!((s, cs.as_str()), (200, "strata; hit"), "object {i}");
        assert_eq!(&got, b, "object {i} differs after restart");
        assert_eq!(origin.hits(&format!("/r{i}")), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_survive_a_kill_9() {
    let origin = TestOrigin::start().await;
    let body = random_bytes(2_500_000, 77);
    origin.put("/k", Object::new(body.clone()));
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "0".into();
    let mut node = Strata::start(&cfg);
    assert_eq!(get(&node.url("/k")).await.1, "strata; fwd=uri-miss; stored");
    // A crash loses what was in flight: kill only once the description and the three slices
    // are on disk.
    assert!(
        node.wait_metric(
            "strata_cache_inserts_total{tier=\"disk\"}",
            4.0,
            Duration::from_secs(10),
        )
        .await,
        "the object never reached the disk"
    );
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let dir = std::mem::replace(&mut node.dir, tempfile::tempdir().unwrap());
    drop(node);
    let node = Strata::start_in(&cfg, dir);
    let (_, cs, got) = get(&node.url("/k")).await;
    assert_eq!(cs, "strata; hit");
    assert_eq!(got, body);
    assert_eq!(origin.hits("/k"), 1);
}
