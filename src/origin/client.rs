//! Requests Strata makes to origins on its own behalf (cache fills), over pooled connections.
//!
//! For an S3 route each request is addressed to and signed for a bucket; a bucket that cannot
//! be reached or answers 5xx is retried with backoff, then passed over for the next replica.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use crate::metrics::{Metrics, OriginError};
use crate::origin::endpoint::{ConnectError, Endpoint};
use crate::origin::s3::{self, S3Backend, SignError};
use crate::origin::servers::Servers;
use crate::origin::Backend;

/// Why an origin exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The origin's name could not be resolved.
    #[error("origin unreachable: {0}")]
    Resolve(#[from] ConnectError),
    /// No connection could be made.
    #[error("origin unreachable: {0}")]
    Connect(#[source] Box<pingora::Error>),
    /// The origin broke the exchange (reset, timeout, malformed response).
    #[error("origin failed: {0}")]
    Protocol(#[source] Box<pingora::Error>),
    /// The origin sent no response header.
    #[error("origin failed: no response header")]
    NoResponse,
    /// The origin sent interim responses without end.
    #[error("origin failed: more than {INTERIM_LIMIT} interim responses")]
    EndlessInterim,
    /// A bucket kept failing and no replica was left.
    #[error("origin failed: bucket answered {0}")]
    Status(u16),
    /// The request could not be signed.
    #[error("origin request not signed: {0}")]
    Sign(#[from] SignError),
    /// The bucket refused Strata's own credentials: a configuration fault.
    #[error("the bucket refused Strata's credentials for route {route} ({code}); check routes[].s3 keys")]
    Credentials {
        /// The route.
        route: String,
        /// The S3 error code.
        code: String,
    },
}

impl UpstreamError {
    /// The kind of failure, as metrics count it.
    pub(crate) fn kind(&self) -> OriginError {
        let timeout = |e: &pingora::Error| {
            matches!(
                e.etype(),
                pingora::ErrorType::ConnectTimedout
                    | pingora::ErrorType::ReadTimedout
                    | pingora::ErrorType::WriteTimedout
            )
        };
        match self {
            UpstreamError::Resolve(_) => OriginError::Connect,
            UpstreamError::Connect(e) if timeout(e) => OriginError::Timeout,
            UpstreamError::Connect(_) => OriginError::Connect,
            UpstreamError::Protocol(e) if timeout(e) => OriginError::Timeout,
            UpstreamError::Status(_) | UpstreamError::Credentials { .. } => OriginError::Status,
            _ => OriginError::Protocol,
        }
    }

    /// What a client may be told: no host names, addresses or origin error text, which stay in
    /// the log. Strata's own credentials refused is said plainly (it names the route, not the
    /// bucket's host).
    pub(crate) fn public_message(&self) -> String {
        match self {
            UpstreamError::Resolve(_) | UpstreamError::Connect(_) => "origin unreachable".into(),
            UpstreamError::Credentials { .. } => self.to_string(),
            UpstreamError::Sign(_) => "origin request could not be signed".into(),
            _ => "origin failed".into(),
        }
    }

    /// True when the origin could not be reached at all (as opposed to answering badly).
    fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Resolve(_) | UpstreamError::Connect(_))
    }
}

/// A pool of connections to origins.
pub(crate) struct Upstream {
    connector: Connector,
    /// Origin requests, their latency and failures are counted here.
    metrics: Arc<Metrics>,
}

/// An origin response whose body is being read.
pub(crate) struct OriginResponse {
    /// Boxed: the session and its peer take over 1 KiB, and the response is held (and so
    /// carried) by every future of a miss, from the exchange to the fill's last slice.
    conn: Box<Conn>,
    /// Body bytes already read (to look at an error body).
    prefetched: Option<Bytes>,
    /// The response header.
    pub(crate) header: ResponseHeader,
    /// Interim responses (1xx other than 101, such as 103 Early Hints) that came before it,
    /// for the client; never stored.
    pub(crate) interim: Vec<ResponseHeader>,
}

/// The origin connection a response is read from, and the peer it is pooled under.
struct Conn {
    session: HttpSession,
    peer: HttpPeer,
}

/// Interim responses kept per origin response; an origin sending more is only read past...
const INTERIM_MAX: usize = 8;
/// ...up to this many, after which the exchange has failed.
const INTERIM_LIMIT: usize = 64;

/// Retries of a failing S3 bucket before the next replica is tried.
const S3_ATTEMPTS: u32 = 3;
/// An error body read to find the S3 error code is at most this long.
const ERROR_BODY_MAX: usize = 64 * 1024;

impl Upstream {
    /// A connector with its own keep-alive pool; `ca_file` replaces the system trust store.
    pub(crate) fn new(ca_file: Option<&std::path::Path>, metrics: Arc<Metrics>) -> Self {
        let mut opts = ConnectorOptions::new(128);
        opts.ca_file = ca_file.map(|p| p.to_string_lossy().into_owned());
        Upstream {
            connector: Connector::new(Some(opts)),
            metrics,
        }
    }

    /// Sends a bodiless request to a route's backend and reads the response header; the
    /// request, its latency and a failure (or a 5xx) are counted for `route`.
    pub(crate) async fn send(
        &self,
        backend: &Backend,
        route: &str,
        req: &RequestHeader,
    ) -> Result<OriginResponse, UpstreamError> {
        self.metrics.origin_request(route);
        let started = Instant::now();
        let sent = match backend {
            Backend::Http(s) => self.send_http(s, req).await,
            Backend::S3(b) => self.send_s3(b, route, req).await,
        };
        match &sent {
            Ok(r) => {
                self.metrics.origin_answered(route, started.elapsed());
                if r.header.status.is_server_error() {
                    self.metrics.origin_error(route, OriginError::Status);
                }
            }
            Err(e) => self.metrics.origin_error(route, e.kind()),
        }
        sent
    }

    /// To one of a route's origin servers: a server that cannot be reached is passed over for
    /// the next up, `retries` times at most (only connecting is retried: a request a server
    /// may have started on is not sent twice).
    async fn send_http(
        &self,
        servers: &Servers,
        req: &RequestHeader,
    ) -> Result<OriginResponse, UpstreamError> {
        let mut tried = Vec::new();
        let mut last = UpstreamError::NoResponse;
        while tried.len() <= servers.retries {
            let Some(i) = servers.choose(&tried) else {
                break;
            };
            tried.push(i);
            let e = &servers.list[i].endpoint;
            let mut to_server;
            let req = if i == 0 {
                req
            } else {
                // Each server is asked as itself (the servers share the path).
                to_server = req.clone();
                to_server
                    .insert_header(http::header::HOST, e.url.host_header())
                    .map_err(UpstreamError::Protocol)?;
                &to_server
            };
            let sent = self.send_to_endpoint(e, req).await;
            match sent {
                Ok(r) => {
                    servers.reached(i);
                    return Ok(r);
                }
                Err(err) if err.is_connect() => {
                    servers.unreachable(i);
                    last = err;
                }
                Err(err) => return Err(err),
            }
        }
        Err(last)
    }

    /// To one endpoint: an address that refuses the connection is passed over for the next of
    /// the name's addresses, a few at most.
    async fn send_to_endpoint(
        &self,
        e: &Endpoint,
        req: &RequestHeader,
    ) -> Result<OriginResponse, UpstreamError> {
        let mut tries = 0;
        loop {
            let peer = e.peer().await?;
            let held = peer.clone();
            match self.send_to(peer, req).await {
                Err(err) if err.is_connect() && tries < 3 && e.address_failed(&held) => {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// A bucket that cannot be reached or answers 5xx is retried with backoff, then passed
    /// over for the next replica.
    async fn send_s3(
        &self,
        backend: &S3Backend,
        route: &str,
        req: &RequestHeader,
    ) -> Result<OriginResponse, UpstreamError> {
        let mut last: Option<Result<OriginResponse, UpstreamError>> = None;
        for target in backend.in_order() {
            for attempt in 0..S3_ATTEMPTS {
                if attempt > 0 {
                    // 100 ms, then 400 ms: S3's own advice for 500 and SlowDown.
                    tokio::time::sleep(Duration::from_millis(100 << (2 * (attempt - 1)))).await;
                }
                // Signed afresh each attempt: a signature carries its time.
                let mut signed = req.clone();
                target.prepare(&mut signed)?;
                let peer = match target.endpoint.peer().await {
                    Ok(p) => p,
                    Err(e) => {
                        last = Some(Err(e.into()));
                        break;
                    }
                };
                match self.send_to(peer, &signed).await {
                    Ok(resp) if resp.header.status.is_server_error() => {
                        tracing::warn!(route, bucket = ?target, status = resp.header.status.as_u16(), attempt, "bucket failed");
                        last = Some(Ok(resp));
                    }
                    Ok(resp) if resp.header.status == StatusCode::FORBIDDEN => {
                        return self.classify_forbidden(route, resp).await;
                    }
                    Ok(resp) => return Ok(resp),
                    Err(e) if e.is_connect() => {
                        last = Some(Err(e));
                        break;
                    }
                    Err(e) => last = Some(Err(e)),
                }
            }
            tracing::warn!(route, bucket = ?target, "bucket passed over for 30s");
            target.mark_down();
        }
        match last {
            // A bucket still failing after retries: SlowDown stays a 503 (the client may retry
            // later); any other 5xx is the origin's fault, a 502.
            Some(Ok(resp)) if resp.header.status == StatusCode::SERVICE_UNAVAILABLE => Ok(resp),
            Some(Ok(resp)) => Err(UpstreamError::Status(resp.header.status.as_u16())),
            Some(Err(e)) => Err(e),
            None => Err(UpstreamError::NoResponse),
        }
    }

    /// A 403 from S3: Strata's credentials refused (a configuration fault, logged, a 502 to the
    /// client) or access denied to this object (passed on).
    async fn classify_forbidden(
        &self,
        route: &str,
        mut resp: OriginResponse,
    ) -> Result<OriginResponse, UpstreamError> {
        let mut body = BytesMut::new();
        while body.len() < ERROR_BODY_MAX {
            match resp.read_body().await {
                Ok(Some(b)) => body.extend_from_slice(&b),
                _ => break,
            }
        }
        let body = body.freeze();
        let code = s3::error_code(&body).unwrap_or_default();
        if s3::is_credential_error(&code) {
            tracing::error!(route, code, "the bucket refused Strata's credentials");
            return Err(UpstreamError::Credentials {
                route: route.to_string(),
                code,
            });
        }
        resp.prefetched = Some(body);
        Ok(resp)
    }

    async fn send_to(
        &self,
        peer: HttpPeer,
        req: &RequestHeader,
    ) -> Result<OriginResponse, UpstreamError> {
        // A pooled connection may have been closed by the origin meanwhile: retry once on a
        // fresh one, as any HTTP client does for idempotent requests.
        let mut last = None;
        for _ in 0..2 {
            // Boxed: Pingora's connect future takes some 9 KiB, which every future of a miss
            // (the exchange, the lead request's, a fill's) would otherwise carry inline, and
            // move, whether or not a pooled connection is at hand.
            let (mut session, reused) = Box::pin(self.connector.get_http_session(&peer))
                .await
                .map_err(UpstreamError::Connect)?;
            // Pingora's connector leaves these to its caller (its proxy sets them per request):
            // without them a stalled origin would hold the exchange for ever.
            session.set_read_timeout(peer.options.read_timeout);
            session.set_write_timeout(peer.options.write_timeout);
            match exchange(&mut session, req).await {
                Ok((header, interim)) => {
                    return Ok(OriginResponse {
                        conn: Box::new(Conn { session, peer }),
                        prefetched: None,
                        header,
                        interim,
                    })
                }
                Err(e) if reused => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(UpstreamError::NoResponse))
    }

    /// Returns a fully read response's connection to the pool (or closes one that is not).
    ///
    /// The future is boxed: Pingora's pool and shutdown futures take some 7 KiB, and a fill,
    /// whose future is spawned (and so moved) for each miss before its client's first byte,
    /// would otherwise carry them inline.
    pub(crate) fn release(
        &self,
        resp: OriginResponse,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let conn = resp.conn;
        Box::pin(async move {
            let Conn { mut session, peer } = *conn;
            if session.response_done() {
                self.connector
                    .release_http_session(session, &peer, peer.options.idle_timeout)
                    .await;
            } else {
                session.shutdown().await;
            }
        })
    }
}

/// Sends `req` and reads the final response header, and the interim ones before it.
async fn exchange(
    session: &mut HttpSession,
    req: &RequestHeader,
) -> Result<(ResponseHeader, Vec<ResponseHeader>), UpstreamError> {
    session
        .write_request_header(Box::new(req.clone()))
        .await
        .map_err(UpstreamError::Protocol)?;
    session
        .finish_request_body()
        .await
        .map_err(UpstreamError::Protocol)?;
    // Interim responses come first; a 101 nobody asked for is final (and not a success).
    let mut interim = Vec::new();
    for _ in 0..=INTERIM_LIMIT {
        session
            .read_response_header()
            .await
            .map_err(UpstreamError::Protocol)?;
        let h = session.response_header().ok_or(UpstreamError::NoResponse)?;
        if !h.status.is_informational() || h.status == http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok((h.clone(), interim));
        }
        if interim.len() < INTERIM_MAX && h.status != http::StatusCode::CONTINUE {
            interim.push(h.clone());
        }
    }
    Err(UpstreamError::EndlessInterim)
}

impl OriginResponse {
    /// The next piece of the body; `None` at its end.
    pub(crate) async fn read_body(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        if let Some(b) = self.prefetched.take() {
            return Ok(Some(b).filter(|b| !b.is_empty()));
        }
        self.conn
            .session
            .read_response_body()
            .await
            .map_err(UpstreamError::Protocol)
    }

    /// True once the whole body has been read.
    pub(crate) fn is_done(&mut self) -> bool {
        self.prefetched.is_none() && self.conn.session.response_done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every future of a miss holds the origin response across its awaits (and is moved when
    /// spawned): the connection stays behind a pointer, so none of them carries it inline.
    #[test]
    fn an_origin_response_keeps_its_connection_out_of_line() {
        let size = std::mem::size_of::<OriginResponse>();
        assert!(
            size < std::mem::size_of::<HttpSession>() + std::mem::size_of::<HttpPeer>(),
            "OriginResponse is {size} bytes"
        );
    }
}
