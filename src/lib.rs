//! Strata, an edge caching reverse proxy: the proxy crate.
//!
//! # Layout
//! Leaves first; every arrow points up this list, never down.
//! - [`config`]: the YAML configuration as plain data, parsed and checked value by value.
//! - [`http`]: HTTP caching rules as the RFCs state them (headers, ranges, preconditions,
//!   freshness, Vary, `Cache-Status`); no session, no storage.
//! - `metrics`: the Prometheus counters every layer increments, with typed labels.
//! - `origin`: how origins are reached: `Backend` (`Http` or `S3`: paths, keys, signing,
//!   replicas) and the pooled client that fills use.
//! - `routing`: routes by path prefix, path normalisation, JWT auth.
//! - `cache`: Strata's own data plane for GET and HEAD, one pipeline
//!   lookup → decide → fetch → serve over the `strata-storage` tiers, with coalescing and
//!   slice fills below it.
//! - `proxy`: the Pingora `ProxyHttp` phases: routing, pass-through, invalidation, error answers.
//! - `node`: assembling a node from its configuration, the admin listener, shutdown.
//! - [`cli`]: the `strata` commands.
//! - `fuzz`: entry points of the fuzz targets in `fuzz/` (feature `fuzzing` only).
//! - `bench`: parts of the hit path the benches in `benches/` measure (feature `bench` only).
//!
//! # Data flow
//! ```text
//! client ─► proxy::StrataProxy::request_filter
//!             routing (normalised path) → auth → origin::Backend (method allowed? upstream path)
//!             ├─ GET/HEAD ─► cache::CachePlane::handle
//!             │                lookup ─► decide ─► fetch (leader: origin, describe, fill) ─► serve
//!             │                                  └─ follow another request's fetch ─┘
//!             └─ other methods, bypasses ─► Pingora's proxy phases (origin::Backend::prepare);
//!                                           a successful write invalidates its target
//! ```
//! `strata-storage` (a crate of its own) holds the tiers; it knows nothing of HTTP.

pub mod cli;
pub mod config;
pub mod http;

#[cfg(feature = "fuzzing")]
pub mod fuzz;

#[cfg(feature = "bench")]
pub mod bench;

mod cache;
mod metrics;
mod node;
mod origin;
mod proxy;
mod routing;
