//! The access log: one line per request at info level, target `access`, with fields (JSON with
//! `log.format: json`). `log.access: false` turns it off; a `log.level` filter such as
//! `info,access=off` does too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header;
use pingora::proxy::Session;

use crate::http::cache_status::CacheStatus;
use crate::proxy::access_line::AccessLine;

/// What the proxy notes about a request for its access line.
pub(crate) struct Timing {
    /// This node's id of the request.
    pub(crate) id: u64,
    /// When it arrived.
    pub(crate) started: Instant,
    /// When its response header left.
    pub(crate) first_byte: Option<Instant>,
    /// The origin's status, when the response came from the origin.
    pub(crate) origin_status: Option<u16>,
}

impl Timing {
    /// A request arriving now.
    pub(crate) fn start() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Timing {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            started: Instant::now(),
            first_byte: None,
            origin_status: None,
        }
    }

    /// Notes the response header leaving now (the first time only).
    pub(crate) fn first_byte(&mut self) {
        self.first_byte.get_or_insert_with(Instant::now);
    }
}

/// Writes the access line of a request that finished at `end`.
pub(crate) fn log(
    session: &Session,
    route: &str,
    cache: &CacheStatus,
    t: &Timing,
    end: Instant,
    error: Option<&str>,
) {
    let req = session.req_header();
    let us = |i: Instant| i.saturating_duration_since(t.started).as_micros() as u64;
    let cache = cache.header_value();
    AccessLine {
        request_id: t.id,
        client: session.client_addr().and_then(|a| a.as_inet()).copied(),
        method: req.method.as_str(),
        path: req.uri.path(),
        status: session.response_written().map_or(0, |r| r.status.as_u16()),
        bytes: session.body_bytes_sent(),
        duration_us: us(end),
        ttfb_us: t.first_byte.map(us),
        route,
        cache: &cache,
        origin_status: t.origin_status,
        user_agent: req
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        error,
    }
    .emit();
}
