//! The access log: one line per request with the fields an operator needs, and none of a
//! request's secrets.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_access_line() {
    let origin = TestOrigin::start().await;
    origin.put("/a", Object::new("hello"));
    let mut node = Strata::start(&NodeConfig::new(&origin.url()));
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let r = client
            .get(node.url("/a?token=SECRET123"))
            .header("user-agent", "access-test/1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(get(&node.url("/none/../missing")).await.0, 404);
    node.terminate();
    let log = node.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" access:")).collect();
    assert_eq!(lines.len(), 3, "{log}");
    for (line, cache) in [
        (lines[0], "cache=strata; fwd=uri-miss; stored"),
        (lines[1], "cache=strata; hit"),
    ] {
        for field in [
            "method=GET",
            "path=/a",
            "status=200",
            "bytes=5",
            "route=test",
            cache,
            "user_agent=\"access-test/1\"",
            "client=127.0.0.1:",
            "duration_ms=",
            "ttfb_ms=",
            "request_id=",
        ] {
            assert!(line.contains(field), "{field} missing: {line}");
        }
        assert!(!line.contains("SECRET123"), "{line}");
    }
    assert!(lines[0].contains("origin_status=") || lines[0].contains("fwd=uri-miss"));
    assert!(lines[2].contains("status=404"), "{}", lines[2]);

    // log.access: false turns it off.
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.log_access = false;
    let mut quiet = Strata::start(&cfg);
    assert_eq!(get(&quiet.url("/a")).await.0, 200);
    quiet.terminate();
    assert!(
        !quiet.log_text().contains(" access:"),
        "{}",
        quiet.log_text()
    );
}
