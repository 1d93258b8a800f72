//! The origin side of the cacheable path: the first fetch of an object, revalidation of a
//! stale one (in the foreground, or in the background for stale-while-revalidate), and what is
//! done with each kind of response.
//!
//! The leader of a fetch asks the origin from the slice boundary at or before the wanted bytes,
//! describes the object in the cache as soon as the response header arrives, and hands the body
//! to a slice fill; clients asking meanwhile wait for that description and read the same fill.

use std::sync::Arc;
use std::time::SystemTime;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use crate::cache_status::CacheStatus;
use crate::cached::{hold, respond_error, CachedPath, Job, Outcome};
use crate::coalesce::{Discovery, DiscoveryGuard, Inflight, Run};
use crate::fill::SliceFill;
use crate::freshness::{unix, Policy};
use crate::headers::{content_length, end_to_end};
use crate::object::{is_strong_etag, meta_key, object_id, ObjectMeta, Record};
use crate::range::{self, parse_content_range, ByteRange, RangeHint, RangeRequest};
use crate::slicefetch::RunFill;
use crate::upstream::{OriginResponse, UpstreamError};
use crate::vary;

/// A stored response being revalidated.
pub(crate) struct Stale {
    pub meta: ObjectMeta,
    pub conditionals: Vec<(HeaderName, HeaderValue)>,
    /// May be served if the origin fails (stale-if-error).
    pub if_error: bool,
}

/// Request headers never forwarded on a fill: Strata sets its own range and validators.
const NOT_FORWARDED: [HeaderName; 7] = [
    header::HOST,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// Where a response body starts in the object and the object's length, when it says.
pub(crate) fn layout(resp: &ResponseHeader) -> Option<(u64, u64)> {
    match resp.status {
        StatusCode::PARTIAL_CONTENT => resp
            .headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| parse_content_range(v.as_bytes()))
            .map(|(r, total)| (r.start, total)),
        StatusCode::NOT_MODIFIED | StatusCode::NO_CONTENT => Some((0, 0)),
        _ => content_length(&resp.headers).map(|len| (0, len)),
    }
}

/// The last byte of the object a response body holds (`total - 1` unless a 206 says less).
fn body_end(resp: &ResponseHeader, total: u64) -> u64 {
    match resp.status {
        StatusCode::PARTIAL_CONTENT => resp
            .headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| parse_content_range(v.as_bytes()))
            .map_or(0, |(r, _)| r.end),
        _ => total.saturating_sub(1),
    }
}

/// The headers stored with an object: end-to-end ones, without those Strata computes.
fn stored_headers(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    end_to_end(h)
        .into_iter()
        .filter(|(n, _)| {
            *n != header::CONTENT_RANGE && *n != header::AGE && n.as_str() != "warning"
        })
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

impl CachedPath {
    /// The origin request for `job`: its headers, Strata's range, and validators if any.
    fn origin_request(
        &self,
        job: &Job,
        range: &str,
        conditionals: &[(HeaderName, HeaderValue)],
    ) -> Result<RequestHeader> {
        let mut up = RequestHeader::build(Method::GET, job.upstream_path.as_bytes(), None)?;
        for (name, value) in end_to_end(&job.headers) {
            if !NOT_FORWARDED.contains(&name) {
                up.append_header(name, value)?;
            }
        }
        up.insert_header(header::HOST, job.route.origin.host_header())?;
        up.insert_header(header::RANGE, range.to_string())?;
        for (name, value) in conditionals {
            up.insert_header(name.clone(), value.clone())?;
        }
        Ok(up)
    }

    /// The range to ask the origin for: from the slice boundary at or before the wanted bytes
    /// to the slice end after them.
    fn origin_range(&self, job: &Job) -> String {
        let s = self.slice_size;
        match job
            .range
            .as_ref()
            .map_or(RangeHint::Full, |r| range::hint(r))
        {
            RangeHint::From {
                start,
                end: Some(e),
            } => {
                let end = (e / s)
                    .saturating_add(1)
                    .saturating_mul(s)
                    .saturating_sub(1);
                format!("bytes={}-{end}", start / s * s)
            }
            RangeHint::From { start, end: None } => format!("bytes={}-", start / s * s),
            // The start depends on the length: a one-byte probe learns it.
            RangeHint::Suffix => "bytes=0-0".to_string(),
            RangeHint::Full => "bytes=0-".to_string(),
        }
    }

    /// Fetches for `job` (the leader of its key) and answers the client.
    pub(crate) async fn exchange(
        &self,
        session: &mut Session,
        job: &mut Job,
        guard: DiscoveryGuard,
        stale: Option<Stale>,
        fwd: &'static str,
    ) -> Result<Outcome> {
        let conditionals = stale.as_ref().map_or(&[][..], |s| &s.conditionals[..]);
        let up = self.origin_request(job, &self.origin_range(job), conditionals)?;
        self.metrics
            .origin_requests
            .with_label_values(&[&job.route.name])
            .inc();
        let sent = self.upstream.send(&job.route, &up).await;
        let origin = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(route = %job.route.name, error = %e, "origin request failed");
                if let Some(s) = stale.filter(|s| s.if_error) {
                    drop(guard);
                    return self.serve_stale_on_error(session, job, s, None, fwd).await;
                }
                let mut cs = CacheStatus::fwd(fwd);
                cs.detail = Some(match e {
                    UpstreamError::Credentials { .. } => "origin-credentials".into(),
                    _ => "origin-unreachable".into(),
                });
                respond_error(session, StatusCode::BAD_GATEWAY, &cs, &e.to_string()).await?;
                return Ok(Outcome::Served(cs));
            }
        };
        let status = origin.header.status;
        let revalidating = stale.is_some();
        if let Some(s) = stale {
            if status == StatusCode::NOT_MODIFIED {
                if let Some(meta) = self.refresh(job, &s.meta, &origin.header.headers).await {
                    guard.resolve(Discovery::Ready);
                    self.upstream.release(origin).await;
                    let mut cs = CacheStatus::fwd(fwd);
                    cs.fwd_status = Some(304);
                    return self.answer(session, job, Arc::new(meta), cs).await;
                }
                // A 304 for another version than the stored one: drop ours and let the
                // client's own request through (it never asked for a 304).
                let _ = self.cache.remove(&meta_key(&job.key)).await;
                return Ok(Outcome::PassThrough(fwd));
            } else if s.if_error && status.is_server_error() {
                drop(guard);
                let code = Some(status.as_u16());
                return self.serve_stale_on_error(session, job, s, code, fwd).await;
            }
        }
        self.adopt(session, job, guard, origin, fwd, revalidating)
            .await
    }

    /// Serves a stale response because the origin failed (stale-if-error).
    async fn serve_stale_on_error(
        &self,
        session: &mut Session,
        job: &mut Job,
        s: Stale,
        origin_status: Option<u16>,
        fwd: &'static str,
    ) -> Result<Outcome> {
        let mut cs = CacheStatus::fwd(fwd);
        cs.fwd_status = origin_status;
        cs.ttl = Some(s.meta.policy.ttl(SystemTime::now()));
        cs.detail = Some("stale-if-error".into());
        self.answer(session, job, Arc::new(s.meta), cs).await
    }

    /// Merges a 304 into the stored response (RFC 9111 §4.3.4) and stores the result.
    async fn refresh(&self, job: &Job, old: &ObjectMeta, h: &HeaderMap) -> Option<ObjectMeta> {
        let now = SystemTime::now();
        let (policy, merged) =
            old.policy
                .revalidated(&old.header_map(), h, now, job.route.overrides)?;
        let meta = ObjectMeta {
            headers: stored_headers(&merged),
            policy,
            stored_at: unix(now),
            ..old.clone()
        };
        if let Err(e) = self.cache.insert(&meta_key(&job.key), meta.encode()).await {
            tracing::warn!(key = %job.key, error = %e, "refreshed headers not stored on disk");
        }
        Some(meta)
    }

    /// Decides what to do with a new origin response: store and serve it, stream it while
    /// storing (no length), or forward it unstored.
    async fn adopt(
        &self,
        session: &mut Session,
        job: &mut Job,
        guard: DiscoveryGuard,
        origin: OriginResponse,
        fwd: &'static str,
        revalidating: bool,
    ) -> Result<Outcome> {
        let oh = &origin.header;
        let now = SystemTime::now();
        let policy = Policy::new(oh.status, &oh.headers, now, job.route.overrides);
        // A 304 is never storable (not an understood status): it is forwarded below.
        let verdict = policy.storable(&job.headers, &oh.headers);
        let layout = layout(oh);
        let sliceable = |(start, _): (u64, u64)| start.is_multiple_of(self.slice_size);
        // Without a strong ETag, slices this body does not cover could never be added later
        // (two fetches may be two versions): such a body is only stored if it covers what the
        // client asked for.
        let covers_need = |(start, total): (u64, u64)| {
            let body_end = body_end(oh, total);
            // Whatever the status, the client's range is what it asked of this response.
            job.needed(200, total)
                .is_none_or(|n| start <= n.start && n.end <= body_end)
        };
        let strong = oh
            .headers
            .get(header::ETAG)
            .is_some_and(|e| is_strong_etag(e.as_bytes()));
        match (verdict, layout) {
            (Ok(()), Some(l)) if sliceable(l) && (strong || covers_need(l)) => {
                let (meta, run) = self.describe(job, &origin.header, policy, l).await;
                if let Some((run, slices)) = run {
                    hold(&mut job.held, run.interest());
                    self.spawn_fill(job, &meta, slices, run, origin, l.0);
                }
                guard.resolve(Discovery::Ready);
                let mut cs = CacheStatus::fwd(fwd);
                cs.stored = true;
                if revalidating {
                    cs.fwd_status = Some(meta.status);
                }
                self.answer(session, job, meta, cs).await
            }
            (Ok(()), None) if oh.status == StatusCode::OK => {
                guard.resolve(Discovery::Uncoalescable);
                self.stream_unknown_length(session, job, origin, policy, fwd)
                    .await
            }
            (verdict, _) => {
                guard.resolve(Discovery::Uncoalescable);
                let why = verdict.err().unwrap_or("unsliceable");
                self.forward(session, job, origin, layout, why, fwd).await
            }
        }
    }

    /// Stores the description of a newly fetched object (and the Vary record of its URL), and
    /// registers the run of slices its body covers, as far as this request needs them.
    async fn describe(
        &self,
        job: &mut Job,
        oh: &ResponseHeader,
        policy: Policy,
        (body_start, total): (u64, u64),
    ) -> (Arc<ObjectMeta>, Option<(Arc<Run>, Vec<Arc<Inflight>>)>) {
        let names = vary::names(&oh.headers).unwrap_or_default();
        job.key = if names.is_empty() {
            job.base_key.clone()
        } else {
            vary::variant_key(&job.base_key, &names, &job.headers)
        };
        let etag = oh.headers.get(header::ETAG).map(|v| v.as_bytes());
        let slice_size = self.slice_size as u32;
        let meta = Arc::new(ObjectMeta {
            status: status_of_response(oh.status),
            headers: stored_headers(&oh.headers),
            length: total,
            slice_size,
            id: object_id(&job.key, etag, Some(total), slice_size),
            stored_at: unix(SystemTime::now()),
            policy,
        });
        // Visible from memory at once; the disk write does not hold up the first byte.
        let mut records = vec![(meta_key(&job.key), meta.encode())];
        if !names.is_empty() {
            records.push((meta_key(&job.base_key), Record::encode_vary(&names)));
        }
        for (k, v) in &records {
            self.cache.insert_memory_now(k, v.clone());
        }
        let cache = self.cache.clone();
        tokio::spawn(async move {
            for (k, v) in records {
                if let Err(e) = cache.insert(&k, v).await {
                    tracing::warn!(error = %e, "object description not stored on disk");
                }
            }
        });
        let s = meta.slice_size as u64;
        let first = body_start / s;
        let wanted_last = job.needed(meta.status, total).map_or(0, |r| r.end / s);
        // A one-byte probe covers no slice (unless the object is one byte long).
        let covers = total > 0
            && (oh.status != StatusCode::PARTIAL_CONTENT
                || content_length(&oh.headers) != Some(1)
                || total == 1);
        let keys: Vec<Vec<u8>> = (first..=wanted_last)
            .map(|i| meta.slice_key(i))
            .take_while(|k| !self.cache.contains(k))
            .collect();
        let run = (covers && !keys.is_empty())
            .then(|| self.coalescer.register_run(&keys))
            .flatten();
        (meta, run)
    }

    fn spawn_fill(
        &self,
        job: &Job,
        meta: &Arc<ObjectMeta>,
        slices: Vec<Arc<Inflight>>,
        run: Arc<Run>,
        origin: OriginResponse,
        body_start: u64,
    ) {
        let fill = RunFill {
            cache: self.cache.clone(),
            coalescer: self.coalescer.clone(),
            meta: meta.clone(),
            key: job.key.clone(),
            first: body_start / meta.slice_size as u64,
            slices,
            run,
            metrics: self.metrics.clone(),
            upstream: self.upstream.clone(),
        };
        tokio::spawn(fill.fill(origin, body_start));
    }

    /// Revalidates a stale response without a client waiting (stale-while-revalidate): a 304
    /// refreshes it; a new version is stored and filled whole.
    pub(crate) fn revalidate_in_background(
        &self,
        job: &Job,
        guard: DiscoveryGuard,
        stale: ObjectMeta,
        conditionals: Vec<(HeaderName, HeaderValue)>,
    ) {
        let this = self.clone();
        let mut job = Job {
            route: job.route.clone(),
            upstream_path: job.upstream_path.clone(),
            base_key: job.base_key.clone(),
            key: job.key.clone(),
            method: Method::GET,
            is_head: false,
            headers: job.headers.clone(),
            range: None,
            if_range: None,
            held: Vec::new(),
        };
        tokio::spawn(async move {
            let Ok(up) = this.origin_request(&job, "bytes=0-", &conditionals) else {
                return;
            };
            this.metrics
                .origin_requests
                .with_label_values(&[&job.route.name])
                .inc();
            let Ok(origin) = this.upstream.send(&job.route, &up).await else {
                return;
            };
            let oh = &origin.header;
            if oh.status == StatusCode::NOT_MODIFIED {
                if this.refresh(&job, &stale, &oh.headers).await.is_some() {
                    guard.resolve(Discovery::Ready);
                }
                this.upstream.release(origin).await;
                return;
            }
            let policy = Policy::new(
                oh.status,
                &oh.headers,
                SystemTime::now(),
                job.route.overrides,
            );
            let storable = policy.storable(&job.headers, &oh.headers).is_ok()
                && matches!(oh.status, StatusCode::OK | StatusCode::PARTIAL_CONTENT);
            match layout(oh).filter(|&(start, _)| storable && start == 0) {
                Some(l) => {
                    let (meta, run) = this.describe(&mut job, &origin.header, policy, l).await;
                    guard.resolve(Discovery::Ready);
                    if let Some((run, slices)) = run {
                        // Keep the run alive until it is over: nobody else may be reading. An
                        // hour bounds an origin that stops sending without closing.
                        let interest = run.interest();
                        this.spawn_fill(&job, &meta, slices, run, origin, 0);
                        let over = interest.run().finished();
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_secs(3600), over).await;
                        drop(interest);
                    }
                }
                None => drop(guard),
            }
        });
    }

    /// Forwards a response that is not stored, trimmed to what the client asked for.
    async fn forward(
        &self,
        session: &mut Session,
        job: &mut Job,
        mut origin: OriginResponse,
        layout: Option<(u64, u64)>,
        why: &str,
        fwd: &'static str,
    ) -> Result<Outcome> {
        let oh = &origin.header;
        if oh.status == StatusCode::RANGE_NOT_SATISFIABLE || oh.status == StatusCode::NOT_MODIFIED {
            // Only our widened range was refused (an empty object, say), or an odd origin
            // answered validators the client never sent: ask as the client did.
            return Ok(Outcome::PassThrough(fwd));
        }
        let mut cs = CacheStatus::fwd(fwd);
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
        let wanted = match &job.range {
            Some(r) => range::evaluate(r, total),
            None => RangeRequest::Full,
        };
        let (code, r) = match wanted {
            RangeRequest::Single(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
            _ => (
                StatusCode::OK,
                (total > 0).then(|| ByteRange {
                    start: 0,
                    end: total - 1,
                }),
            ),
        };
        // The body holds bytes body_start..=body_end of the object; the client's range must lie
        // inside (a one-byte probe, or an origin that shortened its 206, do not cover it).
        let body_end = body_end(oh, total);
        let covered = r.is_none_or(|r| r.start >= body_start && r.end <= body_end);
        if !covered
            || (code == StatusCode::OK && body_start > 0)
            || wanted == RangeRequest::Unsatisfiable
        {
            return Ok(Outcome::PassThrough(fwd));
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

    /// Copies `len` body bytes after skipping `skip` (all of it for `u64::MAX`), ending the
    /// client response.
    async fn pipe(
        &self,
        session: &mut Session,
        job: &Job,
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
        job: &mut Job,
        mut origin: OriginResponse,
        policy: Policy,
        fwd: &'static str,
    ) -> Result<Outcome> {
        let oh = &origin.header;
        let mut cs = CacheStatus::fwd(fwd);
        // Unknown-length variants are not worth the bookkeeping: forwarded, not stored.
        cs.stored = vary::names(&oh.headers).is_some_and(|n| n.is_empty());
        if !cs.stored {
            cs.detail = Some("vary".into());
        }
        let resp = downstream_header(oh.status, &oh.headers, None, &cs)?;
        let etag = oh.headers.get(header::ETAG).map(|v| v.as_bytes());
        let id = object_id(&job.key, etag, None, self.slice_size as u32);
        let mut meta = ObjectMeta {
            status: 200,
            headers: stored_headers(&oh.headers),
            length: 0,
            slice_size: self.slice_size as u32,
            id,
            stored_at: unix(SystemTime::now()),
            policy,
        };
        let mut fill = SliceFill::new(self.cache.clone(), id, self.slice_size as usize);
        session.write_response_header(Box::new(resp), false).await?;
        loop {
            match origin.read_body().await {
                Ok(Some(chunk)) => {
                    meta.length += chunk.len() as u64;
                    if cs.stored {
                        fill.push(chunk.clone()).await;
                    }
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
        if cs.stored {
            // Described before the client sees the end, so a client that has it all finds it cached.
            match fill.finish(&job.key, &meta).await {
                Ok(()) => self.metrics.fills.with_label_values(&["stored"]).inc(),
                Err(e) => {
                    tracing::warn!(key = %job.key, error = %e, "not cached");
                    self.metrics.fills.with_label_values(&["store_error"]).inc();
                }
            }
        }
        session.write_response_body(None, true).await?;
        self.upstream.release(origin).await;
        Ok(Outcome::Served(cs))
    }
}

/// The status an object is stored with: a 206 stands for the whole (200) representation.
fn status_of_response(s: StatusCode) -> u16 {
    if s == StatusCode::PARTIAL_CONTENT {
        200
    } else {
        s.as_u16()
    }
}

/// Follows a slice to its end (keeping its run alive meanwhile).
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
