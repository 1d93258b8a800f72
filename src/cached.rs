//! The cacheable path for GET and HEAD: hits served from the tiers, misses filled from the origin.
//!
//! Strata drives the origin fetch of a cacheable miss itself instead of through Pingora's
//! proxy phases: the body filters of `ProxyHttp` are synchronous, so they cannot wait for a
//! slice to reach the cache, and would have to either buffer without bound or drop fills under
//! load. Here every slice write is awaited, which throttles the origin read to the cache's
//! pace and keeps memory at one slice per fill.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use strata_storage::TieredCache;

use crate::cache_status::CacheStatus;
use crate::fill::SliceFill;
use crate::headers::{content_length, end_to_end};
use crate::metrics::Metrics;
use crate::object::{meta_key, object_id, ObjectMeta};
use crate::route::Route;
use crate::storable::storable;
use crate::upstream::Upstream;

/// What the cacheable path did with a request.
pub enum Outcome {
    /// A response was written; it carried this status.
    Served(CacheStatus),
    /// The request should be proxied as is, labelled with this forward reason.
    PassThrough(&'static str),
}

/// Hit and miss handling over the tiered cache.
pub struct CachedPath {
    /// The tiers.
    pub cache: Arc<TieredCache>,
    /// Connections to origins for fills.
    pub upstream: Upstream,
    /// `cache.slice`.
    pub slice_size: usize,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The key of an object: the origin URL it comes from.
pub fn cache_key(route: &Route, upstream_path: &str) -> String {
    let scheme = if route.origin.tls { "https" } else { "http" };
    format!("{scheme}://{}{upstream_path}", route.origin.host_header())
}

impl CachedPath {
    /// Serves a GET or HEAD from the cache or fills it from the origin.
    pub async fn handle(
        &self,
        session: &mut Session,
        route: &Route,
        upstream_path: &str,
    ) -> Result<Outcome> {
        let req = session.req_header();
        let is_head = req.method == Method::HEAD;
        let h = &req.headers;
        if h.contains_key(header::AUTHORIZATION) {
            return Ok(Outcome::PassThrough("bypass"));
        }
        let conditional = [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ]
        .iter()
        .any(|n| h.contains_key(n));
        let ranged = h.contains_key(header::RANGE);
        let key = cache_key(route, upstream_path);

        if let Some(meta) = self.lookup(&key).await {
            if conditional {
                return Ok(Outcome::PassThrough("request"));
            }
            // A Range header may be ignored (RFC 9110 §14.2): the full object is sent.
            if self.serve_hit(session, route, &key, &meta, is_head).await? {
                return Ok(Outcome::Served(CacheStatus::hit()));
            }
        }
        if is_head || ranged || conditional {
            return Ok(Outcome::PassThrough("miss"));
        }
        self.fill(session, route, upstream_path, &key).await
    }

    async fn lookup(&self, key: &str) -> Option<ObjectMeta> {
        let mk = meta_key(key);
        let raw = self.cache.get(&mk).await?;
        let meta = ObjectMeta::decode(&raw);
        if meta.is_none() {
            let _ = self.cache.remove(&mk).await;
        }
        meta
    }

    /// Writes a stored object; `Ok(false)` when it turned out incomplete before anything was sent.
    async fn serve_hit(
        &self,
        session: &mut Session,
        route: &Route,
        key: &str,
        meta: &ObjectMeta,
        is_head: bool,
    ) -> Result<bool> {
        let n = meta.slice_count();
        if (0..n).any(|i| !self.cache.contains(&meta.slice_key(i))) {
            let _ = self.cache.remove(&meta_key(key)).await;
            return Ok(false);
        }
        // Read the first slice before committing to a hit, so a lost or corrupt one is a miss.
        let first = if n > 0 && !is_head {
            match self.read_slice(meta, 0).await {
                Some(v) => Some(v),
                None => {
                    let _ = self.cache.remove(&meta_key(key)).await;
                    return Ok(false);
                }
            }
        } else {
            None
        };
        let mut resp = ResponseHeader::build(meta.status, Some(meta.headers.len() + 3))?;
        for (name, value) in &meta.headers {
            resp.append_header(name.clone(), value.as_slice())?;
        }
        resp.insert_header(header::CONTENT_LENGTH, meta.length)?;
        resp.insert_header("cache-status", CacheStatus::hit().header_value())?;
        session
            .write_response_header(Box::new(resp), is_head || n == 0)
            .await?;
        let Some(first) = first else { return Ok(true) };
        let served = |len: usize| {
            self.metrics
                .bytes_served
                .with_label_values(&[&route.name, "cache"])
                .inc_by(len as u64)
        };
        served(first.len());
        session.write_response_body(Some(first), n == 1).await?;
        for i in 1..n {
            let Some(v) = self.read_slice(meta, i).await else {
                // Headers are out: the only honest answer left is to cut the connection short.
                let _ = self.cache.remove(&meta_key(key)).await;
                return Error::e_explain(
                    ErrorType::InternalError,
                    "cached slice lost while serving; connection aborted",
                );
            };
            served(v.len());
            session.write_response_body(Some(v), i + 1 == n).await?;
        }
        Ok(true)
    }

    async fn read_slice(&self, meta: &ObjectMeta, idx: u64) -> Option<Bytes> {
        let v = self.cache.get(&meta.slice_key(idx)).await?;
        (v.len() as u64 == meta.slice_len(idx)).then_some(v)
    }

    /// Fetches from the origin, streaming to the client while storing slices.
    async fn fill(
        &self,
        session: &mut Session,
        route: &Route,
        upstream_path: &str,
        key: &str,
    ) -> Result<Outcome> {
        let client_req = session.req_header();
        let mut up = RequestHeader::build(Method::GET, upstream_path.as_bytes(), None)?;
        for (name, value) in end_to_end(&client_req.headers) {
            if name != header::HOST {
                up.append_header(name, value)?;
            }
        }
        up.insert_header(header::HOST, route.origin.host_header())?;
        let client_headers = client_req.headers.clone();

        self.metrics
            .origin_requests
            .with_label_values(&[&route.name])
            .inc();
        let mut origin = match self.upstream.send(route, &up).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(route = %route.name, error = %e, "origin request failed");
                let mut status = CacheStatus::fwd("miss");
                status.detail = Some("origin-unreachable".into());
                respond_error(session, StatusCode::BAD_GATEWAY, &status, &e.to_string()).await?;
                return Ok(Outcome::Served(status));
            }
        };
        let oh = &origin.header;
        let verdict = storable(&Method::GET, &client_headers, oh.status, &oh.headers);
        let length = content_length(&oh.headers);
        let stored_headers: Vec<(String, Vec<u8>)> = end_to_end(&oh.headers)
            .into_iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        let mut status = CacheStatus::fwd("miss");
        match verdict {
            Ok(()) => status.stored = true,
            Err(why) => status.detail = Some(why.to_string()),
        }
        let resp = downstream_header(oh.status, &oh.headers, length, &status)?;
        let no_body = oh.status == StatusCode::NO_CONTENT || oh.status == StatusCode::NOT_MODIFIED;
        let mut fill = verdict.is_ok().then(|| {
            let etag = oh.headers.get(header::ETAG).map(|v| v.as_bytes());
            let lm = oh.headers.get(header::LAST_MODIFIED).map(|v| v.as_bytes());
            let id = object_id(key, etag, lm, length);
            PendingFill {
                fill: SliceFill::new(self.cache.clone(), id, self.slice_size),
                meta: ObjectMeta {
                    status: oh.status.as_u16(),
                    headers: stored_headers,
                    length: length.unwrap_or(0),
                    slice_size: self.slice_size as u32,
                    id,
                    stored_at: now_secs(),
                },
            }
        });
        session
            .write_response_header(Box::new(resp), no_body || length == Some(0))
            .await?;
        let mut received = 0u64;
        let mut ended = no_body || length == Some(0);
        if ended {
            if let Some(p) = fill.take() {
                self.commit(route, key, p, 0).await;
            }
        }
        while !ended {
            match origin.read_body().await {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    self.metrics
                        .bytes_served
                        .with_label_values(&[&route.name, "origin"])
                        .inc_by(chunk.len() as u64);
                    // The slice is stored before the client gets its bytes, and the object is
                    // committed before the client gets the last byte: a client that has read
                    // the whole body will find it cached.
                    if let Some(p) = fill.as_mut() {
                        p.fill.push(chunk.clone()).await;
                    }
                    ended = length == Some(received);
                    if ended {
                        if let Some(p) = fill.take() {
                            self.commit(route, key, p, received).await;
                        }
                    }
                    if let Err(e) = session.write_response_body(Some(chunk), ended).await {
                        // The client left: this fill has no reader, so it stops here.
                        self.metrics.fills.with_label_values(&["aborted"]).inc();
                        return Err(e);
                    }
                }
                Ok(None) => {
                    if let Some(p) = fill.take() {
                        self.commit(route, key, p, received).await;
                    }
                    session.write_response_body(None, true).await?;
                    ended = true;
                }
                Err(e) => {
                    tracing::warn!(route = %route.name, error = %e, received, "origin body failed");
                    if fill.is_some() {
                        self.metrics.fills.with_label_values(&["incomplete"]).inc();
                    }
                    return Error::e_explain(ErrorType::ReadError, "origin body broke off");
                }
            }
        }
        self.upstream.release(origin).await;
        Ok(Outcome::Served(status))
    }
}

/// A fill in progress and the record it will commit.
struct PendingFill {
    fill: SliceFill,
    meta: ObjectMeta,
}

impl CachedPath {
    /// Stores the last slice and the metadata record, if the body arrived complete.
    async fn commit(&self, route: &Route, key: &str, mut p: PendingFill, received: u64) {
        if p.meta.length == 0 {
            // No Content-Length: the body's length is what arrived before a clean end.
            p.meta.length = received;
        }
        match p.fill.finish(key, &p.meta).await {
            Ok(()) => self.metrics.fills.with_label_values(&["stored"]).inc(),
            Err(e) => {
                tracing::warn!(route = %route.name, key, error = %e, "not cached");
                self.metrics.fills.with_label_values(&["store_error"]).inc();
            }
        }
    }
}

fn downstream_header(
    status: StatusCode,
    origin: &HeaderMap,
    length: Option<u64>,
    cs: &CacheStatus,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(origin.len() + 2))?;
    for (name, value) in end_to_end(origin) {
        resp.append_header(name, value)?;
    }
    match length {
        Some(len) => resp.insert_header(header::CONTENT_LENGTH, len)?,
        None => resp.insert_header(header::TRANSFER_ENCODING, "chunked")?,
    }
    resp.insert_header("cache-status", cs.header_value())?;
    Ok(resp)
}

/// Writes a small plain-text error response carrying `Cache-Status`.
pub async fn respond_error(
    session: &mut Session,
    code: StatusCode,
    cs: &CacheStatus,
    message: &str,
) -> Result<()> {
    let body = Bytes::from(format!("strata: {message}\n"));
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header("cache-status", cs.header_value())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
