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
    let (status, body) = admin(&node, "GET", "/stats", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
    assert_eq!(v["tiers"]["memory"]["capacity_bytes"], 64 << 20, "{body}");
    assert!(
        v["tiers"]["disk"]["capacity_bytes"].as_u64() > Some(0),
        "{body}"
    );
    assert_eq!(v["top_routes"][0]["route"], "test", "{body}");
    assert_eq!(v["top_routes"][0]["requests"], 3, "{body}");
    assert_eq!(v["top_routes"][0]["hits"], 2, "{body}");
    assert_eq!(v["purge_rules"]["tags"], 1, "{body}");
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
    for p in ["/later", "/docs/z/1"] {
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
