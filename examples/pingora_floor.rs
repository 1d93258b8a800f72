//! Pingora's floor for hot hits: a `ProxyHttp` that answers every request from
//! `request_filter` with one fixed 8 KiB body, on the listener settings Strata uses (one
//! worker thread, a 16 KiB write buffer). Nothing a cache can do per request is cheaper on
//! Pingora, so its rate on the peer rig's hot workload is the ceiling of Strata's.
//!
//! ```text
//! cargo build --release --example pingora_floor
//! target/release/examples/pingora_floor 127.0.0.1:20109
//! ```
//! `scripts/bench --floor` runs it as the rig's candidate.

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;

/// The body every request gets.
const BODY_LEN: usize = 8 * 1024;

/// Answers everything with the same body; never proxies.
struct Floor {
    body: Bytes,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _: &mut ()) -> Result<bool> {
        let mut h = ResponseHeader::build(200, Some(4))?;
        h.insert_header("content-length", self.body.len().to_string())?;
        h.insert_header("content-type", "application/octet-stream")?;
        h.insert_header("cache-control", "max-age=3600")?;
        session.write_response_header(Box::new(h), false).await?;
        session
            .write_response_body(Some(self.body.clone()), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        // request_filter answers every request: no request gets here.
        Error::e_explain(ErrorType::InternalError, "the floor never proxies")
    }
}

fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:20109".to_string());
    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let floor = Floor {
        body: Bytes::from(vec![b'x'; BODY_LEN]),
    };
    let http = pingora::proxy::http_proxy(&server.configuration, floor);
    let mut svc = Service::new("pingora floor".to_string(), http);
    let buffers = L4BufferSettings::default().write(16 * 1024);
    svc.add_listener(ListenerConfig::tcp(listen).l4_buffer(buffers));
    server.add_service(svc);
    server.run_forever();
}
