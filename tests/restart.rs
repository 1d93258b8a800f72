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

/// Memory keeps the records of more objects than the disk keeps: an object whose record
/// memory kept but whose record and slices the disk lost is fetched again slice by slice,
/// and that fill puts its record back on disk, so a restart still finds the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_refilled_from_a_record_in_memory_survives_a_restart() {
    let origin = TestOrigin::start().await;
    let body = |i: u64| random_bytes(200_000, 500 + i);
    let others = 120u64;
    for i in 0..=others {
        // A strong ETag: a stored object's missing slices are fetched on their own (without
        // one, the object would be fetched whole again, record and all).
        let obj = Object::new(body(i)).header("ETag", &format!("\"o{i}\""));
        origin.put(&format!("/o{i}"), obj);
    }
    let mut cfg = NodeConfig::new(&origin.url());
    // Records take a sixteenth of memory (128 KiB, room for every object's); the slices of a
    // few objects fill the rest. The disk holds a fifth of the objects.
    cfg.memory = "2MiB".into();
    cfg.disk = Some("16MiB".into());
    let node = Strata::start(&cfg);
    assert_eq!(
        get(&node.url("/o0")).await.1,
        "strata; fwd=uri-miss; stored"
    );
    // 24 MB of other objects: /o0's slice and record leave the disk, and its slice memory.
    for i in 1..=others {
        assert_eq!(get(&node.url(&format!("/o{i}"))).await.0, 200);
    }
    assert_eq!(
        record_in(&node).await,
        (true, false),
        "/o0's record should be in memory only"
    );
    let (s, cs, got) = get(&node.url("/o0")).await;
    assert_eq!(s, 200);
    assert_eq!(got, body(0));
    assert_eq!(origin.hits("/o0"), 2, "the slice was still stored: {cs}");
    assert!(
        !cs.contains("uri-miss"),
        "the record was not kept in memory: {cs}"
    );
    // The record goes back to disk in the background: asked for until it is there (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while record_in(&node).await != (true, true) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = node.stop();

    let node = Strata::start_in(&cfg, dir);
    let (s, cs, got) = get(&node.url("/o0")).await;
    assert_eq!((s, cs.as_str()), (200, "strata; hit"));
    assert_eq!(got, body(0));
    assert_eq!(origin.hits("/o0"), 2);
}

/// Whether `/o0`'s record is in memory, and on disk, as the admin API's inspect reports.
async fn record_in(node: &Strata) -> (bool, bool) {
    let url = format!("http://{}/inspect?path=/o0", node.admin);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
    let r = &v["record_in"];
    (r["memory"] == true, r["disk"] == true)
}
