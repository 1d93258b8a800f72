//! The cacheable path for GET and HEAD: objects served from slices, misses filled from origins.
//!
//! Strata drives origin fetches of cacheable requests itself rather than through Pingora's
//! proxy phases: the body filters of `ProxyHttp` are synchronous, so they cannot wait for a
//! slice to reach the cache, and a slice-aware fetch needs to choose its own ranges, share one
//! fetch between clients and stitch cached and fetched slices into one response.
//!
//! A request for an unknown object *discovers* it: one leader asks the origin (from the
//! slice boundary at or before the wanted range), describes the object in the cache as soon
//! as the response header arrives, and hands the body to a slice fill; clients asking for the
//! same object meanwhile wait for that description and then read the same fill.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use strata_storage::TieredCache;

use crate::cache_status::CacheStatus;
use crate::coalesce::{wait_discovery, Coalescer, Discovery, Interest, Role, Step};
use crate::fill::SliceFill;
use crate::headers::{content_length, end_to_end};
use crate::metrics::Metrics;
use crate::object::{meta_key, object_id, ObjectMeta};
use crate::range::{
    self, if_range_matches, parse_content_range, ByteRange, RangeHint, RangeRequest,
};
use crate::route::Route;
use crate::slicefetch::RunFill;
use crate::storable::storable;
use crate::upstream::{OriginResponse, Upstream};

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
    pub upstream: Arc<Upstream>,
    /// Fills in flight.
    pub coalescer: Arc<Coalescer>,
    /// `cache.slice`.
    pub slice_size: u64,
    /// `cache.lock_timeout`: how long a waiting client tolerates a fill without progress.
    pub lock_timeout: Duration,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The key of an object: the origin URL it comes from.
pub fn cache_key(route: &Route, upstream_path: &str) -> String {
    let scheme = if route.origin.tls { "https" } else { "http" };
    format!("{scheme}://{}{upstream_path}", route.origin.host_header())
}

/// The request facts the cacheable path decides on.
struct Ask {
    is_head: bool,
    range: Option<Bytes>,
    if_range: Option<Bytes>,
    headers: HeaderMap,
}

/// One request being served.
struct Job<'a> {
    route: &'a Arc<Route>,
    upstream_path: &'a str,
    key: String,
    ask: Ask,
    /// Runs this request depends on, kept alive until it is done.
    held: Vec<Interest>,
}

impl CachedPath {
    /// Serves a GET or HEAD from the cache or fills it from the origin.
    pub async fn handle(
        &self,
        session: &mut Session,
        route: &Arc<Route>,
        upstream_path: &str,
    ) -> Result<Outcome> {
        let req = session.req_header();
        let h = &req.headers;
        if h.contains_key(header::AUTHORIZATION) {
            return Ok(Outcome::PassThrough("bypass"));
        }
        let conditional = [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
        ]
        .iter()
        .any(|n| h.contains_key(n));
        let bytes_of =
            |n: header::HeaderName| h.get(n).map(|v| Bytes::copy_from_slice(v.as_bytes()));
        let mut job = Job {
            route,
            upstream_path,
            key: cache_key(route, upstream_path),
            ask: Ask {
                is_head: req.method == Method::HEAD,
                range: bytes_of(header::RANGE),
                if_range: bytes_of(header::IF_RANGE),
                headers: h.clone(),
            },
            held: Vec::new(),
        };
        if let Some(meta) = self.lookup(&job.key).await {
            if conditional {
                return Ok(Outcome::PassThrough("request"));
            }
            let status = None;
            return self
                .serve_object(session, &mut job, Arc::new(meta), status)
                .await;
        }
        if job.ask.is_head || conditional {
            return Ok(Outcome::PassThrough("miss"));
        }
        match self.coalescer.discover(&job.key) {
            Role::Follower(rx) => match wait_discovery(rx, self.lock_timeout).await {
                Discovery::Ready => match self.lookup(&job.key).await {
                    Some(meta) => {
                        let mut cs = CacheStatus::fwd("miss");
                        cs.collapsed = true;
                        self.serve_object(session, &mut job, Arc::new(meta), Some(cs))
                            .await
                    }
                    None => Ok(Outcome::PassThrough("miss")),
                },
                _ => Ok(Outcome::PassThrough("miss")),
            },
            Role::Leader(guard) => self.discover(session, &mut job, guard).await,
        }
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

    /// Answers from a described object: a hit when every needed slice is cached, otherwise the
    /// missing slices are fetched (or followed) while the cached ones are served.
    async fn serve_object(
        &self,
        session: &mut Session,
        job: &mut Job<'_>,
        meta: Arc<ObjectMeta>,
        status: Option<CacheStatus>,
    ) -> Result<Outcome> {
        let len = meta.length;
        let wanted = match &job.ask.range {
            Some(r) if !job.ask.is_head => {
                let honoured = job.ask.if_range.as_ref().is_none_or(|ir| {
                    if_range_matches(ir, meta.header("etag"), meta.header("last-modified"))
                });
                if honoured {
                    range::evaluate(r, len)
                } else {
                    RangeRequest::Full
                }
            }
            _ => RangeRequest::Full,
        };
        let (code, br) = match wanted {
            RangeRequest::Unsatisfiable => {
                let cs = status.unwrap_or_else(CacheStatus::hit);
                let mut resp = ResponseHeader::build(StatusCode::RANGE_NOT_SATISFIABLE, Some(4))?;
                resp.insert_header(header::CONTENT_RANGE, format!("bytes */{len}"))?;
                resp.insert_header(header::CONTENT_LENGTH, 0)?;
                resp.insert_header("cache-status", cs.header_value())?;
                session.write_response_header(Box::new(resp), true).await?;
                return Ok(Outcome::Served(cs));
            }
            RangeRequest::Single(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
            RangeRequest::Full => (
                StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK),
                (len > 0).then_some(ByteRange {
                    start: 0,
                    end: len - 1,
                }),
            ),
        };
        // A hit only if every needed slice is indexed and the first one reads back intact (so
        // a lost or corrupt slice is reported as the partial hit it is).
        let mut prefetched = None;
        let cs = match status {
            Some(cs) => cs,
            None => {
                let indexed = br.is_none_or(|r| {
                    let (a, b) = r.slices(self.slice_size);
                    (a..=b).all(|i| self.cache.contains(&meta.slice_key(i)))
                });
                if let (true, Some(r), false) = (indexed, br, job.ask.is_head) {
                    prefetched = self.cached_slice(&meta, r.start / self.slice_size).await;
                }
                if indexed && (prefetched.is_some() || br.is_none() || job.ask.is_head) {
                    CacheStatus::hit()
                } else {
                    CacheStatus::fwd("partial")
                }
            }
        };
        let mut resp = ResponseHeader::build(code, Some(meta.headers.len() + 4))?;
        for (name, value) in &meta.headers {
            resp.append_header(name.clone(), value.as_slice())?;
        }
        resp.insert_header(header::CONTENT_LENGTH, br.map_or(0, |r| r.len()))?;
        if let (StatusCode::PARTIAL_CONTENT, Some(r)) = (code, br) {
            resp.insert_header(header::CONTENT_RANGE, r.content_range(len))?;
        }
        resp.insert_header("cache-status", cs.header_value())?;
        let body = br.filter(|_| !job.ask.is_head);
        session
            .write_response_header(Box::new(resp), body.is_none())
            .await?;
        if let Some(r) = body {
            self.stream_range(session, job, &meta, r, prefetched)
                .await?;
        }
        Ok(Outcome::Served(cs))
    }

    /// Writes bytes `r` of the object, slice by slice, from the cache or from fills.
    async fn stream_range(
        &self,
        session: &mut Session,
        job: &mut Job<'_>,
        meta: &Arc<ObjectMeta>,
        r: ByteRange,
        mut prefetched: Option<Bytes>,
    ) -> Result<()> {
        let s = self.slice_size;
        let (first, last) = r.slices(s);
        for idx in first..=last {
            let base = idx * s;
            let lo = r.start.max(base) - base;
            let hi = r.end.min(base + meta.slice_len(idx) - 1) - base + 1;
            let is_last = idx == last;
            let mut sent = 0u64;
            let mut private = false;
            for _attempt in 0..4 {
                let cached = match prefetched.take() {
                    Some(v) => Some(v),
                    None => self.cached_slice(meta, idx).await,
                };
                if let Some(v) = cached {
                    self.served(job, "cache", hi - lo - sent);
                    let part = v.slice((lo + sent) as usize..hi as usize);
                    session.write_response_body(Some(part), is_last).await?;
                    sent = hi - lo;
                    break;
                }
                let Some(mut reader) = self.follow_or_fetch(job, meta, idx, last, private) else {
                    continue;
                };
                let mut pos = 0u64;
                // The response's last bytes wait until their slice is stored: a client that has
                // the whole response will find it cached.
                let mut last_part = None;
                let outcome = loop {
                    match reader.next(self.lock_timeout).await {
                        Step::Chunk(c) => {
                            let (a, b) = (pos, pos + c.len() as u64);
                            pos = b;
                            let (from, to) = (a.max(lo + sent), b.min(hi));
                            if from < to {
                                let part = c.slice((from - a) as usize..(to - a) as usize);
                                self.served(job, "origin", to - from);
                                sent += to - from;
                                if is_last && sent == hi - lo {
                                    last_part = Some(part);
                                } else {
                                    session.write_response_body(Some(part), false).await?;
                                }
                            }
                        }
                        other => break other,
                    }
                };
                if let Some(part) = last_part.take() {
                    // Written whatever the outcome: these bytes are correct either way.
                    session.write_response_body(Some(part), true).await?;
                }
                match outcome {
                    Step::Done if sent == hi - lo => break,
                    Step::Stalled => private = true,
                    _ => {}
                }
            }
            if sent != hi - lo {
                // Headers are out: the only honest answer left is to cut the response short.
                return Error::e_explain(
                    ErrorType::ReadError,
                    "slice unavailable; response aborted",
                );
            }
        }
        Ok(())
    }

    fn served(&self, job: &Job<'_>, source: &str, n: u64) {
        self.metrics
            .bytes_served
            .with_label_values(&[&job.route.name, source])
            .inc_by(n);
    }

    async fn cached_slice(&self, meta: &ObjectMeta, idx: u64) -> Option<Bytes> {
        let v = self.cache.get(&meta.slice_key(idx)).await?;
        (v.len() as u64 == meta.slice_len(idx)).then_some(v)
    }

    /// A reader for slice `idx`: following a fill in flight, or starting one for the run of
    /// missing slices from `idx` up to `last`. `private` skips a stalled shared fill.
    fn follow_or_fetch(
        &self,
        job: &mut Job<'_>,
        meta: &Arc<ObjectMeta>,
        idx: u64,
        last: u64,
        private: bool,
    ) -> Option<crate::coalesce::SliceReader> {
        if !private {
            if let Some(inf) = self.coalescer.get(&meta.slice_key(idx)) {
                hold(&mut job.held, inf.run.interest());
                return Some(inf.reader());
            }
        }
        let keys: Vec<Vec<u8>> = (idx..=last)
            .map(|i| meta.slice_key(i))
            .enumerate()
            .take_while(|(n, k)| *n == 0 || !self.cache.contains(k))
            .map(|(_, k)| k)
            .collect();
        let (run, slices) = if private {
            self.coalescer.private_run(keys.len().min(1))
        } else {
            self.coalescer.register_run(&keys)?
        };
        hold(&mut job.held, run.interest());
        let reader = slices[0].reader();
        let fill = RunFill {
            cache: self.cache.clone(),
            coalescer: self.coalescer.clone(),
            meta: meta.clone(),
            key: job.key.clone(),
            first: idx,
            slices,
            run,
            metrics: self.metrics.clone(),
            upstream: self.upstream.clone(),
        };
        tokio::spawn(fill.fetch(job.route.clone(), job.upstream_path.to_string()));
        Some(reader)
    }

    /// The first request for an unknown object: ask the origin, describe the object, serve.
    async fn discover(
        &self,
        session: &mut Session,
        job: &mut Job<'_>,
        guard: crate::coalesce::DiscoveryGuard,
    ) -> Result<Outcome> {
        let s = self.slice_size;
        let hint = job
            .ask
            .range
            .as_ref()
            .map_or(RangeHint::Full, |r| range::hint(r));
        // Ask from the slice boundary at or before the wanted bytes, to the slice end after them.
        let origin_range = match hint {
            RangeHint::Full => "bytes=0-".to_string(),
            RangeHint::From { start, end } => match end {
                Some(e) => format!("bytes={}-{}", start / s * s, (e / s + 1) * s - 1),
                None => format!("bytes={}-", start / s * s),
            },
            // The start depends on the length: a one-byte probe learns it.
            RangeHint::Suffix => "bytes=0-0".to_string(),
        };
        let mut up = RequestHeader::build(Method::GET, job.upstream_path.as_bytes(), None)?;
        for (name, value) in end_to_end(&job.ask.headers) {
            if ![header::HOST, header::RANGE, header::IF_RANGE].contains(&name) {
                up.append_header(name, value)?;
            }
        }
        up.insert_header(header::HOST, job.route.origin.host_header())?;
        up.insert_header(header::RANGE, origin_range)?;
        self.metrics
            .origin_requests
            .with_label_values(&[&job.route.name])
            .inc();
        let origin = match self.upstream.send(job.route, &up).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(route = %job.route.name, error = %e, "origin request failed");
                let mut status = CacheStatus::fwd("miss");
                status.detail = Some("origin-unreachable".into());
                respond_error(session, StatusCode::BAD_GATEWAY, &status, &e.to_string()).await?;
                return Ok(Outcome::Served(status));
            }
        };
        let oh = &origin.header;
        // Where the body starts in the object, and the object's length, when the origin says.
        let layout = match oh.status {
            StatusCode::PARTIAL_CONTENT => oh
                .headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| parse_content_range(v.as_bytes()))
                .map(|(r, total)| (r.start, total)),
            StatusCode::OK => content_length(&oh.headers).map(|len| (0, len)),
            _ => None,
        };
        let verdict = storable(&Method::GET, &job.ask.headers, StatusCode::OK, &oh.headers)
            .and_then(|()| match oh.status {
                StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(()),
                _ => Err("status"),
            });
        match (verdict, layout) {
            (Ok(()), Some((body_start, total))) if body_start % s == 0 || body_start == 0 => {
                self.describe(session, job, guard, origin, body_start, total)
                    .await
            }
            (Ok(()), None) if oh.status == StatusCode::OK => {
                guard.resolve(Discovery::Uncoalescable);
                self.stream_unknown_length(session, job, origin).await
            }
            (verdict, _) => {
                guard.resolve(Discovery::Uncoalescable);
                let why = verdict.err().unwrap_or("unsliceable");
                self.forward(session, job, origin, layout, why).await
            }
        }
    }

    /// Stores the description of a newly seen object and serves the client from its fill.
    async fn describe(
        &self,
        session: &mut Session,
        job: &mut Job<'_>,
        guard: crate::coalesce::DiscoveryGuard,
        origin: OriginResponse,
        body_start: u64,
        total: u64,
    ) -> Result<Outcome> {
        let oh = &origin.header;
        let etag = oh.headers.get(header::ETAG).map(|v| v.as_bytes());
        let lm = oh.headers.get(header::LAST_MODIFIED).map(|v| v.as_bytes());
        let meta = Arc::new(ObjectMeta {
            status: 200,
            headers: end_to_end(&oh.headers)
                .into_iter()
                .filter(|(n, _)| *n != header::CONTENT_RANGE)
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            length: total,
            slice_size: self.slice_size as u32,
            id: object_id(&job.key, etag, lm, Some(total)),
            stored_at: now_secs(),
        });
        if let Err(e) = self.cache.insert(&meta_key(&job.key), meta.encode()).await {
            tracing::warn!(key = %job.key, error = %e, "object description not stored on disk");
        }
        // The slices this response body covers, as far as this client needs them.
        let s = self.slice_size;
        let first = body_start / s;
        let wanted_last = match job.ask.range.as_ref().map(|r| range::evaluate(r, total)) {
            Some(RangeRequest::Single(r)) => r.end / s,
            _ => meta.slice_count().saturating_sub(1),
        };
        let body_covers_a_slice = total > 0 && (body_start + 1 < total || total == 1);
        let keys: Vec<Vec<u8>> = (first..=wanted_last)
            .map(|i| meta.slice_key(i))
            .take_while(|k| !self.cache.contains(k))
            .collect();
        let registered =
            if body_covers_a_slice && !keys.is_empty() && oh.status != StatusCode::NOT_MODIFIED {
                self.coalescer.register_run(&keys)
            } else {
                None
            };
        match registered {
            Some((run, slices)) => {
                hold(&mut job.held, run.interest());
                let fill = RunFill {
                    cache: self.cache.clone(),
                    coalescer: self.coalescer.clone(),
                    meta: meta.clone(),
                    key: job.key.clone(),
                    first,
                    slices,
                    run,
                    metrics: self.metrics.clone(),
                    upstream: self.upstream.clone(),
                };
                tokio::spawn(fill.fill(origin, body_start));
            }
            // A probe or an already cached range: this body is not needed.
            None => drop(origin),
        }
        guard.resolve(Discovery::Ready);
        let mut cs = CacheStatus::fwd("miss");
        cs.stored = true;
        self.serve_object(session, job, meta, Some(cs)).await
    }

    /// Forwards a response that is not stored, trimmed to what the client asked for.
    async fn forward(
        &self,
        session: &mut Session,
        job: &mut Job<'_>,
        mut origin: OriginResponse,
        layout: Option<(u64, u64)>,
        why: &str,
    ) -> Result<Outcome> {
        let oh = &origin.header;
        if oh.status == StatusCode::RANGE_NOT_SATISFIABLE {
            // Only our widened range was refused (an empty object, say): ask as the client did.
            return Ok(Outcome::PassThrough("miss"));
        }
        let mut cs = CacheStatus::fwd("miss");
        cs.detail = Some(why.to_string());
        let sized = matches!(oh.status, StatusCode::OK | StatusCode::PARTIAL_CONTENT);
        let Some((body_start, total)) = layout.filter(|_| sized) else {
            // Not a representation (an error, a redirect): our Range did not shape it.
            let length = content_length(&oh.headers);
            let resp = downstream_header(oh.status, &oh.headers, length, &cs)?;
            let no_body =
                oh.status == StatusCode::NO_CONTENT || oh.status == StatusCode::NOT_MODIFIED;
            session
                .write_response_header(Box::new(resp), no_body || length == Some(0))
                .await?;
            if !no_body && length != Some(0) {
                self.pipe(session, job, &mut origin, 0, u64::MAX).await?;
            }
            self.upstream.release(origin).await;
            return Ok(Outcome::Served(cs));
        };
        let wanted = match &job.ask.range {
            Some(r) => range::evaluate(r, total),
            None => RangeRequest::Full,
        };
        let (code, r) = match wanted {
            RangeRequest::Single(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
            _ => (
                StatusCode::OK,
                (total > 0).then_some(ByteRange {
                    start: 0,
                    end: total - 1,
                }),
            ),
        };
        let covered = r.is_none_or(|r| r.start >= body_start);
        if !covered
            || (code == StatusCode::OK && body_start > 0)
            || wanted == RangeRequest::Unsatisfiable
        {
            return Ok(Outcome::PassThrough("miss"));
        }
        let mut resp = ResponseHeader::build(code, Some(oh.headers.len() + 2))?;
        for (name, value) in end_to_end(&oh.headers) {
            if name != header::CONTENT_RANGE {
                resp.append_header(name, value)?;
            }
        }
        resp.insert_header(header::CONTENT_LENGTH, r.map_or(0, |r| r.len()))?;
        if let (StatusCode::PARTIAL_CONTENT, Some(r)) = (code, r) {
            resp.insert_header(header::CONTENT_RANGE, r.content_range(total))?;
        }
        resp.insert_header("cache-status", cs.header_value())?;
        session
            .write_response_header(Box::new(resp), r.is_none())
            .await?;
        if let Some(r) = r {
            self.pipe(session, job, &mut origin, r.start - body_start, r.len())
                .await?;
        }
        Ok(Outcome::Served(cs))
    }

    /// Copies `len` body bytes after skipping `skip`, ending the client response.
    async fn pipe(
        &self,
        session: &mut Session,
        job: &Job<'_>,
        origin: &mut OriginResponse,
        mut skip: u64,
        len: u64,
    ) -> Result<()> {
        let mut left = len;
        while left > 0 {
            let chunk = match origin.read_body().await {
                Ok(Some(c)) => c,
                Ok(None) if len == u64::MAX => break,
                Ok(None) | Err(_) => {
                    return Error::e_explain(ErrorType::ReadError, "origin body broke off")
                }
            };
            let s = skip.min(chunk.len() as u64);
            skip -= s;
            let chunk = chunk.slice(s as usize..);
            let take = (chunk.len() as u64).min(left);
            left -= take;
            if take > 0 {
                self.served(job, "origin", take);
                let end = left == 0 && len != u64::MAX;
                session
                    .write_response_body(Some(chunk.slice(..take as usize)), end)
                    .await?;
            }
        }
        if len == u64::MAX {
            session.write_response_body(None, true).await?;
        }
        Ok(())
    }

    /// A storable 200 without a length: streamed whole to the client while stored slice by
    /// slice; the object is described only once its body has arrived complete.
    async fn stream_unknown_length(
        &self,
        session: &mut Session,
        job: &mut Job<'_>,
        mut origin: OriginResponse,
    ) -> Result<Outcome> {
        let oh = &origin.header;
        let mut cs = CacheStatus::fwd("miss");
        cs.stored = true;
        let resp = downstream_header(oh.status, &oh.headers, None, &cs)?;
        let etag = oh.headers.get(header::ETAG).map(|v| v.as_bytes());
        let lm = oh.headers.get(header::LAST_MODIFIED).map(|v| v.as_bytes());
        let id = object_id(&job.key, etag, lm, None);
        let mut meta = ObjectMeta {
            status: 200,
            headers: end_to_end(&oh.headers)
                .into_iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            length: 0,
            slice_size: self.slice_size as u32,
            id,
            stored_at: now_secs(),
        };
        let mut fill = SliceFill::new(self.cache.clone(), id, self.slice_size as usize);
        session.write_response_header(Box::new(resp), false).await?;
        loop {
            match origin.read_body().await {
                Ok(Some(chunk)) => {
                    meta.length += chunk.len() as u64;
                    fill.push(chunk.clone()).await;
                    self.served(job, "origin", chunk.len() as u64);
                    if let Err(e) = session.write_response_body(Some(chunk), false).await {
                        self.metrics.fills.with_label_values(&["cancelled"]).inc();
                        return Err(e);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(route = %job.route.name, error = %e, "origin body failed");
                    self.metrics.fills.with_label_values(&["incomplete"]).inc();
                    return Error::e_explain(ErrorType::ReadError, "origin body broke off");
                }
            }
        }
        // Described before the client sees the end, so a client that has it all finds it cached.
        match fill.finish(&job.key, &meta).await {
            Ok(()) => self.metrics.fills.with_label_values(&["stored"]).inc(),
            Err(e) => {
                tracing::warn!(key = %job.key, error = %e, "not cached");
                self.metrics.fills.with_label_values(&["store_error"]).inc();
            }
        }
        session.write_response_body(None, true).await?;
        self.upstream.release(origin).await;
        Ok(Outcome::Served(cs))
    }
}

/// Keeps interest in a run for the rest of the request (once per run).
fn hold(held: &mut Vec<Interest>, i: Interest) {
    if !held.iter().any(|h| Arc::ptr_eq(h.run(), i.run())) {
        held.push(i);
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
