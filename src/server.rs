//! Assembling and running a node from its configuration.

use std::sync::Arc;

use anyhow::{bail, Context};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use strata_storage::{DiskConfig, EngineOptions, TieredCache, TieredCacheConfig};

use crate::admin::AdminApp;
use crate::cached::CachedPath;
use crate::coalesce::Coalescer;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::StrataProxy;
use crate::route::Router;
use crate::shutdown::{Drain, SignalWatch};
use crate::upstream::Upstream;

/// The storage configuration a node config asks for.
pub fn storage_config(cfg: &Config) -> TieredCacheConfig {
    TieredCacheConfig {
        memory: cfg.cache.memory.0 as usize,
        disk: cfg.cache.disk.as_ref().map(|d| DiskConfig {
            path: d.path.clone(),
            size: d.size.map_or(0, |s| s.0),
            region_size: d.region_size.0,
            engine: d.io.0,
            engine_options: EngineOptions {
                queue_depth: d.queue_depth,
                ..EngineOptions::default()
            },
            overwrite: d.overwrite,
            eviction: Default::default(),
        }),
        admission: Default::default(),
    }
}

/// Opens the cache and runs the node until it is told to stop.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    for (key, addr) in std::iter::once(("listen", cfg.listen))
        .chain(cfg.admin.as_ref().map(|a| ("admin.listen", a.listen)))
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
    let cache = rt
        .block_on(TieredCache::open(storage_config(&cfg)))
        .context("cache.disk: cannot open the cache device")?;
    let cache = Arc::new(cache);
    if let Some(d) = cache.disk() {
        tracing::info!(engine = d.engine_name(), direct = d.is_direct(), "L2 ready");
    }

    let metrics = Arc::new(Metrics::new());
    let drain = Arc::new(Drain::default());
    let router = Router::new(&cfg.routes).map_err(|e| anyhow::anyhow!("routes: {e}"))?;

    let conf = ServerConf {
        threads: cfg
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        // Draining is done by SignalWatch; Pingora itself should not wait any longer.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ca_file: cfg
            .tls
            .ca_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let proxy = StrataProxy {
        router,
        cached: CachedPath {
            cache: cache.clone(),
            upstream: Arc::new(Upstream::new(cfg.tls.ca_file.as_deref())),
            coalescer: Arc::new(Coalescer::default()),
            slice_size: cfg.cache.slice.0,
            lock_timeout: cfg.cache.lock_timeout.0,
            metrics: metrics.clone(),
        },
        metrics: metrics.clone(),
        drain: drain.clone(),
    };
    let mut svc =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, proxy, "strata proxy");
    svc.add_tcp(&cfg.listen.to_string());
    server.add_service(svc);

    if let Some(admin) = &cfg.admin {
        let mut svc = Service::new(
            "strata admin".to_string(),
            AdminApp {
                cache: cache.clone(),
                metrics: metrics.clone(),
                drain: drain.clone(),
            },
        );
        svc.add_tcp(&admin.listen.to_string());
        server.add_service(svc);
    }

    tracing::info!(listen = %cfg.listen, admin = ?cfg.admin.as_ref().map(|a| a.listen), routes = cfg.routes.len(), "strata running");
    server.run(RunArgs {
        shutdown_signal: Box::new(SignalWatch {
            drain,
            grace: cfg.shutdown_grace.0,
        }),
    });
    if let Err(e) = rt.block_on(cache.close()) {
        tracing::warn!(error = %e, "cache not closed cleanly; the next start recovers by scanning");
    }
    tracing::info!("strata stopped");
    Ok(())
}
