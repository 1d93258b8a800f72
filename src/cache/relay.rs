//! Step 4, serve (responses that are not stored as slices): an origin response relayed to the
//! client, trimmed to what it asked for; or a storable 200 of unknown length, streamed whole
//! while it is stored slice by slice and described once complete.

use std::time::SystemTime;

use bytes::Bytes;

use http::{header, HeaderMap, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use crate::cache::fill::{Tee, UnsizedFill};
use crate::cache::job::Job;
use crate::cache::key::object_id;
use crate::cache::plane::{CachePlane, Outcome};
use crate::cache::record::{stored_headers, ObjectMeta};
use crate::http::cache_status::{CacheStatus, Detail, Forward, CACHE_STATUS};
use crate::http::date::unix_ms;
use crate::http::freshness::Policy;
use crate::http::headers::{content_length, end_to_end};
use crate::http::range::{self, body_end, BodySpan, ByteRange, RangeRequest};
use crate::http::vary;
use crate::metrics::{ByteSource, FillResult};
use crate::origin::OriginResponse;

/// Forwards a response that is not stored as an object, trimmed to what the client asked for;
/// with a `tee`, the whole slices it passes are stored.
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    plane: &CachePlane,
    session: &mut Session,
    job: &mut Job,
    mut origin: OriginResponse,
    span: Option<BodySpan>,
    why: Detail,
    fwd: Forward,
    mut tee: Option<Tee>,
) -> Result<Outcome> {
    let oh = &origin.header;
    if oh.status == StatusCode::RANGE_NOT_SATISFIABLE || oh.status == StatusCode::NOT_MODIFIED {
        // Only our widened range was refused (an empty object, say), or an odd origin
        // answered validators the client never sent: ask as the client did.
        return Ok(Outcome::PassThrough(fwd));
    }
    let mut cs = CacheStatus::fwd(fwd);
    cs.detail = Some(why);
    if tee.is_some() {
        cs.detail = None;
        cs.stored = true;
    }
    if job.is_head {
        return head(plane, session, job, origin, span, cs).await;
    }
    let sized = matches!(oh.status, StatusCode::OK | StatusCode::PARTIAL_CONTENT);
    let Some(BodySpan {
        start: body_start,
        total,
    }) = span.filter(|_| sized)
    else {
        // Not a representation (an error, a redirect): our Range did not shape it.
        let length = content_length(&oh.headers);
        let resp = downstream_header(plane, oh.status, &oh.headers, length, &cs)?;
        let no_body = oh.status == StatusCode::NO_CONTENT || oh.status == StatusCode::NOT_MODIFIED;
        if length.is_some() {
            // A body of known length waits in the write buffer unless pushed (a chunked one
            // is sent chunk by chunk already).
            (plane.push_writes)(session);
        }
        job.header_written();
        session
            .write_response_header(Box::new(resp), no_body || length == Some(0))
            .await?;
        if !no_body && length != Some(0) {
            pipe(plane, session, job, &mut origin, 0, u64::MAX, None).await?;
        }
        plane.upstream.release(origin).await;
        return Ok(job.served(cs));
    };
    // The client's range applies only if its `If-Range` matches this response.
    let header = |n: header::HeaderName| oh.headers.get(n).map(|v| v.as_bytes());
    let applies = job.range_applies(header(header::ETAG), header(header::LAST_MODIFIED));
    let wanted = match job.range.as_ref().filter(|_| applies) {
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
    let body_end = body_end(oh.status, &oh.headers, total);
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
    resp.append_header(header::VIA, plane.via.clone())?;
    resp.insert_header(CACHE_STATUS.clone(), cs.header_value())?;
    // The body goes out as the origin sends it.
    (plane.push_writes)(session);
    job.header_written();
    session
        .write_response_header(Box::new(resp), r.is_none())
        .await?;
    let held = match r {
        Some(r) => {
            let skip = r.start - body_start;
            pipe(
                plane,
                session,
                job,
                &mut origin,
                skip,
                r.len(),
                tee.as_mut(),
            )
            .await?
        }
        None => None,
    };
    if let Some(mut tee) = tee {
        // The rest of the body (at most the slices Strata asked for) goes to the tiers, and
        // the object is described, before the client gets its last bytes: a client that has
        // the whole response finds what it covered stored.
        loop {
            match origin.read_body().await {
                Ok(Some(chunk)) => tee.push(chunk).await,
                Ok(None) => {
                    plane.upstream.release(origin).await;
                    break;
                }
                Err(_) => break,
            }
        }
        tee.finish().await;
    }
    if let Some(last) = held {
        session.write_response_body(Some(last), true).await?;
    }
    Ok(job.served(cs))
}

/// Answers a HEAD with the header of an origin response that is not stored: the whole
/// representation's (a 206 to Strata's own range stands for its 200). The body is not read;
/// its connection is closed rather than drained.
async fn head(
    plane: &CachePlane,
    session: &mut Session,
    job: &mut Job,
    origin: OriginResponse,
    span: Option<BodySpan>,
    cs: CacheStatus,
) -> Result<Outcome> {
    let oh = &origin.header;
    let (status, length) = match (oh.status, span) {
        (StatusCode::PARTIAL_CONTENT, Some(s)) => (StatusCode::OK, Some(s.total)),
        (StatusCode::PARTIAL_CONTENT, None) => {
            return Ok(Outcome::PassThrough(cs.fwd.unwrap_or(Forward::Miss)))
        }
        (s, _) => (s, content_length(&oh.headers)),
    };
    let mut resp = downstream_header(plane, status, &oh.headers, length, &cs)?;
    resp.remove_header(&header::CONTENT_RANGE);
    if length.is_none() {
        resp.remove_header(&header::TRANSFER_ENCODING);
    }
    job.header_written();
    session.write_response_header(Box::new(resp), true).await?;
    Ok(job.served(cs))
}

/// Copies `len` body bytes after skipping `skip` (all of it for `u64::MAX`), ending the
/// client response; with a `tee`, the last piece is not written but returned, for the caller
/// to write once the tee is done.
async fn pipe(
    plane: &CachePlane,
    session: &mut Session,
    job: &Job,
    origin: &mut OriginResponse,
    mut skip: u64,
    len: u64,
    mut tee: Option<&mut Tee>,
) -> Result<Option<Bytes>> {
    let mut left = len;
    while left > 0 {
        let chunk = match origin.read_body().await {
            Ok(Some(c)) => c,
            Ok(None) if len == u64::MAX => break,
            Ok(None) | Err(_) => {
                return Error::e_explain(ErrorType::ReadError, "origin body broke off")
            }
        };
        if let Some(t) = tee.as_deref_mut() {
            t.push(chunk.clone()).await;
        }
        let s = skip.min(chunk.len() as u64);
        skip -= s;
        let chunk = chunk.slice(s as usize..);
        let take = (chunk.len() as u64).min(left);
        left -= take;
        if take > 0 {
            plane
                .metrics
                .served(&job.route.name, ByteSource::Origin, take);
            let end = left == 0 && len != u64::MAX;
            let piece = chunk.slice(..take as usize);
            if end && tee.is_some() {
                return Ok(Some(piece));
            }
            session.write_response_body(Some(piece), end).await?;
        }
    }
    if len == u64::MAX {
        session.write_response_body(None, true).await?;
    }
    Ok(None)
}

/// A storable 200 without a length: streamed whole to the client while stored slice by
/// slice; the object is described only once its body has arrived complete.
pub(super) async fn stream_unsized(
    plane: &CachePlane,
    session: &mut Session,
    job: &mut Job,
    mut origin: OriginResponse,
    policy: Policy,
    fwd: Forward,
) -> Result<Outcome> {
    let oh = &origin.header;
    let mut cs = CacheStatus::fwd(fwd);
    // Unknown-length variants are not worth the bookkeeping: forwarded, not stored.
    cs.stored = vary::names(&oh.headers).is_some_and(|n| n.is_empty());
    if !cs.stored {
        cs.detail = Some(Detail::Vary);
    }
    let resp = downstream_header(plane, oh.status, &oh.headers, None, &cs)?;
    let etag = oh.headers.get(header::ETAG).map(|v| v.as_bytes());
    let id = object_id(&job.key, etag, None, plane.slice_size as u32);
    let mut meta = ObjectMeta {
        full_header: Default::default(),
        status: 200,
        headers: stored_headers(&oh.headers),
        length: 0,
        slice_size: plane.slice_size as u32,
        id,
        stored_at_ms: unix_ms(SystemTime::now()),
        policy,
    };
    let mut fill = UnsizedFill::new(plane.cache.clone(), id, plane.slice_size as usize);
    let mut stored = cs.stored;
    // Not pushed: a body of unknown length goes out chunk by chunk already.
    job.header_written();
    session.write_response_header(Box::new(resp), false).await?;
    loop {
        match origin.read_body().await {
            Ok(Some(chunk)) => {
                meta.length += chunk.len() as u64;
                if meta.length > plane.max_object_size {
                    // Too large to store: the rest is only relayed, and nothing is described.
                    stored = false;
                }
                if stored {
                    fill.push(chunk.clone()).await;
                }
                plane
                    .metrics
                    .served(&job.route.name, ByteSource::Origin, chunk.len() as u64);
                if let Err(e) = session.write_response_body(Some(chunk), false).await {
                    plane.metrics.fill(FillResult::Cancelled);
                    return Err(e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(route = %job.route.name, error = %e, "origin body failed");
                plane.metrics.fill(FillResult::Incomplete);
                return Error::e_explain(ErrorType::ReadError, "origin body broke off");
            }
        }
    }
    if stored {
        // Described before the client sees the end, so a client that has it all finds it cached.
        match fill.finish(&job.key, &meta).await {
            Ok(()) => plane.metrics.fill(FillResult::Stored),
            Err(e) => {
                tracing::warn!(key = %job.key, error = %e, "not cached");
                plane.metrics.fill(FillResult::StoreError);
            }
        }
    }
    session.write_response_body(None, true).await?;
    plane.upstream.release(origin).await;
    Ok(job.served(cs))
}

/// The header of a relayed response: the origin's end-to-end fields, the length (or chunked),
/// and `Cache-Status`.
fn downstream_header(
    plane: &CachePlane,
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
    resp.append_header(header::VIA, plane.via.clone())?;
    resp.insert_header(CACHE_STATUS.clone(), cs.header_value())?;
    Ok(resp)
}
