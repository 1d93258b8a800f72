//! Assembling and running a node from its configuration: the cache tiers, the proxy and the
//! admin listener on one Pingora server, until a signal stops it.
//!
//! - [`build`]: the parts built from the configuration (where it is fully checked).
//! - [`admin`]: health, readiness, metrics and stats.
//! - [`shutdown`]: draining on SIGTERM/SIGINT; SIGHUP reloads.
//! - [`reload`]: applying a changed configuration file to the running node.
//! - [`notify`]: telling systemd the node is ready, reloading or stopping.
//! - [`upgrade`]: handing the listeners to a new binary without dropping a request.
//! - [`tls`]: the HTTPS listener's certificates, chosen by SNI and reloaded on SIGHUP.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TlsAccept};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::cache::coalesce::Coalescer;
use crate::cache::purge::Purges;
use crate::cache::CachePlane;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::origin::Upstream;
use crate::proxy::connections::{ConnectionCaps, Front};
use crate::proxy::timeouts::ClientTimeouts;
use crate::proxy::{Drain, Live, StrataProxy};

mod admin;
pub(crate) mod build;
mod notify;
mod reload;
mod shutdown;
pub(crate) mod tls;
mod upgrade;

pub(crate) use reload::LogLevelSetter;

use admin::{AdminApp, Warmer};
use reload::Reloader;
use shutdown::SignalWatch;

/// Opens the cache and runs the node until it is told to stop; `log_level` changes the log
/// filter when a reload changes `log.level`. With `upgrade`, the node takes over the
/// listening sockets of the node running on the same configuration (which then drains and
/// exits; see [`upgrade`]).
pub(crate) fn run(
    cfg: Config,
    path: &Path,
    log_level: Option<LogLevelSetter>,
    upgrade: bool,
) -> anyhow::Result<()> {
    let router = build::router(&cfg, path)?;
    let certificates = build::certificates(&cfg, path)?;
    for (key, addr) in std::iter::once(("listen", cfg.listen))
        .chain(cfg.admin.as_ref().map(|a| ("admin.listen", a.listen)))
        .chain(cfg.https.as_ref().map(|h| ("https.listen", h.listen)))
        .filter(|_| !upgrade)
    {
        // Pingora reports a busy port only from its worker; check first for a clear message.
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("{key}: cannot listen on {addr}"))?;
    }
    if cfg.admin.as_ref().is_some_and(|a| a.listen == cfg.listen) {
        bail!("admin.listen: must differ from listen");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let conf = ServerConf {
        threads: cfg
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        // SIGTERM drains in SignalWatch and asks for a fast shutdown, so Pingora's grace period
        // only runs after an upgrade handed the listeners over: in-flight requests get it.
        grace_period_seconds: Some(cfg.shutdown_grace.0.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: upgrade::socket(&cfg).to_string_lossy().into_owned(),
        ca_file: cfg
            .tls
            .ca_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    // Taking over an old node's listeners comes first, while it still serves; its cache
    // device is ours once it has drained and closed it.
    server.bootstrap();
    let cache = rt
        .block_on(upgrade::open_cache(&cfg, upgrade))
        .context("cache.disk: cannot open the cache device")?;
    let cache = Arc::new(cache);
    if let Some(d) = cache.disk() {
        tracing::info!(engine = d.engine_name(), direct = d.is_direct(), "L2 ready");
    }

    let purges = Arc::new(
        Purges::open(build::purge_log(&cfg).as_deref(), &cfg.cache.tag_header)
            .context("cache.disk.purge_log: cannot read or open the purge log")?,
    );
    let engine = cache.disk().map_or("none", |d| d.engine_name());
    let metrics = Arc::new(Metrics::new(engine));
    let coalescer = Arc::new(Coalescer::default());
    for r in &cfg.routes {
        metrics.known_route(&r.name);
    }
    let drain = Arc::new(Drain::default());

    router.start_health_checks(cfg.tls.ca_file.as_deref());
    let live = Live::new(router, cfg.log.access);
    let proxy = StrataProxy {
        live: live.clone(),
        cache: CachePlane {
            cache: cache.clone(),
            upstream: Arc::new(Upstream::new(cfg.tls.ca_file.as_deref(), metrics.clone())),
            coalescer: coalescer.clone(),
            memo: Default::default(),
            slice_size: cfg.cache.slice.0,
            lock_timeout: cfg.cache.lock_timeout.0,
            max_object_size: cfg.cache.max_object_size.0,
            // A description is a few hundred bytes; a memory tier this small holds none for long.
            memory_holds_records: cfg.cache.memory.0 >= 64 << 10,
            metrics: metrics.clone(),
            via: via_entry(&cfg.via),
            purges: purges.clone(),
            push_writes: crate::proxy::push_writes,
        },
        metrics: metrics.clone(),
        drain: drain.clone(),
        forwarded: cfg.forwarded_headers,
        limits: crate::proxy::Limits::new(&cfg.limits),
    };
    let mut http = pingora::proxy::http_proxy(&server.configuration, proxy);
    if cfg.h2c {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        http.server_options = Some(options);
    }
    let app = Front::new(
        http,
        ClientTimeouts {
            header: cfg.limits.header_timeout.0,
            idle: cfg.limits.idle_timeout.0,
        },
        ConnectionCaps {
            per_client: cfg.limits.connections_per_client.filter(|&n| n > 0),
            node: cfg.limits.connections.filter(|&n| n > 0),
        },
        metrics.clone(),
    );
    let mut svc = Service::new("strata proxy".to_string(), app);
    // No buffers on plain connections. The HTTP parser reads into a buffer of its own, and
    // Pingora's 64 KiB read buffer in front of it stayed with every connection, idle ones too
    // (23 KiB of resident memory each). Writes need none either: the client stream holds a
    // response header back until its body's first bytes and sends both in one `writev`
    // (`proxy::held`), so a hit's body goes from the cache to the socket without being
    // copied into a buffer first.
    let plain = L4BufferSettings::new(0, 0);
    // TLS keeps Pingora's read buffer (its records are read in small pieces) and a write buffer
    // that holds a small response whole: the TLS layer writes each record on its own, so
    // without it a header and its body would leave in two sends.
    let write = crate::cache::RESPONSE_WRITE_BUFFER;
    svc.add_listener(ListenerConfig::tcp(cfg.listen.to_string()).l4_buffer(plain));
    if let (Some(h), Some(certs)) = (&cfg.https, &certificates) {
        let mut tls = TlsSettings::with_callbacks(Box::new(NoCallbacks))
            .context("https: cannot set up TLS")?;
        tls.set_cert_resolver(certs.clone());
        if h.http2 {
            tls.enable_h2();
        }
        svc.add_listener(
            ListenerConfig::tcp(h.listen.to_string())
                .tls(tls)
                .l4_buffer(L4BufferSettings::default().write(write)),
        );
    }
    server.add_service(svc);

    if let Some(admin) = &cfg.admin {
        let mut svc = Service::new(
            "strata admin".to_string(),
            AdminApp {
                cache: cache.clone(),
                metrics: metrics.clone(),
                drain: drain.clone(),
                live: live.clone(),
                purges,
                fills: coalescer,
                warmer: Arc::new(Warmer::new(cfg.listen, metrics.clone())),
                token: admin.token.clone(),
                listen: cfg.listen,
            },
        );
        svc.add_tcp(&admin.listen.to_string());
        server.add_service(svc);
    }

    tracing::info!(listen = %cfg.listen, admin = ?cfg.admin.as_ref().map(|a| a.listen), routes = cfg.routes.len(), "strata running");
    let grace = cfg.shutdown_grace.0;
    server.run(RunArgs {
        shutdown_signal: Box::new(SignalWatch {
            drain,
            grace,
            reloader: Reloader::new(path, cfg, live, log_level, certificates),
        }),
    });
    if let Err(e) = rt.block_on(cache.close()) {
        tracing::warn!(error = %e, "cache not closed cleanly; the next start recovers by scanning");
    }
    tracing::info!("strata stopped");
    Ok(())
}

/// Strata's `Via` entry: the protocol version it received and its pseudonym (RFC 9110
/// §7.6.3); the config check made sure the pseudonym is a token.
fn via_entry(pseudonym: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("1.1 {pseudonym}"))
        .unwrap_or_else(|_| http::HeaderValue::from_static("1.1 strata"))
}

/// The TLS accept callbacks of the HTTPS listener: none (Pingora's rustls settings take a
/// certificate resolver only through the constructor that takes callbacks).
struct NoCallbacks;

#[async_trait::async_trait]
impl TlsAccept for NoCallbacks {}
