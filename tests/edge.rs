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

/// A connection from `from` (a loopback address) to the node.
async fn connect_from(node: &Strata, from: &str) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    s.connect(node.addr).await.unwrap()
}

/// Whether the node closed `s` at once (nothing read, the stream ended or was reset).
async fn closed_at_once(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A request for `/c` on `s`, kept alive, answered whole: the node has taken the connection.
async fn served_on(s: &mut tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"capped\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_client_and_per_node() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = TestOrigin::start().await;
    origin.put("/c", Object::new(&b"capped\n"[..]));
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.extra_top = "limits:\n  connections_per_client: 2\n  connections: 3\n".into();
    let node = Strata::start(&cfg);
    // Two from one address are held (each answered once, so the node has counted them); a
    // third from it is closed at once.
    let mut a1 = connect_from(&node, "127.0.0.2").await;
    served_on(&mut a1).await;
    let mut a2 = connect_from(&node, "127.0.0.2").await;
    served_on(&mut a2).await;
    let mut a3 = connect_from(&node, "127.0.0.2").await;
    assert!(
        closed_at_once(&mut a3).await,
        "a third connection from one client was kept"
    );
    // Another address gets one (three in all), and no more: the node's cap.
    let mut b1 = connect_from(&node, "127.0.0.3").await;
    served_on(&mut b1).await;
    let mut b2 = connect_from(&node, "127.0.0.3").await;
    assert!(
        closed_at_once(&mut b2).await,
        "a fourth connection to the node was kept"
    );
    assert!(
        node.metric("strata_refused_connections_total{limit=\"per_client\"}")
            .await
            >= 1.0
    );
    assert!(
        node.metric("strata_refused_connections_total{limit=\"node\"}")
            .await
            >= 1.0
    );
    // The connections held are served.
    b1.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    b1.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("capped\n"),
        "{answer}"
    );
    // Closed ones give their places back.
    drop((a1, a2));
    let ok = reqwest::Client::builder()
        .local_address("127.0.0.3".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    // The node notices the closes as it reads them: a few tries at most.
    let mut served = false;
    for _ in 0..50 {
        if let Ok(r) = ok.get(node.url("/c")).send().await {
            served = r.status() == 200;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "no place given back after two connections closed");
}
