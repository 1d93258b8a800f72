//! Hit ratio of the two tiers on the peer rig's Zipf workload (c), replayed through a real
//! `TieredCache`: a 64 MiB memory tier over a 192 MiB file, 5 000 objects of 64 KiB, each
//! stored as the proxy stores it (a small record and one slice). Not a timing benchmark: it
//! prints hit ratios, disk reads per request, where the objects ended up, and what an oracle holding the most popular
//! objects reaches with as many. Region sizes are compared (exact, and fitted to the device
//! as a node does by default), since a region is the unit of reclaim: the open region and
//! what the device's rounding into regions leaves over hold no objects.
//!
//! `cargo bench -p strata-storage --bench tiers`

mod common;
#[path = "common/zipf.rs"]
mod zipf;

use bytes::Bytes;
use common::{bench_dir, runtime};
use strata_storage::{DiskConfig, Shed, Tier, TieredCache, TieredCacheConfig};
use zipf::{uniform, Zipf};

const OBJECTS: usize = 5_000;
const ZIPF_S: f64 = 0.9;
const SLICE: usize = 64 * 1024;
/// About what the proxy's record of such an object takes (headers, freshness, slice map).
const RECORD: usize = 600;
const MEMORY: usize = 64 << 20;
const DISK: u64 = 192 << 20;
/// As the rig: 100 000 requests to warm up, 100 000 measured.
const WARMUP: usize = 100_000;
const MEASURED: usize = 100_000;

/// What one replay found.
#[derive(Default)]
struct Replay {
    requests: usize,
    hits: usize,
    /// Hits served by memory alone (record and slice).
    memory_hits: usize,
    /// Lookups the disk answered (each a read of the device).
    disk_reads: usize,
    /// Objects whose record and slice are each found in some tier (what a request hits).
    held: usize,
    /// Objects whose record and slice are both on disk (what a restart keeps).
    on_disk: usize,
    /// The share of requests going to the objects held.
    held_share: f64,
}

fn keys(k: usize) -> (String, String) {
    (format!("m:/z/{k:04}.bin"), format!("s:{k:032x}:0"))
}

/// Replays the workload over a disk of `region_size` regions (at most that, fitted to the
/// device, with `fit`). A request hits when both the
/// record and the slice are found; a miss stores what was missing, as a fill does (the
/// record at once in memory and then on disk, the slice through a writer).
async fn replay(zipf: &Zipf, region_size: u64, fit: bool) -> Replay {
    let dir = tempfile::tempdir_in(bench_dir()).expect("dir");
    let mut disk = DiskConfig::new(dir.path().join("tiers.img"), DISK);
    disk.region_size = region_size;
    disk.region_fit = fit;
    let cache = TieredCache::open(TieredCacheConfig {
        memory: MEMORY,
        disk: Some(disk),
        admission: Default::default(),
    })
    .await
    .expect("open");
    let record = Bytes::from(vec![1u8; RECORD]);
    let slice = vec![2u8; SLICE];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut r = Replay::default();
    for i in 0..WARMUP + MEASURED {
        let (rk, sk) = keys(zipf.sample(uniform(&mut x)));
        let rec = cache.get_from(rk.as_bytes()).await;
        let sl = match rec {
            Some(_) => cache.get_from(sk.as_bytes()).await,
            None => None,
        };
        if i >= WARMUP {
            r.requests += 1;
            r.hits += (rec.is_some() && sl.is_some()) as usize;
            r.memory_hits += matches!(
                (&rec, &sl),
                (Some((_, Tier::Memory)), Some((_, Tier::Memory)))
            ) as usize;
            r.disk_reads += [&rec, &sl]
                .into_iter()
                .filter(|f| matches!(f, Some((_, Tier::Disk))))
                .count();
        }
        if rec.is_none() {
            cache.insert_memory_now(rk.as_bytes(), record.clone());
            cache
                .insert_disk(rk.as_bytes(), record.clone())
                .await
                .expect("record");
        }
        if rec.is_some() && sl.is_none() && !cache.placement(rk.as_bytes()).disk {
            // The proxy's slice fill puts back on disk a record memory kept but the disk lost.
            cache
                .insert_disk(rk.as_bytes(), record.clone())
                .await
                .expect("record");
        }
        if sl.is_none() {
            let mut w = cache.writer(sk.as_bytes(), SLICE);
            w.append(&slice);
            cache
                .insert_value(sk.as_bytes(), w, Shed::Never)
                .await
                .expect("slice");
        }
    }
    for k in 0..OBJECTS {
        let (rk, sk) = keys(k);
        let (a, b) = (
            cache.placement(rk.as_bytes()),
            cache.placement(sk.as_bytes()),
        );
        r.on_disk += (a.disk && b.disk) as usize;
        if !((a.memory || a.disk) && (b.memory || b.disk)) {
            continue;
        }
        r.held += 1;
        r.held_share += zipf.top(k + 1) - zipf.top(k);
    }
    r
}

fn main() {
    let rt = runtime();
    let zipf = Zipf::new(OBJECTS, ZIPF_S);
    let (mem_objects, disk_objects) = (MEMORY / SLICE, DISK as usize / SLICE);
    println!(
        "Zipf({ZIPF_S}) over {OBJECTS} objects of {} KiB, {} MiB memory over {} MiB disk, \
         {MEASURED} measured requests after {WARMUP}",
        SLICE >> 10,
        MEMORY >> 20,
        DISK >> 20
    );
    println!(
        "oracle: inclusive tiers {:.4} ({disk_objects} objects), exclusive {:.4} ({})",
        zipf.top(disk_objects),
        zipf.top(disk_objects + mem_objects),
        disk_objects + mem_objects
    );
    println!(
        "{:>7} {:>9} {:>7} {:>10} {:>7} {:>5} {:>10} {:>12}",
        "region",
        "hit ratio",
        "memory",
        "disk reads",
        "on disk",
        "held",
        "held share",
        "oracle(held)"
    );
    for (region_mb, fit) in [(16u64, false), (16, true), (4, false)] {
        let r = rt.block_on(replay(&zipf, region_mb << 20, fit));
        println!(
            "{:>7} {:>9.4} {:>7.4} {:>10.4} {:>7} {:>5} {:>10.4} {:>12.4}",
            format!("{}{region_mb}MiB", if fit { "<=" } else { "" }),
            r.hits as f64 / r.requests as f64,
            r.memory_hits as f64 / r.requests as f64,
            r.disk_reads as f64 / r.requests as f64,
            r.on_disk,
            r.held,
            r.held_share,
            zipf.top(r.held)
        );
    }
}
