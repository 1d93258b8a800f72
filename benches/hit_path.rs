//! The hit path, in process: a node started in this process from a configuration (one worker
//! thread, memory tier only), and one keep-alive client connection on loopback sending request
//! bytes and reading response bytes. Each iteration is one whole exchange: request parsed,
//! routed, looked up, the stored record decoded, the response header built and written, the
//! body written. The origin is asked once, for the warm-up.
//!
//! ```text
//! cargo bench --bench hit_path
//! ```
//! The figure includes the loopback round trip (both ends in this process); compare runs of
//! one machine with each other, never with another machine's.
// criterion's group and main macros define undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Body sizes of the stored objects: a small hot object, and a 64 KiB range of a large one.
const SMALL: usize = 8 * 1024;
const LARGE: usize = 4 << 20;

/// An origin answering GET `/large…` with `large` and any other path with `small`
/// (honouring a `Range` from a byte on), on its own thread; its address.
fn origin(small: &'static [u8], large: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let addr = l.local_addr().expect("origin address");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || serve_origin(s, small, large));
        }
    });
    addr
}

fn serve_origin(s: TcpStream, small: &[u8], large: &[u8]) {
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut w = s;
    loop {
        let mut start = None;
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let body = if line.starts_with("GET /large") {
            large
        } else {
            small
        };
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("range: bytes=") {
                start = v
                    .split('-')
                    .next()
                    .and_then(|n| n.trim().parse::<usize>().ok());
            }
        }
        let from = start.unwrap_or(0).min(body.len());
        let part = &body[from..];
        let head = match start {
            Some(_) => format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{}\r\n",
                body.len() - 1,
                body.len()
            ),
            None => "HTTP/1.1 200 OK\r\n".to_string(),
        };
        let head = format!(
            "{head}Content-Length: {}\r\nCache-Control: public, max-age=86400\r\nETag: \"bench\"\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\nContent-Type: application/octet-stream\r\n\r\n",
            part.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(part).is_err() {
            return;
        }
    }
}

/// Starts a node on a free port in front of `origin`; its listen address.
fn node(origin: SocketAddr, dir: &std::path::Path) -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let path: PathBuf = dir.join("strata.yaml");
    let yaml = format!(
        "listen: {listen}\nthreads: 1\nlog:\n  level: error\n  access: false\ncache:\n  memory: 64MiB\n  slice: 1MiB\nroutes:\n  - name: bench\n    path_prefix: /\n    origin: http://{origin}/\n"
    );
    std::fs::write(&path, yaml).expect("write the configuration");
    std::thread::spawn(move || strata::cli::run(&path, false));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "the node did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    listen
}

/// One keep-alive client connection.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    body: Vec<u8>,
}

impl Client {
    fn connect(to: SocketAddr) -> Client {
        let s = TcpStream::connect(to).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Client {
            r: BufReader::with_capacity(256 * 1024, s.try_clone().expect("clone")),
            w: s,
            body: Vec::with_capacity(LARGE),
        }
    }

    /// Sends `req` and reads the whole response; its status and body length.
    fn exchange(&mut self, req: &[u8]) -> (u16, usize) {
        self.w.write_all(req).expect("send");
        let mut line = String::new();
        self.r.read_line(&mut line).expect("status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().expect("a length");
            }
        }
        self.body.resize(len, 0);
        self.r.read_exact(&mut self.body).expect("body");
        (status, len)
    }
}

fn hits(c: &mut Criterion) {
    let small: &'static [u8] = Box::leak(vec![7u8; SMALL].into_boxed_slice());
    let large: &'static [u8] = Box::leak(
        (0..LARGE)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let dir = tempfile::tempdir().expect("scratch dir");
    let node = node(origin(small, large), dir.path());

    let mut g = c.benchmark_group("hit");
    g.throughput(Throughput::Elements(1));
    let mut client = Client::connect(node);
    let req = b"GET /hot.bin HTTP/1.1\r\nHost: bench\r\n\r\n";
    // The first request fills the cache; every later one is a hit.
    assert_eq!(client.exchange(req), (200, SMALL));
    g.bench_function("small_8k", |b| b.iter(|| black_box(client.exchange(req))));

    assert_eq!(
        client.exchange(b"GET /large.bin HTTP/1.1\r\nHost: bench\r\n\r\n"),
        (200, LARGE)
    );
    let req = b"GET /large.bin HTTP/1.1\r\nHost: bench\r\nRange: bytes=1500000-1565535\r\n\r\n";
    g.bench_function("range_64k", |b| b.iter(|| black_box(client.exchange(req))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = hits
}
criterion_main!(benches);
