//! Step 2, decide: what a request does with what lookup found: serve it, serve it stale while
//! it is revalidated, lead a fetch from the origin, or follow another request's fetch.

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use tokio::sync::watch;

use crate::cache::coalesce::{Discovery, DiscoveryGuard, Role};
use crate::cache::job::Job;
use crate::cache::key::meta_key;
use crate::cache::lookup::Found;
use crate::cache::plane::CachePlane;
use crate::cache::record::ObjectMeta;
use crate::http::cache_status::{CacheStatus, Detail, Forward};
use crate::http::freshness::Reuse;
use crate::http::headers::cache_control;

/// A stored response being revalidated by a fetch.
pub(super) struct Stale {
    /// The stored response.
    pub(super) meta: ObjectMeta,
    /// May be served if the origin fails (stale-if-error).
    pub(super) if_error: bool,
}

/// What a request does next.
pub(super) enum Decision {
    /// Serve this stored response.
    Serve {
        /// The stored response.
        meta: Arc<ObjectMeta>,
        /// Its `Cache-Status` so far.
        status: CacheStatus,
    },
    /// Serve this stale response now; with a guard, this request also starts the one
    /// background revalidation (stale-while-revalidate).
    ServeWhileRevalidating {
        /// The stored response.
        meta: Arc<ObjectMeta>,
        /// Its `Cache-Status` so far.
        status: CacheStatus,
        /// Held by the request that revalidates.
        guard: Option<DiscoveryGuard>,
    },
    /// Fetch from the origin, as the leader of this key (revalidating `stale` if given).
    Fetch {
        /// Resolves the followers.
        guard: DiscoveryGuard,
        /// The stored response being revalidated.
        stale: Option<Stale>,
        /// Why the request goes to the origin.
        fwd: Forward,
    },
    /// Wait for the leader of this key, then look again.
    Follow {
        /// The leader's outcome.
        rx: watch::Receiver<Discovery>,
        /// Why the request goes to the origin.
        fwd: Forward,
        /// The stored response the leader revalidates, served if the origin fails and
        /// stale-if-error allows.
        stale: Option<Stale>,
    },
    /// The client forbids going to the origin and nothing usable is stored (504).
    OnlyIfCached(Forward),
}

/// Decides what to do with what the cache holds.
pub(super) async fn decide(plane: &CachePlane, job: &mut Job, found: Found) -> Decision {
    match found {
        Found::Object(meta) => stored(plane, job, meta).await,
        Found::VaryMiss => miss(plane, job, Forward::VaryMiss),
        Found::Miss => miss(plane, job, Forward::UriMiss),
    }
}

/// A stored response exists: use it if it may be, else revalidate it.
async fn stored(plane: &CachePlane, job: &mut Job, meta: Arc<ObjectMeta>) -> Decision {
    if !slices_available(plane, job, &meta) {
        let _ = plane.cache.remove(&meta_key(&job.key)).await;
        return miss(plane, job, Forward::Partial);
    }
    let now = SystemTime::now();
    let mut status = CacheStatus::hit();
    status.ttl = Some(meta.policy.ttl(now));
    let Reuse::Validate {
        by_request,
        while_revalidate,
        if_error,
    } = meta.policy.reuse(&job.headers, now)
    else {
        return Decision::Serve { meta, status };
    };
    // RFC 9211: "stale" when the response needs validation, "request" when only the
    // request's directives forbid using it.
    let fwd = if by_request {
        Forward::Request
    } else {
        Forward::Stale
    };
    if only_if_cached(&job.headers) {
        return Decision::OnlyIfCached(fwd);
    }
    if while_revalidate {
        // Served stale now; one background revalidation, shared by everyone who asks meanwhile.
        let guard = match plane.coalescer.discover(&job.key) {
            Role::Leader(guard) => Some(guard),
            Role::Follower(_) => None,
        };
        status.detail = Some(Detail::StaleWhileRevalidate);
        return Decision::ServeWhileRevalidating {
            meta,
            status,
            guard,
        };
    }
    // A copy to revalidate (and change): never the shared decoding itself.
    let meta = ObjectMeta::clone(&meta);
    match plane.coalescer.discover(&job.key) {
        Role::Leader(guard) => Decision::Fetch {
            guard,
            stale: Some(Stale { meta, if_error }),
            fwd,
        },
        Role::Follower(rx) => Decision::Follow {
            rx,
            fwd,
            stale: Some(Stale { meta, if_error }),
        },
    }
}

/// Nothing usable is stored: fetch it (one fetch for all who ask at once).
fn miss(plane: &CachePlane, job: &Job, fwd: Forward) -> Decision {
    if only_if_cached(&job.headers) {
        return Decision::OnlyIfCached(fwd);
    }
    // A HEAD is fetched as a GET and stored (its first slice at least), then answered from
    // what was stored, as a GET would be.
    match plane.coalescer.discover(&job.key) {
        Role::Leader(guard) => Decision::Fetch {
            guard,
            stale: None,
            fwd,
        },
        Role::Follower(rx) => Decision::Follow {
            rx,
            fwd,
            stale: None,
        },
    }
}

/// Whether every slice the request needs is stored or being filled. A stored object
/// without a strong ETag can only be served from what one fetch stored: slices of two
/// fetches may belong to two versions (RFC 9111 §3.4).
fn slices_available(plane: &CachePlane, job: &Job, meta: &ObjectMeta) -> bool {
    if job.is_head || meta.strong_etag().is_some() {
        return true;
    }
    let applies = job.range_applies(meta.header("etag"), meta.header("last-modified"));
    let Some(r) = job.needed(meta.status, meta.length, applies) else {
        return true;
    };
    let (a, b) = r.slices(meta.slice_size as u64);
    (a..=b).all(|i| {
        let k = meta.slice_key(i);
        plane.cache.contains(&k) || plane.coalescer.get(&k).is_some()
    })
}

/// Whether the client forbids going to the origin (`Cache-Control: only-if-cached`).
fn only_if_cached(h: &HeaderMap) -> bool {
    cache_control(h).iter().any(|(d, _)| d == "only-if-cached")
}
