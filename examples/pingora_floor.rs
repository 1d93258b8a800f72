//! Pingora's floor: a `ProxyHttp` that answers every request from `request_filter` from
//! memory, on the listener settings Strata uses (one worker thread, a 16 KiB write buffer).
//! Nothing a cache can do per request is cheaper on Pingora, so its rate on the peer rig's
//! workloads is the ceiling of Strata's.
//!
//! - With no files, every request gets one fixed 8 KiB body: one buffer, always in the CPU's
//!   caches.
//! - Given a file, it holds that file's bytes and answers requests for its name (any
//!   directory) with them: the whole file, or the one range a `Range` header asks for (206),
//!   each a slice of the one buffer written without a copy. That is the ceiling of the rig's
//!   range workload, where Strata serves 1 MiB slices from its memory tier.
//! - Given a directory as well, it holds every file in it and answers `/DIR/NAME` with that
//!   file's bytes (the fixed body for any other path). That is the ceiling of the rig's hot
//!   workload as a cache meets it: each of a thousand objects its own buffer of its own size
//!   (4-16 KiB), a lookup by path, and bodies that are not all in the CPU's caches. Only the
//!   hot objects are held: the rig's check of other small objects (`/s/`) fails on it.
//!
//! ```text
//! cargo build --release --example pingora_floor
//! target/release/examples/pingora_floor 127.0.0.1:20109 \
//!     [/tmp/bench/origin/l/large-64m.bin [/tmp/bench/origin/h]]
//! ```
//! `scripts/bench --floor` runs it as the rig's candidate.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;
use strata::http::range::{self, RangeRequest};

// The allocator of Strata's binary, so that the floor's allocations cost what Strata's do. Not
// its options (`src/main.rs`): the floor holds one fixed body and frees nothing worth handing
// back, so jemalloc's defaults serve it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The body every request gets.
const BODY_LEN: usize = 8 * 1024;

/// Answers everything from memory; never proxies.
struct Floor {
    body: Bytes,
    /// A whole file and the last component of the paths that ask for it.
    file: Option<(String, Bytes)>,
    /// Small objects by their path (`/DIR/NAME`).
    objects: HashMap<String, Bytes>,
}

impl Floor {
    /// Answers a request for the held file: 200 with all of it, or 206 with its one range.
    async fn file(&self, session: &mut Session, data: &Bytes) -> Result<()> {
        let total = data.len() as u64;
        let asked = session
            .req_header()
            .headers
            .get("range")
            .map_or(RangeRequest::Full, |v| range::evaluate(v.as_bytes(), total));
        let (status, body, content_range) = match asked {
            RangeRequest::Full => (200, data.clone(), None),
            RangeRequest::Single(r) => {
                let (start, end) = (r.start as usize, r.end as usize);
                (206, data.slice(start..=end), Some(r.content_range(total)))
            }
            RangeRequest::Unsatisfiable => (416, Bytes::new(), Some(format!("bytes */{total}"))),
        };
        let mut h = ResponseHeader::build(status, Some(4))?;
        h.insert_header("content-length", body.len().to_string())?;
        h.insert_header("content-type", "application/octet-stream")?;
        h.insert_header("accept-ranges", "bytes")?;
        if let Some(cr) = content_range {
            h.insert_header("content-range", cr)?;
        }
        session.write_response_header(Box::new(h), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _: &mut ()) -> Result<bool> {
        if let Some((name, data)) = &self.file {
            if session.req_header().uri.path().rsplit('/').next() == Some(name.as_str()) {
                self.file(session, data).await?;
                return Ok(true);
            }
        }
        let body = self
            .objects
            .get(session.req_header().uri.path())
            .unwrap_or(&self.body)
            .clone();
        let mut h = ResponseHeader::build(200, Some(4))?;
        h.insert_header("content-length", body.len().to_string())?;
        h.insert_header("content-type", "application/octet-stream")?;
        h.insert_header("cache-control", "max-age=3600")?;
        session.write_response_header(Box::new(h), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        // request_filter answers every request: no request gets here.
        Error::e_explain(ErrorType::InternalError, "the floor never proxies")
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:20109".to_string());
    let file = match args.next() {
        None => None,
        Some(path) => match std::fs::read(&path) {
            Ok(data) => {
                let name = path.rsplit('/').next().unwrap_or(&path).to_string();
                Some((name, Bytes::from(data)))
            }
            Err(e) => {
                eprintln!("pingora_floor: cannot read {path}: {e}");
                std::process::exit(2);
            }
        },
    };
    let objects = args
        .next()
        .map_or_else(HashMap::new, |dir| objects_in(&dir));
    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let floor = Floor {
        body: Bytes::from(vec![b'x'; BODY_LEN]),
        file,
        objects,
    };
    let http = pingora::proxy::http_proxy(&server.configuration, floor);
    let mut svc = Service::new("pingora floor".to_string(), http);
    let buffers = L4BufferSettings::default().write(16 * 1024);
    svc.add_listener(ListenerConfig::tcp(listen).l4_buffer(buffers));
    server.add_service(svc);
    server.run_forever();
}

/// Every file in `dir`, by the path that asks for it (`/DIR/NAME`, DIR the directory's own
/// name); exits when the directory cannot be read.
fn objects_in(dir: &str) -> HashMap<String, Bytes> {
    let base = dir.trim_end_matches('/').rsplit('/').next().unwrap_or(dir);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pingora_floor: cannot read {dir}: {e}");
            std::process::exit(2);
        }
    };
    let mut objects = HashMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::read(&path) {
            Ok(data) => {
                let name = entry.file_name().to_string_lossy().into_owned();
                objects.insert(format!("/{base}/{name}"), Bytes::from(data));
            }
            Err(e) => eprintln!("pingora_floor: skipping {}: {e}", path.display()),
        }
    }
    objects
}
