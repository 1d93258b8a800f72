//! The `strata` commands: run a node, check a configuration, inspect or format a cache
//! device, and (through [`remote`]) purge, warm, stats and inspect a running node. Each
//! returns the exit code the process ends with.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, LogFormat};
use crate::node;
use crate::node::build::storage_config;
use crate::proxy;
use crate::proxy::access_line::Layout;

mod log_writer;
mod remote;

/// What `strata purge` removes.
#[derive(Debug, Clone)]
pub enum PurgeTarget {
    /// A client path, every variant.
    Path(String),
    /// Every path under a prefix.
    Prefix(String),
    /// Every object the origin tagged.
    Tag(String),
}

/// `strata purge`: makes what a running node stores for the target misses.
pub fn purge(config: &Path, target: &PurgeTarget) -> Result<(), ExitCode> {
    let (kind, value) = match target {
        PurgeTarget::Path(v) => ("path", v),
        PurgeTarget::Prefix(v) => ("prefix", v),
        PurgeTarget::Tag(v) => ("tag", v),
    };
    let q = remote::query(&[(kind, value)]);
    remote::call(config, "POST", &format!("/purge?{q}"), b"")
}

/// `strata warm`: has a running node fetch the paths listed in `list` (`-`: standard input).
pub fn warm(config: &Path, list: &Path, concurrency: usize) -> Result<(), ExitCode> {
    let body = if list == Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map(|_| b)
    } else {
        std::fs::read(list)
    };
    let body = body.map_err(|e| {
        eprintln!("strata: cannot read {}: {e}", list.display());
        ExitCode::from(2)
    })?;
    let q = remote::query(&[("concurrency", &concurrency.to_string())]);
    remote::call(config, "POST", &format!("/warm?{q}"), &body)
}

/// `strata stats`: a running node's `/stats`.
pub fn stats(config: &Path) -> Result<(), ExitCode> {
    remote::call(config, "GET", "/stats", b"")
}

/// `strata inspect --url PATH`: what a running node stores for a client path.
pub fn inspect_url(config: &Path, path: &str) -> Result<(), ExitCode> {
    // A full URL names its path; the node knows its routes by path.
    let path = match url::Url::parse(path) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => path.to_string(),
    };
    let q = remote::query(&[("path", &path)]);
    remote::call(config, "GET", &format!("/inspect?{q}"), b"")
}

/// Loads and fully checks the configuration at `path` (exit code 2 when it is invalid).
fn load(path: &Path) -> Result<Config, ExitCode> {
    let invalid = |e: &dyn std::fmt::Display| {
        eprintln!("strata: invalid configuration: {e}");
        ExitCode::from(2)
    };
    let cfg = Config::load(path).map_err(|e| invalid(&e))?;
    node::build::router(&cfg, path).map_err(|e| invalid(&e))?;
    node::build::certificates(&cfg, path).map_err(|e| invalid(&e))?;
    Ok(cfg)
}

/// `strata check`: validates the configuration as start-up would.
pub fn check(path: &Path) -> Result<(), ExitCode> {
    let cfg = load(path)?;
    println!(
        "{}: configuration OK ({} route(s))",
        path.display(),
        cfg.routes.len()
    );
    Ok(())
}

/// `strata run`: runs the node until it is told to stop; with `upgrade`, takes over from the
/// node running on the same configuration.
pub fn run(path: &Path, upgrade: bool) -> Result<(), ExitCode> {
    let cfg = load(path)?;
    // Held to the end: dropping it writes out what is still queued.
    let (log_level, _log_writer) = init_logging(&cfg)?;
    node::run(cfg, path, log_level, upgrade).map_err(|e| {
        tracing::error!(error = format!("{e:#}"), "strata failed");
        eprintln!("strata: {e:#}");
        ExitCode::FAILURE
    })
}

/// `strata inspect`: describes the cache device given, or the configuration's.
pub fn inspect_disk(disk: Option<&Path>, config: &Path) -> Result<(), ExitCode> {
    match disk {
        Some(p) => inspect(p),
        None => {
            let cfg = load(config)?;
            let Some(d) = cfg.cache.disk else {
                eprintln!("strata: cache.disk is not configured; pass --disk PATH");
                return Err(ExitCode::from(2));
            };
            inspect(&d.path)
        }
    }
}

/// `strata format`: formats the configuration's cache device as an empty cache.
pub fn format_disk(config: &Path) -> Result<(), ExitCode> {
    format(&load(config)?)
}

/// Installs the log subscriber; returns what changes its filter on a reload (`None` when
/// `RUST_LOG` set it: the environment wins over the file, at start and on reloads), and the
/// guard of the log writer.
///
/// Lines are formatted where they happen and written by a thread of their own, in batches
/// (see `log_writer`): an access log line per request must not cost the request a system call
/// or a thread wake-up. No line is dropped.
fn init_logging(
    cfg: &Config,
) -> Result<(Option<node::LogLevelSetter>, log_writer::WriterGuard), ExitCode> {
    use std::io::Write;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{reload, EnvFilter};
    let level = cfg.log.level.clone().unwrap_or_else(|| "info".into());
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (EnvFilter::new(level), false),
    };
    // The filter sits right on the registry, so one handle type serves both formats.
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = log_writer::batched(std::io::stderr()).map_err(|e| {
        eprintln!("strata: cannot start the log writer thread: {e}");
        ExitCode::FAILURE
    })?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Access lines are written by hand into the same buffer, in the same layout (a terminal
    // gets them, coloured, through the subscriber).
    let layout = match cfg.log.format {
        LogFormat::Json => Some(Layout::Json),
        LogFormat::Text => (!ansi).then_some(Layout::Text),
    };
    if let Some(layout) = layout {
        let lines = writer.clone();
        proxy::access_line::install(layout, move |line| {
            // The log writer takes every line; it reports no error.
            let _ = lines.make_writer().write_all(line);
        });
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match cfg.log.format {
        LogFormat::Json => registry.with(fmt.json()).try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    };
    let setter: node::LogLevelSetter = Box::new(move |l: &str| {
        let f = EnvFilter::try_new(l).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    });
    Ok(((!from_env).then_some(setter), guard))
}

/// Prints what a cache device holds.
fn inspect(path: &Path) -> Result<(), ExitCode> {
    let r = strata_storage::inspect(path).map_err(|e| {
        match e {
            strata_storage::StorageError::ForeignData { path, found } => {
                eprintln!(
                    "strata: {} is not a Strata cache: it {found}",
                    path.display()
                )
            }
            e => eprintln!("strata: {e}"),
        }
        ExitCode::FAILURE
    })?;
    let sb = &r.superblock;
    let uuid: String = sb.uuid.iter().map(|b| format!("{b:02x}")).collect();
    println!("device:          {}", path.display());
    println!("format:          v{}", sb.version);
    println!("uuid:            {uuid}");
    println!("size:            {} bytes", sb.device_size);
    println!("block size:      {} bytes", sb.block_size);
    println!(
        "regions:         {} of {} bytes ({} in use, {} sealed)",
        sb.region_count, sb.region_size, r.regions_in_use, r.regions_sealed
    );
    println!(
        "items:           {} ({} removal records)",
        r.items, r.tombstones
    );
    println!("bytes:           {}", r.item_bytes);
    println!(
        "last shutdown:   {}",
        if sb.clean_shutdown == 1 {
            "clean"
        } else {
            "not clean (crash, kill, or still running): start-up scans open regions"
        }
    );
    Ok(())
}

/// Formats `cache.disk.path` as an empty cache of the configured geometry.
fn format(cfg: &Config) -> Result<(), ExitCode> {
    let Some(disk) = storage_config(cfg).disk else {
        eprintln!("strata: cache.disk is not configured; nothing to format");
        return Err(ExitCode::from(2));
    };
    match strata_storage::format(&disk) {
        Ok(sb) => {
            println!("formatted {}: {}", disk.path.display(), sb.describe());
            Ok(())
        }
        Err(e) => {
            eprintln!("strata: cannot format {}: {e}", disk.path.display());
            Err(ExitCode::FAILURE)
        }
    }
}
