//! The edge front: routes chosen by host as well as path (a multi-tenant node, with no key
//! shared between tenants), and the forwarding headers origins get on requests passed through.

mod common;

use common::*;

const STORED: &str = "strata; fwd=uri-miss; stored";
const HIT: &str = "strata; hit";

/// A GET of `path` as a request for `host`: status, Cache-Status, body.
async fn get_host(node: &Strata, host: &str, path: &str) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .get(node.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap();
    let cs = cache_status(&r);
    (r.status().as_u16(), cs, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_keep_tenants_apart() {
    let origin = TestOrigin::start().await;
    let url = origin.url();
    let mut cfg = NodeConfig::new(&url);
    cfg.routes = format!(
        "  - name: a\n    host: a.test\n    path_prefix: /\n    origin: {url}a/\n\
         \x20 - name: w\n    host: '*.w.test'\n    path_prefix: /\n    origin: {url}w/\n\
         \x20 - name: any\n    path_prefix: /\n    origin: {url}any/\n"
    );
    let node = Strata::start(&cfg);
    for (p, body) in [
        ("/a/x", "tenant a"),
        ("/w/x", "tenant w"),
        ("/any/x", "anyone"),
    ] {
        origin.put(p, Object::new(body));
    }
    assert_eq!(
        get_host(&node, "a.test", "/x").await,
        (200, STORED.into(), "tenant a".into())
    );
    // Case, port and a trailing dot do not make another host.
    assert_eq!(get_host(&node, "A.Test.:8080", "/x").await.1, HIT);
    assert_eq!(
        get_host(&node, "other.test", "/x").await,
        (200, STORED.into(), "anyone".into())
    );
    // Two names under one wildcard route: one origin path, two cache entries.
    assert_eq!(
        get_host(&node, "x.w.test", "/x").await,
        (200, STORED.into(), "tenant w".into())
    );
    assert_eq!(get_host(&node, "y.w.test", "/x").await.1, STORED);
    assert_eq!(get_host(&node, "x.w.test", "/x").await.1, HIT);
    assert_eq!(origin.hits("/w/x"), 2);
    // The wildcard does not cover the domain itself.
    assert_eq!(get_host(&node, "w.test", "/x").await.2, "anyone");

    // A purge names the host its path is requested on.
    let purged = reqwest::Client::new()
        .post(format!("http://{}/purge?path=/x&host=x.w.test", node.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    assert_eq!(get_host(&node, "x.w.test", "/x").await.1, STORED);
    assert_eq!(get_host(&node, "y.w.test", "/x").await.1, HIT);
    assert_eq!(get_host(&node, "a.test", "/x").await.1, HIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_learn_the_client_on_requests_passed_through() {
    let origin = TestOrigin::start().await;
    origin.put("/f", Object::new("f"));
    let client = reqwest::Client::new();
    for (mode, want_xff) in [("replace", "127.0.0.1"), ("append", "6.6.6.6, 127.0.0.1")] {
        let mut cfg = NodeConfig::new(&origin.url());
        cfg.extra_top = format!("forwarded_headers: {mode}\n");
        let node = Strata::start(&cfg);
        let r = client
            .post(node.url("/f"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let seen = origin.seen();
        let post = seen.iter().rev().find(|s| s.method == "POST").unwrap();
        let h = |n: &str| post.headers.get(n).cloned().unwrap_or_default();
        assert_eq!(h("x-forwarded-for"), want_xff, "{mode}");
        assert!(
            h("forwarded").ends_with("for=127.0.0.1;proto=http"),
            "{mode}: {}",
            h("forwarded")
        );
        assert_eq!(h("x-forwarded-proto"), "http", "{mode}");
    }
    // A fill serves every client: it names none.
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    get(&node.url("/f")).await;
    let fill = origin
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.method == "GET")
        .unwrap();
    assert!(
        !fill.headers.contains_key("x-forwarded-for"),
        "{:?}",
        fill.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_and_others_do_not() {
    let origin = TestOrigin::start().await;
    origin.put("/r", Object::new("r"));
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.extra_top = "limits:\n  requests_per_second: 5\n".into();
    let node = Strata::start(&cfg);
    let busy = reqwest::Client::builder()
        .local_address("127.0.0.1".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..30 {
        let r = busy.get(node.url("/r")).send().await.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(r.headers()["retry-after"], "1");
                assert_eq!(cache_status(&r), "strata; fwd=bypass; detail=limited");
            }
            s => panic!("status {s}"),
        }
    }
    // Five a second; the requests may straddle one change of second.
    assert!(limited > 0 && ok <= 10, "{ok} served, {limited} refused");
    // Another address is not affected.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = other.get(node.url("/r")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        node.metric("strata_limited_requests_total{limit=\"rate\"}")
            .await
            >= 1.0
    );
}
