//! End-to-end: the walking skeleton's promises, with a real origin and the real binary.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_get_is_a_byte_exact_hit_and_origin_sees_one_request() {
    let origin = TestOrigin::start().await;
    let body = random_bytes(300 * 1024, 1);
    origin.put("/f.bin", Object::new(body.clone()));
    let node = Strata::start(&NodeConfig::new(&origin.url()));

    let (s1, cs1, b1) = get(&node.url("/f.bin")).await;
    assert_eq!((s1, cs1.as_str()), (200, "strata; fwd=uri-miss; stored"));
    assert_eq!(b1, body);
    let (s2, cs2, b2) = get(&node.url("/f.bin")).await;
    assert_eq!((s2, cs2.as_str()), (200, "strata; hit"));
    assert_eq!(b2, body, "hit must be byte-identical to the origin");
    assert_eq!(origin.hits("/f.bin"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_from_a_cached_get() {
    let origin = TestOrigin::start().await;
    origin.put(
        "/h",
        Object::new(random_bytes(5000, 2)).header("etag", "\"v1\""),
    );
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    get(&node.url("/h")).await;
    let r = reqwest::Client::new()
        .head(node.url("/h"))
        .send()
        .await
        .unwrap();
    assert_eq!(cache_status(&r), "strata; hit");
    assert_eq!(r.headers()["content-length"], "5000");
    assert_eq!(r.headers()["etag"], "\"v1\"");
    assert_eq!(origin.hits("/h"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_come_back_from_l2_after_l1_overflows() {
    let origin = TestOrigin::start().await;
    let n = 24;
    for i in 0..n {
        origin.put(
            &format!("/o{i}"),
            Object::new(random_bytes(300 * 1024, 100 + i)),
        );
    }
    // L1 of 1 MiB cannot hold 24 x 300 KiB; L2 (256 MiB) holds them all.
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "1MiB".into();
    let node = Strata::start(&cfg);
    for i in 0..n {
        let (_, cs, _) = get(&node.url(&format!("/o{i}"))).await;
        assert_eq!(cs, "strata; fwd=uri-miss; stored");
    }
    // A slice on its way to the disk is served from its fill: wait until every object and its
    // description have landed, so the reads below test the disk tier.
    let inserts = "strata_cache_inserts_total{tier=\"disk\"}";
    assert!(
        node.wait_metric(inserts, 2.0 * n as f64, Duration::from_secs(10))
            .await
    );
    for i in 0..n {
        let (s, cs, b) = get(&node.url(&format!("/o{i}"))).await;
        assert_eq!((s, cs.as_str()), (200, "strata; hit"), "object {i}");
        assert_eq!(b, random_bytes(300 * 1024, 100 + i), "object {i} differs");
        assert_eq!(origin.hits(&format!("/o{i}")), 1);
    }
    let l2_hits = node.metric("strata_cache_hits_total{tier=\"disk\"}").await;
    assert!(
        l2_hits >= (n as f64) / 2.0,
        "L2 served only {l2_hits} reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_l2_item_is_a_miss_refetched_from_the_origin() {
    let origin = TestOrigin::start().await;
    let body = random_bytes(300 * 1024, 7);
    origin.put("/c.bin", Object::new(body.clone()).header("etag", "\"c1\""));
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "0".into(); // every read goes to L2
    let node = Strata::start(&cfg);
    assert_eq!(
        get(&node.url("/c.bin")).await.1,
        "strata; fwd=uri-miss; stored"
    );
    // With no memory tier the object is found once it is on disk, which may be just after the
    // response: wait for both writes (its description and its one slice).
    let written = node
        .wait_metric(
            "strata_cache_inserts_total{tier=\"disk\"}",
            2.0,
            Duration::from_secs(10),
        )
        .await;
    assert!(written, "the object never reached the disk");
    assert_eq!(get(&node.url("/c.bin")).await.1, "strata; hit");

    // Flip one byte in the middle of the stored body, in the cache file itself.
    let img = node.dir.path().join("cache.img");
    let mut data = std::fs::read(&img).unwrap();
    let needle = &body[1000..1064];
    let pos = data
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("body on disk");
    data[pos + 100] ^= 0xff;
    std::fs::write(&img, &data).unwrap();
    drop(data);

    let (s, cs, b) = get(&node.url("/c.bin")).await;
    assert_eq!(s, 200);
    // The object is still described; its one slice is refetched (If-Range on the strong
    // ETag): a partial hit, not a hit.
    assert_eq!(cs, "strata; fwd=partial", "corrupt item must be a miss");
    assert_eq!(b, body, "never the corrupt bytes");
    assert_eq!(origin.hits("/c.bin"), 2);
    let fails = node.metric("strata_disk_checksum_failures_total").await;
    assert_eq!(fails, 1.0);
    // The refetch was stored again and is a hit.
    let (_, cs, b) = get(&node.url("/c.bin")).await;
    assert_eq!((cs.as_str(), b), ("strata; hit", body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64mib_object_streams_with_bounded_memory() {
    let origin = TestOrigin::start().await;
    let size = 64 << 20;
    let body = random_bytes(size, 64);
    origin.put("/big", Object::new(body.clone()));
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "8MiB".into();
    let node = Strata::start(&cfg);
    // Warm the process up with a small request so the baseline includes the runtime's buffers.
    origin.put("/small", Object::new(random_bytes(4096, 3)));
    get(&node.url("/small")).await;
    let before = node.peak_rss();

    let mut r = reqwest::get(node.url("/big")).await.unwrap();
    let mut got = 0usize;
    let mut same = true;
    while let Some(chunk) = r.chunk().await.unwrap() {
        same &= chunk[..] == body[got..got + chunk.len()];
        got += chunk.len();
    }
    assert_eq!(got, size);
    assert!(same, "streamed bytes differ from the origin");
    let growth = node.peak_rss().saturating_sub(before);
    eprintln!(
        "peak RSS growth while streaming 64 MiB: {} KiB",
        growth / 1024
    );
    assert!(growth < 16 << 20, "peak RSS grew by {growth} bytes");
    // And it was cached whole: the next read is a hit.
    let (_, cs, b) = get(&node.url("/big")).await;
    assert_eq!(cs, "strata; hit");
    assert!(b == body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_gets_a_clear_502() {
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let node = Strata::start(&NodeConfig::new(&dead));
    let (s, cs, b) = get(&node.url("/x")).await;
    assert_eq!(s, 502);
    assert!(cs.starts_with("strata; fwd=uri-miss"), "{cs}");
    assert!(String::from_utf8_lossy(&b).contains("origin"), "{b:?}");
    // The node is still up.
    assert_eq!(get(&node.url("/y")).await.0, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_responses_are_forwarded_not_stored() {
    let origin = TestOrigin::start().await;
    origin.put("/ns", Object::new("a").header("cache-control", "no-store"));
    origin.put(
        "/pv",
        Object::new("b").header("cache-control", "private, max-age=60"),
    );
    origin.put("/ck", Object::new("c").header("set-cookie", "s=1"));
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    for (p, why) in [
        ("/ns", "no-store"),
        ("/pv", "private"),
        ("/ck", "set-cookie"),
    ] {
        for _ in 0..2 {
            let (s, cs, _) = get(&node.url(p)).await;
            assert_eq!(s, 200);
            assert_eq!(cs, format!("strata; fwd=uri-miss; detail={why}"));
        }
        assert_eq!(origin.hits(p), 2, "{p}");
    }
    // A 404 is not stored by this rule set either.
    assert_eq!(get(&node.url("/missing")).await.0, 404);
    assert_eq!(get(&node.url("/missing")).await.0, 404);
    assert_eq!(origin.hits("/missing"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_origin_body_is_never_cached() {
    let origin = TestOrigin::start().await;
    let body = random_bytes(3 << 20, 9);
    // Every response breaks off after 512 KiB: not even the first slice can complete.
    let mut obj = Object::new(body.clone()).header("etag", "\"t1\"");
    obj.truncate_at = Some(512 << 10);
    origin.put("/t", obj);
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let r = reqwest::get(node.url("/t")).await.unwrap();
    assert!(r.bytes().await.is_err(), "client must see the truncation");
    let refills = origin.hits("/t");
    assert!(refills > 1, "a broken slice is retried from the origin");

    origin.put("/t", Object::new(body.clone()).header("etag", "\"t1\""));
    let (_, cs, b) = get(&node.url("/t")).await;
    // The object was described, but none of its slices was ever stored.
    assert_eq!(cs, "strata; fwd=partial", "partial body must not be a hit");
    assert_eq!(b, body);
    let last = origin.seen().into_iter().last().unwrap();
    assert_eq!(
        last.headers.get("range").map(String::as_str),
        Some("bytes=0-3145727")
    );
    let (_, cs, b) = get(&node.url("/t")).await;
    assert_eq!((cs.as_str(), b), ("strata; hit", body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_slice_is_retried_transparently() {
    let origin = TestOrigin::start().await;
    let body = random_bytes(3 << 20, 19);
    // The first full response breaks at 2 MiB; the retry of the missing slice is a short
    // ranged response (If-Range on the strong ETag), which completes.
    let mut obj = Object::new(body.clone()).header("etag", "\"b1\"");
    obj.truncate_at = Some(2 << 20);
    origin.put("/t", obj.clone());
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let (s, _, b) = get(&node.url("/t")).await;
    assert_eq!((s, &b), (200, &body));
    let (_, cs, b) = get(&node.url("/t")).await;
    assert_eq!((cs.as_str(), b), ("strata; hit", body.clone()));

    // Without a strong validator, slices of two fetches may not be combined (RFC 9111 §3.4):
    // the client sees the break instead.
    let mut weak = obj;
    weak.headers = vec![("etag".into(), "W/\"b1\"".into())];
    origin.put("/w", weak);
    let r = reqwest::get(node.url("/w")).await.unwrap();
    assert!(
        r.bytes().await.is_err(),
        "a weak ETag must not stitch two fetches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_origin_bodies_are_streamed_and_cached() {
    let origin = TestOrigin::start().await;
    let body = random_bytes((2 << 20) + 123, 11);
    let mut obj = Object::new(body.clone());
    obj.chunked = true;
    origin.put("/chunked", obj);
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let (_, cs, b) = get(&node.url("/chunked")).await;
    assert_eq!((cs.as_str(), &b), ("strata; fwd=uri-miss; stored", &body));
    let (_, cs, b) = get(&node.url("/chunked")).await;
    assert_eq!((cs.as_str(), b), ("strata; hit", body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_in_flight_requests_then_exits_promptly() {
    let origin = TestOrigin::start().await;
    let body = random_bytes(1 << 20, 12);
    let mut slow = Object::new(body.clone());
    slow.delay = Duration::from_millis(1500);
    origin.put("/slow", slow);
    let mut node = Strata::start(&NodeConfig::new(&origin.url()));
    let url = node.url("/slow");
    let req = tokio::spawn(async move { get(&url).await });
    // Wait until the request has reached the origin, then ask the node to stop.
    assert!(
        origin.wait_hits("/slow", 1, Duration::from_secs(10)).await,
        "the request never reached the origin"
    );
    let (took, node) = tokio::task::spawn_blocking(move || (node.terminate(), node))
        .await
        .unwrap();
    let (s, _, b) = req.await.unwrap();
    assert_eq!(s, 200, "in-flight request must complete");
    assert_eq!(b, body);
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?}: {}",
        node.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_exits_within_two_seconds() {
    let origin = TestOrigin::start().await;
    let mut node = Strata::start(&NodeConfig::new(&origin.url()));
    let took = node.terminate();
    assert!(took < Duration::from_secs(2), "idle shutdown took {took:?}");
}
