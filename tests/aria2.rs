//! A real download manager: aria2c with 8 connections through Strata, cold then warm.

mod common;

use std::process::Command;

use common::origin::generated;
use common::*;

fn aria2c(url: &str, dir: &std::path::Path) -> std::fs::File {
    let out = Command::new("aria2c")
        .args(["-x", "8", "-s", "8", "-k", "1M", "--file-allocation=none"])
        .args(["--allow-overwrite=true", "--auto-file-renaming=false", "-q"])
        .args(["--max-tries=1", "--console-log-level=warn"])
        .arg("-d")
        .arg(dir)
        .args(["-o", "file.bin", url])
        .output()
        .expect("aria2c is installed by scripts/test");
    assert!(
        out.status.success(),
        "aria2c failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::File::open(dir.join("file.bin")).unwrap()
}

fn same_as_generated(mut f: std::fs::File, seed: u64, len: u64) -> bool {
    use std::io::Read;
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return off == len;
        }
        if buf[..n] != generated(seed, off, off + n as u64)[..] {
            return false;
        }
        off += n as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aria2c_eight_connections_cold_then_warm() {
    let origin = TestOrigin::start().await;
    let len = 256u64 << 20;
    origin.put(
        "/iso",
        Object::generated(len, 256).header("etag", "\"iso\""),
    );
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.disk = Some("512MiB".into());
    let node = Strata::start(&cfg);
    let url = node.url("/iso");
    let dir = tempfile::tempdir().unwrap();

    let u = url.clone();
    let d = dir.path().to_path_buf();
    let f = tokio::task::spawn_blocking(move || aria2c(&u, &d))
        .await
        .unwrap();
    assert!(same_as_generated(f, 256, len), "cold download differs");
    let cold_requests = origin.hits("/iso");
    assert!(cold_requests >= 1);
    // aria2c splits what is left among idle connections as it goes, more often when the
    // machine is busy: each of its requests may start inside a slice another one is filling.
    let client_requests = requests(&node).await;

    std::fs::remove_file(dir.path().join("file.bin")).unwrap();
    let d = dir.path().to_path_buf();
    let f = tokio::task::spawn_blocking(move || aria2c(&url, &d))
        .await
        .unwrap();
    assert!(same_as_generated(f, 256, len), "warm download differs");
    assert_eq!(
        origin.hits("/iso"),
        cold_requests,
        "warm download must not reach the origin"
    );
    // One transfer of each slice, but for slices whose disk write was shed (a strong ETag
    // lets a shed slice be fetched again on its own; a slow device under a full test run
    // sheds some) and, at most one per client request, a slice where a request began inside
    // another's fill and missed it by a hair (a full run of the suite once sent 9 more
    // slices for 8 connections: aria2c had split the file further).
    let shed = node.metric("strata_disk_writes_shed_total").await as u64;
    assert!(
        origin.body_bytes() <= len + (shed + client_requests) * (1 << 20),
        "origin sent {} bytes, {shed} slice writes shed, {client_requests} client requests",
        origin.body_bytes()
    );
}

/// Requests the node has answered, every route and status.
async fn requests(node: &Strata) -> u64 {
    node.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("strata_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
