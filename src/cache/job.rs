//! One request being served by the cache plane: what it asks for, under which key, and the
//! fills it keeps alive.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, Method};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::cache::coalesce::{Interest, SliceReader};
use crate::cache::key::{cache_key, variant_key};
use crate::cache::plane::Outcome;
use crate::http::cache_status::CacheStatus;
use crate::http::freshness::Overrides;
use crate::http::range::{self, if_range_matches, ByteRange, RangeRequest};
use crate::routing::Route;

/// One request being served.
pub(crate) struct Job {
    /// The route it reached.
    pub(crate) route: Arc<Route>,
    /// The origin path and query it maps to.
    pub(crate) upstream_path: String,
    /// The freshness overrides of the route's rule for this path.
    pub(crate) overrides: Overrides,
    /// The URL's key.
    pub(crate) base_key: String,
    /// The key of the selected variant (the URL's key when the response does not vary).
    pub(crate) key: String,
    /// GET or HEAD.
    pub(crate) method: Method,
    /// True for HEAD: no body is sent.
    pub(crate) is_head: bool,
    /// The request carries `Authorization` (which no JWT check consumed): its fill sends it,
    /// and only responses that say they may be shared with such requests answer it.
    pub(crate) credentials: bool,
    /// The client's request headers.
    pub(crate) headers: HeaderMap,
    /// The client's `Range`.
    pub(crate) range: Option<Bytes>,
    /// The client's `If-Range`.
    pub(crate) if_range: Option<Bytes>,
    /// The request headers the URL's stored responses vary on (from its Vary record).
    pub(crate) vary_names: Vec<String>,
    /// Runs this request depends on, kept alive until it is done.
    pub(crate) held: Vec<Interest>,
    /// A reader of the first slice of the fill this request started, taken from its start:
    /// every byte of it reaches this client even if the tiers could not keep it.
    pub(crate) first_reader: Option<SliceReader>,
    /// When the response header was written (time to first byte).
    pub(crate) first_byte: Option<Instant>,
    /// Interim responses of the origin exchange this request leads, for the client.
    pub(crate) interim: Vec<ResponseHeader>,
}

impl Job {
    /// The job of a client request for `host` that reached `route` for `upstream_path`, under the
    /// freshness `overrides` of the route's rule for it.
    pub(crate) fn new(
        route: &Arc<Route>,
        host: Option<&str>,
        upstream_path: &str,
        overrides: &Overrides,
        req: &RequestHeader,
    ) -> Job {
        let h = &req.headers;
        let bytes_of =
            |n: header::HeaderName| h.get(n).map(|v| Bytes::copy_from_slice(v.as_bytes()));
        let key = cache_key(route, host, upstream_path);
        Job {
            route: route.clone(),
            upstream_path: upstream_path.to_string(),
            overrides: overrides.clone(),
            base_key: key.clone(),
            key,
            method: req.method.clone(),
            is_head: req.method == Method::HEAD,
            credentials: h.contains_key(header::AUTHORIZATION),
            headers: h.clone(),
            range: bytes_of(header::RANGE),
            if_range: bytes_of(header::IF_RANGE),
            vary_names: Vec::new(),
            held: Vec::new(),
            first_reader: None,
            first_byte: None,
            interim: Vec::new(),
        }
    }

    /// A GET of the whole object under the same keys and request headers, for a revalidation
    /// that no client waits for: no client's credentials go with it.
    pub(crate) fn whole_object(&self) -> Job {
        let mut headers = self.headers.clone();
        headers.remove(header::AUTHORIZATION);
        Job {
            route: self.route.clone(),
            upstream_path: self.upstream_path.clone(),
            overrides: self.overrides.clone(),
            base_key: self.base_key.clone(),
            key: self.key.clone(),
            method: Method::GET,
            is_head: false,
            credentials: false,
            headers,
            range: None,
            if_range: None,
            vary_names: self.vary_names.clone(),
            held: Vec::new(),
            first_reader: None,
            first_byte: None,
            interim: Vec::new(),
        }
    }

    /// Selects the variant named by a response's Vary `names` (none: the URL's own key).
    pub(crate) fn select_variant(&mut self, names: &[String]) {
        self.vary_names = names.to_vec();
        self.key = if names.is_empty() {
            self.base_key.clone()
        } else {
            variant_key(
                &self.base_key,
                names,
                &self.headers,
                self.route.vary_normalize,
            )
        };
    }

    /// Whether the request's `Range` applies to a representation with these validators: always
    /// without `If-Range`, else only when it matches (RFC 9110 §13.1.5).
    pub(crate) fn range_applies(&self, etag: Option<&[u8]>, last_modified: Option<&[u8]>) -> bool {
        self.if_range
            .as_ref()
            .is_none_or(|ir| if_range_matches(ir, etag, last_modified))
    }

    /// The bytes of an object of `len` bytes this request needs: its range when the object
    /// is a representation (status 200) the range applies to (`range_applies`, the object's
    /// validators), else all of it; `None` when the object is empty.
    pub(crate) fn needed(&self, status: u16, len: u64, range_applies: bool) -> Option<ByteRange> {
        let last = len.checked_sub(1)?;
        let range = self
            .range
            .as_ref()
            .filter(|_| range_applies && status == 200);
        Some(match range.map(|r| range::evaluate(r, len)) {
            Some(RangeRequest::Single(r)) => r,
            _ => ByteRange {
                start: 0,
                end: last,
            },
        })
    }

    /// Notes that the response header is about to be written.
    pub(crate) fn header_written(&mut self) {
        self.first_byte.get_or_insert_with(Instant::now);
    }

    /// The outcome of a request that was answered with `status`.
    pub(crate) fn served(&self, status: CacheStatus) -> Outcome {
        Outcome::Served(status, self.first_byte)
    }

    /// Keeps interest in a run for the rest of the request (once per run).
    pub(crate) fn hold(&mut self, i: Interest) {
        if !self.held.iter().any(|h| Arc::ptr_eq(h.run(), i.run())) {
            self.held.push(i);
        }
    }

    /// Notes that the request is at slice `idx` of its object, for every run it holds.
    pub(crate) fn at(&mut self, idx: u64) {
        for i in &mut self.held {
            i.at(idx);
        }
        if self.first_reader.as_ref().is_some_and(|r| r.idx() < idx) {
            self.first_reader = None;
        }
    }

    /// Waits for the fills a HEAD started (its first slice) to end, so that what this client
    /// asks next finds the object stored; past `limit` they are left to run on their own.
    pub(crate) async fn settle(&mut self, limit: std::time::Duration) {
        let held = std::mem::take(&mut self.held);
        let all = async {
            for i in &held {
                i.run().finished().await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            self.held = held;
            self.detach();
        }
    }

    /// Lets fills this request started run to their end although it reads none of their bytes
    /// (it was answered 304, 412, 416 or HEAD): the object is still wanted in the cache.
    pub(crate) fn detach(&mut self) {
        let held = std::mem::take(&mut self.held);
        if !held.is_empty() {
            tokio::spawn(async move {
                for i in &held {
                    i.run().finished().await;
                }
            });
        }
    }
}
