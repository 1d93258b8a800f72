//! Requests Strata makes to origins on its own behalf (cache fills), over pooled connections.
//!
//! For an S3 route each request is addressed to and signed for a bucket; a bucket that cannot
//! be reached or answers 5xx is retried with backoff, then passed over for the next replica.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use crate::route::Route;
use crate::s3;

/// Why an origin exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The origin could not be resolved or reached.
    #[error("origin unreachable: {0}")]
    Connect(String),
    /// The origin broke the exchange (reset, timeout, malformed response).
    #[error("origin failed: {0}")]
    Protocol(String),
    /// The bucket refused Strata's own credentials: a configuration fault.
    #[error("the bucket refused Strata's credentials for route {route} ({code}); check routes[].s3 keys")]
    Credentials { route: String, code: String },
}

/// A pool of connections to origins.
pub struct Upstream {
    connector: Connector,
}

/// An origin response whose body is being read.
pub struct OriginResponse {
    session: HttpSession,
    peer: HttpPeer,
    /// Body bytes already read (to look at an error body).
    prefetched: Option<Bytes>,
    /// The response header.
    pub header: ResponseHeader,
}

/// Retries of a failing S3 bucket before the next replica is tried.
const S3_ATTEMPTS: u32 = 3;
/// An error body read to find the S3 error code is at most this long.
const ERROR_BODY_MAX: usize = 64 * 1024;

impl Upstream {
    /// A connector with its own keep-alive pool; `ca_file` replaces the system trust store.
    pub fn new(ca_file: Option<&std::path::Path>) -> Self {
        let mut opts = ConnectorOptions::new(128);
        opts.ca_file = ca_file.map(|p| p.to_string_lossy().into_owned());
        Upstream {
            connector: Connector::new(Some(opts)),
        }
    }

    /// Sends a bodiless request to the route's origin and reads the response header.
    pub async fn send(
        &self,
        route: &Route,
        req: &RequestHeader,
    ) -> Result<OriginResponse, UpstreamError> {
        let Some(backend) = &route.s3 else {
            let peer = route.peer().await.map_err(UpstreamError::Connect)?;
            return self.send_to(peer, req).await;
        };
        let mut last: Result<OriginResponse, UpstreamError> =
            Err(UpstreamError::Connect("no bucket configured".into()));
        for target in backend.in_order() {
            for attempt in 0..S3_ATTEMPTS {
                if attempt > 0 {
                    // 100 ms, then 400 ms: S3's own advice for 500 and SlowDown.
                    tokio::time::sleep(Duration::from_millis(100 << (2 * (attempt - 1)))).await;
                }
                // Signed afresh each attempt: a signature carries its time.
                let mut signed = req.clone();
                target
                    .prepare(&mut signed)
                    .map_err(UpstreamError::Protocol)?;
                let peer = match target.endpoint.peer().await {
                    Ok(p) => p,
                    Err(e) => {
                        last = Err(UpstreamError::Connect(e));
                        break;
                    }
                };
                match self.send_to(peer, &signed).await {
                    Ok(resp) if resp.header.status.is_server_error() => {
                        tracing::warn!(route = %route.name, bucket = ?target, status = resp.header.status.as_u16(), attempt, "bucket failed");
                        last = Ok(resp);
                    }
                    Ok(resp) if resp.header.status == StatusCode::FORBIDDEN => {
                        return self.classify_forbidden(route, resp).await;
                    }
                    Ok(resp) => return Ok(resp),
                    Err(e @ UpstreamError::Connect(_)) => {
                        last = Err(e);
                        break;
                    }
                    Err(e) => last = Err(e),
                }
            }
            tracing::warn!(route = %route.name, bucket = ?target, "bucket passed over for 30s");
            target.mark_down();
        }
        match last {
            // A bucket still failing after retries: SlowDown stays a 503 (the client may retry
            // later); any other 5xx is the origin's fault, a 502.
            Ok(resp) if resp.header.status == StatusCode::SERVICE_UNAVAILABLE => Ok(resp),
            Ok(resp) => Err(UpstreamError::Protocol(format!(
                "bucket answered {}",
                resp.header.status.as_u16()
            ))),
            Err(e) => Err(e),
        }
    }

    /// A 403 from S3: Strata's credentials refused (a configuration fault, logged, a 502 to the
    /// client) or access denied to this object (passed on).
    async fn classify_forbidden(
        &self,
        route: &Route,
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
            tracing::error!(route = %route.name, code, "the bucket refused Strata's credentials");
            return Err(UpstreamError::Credentials {
                route: route.name.clone(),
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
            let (mut session, reused) = self
                .connector
                .get_http_session(&peer)
                .await
                .map_err(|e| UpstreamError::Connect(e.to_string()))?;
            match exchange(&mut session, req).await {
                Ok(header) => {
                    return Ok(OriginResponse {
                        session,
                        peer,
                        prefetched: None,
                        header,
                    })
                }
                Err(e) if reused => last = Some(e),
                Err(e) => return Err(UpstreamError::Protocol(e)),
            }
        }
        Err(UpstreamError::Protocol(
            last.unwrap_or_else(|| "no response".into()),
        ))
    }

    /// Returns a fully read response's connection to the pool.
    pub async fn release(&self, resp: OriginResponse) {
        let OriginResponse {
            mut session, peer, ..
        } = resp;
        if session.response_done() {
            self.connector
                .release_http_session(session, &peer, Some(Duration::from_secs(60)))
                .await;
        } else {
            session.shutdown().await;
        }
    }
}

async fn exchange(
    session: &mut HttpSession,
    req: &RequestHeader,
) -> Result<ResponseHeader, String> {
    session
        .write_request_header(Box::new(req.clone()))
        .await
        .map_err(|e| e.to_string())?;
    session
        .finish_request_body()
        .await
        .map_err(|e| e.to_string())?;
    // Skip 1xx interim responses.
    loop {
        session
            .read_response_header()
            .await
            .map_err(|e| e.to_string())?;
        let h = session
            .response_header()
            .ok_or_else(|| "no response header".to_string())?;
        if !h.status.is_informational() {
            return Ok(h.clone());
        }
    }
}

impl OriginResponse {
    /// The next piece of the body; `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        if let Some(b) = self.prefetched.take() {
            return Ok(Some(b).filter(|b| !b.is_empty()));
        }
        self.session
            .read_response_body()
            .await
            .map_err(|e| UpstreamError::Protocol(e.to_string()))
    }

    /// True once the whole body has been read.
    pub fn is_done(&mut self) -> bool {
        self.prefetched.is_none() && self.session.response_done()
    }
}
