//! The cacheable path for GET and HEAD: stored responses served from slices when fresh,
//! revalidated when stale, and misses filled from origins.
//!
//! Strata drives origin fetches of cacheable requests itself rather than through Pingora's
//! proxy phases: the body filters of `ProxyHttp` are synchronous, so they cannot wait for a
//! slice to reach the cache, and a slice-aware fetch needs to choose its own ranges, share one
//! fetch between clients and stitch cached and fetched slices into one response. The origin
//! side lives in [`crate::exchange`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use strata_storage::TieredCache;

use crate::cache_status::CacheStatus;
use crate::coalesce::{wait_discovery, Coalescer, Discovery, Interest, Role, SliceReader, Step};
use crate::conditional::{self, NOT_MODIFIED_HEADERS};
use crate::freshness::Reuse;
use crate::headers::cache_control;
use crate::metrics::Metrics;
use crate::object::{meta_key, ObjectMeta, Record};
use crate::range::{self, if_range_matches, ByteRange, RangeRequest};
use crate::route::Route;
use crate::slicefetch::RunFill;
use crate::upstream::Upstream;
use crate::vary;

/// What the cacheable path did with a request.
pub enum Outcome {
    /// A response was written; it carried this status.
    Served(CacheStatus),
    /// The request should be proxied as is, labelled with this forward reason.
    PassThrough(&'static str),
}

/// Hit and miss handling over the tiered cache.
#[derive(Clone)]
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
    format!("{}{upstream_path}", route.key_base())
}

/// One request being served.
pub(crate) struct Job {
    pub route: Arc<Route>,
    pub upstream_path: String,
    /// The URL's key.
    pub base_key: String,
    /// The key of the selected variant (the URL's key when the response does not vary).
    pub key: String,
    pub method: Method,
    pub is_head: bool,
    pub headers: HeaderMap,
    pub range: Option<Bytes>,
    pub if_range: Option<Bytes>,
    /// Runs this request depends on, kept alive until it is done.
    pub held: Vec<Interest>,
}

impl Job {
    /// The bytes of an object of `len` bytes this request needs: its range when the object
    /// is a representation (status 200), else all of it; `None` when the object is empty.
    pub fn needed(&self, status: u16, len: u64) -> Option<ByteRange> {
        let last = len.checked_sub(1)?;
        Some(match self.range.as_ref().map(|r| range::evaluate(r, len)) {
            Some(RangeRequest::Single(r)) if status == 200 => r,
            _ => ByteRange {
                start: 0,
                end: last,
            },
        })
    }
}

/// What the cache holds for a request.
enum Found {
    Object(Box<ObjectMeta>),
    /// The URL varies and this request's variant is not stored.
    VaryMiss,
    Miss,
}

impl CachedPath {
    /// Serves a GET or HEAD from the cache or through it.
    pub async fn handle(
        &self,
        session: &mut Session,
        route: &Arc<Route>,
        upstream_path: &str,
    ) -> Result<Outcome> {
        let req = session.req_header();
        let h = &req.headers;
        // Strata's choice: requests with credentials are not answered from the shared cache.
        if h.contains_key(header::AUTHORIZATION) {
            return Ok(Outcome::PassThrough("bypass"));
        }
        let bytes_of =
            |n: header::HeaderName| h.get(n).map(|v| Bytes::copy_from_slice(v.as_bytes()));
        let key = cache_key(route, upstream_path);
        let mut job = Job {
            route: route.clone(),
            upstream_path: upstream_path.to_string(),
            base_key: key.clone(),
            key,
            method: req.method.clone(),
            is_head: req.method == Method::HEAD,
            headers: h.clone(),
            range: bytes_of(header::RANGE),
            if_range: bytes_of(header::IF_RANGE),
            held: Vec::new(),
        };
        match self.find(&mut job).await {
            Found::Object(meta) => self.stored(session, &mut job, *meta).await,
            Found::VaryMiss => self.miss(session, &mut job, "vary-miss").await,
            Found::Miss => self.miss(session, &mut job, "uri-miss").await,
        }
    }

    /// Finds the stored response for the request, following a Vary record to its variant.
    async fn find(&self, job: &mut Job) -> Found {
        match self.record(&job.base_key).await {
            Some(Record::Object(m)) => Found::Object(m),
            Some(Record::Vary(names)) => {
                job.key = vary::variant_key(&job.base_key, &names, &job.headers);
                match self.record(&job.key).await {
                    Some(Record::Object(m)) => Found::Object(m),
                    _ => Found::VaryMiss,
                }
            }
            None => Found::Miss,
        }
    }

    async fn record(&self, key: &str) -> Option<Record> {
        let mk = meta_key(key);
        let raw = self.cache.get(&mk).await?;
        let rec = Record::decode(&raw);
        if rec.is_none() {
            let _ = self.cache.remove(&mk).await;
        }
        rec
    }

    /// Whether every slice the request needs is stored or being filled. A stored object
    /// without a strong ETag can only be served from what one fetch stored: slices of two
    /// fetches may belong to two versions (RFC 9111 §3.4).
    fn slices_available(&self, job: &Job, meta: &ObjectMeta) -> bool {
        if job.is_head || meta.strong_etag().is_some() {
            return true;
        }
        let Some(r) = job.needed(meta.status, meta.length) else {
            return true;
        };
        let (a, b) = r.slices(meta.slice_size as u64);
        (a..=b).all(|i| {
            let k = meta.slice_key(i);
            self.cache.contains(&k) || self.coalescer.get(&k).is_some()
        })
    }

    /// A stored response exists: use it if it may be, else revalidate it.
    async fn stored(
        &self,
        session: &mut Session,
        job: &mut Job,
        meta: ObjectMeta,
    ) -> Result<Outcome> {
        if !self.slices_available(job, &meta) {
            let _ = self.cache.remove(&meta_key(&job.key)).await;
            return self.miss(session, job, "partial").await;
        }
        let now = SystemTime::now();
        let mut cs = CacheStatus::hit();
        cs.ttl = Some(meta.policy.ttl(now));
        let Reuse::Validate {
            by_request,
            while_revalidate,
            if_error,
        } = meta.policy.reuse(&job.headers, now)
        else {
            return self.answer(session, job, Arc::new(meta), cs).await;
        };
        // RFC 9211: "stale" when the response needs validation, "request" when only the
        // request's directives forbid using it.
        let fwd = if by_request { "request" } else { "stale" };
        if only_if_cached(&job.headers) {
            return self.gateway_timeout(session, fwd).await;
        }
        let conditionals = meta.conditionals();
        if while_revalidate {
            // Served stale now; one background revalidation, shared by everyone who asks meanwhile.
            if let Role::Leader(guard) = self.coalescer.discover(&job.key) {
                self.revalidate_in_background(job, guard, meta.clone(), conditionals);
            }
            cs.detail = Some("stale-while-revalidate".into());
            return self.answer(session, job, Arc::new(meta), cs).await;
        }
        match self.coalescer.discover(&job.key) {
            Role::Leader(guard) => {
                let stale = crate::exchange::Stale {
                    meta,
                    conditionals,
                    if_error,
                };
                self.exchange(session, job, guard, Some(stale), fwd).await
            }
            Role::Follower(rx) => self.after_leader(session, job, rx, fwd).await,
        }
    }

    /// Nothing usable is stored: fetch it (one fetch for all who ask at once).
    async fn miss(
        &self,
        session: &mut Session,
        job: &mut Job,
        fwd: &'static str,
    ) -> Result<Outcome> {
        if only_if_cached(&job.headers) {
            return self.gateway_timeout(session, fwd).await;
        }
        if job.is_head {
            return Ok(Outcome::PassThrough(fwd));
        }
        match self.coalescer.discover(&job.key) {
            Role::Leader(guard) => self.exchange(session, job, guard, None, fwd).await,
            Role::Follower(rx) => self.after_leader(session, job, rx, fwd).await,
        }
    }

    /// Waits for the request that is fetching this object, then serves what it stored.
    async fn after_leader(
        &self,
        session: &mut Session,
        job: &mut Job,
        rx: tokio::sync::watch::Receiver<Discovery>,
        fwd: &'static str,
    ) -> Result<Outcome> {
        if wait_discovery(rx, self.lock_timeout).await == Discovery::Ready {
            if let Found::Object(meta) = self.find(job).await {
                let mut cs = CacheStatus::fwd(fwd);
                cs.collapsed = true;
                return self.answer(session, job, Arc::new(*meta), cs).await;
            }
        }
        Ok(Outcome::PassThrough(fwd))
    }

    async fn gateway_timeout(&self, session: &mut Session, fwd: &'static str) -> Result<Outcome> {
        let mut cs = CacheStatus::fwd(fwd);
        cs.detail = Some("only-if-cached".into());
        respond_error(
            session,
            StatusCode::GATEWAY_TIMEOUT,
            &cs,
            "not in cache (only-if-cached)",
        )
        .await?;
        Ok(Outcome::Served(cs))
    }

    /// Answers from a stored object: preconditions, then the (ranged) body from slices — cached
    /// ones served, missing ones fetched or followed.
    pub(crate) async fn answer(
        &self,
        session: &mut Session,
        job: &mut Job,
        meta: Arc<ObjectMeta>,
        mut cs: CacheStatus,
    ) -> Result<Outcome> {
        let now = SystemTime::now();
        let age = meta.policy.age(now);
        if let Some(code) = conditional::evaluate(&job.method, &job.headers, &meta) {
            let mut resp = ResponseHeader::build(code, Some(8))?;
            if code == StatusCode::NOT_MODIFIED {
                for (name, value) in &meta.headers {
                    if NOT_MODIFIED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                        resp.append_header(name.clone(), value.as_slice())?;
                    }
                }
                resp.insert_header(header::AGE, age)?;
            } else {
                resp.insert_header(header::CONTENT_LENGTH, 0)?;
            }
            resp.insert_header("cache-status", cs.header_value())?;
            session.write_response_header(Box::new(resp), true).await?;
            self.detach(job);
            return Ok(Outcome::Served(cs));
        }
        let len = meta.length;
        let wanted = match &job.range {
            Some(r) if !job.is_head && meta.status == 200 => {
                let honoured = job.if_range.as_ref().is_none_or(|ir| {
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
                let mut resp = ResponseHeader::build(StatusCode::RANGE_NOT_SATISFIABLE, Some(4))?;
                resp.insert_header(header::CONTENT_RANGE, format!("bytes */{len}"))?;
                resp.insert_header(header::CONTENT_LENGTH, 0)?;
                resp.insert_header("cache-status", cs.header_value())?;
                session.write_response_header(Box::new(resp), true).await?;
                self.detach(job);
                return Ok(Outcome::Served(cs));
            }
            RangeRequest::Single(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
            RangeRequest::Full => (
                StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK),
                (len > 0).then(|| ByteRange {
                    start: 0,
                    end: len - 1,
                }),
            ),
        };
        // A hit only if every needed slice is indexed and the first one reads back intact (so
        // a lost or corrupt slice is reported as the partial hit it is).
        let mut prefetched = None;
        if cs.hit {
            // A hit only if every needed slice can be served without the origin and the first
            // one, if stored, reads back intact (a lost or corrupt slice is a partial hit).
            let ready = br.is_none_or(|r| {
                let (a, b) = r.slices(meta.slice_size as u64);
                (a..=b).all(|i| self.slice_ready(&meta, i))
            });
            let mut first_ok = true;
            if let (true, Some(r), false) = (ready, br, job.is_head) {
                let first = r.start / meta.slice_size as u64;
                // Complete but still on its way to the disk: served from its fill.
                let in_fill = self.coalescer.get(&meta.slice_key(first)).is_some();
                if !in_fill {
                    prefetched = self.cached_slice(&meta, first).await;
                    first_ok = prefetched.is_some();
                }
            }
            if ready && !first_ok && meta.strong_etag().is_none() {
                // A stored slice was lost and, without a strong validator, cannot be fetched
                // apart: the object is dropped and this request goes to the origin whole.
                let _ = self.cache.remove(&meta_key(&job.key)).await;
                return Ok(Outcome::PassThrough("partial"));
            }
            if !(ready && first_ok) {
                cs.hit = false;
                cs.fwd = Some("partial");
            }
        }
        self.serve(session, job, meta, cs, code, br, prefetched)
            .await
    }

    /// Writes the response header and the (ranged) body of a stored object.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &self,
        session: &mut Session,
        job: &mut Job,
        meta: Arc<ObjectMeta>,
        cs: CacheStatus,
        code: StatusCode,
        br: Option<ByteRange>,
        prefetched: Option<Bytes>,
    ) -> Result<Outcome> {
        let len = meta.length;
        let age = meta.policy.age(SystemTime::now());
        let mut resp = ResponseHeader::build(code, Some(meta.headers.len() + 5))?;
        for (name, value) in &meta.headers {
            resp.append_header(name.clone(), value.as_slice())?;
        }
        // RFC 9110 §8.6: no Content-Length on a 204.
        if code != StatusCode::NO_CONTENT {
            resp.insert_header(header::CONTENT_LENGTH, br.map_or(0, |r| r.len()))?;
        }
        if let (StatusCode::PARTIAL_CONTENT, Some(r)) = (code, br) {
            resp.insert_header(header::CONTENT_RANGE, r.content_range(len))?;
        }
        resp.insert_header(header::AGE, age)?;
        resp.insert_header("cache-status", cs.header_value())?;
        let body = br.filter(|_| !job.is_head);
        session
            .write_response_header(Box::new(resp), body.is_none())
            .await?;
        match body {
            Some(r) => {
                self.stream_range(session, job, &meta, r, prefetched)
                    .await?
            }
            None => self.detach(job),
        }
        Ok(Outcome::Served(cs))
    }

    /// Lets fills this request started run to their end although it reads none of their bytes
    /// (it was answered 304, 412, 416 or HEAD): the object is still wanted in the cache.
    fn detach(&self, job: &mut Job) {
        let held = std::mem::take(&mut job.held);
        if !held.is_empty() {
            tokio::spawn(async move {
                for i in &held {
                    i.run().finished().await;
                }
            });
        }
    }

    /// Writes bytes `r` of the object, slice by slice, from the cache or from fills.
    async fn stream_range(
        &self,
        session: &mut Session,
        job: &mut Job,
        meta: &Arc<ObjectMeta>,
        r: ByteRange,
        mut prefetched: Option<Bytes>,
    ) -> Result<()> {
        // The object's own slice size: the configured one may have changed since it was stored.
        let s = meta.slice_size as u64;
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

    pub(crate) fn served(&self, job: &Job, source: &str, n: u64) {
        self.metrics
            .bytes_served
            .with_label_values(&[&job.route.name, source])
            .inc_by(n);
    }

    /// Whether slice `idx` can be served without the origin: stored, or complete in a fill.
    fn slice_ready(&self, meta: &ObjectMeta, idx: u64) -> bool {
        let k = meta.slice_key(idx);
        self.cache.contains(&k) || self.coalescer.get(&k).is_some_and(|i| i.is_complete())
    }

    async fn cached_slice(&self, meta: &ObjectMeta, idx: u64) -> Option<Bytes> {
        let v = self.cache.get(&meta.slice_key(idx)).await?;
        (v.len() as u64 == meta.slice_len(idx)).then_some(v)
    }

    /// A reader for slice `idx`: following a fill in flight, or starting one for the run of
    /// missing slices from `idx` up to `last`. `private` skips a stalled shared fill.
    fn follow_or_fetch(
        &self,
        job: &mut Job,
        meta: &Arc<ObjectMeta>,
        idx: u64,
        last: u64,
        private: bool,
    ) -> Option<SliceReader> {
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
            self.coalescer.private_run()
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
        tokio::spawn(fill.fetch(job.route.clone(), job.upstream_path.clone()));
        Some(reader)
    }
}

/// Whether the client forbids going to the origin (`Cache-Control: only-if-cached`).
fn only_if_cached(h: &HeaderMap) -> bool {
    cache_control(h).iter().any(|(d, _)| d == "only-if-cached")
}

/// Keeps interest in a run for the rest of the request (once per run).
pub(crate) fn hold(held: &mut Vec<Interest>, i: Interest) {
    if !held.iter().any(|h| Arc::ptr_eq(h.run(), i.run())) {
        held.push(i);
    }
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
