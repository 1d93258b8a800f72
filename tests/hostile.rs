//! The classic attacks on an HTTP intermediary, sent over raw sockets: each gets a clean 4xx
//! (or, where the RFC allows a lenient reading, a correct answer), nothing reaches the origin
//! that should not, nothing leaks, and the node keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// Sends `request` and returns what came back before the server closed or went quiet.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before reading all of a huge request.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_attacks_get_clean_answers_and_the_node_keeps_serving() {
    let origin = TestOrigin::start().await;
    origin.put("/ok", Object::new("fine"));
    origin.put("/secret", Object::new("top secret"));
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.routes = format!(
        "  - name: pub\n    path_prefix: /pub/\n    origin: {}\n",
        origin.url()
    );
    let node = Strata::start(&cfg);
    let huge_header = format!(
        "GET /pub/ok HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let huge_uri = format!(
        "GET /pub/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(200_000)
    );
    let many_headers = format!(
        "GET /pub/ok HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..2000)
            .map(|i| format!("X-{i}: a\r\n"))
            .collect::<String>()
    );
    let mut tls = vec![
        0x16, 0x03, 0x01, 0x00, 0xc4, 0x01, 0x00, 0x00, 0xc0, 0x03, 0x03,
    ];
    tls.extend_from_slice(&[0u8; 100]);
    // Both lengths: the encoding wins and the connection closes after one answer (RFC 9112
    // §6.1), so the request smuggled behind the body is never read.
    let smuggle = exchange(
        node.addr,
        b"POST /pub/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /pub/secret HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(smuggle.matches("HTTP/1.1 ").count(), 1, "{smuggle}");
    assert!(!smuggle.contains("top secret"), "{smuggle}");
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        (
            "two different Content-Lengths",
            b"POST /pub/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
        ),
        ("obfuscated Transfer-Encoding", b"POST /pub/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("space before the colon", b"POST /pub/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("overflowing Content-Length", b"POST /pub/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec()),
        ("negative Content-Length", b"POST /pub/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec()),
        ("oversized header", huge_header.into_bytes()),
        ("oversized URI", huge_uri.into_bytes()),
        ("2000 header fields", many_headers.into_bytes()),
        ("HTTP/1.1 without Host", b"GET /pub/ok HTTP/1.1\r\n\r\n".to_vec()),
        ("two Hosts", b"GET /pub/ok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec()),
        ("absolute-form to another host", b"GET http://evil.example/pub/secret HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("TLS on the plain port", tls),
        ("traversal", b"GET /pub/%2e%2e%2fsecret HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("backslash traversal", b"GET /pub/..%5c..%5csecret HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("NUL in the path", b"GET /pub/ok%00.txt HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    for (name, request) in &attacks {
        let resp = exchange(node.addr, request);
        let code = status(&resp);
        assert!((400..500).contains(&code), "{name}: {resp:.200}");
        assert!(!resp.contains("top secret"), "{name}: {resp:.300}");
        assert!(
            !resp.contains("127.0.0.1"),
            "{name} leaked an address: {resp:.300}"
        );
        // The node still serves.
        let ok = exchange(
            node.addr,
            b"GET /pub/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("fine"),
            "after {name}: {ok:.200}"
        );
    }
    // Only the smuggling POST itself (as a chunked request) may reach it.
    let reached: Vec<_> = origin
        .seen()
        .into_iter()
        .map(|s| s.target)
        .filter(|t| t != "/ok" && t != "/x")
        .collect();
    assert!(
        reached.is_empty(),
        "attacks reached the origin: {reached:?}"
    );

    // Lenient readings the RFCs allow, answered correctly: a bare LF as line end (RFC 9112
    // §2.2), and 10 000 ranges (ignored: the whole object, RFC 9110 §14.2).
    let bare_lf = exchange(
        node.addr,
        b"GET /pub/ok HTTP/1.1\nHost: x\nConnection: close\n\n",
    );
    assert!(
        bare_lf.starts_with("HTTP/1.1 200") && bare_lf.ends_with("fine"),
        "{bare_lf:.200}"
    );
    let ranges = vec!["0-0"; 10_000].join(",");
    let many = exchange(
        node.addr,
        format!(
            "GET /pub/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\nRange: bytes={ranges}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(
        many.starts_with("HTTP/1.1 200") && many.ends_with("fine"),
        "{many:.200}"
    );
}
