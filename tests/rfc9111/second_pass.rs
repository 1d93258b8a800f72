//! The second pass over HTTP caching: stale non-200 responses, targeted cache-control fields
//! (RFC 9213), obsolete date formats, strict Age, must-understand, Via, interim responses,
//! Vary normalisation and per-path rules. Cases use the table of the parent file.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_non_200_responses_follow_the_same_rules() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let stale = |code: u16, cc: &str| {
        let mut o = status(code)
            .header("etag", "\"v1\"")
            .header("cache-control", cc)
            .header("age", "100");
        o.bare = true;
        o
    };
    let cases = vec![
        // Origins answer preconditions only for 2xx (RFC 9110 §13.2.1): the stale error is
        // asked for again, and the new one stored.
        case("a stale 404 is revalidated", stale(404, "max-age=60"))
            .get(&[], 404, STORED, 1)
            .get(&[], 404, "strata; fwd=stale; fwd-status=404; stored", 2)
            .then(|o, p| {
                let mut fresh = status(404).header("cache-control", "max-age=3600");
                fresh.bare = true;
                o.put(p, fresh)
            })
            .get(&[], 404, "strata; fwd=stale; fwd-status=404; stored", 3)
            .get(&[], 404, HIT, 3),
        case("a stale 500 is fetched again", stale(500, "max-age=60"))
            .get(&[], 500, STORED, 1)
            .get(&[], 500, "strata; fwd=stale; fwd-status=500; stored", 2),
        case(
            "a stale 500 with stale-if-error is served when the origin fails",
            stale(500, "max-age=60, stale-if-error=600"),
        )
        .get(&[], 500, STORED, 1)
        .then(|o, p| {
            let mut down = status(502);
            down.bare = true;
            o.put(p, down)
        })
        .get(
            &[],
            500,
            "strata; fwd=stale; fwd-status=502; detail=stale-if-error",
            2,
        ),
        case(
            "a stale 503 is served while it is revalidated",
            stale(503, "max-age=60, stale-while-revalidate=600"),
        )
        .get(&[], 503, STORED, 1)
        .get(&[], 503, "strata; hit; detail=stale-while-revalidate", ANY)
        .wait_origin(2),
        case("max-stale accepts a stale 410", stale(410, "max-age=60"))
            .get(&[], 410, STORED, 1)
            .get(&[("cache-control", "max-stale")], 410, HIT, 1),
    ];
    run(&node, &origin, cases, "/sn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_cache_control() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let no_store = "strata; fwd=uri-miss; detail=no-store";
    let cases = vec![
        case(
            "CDN-Cache-Control wins over Cache-Control",
            obj()
                .header("cache-control", "no-store")
                .header("cdn-cache-control", "max-age=3600"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1)
        // Kept for caches further downstream (RFC 9213 §3).
        .check(header_is("cdn-cache-control", "max-age=3600")),
        case(
            "CDN-Cache-Control: no-store beats Cache-Control: max-age",
            obj()
                .header("cache-control", "max-age=3600")
                .header("cdn-cache-control", "no-store"),
        )
        .get(&[], 200, no_store, 1)
        .get(&[], 200, no_store, 2),
        case(
            "CDN-Cache-Control: private",
            obj()
                .header("cache-control", "public, max-age=3600")
                .header("cdn-cache-control", "private"),
        )
        .get(&[], 200, "strata; fwd=uri-miss; detail=private", 1)
        .get(&[], 200, "strata; fwd=uri-miss; detail=private", 2),
        case(
            "CDN-Cache-Control: no-cache revalidates every time",
            obj()
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=3600")
                .header("cdn-cache-control", "no-cache, max-age=3600"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, "strata; fwd=stale; fwd-status=304", 2),
        case(
            "CDN-Cache-Control: s-maxage",
            obj()
                .header("cache-control", "no-store")
                .header("cdn-cache-control", "s-maxage=3600, max-age=0"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
        case(
            "CDN-Cache-Control: max-age=0 without validators is not worth storing",
            obj()
                .header("cache-control", "max-age=3600")
                .header("cdn-cache-control", "max-age=0"),
        )
        .get(&[], 200, NO_LIFETIME, 1),
        case(
            "Strata-Cache-Control comes first on the list",
            obj()
                .header("cdn-cache-control", "no-store")
                .header("strata-cache-control", "max-age=3600"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
        case(
            "an invalid targeted field is ignored",
            obj()
                .header("cache-control", "no-store")
                .header("cdn-cache-control", "Max-Age=3600"),
        )
        .get(&[], 200, no_store, 1)
        .get(&[], 200, no_store, 2),
        case(
            "a targeted field replaces Expires too",
            obj()
                .header("expires", &http_date(-60))
                .header("cdn-cache-control", "max-age=3600"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
    ];
    run(&node, &origin, cases, "/tc").await;

    // The list is the operator's: with none, CDN-Cache-Control means nothing to Strata.
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.extra_cache = "  targeted_cache_control: []\n".into();
    let plain = Strata::start(&cfg);
    let cases = vec![case(
        "an empty target list obeys Cache-Control only",
        obj()
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "max-age=3600"),
    )
    .get(&[], 200, no_store, 1)
    .get(&[], 200, no_store, 2)];
    run(&plain, &origin, cases, "/tn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_age_and_must_understand() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let future = SystemTime::now() + Duration::from_secs(3600);
    let imf = httpdate::fmt_http_date(future);
    // "Sun, 06 Nov 1994 08:49:37 GMT" → "Sunday, 06-Nov-94 08:49:37 GMT" and
    // "Sun Nov  6 08:49:37 1994".
    let parts: Vec<&str> = imf.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let day = match parts[0] {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    let rfc850 = format!(
        "{day}, {}-{}-{} {} GMT",
        parts[1],
        parts[2],
        &parts[3][2..],
        parts[4]
    );
    let asctime = format!(
        "{} {} {:>2} {} {}",
        parts[0],
        parts[2],
        parts[1].trim_start_matches('0'),
        parts[4],
        parts[3]
    );
    let lower = imf.to_ascii_lowercase();
    let mut cases = vec![];
    for (name, value) in [
        ("Expires in RFC 850 form", rfc850.clone()),
        ("Expires in asctime form", asctime.clone()),
        ("Expires in lower case", lower.clone()),
    ] {
        let mut o = obj().header("expires", &value);
        o.bare = true;
        cases.push(
            case(name, o)
                .get(&[], 200, STORED, 1)
                .get(&[], 200, HIT, 1)
                .check(ttl_within(3500, 3600)),
        );
    }
    let mut bad = obj().header("expires", "Sun, 06 Nov 1994 08:49:37 UTC");
    bad.bare = true;
    cases.push(
        case("an Expires in no valid form means expired", bad)
            .get(&[], 200, NO_LIFETIME, 1)
            .get(&[], 200, NO_LIFETIME, 2),
    );
    for age in ["5, 6", "x", "1.5"] {
        cases.push(
            case(
                "an invalid Age makes the response stale",
                obj()
                    .header("cache-control", "max-age=3600")
                    .header("etag", "\"a\"")
                    .header("age", age),
            )
            .get(&[], 200, STORED, 1)
            .get(&[], 200, "strata; fwd=stale; fwd-status=304", 2),
        );
    }
    cases.push(
        case(
            "two Age fields are invalid",
            obj()
                .header("cache-control", "max-age=3600")
                .header("age", "1")
                .header("age", "2"),
        )
        .get(&[], 200, NO_LIFETIME, 1),
    );
    cases.push(
        case(
            "must-understand, no-store: stored for a status Strata implements",
            obj().header("cache-control", "must-understand, no-store, max-age=3600"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
    );
    cases.push(
        case(
            "must-understand: not stored for a status Strata does not know",
            status(299).header("cache-control", "must-understand, no-store, max-age=3600"),
        )
        .get(&[], 299, "strata; fwd=uri-miss; detail=status", 1)
        .get(&[], 299, "strata; fwd=uri-miss; detail=status", 2),
    );
    cases.push(
        case(
            "stored header fields go back as the origin sent them",
            obj()
                .header("x-multi", "a")
                .header("x-multi", "b")
                .header("link", "</s.css>; rel=preload")
                .header("content-type", "text/x-strata"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1)
        .check(|r| {
            let multi: Vec<_> = r.headers().get_all("x-multi").iter().collect();
            let ok = multi.len() == 2
                && r.headers()["link"] == "</s.css>; rel=preload"
                && r.headers()["content-type"] == "text/x-strata"
                && r.headers()["via"] == "1.1 strata";
            ok.then_some(()).ok_or(format!("{:?}", r.headers()))
        }),
    );
    run(&node, &origin, cases, "/dt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_on_requests_and_responses() {
    let origin = TestOrigin::start().await;
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.extra_top = "via: edge-7\n".into();
    let node = Strata::start(&cfg);
    origin.put("/via", obj());
    let client = reqwest::Client::new();
    let r = client
        .get(node.url("/via"))
        .header("via", "1.1 browser-proxy")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["via"], "1.1 edge-7");
    // Read to the end: the header is sent as soon as the origin's arrives, so before then the
    // object is still being filled (a partial hit).
    assert_eq!(r.text().await.unwrap(), "body");
    let hit = client.get(node.url("/via")).send().await.unwrap();
    assert_eq!(cache_status(&hit), HIT);
    assert_eq!(hit.headers()["via"], "1.1 edge-7");
    // A pass-through request keeps the client's Via and adds Strata's.
    let post = client
        .post(node.url("/via"))
        .header("via", "1.1 browser-proxy")
        .send()
        .await
        .unwrap();
    assert_eq!(post.headers()["via"], "1.1 edge-7");
    let seen = origin.seen();
    let fill = seen.iter().find(|s| s.method == "GET").unwrap();
    assert_eq!(
        fill.headers.get("via").map(String::as_str),
        Some("1.1 edge-7")
    );
    let passed = seen.iter().find(|s| s.method == "POST").unwrap();
    assert_eq!(
        passed.headers.get("via").map(String::as_str),
        Some("1.1 browser-proxy, 1.1 edge-7")
    );
}

/// An origin that answers every request with `103 Early Hints` and then a small 200, written
/// byte for byte (the in-process origin's server library cannot send interim responses).
fn early_hints_origin() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = c.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        seen.fetch_add(1, Ordering::SeqCst);
                        let reply = "HTTP/1.1 103 Early Hints\r\nlink: </hint.css>; rel=preload\r\n\r\n\
                            HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncache-control: max-age=3600\r\n\r\nhello";
                        if c.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, count)
}

/// Sends one request on a fresh connection and reads until the 5-byte body has arrived.
fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while !out.ends_with(b"hello") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_are_passed_on_and_never_stored() {
    let (url, count) = early_hints_origin();
    let node = Strata::start(&NodeConfig::new(&url));
    let addr = node.addr;
    let first = tokio::task::spawn_blocking(move || raw_get(addr, "/hinted"))
        .await
        .unwrap();
    assert!(first.starts_with("http/1.1 103"), "no 103 first: {first:?}");
    assert!(
        first.contains("link: </hint.css>; rel=preload"),
        "{first:?}"
    );
    let final_at = first.find("http/1.1 200").expect("no final response");
    assert!(first[final_at..].contains("cache-status: strata; fwd=uri-miss; stored"));
    let second = tokio::task::spawn_blocking(move || raw_get(addr, "/hinted"))
        .await
        .unwrap();
    assert!(second.starts_with("http/1.1 200"), "{second:?}");
    assert!(second.contains("cache-status: strata; hit"), "{second:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_normalisation_is_a_route_switch() {
    let origin = TestOrigin::start().await;
    let url = origin.url();
    let mut cfg = NodeConfig::new(&url);
    cfg.routes = format!(
        "  - name: norm\n    path_prefix: /norm/\n    origin: {url}norm/\n    vary_normalize: true\n\
         \x20 - name: plain\n    path_prefix: /\n    origin: {url}\n"
    );
    let node = Strata::start(&cfg);
    let vmiss = "strata; fwd=vary-miss; stored";
    let ae = |v: &'static str| ("accept-encoding", v);
    let varying = || obj().header("vary", "Accept-Encoding, Accept-Language");
    let cases = vec![
        case(
            "order, case and spaces of Accept-Encoding do not matter",
            varying(),
        )
        .get(&[ae("gzip, br")], 200, STORED, 1)
        .get(&[ae("BR,gzip")], 200, HIT, 1)
        .get(&[ae(" br , GZIP ")], 200, HIT, 1)
        .get(&[ae("gzip")], 200, vmiss, 2),
        case("Accept-Language members are sorted", varying())
            .get(&[("accept-language", "fr, en;q=0.5")], 200, STORED, 1)
            .get(&[("accept-language", "en;q=0.5,FR")], 200, HIT, 1),
    ];
    run(&node, &origin, cases, "/norm/c").await;
    let cases = vec![
        case("without the switch values are compared as sent", varying())
            .get(&[ae("gzip, br")], 200, STORED, 1)
            .get(&[ae("BR,gzip")], 200, vmiss, 2),
    ];
    run(&node, &origin, cases, "/plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_path_rules() {
    let origin = TestOrigin::start().await;
    let url = origin.url();
    let mut cfg = NodeConfig::new(&url);
    cfg.routes = format!(
        "  - name: mirror\n    path_prefix: /m/\n    origin: {url}m/\n    negative_ttl: 1h\n    rules:\n\
         \x20     - match: 'pool/special/**'\n        cache: false\n\
         \x20     - match: 'pool/**'\n        ttl: 1d\n\
         \x20     - match: 'dists/**'\n        default_ttl: 1h\n\
         \x20     - match: 'q/**'\n        query: false\n\
         \x20     - match: 'swr/**'\n        stale_while_revalidate: 10m\n\
         \x20     - match: 'sie/**'\n        stale_if_error: 10m\n"
    );
    let node = Strata::start(&cfg);
    let failing = |o: &TestOrigin, p: &str| {
        let mut e = Object::new("down");
        e.status = 502;
        e.bare = true;
        o.put(p, e);
    };
    let mut missing = status(404);
    missing.bare = true;
    let cases = vec![
        case(
            "ttl replaces the origin's lifetime (no-store included)",
            obj().header("cache-control", "no-store"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
        case(
            "the route's negative_ttl still applies under a rule",
            missing,
        )
        .get(&[], 404, STORED, 1)
        .get(&[], 404, HIT, 1)
        .check(ttl_within(3500, 3600)),
    ];
    run(&node, &origin, cases, "/m/pool/c").await;
    let cases = vec![case("the first matching rule wins: cache false", obj())
        .get(&[], 200, "strata; fwd=bypass; detail=rule", 1)
        .get(&[], 200, "strata; fwd=bypass; detail=rule", 2)];
    run(&node, &origin, cases, "/m/pool/special/c").await;
    let cases = vec![
        case("default_ttl gives a lifetime to a bare response", bare())
            .get(&[], 200, STORED, 1)
            .get(&[], 200, HIT, 1),
        case(
            "default_ttl leaves an explicit lifetime alone",
            obj()
                .header("cache-control", "max-age=0")
                .header("etag", "\"i\""),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, "strata; fwd=stale; fwd-status=304", 2),
    ];
    run(&node, &origin, cases, "/m/dists/c").await;
    let cases = vec![
        case("stale_while_revalidate from the rule", stale_tagged(""))
            .get(&[], 200, STORED, 1)
            .get(&[], 200, "strata; hit; detail=stale-while-revalidate", ANY)
            .wait_origin(2),
    ];
    run(&node, &origin, cases, "/m/swr/c").await;
    let cases = vec![case("stale_if_error from the rule", stale_tagged(""))
        .get(&[], 200, STORED, 1)
        .then(failing)
        .get(
            &[],
            200,
            "strata; fwd=stale; fwd-status=502; detail=stale-if-error",
            2,
        )];
    run(&node, &origin, cases, "/m/sie/c").await;

    // query: false keeps the query out of the key and away from the origin.
    origin.put("/m/q/a", obj());
    let (_, cs, _) = get(&node.url("/m/q/a?v=1")).await;
    assert_eq!(cs, STORED);
    let (_, cs, _) = get(&node.url("/m/q/a?v=2")).await;
    assert_eq!(cs, HIT);
    assert_eq!(origin.hits("/m/q/a"), 1);
    assert!(origin.seen().iter().all(|s| !s.target.contains('?')));
    // Elsewhere the query stays part of the key.
    origin.put("/m/other", obj());
    assert_eq!(get(&node.url("/m/other?v=1")).await.1, STORED);
    assert_eq!(get(&node.url("/m/other?v=2")).await.1, STORED);
}

/// A ranged GET: status, Cache-Status (without ttl) and body.
async fn get_range(url: &str, range: &str) -> (u16, String, bytes::Bytes) {
    let r = reqwest::Client::new()
        .get(url)
        .header("range", range)
        .send()
        .await
        .unwrap();
    let cs = cache_status(&r);
    let status = r.status().as_u16();
    let body = r
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{range}: {status} {cs}: body cut short: {e}"));
    (status, cs, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_responses_of_the_origins_choosing_are_kept_for_what_they_cover() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let len = 3u64 << 20;
    let body = generated(31, 0, len);
    let part = |a: u64, b: u64| body.slice(a as usize..=b as usize);
    for (path, etag) in [("/p/strong", "\"s1\""), ("/p/weak", "W/\"w1\"")] {
        // The origin answers ranges from byte 300000 on, whatever start Strata asks for.
        let mut o = Object::generated(len, 31).header("etag", etag);
        o.range_from = Some(300_000);
        origin.put(path, o);
        let url = node.url(path);
        // Strata asks for bytes 0-3145727 (the slices around the range); it gets 300000 on.
        let (s, cs, b) = get_range(&url, "bytes=400000-2500000").await;
        assert_eq!(
            (s, cs.as_str()),
            (206, "strata; fwd=uri-miss; stored"),
            "{path}"
        );
        assert!(b == part(400_000, 2_500_000), "{path}: wrong bytes");
        assert_eq!(origin.hits(path), 1);
        // Slices 1 and 2 (bytes 1048576..=3145727) were whole in that response.
        let (s, cs, b) = get_range(&url, "bytes=1100000-3000000").await;
        assert_eq!((s, cs.as_str()), (206, "strata; hit"), "{path}");
        assert!(b == part(1_100_000, 3_000_000), "{path}: wrong bytes");
        assert_eq!(origin.hits(path), 1, "{path}");
    }
    // Bytes it did not cover: with a strong validator only the missing slice is fetched
    // (If-Range), now that the origin answers the range asked, and joins what is stored.
    origin.put(
        "/p/strong",
        Object::generated(len, 31).header("etag", "\"s1\""),
    );
    let url = node.url("/p/strong");
    let (s, cs, b) = get_range(&url, "bytes=0-2000000").await;
    assert_eq!((s, cs.as_str()), (206, "strata; fwd=partial"));
    assert!(b == part(0, 2_000_000));
    assert_eq!(origin.hits("/p/strong"), 2);
    let last = origin.seen().into_iter().last().unwrap();
    assert_eq!(
        last.headers.get("if-range").map(String::as_str),
        Some("\"s1\"")
    );
    // Without one, pieces of two responses are never combined: the stored one is dropped
    // and the request goes to the origin as the client made it.
    let url = node.url("/p/weak");
    let (s, cs, b) = get_range(&url, "bytes=0-100").await;
    assert_eq!((s, cs.as_str()), (206, "strata; fwd=partial"));
    assert!(b == part(0, 100));
    assert_eq!(origin.hits("/p/weak"), 3);
}
