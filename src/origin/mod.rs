//! How Strata reaches origins: one [`Backend`] per route answers every question that depends
//! on the kind of origin (where a path goes, what the cache key starts with, which methods
//! pass, how a request is addressed and signed), so no caller asks "is this S3?".
//!
//! - [`endpoint`]: origin URLs, and hosts with their resolved address cached.
//! - [`s3`]: S3 buckets: addressing, key encoding, SigV4 signing, replicas, error codes.
//! - [`client`]: Strata's own requests to origins (cache fills) over pooled connections.
//!
//! A fleet peer (another Strata node) will be one more variant of [`Backend`].

use http::{header, Method};
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::config::S3Config;

pub(crate) mod client;
pub(crate) mod endpoint;
pub(crate) mod s3;

pub(crate) use client::{OriginResponse, Upstream, UpstreamError};
pub(crate) use endpoint::{ConnectError, Endpoint, OriginUrl, UrlError};
use s3::{BucketError, S3Backend, SignError};

/// What serves a route.
#[derive(Debug)]
pub(crate) enum Backend {
    /// An HTTP(S) origin.
    Http(Endpoint),
    /// An S3 bucket, with replicas.
    S3(S3Backend),
}

/// Why a backend cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    /// `routes[].origin` is not a usable URL.
    #[error(transparent)]
    Origin(#[from] UrlError),
    /// A bucket of `routes[].s3` cannot work.
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// Neither or both of `origin` and `s3`.
    #[error("give exactly one of origin and s3")]
    OneOf,
}

impl BackendError {
    /// The key at fault, relative to the route.
    pub(crate) fn key(&self) -> String {
        match self {
            BackendError::Origin(_) | BackendError::OneOf => "origin".into(),
            BackendError::Bucket(b) => format!("s3.{}", b.key()),
        }
    }
}

/// A request path that addresses no object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no object key")]
pub(crate) struct NoKey;

impl Backend {
    /// Builds the backend of a route from `routes[].origin` or `routes[].s3`.
    pub(crate) fn new(
        origin: Option<&str>,
        s3: Option<&S3Config>,
    ) -> Result<Backend, BackendError> {
        match (origin, s3) {
            (Some(o), None) => Ok(Backend::Http(Endpoint::new(OriginUrl::parse(o)?))),
            (None, Some(s)) => Ok(Backend::S3(S3Backend::new(s)?)),
            _ => Err(BackendError::OneOf),
        }
    }

    /// Where requests go: the origin, or the primary bucket's endpoint.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        match self {
            Backend::Http(e) => e,
            Backend::S3(b) => &b.primary().endpoint,
        }
    }

    /// What the cache keys of a route over this backend start with: the origin's URL (for S3,
    /// the primary bucket's, so two buckets behind one endpoint never share keys).
    pub(crate) fn key_base(&self) -> String {
        let e = self.endpoint();
        match self {
            Backend::Http(_) => e.url.authority_url(),
            Backend::S3(b) => format!("{}{}", e.url.authority_url(), b.primary().request_path("")),
        }
    }

    /// The `Host` header of requests to it.
    pub(crate) fn host_header(&self) -> String {
        self.endpoint().url.host_header()
    }

    /// Whether requests with `method` may reach it (a read-only bucket takes GET and HEAD only).
    pub(crate) fn allows(&self, method: &Method) -> bool {
        match self {
            Backend::Http(_) => true,
            Backend::S3(b) => b.allow_writes || *method == Method::GET || *method == Method::HEAD,
        }
    }

    /// Whether `Location` and `Content-Location` of a write name objects of this origin that
    /// the write invalidates too (RFC 9111 §4.4); S3 keys are not URLs of the endpoint.
    pub(crate) fn invalidates_locations(&self) -> bool {
        matches!(self, Backend::Http(_))
    }

    /// Takes a client request as this backend needs it: an S3 route removes the client's own
    /// `Authorization` (its AWS credentials are not the bucket's: Strata signs for itself).
    pub(crate) fn accept(&self, req: &mut RequestHeader) {
        if let Backend::S3(_) = self {
            req.remove_header(&header::AUTHORIZATION);
        }
    }

    /// The origin path and query for a request that reached a route with `prefix`.
    ///
    /// `raw` is the path as sent and `normalized` as routed. An HTTP origin gets the normalised
    /// path under its base path. S3 keys are opaque (a double slash is part of the key): the
    /// raw path unless it only reached the route once normalised, encoded as S3 expects, and
    /// queries on reads are dropped (they would reach bucket APIs with Strata's credentials).
    pub(crate) fn upstream_path(
        &self,
        prefix: &str,
        raw: &str,
        normalized: &str,
        query: Option<&str>,
        method: &Method,
    ) -> Result<String, NoKey> {
        let strip = |p: &'_ str| -> String {
            let rest = p.strip_prefix(prefix).unwrap_or(p);
            rest.strip_prefix('/').unwrap_or(rest).to_string()
        };
        match self {
            Backend::Http(e) => {
                let rest = strip(normalized);
                Ok(match query {
                    Some(q) => format!("{}{rest}?{q}", e.url.base_path),
                    None => format!("{}{rest}", e.url.base_path),
                })
            }
            Backend::S3(_) => {
                let base = if raw.starts_with(prefix) {
                    raw
                } else {
                    normalized
                };
                let key = s3::encode_key(&strip(base));
                if key.is_empty() {
                    // An empty key would address the bucket itself (a listing).
                    return Err(NoKey);
                }
                let safe = *method == Method::GET || *method == Method::HEAD;
                Ok(match query.filter(|_| !safe) {
                    Some(q) => format!("/{key}?{q}"),
                    None => format!("/{key}"),
                })
            }
        }
    }

    /// A peer for pass-through requests (an S3 route's primary bucket).
    pub(crate) async fn peer(&self) -> Result<HttpPeer, ConnectError> {
        self.endpoint().peer().await
    }

    /// Addresses a pass-through request (whose URI is an upstream path) to the origin: its
    /// `Host`, and for S3 the bucket's path and a SigV4 signature.
    pub(crate) fn prepare(&self, req: &mut RequestHeader) -> Result<(), SignError> {
        match self {
            Backend::Http(e) => req
                .insert_header(header::HOST, e.url.host_header())
                .map_err(SignError::Header),
            Backend::S3(b) => b.primary().prepare(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(b: &Backend, prefix: &str, p: &str, q: Option<&str>) -> Result<String, NoKey> {
        b.upstream_path(prefix, p, p, q, &Method::GET)
    }

    #[test]
    fn maps_paths_onto_the_origin() {
        let b = Backend::new(Some("http://deb.debian.org/debian/"), None).unwrap();
        assert_eq!(
            path(&b, "/debian/", "/debian/dists/a", Some("x=1")).unwrap(),
            "/debian/dists/a?x=1"
        );
        assert_eq!(b.key_base(), "http://deb.debian.org");
        let b = Backend::new(Some("http://127.0.0.1:9000"), None).unwrap();
        assert_eq!(path(&b, "/", "/a/b", None).unwrap(), "/a/b");
        let b = Backend::new(Some("https://example.org/pub"), None).unwrap();
        assert_eq!(path(&b, "/mirror", "/mirror/x", None).unwrap(), "/pub/x");
        assert!(b.allows(&Method::DELETE));
    }

    #[test]
    fn s3_keys_are_raw_encoded_and_never_empty() {
        let cfg: S3Config = serde_norway::from_str(
            "{endpoint: 'http://127.0.0.1:9000', bucket: assets, region: us-east-1}",
        )
        .unwrap();
        let b = Backend::new(None, Some(&cfg)).unwrap();
        assert_eq!(b.key_base(), "http://127.0.0.1:9000/assets");
        let raw = b.upstream_path("/s3/", "/s3/a b//c", "/s3/a b/c", Some("acl"), &Method::GET);
        assert_eq!(raw.unwrap(), "/a%20b//c");
        let put = b.upstream_path("/s3/", "/s3/k", "/s3/k", Some("uploads"), &Method::PUT);
        assert_eq!(put.unwrap(), "/k?uploads");
        assert_eq!(path(&b, "/s3/", "/s3/", None), Err(NoKey));
        assert!(!b.allows(&Method::PUT) && b.allows(&Method::HEAD));
        assert!(!b.invalidates_locations());
    }
}
