//! The Pingora `ProxyHttp` of Strata: the phases every request passes.
//!
//! `request_filter` routes the normalised path, checks auth, asks the route's backend whether
//! the method may pass and what the upstream path is, then hands GET and HEAD to the cache
//! plane ([`crate::cache`]). What the cache plane does not serve passes through Pingora's
//! proxy phases (`upstream_peer`, `upstream_request_filter`, `response_filter`), where a
//! successful unsafe method invalidates its target.
//!
//! - [`access`]: the access log: what a finished request notes.
//! - [`access_line`]: the access line written by hand, in the text and JSON log layouts.
//! - [`drain`]: in-flight accounting for shutdown.
//! - [`guard`]: request hygiene checked before routing.
//! - [`respond`]: the error answers the proxy writes itself.
//! - [`invalidate`]: invalidation by unsafe methods.
//! - [`forwarded`]: `X-Forwarded-*` and `Forwarded` on requests passed through.
//! - [`limits`]: per-client request rate and requests in flight.
//! - [`connections`]: connection caps per client and per node, in front of the application.
//! - [`timeouts`]: client connections cut when a header trickles or the line goes quiet.
//! - [`held`]: a response header held to leave with its body's first bytes in one write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, OrErr, Result};

use crate::cache::{self, CachePlane, Outcome};
use crate::http::cache_status::{CacheStatus, Detail, Forward, CACHE_STATUS};
use crate::metrics::{Metrics, OriginError};
use crate::origin::Refused;
use crate::routing::{normalize, Route, Router};

mod access;
pub(crate) mod access_line;
pub(crate) mod connections;
pub(crate) mod drain;
mod forwarded;
mod guard;
mod held;
mod invalidate;
mod limits;
mod respond;
pub(crate) mod timeouts;

pub(crate) use drain::Drain;
use drain::RequestGuard;
pub(crate) use limits::Limits;
pub(crate) use timeouts::push_writes;

/// The settings a configuration reload changes while requests run, shared by the proxy and
/// the node's reloader.
#[derive(Clone)]
pub(crate) struct Live {
    /// The routes requests are matched against (a request keeps the route it found).
    pub(crate) router: Arc<ArcSwap<Router>>,
    /// `log.access`.
    pub(crate) access_log: Arc<AtomicBool>,
}

impl Live {
    /// Live settings starting with `router` and `log.access` = `access_log`.
    pub(crate) fn new(router: Router, access_log: bool) -> Live {
        Live {
            router: Arc::new(ArcSwap::from_pointee(router)),
            access_log: Arc::new(AtomicBool::new(access_log)),
        }
    }
}

/// The proxy service.
pub(crate) struct StrataProxy {
    /// Routes and other settings a reload changes.
    pub(crate) live: Live,
    /// Hits and fills.
    pub(crate) cache: CachePlane,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
    /// In-flight accounting for shutdown.
    pub(crate) drain: Arc<Drain>,
    /// `forwarded_headers`.
    pub(crate) forwarded: forwarded::ForwardedMode,
    /// `limits`.
    pub(crate) limits: limits::Limits,
}

/// Per-request state.
pub(crate) struct Ctx {
    route: Option<Arc<Route>>,
    upstream_path: String,
    /// The client's address, read once for its limits and the forwarding headers.
    client: Option<std::net::IpAddr>,
    /// The request's host, normalised once for routing, keys and invalidation.
    host: Option<String>,
    status: CacheStatus,
    timing: access::Timing,
    _in_flight: RequestGuard,
    /// This request's place under the client's limits, held to its end.
    _admitted: Option<limits::Admitted>,
}

#[async_trait]
impl ProxyHttp for StrataProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            route: None,
            upstream_path: String::new(),
            client: None,
            host: None,
            status: CacheStatus::default(),
            timing: access::Timing::start(),
            _in_flight: self.drain.enter(),
            _admitted: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if self.drain.is_draining() {
            session.set_keepalive(None);
        }
        ctx.client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        match self.limits.admit(ctx.client) {
            Ok(admitted) => ctx._admitted = Some(admitted),
            Err(over) => {
                ctx.status = CacheStatus::fwd_with(Forward::Bypass, Detail::Limited);
                self.metrics.limited(match over {
                    limits::Over::Rate => "rate",
                    limits::Over::InFlight => "in_flight",
                });
                respond::too_many(session, &ctx.status).await?;
                return Ok(true);
            }
        }
        if let Err(bad) = guard::check(session.req_header()) {
            // Its framing is in doubt: nothing after it on this connection is read.
            session.set_keepalive(None);
            ctx.status = CacheStatus::fwd_with(Forward::Bypass, Detail::BadRequest);
            let message = bad.to_string();
            respond::error(session, bad.status(), &ctx.status, &message).await?;
            return Ok(true);
        }
        let path = match normalize(session.req_header().uri.path()) {
            Ok(p) => p,
            Err(e) => {
                // Such spellings come from probes, not browsers: the connection ends here.
                session.set_keepalive(None);
                ctx.status = CacheStatus::fwd_with(Forward::Bypass, Detail::BadPath);
                let message = e.to_string();
                respond::error(session, StatusCode::BAD_REQUEST, &ctx.status, &message).await?;
                return Ok(true);
            }
        };
        ctx.host = crate::routing::host::of_request(session.req_header());
        let Some(route) = self.live.router.load().find(ctx.host.as_deref(), &path) else {
            ctx.status = CacheStatus::fwd_with(Forward::Bypass, Detail::NoRoute);
            respond::error(
                session,
                StatusCode::NOT_FOUND,
                &ctx.status,
                "no route for this path",
            )
            .await?;
            return Ok(true);
        };
        ctx.route = Some(route.clone());
        // Auth comes before the cache: nothing stored is served to a refused client.
        if let Some(auth) = &route.auth {
            if let Err(refusal) = auth.check(session.req_header_mut()) {
                respond::refusal(session, &mut ctx.status, &refusal).await?;
                return Ok(true);
            }
        }
        let method = session.req_header().method.clone();
        if !route.backend.allows(&method) {
            ctx.status = CacheStatus::fwd_with(Forward::Method, Detail::ReadOnly);
            respond::read_only(session, &ctx.status).await?;
            return Ok(true);
        }
        route.backend.accept(session.req_header_mut());
        let cacheable = method == Method::GET || method == Method::HEAD;
        let rule = route.rule(&path);
        let req = session.req_header();
        // A rule may keep the query out of the key; it is then not sent either, so that what
        // is keyed is what is fetched.
        let query = req.uri.query().filter(|_| rule.query || !cacheable);
        let mapped =
            route
                .backend
                .upstream_path(&route.prefix, req.uri.path(), &path, query, &method);
        ctx.upstream_path = match mapped {
            Ok(p) => p,
            Err(refused) => {
                let (code, detail) = match refused {
                    Refused::NoKey => (StatusCode::NOT_FOUND, Detail::NoKey),
                    Refused::BadKey => (StatusCode::BAD_REQUEST, Detail::BadKey),
                    Refused::SubResource => (StatusCode::FORBIDDEN, Detail::SubResource),
                };
                ctx.status = CacheStatus::fwd_with(Forward::Bypass, detail);
                let message = refused.to_string();
                respond::error(session, code, &ctx.status, &message).await?;
                return Ok(true);
            }
        };
        if cacheable && !rule.cache {
            ctx.status = CacheStatus::fwd_with(Forward::Bypass, Detail::Rule);
        } else if cacheable {
            let overrides = &rule.overrides;
            let outcome = cache::handle(
                &self.cache,
                session,
                &route,
                ctx.host.as_deref(),
                &ctx.upstream_path,
                overrides,
            )
            .await?;
            match outcome {
                Outcome::Served(status, first_byte) => {
                    ctx.status = status;
                    ctx.timing.first_byte = first_byte;
                    return Ok(true);
                }
                Outcome::Refused(answer) => {
                    ctx.status = answer.cache_status;
                    respond::error(session, answer.status, &ctx.status, &answer.message).await?;
                    return Ok(true);
                }
                Outcome::PassThrough(reason) => ctx.status = CacheStatus::fwd(reason),
            }
        } else {
            ctx.status = CacheStatus::fwd(Forward::Method);
        }
        self.metrics.origin_request(&route.name);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route"))?;
        // Writes and uncached reads of an S3 route go to the primary bucket.
        let peer = route
            .backend
            .peer()
            .await
            .or_err(ErrorType::ConnectNoRoute, "origin unreachable")?;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        forwarded::apply(self.forwarded, ctx.client, "http", up)?;
        let uri = ctx
            .upstream_path
            .parse()
            .or_err(ErrorType::InvalidHTTPHeader, "bad upstream path")?;
        up.set_uri(uri);
        // RFC 9110 §7.6.3: a gateway adds itself to `Via` on what it forwards.
        up.append_header(http::header::VIA, self.cache.via.clone())?;
        if let Some(route) = &ctx.route {
            route.backend.prepare(up).or_err(
                ErrorType::InternalError,
                "cannot address the origin request",
            )?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !resp.status.is_informational() {
            resp.append_header(http::header::VIA, self.cache.via.clone())?;
        }
        resp.insert_header(CACHE_STATUS.clone(), ctx.status.header_value())?;
        // Passed through: the body comes as the origin sends it. Pingora sends a chunked
        // one chunk by chunk already; any other would wait in the write buffer.
        if !resp.headers.contains_key(http::header::TRANSFER_ENCODING) {
            timeouts::push_writes(session);
        }
        ctx.timing.first_byte();
        ctx.timing.origin_status = Some(resp.status.as_u16());
        // RFC 9111 §4.4: a successful unsafe request invalidates the stored response.
        if invalidate::invalidates(&session.req_header().method, resp) {
            if let Some(route) = &ctx.route {
                let (cache, path) = (&self.cache.cache, &ctx.upstream_path);
                invalidate::invalidate(cache, route, ctx.host.as_deref(), path, resp).await;
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
                ctx.status = CacheStatus::fwd(Forward::Miss);
            }
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            // The error's text names upstream addresses: it goes to the log, not the client.
            tracing::warn!(status = code, error = %e, "request failed");
            if e.esource() == &pingora::ErrorSource::Upstream {
                if let Some(route) = &ctx.route {
                    let kind = match e.etype() {
                        ErrorType::ConnectTimedout
                        | ErrorType::ReadTimedout
                        | ErrorType::WriteTimedout => OriginError::Timeout,
                        ErrorType::ConnectRefused
                        | ErrorType::ConnectNoRoute
                        | ErrorType::ConnectError => OriginError::Connect,
                        _ => OriginError::Protocol,
                    };
                    self.metrics.origin_error(&route.name, kind);
                }
            }
            let message = match e.esource() {
                pingora::ErrorSource::Upstream => "origin unreachable or failed",
                _ => status.canonical_reason().unwrap_or("error"),
            };
            let _ = respond::error(session, status, &ctx.status, message).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let route = ctx.route.as_ref().map_or("none", |r| r.name.as_str());
        let status = session.response_written().map(|r| r.status.as_u16());
        // One clock read for the metrics and the access line alike.
        let end = Instant::now();
        let elapsed = end.saturating_duration_since(ctx.timing.started);
        let ttfb = ctx
            .timing
            .first_byte
            .map(|t| t.saturating_duration_since(ctx.timing.started));
        self.metrics
            .request(route, ctx.status.outcome(), status, elapsed, ttfb);
        if self.live.access_log.load(Ordering::Relaxed) {
            if session.response_written().is_some() {
                // An answer Strata wrote itself in one go: its first byte left with it (at the
                // end read above, so the line's time to first byte is never past its duration).
                ctx.timing.first_byte.get_or_insert(end);
            }
            let error = e.map(|e| e.etype().as_str());
            access::log(session, route, &ctx.status, &ctx.timing, end, error);
        }
    }
}
