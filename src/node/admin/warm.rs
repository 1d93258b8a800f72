//! `POST /warm`: a list of paths (one per line) fetched in the background through the node's
//! own listener, a bounded number at a time, so each is routed, keyed and stored exactly as a
//! client's request would be; `GET /warm` shows the progress.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::node::admin::{error, json as reply};

/// Largest list accepted in one request.
const MAX_LIST_BYTES: usize = 16 << 20;
/// Fetches at once unless `?concurrency=` says otherwise, and the most it may say.
const DEFAULT_CONCURRENCY: usize = 4;
const MAX_CONCURRENCY: usize = 64;
/// Longest a single fetch may take (a large object from a slow origin).
const FETCH_TIMEOUT: Duration = Duration::from_secs(3600);

/// Warming: where to send the requests, and how far it has come.
pub(crate) struct Warmer {
    /// The node's own listener, as reachable from this host.
    target: SocketAddr,
    queued: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Warmer {
    /// A warmer sending its requests to the public listener `listen`.
    pub(crate) fn new(listen: SocketAddr, metrics: Arc<Metrics>) -> Warmer {
        Warmer {
            target: crate::config::local_address(listen),
            queued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            metrics,
        }
    }

    /// The progress of every list given so far, as JSON.
    pub(crate) fn counts(&self) -> serde_json::Value {
        let (q, d, f) = (
            self.queued.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        json!({ "queued": q, "done": d, "failed": f, "pending": q.saturating_sub(d + f) })
    }

    /// `GET /warm`: the progress.
    pub(crate) fn progress(&self) -> Response<Vec<u8>> {
        reply(StatusCode::OK, &self.counts())
    }

    /// Takes a list and starts warming it.
    pub(crate) async fn start(self: &Arc<Self>, session: &mut ServerSession) -> Response<Vec<u8>> {
        let query = session.req_header().uri.query().unwrap_or("");
        let concurrency = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "concurrency")
            .map(|(_, v)| v.parse::<usize>());
        let concurrency = match concurrency {
            None => DEFAULT_CONCURRENCY,
            Some(Ok(n)) if (1..=MAX_CONCURRENCY).contains(&n) => n,
            Some(_) => {
                let why = format!("concurrency must be 1..={MAX_CONCURRENCY}");
                return error(StatusCode::BAD_REQUEST, &why);
            }
        };
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_LIST_BYTES => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, "list too long"),
                Ok(None) => break,
                Err(_) => return error(StatusCode::BAD_REQUEST, "list not readable"),
            }
        }
        let Ok(text) = String::from_utf8(body) else {
            return error(StatusCode::BAD_REQUEST, "the list is not UTF-8");
        };
        let mut paths = Vec::new();
        for (n, line) in text.lines().map(str::trim).enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // A request target only: no scheme or host, nothing that could split the request.
            if !line.starts_with('/') || line.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
                let why = format!("line {}: `{line}` is not a path", n + 1);
                return error(StatusCode::BAD_REQUEST, &why);
            }
            paths.push(line.to_string());
        }
        let count = paths.len() as u64;
        self.queued.fetch_add(count, Ordering::Relaxed);
        let me = self.clone();
        tokio::spawn(async move { me.run(paths, concurrency).await });
        tracing::info!(paths = count, concurrency, "warming");
        reply(
            StatusCode::ACCEPTED,
            &json!({ "queued": count, "concurrency": concurrency }),
        )
    }

    async fn run(self: Arc<Self>, paths: Vec<String>, concurrency: usize) {
        let slots = Arc::new(Semaphore::new(concurrency));
        for path in paths {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(FETCH_TIMEOUT, fetch(me.target, &path)).await;
                match outcome {
                    Ok(Ok(status)) if status < 400 => {
                        me.done.fetch_add(1, Ordering::Relaxed);
                        me.metrics.warm("ok");
                    }
                    other => {
                        let why = match other {
                            Ok(Ok(status)) => format!("status {status}"),
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "timed out".into(),
                        };
                        tracing::warn!(path, reason = %why, "warming failed");
                        me.failed.fetch_add(1, Ordering::Relaxed);
                        me.metrics.warm("failed");
                    }
                }
                drop(slot);
            });
        }
    }
}

/// GETs `path` from the node's listener, reading the whole body (so the fill completes);
/// returns the status.
async fn fetch(target: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect(target).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: strata-warm\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    // "HTTP/1.1 200 ..."
    let status = std::str::from_utf8(&head[..got])
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    tokio::io::copy(&mut s, &mut tokio::io::sink()).await?;
    Ok(status)
}
