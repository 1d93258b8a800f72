//! The `strata` command: run a node, check a configuration, inspect or format a cache device.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::cli;

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

fn main() -> ExitCode {
    let args = Cli::parse();
    let result = match args.command.unwrap_or(Command::Run) {
        Command::Check => cli::check(&args.config),
        Command::Run => cli::run(&args.config),
        Command::Inspect { disk } => cli::inspect_disk(disk.as_deref(), &args.config),
        Command::Format => cli::format_disk(&args.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
