//! The `strata` command: run a node, check a configuration, inspect or format a cache device.

use std::ffi::{c_int, c_long};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::cli;

/// mimalloc, not the system allocator: every response allocates and frees a few small values,
/// and a fill or a disk hit a slice's worth. Under glibc's malloc those took about 5 000 of a
/// hot hit's 61 000 instructions, and malloc's bins a twelfth of the Zipf workload's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its number in `mimalloc.h`, where option numbers stay
/// fixed from version to version.
const MI_OPTION_PURGE_DELAY: c_int = 15;

extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

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
    // Memory a fill frees goes back to the system at once, not a second later: after a burst
    // of cold misses the node should hold what its fills hold (about a slice each), not 1.3
    // slices' worth of freed buffers.
    // SAFETY: a plain setter of a number, called with an option mimalloc defines.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The option number set at start is the purge delay: its default is mimalloc's one
    /// second (unless the environment sets it), and it takes the value set.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: a plain getter of a number, for an option mimalloc defines.
        let default = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(default, 1000);
        }
        // SAFETY: a plain setter of a number, for an option mimalloc defines.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
        // SAFETY: as above.
        let set = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(set, 0);
    }
}
