//! The HTTPS listener (`https:`): two certificates chosen by SNI, HTTP/2 by ALPN (real curl
//! with --http2, h2load and openssl s_client), every cache path byte-exact over HTTP/2, a
//! certificate renewed by SIGHUP while a download over the old one completes, and h2c.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::nginx::{issue, test_pki};
use common::*;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// A node with an HTTPS listener on its own port, serving certificates for a.test and b.test.
struct Tls {
    node: Strata,
    port: u16,
    pki: tempfile::TempDir,
    ca: PathBuf,
}

fn start(origin: &TestOrigin, h2c: bool) -> Tls {
    start_with(origin, h2c, "")
}

/// As [`start`], with more `https:` keys (indented two spaces).
fn start_with(origin: &TestOrigin, h2c: bool, https_extra: &str) -> Tls {
    let pki = tempfile::tempdir().unwrap();
    let (ca, _, _) = test_pki(pki.path());
    let (a, ak) = issue(pki.path(), "a", "a.test", "DNS:a.test");
    let (b, bk) = issue(pki.path(), "b", "b.test", "DNS:b.test,DNS:*.b.test");
    let port = free_port();
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.extra_top = format!(
        "h2c: {h2c}\nhttps:\n  listen: 127.0.0.1:{port}\n{https_extra}  certificates:\n    - {{cert: {}, key: {}}}\n    - {{cert: {}, key: {}}}\n",
        a.display(),
        ak.display(),
        b.display(),
        bk.display()
    );
    let node = Strata::start(&cfg);
    wait_port(port, "the https listener");
    Tls {
        node,
        port,
        pki,
        ca,
    }
}

impl Tls {
    /// The certificate the listener presents to a client asking for `name` (PEM).
    fn presented(&self, name: &str) -> String {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", self.port)])
            .args(["-servername", name])
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let begin = text
            .find("-----BEGIN CERTIFICATE-----")
            .expect("a certificate");
        let end = text
            .find("-----END CERTIFICATE-----")
            .expect("a certificate end");
        text[begin..end].to_string()
    }

    /// curl over HTTPS for `host` (resolved to the listener), verified against the test CA:
    /// (HTTP version, status, body).
    fn curl(&self, host: &str, path: &str, extra: &[&str]) -> (String, u16, Vec<u8>) {
        let out_file = self.pki.path().join(format!("out-{}", free_port()));
        let out = Command::new("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(&self.ca)
            .args(["--resolve", &format!("{host}:{}:127.0.0.1", self.port)])
            .args(["-o"])
            .arg(&out_file)
            .args(["-w", "%{http_version} %{http_code}"])
            .args(extra)
            .arg(format!("https://{host}:{}{path}", self.port))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let w = String::from_utf8_lossy(&out.stdout).to_string();
        let (version, code) = w.split_once(' ').expect("version and status");
        let body = std::fs::read(&out_file).unwrap_or_default();
        (version.to_string(), code.parse().unwrap(), body)
    }
}

fn pem_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let end = text.find("-----END CERTIFICATE-----").unwrap();
    text[..end].to_string()
}

fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_gets_its_certificate_and_http2_serves_every_cache_path() {
    let origin = TestOrigin::start().await;
    let small = random_bytes(300_000, 3);
    origin.put("/small", Object::new(small.clone()));
    let len = 64 * MIB;
    origin.put("/big", Object::generated(len, 9).header("etag", "\"big\""));
    let t = start(&origin, false);
    // SNI: each name its own certificate; an unknown name or none gets the first.
    let (a, b) = (
        pem_of(&t.pki.path().join("a.pem")),
        pem_of(&t.pki.path().join("b.pem")),
    );
    assert_eq!(t.presented("a.test"), a);
    assert_eq!(t.presented("b.test"), b);
    assert_eq!(t.presented("www.b.test"), b, "the wildcard name");
    assert_eq!(t.presented("other.test"), a);

    // HTTP/2 by ALPN, certificate verified by curl for both names.
    let (v, s, body) = t.curl("a.test", "/small", &[]);
    assert_eq!((v.as_str(), s), ("2", 200));
    assert!(body == small);
    let (v, s, body) = t.curl("b.test", "/small", &[]);
    assert_eq!((v.as_str(), s), ("2", 200));
    assert!(body == small);
    assert_eq!(
        origin.hits("/small"),
        1,
        "the second name's request was not a hit"
    );
    // HTTP/1.1 still offered.
    let (v, s, _) = t.curl("a.test", "/small", &["--http1.1"]);
    assert_eq!((v.as_str(), s), ("1.1", 200));

    // A cold 64 MiB miss over HTTP/2: byte-exact, one origin transfer.
    let (_, s, body) = t.curl("a.test", "/big", &[]);
    assert_eq!(s, 200);
    assert_eq!(body.len() as u64, len);
    assert!(
        sha(&body) == sha(&generated(9, 0, len)),
        "the 64 MiB body differs"
    );
    assert!(
        origin.body_bytes() <= len + 2 * MIB,
        "origin sent {}",
        origin.body_bytes()
    );
    // Ranges over HTTP/2, within a slice and across slices.
    for (from, to) in [(1000u64, 2999u64), (MIB - 10, 3 * MIB + 10)] {
        let (_, s, body) = t.curl("a.test", "/big", &["-r", &format!("{from}-{to}")]);
        assert_eq!(s, 206);
        assert!(body == generated(9, from, to + 1), "range {from}-{to}");
    }

    // h2load: many requests over HTTP/2 for the second name, none failing.
    let out = Command::new("h2load")
        .args(["-n", "200", "-c", "4", "-m", "8"])
        .arg(format!("--connect-to=127.0.0.1:{}", t.port))
        .arg(format!("https://b.test:{}/small", t.port))
        .output()
        .expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains("200 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_cold_clients_over_http2_share_one_origin_transfer() {
    let origin = TestOrigin::start().await;
    let len = 8 * MIB;
    let mut obj = Object::generated(len, 11).header("etag", "\"c\"");
    obj.chunk_delay = std::time::Duration::from_micros(500);
    origin.put("/cold", obj);
    let t = start(&origin, false);
    // One curl, 50 transfers multiplexed over HTTP/2, all started at once.
    let dir = t.pki.path().join("fifty");
    std::fs::create_dir(&dir).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2", "--parallel", "--parallel-immediate"])
        .args(["--parallel-max", "50", "--cacert"])
        .arg(&t.ca)
        .args(["--resolve", &format!("a.test:{}:127.0.0.1", t.port)]);
    for i in 0..50 {
        cmd.arg("-o").arg(dir.join(format!("{i}")));
        cmd.arg(format!("https://a.test:{}/cold", t.port));
    }
    let out = cmd.output().expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = sha(&generated(11, 0, len));
    for i in 0..50 {
        let got = std::fs::read(dir.join(format!("{i}"))).unwrap();
        assert!(sha(&got) == want, "client {i} got different bytes");
    }
    assert!(
        origin.body_bytes() <= len + MIB,
        "origin sent {}",
        origin.body_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_renewed_certificate_while_an_old_download_completes() {
    let origin = TestOrigin::start().await;
    let len = 16 * MIB;
    origin.put("/dl", Object::generated(len, 12).header("etag", "\"d\""));
    let t = start(&origin, false);
    let old = pem_of(&t.pki.path().join("a.pem"));
    assert_eq!(t.presented("a.test"), old);
    // A download over the old certificate, slowed by the client to last a few seconds.
    let out_file = t.pki.path().join("slow");
    let slow = Command::new("curl")
        .args(["-sS", "--http2", "--limit-rate", "4M", "--cacert"])
        .arg(&t.ca)
        .args(["--resolve", &format!("a.test:{}:127.0.0.1", t.port), "-o"])
        .arg(&out_file)
        .arg(format!("https://a.test:{}/dl", t.port))
        .spawn()
        .expect("curl");
    // The certificate is renewed in place, and the node told.
    issue(t.pki.path(), "a", "a.test", "DNS:a.test");
    let renewed = pem_of(&t.pki.path().join("a.pem"));
    assert_ne!(renewed, old);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(t.node.pid(), libc::SIGHUP) };
    assert!(t
        .node
        .log_with("configuration reloaded")
        .contains("reloaded"));
    assert_eq!(
        t.presented("a.test"),
        renewed,
        "a new connection got the old certificate"
    );
    let done = slow.wait_with_output().expect("curl");
    assert!(done.status.success(), "the old download was cut");
    let got = std::fs::read(&out_file).unwrap();
    assert!(
        sha(&got) == sha(&generated(12, 0, len)),
        "the old download differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_spoken_on_the_plain_listener_when_configured() {
    let origin = TestOrigin::start().await;
    let body = random_bytes(100_000, 13);
    origin.put("/x", Object::new(body.clone()));
    let t = start(&origin, true);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-w",
            "%{http_version}",
            "-o",
        ])
        .arg(t.pki.path().join("h2c"))
        .arg(t.node.url("/x"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2");
    assert!(std::fs::read(t.pki.path().join("h2c")).unwrap() == body);
    // HTTP/1.1 on the same listener still works.
    assert_eq!(get(&t.node.url("/x")).await.2, body);
}

/// Whether a TLS 1.2 handshake with the listener succeeds.
fn tls12_accepted(t: &Tls) -> bool {
    Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-connect",
            &format!("127.0.0.1:{}", t.port),
        ])
        .args(["-servername", "a.test"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_tls_1_2_clients() {
    let origin = TestOrigin::start().await;
    assert!(
        tls12_accepted(&start(&origin, false)),
        "TLS 1.2 refused by default"
    );
    let strict = start_with(&origin, false, "  min_version: \"1.3\"\n");
    assert!(
        !tls12_accepted(&strict),
        "TLS 1.2 accepted with min_version 1.3"
    );
    assert_eq!(strict.curl("a.test", "/none", &[]).1, 404);
}

#[test]
fn a_bad_certificate_is_named_by_strata_check() {
    let pki = tempfile::tempdir().unwrap();
    let (_, cert, _) = test_pki(pki.path());
    let conf = pki.path().join("c.yaml");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:1\nhttps:\n  listen: 127.0.0.1:2\n  certificates:\n    - {{cert: {}, key: {}}}\ncache: {{memory: 1MiB}}\nroutes: [{{name: a, path_prefix: /, origin: 'http://127.0.0.1:3/'}}]\n",
            cert.display(),
            pki.path().join("missing.key").display()
        ),
    )
    .unwrap();
    let (ok, text) = strata_cmd(&["check"], &conf);
    assert!(!ok);
    assert!(text.contains("https.certificates[0].key"), "{text}");
    assert!(text.contains("missing.key"), "{text}");
}
