//! Strata, an edge caching reverse proxy: the proxy crate.
//!
//! # Layout
//! - [`config`]: the YAML configuration and its validation.
//! - [`route`]: routes, origins and path mapping.
//! - [`auth`]: JWT-guarded routes.
//! - [`s3`]: S3 buckets as origins (SigV4).
//! - [`proxy`]: the Pingora `ProxyHttp` (routing, pass-through, invalidation).
//! - [`cached`]: the cacheable GET/HEAD path: hits from the tiers, misses filled from origins.
//! - [`fill`]: storing a streaming body as slices.
//! - [`object`]: the metadata record and keys of a cached object.
//! - [`headers`]: hop-by-hop filtering and header parsing helpers.
//! - [`cache_status`]: the RFC 9211 `Cache-Status` header.
//! - [`upstream`]: pooled origin connections for fills.
//! - [`metrics`], [`admin`]: Prometheus metrics and the admin listener.
//! - [`shutdown`]: draining on SIGTERM/SIGINT.
//! - [`server`]: assembling the node from a configuration.
//! - [`tools`]: `strata inspect` and `strata format`.

pub mod admin;
pub mod auth;
pub mod cache_status;
pub mod cached;
pub mod coalesce;
pub mod conditional;
pub mod config;
pub mod exchange;
pub mod fill;
pub mod freshness;
pub mod headers;
pub mod metrics;
pub mod object;
pub mod proxy;
pub mod range;
pub mod route;
pub mod s3;
pub mod server;
pub mod shutdown;
pub mod slicefetch;
pub mod tools;
pub mod upstream;
pub mod vary;
