//! `POST /purge?path=P`, `?prefix=P` or `?tag=T`: the stored responses of a URL (every
//! variant), of every URL under a path prefix, or of every object the origin tagged, become
//! misses at once. A path is one a client would request; it is mapped to cache keys as the
//! proxy maps requests (route, rules, origin path), so what is purged is what is served.

use http::{Method, Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::cache::key::{cache_key, meta_key};
use crate::cache::purge::{PurgeError, Target};
use crate::node::admin::{error, json, AdminApp};
use crate::routing::{normalize, Route, Router};

/// Handles a purge request.
pub(super) async fn handle(app: &AdminApp, session: &ServerSession) -> Response<Vec<u8>> {
    let query = session.req_header().uri.query().unwrap_or("");
    let args: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    // An optional host= names the host the path is requested on (for routes with `host`).
    let host = args
        .iter()
        .find(|(k, _)| k == "host")
        .and_then(|(_, h)| crate::routing::host::normalize(h));
    let args: Vec<_> = args.iter().filter(|(k, _)| k != "host").collect();
    let [(kind, value)] = args.as_slice() else {
        return error(
            StatusCode::BAD_REQUEST,
            "give exactly one of path=, prefix= or tag= (and host= for a host's routes)",
        );
    };
    let router = app.live.router.load();
    let host = host.as_deref();
    let targets = match kind.as_str() {
        "tag" => Ok(vec![Target::Tag(value.clone())]),
        "path" => path_key(&router, host, value).map(|k| vec![Target::Key(k)]),
        "prefix" => prefix_keys(&router, host, value),
        _ => Err(format!("unknown purge kind `{kind}`: path, prefix or tag")),
    };
    let targets = match targets {
        Ok(t) if t.is_empty() => return error(StatusCode::NOT_FOUND, "no route serves it"),
        Ok(t) => t,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let mut done = Vec::new();
    for t in targets {
        if let Target::Key(k) = &t {
            // The rule covers its variants too; the URL's own record goes at once.
            let _ = app.cache.remove(&meta_key(k)).await;
        }
        let kind = t.kind();
        let shown = match &t {
            Target::Key(k) | Target::Prefix(k) => json!({ "kind": kind, "key": k }),
            Target::Tag(g) => json!({ "kind": kind, "tag": g }),
        };
        match app.purges.purge(t) {
            Ok(at) => {
                app.metrics.purge(kind);
                tracing::info!(kind, target = %shown, "purged");
                done.push(json!({ "rule": shown, "at": at }));
            }
            Err(e @ PurgeError::BadValue) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            Err(e) => {
                tracing::error!(error = %e, "purge not recorded");
                return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
            }
        }
    }
    json(StatusCode::OK, &json!({ "purged": done }))
}

/// The normalised path of a client URL path (with its query, if any).
fn split(value: &str) -> Result<(String, Option<&str>), String> {
    let (path, query) = match value.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (value, None),
    };
    normalize(path)
        .map(|p| (p, query))
        .map_err(|e| format!("bad path: {e}"))
}

/// The cache key a client path is stored under (as the proxy keys a GET of it).
pub(super) fn path_key(router: &Router, host: Option<&str>, value: &str) -> Result<String, String> {
    let (path, query) = split(value)?;
    let route = router
        .find(host, &path)
        .ok_or_else(|| "no route serves this path".to_string())?;
    Ok(cache_key(&route, host, &upstream(&route, &path, query)?))
}

/// The key prefixes a client path prefix covers: whole routes under it, or the part of the
/// one route it falls in.
fn prefix_keys(router: &Router, host: Option<&str>, value: &str) -> Result<Vec<Target>, String> {
    let (prefix, _) = split(value)?;
    let mut out = Vec::new();
    // Without host=, a purge covers every host a route answers.
    for route in router
        .routes()
        .filter(|r| host.is_none_or(|h| r.answers(h)))
    {
        if route.prefix.starts_with(prefix.as_str()) {
            // A whole route: its key base (with the host named, on a route for *.domain).
            out.push(Target::Prefix(cache_key(route, host, "")));
        }
    }
    if out.is_empty() {
        if let Some(route) = router.find(host, &prefix) {
            let up = upstream(&route, &prefix, None)?;
            out.push(Target::Prefix(cache_key(&route, host, &up)));
        }
    }
    Ok(out)
}

/// The origin path of a GET of `path` on `route`, the query kept only if its rule keys it.
fn upstream(route: &Route, path: &str, query: Option<&str>) -> Result<String, String> {
    let query = query.filter(|_| route.rule(path).query);
    route
        .backend
        .upstream_path(&route.prefix, path, path, query, &Method::GET)
        .map_err(|e| e.to_string())
}
