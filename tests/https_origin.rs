//! Upstream HTTPS: a real nginx with TLS on loopback, verified against a configured CA.

mod common;

use common::nginx::{test_pki, Nginx};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origins_are_verified_fetched_and_cached() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(certs.path());
    let root = tempfile::tempdir().unwrap();
    let body = random_bytes(200 * 1024, 21);
    std::fs::write(root.path().join("file.bin"), &body).unwrap();
    let nginx = Nginx::start(root.path(), Some((&cert, &key)));

    let origin = format!("https://127.0.0.1:{}/", nginx.port);
    let mut cfg = NodeConfig::new(&origin);
    cfg.extra_top = format!("tls:\n  ca_file: {}\n", ca.display());
    let node = Strata::start(&cfg);
    let (s, cs, b) = get(&node.url("/file.bin")).await;
    assert_eq!((s, cs.as_str()), (200, "strata; fwd=uri-miss; stored"));
    assert_eq!(b, body);
    let (s, cs, b) = get(&node.url("/file.bin")).await;
    assert_eq!((s, cs.as_str()), (200, "strata; hit"));
    assert!(b == body, "hit differs from the origin");
    assert_eq!(nginx.access_log().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = test_pki(certs.path());
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f"), b"secret").unwrap();
    let nginx = Nginx::start(root.path(), Some((&cert, &key)));
    // No tls.ca_file: the system store does not trust this self-signed certificate.
    let node = Strata::start(&NodeConfig::new(&format!(
        "https://127.0.0.1:{}/",
        nginx.port
    )));
    let (s, _, b) = get(&node.url("/f")).await;
    assert_eq!(s, 502);
    assert_ne!(&b[..], b"secret");
}
