//! The `strata` command: run a node, check a configuration, inspect or format a cache device.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::cli;

// jemalloc, not the system's malloc. Every request allocates and frees Pingora's boxed request
// future (some 14 KiB) and a few dozen small buffers, which a thread cache serves without a lock;
// and the memory tier turns 64 KiB values and 1 MiB slices over all the time, which glibc's
// heap fragments, keeping the pages of chunks freed in its middle.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the environment overrides
/// them): a background thread hands freed pages back to the system within about a second, so
/// resident memory follows what is in use and stays within a limit sized for the tiers.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(
    c"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0"
        .as_ptr(),
);

/// A C string jemalloc reads (its `malloc_conf`).
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a string literal, which lives as long as the process and is never
// written; jemalloc only reads it.
unsafe impl Sync for MallocConf {}

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
    Run {
        /// Take over the listening sockets of the node running on this configuration (send
        /// it SIGQUIT once this one waits), which then drains and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate the configuration and exit.
    Check,
    /// Describe a cache device or file without changing it, or (with --url) what a running
    /// node stores for a URL.
    Inspect {
        /// The device or file (default: cache.disk.path of the configuration).
        #[arg(long, conflicts_with = "url")]
        disk: Option<PathBuf>,
        /// A path (or URL) served by the running node: what it stores for it, where.
        #[arg(long)]
        url: Option<String>,
    },
    /// Format cache.disk.path as an empty cache, whatever it holds.
    Format,
    /// Make what a running node stores for a path, a path prefix or a tag misses.
    Purge {
        /// A path as clients request it (every variant).
        #[arg(long, group = "target")]
        path: Option<String>,
        /// Every path under this prefix.
        #[arg(long, group = "target")]
        prefix: Option<String>,
        /// Every object the origin tagged with this (cache.tag_header).
        #[arg(long, group = "target")]
        tag: Option<String>,
    },
    /// Have a running node fetch a list of paths (one per line; - for standard input).
    Warm {
        /// The list.
        list: PathBuf,
        /// Fetches at once (1..=64).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// A running node's stats (JSON).
    Stats,
}

fn main() -> ExitCode {
    let args = Cli::parse();
    let result = match args.command.unwrap_or(Command::Run { upgrade: false }) {
        Command::Check => cli::check(&args.config),
        Command::Run { upgrade } => cli::run(&args.config, upgrade),
        Command::Inspect { url: Some(url), .. } => cli::inspect_url(&args.config, &url),
        Command::Inspect { disk, url: None } => cli::inspect_disk(disk.as_deref(), &args.config),
        Command::Format => cli::format_disk(&args.config),
        Command::Purge { path, prefix, tag } => match (path, prefix, tag) {
            (Some(p), _, _) => cli::purge(&args.config, &cli::PurgeTarget::Path(p)),
            (_, Some(p), _) => cli::purge(&args.config, &cli::PurgeTarget::Prefix(p)),
            (_, _, Some(t)) => cli::purge(&args.config, &cli::PurgeTarget::Tag(t)),
            _ => {
                eprintln!("strata purge: give --path, --prefix or --tag");
                Err(ExitCode::from(2))
            }
        },
        Command::Warm { list, concurrency } => cli::warm(&args.config, &list, concurrency),
        Command::Stats => cli::stats(&args.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
