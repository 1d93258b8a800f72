//! Routes: which origin serves a path, and how the path maps onto it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pingora::upstreams::peer::HttpPeer;
use std::sync::{Arc, Mutex};

use crate::auth::JwtAuth;
use crate::config::RouteConfig;
use crate::freshness::Overrides;
use crate::s3::S3Backend;

/// How long a resolved origin address is reused before it is looked up again.
const DNS_TTL: Duration = Duration::from_secs(30);

/// An HTTP(S) origin base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `https` when true.
    pub tls: bool,
    /// Host name or address, without port.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path prefix on the origin, always ending with `/`.
    pub base_path: String,
}

impl Origin {
    /// Parses `http://host[:port][/path]` or `https://…`.
    pub fn parse(s: &str) -> Result<Origin, String> {
        let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
        let tls = match u.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "scheme `{other}` is not supported (use http or https)"
                ))
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{s}` has no host"))?;
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!("`{s}`: credentials in the URL are not supported"));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(format!("`{s}`: an origin may not have a query or fragment"));
        }
        let port = u
            .port_or_known_default()
            .ok_or_else(|| format!("`{s}` has no port"))?;
        let mut base_path = u.path().to_string();
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        Ok(Origin {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            base_path,
        })
    }

    /// The value for the upstream `Host` header.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// One configured route.
#[derive(Debug)]
pub struct Route {
    /// `routes[].name`.
    pub name: String,
    /// `routes[].path_prefix`.
    pub prefix: String,
    /// The origin (for an S3 route: the primary bucket's endpoint, as requests address it).
    pub origin: Origin,
    /// `routes[].default_ttl`, `negative_ttl` and `ignore_cache_control`.
    pub overrides: Overrides,
    /// `routes[].auth.jwt`.
    pub auth: Option<JwtAuth>,
    /// `routes[].s3`: the bucket(s) behind the route.
    pub s3: Option<S3Backend>,
    /// Where requests go: the origin, or the primary bucket's endpoint (one DNS cache each).
    endpoint: Arc<Endpoint>,
    key_base: String,
}

impl Route {
    /// Builds a route from validated configuration.
    pub fn new(cfg: &RouteConfig) -> Result<Route, String> {
        let (endpoint, s3) = match (&cfg.origin, &cfg.s3) {
            (Some(o), None) => (Arc::new(Endpoint::new(Origin::parse(o)?)), None),
            (None, Some(s)) => {
                let backend = S3Backend::new(s)?;
                (backend.primary().endpoint.clone(), Some(backend))
            }
            _ => return Err("give exactly one of origin and s3".into()),
        };
        // Cache keys start with the origin's URL (for an S3 route, the primary bucket's, so two
        // buckets behind one endpoint never share keys).
        let scheme = if endpoint.origin.tls { "https" } else { "http" };
        let bucket = s3
            .as_ref()
            .map(|s| s.primary().request_path(""))
            .unwrap_or_default();
        let key_base = format!("{scheme}://{}{bucket}", endpoint.origin.host_header());
        Ok(Route {
            key_base,
            name: cfg.name.clone(),
            prefix: cfg.path_prefix.clone(),
            origin: endpoint.origin.clone(),
            endpoint,
            overrides: Overrides {
                default_ttl: cfg.default_ttl.map(|d| d.0),
                negative_ttl: cfg.negative_ttl.map(|d| d.0),
                ignore_cache_control: cfg.ignore_cache_control,
            },
            auth: match &cfg.auth {
                Some(a) => {
                    Some(JwtAuth::new(&a.jwt).map_err(|(k, m)| format!("auth.jwt.{k}: {m}"))?)
                }
                None => None,
            },
            s3,
        })
    }

    /// The origin path (and query) for a client path that starts with this route's prefix.
    /// For an S3 route this is the object key (encoded as S3 expects) and query; each bucket
    /// target turns it into its own request path.
    pub fn upstream_path(&self, path_and_query: &str) -> String {
        let rest = path_and_query
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(path_and_query);
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if self.s3.is_some() {
            let (key, query) = match rest.split_once('?') {
                Some((k, q)) => (k, Some(q)),
                None => (rest, None),
            };
            let key = crate::s3::encode_key(key);
            return match query {
                Some(q) => format!("/{key}?{q}"),
                None => format!("/{key}"),
            };
        }
        format!("{}{}", self.origin.base_path, rest)
    }

    /// A peer for the origin (an S3 route's primary bucket).
    pub async fn peer(&self) -> Result<HttpPeer, String> {
        self.endpoint.peer().await
    }

    /// What cache keys of this route start with.
    pub fn key_base(&self) -> &str {
        &self.key_base
    }
}

/// A host to connect to, with its resolved address cached for [`DNS_TTL`].
#[derive(Debug)]
pub struct Endpoint {
    /// Where it is.
    pub origin: Origin,
    dns: Mutex<Option<(Instant, SocketAddr)>>,
}

impl Endpoint {
    /// An endpoint for `origin`.
    pub fn new(origin: Origin) -> Self {
        Endpoint {
            origin,
            dns: Mutex::new(None),
        }
    }

    /// A peer for the endpoint, resolving its name at most every [`DNS_TTL`].
    pub async fn peer(&self) -> Result<HttpPeer, String> {
        let cached = self
            .dns
            .lock()
            .ok()
            .and_then(|g| *g)
            .filter(|(at, _)| at.elapsed() < DNS_TTL)
            .map(|(_, a)| a);
        let addr = match cached {
            Some(a) => a,
            None => {
                let target = (self.origin.host.as_str(), self.origin.port);
                let addr = tokio::net::lookup_host(target)
                    .await
                    .map_err(|e| format!("cannot resolve {}: {e}", self.origin.host))?
                    .next()
                    .ok_or_else(|| format!("{} has no addresses", self.origin.host))?;
                if let Ok(mut g) = self.dns.lock() {
                    *g = Some((Instant::now(), addr));
                }
                addr
            }
        };
        let mut peer = HttpPeer::new(addr, self.origin.tls, self.origin.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(Duration::from_secs(5));
        o.total_connection_timeout = Some(Duration::from_secs(10));
        o.read_timeout = Some(Duration::from_secs(60));
        o.write_timeout = Some(Duration::from_secs(60));
        o.idle_timeout = Some(Duration::from_secs(60));
        Ok(peer)
    }
}

/// A request path as routes see it: `.` and `..` segments resolved (also when written `%2e`),
/// repeated slashes merged. Routing on it means no spelling of a path reaches another route's
/// origin path without passing that route's checks.
pub fn normalize(path: &str) -> String {
    let decoded = path.replace("%2e", ".").replace("%2E", ".");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut n = format!("/{}", out.join("/"));
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if trailing && n != "/" {
        n.push('/');
    }
    n
}

/// Routes ordered so that the longest matching prefix wins.
#[derive(Debug)]
pub struct Router {
    routes: Vec<std::sync::Arc<Route>>,
}

impl Router {
    /// Builds the router from validated route configurations.
    pub fn new(cfgs: &[RouteConfig]) -> Result<Router, String> {
        let mut routes = cfgs
            .iter()
            .map(|c| Route::new(c).map(std::sync::Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Router { routes })
    }

    /// The route for a request path.
    pub fn find(&self, path: &str) -> Option<std::sync::Arc<Route>> {
        self.routes
            .iter()
            .find(|r| path.starts_with(r.prefix.as_str()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, origin: &str) -> Route {
        Route::new(&RouteConfig {
            name: "r".into(),
            path_prefix: prefix.into(),
            origin: Some(origin.into()),
            s3: None,
            negative_ttl: None,
            default_ttl: None,
            ignore_cache_control: false,
            auth: None,
        })
        .unwrap()
    }

    #[test]
    fn maps_paths_onto_the_origin() {
        let r = route("/debian/", "http://deb.debian.org/debian/");
        assert_eq!(
            r.upstream_path("/debian/dists/a?x=1"),
            "/debian/dists/a?x=1"
        );
        let r = route("/", "http://127.0.0.1:9000");
        assert_eq!(r.upstream_path("/a/b"), "/a/b");
        let r = route("/mirror", "https://example.org/pub");
        assert_eq!(r.upstream_path("/mirror/x"), "/pub/x");
    }

    #[test]
    fn parses_origins() {
        let o = Origin::parse("https://example.org").unwrap();
        assert_eq!((o.tls, o.port, o.base_path.as_str()), (true, 443, "/"));
        assert_eq!(o.host_header(), "example.org");
        let o = Origin::parse("http://[::1]:8081/x").unwrap();
        assert_eq!(o.host, "::1");
        assert_eq!(o.host_header(), "[::1]:8081");
        assert!(Origin::parse("ftp://x/").is_err());
        assert!(Origin::parse("http://u:p@x/").is_err());
        assert!(Origin::parse("not a url").is_err());
    }

    #[test]
    fn paths_are_normalised_for_routing() {
        assert_eq!(normalize("//private/x"), "/private/x");
        assert_eq!(normalize("/a/./b/../c"), "/a/c");
        assert_eq!(normalize("/a/%2e%2e/private/"), "/private/");
        assert_eq!(normalize("/../../x"), "/x");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/a/b/"), "/a/b/");
    }

    #[test]
    fn longest_prefix_wins() {
        let cfg = |n: &str, p: &str| RouteConfig {
            name: n.into(),
            path_prefix: p.into(),
            origin: Some("http://127.0.0.1:1/".into()),
            s3: None,
            negative_ttl: None,
            default_ttl: None,
            ignore_cache_control: false,
            auth: None,
        };
        let router = Router::new(&[cfg("all", "/"), cfg("deb", "/debian/")]).unwrap();
        assert_eq!(router.find("/debian/x").unwrap().name, "deb");
        assert_eq!(router.find("/other").unwrap().name, "all");
    }
}
