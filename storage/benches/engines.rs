//! Device throughput of the disk store, per io engine: random 4 KiB and 1 MiB item reads and
//! sequential 4 KiB and 1 MiB item writes, on a 1 GiB file, with `DEPTH` requests in flight.
//! The read stores are kept in the bench directory and reused by later runs.
//!
//! Compare with fio on the same file, block size and queue depth: `scripts/bench-storage` runs
//! both in one go and prints the ratios.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{bench_dir, runtime};
use criterion::{BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use strata_storage::{DiskConfig, DiskStore, EngineKind, EvictionPolicy};

const FILE: u64 = 1 << 30;
const DEPTH: usize = 32;

/// Value length whose item (header + key + value) fills exactly `padded` bytes.
fn value_len(padded: usize, key: &[u8]) -> usize {
    padded - strata_storage::ITEM_HEADER_LEN - key.len()
}

fn key(i: u64) -> Vec<u8> {
    format!("bench-{i:08}").into_bytes()
}

fn rng(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Opens the store in `name`: a fresh one, or (with `keep`) what an earlier run left there.
async fn open(engine: EngineKind, name: &str, keep: bool) -> DiskStore {
    let path = bench_dir().join(name);
    let mut cfg = DiskConfig::new(path.clone(), FILE);
    cfg.engine = engine;
    cfg.eviction = EvictionPolicy::Fifo;
    cfg.engine_options.queue_depth = DEPTH as u32 * 2;
    cfg.engine_options.psync_threads = DEPTH;
    if keep {
        if let Ok(store) = DiskStore::open(&cfg).await {
            return store;
        }
    }
    let _ = std::fs::remove_file(&path);
    DiskStore::open(&cfg).await.expect("open bench store")
}

/// Fills the store with items of `padded` bytes unless an earlier run left them; returns how
/// many. Reads are then measured on data at rest, as fio's are, not right after a burst of
/// writes the device may still be absorbing.
async fn fill(store: &DiskStore, padded: usize, bytes: u64) -> u64 {
    let n = bytes / padded as u64;
    if store.contains(&key(0)) && store.contains(&key(n - 1)) {
        return n;
    }
    let value = vec![0x5au8; value_len(padded, &key(0))];
    for chunk in (0..n).collect::<Vec<_>>().chunks(DEPTH) {
        join_all(chunk.iter().map(|&i| {
            let k = key(i);
            let v = &value;
            async move { store.insert(&k, v).await.expect("fill") }
        }))
        .await;
    }
    n
}

/// Runs `ops` operations with `DEPTH` of them always in flight (a closed loop, as fio does).
async fn closed_loop<F, Fut>(ops: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let workers: Vec<_> = (0..DEPTH as u64)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut i = w;
                while i < ops {
                    op(i).await;
                    i += DEPTH as u64;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    start.elapsed()
}

fn reads(c: &mut Criterion) {
    let rt = runtime();
    for (label, padded) in [("4KiB", 4096usize), ("1MiB", 1 << 20)] {
        let mut g = c.benchmark_group(format!("random_read_{label}"));
        g.throughput(Throughput::Bytes(padded as u64));
        g.sample_size(10);
        for engine in [EngineKind::Psync, EngineKind::IoUring] {
            let store = rt.block_on(open(engine, &format!("read-{label}.img"), true));
            // 512 MiB of items: far beyond any cache the device might have in RAM.
            let n = rt.block_on(fill(&store, padded, 512 << 20));
            let store = Arc::new(store);
            g.bench_function(BenchmarkId::from_parameter(store.engine_name()), |b| {
                b.to_async(&rt).iter_custom(|ops| {
                    let store = store.clone();
                    closed_loop(ops, move |i| {
                        let store = store.clone();
                        async move {
                            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                            let k = key(rng(&mut x) % n);
                            assert!(store.get(&k).await.is_some(), "bench item missing");
                        }
                    })
                })
            });
            // Closed cleanly, so the next run (or engine) finds the items through summaries.
            rt.block_on(store.close()).expect("close bench store");
        }
        g.finish();
    }
}

fn writes(c: &mut Criterion) {
    let rt = runtime();
    for (label, padded) in [("4KiB", 4096usize), ("1MiB", 1 << 20)] {
        let mut g = c.benchmark_group(format!("sequential_write_{label}"));
        g.throughput(Throughput::Bytes(padded as u64));
        g.sample_size(10);
        for engine in [EngineKind::Psync, EngineKind::IoUring] {
            let store = Arc::new(rt.block_on(open(engine, "write.img", false)));
            let value = Arc::new(vec![0xa5u8; value_len(padded, &key(0))]);
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            g.bench_function(BenchmarkId::from_parameter(store.engine_name()), |b| {
                b.to_async(&rt).iter_custom(|ops| {
                    let (store, value, next) = (store.clone(), value.clone(), next.clone());
                    closed_loop(ops, move |_| {
                        let (store, value, next) = (store.clone(), value.clone(), next.clone());
                        async move {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            store.insert(&key(i), &value).await.expect("write");
                        }
                    })
                })
            });
        }
        g.finish();
    }
}

/// Runs both groups, then prints criterion's summary (what `criterion_group!` and
/// `criterion_main!` would generate, without their undocumented public functions).
fn main() {
    let mut c = Criterion::default().configure_from_args();
    reads(&mut c);
    writes(&mut c);
    c.final_summary();
}
