//! Bytes an origin sends reach the client as they come: a response fed by a slow origin is
//! not held back until the connection's write buffer fills or the body ends. Each case runs
//! an origin that sends its header and the first piece of a body of known length, then waits
//! for the test to see that piece at the client before it sends the rest.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// The body the origin announces, and how much of it it sends before waiting.
const BODY: usize = 1000;
const FIRST: usize = 100;

/// An origin on a raw socket that answers every request with `headers` and a body of `BODY`
/// bytes, sending the first `FIRST` at once and the rest when the gate opens (or is dropped).
fn gated_origin(headers: &'static str) -> (SocketAddr, mpsc::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (open, gate) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let body: Vec<u8> = (0..BODY).map(|i| b'a' + (i % 26) as u8).collect();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n{headers}\r\n");
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body[..FIRST]);
            let _ = gate.recv();
            let _ = s.write_all(&body[FIRST..]);
            let _ = s.read(&mut buf);
        }
    });
    (addr, open)
}

/// Sends `request` and reads until the response's header and `FIRST` body bytes are in; then
/// opens the gate and reads the rest. Returns the header and the whole body.
fn first_bytes_then_rest(
    node: SocketAddr,
    request: &str,
    open: &mpsc::Sender<()>,
) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(node).expect("connect");
    // A bound on a failure (the first bytes never coming), not a measurement.
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let split = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= at + 4 + FIRST {
                break at + 4;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "closed before the first bytes: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "the origin's first {FIRST} bytes were held back ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    };
    open.send(()).expect("origin waiting");
    while got.len() < split + BODY {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("rest of the body: {e}"),
        }
    }
    let header = String::from_utf8_lossy(&got[..split]).into_owned();
    (header, got[split..].to_vec())
}

fn expected_body() -> Vec<u8> {
    (0..BODY).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A cacheable miss (stored as slices while it streams), an uncacheable GET (forwarded) and a
/// POST (passed through): the first bytes reach the client while the origin still holds
/// the rest back, and the whole body is right.
#[test]
fn a_slow_origin_streams_to_the_client() {
    for (headers, method, what) in [
        (
            "Cache-Control: max-age=60\r\nETag: \"s\"\r\n",
            "GET",
            "cacheable miss",
        ),
        ("Cache-Control: no-store\r\n", "GET", "forwarded"),
        ("Cache-Control: no-store\r\n", "POST", "passed through"),
    ] {
        let (origin, open) = gated_origin(headers);
        let node = Strata::start(&NodeConfig::new(&format!("http://{origin}/")));
        let body = if method == "POST" {
            "Content-Length: 0\r\n"
        } else {
            ""
        };
        let request =
            format!("{method} /slow HTTP/1.1\r\nHost: x\r\n{body}Connection: close\r\n\r\n");
        let (header, got) = first_bytes_then_rest(node.addr, &request, &open);
        assert!(header.starts_with("HTTP/1.1 200"), "{what}: {header}");
        assert_eq!(got, expected_body(), "{what}: body");
    }
}

/// A hit is not pushed: its header and a small body leave in one send, so the client reads
/// them in one piece (the node answers a miss first, which stores the object).
#[test]
fn a_hit_after_a_streamed_miss_is_whole() {
    let (origin, open) = gated_origin("Cache-Control: max-age=600\r\nETag: \"h\"\r\n");
    let node = Strata::start(&NodeConfig::new(&format!("http://{origin}/")));
    let get = "GET /h HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = TcpStream::connect(node.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(get.as_bytes()).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") || got.len() < FIRST {
        let n = s.read(&mut buf).expect("first bytes of the miss");
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }
    open.send(()).expect("origin waiting");
    let split = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header")
        + 4;
    while got.len() < split + BODY {
        let n = s.read(&mut buf).expect("rest of the miss");
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got[split..], &expected_body()[..]);
    // The same connection: the next response must not be pushed piece by piece.
    s.write_all(get.as_bytes()).expect("send again");
    let n = s.read(&mut buf).expect("the hit");
    let hit = &buf[..n];
    let text = String::from_utf8_lossy(hit);
    assert!(
        text.to_ascii_lowercase().contains("; hit"),
        "not a hit: {text}"
    );
    let split = hit
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header in the first read")
        + 4;
    assert_eq!(
        &hit[split..],
        &expected_body()[..],
        "the hit's body came with its header"
    );
}
