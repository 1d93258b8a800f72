//! Binary upgrade: a new process started with `--upgrade` takes over the listening sockets;
//! SIGQUIT makes the old one hand them over, finish the download in flight and exit; new
//! connections reach the new process, which serves from the cache the old one filled; on a
//! cache file (locked by the old node) and on a raw block device (held by it with O_EXCL).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The pid the node answering on the admin port reports.
async fn serving_pid(node: &Strata) -> Option<u64> {
    let r = reqwest::get(format!("http://{}/stats", node.admin))
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
    v["pid"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_takes_over_without_dropping_a_download() {
    takes_over(tempfile::tempdir().unwrap()).await;
}

/// The same on a loop device (as root): the new node waits while the old one holds the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_takes_over_a_block_device() {
    let backing_dir = tempfile::tempdir().unwrap();
    let dev = match loopdev::Loop::blank(backing_dir.path(), 64 << 20) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED block device upgrade: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // The node's cache path (`cache.img`, relative to its directory) is the device.
    std::os::unix::fs::symlink(&dev.0, dir.path().join("cache.img")).unwrap();
    takes_over(dir).await;
}

/// Starts a node in `dir`, upgrades it in the middle of a download, and checks the handover.
async fn takes_over(dir: tempfile::TempDir) {
    let origin = TestOrigin::start().await;
    let len = 16u64 << 20;
    let mut slow = Object::generated(len, 21);
    // About two seconds of transfer: the upgrade happens in the middle of it.
    slow.chunk_delay = Duration::from_millis(8);
    origin.put("/slow", slow);
    origin.put("/small", Object::new("small"));
    let mut cfg = NodeConfig::new(&origin.url());
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("upgrade.sock");
    cfg.extra_top = format!("upgrade_socket: {}\n", sock.display());
    let mut old = Strata::start_in(&cfg, dir);
    let old_pid = u64::from(old.child.id());
    assert_eq!(serving_pid(&old).await, Some(old_pid));
    assert_eq!(
        get(&old.url("/small")).await.1,
        "strata; fwd=uri-miss; stored"
    );

    let url = old.url("/slow");
    let download = tokio::spawn(async move {
        let r = reqwest::get(url).await.unwrap();
        r.bytes().await.unwrap()
    });
    origin.wait_hits("/slow", 1, Duration::from_secs(10)).await;

    // The new binary, on the same configuration, waits for the sockets.
    let conf = old.dir.path().join("strata.yaml");
    let log = old.dir.path().join("new.log");
    let mut new = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["run", "--upgrade", "--config"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the new binary never waited for the sockets"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SAFETY: kill(2) on the pid of the child this test started.
    unsafe { libc::kill(old.pid(), libc::SIGQUIT) };

    // The download in flight completes, byte for byte, from the old process.
    let body = download.await.unwrap();
    assert!(
        body == generated(21, 0, len),
        "the download was cut or corrupted"
    );

    // New connections reach the new process, which serves what the old one cached.
    let new_pid = u64::from(new.id());
    let deadline = Instant::now() + Duration::from_secs(40);
    while serving_pid(&old).await != Some(new_pid) {
        assert!(
            Instant::now() < deadline,
            "the new process never answered: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&old.url("/small")).await.1, "strata; hit");
    assert_eq!(origin.hits("/small"), 1);
    let status = old.child.wait().unwrap();
    assert!(status.success(), "the old process ended with {status}");
    let _ = new.kill();
    let _ = new.wait();
}
