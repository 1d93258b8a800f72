//! The admin listener (`admin.listen`): health and readiness for load balancers, and, behind
//! the optional bearer token (`admin.token`), metrics, stats and the operator's commands.
//!
//! - [`purge`]: `POST /purge?path=|prefix=|tag=`, rules recorded at once and kept.
//! - [`stats`]: `GET /stats`, the node at a glance as JSON.
//! - [`warm`]: `POST /warm` (a list of paths fetched in the background), `GET /warm`.
//! - `GET /inspect?path=P`: what is stored for a path, and in which tier.
//! - [`failpoints`] (feature `failpoints` only): faults switched on and off in a running node.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use strata_storage::TieredCache;

use crate::cache::coalesce::Coalescer;
use crate::cache::purge::Purges;
use crate::metrics::{Metrics, Snapshot};
use crate::proxy::{Drain, Live};

#[cfg(feature = "failpoints")]
mod failpoints;
mod purge;
mod stats;
mod warm;

pub(crate) use warm::Warmer;

/// Serves the admin API.
pub(crate) struct AdminApp {
    /// The tiers, for stats.
    pub(crate) cache: Arc<TieredCache>,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
    /// Readiness turns false while draining.
    pub(crate) drain: Arc<Drain>,
    /// The routes in force (purges name paths, stored under their routes' keys).
    pub(crate) live: Live,
    /// Purge rules.
    pub(crate) purges: Arc<Purges>,
    /// Fills in flight.
    pub(crate) fills: Arc<Coalescer>,
    /// Warming lists.
    pub(crate) warmer: Arc<Warmer>,
    /// `admin.token`: what `Authorization: Bearer` must carry, if set.
    pub(crate) token: Option<String>,
    /// The public listener, whose connections `/metrics` counts.
    pub(crate) listen: std::net::SocketAddr,
}

/// Established TCP connections whose local port is `port` (the public listener's), read from
/// the kernel's socket tables; `None` where they cannot be read.
fn open_connections(port: u16) -> Option<u64> {
    let mut n = 0u64;
    let mut read_any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        for line in text.lines().skip(1) {
            let mut f = line.split_whitespace();
            // sl, local_address (ADDR:PORT in hex), rem_address, st (01: established)
            let (Some(_), Some(local), Some(_), Some(state)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if state == "01" && local_port == Some(port) {
                n += 1;
            }
        }
    }
    read_any.then_some(n)
}

/// A response with a body of `content_type`.
pub(crate) fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

/// A JSON error `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Compares without stopping at the first difference: the time taken tells nothing of how
/// much of a guessed token was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AdminApp {
    /// Whether the request carries the admin token (always, when none is configured).
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same_secret(given.trim().as_bytes(), token.as_bytes()))
    }
}

impl AdminApp {
    /// `GET /inspect?path=P`: the stored record of a client path (404 when none).
    async fn inspect(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let query = session.req_header().uri.query().unwrap_or("");
        let Some(path) = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "path")
            .map(|(_, v)| v.into_owned())
        else {
            return error(StatusCode::BAD_REQUEST, "give path=");
        };
        let host = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "host")
            .and_then(|(_, h)| crate::routing::host::normalize(&h));
        let key = match purge::path_key(&self.live.router.load(), host.as_deref(), &path) {
            Ok(k) => k,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        };
        match crate::cache::inspect::stored(&self.cache, &key).await {
            Some(v) => json(StatusCode::OK, &v),
            None => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "key": key, "stored": null }),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let text = "text/plain; charset=utf-8";
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        match path.as_str() {
            "/health" => return reply(StatusCode::OK, text, b"ok\n".to_vec()),
            "/ready" if self.drain.is_draining() => {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    text,
                    b"draining\n".to_vec(),
                )
            }
            "/ready" => return reply(StatusCode::OK, text, b"ready\n".to_vec()),
            _ => {}
        }
        if !self.authorized(session) {
            let mut r = error(StatusCode::UNAUTHORIZED, "admin token required");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                let now = Snapshot {
                    storage: self.cache.stats(),
                    in_flight: self.drain.in_flight(),
                    connections: open_connections(self.listen.port()),
                };
                let body = self.metrics.render(&now);
                reply(StatusCode::OK, "text/plain; version=0.0.4", body)
            }
            (Method::GET, "/stats") => stats::handle(self),
            (Method::POST, "/purge") => purge::handle(self, session).await,
            (Method::POST, "/warm") => self.warmer.start(session).await,
            (Method::GET, "/warm") => self.warmer.progress(),
            (Method::GET, "/inspect") => self.inspect(session).await,
            #[cfg(feature = "failpoints")]
            (method, "/failpoints") => failpoints::handle(&method, session),
            (_, "/metrics" | "/stats" | "/purge" | "/warm" | "/inspect") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }
}
