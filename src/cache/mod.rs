//! Strata's cache plane: GET and HEAD of shareable requests, served from the tiers, revalidated
//! when stale, and filled from origins when missing, as one pipeline of steps.
//!
//! ```text
//! CachePlane::handle
//!   lookup  (lookup.rs)  the stored record of the URL or its variant       -> Found
//!   decide  (decide.rs)  fresh, stale, partial or missing; leader/follower -> Decision
//!   fetch   (fetch.rs)   the leader asks the origin, describes the object,
//!                        starts its fill                                   -> Fetched
//!   serve   (serve.rs)   a stored object: preconditions, ranges, slices from the tiers or
//!                        from fills in flight
//!           (relay.rs)   an origin response that is not stored as slices
//! ```
//!
//! Each step hands a typed outcome to the next and never calls back into an earlier one;
//! this file alone moves a request from step to step. Below the steps: [`job`] (the request),
//! [`key`] (every key), [`record`] (the stored record), [`coalesce`] (fills in flight, shared
//! by all who want them) and [`fill`] (writing a body into slices).
//!
//! Strata drives origin fetches of cacheable requests itself rather than through Pingora's
//! proxy phases: the body filters of `ProxyHttp` are synchronous, so they cannot wait for a
//! slice to reach the cache, and a slice-aware fetch needs to choose its own ranges, share one
//! fetch between clients and stitch cached and fetched slices into one response.

use std::sync::Arc;
use std::time::Duration;

use http::{header, StatusCode};
use pingora::proxy::Session;
use pingora::Result;
use strata_storage::TieredCache;

use crate::http::cache_status::{CacheStatus, Detail, Forward};
use crate::metrics::Metrics;
use crate::origin::Upstream;
use crate::routing::Route;

pub(crate) mod coalesce;
mod decide;
mod fetch;
mod fill;
mod job;
pub(crate) mod key;
mod lookup;
mod record;
mod relay;
mod serve;

use coalesce::{wait_discovery, Coalescer, Discovery};
use decide::Decision;
use fetch::Fetched;
use job::Job;
use lookup::Found;

/// What the cache plane did with a request.
pub(crate) enum Outcome {
    /// A response was written; it carried this status.
    Served(CacheStatus),
    /// The request should be proxied as is, labelled with this forward reason.
    PassThrough(Forward),
    /// Nothing was written: answer the client with this error.
    Refused(ErrorAnswer),
}

/// An error answer the proxy writes for the cache plane (a small plain-text body).
pub(crate) struct ErrorAnswer {
    /// Its status.
    pub(crate) status: StatusCode,
    /// Its `Cache-Status`.
    pub(crate) cache_status: CacheStatus,
    /// The text of its body.
    pub(crate) message: String,
}

/// The cache plane of a node: the tiers, origin connections, fills in flight, and settings.
#[derive(Clone)]
pub(crate) struct CachePlane {
    /// The tiers.
    pub(crate) cache: Arc<TieredCache>,
    /// Connections to origins for fills.
    pub(crate) upstream: Arc<Upstream>,
    /// Fills in flight.
    pub(crate) coalescer: Arc<Coalescer>,
    /// `cache.slice`.
    pub(crate) slice_size: u64,
    /// `cache.lock_timeout`: how long a waiting client tolerates a fill without progress.
    pub(crate) lock_timeout: Duration,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
}

impl CachePlane {
    /// Serves a GET or HEAD from the cache or through it.
    pub(crate) async fn handle(
        &self,
        session: &mut Session,
        route: &Arc<Route>,
        upstream_path: &str,
    ) -> Result<Outcome> {
        // Strata's choice: requests with credentials are not answered from the shared cache.
        if session
            .req_header()
            .headers
            .contains_key(header::AUTHORIZATION)
        {
            return Ok(Outcome::PassThrough(Forward::Bypass));
        }
        let mut job = Job::new(route, upstream_path, session.req_header());
        let found = lookup::find(self, &mut job).await;
        match decide::decide(self, &mut job, found).await {
            Decision::Serve { meta, status } => {
                serve::answer(self, session, &mut job, meta, status).await
            }
            Decision::ServeWhileRevalidating {
                meta,
                status,
                guard,
            } => {
                if let Some(guard) = guard {
                    fetch::revalidate_in_background(self, &job, guard, (*meta).clone());
                }
                serve::answer(self, session, &mut job, meta, status).await
            }
            Decision::PassThrough(fwd) => Ok(Outcome::PassThrough(fwd)),
            Decision::OnlyIfCached(fwd) => Ok(Outcome::Refused(ErrorAnswer {
                status: StatusCode::GATEWAY_TIMEOUT,
                cache_status: CacheStatus::fwd_with(fwd, Detail::OnlyIfCached),
                message: "not in cache (only-if-cached)".into(),
            })),
            Decision::Fetch { guard, stale, fwd } => {
                let fetched = fetch::lead(self, &mut job, guard, stale, fwd).await;
                self.deliver(session, &mut job, fetched).await
            }
            Decision::Follow { rx, fwd } => {
                // Waits for the request that is fetching this object, then serves what it stored.
                if wait_discovery(rx, self.lock_timeout).await == Discovery::Ready {
                    if let Found::Object(meta) = lookup::find(self, &mut job).await {
                        let mut status = CacheStatus::fwd(fwd);
                        status.collapsed = true;
                        return serve::answer(self, session, &mut job, Arc::new(*meta), status)
                            .await;
                    }
                }
                Ok(Outcome::PassThrough(fwd))
            }
        }
    }

    /// Hands what the origin fetch produced to the serving step that writes it.
    async fn deliver(
        &self,
        session: &mut Session,
        job: &mut Job,
        fetched: Fetched,
    ) -> Result<Outcome> {
        match fetched {
            Fetched::Stored { meta, status } => {
                serve::answer(self, session, job, meta, status).await
            }
            Fetched::Unsized {
                origin,
                policy,
                fwd,
            } => relay::stream_unsized(self, session, job, origin, policy, fwd).await,
            Fetched::Unstored {
                origin,
                span,
                why,
                fwd,
            } => relay::forward(self, session, job, origin, span, why, fwd).await,
            Fetched::PassThrough(fwd) => Ok(Outcome::PassThrough(fwd)),
            Fetched::Failed(answer) => Ok(Outcome::Refused(answer)),
        }
    }
}
