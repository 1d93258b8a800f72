//! S3 buckets as origins, against a real S3 server that verifies SigV4 (s3s-fs), with real
//! clients (boto3).

mod common;

use common::s3::{python, S3Server, ACCESS_KEY, SECRET_KEY};
use common::*;

fn bucket_yaml(endpoint: &str, bucket: &str, secret: &str) -> String {
    format!(
        "      endpoint: {endpoint}\n      bucket: {bucket}\n      region: us-east-1\n      access_key_id: {ACCESS_KEY}\n      secret_access_key: {secret}\n"
    )
}

fn node(s3: &S3Server, extra_routes: &str) -> Strata {
    let ep = s3.endpoint();
    let mut cfg = NodeConfig::new("http://127.0.0.1:9/");
    cfg.routes = format!(
        "  - name: assets\n    path_prefix: /assets/\n    default_ttl: 1h\n    public: true\n    s3:\n{}      allow_writes: true\n\
         \x20 - name: ro\n    path_prefix: /ro/\n    default_ttl: 1h\n    public: true\n    s3:\n{}\
         \x20 - name: bad\n    path_prefix: /bad/\n    public: true\n    s3:\n{}{extra_routes}",
        bucket_yaml(&ep, "assets", SECRET_KEY),
        bucket_yaml(&ep, "assets", SECRET_KEY),
        bucket_yaml(&ep, "assets", "not-the-secret"),
    );
    Strata::start(&cfg)
}

async fn s3_requests(node: &Strata, route: &str) -> f64 {
    node.metric(&format!(
        "strata_origin_requests_total{{route=\"{route}\"}}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_head_range_and_cached_reget() {
    let s3 = S3Server::start(&["assets"]);
    let body = random_bytes(300 * 1024, 31);
    s3.put_file("assets", "dir/file.bin", &body);
    let node = node(&s3, "");
    let url = node.url("/assets/dir/file.bin");

    let (s, cs, b) = get(&url).await;
    assert_eq!((s, cs.as_str()), (200, "strata; fwd=uri-miss; stored"));
    assert!(b == body, "GET differs from the bucket");
    let r = reqwest::Client::new().head(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-length"], "307200");
    let r = reqwest::Client::new()
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/307200");
    assert!(r.bytes().await.unwrap() == body.slice(1000..2000));
    let before = s3_requests(&node, "assets").await;
    let (s, cs, b) = get(&url).await;
    assert_eq!((s, cs.as_str()), (200, "strata; hit"));
    assert!(b == body);
    assert_eq!(
        s3_requests(&node, "assets").await,
        before,
        "a cached re-GET must not reach S3"
    );

    // A ranged GET of an object nobody asked for yet is fetched as a signed ranged request.
    let big = random_bytes(3 << 20, 32);
    s3.put_file("assets", "big.bin", &big);
    let r = reqwest::Client::new()
        .get(node.url("/assets/big.bin"))
        .header("range", "bytes=2097150-2097160")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert!(r.bytes().await.unwrap() == big.slice(2097150..2097161));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_pass_through_and_invalidate() {
    let s3 = S3Server::start(&["assets"]);
    s3.put_file("assets", "doc.txt", b"version one");
    let node = node(&s3, "");
    let url = node.url("/assets/doc.txt");
    assert_eq!(get(&url).await.2, "version one");
    assert_eq!(get(&url).await.1, "strata; hit");

    let client = reqwest::Client::new();
    let r = client.put(&url).body("version two").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    let (s, cs, b) = get(&url).await;
    assert_eq!(
        (s, cs.as_str(), &b[..]),
        (200, "strata; fwd=uri-miss; stored", &b"version two"[..])
    );

    let r = client.delete(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (s, _, _) = get(&url).await;
    assert_eq!(s, 404, "deleted objects are gone");

    // A read-only route refuses writes without asking the bucket.
    let r = client
        .put(node.url("/ro/doc.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    assert_eq!(s3_requests(&node, "ro").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_a_clear_error_naming_the_route() {
    let s3 = S3Server::start(&["assets"]);
    s3.put_file("assets", "x.txt", b"secret data");
    let node = node(&s3, "");
    let (s, cs, b) = get(&node.url("/bad/x.txt")).await;
    assert_eq!(s, 502);
    assert!(cs.contains("detail=origin-credentials"), "{cs}");
    let msg = String::from_utf8_lossy(&b).to_string();
    assert!(
        msg.contains("route bad") && msg.contains("SignatureDoesNotMatch"),
        "{msg}"
    );
    assert!(!msg.contains("secret data"));
    let log = node.log_with("refused Strata's credentials");
    // The error line names the route (the access line, written a moment later, does too).
    let names_route = log.contains("route=\"bad\"") || log.contains("route=bad");
    assert!(
        log.contains("refused Strata's credentials") && names_route,
        "{log}"
    );
    assert!(
        !log.contains("not-the-secret") && !log.contains(SECRET_KEY),
        "secrets must not be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_keys_and_boto3_through_strata() {
    let s3 = S3Server::start(&["assets"]);
    let node = node(&s3, "");
    let ep = s3.endpoint();
    let strata = format!("http://{}", node.addr);
    // Upload with boto3, signed, straight to the bucket; then read through Strata, both with
    // plain HTTP (percent-encoded paths) and with boto3 pointed at Strata (unsigned).
    let out = python(&format!(
        r#"
import boto3, hashlib, urllib.parse, urllib.request
from botocore import UNSIGNED
from botocore.config import Config
direct = boto3.client("s3", endpoint_url="{ep}", aws_access_key_id="{ACCESS_KEY}",
    aws_secret_access_key="{SECRET_KEY}", region_name="us-east-1",
    config=Config(s3={{"addressing_style": "path"}}))
via = boto3.client("s3", endpoint_url="{strata}", region_name="us-east-1",
    config=Config(signature_version=UNSIGNED, s3={{"addressing_style": "path"}}))
keys = ["with space.txt", "unicode-é-ü-名.txt", "plus+sign.txt", "percent%25.txt", "100%.txt", "dir/sub/deep.bin", "tilde~file"]
for i, k in enumerate(keys):
    body = (k * 1000 + str(i)).encode()
    direct.put_object(Bucket="assets", Key=k, Body=body)
    url = "{strata}/assets/" + urllib.parse.quote(k)
    got = urllib.request.urlopen(url).read()
    assert got == body, (k, "http", len(got))
    got = via.get_object(Bucket="assets", Key=k)["Body"].read()
    assert got == body, (k, "boto3")
    print("ok", k)
"#
    ));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        7,
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_when_the_primary_is_down() {
    let s3 = S3Server::start(&["assets"]);
    s3.put_file("assets", "r.txt", b"from the replica");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let replica = bucket_yaml(&s3.endpoint(), "assets", SECRET_KEY).replace("      ", "          ");
    let extra = format!(
        "  - name: rep\n    path_prefix: /rep/\n    public: true\n    s3:\n{}      replicas:\n        - endpoint: {}\n{}",
        bucket_yaml(&dead, "assets", SECRET_KEY),
        s3.endpoint(),
        replica.lines().skip(1).map(|l| format!("{l}\n")).collect::<String>(),
    );
    let node = node(&s3, &extra);
    let (s, _, b) = get(&node.url("/rep/r.txt")).await;
    assert_eq!((s, &b[..]), (200, &b"from the replica"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_buckets_get_unsigned_path_style_requests() {
    // Any HTTP server can play a public bucket; the in-process origin shows what arrives.
    let origin = TestOrigin::start().await;
    origin.put("/public/a%20b.txt", Object::new("open data"));
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.routes = format!(
        "  - name: pub\n    path_prefix: /pub/\n    s3:\n      endpoint: http://{}\n      bucket: public\n      region: eu-west-1\n",
        origin.addr
    );
    let node = Strata::start(&cfg);
    let r = reqwest::Client::new()
        .get(node.url("/pub/a%20b.txt"))
        .header("authorization", "AWS4-HMAC-SHA256 Credential=client-junk")
        .header("x-amz-date", "20200101T000000Z")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "open data");
    let seen = origin.seen().into_iter().last().unwrap();
    assert_eq!(seen.target, "/public/a%20b.txt");
    assert!(
        !seen.headers.contains_key("authorization"),
        "client credentials are not forwarded"
    );
    assert!(!seen.headers.contains_key("x-amz-date"));
    // Keys are not normalised: a double slash is part of the key.
    origin.put("/public/x//y", Object::new("double"));
    let (s, _, b) = get(&node.url("/pub/x//y")).await;
    assert_eq!((s, &b[..]), (200, &b"double"[..]));
    assert_eq!(
        origin.seen().into_iter().last().unwrap().target,
        "/public/x//y"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_errors_are_retried_then_mapped() {
    let origin = TestOrigin::start().await;
    let mut broken = Object::new("<Error><Code>InternalError</Code></Error>");
    broken.status = 500;
    origin.put("/b/broken", broken);
    let mut slow = Object::new("<Error><Code>SlowDown</Code></Error>");
    slow.status = 503;
    origin.put("/b/slow", slow);
    let mut denied = Object::new("<Error><Code>AccessDenied</Code></Error>");
    denied.status = 403;
    origin.put("/b/denied", denied);
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.routes = format!(
        "  - name: b\n    path_prefix: /b/\n    s3:\n      endpoint: http://{}\n      bucket: b\n      region: us-east-1\n",
        origin.addr
    );
    let node = Strata::start(&cfg);
    // A 500 is retried (three attempts with backoff), then answered 502.
    let (s, _, _) = get(&node.url("/b/broken")).await;
    assert_eq!(s, 502);
    assert_eq!(origin.hits("/b/broken"), 3);
    // SlowDown stays a 503 after its retries (the client may come back later).
    let (s, _, _) = get(&node.url("/b/slow")).await;
    assert_eq!(s, 503);
    assert_eq!(origin.hits("/b/slow"), 3);
    // AccessDenied for an object is the client's answer: 403, body passed on, not retried.
    let (s, _, b) = get(&node.url("/b/denied")).await;
    assert_eq!(s, 403);
    assert!(String::from_utf8_lossy(&b).contains("AccessDenied"));
    assert_eq!(origin.hits("/b/denied"), 1);
}
