//! Under systemd (`Type=notify`): the node says READY=1 once it serves, RELOADING=1 and
//! READY=1 around a SIGHUP reload, and STOPPING=1 when SIGTERM starts its drain. (Its own test
//! binary: it sets NOTIFY_SOCKET for the nodes it starts.)

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;

/// The next notification, waiting at most 10 s.
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_and_stopping_reach_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::env::set_var("NOTIFY_SOCKET", &path);
    let origin = TestOrigin::start().await;
    let mut node = Strata::start(&NodeConfig::new(&origin.url()));
    assert_eq!(next(&sock), "READY=1");
    // SAFETY: kill(2) on the pid of the child this test started.
    unsafe { libc::kill(node.pid(), libc::SIGHUP) };
    assert_eq!(next(&sock), "RELOADING=1");
    assert_eq!(next(&sock), "READY=1");
    node.terminate();
    assert_eq!(next(&sock), "STOPPING=1");
}
