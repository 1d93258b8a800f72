//! Hostile clients and origins: each test reproduces a way a request or an origin response
//! could reach past its route, poison the cache or leak, and checks it no longer can.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

/// Sends raw request bytes and returns the whole response as text (the server closes).
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get_raw(addr: SocketAddr, target: &str) -> String {
    raw(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

/// Issue item 2: spellings an origin decodes differently are refused before routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_refused_and_never_reach_the_origin() {
    let origin = TestOrigin::start().await;
    origin.put("/secret.txt", Object::new("the secret"));
    origin.put("/pub/a", Object::new("public a"));
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.routes = format!(
        "  - name: pub\n    path_prefix: /pub/\n    origin: {}pub/\n",
        origin.url()
    );
    let node = Strata::start(&cfg);
    for target in [
        "/pub/%2E%2E%2Fsecret.txt",
        "/pub/..%2fsecret.txt",
        "/pub/..%5csecret.txt",
        "/pub/..;/secret.txt",
        "/pub/%zz",
        "/pub/a%00",
    ] {
        let resp = get_raw(node.addr, target);
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
        assert!(resp.contains("detail=bad-path"), "{target}: {resp}");
        assert!(!resp.contains("the secret"), "{target}: {resp}");
    }
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    // One canonical form: an escaped unreserved character is the same object, and key.
    let first = get_raw(node.addr, "/pub/%61");
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("public a"),
        "{first}"
    );
    let second = get_raw(node.addr, "/pub/a");
    assert!(second.contains("strata; hit"), "{second}");
    assert_eq!(origin.hits("/pub/a"), 1);
}

/// Issue item 3: two routes over one origin never answer from each other's cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_one_origin_never_share_stored_responses() {
    let origin = TestOrigin::start().await;
    origin.put("/x", Object::new("x"));
    let mut cfg = NodeConfig::new(&origin.url());
    let u = origin.url();
    cfg.routes = format!(
        "  - name: a\n    path_prefix: /a/\n    origin: {u}\n  - name: b\n    path_prefix: /b/\n    origin: {u}\n"
    );
    let node = Strata::start(&cfg);
    assert_eq!(
        get(&node.url("/a/x")).await.1,
        "strata; fwd=uri-miss; stored"
    );
    assert_eq!(get(&node.url("/a/x")).await.1, "strata; hit");
    let (s, cs, b) = get(&node.url("/b/x")).await;
    assert_eq!((s, &b[..]), (200, &b"x"[..]));
    assert_eq!(
        cs, "strata; fwd=uri-miss; stored",
        "route b served route a's entry"
    );
    assert_eq!(origin.hits("/x"), 2);
}

/// Issue item 4: a 304 that adds `Set-Cookie` does not make the cookie part of the stored
/// response served to everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_adding_set_cookie_is_not_stored() {
    let origin = TestOrigin::start().await;
    let obj = || {
        Object::new("shared body")
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=0")
    };
    origin.put("/c", obj());
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    assert_eq!(get(&node.url("/c")).await.1, "strata; fwd=uri-miss; stored");
    // Alice's revalidation: the origin's 304 sets her session cookie.
    origin.put("/c", obj().header("set-cookie", "session=alice"));
    let r = reqwest::get(node.url("/c")).await.unwrap();
    assert_eq!(r.status(), 200);
    // Bob's revalidation: the origin sets no cookie; he must not get Alice's.
    origin.put("/c", obj());
    let r = reqwest::get(node.url("/c")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("set-cookie").is_none(),
        "another client's cookie was served from the cache: {:?}",
        r.headers()
    );
    assert_eq!(r.bytes().await.unwrap(), "shared body");
}

/// Issue item 9: on a miss, `Range` with an `If-Range` the new response does not match gets
/// the whole object, complete, even without a strong ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_with_a_stale_if_range_on_a_miss_gets_the_whole_object() {
    let origin = TestOrigin::start().await;
    let body = random_bytes((3 << 20) + 5, 9);
    origin.put(
        "/f",
        Object::new(body.clone()).header("last-modified", "Tue, 15 Nov 1994 12:45:26 GMT"),
    );
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let r = reqwest::Client::new()
        .get(node.url("/f"))
        .header("range", "bytes=1048576-1048675")
        .header("if-range", "\"an-old-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.expect("the whole body, not a cut one");
    assert!(got == body, "{} of {} bytes", got.len(), body.len());
}

/// Issue item 10: stale-while-revalidate replaces an object whose new version it cannot store
/// in the background (no Content-Length), instead of serving the old one for the whole window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swr_does_not_serve_the_old_version_when_the_new_one_is_chunked() {
    let origin = TestOrigin::start().await;
    let version = |body: &'static str, etag: &str| {
        Object::new(body)
            .header("etag", etag)
            .header("cache-control", "max-age=60, stale-while-revalidate=600")
            // Stale on arrival: an age beyond its lifetime.
            .header("age", "100")
    };
    origin.put("/s", version("v1", "\"1\""));
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    assert_eq!(&get(&node.url("/s")).await.2[..], b"v1");
    // No length, and a 200 even to the revalidation's `Range: bytes=0-`.
    let mut v2 = version("v2", "\"2\"");
    v2.chunked = true;
    v2.ignore_range = true;
    origin.put("/s", v2);
    let mut seen = origin.hits("/s");
    for _ in 0..10 {
        let (s, cs, b) = get(&node.url("/s")).await;
        assert_eq!(s, 200);
        if &b[..] == b"v2" {
            return;
        }
        assert!(cs.contains("stale-while-revalidate"), "{cs}");
        // A stale answer starts a revalidation unless the last one is still finishing (then
        // it was only served): wait a bounded while for one to reach the origin.
        seen += 1;
        if !origin.wait_hits("/s", seen, Duration::from_secs(2)).await {
            seen = origin.hits("/s");
        }
    }
    panic!("still serving the old version after 10 revalidations");
}

/// Issue item 12: a body delimited by the connection closing is never stored: a cut looks like
/// its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_body_is_never_stored() {
    let (addr, connections) = close_delimited_origin(b"0123456789abcdef", 10);
    let node = Strata::start(&NodeConfig::new(&format!("http://{addr}/")));
    let (s, cs, b) = get(&node.url("/cut")).await;
    assert_eq!((s, &b[..]), (200, &b"0123456789"[..]));
    assert!(cs.contains("detail=close-delimited"), "{cs}");
    let (_, cs, _) = get(&node.url("/cut")).await;
    assert!(
        !cs.contains("hit"),
        "a cut body was served as complete: {cs}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// Issue item 19: origin error text (addresses, host names) stays in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_errors_do_not_leak_addresses_to_clients() {
    let port = free_port();
    let node = Strata::start(&NodeConfig::new(&format!("http://127.0.0.1:{port}/")));
    for method in ["GET", "POST"] {
        let resp = raw(
            node.addr,
            &format!(
                "{method} /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(resp.starts_with("HTTP/1.1 502"), "{method}: {resp}");
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(body.contains("origin"), "{method}: {body}");
        assert!(
            !body.contains("127.0.0.1") && !body.contains(&port.to_string()),
            "{method}: the origin's address leaked: {body}"
        );
    }
}

/// Issue item 19: a refused request's query token is not written to the log, even at debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_not_logged() {
    let origin = TestOrigin::start().await;
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.log_level = "debug".into();
    cfg.routes = format!(
        "  - name: g\n    path_prefix: /\n    origin: {}\n    auth:\n      jwt:\n        algorithms: [HS256]\n        secret: 0123456789abcdef0123\n        sources: [\"query:token\"]\n",
        origin.url()
    );
    let mut node = Strata::start(&cfg);
    let resp = get_raw(node.addr, "/x?token=SEKRET-TOKEN-VALUE");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    node.terminate();
    let log = node.log_text();
    assert!(log.contains("request refused"), "{log}");
    assert!(!log.contains("SEKRET-TOKEN-VALUE"), "{log}");
}

/// Issue item 5: a fill's response is shared, so it carries none of one client's own headers;
/// a header the stored Vary names is sent once the Vary is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_forward_only_shared_headers() {
    let origin = TestOrigin::start().await;
    origin.put("/p", Object::new("page"));
    origin.put("/v", Object::new("variant").header("vary", "x-device"));
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let client = reqwest::Client::new();
    let r = client
        .get(node.url("/p"))
        .header("cookie", "session=alice")
        .header("x-forwarded-host", "evil.example")
        .header("x-original-url", "/admin")
        .header("origin", "https://evil.example")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(cache_status(&r), "strata; fwd=uri-miss; stored");
    let fill = origin.seen().into_iter().find(|s| s.path == "/p").unwrap();
    for h in ["cookie", "x-forwarded-host", "x-original-url", "origin"] {
        assert!(
            !fill.headers.contains_key(h),
            "{h} reached the origin on a fill: {fill:?}"
        );
    }
    assert_eq!(
        fill.headers.get("accept-encoding").map(String::as_str),
        Some("gzip")
    );
    // Varies on a header the first fill could not know to send: not stored then; the next
    // fill sends it, and its response is stored as that variant.
    let ask = || {
        client
            .get(node.url("/v"))
            .header("x-device", "phone")
            .send()
    };
    let first = ask().await.unwrap();
    assert!(
        cache_status(&first).contains("detail=vary"),
        "{}",
        cache_status(&first)
    );
    let second = ask().await.unwrap();
    assert_eq!(cache_status(&second), "strata; fwd=vary-miss; stored");
    // Read to the end: until then the variant may still be filling (a partial hit).
    assert_eq!(second.text().await.unwrap(), "variant");
    let seen: Vec<_> = origin
        .seen()
        .into_iter()
        .filter(|s| s.path == "/v")
        .collect();
    assert_eq!(
        seen.last()
            .unwrap()
            .headers
            .get("x-device")
            .map(String::as_str),
        Some("phone")
    );
    assert_eq!(cache_status(&ask().await.unwrap()), "strata; hit");
}

/// An origin on a raw socket that announces `length` bytes, sends `sent` of them, and holds
/// the connection open until the client goes.
fn lying_origin(length: u64, sent: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nETag: \"big\"\r\nCache-Control: max-age=3600\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&vec![7u8; sent]);
                // Hold the connection until the proxy closes it.
                let _ = s.read(&mut buf);
            });
        }
    });
    addr
}

/// Issue item 1: an origin's `Content-Length` costs memory and work in proportion to what is
/// filled, not to what it announces; above `cache.max_object_size` nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_length_costs_nothing_until_it_arrives() {
    // 4 EiB: beyond any size; 512 GiB: storable, with a window of slices registered at a time.
    for (length, detail) in [(1u64 << 62, Some("detail=too-large")), (512u64 << 30, None)] {
        let origin = lying_origin(length, 3 << 20);
        let node = Strata::start(&NodeConfig::new(&format!("http://{origin}/")));
        let client = reqwest::Client::new();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            client.get(node.url("/huge")).send(),
        )
        .await
        .expect("the response header came in time")
        .unwrap();
        assert_eq!(r.status(), 200);
        let cs = cache_status(&r);
        match detail {
            Some(d) => assert!(cs.contains(d), "{length}: {cs}"),
            None => assert_eq!(cs, "strata; fwd=uri-miss; stored", "{length}"),
        }
        let mut r = r;
        let mut got = 0;
        while got < 2 << 20 {
            got += r.chunk().await.unwrap().expect("body bytes").len();
        }
        assert!(
            node.rss() < 256 << 20,
            "{length}: RSS {} MiB",
            node.rss() >> 20
        );
        drop(r);
        // The node still answers.
        let health = reqwest::get(format!("http://{}/health", node.admin))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
}

/// Issue item 20: with no memory tier, clients that arrive while an object is described wait
/// for its description on disk instead of each fetching it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_memory_tier_followers_still_share_one_fetch() {
    let origin = TestOrigin::start().await;
    let body = random_bytes(2 << 20, 20);
    let mut slow = Object::new(body.clone());
    slow.chunk_delay = Duration::from_millis(5);
    origin.put("/slow", slow);
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "0".into();
    let node = Strata::start(&cfg);
    let url = node.url("/slow");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for c in clients {
        let (s, _, b) = c.await.unwrap();
        assert_eq!(s, 200);
        assert!(b == body);
    }
    assert_eq!(origin.hits("/slow"), 1, "{:?}", origin.seen());
}

/// Issue item 14: a fill keeps pace with its fastest reader (here its only one), so a client
/// that stops reading does not pull the whole object from the origin into the tiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_holds_its_fill_back() {
    let origin = TestOrigin::start().await;
    let len = 128u64 << 20;
    origin.put("/big", Object::generated(len, 14));
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let mut r = reqwest::get(node.url("/big")).await.unwrap();
    assert_eq!(r.status(), 200);
    let mut got = 0;
    while got < 100 << 10 {
        got += r.chunk().await.unwrap().expect("body").len();
    }
    // The client stops reading. Nothing can be awaited for "nothing more happens": watch the
    // origin for a bounded while; it used to send all 64 MiB within a fraction of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline && origin.body_bytes() < len {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What may be in flight: loopback socket buffers on both hops (up to ~10 MiB each with
    // autotuning) and the slice Strata holds for the client.
    let sent = origin.body_bytes();
    assert!(
        sent < 48 << 20,
        "the origin sent {} MiB for a stalled reader",
        sent >> 20
    );
    // Reading on resumes the fill, and the body is whole.
    while let Some(c) = r.chunk().await.unwrap() {
        got += c.len();
    }
    assert_eq!(got as u64, len);
}
