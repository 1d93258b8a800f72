//! Invalidation by unsafe methods (RFC 9111 §4.4): a successful write removes the stored
//! response of its target, and of `Location` / `Content-Location` when they name the same
//! origin.

use http::{header, Method};
use pingora::http::ResponseHeader;
use strata_storage::TieredCache;

use crate::cache::key::{cache_key, meta_key};
use crate::routing::Route;

/// Whether a response to `method` invalidates what is stored (a successful unsafe method).
pub(crate) fn invalidates(method: &Method, resp: &ResponseHeader) -> bool {
    let unsafe_method = !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    unsafe_method && (resp.status.is_success() || resp.status.is_redirection())
}

/// Removes the stored responses a successful write to `upstream_path` of `route` invalidates.
pub(crate) async fn invalidate(
    cache: &TieredCache,
    route: &Route,
    host: Option<&str>,
    upstream_path: &str,
    resp: &ResponseHeader,
) {
    let path = route.backend.invalidated_path(upstream_path);
    let mut keys = vec![cache_key(route, host, path)];
    let url = format!("{}{path}", route.backend.key_base());
    let base = url::Url::parse(&url)
        .ok()
        .filter(|_| route.backend.invalidates_locations());
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
                keys.push(cache_key(route, host, path));
            }
        }
    }
    for k in keys {
        if let Err(e) = cache.remove(&meta_key(&k)).await {
            tracing::warn!(key = k, error = %e, "invalidation not recorded on disk");
        }
    }
}
