//! Step 4, serve: answers from a stored object: preconditions, then the (ranged) body slice by
//! slice, each from the tiers or, when missing, from a fill in flight or one started for it.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use strata_storage::Tier;

use crate::cache::coalesce::{SliceReader, Step};
use crate::cache::describe::restore_records;
use crate::cache::fill::{register, RunFill};
use crate::cache::job::Job;
use crate::cache::key::meta_key;
use crate::cache::plane::{CachePlane, Outcome};
use crate::cache::record::ObjectMeta;
use crate::http::cache_status::{CacheStatus, Forward, CACHE_STATUS};
use crate::http::conditional::{self, Validators, NOT_MODIFIED_HEADERS};
use crate::http::range::{self, if_range_matches, ByteRange, RangeRequest};
use crate::metrics::ByteSource;

/// Tries for one slice of a response already started: from the tiers, or a fill.
const SLICE_ATTEMPTS: u32 = 4;

/// The pause before the second try; it doubles for each next one (50, 100, 200 ms).
const RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// The validators preconditions are evaluated against.
fn validators(meta: &ObjectMeta) -> Validators<'_> {
    Validators {
        status: meta.status,
        etag: meta.header("etag"),
        last_modified: meta.header("last-modified"),
    }
}

/// Writes a response without a body (304, 412, 416), letting the fills the request started
/// run on for the cache.
async fn bodiless(
    plane: &CachePlane,
    session: &mut Session,
    job: &mut Job,
    mut resp: ResponseHeader,
    cs: CacheStatus,
) -> Result<Outcome> {
    resp.append_header(header::VIA, plane.via.clone())?;
    resp.insert_header(CACHE_STATUS.clone(), cs.header_value())?;
    job.header_written();
    session.write_response_header(Box::new(resp), true).await?;
    job.detach();
    Ok(job.served(cs))
}

/// Answers from a stored object: preconditions, then the (ranged) body from slices — cached
/// ones served, missing ones fetched or followed.
pub(super) async fn answer(
    plane: &CachePlane,
    session: &mut Session,
    job: &mut Job,
    meta: Arc<ObjectMeta>,
    mut cs: CacheStatus,
) -> Result<Outcome> {
    let now = SystemTime::now();
    let age = meta.policy.age(now);
    if let Some(code) = conditional::evaluate(&job.method, &job.headers, validators(&meta)) {
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
        return bodiless(plane, session, job, resp, cs).await;
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
            return bodiless(plane, session, job, resp, cs).await;
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
        // A HEAD reads no slice: the stored header answers it whole.
        let slices = br
            .filter(|_| !job.is_head)
            .map(|r| r.slices(meta.slice_size as u64));
        // The common case first: the first slice reads back from the tiers (then only the
        // others need to be found).
        if let Some((a, _)) = slices {
            prefetched = cached_slice(plane, &meta, a).await;
        }
        // A first slice that did not read back is fine if it is complete in its fill (on its
        // way to the disk: served from there); one still arriving makes a partial hit; one
        // that is nowhere was lost (it was indexed when the request was decided).
        let (first_ready, first_ok) = match (slices, &prefetched) {
            (Some((a, _)), None) => match plane.coalescer.get(&meta.slice_key(a)) {
                Some(fill) if fill.is_complete() => (true, true),
                Some(_) => (false, true),
                None => (true, false),
            },
            _ => (true, true),
        };
        let ready = first_ready
            && slices.is_none_or(|(a, b)| (a + 1..=b).all(|i| slice_ready(plane, &meta, i)));
        if ready && !first_ok && meta.strong_etag().is_none() {
            // A stored slice was lost and, without a strong validator, cannot be fetched
            // apart: the object is dropped and this request goes to the origin whole.
            let _ = plane.cache.remove(&meta_key(&job.key)).await;
            return Ok(Outcome::PassThrough(Forward::Partial));
        }
        if !(ready && first_ok) {
            cs.hit = false;
            cs.fwd = Some(Forward::Partial);
        }
    }
    serve(plane, session, job, meta, cs, code, br, age, prefetched).await
}

/// Writes the response header and the (ranged) body of a stored object, `age` seconds old
/// (as the request's preconditions were judged: one clock read per answer).
#[allow(clippy::too_many_arguments)]
async fn serve(
    plane: &CachePlane,
    session: &mut Session,
    job: &mut Job,
    meta: Arc<ObjectMeta>,
    cs: CacheStatus,
    code: StatusCode,
    br: Option<ByteRange>,
    age: u64,
    prefetched: Option<Cached>,
) -> Result<Outcome> {
    let resp = stored_response(&meta, code, br, age, &plane.via, &cs)?;
    let body = br.filter(|_| !job.is_head);
    if !cs.hit {
        // Some slice may come from the origin: the header goes out at once, and the bytes
        // as they arrive. (A revalidated or stale answer is pushed too; it costs one send.)
        (plane.push_writes)(session);
    }
    job.header_written();
    session
        .write_response_header(Box::new(resp), body.is_none())
        .await?;
    match body {
        Some(r) => stream_range(plane, session, job, &meta, r, prefetched).await?,
        None if job.is_head => job.settle(plane.lock_timeout).await,
        None => job.detach(),
    }
    Ok(job.served(cs))
}

/// The response header of an answer from a stored object: its stored fields, then this
/// answer's length, range, `Via`, `Age` and `Cache-Status`. An answer with the whole body
/// (any status but 206) starts from the header kept with the record's decoding, built by the
/// first such answer: only `Age` and `Cache-Status` differ from one to the next.
pub(crate) fn stored_response(
    meta: &ObjectMeta,
    code: StatusCode,
    br: Option<ByteRange>,
    age: u64,
    via: &http::HeaderValue,
    cs: &CacheStatus,
) -> Result<ResponseHeader> {
    let mut resp = if code == StatusCode::PARTIAL_CONTENT {
        base_response(meta, code, br, via)?
    } else {
        meta.full_header
            .get_or_build(|| base_response(meta, code, br, via))?
    };
    resp.insert_header(header::AGE, age)?;
    resp.insert_header(CACHE_STATUS.clone(), cs.header_value())?;
    Ok(resp)
}

/// What an answer's header holds whoever asks: status, stored fields, length, range, `Via`.
fn base_response(
    meta: &ObjectMeta,
    code: StatusCode,
    br: Option<ByteRange>,
    via: &http::HeaderValue,
) -> Result<ResponseHeader> {
    // Without the map of names as the origin spelled them: each hit clones this header (Pingora
    // takes it owned), and one map is half the cost of two. Known names go out title-cased
    // (`Content-Type`), others lower-case; field names are case-insensitive (RFC 9110 §5.1).
    let mut resp = ResponseHeader::build_no_case(code, Some(meta.headers.len() + 5))?;
    for (name, value) in &meta.headers {
        resp.append_header(name.clone(), value.as_slice())?;
    }
    // RFC 9110 §8.6: no Content-Length on a 204.
    if code != StatusCode::NO_CONTENT {
        resp.insert_header(header::CONTENT_LENGTH, br.map_or(0, |r| r.len()))?;
    }
    if let (StatusCode::PARTIAL_CONTENT, Some(r)) = (code, br) {
        resp.insert_header(header::CONTENT_RANGE, r.content_range(meta.length))?;
    }
    resp.append_header(header::VIA, via.clone())?;
    Ok(resp)
}

/// Writes bytes `r` of the object, slice by slice, from the cache or from fills.
async fn stream_range(
    plane: &CachePlane,
    session: &mut Session,
    job: &mut Job,
    meta: &Arc<ObjectMeta>,
    r: ByteRange,
    mut prefetched: Option<Cached>,
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
        for attempt in 0..SLICE_ATTEMPTS {
            if attempt > 0 {
                // The last try failed (the fill was abandoned or stalled): the origin is not
                // asked again at once.
                tokio::time::sleep(RETRY_BACKOFF * (1 << (attempt - 1))).await;
            }
            let cached = match prefetched.take() {
                Some(v) => Some(v),
                None => cached_slice(plane, meta, idx).await,
            };
            if let Some((v, source)) = cached {
                job.at(idx);
                plane
                    .metrics
                    .served(&job.route.name, source, hi - lo - sent);
                let part = v.slice((lo + sent) as usize..hi as usize);
                session.write_response_body(Some(part), is_last).await?;
                sent = hi - lo;
                break;
            }
            let Some(mut reader) = follow_or_fetch(plane, job, meta, idx, last, private) else {
                continue;
            };
            // Only now, following the slice: a fill waits for a client to be at its slice, and
            // one told so earlier could fill it and let it go before this client follows it.
            job.at(idx);
            if !reader.is_complete() {
                // From here the origin feeds the response (a fill in progress, or a slice
                // lost since the lookup): its bytes go out as they arrive. A hit whose
                // slices are all at hand still leaves in one send.
                (plane.push_writes)(session);
            }
            let mut pos = 0u64;
            // The response's last bytes wait until their slice is complete: a client that has
            // the whole response will find it cached (in its fill until the tiers hold it).
            let mut last_part = None;
            let outcome = loop {
                match reader.next(plane.lock_timeout).await {
                    Step::Chunk(c) => {
                        let (a, b) = (pos, pos + c.len() as u64);
                        pos = b;
                        let (from, to) = (a.max(lo + sent), b.min(hi));
                        if from < to {
                            let part = c.slice((from - a) as usize..(to - a) as usize);
                            plane
                                .metrics
                                .served(&job.route.name, ByteSource::Origin, to - from);
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
            return Error::e_explain(ErrorType::ReadError, "slice unavailable; response aborted");
        }
    }
    Ok(())
}

/// Whether slice `idx` can be served without the origin: stored, or complete in a fill.
fn slice_ready(plane: &CachePlane, meta: &ObjectMeta, idx: u64) -> bool {
    let k = meta.slice_key(idx);
    plane.cache.contains(&k) || plane.coalescer.get(&k).is_some_and(|i| i.is_complete())
}

/// A stored slice that reads back whole, and the tier it came from.
async fn cached_slice(plane: &CachePlane, meta: &ObjectMeta, idx: u64) -> Option<Cached> {
    let len = usize::try_from(meta.slice_len(idx)).ok()?;
    let (v, tier) = plane.cache.get_sized(&meta.slice_key(idx), len).await?;
    let source = match tier {
        Tier::Memory => ByteSource::Memory,
        Tier::Disk => ByteSource::Disk,
    };
    (v.len() == len).then_some((v, source))
}

/// A slice read from the tiers, and which one.
type Cached = (Bytes, ByteSource);

/// A reader for slice `idx`: following a fill in flight, or starting one for the run of
/// missing slices from `idx` up to `last`. `private` skips a stalled shared fill.
fn follow_or_fetch(
    plane: &CachePlane,
    job: &mut Job,
    meta: &Arc<ObjectMeta>,
    idx: u64,
    last: u64,
    private: bool,
) -> Option<SliceReader> {
    if let Some(r) = job.first_reader.take_if(|r| r.idx() == idx && !private) {
        return Some(r);
    }
    if !private {
        if let Some(inf) = plane.coalescer.get(&meta.slice_key(idx)) {
            job.hold(inf.run.interest());
            return Some(inf.reader(idx));
        }
    }
    let (run, slices, last) = if private {
        let (run, slices) = plane.coalescer.private_run();
        (run, slices, idx)
    } else {
        let registered = register(plane, meta, idx, last)?;
        if let Some(first) = registered.1.first() {
            restore_records(plane, job, meta, first);
        }
        registered
    };
    job.hold(run.interest());
    let reader = slices[0].reader(idx);
    let fill = RunFill::new(
        plane,
        meta.clone(),
        job.key.clone(),
        (idx, last),
        slices,
        run,
    );
    crate::cache::spawn_boxed(fill.fetch(job.route.clone(), job.upstream_path.clone()));
    Some(reader)
}
