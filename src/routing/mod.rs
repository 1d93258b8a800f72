//! Routing: which route serves a request path, who may use it, and where it goes.
//!
//! - [`path`]: the one normal form of request paths that routing, keys and forwarding share.
//! - [`auth`]: JWT-guarded routes.
//! - [`rules`]: per-path caching rules.
//! - [`host`]: the host names a route answers.
//!
//! A [`Route`] holds its [`Backend`] (how the origin is reached), its caching rules and its
//! auth; the [`Router`] picks the longest matching prefix.

use std::sync::Arc;

use crate::config::RouteConfig;
use crate::http::freshness::Overrides;
use crate::origin::{Backend, BackendError};

pub(crate) mod auth;
pub(crate) mod host;
pub(crate) mod path;
pub(crate) mod rules;

pub(crate) use auth::{AuthError, JwtAuth, Refusal};
use host::{HostError, HostPattern};
pub(crate) use path::normalize;
pub(crate) use rules::{Rule, RuleError, Rules};

/// One configured route.
#[derive(Debug)]
pub(crate) struct Route {
    /// `routes[].name`.
    pub(crate) name: String,
    /// `routes[].path_prefix`.
    pub(crate) prefix: String,
    /// `routes[].host`.
    pub(crate) host: Option<HostPattern>,
    /// The origin or bucket(s) behind the route.
    pub(crate) backend: Backend,
    /// `routes[].rules` over the route's `default_ttl`, `negative_ttl` and
    /// `ignore_cache_control`.
    pub(crate) rules: Rules,
    /// `routes[].vary_normalize`.
    pub(crate) vary_normalize: bool,
    /// `routes[].auth.jwt`.
    pub(crate) auth: Option<JwtAuth>,
    /// What the cache keys of this route start with.
    key_base: String,
}

/// Why a route cannot be built; [`RouteError::key`] names the key relative to the route.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    /// The origin or a bucket.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The JWT check.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A caching rule.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The host pattern.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Strata's own credentials offered to anyone without the operator saying so.
    #[error(
        "this route signs with Strata's credentials and has no auth: anyone could read (or \
         write) the bucket through it; add auth, or set public: true to serve it to everyone"
    )]
    PublicUnsaid,
    /// A zero timeout, which would fail every origin request.
    #[error("must be more than zero")]
    ZeroTimeout(&'static str),
}

impl RouteError {
    /// The key at fault, relative to `routes[i]`.
    pub(crate) fn key(&self) -> String {
        match self {
            RouteError::Backend(e) => e.key(),
            RouteError::Auth(e) => format!("auth.jwt.{}", e.key()),
            RouteError::Rule(e) => e.key(),
            RouteError::Host(_) => "host".into(),
            RouteError::PublicUnsaid => "public".into(),
            RouteError::ZeroTimeout(k) => format!("timeouts.{k}"),
        }
    }
}

impl Route {
    /// Builds a route from its configuration, checking every value the config left to it;
    /// `targeted` are the targeted cache-control fields the node obeys.
    pub(crate) fn new(cfg: &RouteConfig, targeted: &Arc<[String]>) -> Result<Route, RouteError> {
        if let Some(k) = cfg.timeouts.zero() {
            return Err(RouteError::ZeroTimeout(k));
        }
        let backend = Backend::from_route(cfg)?;
        if backend.uses_credentials() && cfg.auth.is_none() && !cfg.public {
            return Err(RouteError::PublicUnsaid);
        }
        Ok(Route {
            key_base: key_base(&cfg.name, &backend),
            name: cfg.name.clone(),
            prefix: cfg.path_prefix.clone(),
            host: cfg.host.as_deref().map(HostPattern::parse).transpose()?,
            backend,
            rules: Rules::new(
                &cfg.rules,
                &Overrides {
                    default_ttl: cfg.default_ttl.map(|d| d.0),
                    negative_ttl: cfg.negative_ttl.map(|d| d.0),
                    ignore_cache_control: cfg.ignore_cache_control,
                    targeted: targeted.clone(),
                    ..Overrides::default()
                },
            )?,
            vary_normalize: cfg.vary_normalize,
            auth: cfg
                .auth
                .as_ref()
                .map(|a| JwtAuth::new(&a.jwt))
                .transpose()?,
        })
    }

    /// What cache keys of this route start with.
    pub(crate) fn key_base(&self) -> &str {
        &self.key_base
    }

    /// Whether the route answers requests for `host` (normalised): any host without
    /// `routes[].host`, else the ones it names.
    pub(crate) fn answers(&self, host: &str) -> bool {
        self.host.as_ref().is_none_or(|p| p.matches(host))
    }

    /// The caching rule for a (normalised) request path of this route.
    pub(crate) fn rule(&self, path: &str) -> &Rule {
        let below = path.strip_prefix(self.prefix.as_str()).unwrap_or(path);
        self.rules.find(below.trim_start_matches('/'))
    }
}

/// What the cache keys of a route start with: the route's name (length-prefixed, so no two
/// names and origins spell one prefix), then its origin's URL. Two routes never share stored
/// responses, even over one origin: they may differ in credentials, auth or lifetimes, and a
/// response one of them may serve is not the other's to give.
fn key_base(name: &str, backend: &Backend) -> String {
    format!("{}:{name}|{}", name.len(), backend.key_base())
}

/// Fuzz entry: a request line and header lines through a JWT check that looks in every kind
/// of source; it refuses or accepts, and a request it accepts has lost its token.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_jwt(data: &[u8]) {
    use std::sync::OnceLock;
    static AUTH: OnceLock<JwtAuth> = OnceLock::new();
    let auth = AUTH.get_or_init(|| {
        let cfg: crate::config::JwtConfig = serde_norway::from_str(
            "{algorithms: [HS256], secret: fuzz-secret-fuzz-secret, sources: [header, 'query:token', 'header:x-token'], claims: {role: [a]}}",
        )
        .unwrap_or_else(|e| panic!("fuzz auth config: {e}"));
        JwtAuth::new(&cfg).unwrap_or_else(|e| panic!("fuzz auth: {e}"))
    });
    let mut lines = data.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or(b"/");
    let Ok(mut req) = pingora::http::RequestHeader::build("GET", target, None) else {
        return;
    };
    for line in lines {
        if let Some(c) = line.iter().position(|&b| b == b':') {
            let _ = req.append_header(
                String::from_utf8_lossy(&line[..c]).into_owned(),
                line[c + 1..].trim_ascii(),
            );
        }
    }
    if auth.check(&mut req).is_ok() {
        assert!(!req.headers.contains_key(http::header::AUTHORIZATION));
        assert!(!req.headers.contains_key("x-token"));
        let q = req.uri.query().unwrap_or("");
        assert!(!url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "token"));
    }
}

/// Routes ordered so that the longest matching prefix wins.
#[derive(Debug)]
pub(crate) struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    /// Starts the health checks of every route with several origin servers (a running node
    /// only; they end when this router is replaced and dropped).
    pub(crate) fn start_health_checks(&self, ca_file: Option<&std::path::Path>) {
        for r in &self.routes {
            r.backend
                .start_health_checks(ca_file.map(std::path::Path::to_path_buf));
        }
    }

    /// Builds the router; `targeted` are the targeted cache-control fields the node obeys
    /// (`cache.targeted_cache_control`). An error carries the index of the route at fault.
    pub(crate) fn new(
        cfgs: &[RouteConfig],
        targeted: &[String],
    ) -> Result<Router, (usize, RouteError)> {
        let targeted: Arc<[String]> = targeted.iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut routes = cfgs
            .iter()
            .enumerate()
            .map(|(i, c)| Route::new(c, &targeted).map(Arc::new).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        // The longest prefix first; at equal length a route for named hosts before one for
        // any host.
        routes.sort_by_key(|r| (std::cmp::Reverse(r.prefix.len()), r.host.is_none()));
        Ok(Router { routes })
    }

    /// Every route, longest prefix first.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The route for a (normalised) request path to `host` (normalised; `None`: a request
    /// whose host is not known, which only routes for any host serve).
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<Arc<Route>> {
        self.routes
            .iter()
            .filter(|r| host.map_or(r.host.is_none(), |h| r.answers(h)))
            .find(|r| path.starts_with(r.prefix.as_str()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: &str, p: &str, origin: &str) -> RouteConfig {
        RouteConfig {
            name: n.into(),
            path_prefix: p.into(),
            origin: Some(origin.into()),
            s3: None,
            negative_ttl: None,
            default_ttl: None,
            ignore_cache_control: false,
            auth: None,
            public: false,
            timeouts: Default::default(),
            origins: vec![],
            health_check: None,
            retries: 1,
            vary_normalize: false,
            rules: vec![],
            host: None,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let all = cfg("all", "/", "http://127.0.0.1:1/");
        let router =
            Router::new(&[all, cfg("deb", "/debian/", "http://127.0.0.1:1/")], &[]).unwrap();
        assert_eq!(router.find(None, "/debian/x").unwrap().name, "deb");
        assert_eq!(router.find(None, "/other").unwrap().name, "all");
    }

    #[test]
    fn host_routes_win_at_equal_prefix_and_serve_only_their_hosts() {
        let mut a = cfg("a", "/", "http://127.0.0.1:1/");
        a.host = Some("a.test".into());
        let mut w = cfg("w", "/x/", "http://127.0.0.1:1/");
        w.host = Some("*.w.test".into());
        let any = cfg("any", "/", "http://127.0.0.1:1/");
        let router = Router::new(&[any, a, w], &[]).unwrap();
        let name = |h: Option<&str>, p: &str| router.find(h, p).map(|r| r.name.clone());
        assert_eq!(name(Some("a.test"), "/p").as_deref(), Some("a"));
        assert_eq!(name(Some("b.test"), "/p").as_deref(), Some("any"));
        assert_eq!(name(None, "/p").as_deref(), Some("any"));
        assert_eq!(name(Some("q.w.test"), "/x/1").as_deref(), Some("w"));
        assert_eq!(name(Some("w.test"), "/x/1").as_deref(), Some("any"));
        let mut bad = cfg("bad", "/", "http://127.0.0.1:1/");
        bad.host = Some("no spaces.test".into());
        let Err((0, e)) = Router::new(&[bad], &[]) else {
            panic!("a bad host was accepted")
        };
        assert_eq!(e.key(), "host");
    }

    #[test]
    fn routes_over_one_origin_have_their_own_keys() {
        let router = Router::new(
            &[
                cfg("a", "/a/", "http://127.0.0.1:1/"),
                cfg("b", "/b/", "http://127.0.0.1:1/"),
            ],
            &[],
        )
        .unwrap();
        let (a, b) = (
            router.find(None, "/a/x").unwrap(),
            router.find(None, "/b/x").unwrap(),
        );
        assert_ne!(a.key_base(), b.key_base());
        assert_eq!(a.key_base(), "1:a|http://127.0.0.1:1");
    }

    #[test]
    fn a_bad_route_is_named_with_its_key() {
        let good = cfg("a", "/a/", "http://127.0.0.1:1/");
        let Err((i, e)) = Router::new(&[good, cfg("b", "/b/", "ftp://x/")], &[]) else {
            panic!("an ftp origin was accepted")
        };
        assert_eq!((i, e.key().as_str()), (1, "origin"));
    }

    #[test]
    fn a_zero_origin_timeout_is_named() {
        let mut c = cfg("a", "/", "http://127.0.0.1:1/");
        c.timeouts.read = crate::config::Dur(std::time::Duration::ZERO);
        let e = Route::new(&c, &Arc::from(vec![])).unwrap_err();
        assert_eq!(e.key(), "timeouts.read");
    }
}
