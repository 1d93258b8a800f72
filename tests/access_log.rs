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

    // So does a level filter that names the target.
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.log_level = "info,access=off".into();
    let mut filtered = Strata::start(&cfg);
    assert_eq!(get(&filtered.url("/a")).await.0, 200);
    filtered.terminate();
    let log = filtered.log_text();
    assert!(log.contains("strata stopped"), "{log}");
    assert!(!log.contains(" access:"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_lines_parse_with_their_fields() {
    let origin = TestOrigin::start().await;
    origin.put("/j", Object::new("hello json"));
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.log_format = "json".into();
    let mut node = Strata::start(&cfg);
    let agent = "agent \"quoted\" \\ back";
    let r = reqwest::Client::new()
        .get(node.url("/j?sig=SECRET456"))
        .header("user-agent", agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    node.terminate();
    let log = node.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = &lines[0];
    assert_eq!(line["level"], "INFO");
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let f = &line["fields"];
    assert_eq!(f["message"], "access");
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], "/j");
    assert_eq!(f["status"], 200);
    assert_eq!(f["bytes"], 10);
    assert_eq!(f["route"], "test");
    assert_eq!(f["cache"], "strata; fwd=uri-miss; stored");
    assert_eq!(f["user_agent"], agent);
    assert!(f["request_id"].as_u64().is_some(), "{line}");
    assert!(f["duration_ms"].as_f64().is_some(), "{line}");
    assert!(f["ttfb_ms"].as_f64().is_some(), "{line}");
    assert!(f["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));
    assert!(!log.contains("SECRET456"), "{log}");
}
