//! Strata's cache plane: GET and HEAD of shareable requests, served from the tiers, revalidated
//! when stale, and filled from origins when missing, as one pipeline of steps.
//!
//! ```text
//! cache::handle
//!   lookup  (lookup.rs)  the stored record of the URL or its variant       -> Found
//!   decide  (decide.rs)  fresh, stale, partial or missing; leader/follower -> Decision
//!   fetch   (fetch.rs)   the leader asks the origin and decides what the response
//!                        becomes; (describe.rs) a new object described, its
//!                        run registered and its fill started               -> Fetched
//!   serve   (serve.rs)   a stored object: preconditions, ranges, slices from the tiers or
//!                        from fills in flight
//!           (relay.rs)   an origin response that is not stored as slices
//! ```
//!
//! Each step hands a typed outcome to the next and never calls back into an earlier one;
//! this file alone moves a request from step to step. Below the steps: `plane` (the shared
//! parts, and the [`Outcome`] for the proxy), [`job`] (the request),
//! [`key`] (every key), [`record`] (the stored record), `memo` (records decoded for earlier
//! hits, kept while their bytes are the same), [`coalesce`] (fills in flight, shared
//! by all who want them), [`fill`] (writing a body into slices), [`purge`] (rules that make
//! older stored responses misses) and [`inspect`] (what is stored for a key, for operators).
//!
//! Strata drives origin fetches of cacheable requests itself rather than through Pingora's
//! proxy phases: the body filters of `ProxyHttp` are synchronous, so they cannot wait for a
//! slice to reach the cache, and a slice-aware fetch needs to choose its own ranges, share one
//! fetch between clients and stitch cached and fetched slices into one response.

use std::sync::Arc;

use http::StatusCode;
use pingora::proxy::Session;
use pingora::Result;

use crate::http::cache_status::{CacheStatus, Detail, Forward};
use crate::http::freshness::Overrides;
use crate::routing::Route;

pub(crate) mod coalesce;
mod decide;
mod describe;
mod fetch;
mod fill;
pub(crate) mod inspect;
mod job;
pub(crate) mod key;
mod lookup;
mod memo;
mod plane;
pub(crate) mod purge;
mod record;
mod relay;
mod serve;

use coalesce::{wait_discovery, Discovery};
use decide::Decision;
use fetch::Fetched;
use job::Job;
use lookup::Found;
pub(crate) use plane::{CachePlane, ErrorAnswer, Outcome, RESPONSE_WRITE_BUFFER};
use record::ObjectMeta;

/// What the benches in `benches/` measure of the hit path (feature `bench`).
#[cfg(feature = "bench")]
pub(crate) mod bench {
    pub(crate) use super::record::{stored_headers, ObjectMeta, Record};
    pub(crate) use super::serve::stored_response;
}

/// Fuzz entry: a stored record decodes to nothing, or to a record that encodes back to the
/// same bytes (a record of the previous format, to one that decodes the same).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_record(data: &[u8]) {
    match record::Record::decode(data) {
        Some(record::Record::Object(m)) if data.starts_with(b"SOM2") => {
            let again = record::Record::decode(&m.encode());
            assert!(
                matches!(again, Some(record::Record::Object(n)) if n.stored_at_ms == m.stored_at_ms)
            );
        }
        Some(record::Record::Object(m)) => assert_eq!(&m.encode()[..], data),
        Some(record::Record::Vary(names)) => {
            assert_eq!(&record::Record::encode_vary(&names)[..], data)
        }
        None => {}
    }
}

/// Spawns a task of a miss (a fill, a slice's store, a record write) with its future boxed.
///
/// tokio keeps a task's future inline in the task and copies it whole as it spawns, finishes and
/// drops it; these futures take a few KiB each, and a miss spawns several before its client's
/// first byte. Boxed, they are copied once, into the box.
pub(crate) fn spawn_boxed<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(Box::pin(fut))
}

/// Serves a GET or HEAD for `host` (normalised) from the cache or through it, under the
/// freshness `overrides` of the route's rule for its path.
pub(crate) async fn handle(
    plane: &CachePlane,
    session: &mut Session,
    route: &Arc<Route>,
    host: Option<&str>,
    upstream_path: &str,
    overrides: &Overrides,
) -> Result<Outcome> {
    let mut job = Job::new(route, host, upstream_path, overrides, session.req_header());
    let found = lookup::find(plane, &mut job).await;
    if let Found::Object(meta) = &found {
        if refuses_credentials(&job, meta) {
            return Ok(Outcome::PassThrough(Forward::Bypass));
        }
    }
    match decide::decide(plane, &mut job, found).await {
        Decision::Serve { meta, status } => {
            serve::answer(plane, session, &mut job, meta, status).await
        }
        Decision::ServeWhileRevalidating {
            meta,
            status,
            guard,
        } => {
            if let Some(guard) = guard {
                fetch::revalidate_in_background(plane, &job, guard, (*meta).clone());
            }
            serve::answer(plane, session, &mut job, meta, status).await
        }
        Decision::OnlyIfCached(fwd) => Ok(Outcome::Refused(ErrorAnswer {
            status: StatusCode::GATEWAY_TIMEOUT,
            cache_status: CacheStatus::fwd_with(fwd, Detail::OnlyIfCached),
            message: "not in cache (only-if-cached)".into(),
        })),
        // The miss path's futures (an origin exchange, a fill) are boxed: inline, they made
        // this future 19 KiB, and every request, hits too, paid for moving it (Pingora moves
        // the request's future into a box of its own); boxed, it is under 5 KiB.
        Decision::Fetch { guard, stale, fwd } => {
            let fetched = Box::pin(fetch::lead(plane, &mut job, guard, stale, fwd)).await;
            if matches!(
                fetched,
                Fetched::Stored { .. }
                    | Fetched::Unsized { .. }
                    | Fetched::Unstored { .. }
                    | Fetched::Incomplete { .. }
            ) {
                // This client's response comes from this exchange: it gets its interim
                // responses first. (A request passed through gets the origin's own.)
                write_interim(session, &mut job).await?;
            }
            match fetched {
                // A stored object (the common miss) is answered as a hit is, inline: `deliver`'s
                // future is 14 KiB for the relays it may run, moved into a box of its own.
                Fetched::Stored { meta, status } => {
                    serve::answer(plane, session, &mut job, meta, status).await
                }
                other => Box::pin(deliver(plane, session, &mut job, other)).await,
            }
        }
        Decision::Follow { rx, fwd, stale } => {
            // Waits for the request that is fetching this object, then serves what it stored.
            match wait_discovery(rx, plane.lock_timeout).await {
                Discovery::Ready => {
                    if let Found::Object(meta) = lookup::find(plane, &mut job).await {
                        if refuses_credentials(&job, &meta) {
                            return Ok(Outcome::PassThrough(Forward::Bypass));
                        }
                        plane.metrics.coalesced(&route.name);
                        let mut status = CacheStatus::fwd(fwd);
                        status.collapsed = true;
                        return serve::answer(plane, session, &mut job, meta, status).await;
                    }
                }
                Discovery::Failed(code) => {
                    plane.metrics.coalesced(&route.name);
                    return share_failure(plane, session, &mut job, stale, code, fwd).await;
                }
                Discovery::Pending | Discovery::Uncoalescable => {}
            }
            Ok(Outcome::PassThrough(fwd))
        }
    }
}

/// Strata's choice (RFC 9111 §3.5 allows more): a request with `Authorization` is answered
/// from a stored response only when that response says it may be shared with such requests.
fn refuses_credentials(job: &Job, meta: &ObjectMeta) -> bool {
    job.credentials && !meta.policy.shared_with_credentials()
}

/// Writes the origin's interim responses (103 Early Hints, 102) to the client, which an
/// HTTP/1.0 client never gets (RFC 9110 §15.2).
async fn write_interim(session: &mut Session, job: &mut Job) -> Result<()> {
    let interim = std::mem::take(&mut job.interim);
    if session.req_header().version == http::Version::HTTP_10 {
        return Ok(());
    }
    for h in interim {
        session.write_response_header(Box::new(h), false).await?;
    }
    Ok(())
}

/// Hands what the origin fetch produced to the serving step that writes it.
async fn deliver(
    plane: &CachePlane,
    session: &mut Session,
    job: &mut Job,
    fetched: Fetched,
) -> Result<Outcome> {
    match fetched {
        Fetched::Stored { meta, status } => serve::answer(plane, session, job, meta, status).await,
        // A HEAD gets the header only, and a body of unknown length is not stored for it.
        Fetched::Unsized { origin, fwd, .. } if job.is_head => {
            relay::forward(
                plane,
                session,
                job,
                origin,
                None,
                Detail::Unsliceable,
                fwd,
                None,
            )
            .await
        }
        Fetched::Unsized {
            origin,
            policy,
            fwd,
        } => relay::stream_unsized(plane, session, job, origin, policy, fwd).await,
        Fetched::Unstored {
            origin,
            span,
            why,
            fwd,
        } => relay::forward(plane, session, job, origin, span, why, fwd, None).await,
        Fetched::Incomplete {
            origin,
            span,
            tee,
            fwd,
        } => {
            let why = Detail::Unsliceable;
            relay::forward(plane, session, job, origin, Some(span), why, fwd, Some(tee)).await
        }
        Fetched::PassThrough(fwd) => Ok(Outcome::PassThrough(fwd)),
        Fetched::Failed(answer) => Ok(Outcome::Refused(answer)),
    }
}

/// A follower whose leader's fetch failed: serves the stale response when stale-if-error
/// allows, else answers with the failure's status. The origin is not asked again: a storm of
/// clients on a failing origin costs it one request per object at a time.
async fn share_failure(
    plane: &CachePlane,
    session: &mut Session,
    job: &mut Job,
    stale: Option<decide::Stale>,
    code: u16,
    fwd: Forward,
) -> Result<Outcome> {
    if let Some(s) = stale.filter(|s| s.if_error) {
        let mut fetched = fetch::stale_on_error(s, Some(code), fwd);
        if let Fetched::Stored { status, .. } = &mut fetched {
            status.collapsed = true;
        }
        return Box::pin(deliver(plane, session, job, fetched)).await;
    }
    let mut cache_status = CacheStatus::fwd_with(fwd, Detail::OriginFailed);
    cache_status.collapsed = true;
    cache_status.fwd_status = Some(code);
    Ok(Outcome::Refused(ErrorAnswer {
        status: StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
        cache_status,
        message: "origin failed".into(),
    }))
}
