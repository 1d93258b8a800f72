//! Step 3, fetch: the leader of a key asks the origin (the first fetch of an object, or the
//! revalidation of a stale one, in the foreground or in the background for
//! stale-while-revalidate) and decides what each kind of response becomes.
//!
//! The leader asks from the slice boundary at or before the wanted bytes, describes the object
//! in the cache as soon as the response header arrives, and hands the body to a slice fill;
//! clients asking meanwhile wait for that description and read the same fill.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use pingora::http::RequestHeader;

use crate::cache::coalesce::{Discovery, DiscoveryGuard};
use crate::cache::decide::Stale;
use crate::cache::describe::{describe, object_meta, spawn_fill};
use crate::cache::fill::Tee;
use crate::cache::job::Job;
use crate::cache::key::meta_key;
use crate::cache::plane::{CachePlane, ErrorAnswer};
use crate::cache::record::{stored_headers, ObjectMeta, Record};
use crate::http::cache_status::{CacheStatus, Detail, Forward};
use crate::http::conditional::is_strong_etag;
use crate::http::date::unix_ms;
use crate::http::freshness::Policy;
use crate::http::headers::end_to_end;
use crate::http::range::{self, body_end, body_span, BodySpan, RangeHint};
use crate::http::vary;
use crate::metrics::OriginError;
use crate::origin::{OriginResponse, UpstreamError};

/// What the origin fetch produced, for the serving step.
pub(super) enum Fetched {
    /// Serve this stored object (new, refreshed by a 304, or stale because the origin failed).
    Stored {
        /// The object.
        meta: Arc<ObjectMeta>,
        /// Its `Cache-Status` so far.
        status: CacheStatus,
    },
    /// A storable 200 without a length: stream it while storing it.
    Unsized {
        /// The origin's response.
        origin: OriginResponse,
        /// Its caching policy.
        policy: Policy,
        /// Why the request went to the origin.
        fwd: Forward,
    },
    /// A response that is not stored: relay it, trimmed to what the client asked for.
    Unstored {
        /// The origin's response.
        origin: OriginResponse,
        /// Where its body sits in the representation, when its header says.
        span: Option<BodySpan>,
        /// Why it is not stored.
        why: Detail,
        /// Why the request went to the origin.
        fwd: Forward,
    },
    /// A partial body that does not start on a slice boundary: relay it, trimmed to what the
    /// client asked for, storing the whole slices inside it.
    Incomplete {
        /// The origin's response.
        origin: OriginResponse,
        /// Where its body sits in the representation.
        span: BodySpan,
        /// Stores its whole slices.
        tee: Tee,
        /// Why the request went to the origin.
        fwd: Forward,
    },
    /// Proxy the client's own request instead.
    PassThrough(Forward),
    /// The origin failed and nothing can be served: answer with this error.
    Failed(ErrorAnswer),
}

/// The client headers a fill forwards, besides those a stored Vary names: a fill's response
/// is shared with every client, so nothing that is one client's own (`Cookie`,
/// `Authorization`, `X-Forwarded-*`, `Origin`, `User-Agent`…) may shape it. Strata sets the
/// range, validators and `Host` itself.
const FILL_HEADERS: [HeaderName; 3] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
];

/// Whether a fill for `job` forwarded the request header `name`: the shared ones, those a
/// stored Vary names, and `Authorization` when the request carries it (its response is
/// stored only if it says it may be shared).
fn forwarded(job: &Job, name: &str) -> bool {
    FILL_HEADERS.iter().any(|h| h.as_str() == name)
        || job.vary_names.iter().any(|n| n == name)
        || (job.credentials && name == header::AUTHORIZATION.as_str())
}

/// The origin request for `job`: its headers, Strata's range, and validators if any.
fn origin_request(
    plane: &CachePlane,
    job: &Job,
    range: &str,
    conditionals: &[(HeaderName, HeaderValue)],
) -> pingora::Result<RequestHeader> {
    let mut up = RequestHeader::build(Method::GET, job.upstream_path.as_bytes(), None)?;
    for (name, value) in end_to_end(&job.headers) {
        if forwarded(job, name.as_str()) {
            up.append_header(name, value)?;
        }
    }
    up.insert_header(header::HOST, job.route.backend.host_header())?;
    up.insert_header(header::RANGE, range.to_string())?;
    up.insert_header(header::VIA, plane.via.clone())?;
    for (name, value) in conditionals {
        up.insert_header(name.clone(), value.clone())?;
    }
    Ok(up)
}

/// The range to ask the origin for: from the slice boundary at or before the wanted bytes
/// to the slice end after them.
fn origin_range(plane: &CachePlane, job: &Job) -> String {
    let s = plane.slice_size;
    if job.is_head {
        // A HEAD needs the header only: the first slice comes with it, and is stored.
        return format!("bytes=0-{}", s - 1);
    }
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

/// Fetches for `job` as the leader of its key.
pub(super) async fn lead(
    plane: &CachePlane,
    job: &mut Job,
    guard: DiscoveryGuard,
    stale: Option<Stale>,
    fwd: Forward,
) -> Fetched {
    let conditionals = stale
        .as_ref()
        .map(|s| s.meta.conditionals())
        .unwrap_or_default();
    let up = match origin_request(plane, job, &origin_range(plane, job), &conditionals) {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(route = %job.route.name, error = %e, "origin request not built");
            return failed(
                StatusCode::BAD_GATEWAY,
                fwd,
                Detail::OriginUnreachable,
                "origin request failed",
            );
        }
    };
    let mut origin = match plane
        .upstream
        .send(&job.route.backend, &job.route.name, &up)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(route = %job.route.name, error = %e, "origin request failed");
            // A timeout is a gateway timeout (504); any other failure a bad gateway (502).
            let status = if e.kind() == OriginError::Timeout {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            guard.resolve(Discovery::Failed(status.as_u16()));
            if let Some(s) = stale.filter(|s| s.if_error) {
                return stale_on_error(s, None, fwd);
            }
            let detail = match e {
                UpstreamError::Credentials { .. } => Detail::OriginCredentials,
                _ => Detail::OriginUnreachable,
            };
            return failed(status, fwd, detail, &e.public_message());
        }
    };
    job.interim = std::mem::take(&mut origin.interim);
    let status = origin.header.status;
    let revalidating = stale.is_some();
    if let Some(s) = stale {
        if status == StatusCode::NOT_MODIFIED {
            if let Some(meta) = refresh(plane, job, &s.meta, &origin.header.headers).await {
                guard.resolve(Discovery::Ready);
                plane.upstream.release(origin).await;
                let mut cs = CacheStatus::fwd(fwd);
                cs.fwd_status = Some(304);
                return Fetched::Stored {
                    meta: Arc::new(meta),
                    status: cs,
                };
            }
            // A 304 for another version than the stored one, or one that makes it unstorable:
            // drop ours and let the client's own request through (it never asked for a 304).
            let _ = plane.cache.remove(&meta_key(&job.key)).await;
            return Fetched::PassThrough(fwd);
        } else if s.if_error && status.is_server_error() {
            guard.resolve(Discovery::Failed(status.as_u16()));
            return stale_on_error(s, Some(status.as_u16()), fwd);
        }
    }
    adopt(plane, job, guard, origin, fwd, revalidating).await
}

/// An origin failure with nothing to serve instead: `status` (502, or 504 for a timeout)
/// naming what failed.
fn failed(status: StatusCode, fwd: Forward, detail: Detail, message: &str) -> Fetched {
    Fetched::Failed(ErrorAnswer {
        status,
        cache_status: CacheStatus::fwd_with(fwd, detail),
        message: message.to_string(),
    })
}

/// Serves a stale response because the origin failed (stale-if-error).
pub(super) fn stale_on_error(s: Stale, origin_status: Option<u16>, fwd: Forward) -> Fetched {
    let mut cs = CacheStatus::fwd_with(fwd, Detail::StaleIfError);
    cs.fwd_status = origin_status;
    cs.ttl = Some(s.meta.policy.ttl(SystemTime::now()));
    Fetched::Stored {
        meta: Arc::new(s.meta),
        status: cs,
    }
}

/// Merges a 304 into the stored response (RFC 9111 §4.3.4) and stores the result; `None`
/// when the 304 selects another version, or when the merged response may no longer be stored
/// (a 304 that adds `Set-Cookie`, `private` or `no-store`): the caller drops the stored one.
async fn refresh(
    plane: &CachePlane,
    job: &Job,
    old: &ObjectMeta,
    h: &HeaderMap,
) -> Option<ObjectMeta> {
    let now = SystemTime::now();
    let (policy, merged) = old
        .policy
        .revalidated(&old.header_map(), h, now, &job.overrides)?;
    // Only the response decides here: a client's own `no-store` must not evict the entry.
    if let Err(why) = policy.storable(&HeaderMap::new(), &merged) {
        tracing::info!(key = %job.key, reason = why.as_str(), "revalidated response no longer storable");
        return None;
    }
    let meta = ObjectMeta {
        headers: stored_headers(&merged),
        policy,
        stored_at_ms: unix_ms(now),
        ..old.clone()
    };
    if let Err(e) = plane.cache.insert(&meta_key(&job.key), meta.encode()).await {
        tracing::warn!(key = %job.key, error = %e, "refreshed headers not stored on disk");
    }
    Some(meta)
}

/// Decides what to do with a new origin response: store and serve it, stream it while
/// storing (no length), or forward it unstored.
async fn adopt(
    plane: &CachePlane,
    job: &mut Job,
    guard: DiscoveryGuard,
    origin: OriginResponse,
    fwd: Forward,
    revalidating: bool,
) -> Fetched {
    let oh = &origin.header;
    let now = SystemTime::now();
    let policy = Policy::new(oh.status, &oh.headers, now, &job.overrides);
    // A 304 is never storable (not an understood status): it is forwarded below.
    let verdict = policy.storable(&job.headers, &oh.headers);
    let span = body_span(oh.status, &oh.headers);
    let sliceable = |s: BodySpan| s.start.is_multiple_of(plane.slice_size);
    // Without a strong ETag, slices this body does not cover could never be added later
    // (two fetches may be two versions): such a body is only stored if it covers what the
    // client asked for.
    let header = |n: header::HeaderName| oh.headers.get(n).map(|v| v.as_bytes());
    // With an `If-Range` this response does not match, the client wants all of it.
    let range_applies = job.range_applies(header(header::ETAG), header(header::LAST_MODIFIED));
    let covers_need = |s: BodySpan| {
        if job.is_head {
            // A HEAD reads no bytes: a body from the start describes the object.
            return s.start == 0;
        }
        let end = body_end(oh.status, &oh.headers, s.total);
        // Whatever the status, the client's range is what it asked of this response.
        job.needed(200, s.total, range_applies)
            .is_none_or(|n| s.start <= n.start && n.end <= end)
    };
    let strong = oh
        .headers
        .get(header::ETAG)
        .is_some_and(|e| is_strong_etag(e.as_bytes()));
    // A response that varies on a header this fill did not send was chosen without it: it is
    // no variant of anyone's. Its Vary record is kept, so the next fill sends the header.
    let names = vary::names(&oh.headers).unwrap_or_default();
    if verdict.is_ok() && names.iter().any(|n| !forwarded(job, n)) {
        let record = Record::encode_vary(&names);
        plane
            .cache
            .insert_memory_now(&meta_key(&job.base_key), record.clone());
        if let Err(e) = plane
            .cache
            .insert_disk(&meta_key(&job.base_key), record)
            .await
        {
            tracing::warn!(key = %job.base_key, error = %e, "vary record not stored on disk");
        }
        guard.resolve(Discovery::Uncoalescable);
        return Fetched::Unstored {
            origin,
            span,
            why: Detail::Vary,
            fwd,
        };
    }
    if span.is_some_and(|s| s.total > plane.max_object_size) {
        guard.resolve(Discovery::Uncoalescable);
        return Fetched::Unstored {
            origin,
            span,
            why: Detail::TooLarge,
            fwd,
        };
    }
    match (verdict, span) {
        (Ok(()), Some(s)) if sliceable(s) && (strong || covers_need(s)) => {
            let (meta, run) = describe(plane, job, &origin.header, policy, s).await;
            if let Some(registered) = run {
                job.hold(registered.0.interest());
                // Following the first slice from now on: the fill may complete it (and fail to
                // store it) before this client's serving step gets to it.
                if !job.is_head {
                    job.first_reader = registered
                        .1
                        .first()
                        .map(|p| p.reader(s.start / plane.slice_size));
                }
                spawn_fill(plane, job, &meta, registered, origin, s.start);
            }
            guard.resolve(Discovery::Ready);
            let mut cs = CacheStatus::fwd(fwd);
            cs.stored = true;
            if revalidating {
                cs.fwd_status = Some(meta.status);
            }
            Fetched::Stored { meta, status: cs }
        }
        // The origin sent a range of its own choosing: the client gets what it asked for from
        // it, and the slices it holds whole are kept for later ranges (RFC 9111 §3.3).
        (Ok(()), Some(s))
            if names.is_empty()
                && oh.status == StatusCode::PARTIAL_CONTENT
                && !sliceable(s)
                && Tee::covers_a_slice(
                    plane.slice_size,
                    s.total,
                    s.start,
                    body_end(oh.status, &oh.headers, s.total),
                ) =>
        {
            guard.resolve(Discovery::Uncoalescable);
            let meta = object_meta(plane, &job.key, oh, policy, s.total);
            let key = job.key.clone();
            let cache = plane.cache.clone();
            let tee = Tee::new(cache, plane.metrics.clone(), meta, key, s.start);
            Fetched::Incomplete {
                origin,
                span: s,
                tee,
                fwd,
            }
        }
        // Only a chunked body proves its end (the terminating chunk); a body delimited by the
        // connection closing looks the same whether it ended or was cut off: never stored.
        (Ok(()), None) if oh.status == StatusCode::OK && is_chunked(&oh.headers) => {
            guard.resolve(Discovery::Uncoalescable);
            Fetched::Unsized {
                origin,
                policy,
                fwd,
            }
        }
        (Ok(()), None) if oh.status == StatusCode::OK => {
            guard.resolve(Discovery::Uncoalescable);
            Fetched::Unstored {
                origin,
                span,
                why: Detail::CloseDelimited,
                fwd,
            }
        }
        (verdict, _) => {
            guard.resolve(if oh.status.is_server_error() {
                Discovery::Failed(oh.status.as_u16())
            } else {
                Discovery::Uncoalescable
            });
            let why = verdict.err().map_or(Detail::Unsliceable, Detail::NotStored);
            Fetched::Unstored {
                origin,
                span,
                why,
                fwd,
            }
        }
    }
}

/// Revalidates a stale response without a client waiting (stale-while-revalidate): a 304
/// refreshes it; a new version is stored and filled whole.
pub(super) fn revalidate_in_background(
    plane: &CachePlane,
    job: &Job,
    guard: DiscoveryGuard,
    stale: ObjectMeta,
) {
    let plane = plane.clone();
    let mut job = job.whole_object();
    tokio::spawn(async move {
        let conditionals = stale.conditionals();
        let Ok(up) = origin_request(&plane, &job, "bytes=0-", &conditionals) else {
            return;
        };
        let route = job.route.clone();
        let Ok(origin) = plane.upstream.send(&route.backend, &route.name, &up).await else {
            return;
        };
        let oh = &origin.header;
        if oh.status == StatusCode::NOT_MODIFIED {
            if refresh(&plane, &job, &stale, &oh.headers).await.is_some() {
                guard.resolve(Discovery::Ready);
            } else {
                // Not this version, or no longer storable: the next request fetches anew.
                let _ = plane.cache.remove(&meta_key(&job.key)).await;
            }
            plane.upstream.release(origin).await;
            return;
        }
        let policy = Policy::new(oh.status, &oh.headers, SystemTime::now(), &job.overrides);
        let storable = policy.storable(&job.headers, &oh.headers).is_ok()
            && matches!(oh.status, StatusCode::OK | StatusCode::PARTIAL_CONTENT);
        let fits = |s: &BodySpan| s.total <= plane.max_object_size;
        match body_span(oh.status, &oh.headers).filter(|s| storable && s.start == 0 && fits(s)) {
            Some(s) => {
                let (meta, run) = describe(&plane, &mut job, &origin.header, policy, s).await;
                guard.resolve(Discovery::Ready);
                if let Some(registered) = run {
                    // Keep the run alive until it is over: nobody else may be reading. An
                    // hour bounds an origin that stops sending without closing.
                    let interest = registered.0.interest();
                    spawn_fill(&plane, &job, &meta, registered, origin, 0);
                    let over = interest.run().finished();
                    let _ = tokio::time::timeout(Duration::from_secs(3600), over).await;
                    drop(interest);
                }
            }
            None => {
                drop(guard);
                // A new version this task cannot store (no length, a range, another status):
                // the stale one must go, or every request in the window would serve it and
                // revalidate again. The next request fetches in the foreground. A failing
                // origin (5xx) leaves it, as stale-if-error would.
                if !oh.status.is_server_error() {
                    let _ = plane.cache.remove(&meta_key(&job.key)).await;
                }
            }
        }
    });
}

/// Whether a message's body is chunked (its last transfer coding, RFC 9112 §6.1).
fn is_chunked(h: &HeaderMap) -> bool {
    h.get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}
