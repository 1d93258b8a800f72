//! The YAML configuration as plain data: what the operator wrote, with defaults filled in.
//!
//! It imports nothing of the proxy. [`Config::load`] parses it (expanding `${ENV}`), makes its
//! paths absolute and checks what can be checked from the values alone; building the node
//! from it (`node::build`) checks the rest (origins, buckets, keys), so `strata check` and
//! start-up share one path and every message names its key.
//!
//! - [`units`]: sizes and durations; [`route`]: the `routes[]` keys; [`https`]: the client
//!   TLS listener; `env`: `${ENV}`; `load`: reading, parsing and the value checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use strata_storage::EngineKind;

mod env;
mod https;
mod load;
mod route;
mod units;

pub use https::{CertificateConfig, HttpsConfig, TlsVersion};
pub(crate) use load::largest_region;
pub use load::ConfigError;
pub use route::{
    Addressing, AuthConfig, BucketConfig, HealthCheckConfig, JwtConfig, OriginServerConfig,
    RouteConfig, RuleConfig, S3Config, TimeoutsConfig,
};
pub use units::{Dur, Size};

/// The whole configuration of a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public listener (`listen`).
    pub listen: SocketAddr,
    /// `https`: a TLS listener for clients (default none).
    #[serde(default)]
    pub https: Option<HttpsConfig>,
    /// `h2c`: HTTP/2 without TLS on `listen`, for clients that know it is spoken there (prior
    /// knowledge; default false).
    #[serde(default)]
    pub h2c: bool,
    /// Admin listener (`admin`).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Worker threads of the proxy (`threads`, default: one per core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// How long a shutdown waits for in-flight requests (`shutdown_grace`, default 5s).
    #[serde(default = "default_grace")]
    pub shutdown_grace: Dur,
    /// Logging (`log`).
    #[serde(default)]
    pub log: LogConfig,
    /// TLS towards origins (`tls`).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Cache tiers (`cache`).
    pub cache: CacheConfig,
    /// Routes (`routes`), matched by longest `path_prefix`.
    pub routes: Vec<RouteConfig>,
    /// `limits`: per-client limits (default none).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `forwarded_headers`: how requests passed through to origins name their client
    /// (`X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`): `replace` (default: what the
    /// client sent is dropped), `append`, or `off`.
    #[serde(default)]
    pub forwarded_headers: ForwardedMode,
    /// `upgrade_socket`: the Unix socket a new binary started with `--upgrade` receives the
    /// listening sockets on (default `strata-upgrade-<listen port>.sock` in the temporary
    /// directory).
    #[serde(default)]
    pub upgrade_socket: Option<PathBuf>,
    /// `via`: the pseudonym Strata names itself by in `Via` on requests to origins and on
    /// responses (RFC 9110 §7.6.3; default `strata`).
    #[serde(default = "default_via")]
    pub via: String,
}

/// `admin:`: the admin listener.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `admin.listen`.
    pub listen: SocketAddr,
    /// `admin.token`: a bearer token every admin request but `/health` and `/ready` must
    /// carry (`Authorization: Bearer …`; default none: the listener is the only guard).
    #[serde(default)]
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches logs or error messages.
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `log:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `log.format`: `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// `log.level`: a tracing filter such as `info` or `strata=debug` (default `info`; `RUST_LOG` wins).
    #[serde(default)]
    pub level: Option<String>,
    /// `log.access`: one line per request at info level, target `access` (default true).
    #[serde(default = "default_true")]
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: None,
            access: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// `tls:`: how HTTPS origins are verified.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `tls.ca_file`: a PEM bundle trusted for HTTPS origins instead of the system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `limits:`: what one client address may ask of the node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `limits.requests_per_second`: requests per second per client address; more get 429
    /// with `Retry-After` (default: no limit).
    #[serde(default)]
    pub requests_per_second: Option<u32>,
    /// `limits.requests_in_flight`: requests at once per client address; more get 429
    /// (default: no limit).
    #[serde(default)]
    pub requests_in_flight: Option<u32>,
    /// `limits.header_timeout`: how long a client has to send a whole request header, from
    /// its connection (first request) or from the request's first byte (later ones); a client
    /// that trickles a header (slowloris) is cut then (default 10s).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// `limits.idle_timeout`: how long a client connection may pass no bytes either way,
    /// between requests or within one, before it is closed (default 60s).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// `limits.connections_per_client`: connections one client address may hold open; more
    /// are closed at once (default: no limit).
    #[serde(default)]
    pub connections_per_client: Option<u32>,
    /// `limits.connections`: client connections the node holds open at most, over both
    /// listeners; more are closed at once (default: no limit).
    #[serde(default)]
    pub connections: Option<u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_second: None,
            requests_in_flight: None,
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            connections_per_client: None,
            connections: None,
        }
    }
}

fn default_header_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}

fn default_idle_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}

/// `forwarded_headers`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ForwardedMode {
    /// Drop what the client sent and name the client (an edge trusts no client's claim).
    #[default]
    Replace,
    /// Add the client to what it sent (behind a trusted proxy).
    Append,
    /// Leave the headers as the client sent them.
    Off,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `cache:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `cache.memory`: L1 budget.
    pub memory: Size,
    /// `cache.disk`: the L2 device; absent means memory only.
    #[serde(default)]
    pub disk: Option<DiskConfig>,
    /// `cache.slice`: size of the pieces large objects are stored in (default 1MiB).
    #[serde(default = "default_slice")]
    pub slice: Size,
    /// `cache.lock_timeout`: how long a client waits on another's fill that makes no progress
    /// before fetching for itself (default 5s).
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Dur,
    /// `cache.max_object_size`: responses larger than this are forwarded, not stored
    /// (default 1TiB).
    #[serde(default = "default_max_object_size")]
    pub max_object_size: Size,
    /// `cache.targeted_cache_control`: the targeted cache-control fields (RFC 9213) Strata
    /// obeys instead of `Cache-Control`, first present wins (default
    /// `[Strata-Cache-Control, CDN-Cache-Control]`; `[]` obeys none).
    #[serde(default = "default_targeted")]
    pub targeted_cache_control: Vec<String>,
    /// `cache.tag_header`: the origin response header whose values (separated by spaces or
    /// commas) tag an object for purging by tag (default `Surrogate-Key`).
    #[serde(default = "default_tag_header")]
    pub tag_header: String,
}

/// `cache.disk:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// `cache.disk.path`: a file (created and preallocated) or a block device.
    pub path: PathBuf,
    /// `cache.disk.size`: size of a file; ignored for a block device.
    #[serde(default)]
    pub size: Option<Size>,
    /// `cache.disk.io`: `auto`, `io_uring` or `psync`.
    #[serde(default)]
    pub io: IoEngine,
    /// `cache.disk.region_size`: bytes per region. Unset, a new cache divides the device into
    /// equal regions of at most 16MiB (or four slices, if larger) with none of it left over,
    /// and an existing cache keeps the region size it was formatted with.
    #[serde(default)]
    pub region_size: Option<Size>,
    /// `cache.disk.overwrite`: format the device even if it holds other data (default false).
    #[serde(default)]
    pub overwrite: bool,
    /// `cache.disk.queue_depth`: io_uring queue depth (default 64).
    #[serde(default = "default_queue_depth")]
    pub queue_depth: u32,
    /// `cache.disk.write_queue`: bytes of cache writes that may wait for the device at once
    /// (default 64MiB; 0 for no bound). Past it, new objects are kept in memory only until
    /// the device catches up (`strata_disk_writes_shed_total`), except slices a client has
    /// yet to read, whose writes wait.
    #[serde(default = "default_write_queue")]
    pub write_queue: Size,
    /// `cache.disk.purge_log`: where purge rules are kept across restarts (default: the
    /// cache file's path with `.purges` added; required to keep purges with a block device).
    #[serde(default)]
    pub purge_log: Option<PathBuf>,
}

/// `cache.disk.io`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoEngine(pub EngineKind);

impl<'de> Deserialize<'de> for IoEngine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(IoEngine).map_err(serde::de::Error::custom)
    }
}

/// Where a client on this host reaches a listener bound to `listen`: a wildcard address
/// (`0.0.0.0`, `[::]`) on loopback, any other as it is.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

fn default_write_queue() -> Size {
    Size(strata_storage::DEFAULT_WRITE_QUEUE)
}

fn default_tag_header() -> String {
    "Surrogate-Key".into()
}
fn default_via() -> String {
    "strata".into()
}
fn default_targeted() -> Vec<String> {
    vec!["Strata-Cache-Control".into(), "CDN-Cache-Control".into()]
}
fn default_grace() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_slice() -> Size {
    Size(1 << 20)
}
fn default_max_object_size() -> Size {
    Size(1 << 40)
}
fn default_lock_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_queue_depth() -> u32 {
    64
}
