//! Requests Strata makes to origins on its own behalf (cache fills), over pooled connections.

use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use crate::route::Route;

/// Why an origin exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The origin could not be resolved or reached.
    #[error("origin unreachable: {0}")]
    Connect(String),
    /// The origin broke the exchange (reset, timeout, malformed response).
    #[error("origin failed: {0}")]
    Protocol(String),
}

/// A pool of connections to origins.
pub struct Upstream {
    connector: Connector,
}

/// An origin response whose body is being read.
pub struct OriginResponse {
    session: HttpSession,
    peer: HttpPeer,
    /// The response header.
    pub header: ResponseHeader,
}

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
        let peer = route.peer().await.map_err(UpstreamError::Connect)?;
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
        self.session
            .read_response_body()
            .await
            .map_err(|e| UpstreamError::Protocol(e.to_string()))
    }

    /// True once the whole body has been read.
    pub fn is_done(&mut self) -> bool {
        self.session.response_done()
    }
}
