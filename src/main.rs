//! The `strata` command: run a node, check a configuration, inspect or format a cache device.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::config::{Config, LogFormat};

/// Strata, an edge caching reverse proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, default_value = "config.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (the default).
    Run,
    /// Validate the configuration and exit.
    Check,
    /// Describe a cache device or file without changing it.
    Inspect {
        /// The device or file (default: cache.disk.path of the configuration).
        #[arg(long)]
        disk: Option<PathBuf>,
    },
    /// Format cache.disk.path as an empty cache, whatever it holds.
    Format,
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("strata: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Check => load(&cli.config).map(|cfg| {
            println!(
                "{}: configuration OK ({} route(s))",
                cli.config.display(),
                cfg.routes.len()
            );
        }),
        Command::Run => load(&cli.config).and_then(|cfg| {
            init_logging(&cfg);
            strata::server::run(cfg).map_err(|e| {
                tracing::error!(error = format!("{e:#}"), "strata failed");
                eprintln!("strata: {e:#}");
                ExitCode::FAILURE
            })
        }),
        Command::Inspect { disk } => {
            let path = match disk {
                Some(p) => Ok(p),
                None => load(&cli.config).and_then(|cfg| {
                    cfg.cache.disk.map(|d| d.path).ok_or_else(|| {
                        eprintln!("strata: cache.disk is not configured; pass --disk PATH");
                        ExitCode::from(2)
                    })
                }),
            };
            path.and_then(|p| strata::tools::inspect(&p))
        }
        Command::Format => load(&cli.config).and_then(|cfg| strata::tools::format(&cfg)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn init_logging(cfg: &Config) {
    let level = cfg.log.level.clone().unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
