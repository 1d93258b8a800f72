//! HTTP caching rules as the RFCs state them, and nothing else: no session, no storage.
//!
//! Every function here works on header maps and numbers, so the cache plane, the proxy and
//! the benches share one reading of the standards.
//!
//! - [`headers`]: hop-by-hop filtering, `Cache-Control` and `Content-Length` parsing.
//! - [`date`]: HTTP dates and Unix seconds, the one clock of stored records.
//! - [`range`]: `Range`, `If-Range` and `Content-Range`, and the span a response body covers.
//! - [`conditional`]: client preconditions answered from a stored response (RFC 9110 §13).
//! - [`freshness`]: freshness and reuse (RFC 9111, RFC 5861).
//! - [`storable`]: whether a response may be stored (RFC 9111 §3).
//! - [`revalidate`]: which stored response a 304 selects, and the response it updates.
//! - [`targeted`]: targeted cache-control fields such as `CDN-Cache-Control` (RFC 9213).
//! - [`vary`]: the request headers a response varies on, and their normal form.
//! - [`cache_status`]: the RFC 9211 `Cache-Status` field, with typed forward reasons and details.

pub mod cache_status;
pub mod conditional;
pub mod date;
pub mod freshness;
pub mod headers;
pub mod range;
pub mod revalidate;
pub mod storable;
pub mod targeted;
pub mod vary;
