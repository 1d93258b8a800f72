//! Hostile and broken clients: slowloris headers and silent connections are cut at
//! `limits.header_timeout`, idle keep-alive connections at `limits.idle_timeout`; a client that
//! stops reading costs no memory for the bytes it leaves unread and does not stall the others
//! sharing its fill; a fill that every client left is cancelled.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1 << 20;

fn node_with_timeouts(origin: &TestOrigin) -> Strata {
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.extra_top = "limits:\n  header_timeout: 1s\n  idle_timeout: 2s\n".into();
    Strata::start(&cfg)
}

/// Blocks until the server closes `s` (EOF or reset); how long that took. Panics after 20 s.
fn wait_closed(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return t.elapsed(),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the connection was still open after 20 s")
            }
            Err(_) => return t.elapsed(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_connections_are_cut_and_the_node_serves_on() {
    let origin = TestOrigin::start().await;
    origin.put("/ok", Object::new(random_bytes(10_000, 1)));
    let node = node_with_timeouts(&origin);
    let addr = node.addr;
    // 40 slowloris clients, each trickling its header a byte every 100 ms (each read is
    // quick: only a whole-header deadline stops them), and 10 that connect and say nothing.
    let loris: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let t = Instant::now();
                let header = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                for b in header.iter() {
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut rest = Vec::new();
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.read_to_end(&mut rest);
                (t.elapsed(), rest)
            })
        })
        .collect();
    let silent: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || wait_closed(&mut TcpStream::connect(addr).unwrap())))
        .collect();
    // Meanwhile, others are served.
    for _ in 0..20 {
        let (s, _, _) = get(&node.url("/ok")).await;
        assert_eq!(s, 200);
    }
    for l in loris {
        let (took, answer) = l.join().unwrap();
        // The header would take 7 s to send; the node cut it after about a second.
        assert!(took < Duration::from_secs(6), "a slowloris lasted {took:?}");
        assert!(
            !String::from_utf8_lossy(&answer).contains(" 200 "),
            "a slowloris was served"
        );
    }
    for s in silent {
        let took = s.join().unwrap();
        assert!(
            took < Duration::from_secs(6),
            "a silent connection lasted {took:?}"
        );
    }
    // An idle keep-alive connection, after one answered request, is closed at the idle
    // timeout.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    while got < 10_000 {
        got += s.read(&mut buf).unwrap();
    }
    let took = wait_closed(&mut s);
    assert!(
        took < Duration::from_secs(10),
        "an idle connection lasted {took:?}"
    );
    // And the node still serves; the cuts are counted.
    assert_eq!(get(&node.url("/ok")).await.0, 200);
    assert!(
        node.metric("strata_client_timeouts_total{kind=\"header\"}")
            .await
            >= 50.0
    );
    assert!(
        node.metric("strata_client_timeouts_total{kind=\"idle\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_no_memory_and_stalls_nobody() {
    let origin = TestOrigin::start().await;
    let len = 96 * MIB;
    origin.put(
        "/big",
        Object::generated(len, 33).header("etag", "\"big-1\""),
    );
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "8MiB".into();
    let node = Strata::start(&cfg);
    origin.put("/warm", Object::new(random_bytes(4096, 1)));
    get(&node.url("/warm")).await;
    let base = node.rss();
    // The stalled client: asks, reads a little, then nothing (its socket buffers fill up).
    let mut stalled = TcpStream::connect(node.addr).unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let _ = stalled.read(&mut buf).unwrap();
    // A client that leaves after 2 MiB, and one that reads everything.
    {
        let mut r = reqwest::get(node.url("/big")).await.unwrap();
        let mut n = 0;
        while n < 2 * MIB {
            n += r.chunk().await.unwrap().unwrap().len() as u64;
        }
    }
    let mut r = reqwest::get(node.url("/big")).await.unwrap();
    let mut n = 0u64;
    while let Some(c) = r.chunk().await.unwrap() {
        assert!(
            c == generated(33, n, n + c.len() as u64),
            "wrong bytes at {n}"
        );
        n += c.len() as u64;
    }
    assert_eq!(n, len, "the reading client was stalled or cut");
    // Slices the stalled fill had not reached are fetched for the reading client; nothing is
    // fetched twice over.
    let sent = origin.body_bytes();
    assert!(sent < len + 8 * MIB, "the origin sent {} MiB", sent >> 20);
    let growth = node.peak_rss().saturating_sub(base);
    assert!(
        growth < 48 * MIB,
        "RSS grew by {} MiB with {} MiB left unread",
        growth >> 20,
        len >> 20
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_every_client_left_is_cancelled() {
    let origin = TestOrigin::start().await;
    let len = 64 * MIB;
    let mut obj = Object::generated(len, 34);
    obj.chunk_delay = Duration::from_millis(2);
    origin.put("/left", obj);
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut r = reqwest::get(node.url("/left")).await.unwrap();
        let mut n = 0;
        while n < MIB {
            let c = r.chunk().await.unwrap().unwrap();
            assert!(c == generated(34, n, n + c.len() as u64));
            n += c.len() as u64;
        }
        clients.push(r);
    }
    drop(clients);
    assert!(
        origin.wait_abandoned(Duration::from_secs(10)).await,
        "the fill went on with nobody reading"
    );
    assert!(
        origin.body_bytes() < len / 2,
        "origin sent {}",
        origin.body_bytes()
    );
    assert_eq!(origin.hits("/left"), 1);
}
