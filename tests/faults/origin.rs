//! Broken origins: refused connections, resets and short bodies, stalls before the header and
//! within the body (cut at `routes[].timeouts.read`), close-delimited bodies cut short, storms
//! of 5xx and slow trickles. A partial body is never stored; clients get a clean error or
//! stale-if-error content; the origin is not hammered.

use std::time::{Duration, Instant};

use crate::common::*;

/// A node whose route waits `read` for each origin read.
fn node_with_read_timeout(origin: &str, read: &str) -> Strata {
    let mut cfg = NodeConfig::new(origin);
    cfg.routes = format!(
        "  - name: test\n    path_prefix: /\n    origin: {origin}\n    timeouts:\n      connect: 1s\n      read: {read}\n"
    );
    Strata::start(&cfg)
}

/// Reads a response to its end: status, bytes received, whether the stream ended cleanly.
async fn read_all(url: &str) -> (u16, Vec<u8>, bool) {
    let mut r = reqwest::get(url).await.expect("response header");
    let status = r.status().as_u16();
    let mut got = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (status, got, true),
            Err(_) => return (status, got, false),
        }
    }
}

/// Waits (bounded) until the node fills no slice.
async fn wait_no_fills(node: &Strata) {
    let url = format!("http://{}/stats", node.admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats: serde_json::Value =
            serde_json::from_slice(&reqwest::get(&url).await.unwrap().bytes().await.unwrap())
                .unwrap();
        if stats["slices_filling"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "fills never ended: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_clean_502() {
    let node = node_with_read_timeout(&format!("http://127.0.0.1:{}", free_port()), "2s");
    let (s, _, _) = get(&node.url("/x")).await;
    assert_eq!(s, 502);
    assert!(node.metric("strata_origin_errors_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_body_and_a_short_body_are_never_stored() {
    let origin = TestOrigin::start().await;
    let node = node_with_read_timeout(&origin.url(), "5s");
    let body = random_bytes(3 << 20, 5);
    // Without a validator a cut body cannot be completed by a range request later: the
    // strict case (with a strong ETag, Strata fetches the missing slices apart).
    for (path, cut) in [("/reset", 100_000usize), ("/short", (3 << 20) - 10)] {
        let mut obj = Object::new(body.clone());
        obj.truncate_at = Some(cut);
        origin.put(path, obj);
        for _ in 0..2 {
            // Cut before the header went out: a clean 502; after: the stream is cut short.
            let (s, got, clean) = read_all(&node.url(path)).await;
            assert!(
                s == 502 || (s == 200 && !clean),
                "{path}: {s}, clean {clean}"
            );
            if s == 200 {
                assert!(got.len() <= cut, "{path}: more bytes than the origin sent");
                assert_eq!(&got[..], &body[..got.len()], "{path}: wrong bytes");
            }
        }
        // Retries are bounded: a few per client request at most, not a loop (clients that
        // overlap share one).
        let asked = origin.hits(path);
        assert!(
            (1..=8).contains(&asked),
            "{path}: {asked} origin requests for 2 clients"
        );
        // Healthy again, once the fills of the failed attempts have given up: the next request
        // is a miss (nothing cut was kept), then a hit.
        wait_no_fills(&node).await;
        origin.put(path, Object::new(body.clone()));
        let (s, cs, got) = get(&node.url(path)).await;
        assert!(s == 200 && got == body, "{path}: {s}");
        assert!(cs.contains("fwd="), "{path}: a cut body was stored: {cs}");
        let (_, cs, got) = get(&node.url(path)).await;
        assert_eq!((cs.as_str(), got == body), ("strata; hit", true), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_are_cut_at_the_configured_read_timeout() {
    let origin = TestOrigin::start().await;
    let node = node_with_read_timeout(&origin.url(), "1s");
    // Before the header: the client gets 504 long before the origin would answer.
    let mut stalled = Object::new(random_bytes(1000, 1));
    stalled.delay = Duration::from_secs(30);
    origin.put("/stall-head", stalled);
    let t = Instant::now();
    let (s, _, _) = get(&node.url("/stall-head")).await;
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "not cut at the read timeout"
    );
    assert_eq!(s, 504);
    // Within the body: the client's stream is cut, nothing is stored.
    let body = random_bytes(2 << 20, 2);
    let mut trickle = Object::new(body.clone());
    trickle.chunk_delay = Duration::from_secs(30);
    origin.put("/stall-body", trickle);
    let t = Instant::now();
    let (s, got, clean) = read_all(&node.url("/stall-body")).await;
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "not cut at the read timeout"
    );
    assert!(
        s == 504 || (s == 200 && !clean),
        "status {s}, clean {clean}"
    );
    assert_eq!(&got[..], &body[..got.len()]);
    let metrics = node.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("strata_origin_errors_total") && l.contains("kind=\"timeout\"")),
        "no timeout counted"
    );
    assert!(
        node.metric("strata_fills_total{result=\"incomplete\"}")
            .await
            >= 1.0
    );
    // A slow but steady origin is not cut: each read is well within the timeout.
    let mut slow = Object::new(body.clone());
    slow.chunk_delay = Duration::from_millis(15);
    origin.put("/slow", slow);
    let (s, got, clean) = read_all(&node.url("/slow")).await;
    assert!(s == 200 && clean && got == body, "the slow origin was cut");
    let (_, cs, got) = get(&node.url("/slow")).await;
    assert_eq!((cs.as_str(), got), ("strata; hit", body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_body_cut_short_is_relayed_not_stored() {
    let (addr, connections) = close_delimited_origin(b"abcdefghijklmnopqrstuvwxyz", 9);
    let node = node_with_read_timeout(&format!("http://{addr}"), "2s");
    for n in 1..=3 {
        let (s, _, got) = get(&node.url("/cd")).await;
        assert_eq!((s, &got[..]), (200, &b"abcdefghi"[..]));
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_5xx_is_shared_by_coalesced_clients_and_stale_if_error_serves() {
    let origin = TestOrigin::start().await;
    let node = node_with_read_timeout(&origin.url(), "5s");
    // Stored while healthy, then stale, with a day of stale-if-error.
    let good = random_bytes(40_000, 8);
    origin.put(
        "/sie",
        Object::new(good.clone()).header("cache-control", "max-age=1, stale-if-error=86400"),
    );
    assert_eq!(get(&node.url("/sie")).await.2, good);
    // The storm: every request answers 503 after a pause (so requests overlap).
    let mut failing = Object::new(&b"down\n"[..]);
    failing.status = 503;
    failing.delay = Duration::from_millis(300);
    origin.put("/storm", failing.clone());
    let mut sie_failing = failing.clone();
    sie_failing.headers = vec![("cache-control".into(), "no-store".into())];
    // Staleness is a matter of the clock: the stored copy's second must pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.put("/sie", sie_failing);
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let url = node.url(if i % 2 == 0 { "/storm" } else { "/sie" });
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut storm_503 = 0;
    for (i, c) in clients.into_iter().enumerate() {
        let (s, _, body) = c.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(s, 503, "client {i}");
            storm_503 += 1;
        } else {
            assert_eq!(
                (s, &body),
                (200, &good),
                "client {i}: stale-if-error not served"
            );
        }
    }
    assert_eq!(storm_503, 10);
    // Ten clients at once on one failing URL: they share the failure, not ten fetches.
    let storm_hits = origin.hits("/storm");
    assert!(
        storm_hits <= 2,
        "the origin was hammered: {storm_hits} requests for 10 clients"
    );
    let sie_hits = origin.hits("/sie") - 1;
    assert!(
        sie_hits <= 2,
        "the origin was hammered: {sie_hits} revalidations for 10 clients"
    );
}
