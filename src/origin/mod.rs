//! How Strata reaches origins: one [`Backend`] per route answers every question that depends
//! on the kind of origin (where a path goes, what the cache key starts with, which methods
//! pass, how a request is addressed and signed), so no caller asks "is this S3?".
//!
//! - [`endpoint`]: origin URLs, and hosts with their resolved address cached.
//! - [`s3`]: S3 buckets: addressing, key encoding, SigV4 signing, replicas, error codes.
//! - [`client`]: Strata's own requests to origins (cache fills) over pooled connections.
//! - [`servers`]: several origin servers behind one route: weighted choice, health checks.
//!
//! A fleet peer (another Strata node) will be one more variant of [`Backend`].

use http::{header, Method};
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use std::sync::Arc;

use crate::config::{RouteConfig, S3Config, TimeoutsConfig};
use servers::Servers;

pub(crate) mod client;
pub(crate) mod endpoint;
pub(crate) mod s3;
pub(crate) mod servers;

pub(crate) use client::{OriginResponse, Upstream, UpstreamError};
pub(crate) use endpoint::{ConnectError, Endpoint, OriginUrl, UrlError};
use s3::{BucketError, S3Backend, SignError};

/// What serves a route.
#[derive(Debug)]
pub(crate) enum Backend {
    /// An HTTP(S) origin: one server, or several (`routes[].origins`).
    Http(Arc<Servers>),
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
    /// Not exactly one of `origin`, `origins` and `s3`.
    #[error("give exactly one of origin, origins and s3")]
    OneOf,
    /// A server of `routes[].origins` cannot work.
    #[error("{why}")]
    Server {
        /// Its index.
        index: usize,
        /// The key below it.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A `routes[].health_check` value cannot work.
    #[error("{why}")]
    HealthCheck {
        /// The key below `health_check`.
        key: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

impl BackendError {
    /// The key at fault, relative to the route.
    pub(crate) fn key(&self) -> String {
        match self {
            BackendError::Origin(_) | BackendError::OneOf => "origin".into(),
            BackendError::Server { index, key, .. } => format!("origins[{index}].{key}"),
            BackendError::HealthCheck { key, .. } => format!("health_check.{key}"),
            BackendError::Bucket(b) => format!("s3.{}", b.key()),
        }
    }
}

/// Why a backend refuses a request before it reaches the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// An S3 path that names the bucket itself, not an object (404).
    #[error("no object key")]
    NoKey,
    /// An S3 key with an empty leading segment or a `.` or `..` segment (400): S3 takes it
    /// literally, other tools resolve it, and neither is what the route promises.
    #[error("the object key has an empty or dot segment")]
    BadKey,
    /// An S3 write to a sub-resource other than those uploads need (403): `?acl`,
    /// `?retention`, `?versionId`… would act with Strata's credentials.
    #[error("this sub-resource cannot be written through this route")]
    SubResource,
}

/// The query parameters an S3 write may carry: those of single and multipart uploads (and
/// the operation hint some SDKs add).
const S3_WRITE_PARAMS: [&str; 4] = ["uploads", "uploadId", "partNumber", "x-id"];

impl Backend {
    /// Builds the backend of a route from `routes[].origin` or `routes[].s3`.
    pub(crate) fn new(
        origin: Option<&str>,
        s3: Option<&S3Config>,
        timeouts: TimeoutsConfig,
    ) -> Result<Backend, BackendError> {
        match (origin, s3) {
            (Some(o), None) => Ok(Backend::Http(Arc::new(Servers::new(
                vec![(Endpoint::new(OriginUrl::parse(o)?, timeouts), 1)],
                None,
                0,
            )))),
            (None, Some(s)) => Ok(Backend::S3(S3Backend::new(s, timeouts)?)),
            _ => Err(BackendError::OneOf),
        }
    }

    /// The backend of a route: `origin`, `origins` (several servers) or `s3`.
    pub(crate) fn from_route(cfg: &RouteConfig) -> Result<Backend, BackendError> {
        if cfg.origins.is_empty() {
            return Backend::new(cfg.origin.as_deref(), cfg.s3.as_ref(), cfg.timeouts);
        }
        if cfg.origin.is_some() || cfg.s3.is_some() {
            return Err(BackendError::OneOf);
        }
        if let Some(h) = &cfg.health_check {
            h.problem().map_or(Ok(()), |(key, why)| {
                Err(BackendError::HealthCheck { key, why })
            })?;
        }
        let mut list = Vec::new();
        for (index, o) in cfg.origins.iter().enumerate() {
            let bad = |key, why: String| BackendError::Server { index, key, why };
            let url = OriginUrl::parse(&o.url).map_err(|e| bad("url", e.to_string()))?;
            if let Some((first, _)) = list.first() {
                let first: &Endpoint = first;
                if first.url.base_path != url.base_path {
                    let why = format!(
                        "every server of a route serves the same path ({} here, {} first)",
                        url.base_path, first.url.base_path
                    );
                    return Err(bad("url", why));
                }
            }
            if o.weight == 0 {
                return Err(bad("weight", "must be at least 1".into()));
            }
            list.push((Endpoint::new(url, cfg.timeouts), o.weight));
        }
        Ok(Backend::Http(Arc::new(Servers::new(
            list,
            cfg.health_check.clone(),
            cfg.retries as usize,
        ))))
    }

    /// Starts the health checks of its origin servers, if it has them (a running node only).
    pub(crate) fn start_health_checks(&self, ca_file: Option<std::path::PathBuf>) {
        if let Backend::Http(s) = self {
            s.start_health_checks(ca_file);
        }
    }

    /// Where requests go: the origin, or the primary bucket's endpoint.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        match self {
            Backend::Http(s) => s.primary(),
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

    /// Whether it acts with Strata's own credentials: whoever reaches the route can use them.
    pub(crate) fn uses_credentials(&self) -> bool {
        match self {
            Backend::Http(_) => false,
            Backend::S3(b) => b.is_signed(),
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
    pub(crate) fn upstream_path<'a>(
        &self,
        prefix: &str,
        raw: &'a str,
        normalized: &'a str,
        query: Option<&str>,
        method: &Method,
    ) -> Result<String, Refused> {
        let strip = |p: &'a str| -> &'a str {
            let rest = p.strip_prefix(prefix).unwrap_or(p);
            rest.strip_prefix('/').unwrap_or(rest)
        };
        match self {
            Backend::Http(s) => {
                // Joined by hand, once: every request, hits included, maps its path.
                let base = &s.primary().url.base_path;
                let rest = strip(normalized);
                let q = query.map_or(0, |q| q.len() + 1);
                let mut path = String::with_capacity(base.len() + rest.len() + q);
                path.push_str(base);
                path.push_str(rest);
                if let Some(q) = query {
                    path.push('?');
                    path.push_str(q);
                }
                Ok(path)
            }
            Backend::S3(_) => {
                let base = if raw.starts_with(prefix) {
                    raw
                } else {
                    normalized
                };
                let rest = strip(base);
                if rest.is_empty() {
                    // An empty key would address the bucket itself (a listing).
                    return Err(Refused::NoKey);
                }
                let decoded: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
                let leading_empty = decoded.first() == Some(&b'/');
                let dots = decoded
                    .split(|&b| b == b'/')
                    .any(|s| s == b"." || s == b"..");
                if leading_empty || dots {
                    return Err(Refused::BadKey);
                }
                let key = s3::encode_key(rest);
                let safe = *method == Method::GET || *method == Method::HEAD;
                if let Some(q) = query.filter(|_| !safe) {
                    let allowed = url::form_urlencoded::parse(q.as_bytes())
                        .all(|(k, _)| S3_WRITE_PARAMS.contains(&k.as_ref()));
                    if !allowed {
                        return Err(Refused::SubResource);
                    }
                }
                Ok(match query.filter(|_| !safe) {
                    Some(q) => format!("/{key}?{q}"),
                    None => format!("/{key}"),
                })
            }
        }
    }

    /// The upstream path whose stored response a successful write to `upstream_path`
    /// invalidates: S3 reads drop the query, so a write with one (completing a multipart
    /// upload) invalidates the key without it.
    pub(crate) fn invalidated_path<'a>(&self, upstream_path: &'a str) -> &'a str {
        match self {
            Backend::Http(_) => upstream_path,
            Backend::S3(_) => upstream_path.split('?').next().unwrap_or(upstream_path),
        }
    }

    /// A peer for pass-through requests: the first origin server up (an S3 route's primary
    /// bucket).
    pub(crate) async fn peer(&self) -> Result<HttpPeer, ConnectError> {
        self.pass_through_endpoint().peer().await
    }

    /// Where pass-through requests go: the first server up, in the configured order.
    fn pass_through_endpoint(&self) -> &Endpoint {
        match self {
            Backend::Http(s) => s
                .list
                .iter()
                .find(|srv| srv.is_up())
                .map_or(s.primary(), |srv| &srv.endpoint),
            Backend::S3(b) => &b.primary().endpoint,
        }
    }

    /// Addresses a pass-through request (whose URI is an upstream path) to the origin: its
    /// `Host`, and for S3 the bucket's path and a SigV4 signature.
    pub(crate) fn prepare(&self, req: &mut RequestHeader) -> Result<(), SignError> {
        match self {
            Backend::Http(_) => req
                .insert_header(header::HOST, self.pass_through_endpoint().url.host_header())
                .map_err(SignError::Header),
            Backend::S3(b) => b.primary().prepare(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(b: &Backend, prefix: &str, p: &str, q: Option<&str>) -> Result<String, Refused> {
        b.upstream_path(prefix, p, p, q, &Method::GET)
    }

    #[test]
    fn maps_paths_onto_the_origin() {
        let b = Backend::new(
            Some("http://deb.debian.org/debian/"),
            None,
            TimeoutsConfig::default(),
        )
        .unwrap();
        assert_eq!(
            path(&b, "/debian/", "/debian/dists/a", Some("x=1")).unwrap(),
            "/debian/dists/a?x=1"
        );
        assert_eq!(b.key_base(), "http://deb.debian.org");
        let b = Backend::new(
            Some("http://127.0.0.1:9000"),
            None,
            TimeoutsConfig::default(),
        )
        .unwrap();
        assert_eq!(path(&b, "/", "/a/b", None).unwrap(), "/a/b");
        let b = Backend::new(
            Some("https://example.org/pub"),
            None,
            TimeoutsConfig::default(),
        )
        .unwrap();
        assert_eq!(path(&b, "/mirror", "/mirror/x", None).unwrap(), "/pub/x");
        assert!(b.allows(&Method::DELETE));
    }

    #[test]
    fn s3_keys_are_raw_encoded_and_never_empty() {
        let cfg: S3Config = serde_norway::from_str(
            "{endpoint: 'http://127.0.0.1:9000', bucket: assets, region: us-east-1}",
        )
        .unwrap();
        let b = Backend::new(None, Some(&cfg), TimeoutsConfig::default()).unwrap();
        assert_eq!(b.key_base(), "http://127.0.0.1:9000/assets");
        let raw = b.upstream_path("/s3/", "/s3/a b//c", "/s3/a b/c", Some("acl"), &Method::GET);
        assert_eq!(raw.unwrap(), "/a%20b//c");
        let put = b.upstream_path("/s3/", "/s3/k", "/s3/k", Some("uploads"), &Method::PUT);
        assert_eq!(put.unwrap(), "/k?uploads");
        assert_eq!(path(&b, "/s3/", "/s3/", None), Err(Refused::NoKey));
        assert!(!b.allows(&Method::PUT) && b.allows(&Method::HEAD));
        assert!(!b.invalidates_locations());
    }

    fn s3() -> Backend {
        let cfg: S3Config = serde_norway::from_str(
            "{endpoint: 'http://127.0.0.1:9000', bucket: assets, region: us-east-1, allow_writes: true}",
        )
        .unwrap();
        Backend::new(None, Some(&cfg), TimeoutsConfig::default()).unwrap()
    }

    #[test]
    fn s3_keys_with_dot_or_empty_leading_segments_are_refused() {
        let b = s3();
        for raw in [
            "/s3/x/..",
            "/s3/.",
            "/s3/..",
            "/s3/a/./b",
            "/s3///k",
            "/s3/%2e%2e/k",
            "/s3/x/%2E",
        ] {
            let got = b.upstream_path("/s3/", raw, "/s3/", None, &Method::GET);
            assert_eq!(got, Err(Refused::BadKey), "{raw}");
        }
        let ok = b.upstream_path("/s3/", "/s3/a..b/.c/x//y", "/s3/", None, &Method::GET);
        assert_eq!(ok.unwrap(), "/a..b/.c/x//y");
    }

    #[test]
    fn s3_writes_reach_only_upload_sub_resources() {
        let b = s3();
        let put = |q: &str, m: Method| b.upstream_path("/s3/", "/s3/k", "/s3/k", Some(q), &m);
        for q in [
            "uploads",
            "uploadId=7&partNumber=2",
            "uploadId=7",
            "x-id=PutObject",
        ] {
            assert!(put(q, Method::PUT).is_ok(), "{q}");
            assert!(put(q, Method::POST).is_ok(), "{q}");
        }
        for (q, m) in [
            ("acl", Method::PUT),
            ("retention", Method::PUT),
            ("legal-hold", Method::PUT),
            ("restore", Method::POST),
            ("select&select-type=2", Method::POST),
            ("versionId=3", Method::DELETE),
            ("uploadId=7&tagging", Method::PUT),
        ] {
            assert_eq!(put(q, m), Err(Refused::SubResource), "{q}");
        }
        // Reads drop the query instead: it never reaches the bucket.
        assert_eq!(put("acl", Method::GET).unwrap(), "/k");
    }

    #[test]
    fn s3_writes_with_a_query_invalidate_the_key_without_it() {
        assert_eq!(s3().invalidated_path("/k?uploadId=7"), "/k");
        let http =
            Backend::new(Some("http://127.0.0.1:1/"), None, TimeoutsConfig::default()).unwrap();
        assert_eq!(http.invalidated_path("/k?a=1"), "/k?a=1");
    }
}
