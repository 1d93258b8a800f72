//! Device faults with a deterministic outcome: a region that keeps failing is taken out of
//! use, a full device and a vanished one leave the node serving from the origin.

use crate::common::*;
use crate::harness::*;

fn node_on(origin: &TestOrigin) -> Strata {
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "0".into();
    cfg.disk = Some("64MiB".into());
    Strata::start(&cfg)
}

/// Stores `n` small objects under `prefix`, each whole on disk; returns their paths and bodies.
async fn stored(
    node: &Strata,
    origin: &TestOrigin,
    prefix: &str,
    n: u64,
) -> Vec<(String, bytes::Bytes)> {
    let mut out = Vec::new();
    for i in 0..n {
        let p = format!("{prefix}{i}");
        let body = random_bytes(10_000 + i as usize * 1000, 900 + i);
        origin.put(&p, Object::new(body.clone()));
        assert_eq!(get(&node.url(&p)).await.2, body);
        out.push((p, body));
    }
    let paths: Vec<String> = out.iter().map(|(p, _)| p.clone()).collect();
    assert!(wait_on_disk(node, &paths).await.is_empty());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_keeps_failing_is_retired_and_its_objects_come_from_the_origin() {
    let origin = TestOrigin::start().await;
    let node = node_on(&origin);
    // Written one after another: all in the region being filled.
    let objects = stored(&node, &origin, "/bad/", 4).await;
    failpoint(&node, "io::complete", "return(read)").await;
    for (p, body) in &objects {
        let (s, cs, got) = get(&node.url(p)).await;
        assert_eq!((s, &got), (200, body), "{p}");
        assert!(
            cs.contains("fwd="),
            "{p} was served from a failing device: {cs}"
        );
    }
    assert!(node.metric("strata_disk_io_errors_total").await >= 3.0);
    assert_eq!(node.metric("strata_disk_regions_retired_total").await, 1.0);
    clear_failpoint(&node, "io::complete").await;
    // The device works again, but the retired region is not: what is stored next lands
    // elsewhere and is read back as hits.
    let later = stored(&node, &origin, "/good/", 4).await;
    for (p, body) in &later {
        let (s, cs, got) = get(&node.url(p)).await;
        assert_eq!((s, cs.as_str(), &got), (200, "strata; hit", body), "{p}");
    }
    assert_eq!(node.metric("strata_disk_regions_retired_total").await, 1.0);
    // The node never stopped serving.
    assert!(node.log_with("retired").contains("region keeps failing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_device_and_a_vanished_one_leave_the_node_serving_from_the_origin() {
    let origin = TestOrigin::start().await;
    let node = node_on(&origin);
    let before = stored(&node, &origin, "/before/", 2).await;
    // Full: every write fails with ENOSPC. Nothing new is stored; everything is served.
    failpoint(&node, "io::complete", "return(nospace)").await;
    for i in 0..6u64 {
        let p = format!("/full/{i}");
        let body = random_bytes(50_000, 70 + i);
        origin.put(&p, Object::new(body.clone()));
        for _ in 0..2 {
            let (s, _, got) = get(&node.url(&p)).await;
            assert_eq!((s, got), (200, body.clone()), "{p}");
        }
    }
    assert!(node.metric("strata_disk_io_errors_total").await > 0.0);
    // What was stored before still reads.
    for (p, body) in &before {
        let (_, cs, got) = get(&node.url(p)).await;
        assert_eq!((cs.as_str(), &got), ("strata; hit", body));
    }
    // Vanished: every IO fails. Each region the node tries retires in turn; it serves on.
    failpoint(&node, "io::complete", "return").await;
    for round in 0..3 {
        for (i, (p, body)) in before.iter().enumerate() {
            let (s, _, got) = get(&node.url(p)).await;
            assert_eq!((s, &got), (200, body), "round {round}, object {i}");
        }
        for i in 0..20u64 {
            let p = format!("/gone/{round}/{i}");
            let body = random_bytes(5_000, 300 + i);
            origin.put(&p, Object::new(body.clone()));
            let (s, _, got) = get(&node.url(&p)).await;
            assert_eq!((s, got), (200, body), "{p}");
        }
    }
    assert!(node.metric("strata_disk_regions_retired_total").await >= 1.0);
    // Writes failing everywhere are suspended rather than sent region after region.
    assert!(node.metric("strata_disk_write_suspensions_total").await >= 1.0);
    assert!(node
        .log_with("writes suspended")
        .contains("disk writes keep failing"));
    assert_eq!(http_get_status(node.admin, "/ready"), Some(200));
}

/// Small misses, one after another, on a node whose device is slow: each response is complete
/// before its disk write lands, and its origin connection goes back to the pool as soon as its
/// body is read, not when the write lands. Before, every fill held its origin connection until
/// then, so a steady stream of misses on a slow device opened a connection per miss (and ran a
/// node out of file descriptors under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_device_holds_no_origin_connection() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    // Every IO completion waits 300 ms: a device far slower than the origin.
    failpoint(&node, "io::complete", "delay(300)").await;
    let client = reqwest::Client::new();
    for i in 0..6u64 {
        let p = format!("/slow-disk/{i}");
        let body = random_bytes(20_000, 500 + i);
        origin.put(&p, Object::new(body.clone()));
        let r = client.get(node.url(&p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(r.bytes().await.unwrap(), body, "{p}");
    }
    clear_failpoint(&node, "io::complete").await;
    assert!(
        origin.connections() <= 2,
        "{} origin connections for 6 sequential misses",
        origin.connections()
    );
}

/// A complete slice goes to the tiers while its fill goes on with the next one: a device slower
/// than `lock_timeout` holds up neither the fill nor its client. (Were the fill to wait for
/// each write, its client would wait for the next slice past `lock_timeout` and, without a
/// strong validator to fetch it apart, the response would be cut.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_device_holds_up_no_reader() {
    let origin = TestOrigin::start().await;
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.slice = "64KiB".into();
    // The psync engine completes IO on threads of its own, where the injected delay waits:
    // io_uring completions may be reaped on the runtime's threads, which it would stop.
    cfg.io = "psync".into();
    cfg.extra_cache = "  lock_timeout: 1s\n".into();
    let node = Strata::start(&cfg);
    let len = 512u64 << 10;
    origin.put("/slow-device", Object::generated(len, 90));
    // Every IO completion waits 1.5 s, longer than a client waits on a fill's progress.
    failpoint(&node, "io::complete", "delay(1500)").await;
    let r = reqwest::get(node.url("/slow-device")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("the whole body");
    assert!(body == crate::common::origin::generated(90, 0, len));
    clear_failpoint(&node, "io::complete").await;
}

/// Past `cache.disk.write_queue` bytes waiting for the device, new objects are not queued for
/// it: they are kept in memory (hits), and the shed writes are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_write_queue_are_shed_and_served_from_memory() {
    let origin = TestOrigin::start().await;
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.extra_disk = "    write_queue: 4KiB\n".into();
    let node = Strata::start(&cfg);
    failpoint(&node, "io::complete", "delay(300)").await;
    let mut objects = Vec::new();
    for i in 0..6u64 {
        let p = format!("/shed/{i}");
        let body = random_bytes(20_000, 600 + i);
        // A strong validator: a slice the origin can serve again on its own may be shed.
        origin.put(
            &p,
            Object::new(body.clone()).header("etag", &format!("\"s{i}\"")),
        );
        assert_eq!(get(&node.url(&p)).await.2, body, "{p}");
        objects.push((p, body));
    }
    for (p, body) in &objects {
        let (s, cs, got) = get(&node.url(p)).await;
        assert_eq!((s, cs.as_str(), &got), (200, "strata; hit", body), "{p}");
        assert_eq!(origin.hits(p), 1, "{p}");
    }
    clear_failpoint(&node, "io::complete").await;
    assert!(node.metric("strata_disk_writes_shed_total").await >= 1.0);
}

/// Two clients of one object, a fast one and a slow one, on a slow device with a full write
/// queue and no memory tier: the fill keeps pace with the fast client, so the slow one (like
/// any client that joins later) finds the slices the fill let go only on the disk. The objects
/// have no strong validator, so a lost slice could not be fetched apart and the response would
/// be cut: their writes are never shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_a_reader_still_needs_are_never_shed() {
    let origin = TestOrigin::start().await;
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "0".into();
    cfg.slice = "64KiB".into();
    cfg.extra_disk = "    write_queue: 4KiB\n".into();
    let node = Strata::start(&cfg);
    let len = 1u64 << 20;
    // Two objects, two fills at once: while one's write is in flight the other finds the queue
    // full. Each object has a fast client, whose pace its fill keeps, and a slow one.
    let clients: Vec<_> = (0..2u64)
        .flat_map(|i| {
            let p = format!("/slow-reader/{i}");
            origin.put(&p, Object::generated(len, 70 + i));
            [(p.clone(), 70 + i, false), (p, 70 + i, true)]
        })
        .collect();
    failpoint(&node, "io::complete", "delay(20)").await;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(p, seed, slow)| {
            let url = node.url(&p);
            tokio::spawn(async move {
                let mut r = reqwest::get(url).await.unwrap();
                assert_eq!(r.status(), 200);
                let mut got = Vec::new();
                loop {
                    match r.chunk().await {
                        Ok(Some(c)) => got.extend_from_slice(&c),
                        Ok(None) => break,
                        Err(e) => panic!("{p} cut after {} of {len} bytes: {e}", got.len()),
                    }
                    if slow {
                        // A slow client, so the fill gets ahead of it (the scenario itself,
                        // not a wait for an event).
                        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
                    }
                }
                assert_eq!(got.len() as u64, len, "{p}");
                assert!(
                    got == crate::common::origin::generated(seed, 0, len),
                    "{p} differs"
                );
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    clear_failpoint(&node, "io::complete").await;
}
