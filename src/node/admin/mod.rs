//! The admin listener: health, readiness, metrics and storage stats.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use strata_storage::TieredCache;

use crate::metrics::Metrics;
use crate::proxy::Drain;

/// Serves `/health`, `/ready`, `/metrics` and `/stats`.
pub(crate) struct AdminApp {
    /// The tiers, for stats.
    pub(crate) cache: Arc<TieredCache>,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
    /// Readiness turns false while draining.
    pub(crate) drain: Arc<Drain>,
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let text = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/health" => reply(StatusCode::OK, text, b"ok\n".to_vec()),
            "/ready" if self.drain.is_draining() => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                text,
                b"draining\n".to_vec(),
            ),
            "/ready" => reply(StatusCode::OK, text, b"ready\n".to_vec()),
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(&self.cache.stats()),
            ),
            "/stats" => {
                let s = self.cache.stats();
                let body = format!("{s:#?}\n").into_bytes();
                reply(StatusCode::OK, text, body)
            }
            _ => reply(StatusCode::NOT_FOUND, text, b"not found\n".to_vec()),
        }
    }
}
