//! The cache plane's shared parts, and what it answers the proxy: below every step of the
//! pipeline, so that no step imports the file that drives them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, StatusCode};
use pingora::proxy::Session;
use strata_storage::TieredCache;

use crate::cache::coalesce::Coalescer;
use crate::cache::memo::Memo;
use crate::cache::purge::Purges;
use crate::http::cache_status::{CacheStatus, Forward};
use crate::metrics::Metrics;
use crate::origin::Upstream;

/// Bytes a TLS client connection buffers before sending: a small response's header and body.
/// Pingora sends a body of known length only when the buffer overflows or the body ends, so a
/// streamed response's header leaves with its first bytes past this much. (A plain connection
/// buffers nothing but what `proxy::held` holds: less than this.)
pub(crate) const RESPONSE_WRITE_BUFFER: usize = 16 * 1024;

/// What the cache plane did with a request.
pub(crate) enum Outcome {
    /// A response was written; it carried this status, and its header left at this time.
    Served(CacheStatus, Option<Instant>),
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
    /// Decoded records of recent hits.
    pub(crate) memo: Arc<Memo>,
    /// `cache.slice`.
    pub(crate) slice_size: u64,
    /// `cache.lock_timeout`: how long a waiting client tolerates a fill without progress.
    pub(crate) lock_timeout: Duration,
    /// `cache.max_object_size`: larger responses are forwarded, not stored.
    pub(crate) max_object_size: u64,
    /// Whether the memory tier can show a new object's description at once (`cache.memory`
    /// is not zero); if not, descriptions are written to disk before anyone is told.
    pub(crate) memory_holds_records: bool,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
    /// Purge rules lookups apply.
    pub(crate) purges: Arc<Purges>,
    /// What Strata adds to `Via` (`1.1` and the `via` pseudonym), on origin requests and on
    /// responses.
    pub(crate) via: HeaderValue,
    /// Makes the rest of a response reach its client as it is written, for answers fed by an
    /// origin; the proxy's client stream does it (`proxy::timeouts::push_writes`).
    pub(crate) push_writes: fn(&Session),
}
