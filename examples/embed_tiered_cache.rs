//! Embeds Strata's storage engine, `strata-storage`, in a program of its own.
//!
//! [`TieredCache`] is a key/value cache of byte values over two tiers: memory (L1) and a disk
//! file or block device (L2). It knows nothing of HTTP. This program:
//!
//! 1. opens one with a 64 MiB memory tier over a 64 MiB cache file in the temporary directory,
//! 2. stores a few values (one of them a 1 MiB slice), reads them back and removes one,
//! 3. prints both tiers' counters and closes the cache, which seals the disk tier,
//! 4. opens the same file again: the memory tier starts empty, the disk tier recovers what
//!    it held, the values come back intact and the removed one stays removed.
//!
//! Run it with `cargo run --example embed_tiered_cache`.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_storage::{
    Admission, DiskConfig, EngineKind, EngineOptions, EvictionPolicy, TieredCache,
    TieredCacheConfig, TieredStats,
};

/// Bytes of the memory tier (L1).
const MEMORY: usize = 64 << 20;

/// Bytes of the cache file (L2), preallocated when it is created.
const DISK: u64 = 64 << 20;

/// The key removed before the cache is closed.
const REMOVED: &str = "assets/old-logo.svg";

/// The values the program stores, by key.
fn items() -> Vec<(&'static str, Bytes)> {
    vec![
        (
            "debian/dists/bookworm/InRelease",
            Bytes::from_static(b"Origin: Debian\nLabel: Debian\nSuite: stable\n"),
        ),
        (
            "assets/logo.svg",
            Bytes::from_static(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
        ),
        (REMOVED, Bytes::from_static(b"<svg/>")),
        // Large objects are stored as slices: one 1 MiB slice of a download.
        ("downloads/image.iso#0", Bytes::from(vec![0xA5u8; 1 << 20])),
    ]
}

/// How both tiers are built: the defaults of [`DiskConfig::new`], with each choice spelled out.
fn config(path: &Path) -> TieredCacheConfig {
    TieredCacheConfig {
        memory: MEMORY,
        disk: Some(DiskConfig {
            // The unit of allocation and eviction: 64 MiB holds 15 regions of 4 MiB.
            region_size: 4 << 20,
            // Exactly that size; `true` would divide the device into equal regions of at most
            // it, none of the device left over.
            region_fit: false,
            // No requirement on the largest value (a node asks for its slice size).
            largest_value: 0,
            // io_uring when the kernel allows it, a pread/pwrite thread pool otherwise.
            engine: EngineKind::Auto,
            engine_options: EngineOptions {
                queue_depth: 32,
                ..EngineOptions::default()
            },
            // A file that holds anything but a blank area or a Strata cache of this geometry is
            // refused, never formatted.
            overwrite: false,
            eviction: EvictionPolicy::SecondChance,
            ..DiskConfig::new(path, DISK)
        }),
        admission: Admission::WriteThrough,
    }
}

/// A path in the temporary directory that no other run uses.
fn scratch_path() -> Result<PathBuf, Box<dyn Error>> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let name = format!("strata-embed-{}-{nanos}.img", std::process::id());
    Ok(std::env::temp_dir().join(name))
}

/// What a read returned, compared with what was stored.
fn describe(got: Option<&Bytes>, want: &Bytes) -> String {
    match got {
        Some(v) if v == want => format!("{} bytes, intact", v.len()),
        Some(v) => format!("{} bytes, NOT what was stored", v.len()),
        None => "not found".to_string(),
    }
}

/// Prints both tiers' counters.
fn print_stats(when: &str, stats: &TieredStats) {
    let m = &stats.memory;
    println!("stats {when}:");
    println!(
        "  memory: {} hits, {} misses, {} inserts, {} evictions, budget {} MiB",
        m.hits,
        m.misses,
        m.inserts,
        m.evictions,
        m.budget >> 20
    );
    if let Some(d) = &stats.disk {
        println!(
            "  disk:   {} hits, {} misses, {} inserts ({} bytes), {} items in {} regions of {} MiB",
            d.hits,
            d.misses,
            d.inserts,
            d.insert_bytes,
            d.items,
            d.regions,
            d.region_size >> 20
        );
        println!(
            "  disk start-up: {} items recovered in {} ms, previous shutdown clean: {}",
            d.recovered_items, d.recovery_ms, d.last_shutdown_clean
        );
    }
}

/// Opens a new cache, stores and reads the values, removes one, and closes the cache.
async fn first_run(path: &Path) -> Result<(), Box<dyn Error>> {
    println!(
        "opening {} (memory {} MiB, disk {} MiB)",
        path.display(),
        MEMORY >> 20,
        DISK >> 20
    );
    let cache = TieredCache::open(config(path)).await?;
    for (key, value) in items() {
        // Returns once the value is on disk (write-through) and offered to memory.
        cache.insert(key.as_bytes(), value).await?;
    }
    for (key, value) in items() {
        let got = cache.get(key.as_bytes()).await;
        println!("  get {key}: {}", describe(got.as_ref(), &value));
    }
    cache.remove(REMOVED.as_bytes()).await?;
    println!(
        "  removed {REMOVED}; contains it: {}",
        cache.contains(REMOVED.as_bytes())
    );
    print_stats("before closing", &cache.stats());
    // Seals the disk tier's active region, so the next open reads region summaries only.
    cache.close().await?;
    // `cache` is dropped on return, which releases its lock on the file.
    Ok(())
}

/// Opens the same file again and checks that every value survived, except the removed one.
async fn second_run(path: &Path) -> Result<(), Box<dyn Error>> {
    println!("reopening {}", path.display());
    let cache = TieredCache::open(config(path)).await?;
    let mut lost = 0;
    for (key, value) in items() {
        let got = cache.get(key.as_bytes()).await;
        println!("  get {key}: {}", describe(got.as_ref(), &value));
        let expected = key != REMOVED;
        if got.as_ref() != expected.then_some(&value) {
            lost += 1;
        }
    }
    // The memory tier started empty: the reads above came from disk and were offered to
    // memory, so reading again is normally served from memory (see the memory hits below).
    for (key, _) in items() {
        cache.get(key.as_bytes()).await;
    }
    print_stats("after reopening and reading twice", &cache.stats());
    cache.close().await?;
    if lost > 0 {
        return Err(format!("{lost} value(s) did not survive the restart as expected").into());
    }
    println!("every value survived the restart; the removed one stayed removed");
    Ok(())
}

/// Both runs, one after the other, on the file at `path`.
async fn run(path: &Path) -> Result<(), Box<dyn Error>> {
    first_run(path).await?;
    second_run(path).await
}

/// Runs the example on a scratch file, removed at the end however the runs went.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = scratch_path()?;
    let result = run(&path).await;
    if let Err(e) = std::fs::remove_file(&path) {
        eprintln!("could not remove {}: {e}", path.display());
    }
    result
}
