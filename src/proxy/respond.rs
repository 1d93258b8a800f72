//! The answers the proxy writes itself: errors, refusals and read-only routes, each carrying
//! `Cache-Status`.

use bytes::Bytes;
use http::{header, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::http::cache_status::{CacheStatus, Detail, CACHE_STATUS};
use crate::routing::Refusal;

/// Writes a small plain-text error response carrying `Cache-Status`.
pub(crate) async fn error(
    session: &mut Session,
    code: StatusCode,
    cs: &CacheStatus,
    message: &str,
) -> Result<()> {
    let body = Bytes::from(format!("strata: {message}\n"));
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(CACHE_STATUS.clone(), cs.header_value())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answers a request the route's JWT check refused: 401 (no or bad token) or 403 (claims).
pub(crate) async fn refusal(
    session: &mut Session,
    status: &mut CacheStatus,
    r: &Refusal,
) -> Result<()> {
    let (code, challenge, detail) = match r {
        Refusal::Missing => (
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"strata\"",
            Detail::TokenMissing,
        ),
        Refusal::Invalid(_) => (
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"strata\", error=\"invalid_token\"",
            Detail::TokenInvalid,
        ),
        Refusal::Forbidden { .. } => (
            StatusCode::FORBIDDEN,
            "Bearer realm=\"strata\", error=\"insufficient_scope\"",
            Detail::TokenForbidden,
        ),
    };
    tracing::info!(reason = ?r, path = %session.req_header().uri.path(), "request refused");
    status.detail = Some(detail);
    let body = Bytes::from(format!(
        "strata: {}\n",
        code.canonical_reason().unwrap_or("refused")
    ));
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header(header::WWW_AUTHENTICATE, challenge)?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(CACHE_STATUS.clone(), status.header_value())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answers an unsafe method on a read-only route: 405 with `Allow: GET, HEAD`.
pub(crate) async fn read_only(session: &mut Session, status: &CacheStatus) -> Result<()> {
    let mut resp = ResponseHeader::build(StatusCode::METHOD_NOT_ALLOWED, Some(3))?;
    resp.insert_header(header::ALLOW, "GET, HEAD")?;
    resp.insert_header(header::CONTENT_LENGTH, 0)?;
    resp.insert_header(CACHE_STATUS.clone(), status.header_value())?;
    session.write_response_header(Box::new(resp), true).await
}

/// Answers a client over its limits: 429 with `Retry-After` (the rate is counted per second).
/// The connection is not kept: a client this busy can open another when it is allowed.
pub(crate) async fn too_many(session: &mut Session, status: &CacheStatus) -> Result<()> {
    let body = Bytes::from_static(b"strata: too many requests from this address\n");
    let mut resp = ResponseHeader::build(StatusCode::TOO_MANY_REQUESTS, Some(4))?;
    resp.insert_header(header::RETRY_AFTER, 1)?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(CACHE_STATUS.clone(), status.header_value())?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}
