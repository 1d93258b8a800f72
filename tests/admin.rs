//! The admin API: the bearer token, and purges by path, prefix and tag that make the purged
//! objects misses at once, leave the others hits, and still hold after a restart.

mod common;

use common::*;

const TOKEN: &str = "s3cret-admin-token-1234";

/// An admin request with the token (or another one).
async fn admin(node: &Strata, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut rb = reqwest::Client::new().request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("http://{}{path}", node.admin),
    );
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn cs(node: &Strata, path: &str) -> String {
    get(&node.url(path)).await.1
}

const STORED: &str = "strata; fwd=uri-miss; stored";
const HIT: &str = "strata; hit";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_everything_but_health() {
    let origin = TestOrigin::start().await;
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.admin_token = Some(TOKEN.into());
    let node = Strata::start(&cfg);
    assert_eq!(admin(&node, "GET", "/health", None).await.0, 200);
    assert_eq!(admin(&node, "GET", "/ready", None).await.0, 200);
    for path in ["/metrics", "/stats"] {
        assert_eq!(admin(&node, "GET", path, None).await.0, 401, "{path}");
        assert_eq!(
            admin(&node, "GET", path, Some("wrong-token-xxxxxxxx"))
                .await
                .0,
            401
        );
        assert_eq!(
            admin(&node, "GET", path, Some(TOKEN)).await.0,
            200,
            "{path}"
        );
    }
    assert_eq!(admin(&node, "POST", "/purge?tag=x", None).await.0, 401);
    assert_eq!(
        admin(&node, "POST", "/purge?tag=x", Some(TOKEN)).await.0,
        200
    );

    // /stats: JSON with the tiers, the routes by requests and the purge rules.
    origin.put("/s", Object::new("s"));
    for _ in 0..3 {
        get(&node.url("/s")).await;
    }
    // A request is counted when its exchange ends, which may be just after its client has
    // read the last byte: /stats is asked until the third is in (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (v, body) = loop {
        let (status, body) = admin(&node, "GET", "/stats", Some(TOKEN)).await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
        if v["top_routes"][0]["requests"] == 3 || std::time::Instant::now() > deadline {
            break (v, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(v["tiers"]["memory"]["capacity_bytes"], 64 << 20, "{body}");
    assert!(
        v["tiers"]["disk"]["capacity_bytes"].as_u64() > Some(0),
        "{body}"
    );
    assert_eq!(v["top_routes"][0]["route"], "test", "{body}");
    assert_eq!(v["top_routes"][0]["requests"], 3, "{body}");
    assert_eq!(v["top_routes"][0]["hits"], 2, "{body}");
    assert_eq!(v["purge_rules"]["tags"], 1, "{body}");
    assert_eq!(v["warm"]["pending"], 0, "{body}");
    assert!(
        !node.log_text().contains(TOKEN),
        "the token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_path_prefix_and_tag_hold_across_a_restart() {
    let origin = TestOrigin::start().await;
    let url = origin.url();
    let mut cfg = NodeConfig::new(&url);
    cfg.routes = format!(
        "  - name: docs\n    path_prefix: /docs/\n    origin: {url}d/\n\
         \x20 - name: rest\n    path_prefix: /\n    origin: {url}\n"
    );
    cfg.admin_token = Some(TOKEN.into());
    let node = Strata::start(&cfg);
    for (path, origin_path, tags) in [
        ("/a", "/a", ""),
        ("/b", "/b", ""),
        ("/docs/x/1", "/d/x/1", ""),
        ("/docs/x/2", "/d/x/2", ""),
        ("/docs/y/1", "/d/y/1", ""),
        ("/t1", "/t1", "red blue"),
        ("/t2", "/t2", "green"),
        ("/later", "/later", ""),
        ("/docs/z/1", "/d/z/1", ""),
        ("/t3", "/t3", "blue"),
    ] {
        let mut o = Object::new(path.as_bytes().to_vec());
        if !tags.is_empty() {
            o = o.header("surrogate-key", tags);
        }
        origin.put(origin_path, o);
        assert_eq!(cs(&node, path).await, STORED, "{path}");
        assert_eq!(cs(&node, path).await, HIT, "{path}");
    }
    let purge = |q: &'static str| {
        let node = &node;
        async move {
            let (s, body) = admin(node, "POST", &format!("/purge?{q}"), Some(TOKEN)).await;
            assert_eq!(s, 200, "{q}: {body}");
            body
        }
    };
    purge("path=/a").await;
    purge("prefix=/docs/x/").await;
    purge("tag=blue").await;
    purge("path=/later").await;
    purge("prefix=/docs/z/").await;
    // Bad requests are refused with a reason.
    for q in ["", "path=/a&tag=b", "colour=red", "path=relative", "tag="] {
        let (s, body) = admin(&node, "POST", &format!("/purge?{q}"), Some(TOKEN)).await;
        assert_eq!(s, 400, "{q}: {body}");
    }
    assert_eq!(
        admin(&node, "GET", "/purge?tag=x", Some(TOKEN)).await.0,
        405
    );

    // Purged: misses now. Others: hits.
    for p in ["/a", "/docs/x/1", "/docs/x/2", "/t1"] {
        assert_eq!(cs(&node, p).await, STORED, "{p} was not purged");
    }
    for p in ["/b", "/docs/y/1", "/t2"] {
        assert_eq!(cs(&node, p).await, HIT, "{p} was purged too");
    }
    let before = origin.hits("/d/z/1");
    // A restart: "/later" and "/docs/z/1" were purged and never fetched again; the disk tier
    // must not bring them back. The others were fetched anew after their purge: hits.
    let dir = node.stop();
    assert!(
        dir.path().join("cache.img.purges").is_file(),
        "no purge log beside the cache"
    );
    let node = Strata::start_in(&cfg, dir);
    for p in ["/later", "/docs/z/1", "/t3"] {
        assert_eq!(
            cs(&node, p).await,
            STORED,
            "{p}: a purge was lost in the restart"
        );
    }
    assert_eq!(origin.hits("/d/z/1"), before + 1);
    for p in ["/a", "/b", "/docs/x/1", "/docs/y/1", "/t1", "/t2"] {
        assert_eq!(cs(&node, p).await, HIT, "{p} after the restart");
    }
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", node.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_fills_without_a_client_and_inspect_shows_what_is_stored() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let big = 3u64 << 20;
    origin.put("/w/big", Object::generated(big, 9).header("etag", "\"b\""));
    for i in 0..4 {
        origin.put(&format!("/w/{i}"), Object::new(format!("small {i}")));
    }
    let list = "# warm these\n/w/0\n/w/1\n\n/w/2\n/w/3\n/w/big\n/w/none\n";
    let client = reqwest::Client::new();
    let admin_url = |p: &str| format!("http://{}{p}", node.admin);
    let r = client
        .post(admin_url("/warm?concurrency=2"))
        .body(list)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    // Progress: every path done or failed (the missing one fails with its 404).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = get_json(&client, &admin_url("/warm")).await;
        if v["pending"] == 0 {
            assert_eq!(
                (v["done"].as_u64(), v["failed"].as_u64()),
                (Some(5), Some(1)),
                "{v}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "warming never ended: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for p in ["/w/0", "/w/1", "/w/2", "/w/3", "/w/big"] {
        let (_, cs, _) = get(&node.url(p)).await;
        assert_eq!(cs, HIT, "{p} was not warmed");
        assert_eq!(origin.hits(p), 1, "{p}");
    }
    for bad in ["http://elsewhere/x\n", "/a b\n"] {
        let r = client
            .post(admin_url("/warm"))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
    }
    let r = client
        .post(admin_url("/warm?concurrency=0"))
        .body("/w/0\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Inspect: the stored response and where its slices are. A warmed response is complete
    // once its last byte is relayed; that slice's store into the tiers can land a moment
    // later, so inspect is asked until no slice is missing (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let v = loop {
        let v = get_json(&client, &admin_url("/inspect?path=/w/big")).await;
        if v["stored"]["slices"]["missing"] == 0 || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let s = &v["stored"];
    assert_eq!(s["status"], 200, "{v}");
    assert_eq!(s["length"], big, "{v}");
    assert_eq!(s["slices"]["count"], 3, "{v}");
    assert_eq!(s["slices"]["missing"], 0, "{v}");
    assert!(s["ttl_seconds"].as_i64() > Some(3000), "{v}");
    assert!(
        s["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "etag" && h[1] == "\"b\""),
        "{v}"
    );
    let r = client
        .get(admin_url("/inspect?path=/w/never"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// GET `url`: its body as JSON.
async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let text = client.get(url).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// Runs the strata command with `args` against the node's configuration file.
fn strata(node: &Strata, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .arg("--config")
        .arg(node.dir.path().join("strata.yaml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_talks_to_a_running_node() {
    let origin = TestOrigin::start().await;
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.admin_token = Some(TOKEN.into());
    let node = Strata::start(&cfg);
    origin.put("/c/1", Object::new("one"));
    origin.put("/c/2", Object::new("two"));
    let list = node.dir.path().join("list.txt");
    std::fs::write(&list, "/c/1\n/c/2\n").unwrap();
    let (ok, text) = strata(
        &node,
        &["warm", list.to_str().unwrap(), "--concurrency", "2"],
    );
    assert!(ok && text.contains("\"queued\": 2"), "{text}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Done when the warmer says so: the origin having been asked does not mean the fills
    // are over.
    loop {
        let (status, body) = admin(&node, "GET", "/warm", Some(TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("warm progress is JSON");
        if v["pending"] == 0 && v["done"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never warmed: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (ok, text) = strata(&node, &["inspect", "--url", &node.url("/c/1")]);
    assert!(ok && text.contains("\"length\": 3"), "{text}");
    let (ok, text) = strata(&node, &["purge", "--path", "/c/1"]);
    assert!(ok && text.contains("\"purged\""), "{text}");
    assert_eq!(cs(&node, "/c/1").await, STORED);
    let (ok, text) = strata(&node, &["stats"]);
    assert!(ok && text.contains("\"top_routes\""), "{text}");
    let (ok, text) = strata(&node, &["inspect", "--url", "/c/none"]);
    assert!(!ok && text.contains("404"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}
