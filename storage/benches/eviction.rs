//! Hit ratio of region reclaim policies on a Zipf workload: plain region FIFO against second
//! chance, at the same disk size. Not a timing benchmark: it prints hit ratios.
//!
//! `cargo bench -p strata-storage --bench eviction`

mod common;
#[path = "common/zipf.rs"]
mod zipf;

use common::{bench_dir, runtime};
use strata_storage::{DiskConfig, DiskStore, EngineKind, EvictionPolicy};
use zipf::{uniform, Zipf};

const KEYS: u64 = 20_000;
const ITEM: usize = 16 * 1024;
const REQUESTS: u64 = 200_000;
const WARMUP: u64 = 50_000;

async fn run(policy: EvictionPolicy, disk_mb: u64, s: f64) -> f64 {
    let dir = tempfile::tempdir_in(bench_dir()).expect("dir");
    let mut cfg = DiskConfig::new(dir.path().join("zipf.img"), disk_mb << 20);
    cfg.region_size = 4 << 20;
    cfg.engine = EngineKind::Auto;
    cfg.eviction = policy;
    let store = DiskStore::open(&cfg).await.expect("open");
    let zipf = Zipf::new(KEYS as usize, s);
    let value = vec![7u8; ITEM - 64];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let (mut hits, mut reqs) = (0u64, 0u64);
    for i in 0..WARMUP + REQUESTS {
        // Popular keys are scattered over the key space, as URLs are.
        let k = (zipf.sample(uniform(&mut x)) as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) % KEYS;
        let key = k.to_le_bytes();
        let hit = store.get(&key).await.is_some();
        if !hit {
            store.insert(&key, &value).await.expect("insert");
        }
        if i >= WARMUP {
            reqs += 1;
            hits += hit as u64;
        }
    }
    hits as f64 / reqs as f64
}

fn main() {
    let rt = runtime();
    println!(
        "Zipf over {KEYS} keys of {} KiB ({} MiB), {REQUESTS} measured requests after {WARMUP} warm-up",
        ITEM / 1024,
        (KEYS * ITEM as u64) >> 20
    );
    println!(
        "{:>8} {:>6} {:>10} {:>14} {:>8}",
        "disk", "s", "fifo", "second-chance", "gain"
    );
    for (disk_mb, s) in [(64u64, 0.9f64), (128, 0.9), (64, 0.7), (128, 1.1)] {
        let fifo = rt.block_on(run(EvictionPolicy::Fifo, disk_mb, s));
        let sc = rt.block_on(run(EvictionPolicy::SecondChance, disk_mb, s));
        println!(
            "{:>5}MiB {:>6.1} {:>10.4} {:>14.4} {:>+8.4}",
            disk_mb,
            s,
            fifo,
            sc,
            sc - fifo
        );
    }
}
