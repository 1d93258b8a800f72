//! The Pingora `ProxyHttp` of Strata: routing, the cacheable path, and pass-through proxying.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use crate::auth::Refusal;
use crate::cache_status::CacheStatus;
use crate::cached::{cache_key, respond_error, CachedPath, Outcome};
use crate::metrics::Metrics;
use crate::object::meta_key;
use crate::route::{normalize, Route, Router};
use crate::shutdown::{Drain, InFlight};

/// The proxy service.
pub struct StrataProxy {
    /// Routes by path prefix.
    pub router: Router,
    /// Hits and fills.
    pub cached: CachedPath,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// In-flight accounting for shutdown.
    pub drain: Arc<Drain>,
}

/// Per-request state.
pub struct Ctx {
    route: Option<Arc<Route>>,
    upstream_path: String,
    status: CacheStatus,
    _in_flight: InFlight,
}

/// Answers a request the route's JWT check refused: 401 (no or bad token) or 403 (claims).
async fn refuse(session: &mut Session, status: &mut CacheStatus, r: &Refusal) -> Result<()> {
    let (code, challenge, detail) = match r {
        Refusal::Missing => (
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"strata\"",
            "token-missing",
        ),
        Refusal::Invalid(_) => (
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"strata\", error=\"invalid_token\"",
            "token-invalid",
        ),
        Refusal::Forbidden(_) => (
            StatusCode::FORBIDDEN,
            "Bearer realm=\"strata\", error=\"insufficient_scope\"",
            "token-forbidden",
        ),
    };
    tracing::info!(reason = ?r, path = %session.req_header().uri.path(), "request refused");
    status.detail = Some(detail.into());
    let body = Bytes::from(format!(
        "strata: {}\n",
        code.canonical_reason().unwrap_or("refused")
    ));
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header(header::WWW_AUTHENTICATE, challenge)?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header("cache-status", status.header_value())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

#[async_trait]
impl ProxyHttp for StrataProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            route: None,
            upstream_path: String::new(),
            status: CacheStatus::default(),
            _in_flight: self.drain.enter(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if self.drain.is_draining() {
            session.set_keepalive(None);
        }
        let path = normalize(session.req_header().uri.path());
        let Some(route) = self.router.find(&path) else {
            ctx.status = CacheStatus::fwd("bypass");
            ctx.status.detail = Some("no-route".into());
            respond_error(
                session,
                StatusCode::NOT_FOUND,
                &ctx.status,
                "no route for this path",
            )
            .await?;
            return Ok(true);
        };
        ctx.route = Some(route.clone());
        let method = &session.req_header().method;
        let safe = *method == Method::GET || *method == Method::HEAD;
        // Auth comes before the cache: nothing stored is served to a refused client.
        if let Some(auth) = &route.auth {
            if let Err(refusal) = auth.check(session.req_header_mut()) {
                refuse(session, &mut ctx.status, &refusal).await?;
                return Ok(true);
            }
        }
        if let Some(s3) = &route.s3 {
            if !safe && !s3.allow_writes {
                ctx.status = CacheStatus::fwd("method");
                ctx.status.detail = Some("read-only".into());
                let mut resp = ResponseHeader::build(StatusCode::METHOD_NOT_ALLOWED, Some(3))?;
                resp.insert_header(header::ALLOW, "GET, HEAD")?;
                resp.insert_header(header::CONTENT_LENGTH, 0)?;
                resp.insert_header("cache-status", ctx.status.header_value())?;
                session.write_response_header(Box::new(resp), true).await?;
                return Ok(true);
            }
            // The client's own AWS credentials are not the bucket's: Strata signs for itself.
            session
                .req_header_mut()
                .remove_header(&header::AUTHORIZATION);
        }
        let req = session.req_header();
        let raw = req.uri.path();
        // S3 keys are opaque (a double slash is part of the key): the raw path, unless it only
        // reached this route once normalised. Queries on S3 reads would reach bucket APIs
        // (listing, ACLs, versions) with Strata's credentials: dropped.
        let base = match &route.s3 {
            Some(_) if raw.starts_with(route.prefix.as_str()) => raw,
            _ => path.as_str(),
        };
        let pq = match req.uri.query() {
            Some(q) if !(route.s3.is_some() && safe) => format!("{base}?{q}"),
            _ => base.to_string(),
        };
        ctx.upstream_path = route.upstream_path(&pq);
        if route.s3.is_some() && ctx.upstream_path.split('?').next() == Some("/") {
            // An empty key would address the bucket itself (a listing).
            ctx.status = CacheStatus::fwd("bypass");
            ctx.status.detail = Some("no-key".into());
            respond_error(session, StatusCode::NOT_FOUND, &ctx.status, "no object key").await?;
            return Ok(true);
        }
        if safe {
            match self
                .cached
                .handle(session, &route, &ctx.upstream_path)
                .await?
            {
                Outcome::Served(status) => {
                    ctx.status = status;
                    return Ok(true);
                }
                Outcome::PassThrough(reason) => ctx.status = CacheStatus::fwd(reason),
            }
        } else {
            ctx.status = CacheStatus::fwd("method");
        }
        self.metrics
            .origin_requests
            .with_label_values(&[&route.name])
            .inc();
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
        // Writes and uncached reads of an S3 route go to the primary bucket.
        match route.peer().await {
            Ok(p) => Ok(Box::new(p)),
            Err(e) => Error::e_explain(ErrorType::ConnectNoRoute, e),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let uri = ctx
            .upstream_path
            .parse()
            .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad upstream path"))?;
        up.set_uri(uri);
        if let Some(route) = &ctx.route {
            match &route.s3 {
                Some(s3) => s3
                    .primary()
                    .prepare(up)
                    .map_err(|e| Error::explain(ErrorType::InternalError, e))?,
                None => up.insert_header(header::HOST, route.origin.host_header())?,
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header("cache-status", ctx.status.header_value())?;
        // RFC 9111 §4.4: a successful unsafe request invalidates the stored response.
        let method = &session.req_header().method;
        let unsafe_method = !matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        if unsafe_method && (resp.status.is_success() || resp.status.is_redirection()) {
            if let Some(route) = &ctx.route {
                let key = cache_key(route, &ctx.upstream_path);
                let mut keys = vec![key.clone()];
                // And Location / Content-Location, when they name the same origin.
                let base = url::Url::parse(&key).ok().filter(|_| route.s3.is_none());
                if let Some(base) = base {
                    for name in [header::LOCATION, header::CONTENT_LOCATION] {
                        let target = resp
                            .headers
                            .get(&name)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| base.join(v).ok())
                            .filter(|u| u.origin() == base.origin());
                        if let Some(u) = target {
                            let path = &u[url::Position::BeforePath..];
                            keys.push(cache_key(route, path));
                        }
                    }
                }
                for k in keys {
                    if let Err(e) = self.cached.cache.remove(&meta_key(&k)).await {
                        tracing::warn!(key = k, error = %e, "invalidation not recorded on disk");
                    }
                }
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let code = match e.etype() {
            ErrorType::HTTPStatus(c) => *c,
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => 502,
                pingora::ErrorSource::Downstream => 0,
                _ => 500,
            },
        };
        // Once a response has started there is nothing honest to add: the connection is cut.
        if code > 0 && session.response_written().is_none() {
            if ctx.status == CacheStatus::default() {
                ctx.status = CacheStatus::fwd("miss");
            }
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let _ = respond_error(session, status, &ctx.status, &e.to_string()).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let route = ctx.route.as_ref().map_or("none", |r| r.name.as_str());
        self.metrics
            .requests
            .with_label_values(&[route, ctx.status.label()])
            .inc();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        tracing::debug!(
            route,
            method = %session.req_header().method,
            path = %session.req_header().uri,
            status,
            cache = %ctx.status.header_value(),
            error = e.map(|e| e.to_string()),
            "request"
        );
    }
}
