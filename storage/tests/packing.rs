//! Small items packed into write units: a cache file is addressed in the filesystem's direct IO
//! blocks (512 bytes on most), so small items are not each padded to 4 KiB, yet every write
//! covers whole 4 KiB units. Packed items survive a clean reopen (summaries) and a crash (the
//! open region scanned), on both io engines.

mod common;

use common::*;
use strata_storage::{inspect, DiskStore, EngineKind};

/// 7 regions of 1 MiB.
const SIZE: u64 = 8 << 20;
/// About what a small object's record takes: two blocks of 512 with its header and key, one
/// 4 KiB unit each when items were padded to units.
const SMALL: usize = 600;
/// More than 7 MiB of items at 4 KiB each (so some would have been evicted), under 4 MiB at
/// 1 KiB each.
const COUNT: u64 = 3_000;

async fn all_present(store: &DiskStore, keys: std::ops::Range<u64>) {
    for k in keys {
        match store.get(&key(k)).await {
            Some(v) => assert!(v[..] == value(k, 3, SMALL)[..], "key {k}: wrong bytes"),
            None => panic!("key {k}: missing"),
        }
    }
}

async fn small_items_are_packed(engine: EngineKind) {
    let dir = scratch();
    let path = dir.path().join("packed.img");
    let cfg = config(&path, SIZE, engine);
    let store = DiskStore::open(&cfg).await.expect("open");
    store.close().await.expect("close");
    drop(store);
    let block = inspect(&path).expect("inspect").superblock.block_size;
    if block > 512 {
        eprintln!("skipped: this filesystem allows direct IO only in blocks of {block} bytes");
        return;
    }
    let store = DiskStore::open(&cfg).await.expect("reopen");
    for k in 0..COUNT {
        store
            .insert(&key(k), &value(k, 3, SMALL))
            .await
            .expect("insert");
    }
    let s = store.stats();
    assert_eq!(
        (s.evicted_regions, s.items),
        (0, COUNT),
        "1 KiB each, not 4: {s:?}"
    );
    all_present(&store, 0..COUNT).await;
    // A crash: the open region is scanned, packed items and all.
    drop(store);
    let store = DiskStore::open(&cfg).await.expect("reopen after a crash");
    assert_eq!(store.stats().recovered_items, COUNT);
    all_present(&store, 0..COUNT).await;
    // Inserts go on after the recovered ones, and a clean reopen reads the summaries.
    for k in COUNT..COUNT + 100 {
        store
            .insert(&key(k), &value(k, 3, SMALL))
            .await
            .expect("insert");
    }
    store.close().await.expect("close");
    drop(store);
    let store = DiskStore::open(&cfg).await.expect("clean reopen");
    assert_eq!(store.stats().recovered_items, COUNT + 100);
    all_present(&store, 0..COUNT + 100).await;
    let report = inspect(&path).expect("inspect");
    assert!(
        report.item_bytes <= (COUNT + 100) * 1024,
        "{} bytes for {} items",
        report.item_bytes,
        COUNT + 100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_items_are_packed_psync() {
    small_items_are_packed(EngineKind::Psync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_items_are_packed_io_uring() {
    small_items_are_packed(EngineKind::IoUring).await;
}
