//! The route keys of the configuration (`routes[]`, with their `s3` and `auth` sections):
//! plain data as the operator wrote it. Building a route from them (`routing`, `origin`) is
//! where they are checked.

use serde::Deserialize;
use serde_json::Value;

use super::Dur;

/// `routes[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `routes[].name`: a label for logs and metrics.
    pub name: String,
    /// `routes[].path_prefix`: requests whose path starts with it use this route.
    pub path_prefix: String,
    /// `routes[].host`: the host name (`cdn.example.com`) or names (`*.example.com`) the
    /// route answers; other hosts do not use it (default: any host).
    #[serde(default)]
    pub host: Option<String>,
    /// `routes[].origin`: base URL the prefix maps to (`http://` or `https://`).
    #[serde(default)]
    pub origin: Option<String>,
    /// `routes[].s3`: an S3 bucket instead of an HTTP origin.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// `routes[].negative_ttl`: freshness for 404 and 410 answers that state none (default: not stored).
    #[serde(default)]
    pub negative_ttl: Option<Dur>,
    /// `routes[].default_ttl`: freshness for responses that state none (default: RFC heuristics only).
    #[serde(default)]
    pub default_ttl: Option<Dur>,
    /// `routes[].ignore_cache_control`: disregard the origin's Cache-Control, Expires and
    /// Pragma and use `default_ttl` (a deliberate deviation from RFC 9111; default false).
    #[serde(default)]
    pub ignore_cache_control: bool,
    /// `routes[].auth`: who may use the route.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// `routes[].public`: the operator's word that a route signing with Strata's own
    /// credentials (an S3 route with keys) may serve anyone without `auth` (default false:
    /// such a route needs `auth` or `public: true`).
    #[serde(default)]
    pub public: bool,
    /// `routes[].vary_normalize`: compare the request headers a response varies on in a
    /// normal form (whitespace, case of the `Accept` family, order of `Accept-Encoding` and
    /// `Accept-Language` members), so equivalent requests share a variant (default false).
    #[serde(default)]
    pub vary_normalize: bool,
    /// `routes[].rules`: per-path caching rules, matched in order; the first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// `routes[].timeouts`: how long the route waits on its origin.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// `routes[].origins`: several origin servers instead of one `origin`, chosen by weight
    /// among those up.
    #[serde(default)]
    pub origins: Vec<OriginServerConfig>,
    /// `routes[].health_check`: active probes of the `origins`.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// `routes[].retries`: more servers tried when one cannot be reached (default 1).
    #[serde(default = "one")]
    pub retries: u32,
}

fn one() -> u32 {
    1
}

/// `routes[].origins[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginServerConfig {
    /// `routes[].origins[].url`: the server's base URL; every server of a route has the same
    /// path.
    pub url: String,
    /// `routes[].origins[].weight`: its share of requests (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

/// `routes[].health_check`: each interval, a `GET` of `path` on every server; a server is
/// taken out after `fall` failed probes in a row (an error, a timeout, a 5xx) and back after
/// `rise` good ones.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `routes[].health_check.path` (default `/`).
    #[serde(default = "root")]
    pub path: String,
    /// `routes[].health_check.interval` (default 2s).
    #[serde(default = "two_s")]
    pub interval: Dur,
    /// `routes[].health_check.timeout` (default 1s).
    #[serde(default = "one_s")]
    pub timeout: Dur,
    /// `routes[].health_check.fall` (default 2).
    #[serde(default = "two")]
    pub fall: u32,
    /// `routes[].health_check.rise` (default 2).
    #[serde(default = "two")]
    pub rise: u32,
}

fn root() -> String {
    "/".into()
}
fn two_s() -> Dur {
    Dur(std::time::Duration::from_secs(2))
}
fn one_s() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn two() -> u32 {
    2
}

impl HealthCheckConfig {
    /// The first value that cannot work, by key.
    pub(crate) fn problem(&self) -> Option<(&'static str, &'static str)> {
        if !self.path.starts_with('/') {
            return Some(("path", "must start with /"));
        }
        if self.interval.0.is_zero() {
            return Some(("interval", "must be more than zero"));
        }
        if self.timeout.0.is_zero() {
            return Some(("timeout", "must be more than zero"));
        }
        if self.fall == 0 {
            return Some(("fall", "must be at least 1"));
        }
        if self.rise == 0 {
            return Some(("rise", "must be at least 1"));
        }
        None
    }
}

/// `routes[].timeouts`: limits on waiting for the origin, each one wait (a connect, one read,
/// one write), not a whole transfer: a large body that keeps arriving is never cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// `routes[].timeouts.connect`: to establish a connection, TLS included (default 5s).
    pub connect: Dur,
    /// `routes[].timeouts.read`: for each read of the response, its header and every body
    /// chunk: a stalled origin is cut after it (default 60s).
    pub read: Dur,
    /// `routes[].timeouts.write`: for each write of the request (default 60s).
    pub write: Dur,
    /// `routes[].timeouts.idle`: how long an unused connection is kept for reuse (default 60s).
    pub idle: Dur,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        let s = |n| Dur(std::time::Duration::from_secs(n));
        TimeoutsConfig {
            connect: s(5),
            read: s(60),
            write: s(60),
            idle: s(60),
        }
    }
}

impl TimeoutsConfig {
    /// The first timeout that is zero (which would fail every request), by key.
    pub(crate) fn zero(&self) -> Option<&'static str> {
        [
            ("connect", self.connect),
            ("read", self.read),
            ("write", self.write),
            ("idle", self.idle),
        ]
        .into_iter()
        .find(|(_, d)| d.0.is_zero())
        .map(|(k, _)| k)
    }
}

/// `routes[].rules[]`: how the paths a glob matches are cached. Unset fields keep the route's
/// behaviour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `match`: a glob over the path below the route's `path_prefix`, without the query
    /// (`*` stays within one segment, `**` crosses segments): `pool/**`, `dists/*/Release`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// `default_ttl`: freshness for responses that state none.
    #[serde(default)]
    pub default_ttl: Option<Dur>,
    /// `ttl`: freshness that replaces the origin's: its Cache-Control, targeted fields and
    /// Expires are disregarded (a deliberate deviation from RFC 9111).
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// `stale_while_revalidate`: how long a stale response may be served while it is
    /// revalidated in the background, when the response states no window.
    #[serde(default)]
    pub stale_while_revalidate: Option<Dur>,
    /// `stale_if_error`: how long a stale response may be served when the origin fails, when
    /// the response states no window.
    #[serde(default)]
    pub stale_if_error: Option<Dur>,
    /// `cache`: whether matching responses are cached at all (default true).
    #[serde(default)]
    pub cache: Option<bool>,
    /// `query`: whether the query string is part of the cache key (default true). When
    /// false it is dropped from the key and from the request to the origin alike.
    #[serde(default)]
    pub query: Option<bool>,
}

/// `routes[].auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `routes[].auth.jwt`.
    pub jwt: JwtConfig,
}

/// How a bucket is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
}

/// One bucket as written in the configuration (`routes[].s3`, `routes[].s3.replicas[]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// `endpoint`: the S3 service URL.
    pub endpoint: String,
    /// `bucket`.
    pub bucket: String,
    /// `region`.
    pub region: String,
    /// `access_key_id`; without keys, requests are unsigned (public buckets).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// `secret_access_key`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `session_token` for temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
    /// `addressing`: default virtual-hosted for AWS endpoints, path-style otherwise.
    #[serde(default)]
    pub addressing: Option<Addressing>,
}

/// `routes[].s3`: the primary bucket's keys, plus writes and replicas.
// The bucket fields repeat BucketConfig's: serde's `flatten` would lose `deny_unknown_fields`,
// and a misspelt key must stay a config error.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `endpoint`.
    pub endpoint: String,
    /// `bucket`.
    pub bucket: String,
    /// `region`.
    pub region: String,
    /// `access_key_id`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// `secret_access_key`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `session_token`.
    #[serde(default)]
    pub session_token: Option<String>,
    /// `addressing`.
    #[serde(default)]
    pub addressing: Option<Addressing>,
    /// `allow_writes`: pass PUT, DELETE and POST (multipart uploads) to the bucket (default false).
    #[serde(default)]
    pub allow_writes: bool,
    /// `replicas`: buckets tried in order when the primary cannot be reached or fails (5xx).
    #[serde(default)]
    pub replicas: Vec<BucketConfig>,
}

impl std::fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs or error messages.
        f.debug_struct("BucketConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("signed", &self.access_key_id.is_some())
            .finish()
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("primary", &self.primary())
            .field("allow_writes", &self.allow_writes)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// `routes[].auth.jwt` as written in the configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted algorithms (`HS256`…`EdDSA`); tokens signed otherwise are refused.
    pub algorithms: Vec<String>,
    /// Shared secret for HS* algorithms.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key for RS*/PS*/ES*/EdDSA.
    #[serde(default)]
    pub public_key_file: Option<std::path::PathBuf>,
    /// JWKS document; the token's `kid` selects the key.
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// Where to look, in order: `header` (Authorization: Bearer), `query:NAME`, `header:NAME`.
    #[serde(default = "default_sources")]
    pub sources: Vec<String>,
    /// Claim name → accepted values (a scalar claim must equal one; an array must contain one).
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, Vec<Value>>,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (default 30s).
    #[serde(default)]
    pub leeway: Option<Dur>,
}

fn default_sources() -> Vec<String> {
    vec!["header".into()]
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The shared secret never reaches logs or error messages.
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.algorithms)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("sources", &self.sources)
            .field("claims", &self.claims)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl S3Config {
    /// The primary bucket's part of the configuration.
    pub fn primary(&self) -> BucketConfig {
        BucketConfig {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
            addressing: self.addressing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_debug_output() {
        let jwt: JwtConfig =
            serde_norway::from_str("{algorithms: [HS256], secret: 'hunter2-hunter2-hunter2'}")
                .unwrap();
        let s3: S3Config = serde_norway::from_str(
            "{endpoint: 'http://s3', bucket: b, region: r, access_key_id: AKID, secret_access_key: SHHH}",
        )
        .unwrap();
        let text = format!("{jwt:?} {s3:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("SHHH"),
            "{text}"
        );
        assert!(text.contains("HS256"), "{text}");
    }
}
