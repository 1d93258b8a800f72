//! Start-up time of a large cache: a 4 GiB file holding over 100k items, opened after a clean
//! shutdown (summaries only) and after a crash (one open region scanned). Prints timings.
//!
//! `cargo bench -p strata-storage --bench startup`

mod common;

use std::time::Instant;

use common::{bench_dir, runtime};

use futures::future::join_all;
use strata_storage::{DiskConfig, DiskStore, EngineKind};

fn main() {
    let rt = runtime();
    let path = bench_dir().join("startup.img");
    let _ = std::fs::remove_file(&path);
    let mut cfg = DiskConfig::new(&path, 4 << 30);
    cfg.engine = EngineKind::Auto;
    let items = 120_000u64;
    let value = vec![3u8; 30_000];
    rt.block_on(async {
        let store = DiskStore::open(&cfg).await.expect("open");
        let t = Instant::now();
        for chunk in (0..items).collect::<Vec<_>>().chunks(64) {
            join_all(chunk.iter().map(|i| {
                let k = format!("startup-{i}").into_bytes();
                let v = &value;
                let store = &store;
                async move { store.insert(&k, v).await.expect("insert") }
            }))
            .await;
        }
        let s = store.stats();
        println!(
            "filled {} items ({} MiB) in {:.1}s; index {} bytes = {:.1} bytes/item",
            s.items,
            s.insert_bytes >> 20,
            t.elapsed().as_secs_f64(),
            s.index_bytes,
            s.index_bytes as f64 / s.items as f64
        );
        store.close().await.expect("close");
    });
    for round in 0..3 {
        let t = Instant::now();
        let store = rt.block_on(DiskStore::open(&cfg)).expect("reopen");
        let s = store.stats();
        println!(
            "clean start {round}: {} items recovered in {:.0} ms (store reports {} ms)",
            s.recovered_items,
            t.elapsed().as_secs_f64() * 1000.0,
            s.recovery_ms
        );
        rt.block_on(store.close()).expect("close");
    }
    // A crash: write a few more items and drop without close.
    rt.block_on(async {
        let store = DiskStore::open(&cfg).await.expect("open");
        for i in 0..200u64 {
            let k = format!("late-{i}").into_bytes();
            store.insert(&k, &value).await.expect("insert");
        }
    });
    let t = Instant::now();
    let store = rt.block_on(DiskStore::open(&cfg)).expect("reopen");
    println!(
        "start after crash: {} items recovered in {:.0} ms",
        store.stats().recovered_items,
        t.elapsed().as_secs_f64() * 1000.0
    );
    drop(store);
    let _ = std::fs::remove_file(&path);
}
