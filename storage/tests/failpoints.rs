//! Error paths of the disk store, reached through named failpoints (`--features failpoints`):
//! after each injected fault the store keeps serving, an item whose write failed reads back as a
//! miss (never wrong bytes), the error is counted, and a reopen recovers every intact item.
//!
//! Failpoints are process-wide: every test holds a [`FailScenario`], which serialises them.
#![cfg(feature = "failpoints")]

mod common;

use common::*;
use fail::FailScenario;
use strata_storage::{DiskStore, EngineKind, StorageError};

/// 7 regions of 1 MiB.
const SIZE: u64 = 8 << 20;
/// About a tenth of a region: 10 items (25 blocks each) fill one.
const ITEM: usize = 100_000;

fn item(n: u64) -> Vec<u8> {
    value(n, 7, ITEM)
}

/// Every key of `keys` reads back exactly as written.
async fn all_present(store: &DiskStore, keys: impl IntoIterator<Item = u64>) {
    for k in keys {
        match store.get(&key(k)).await {
            Some(v) => assert!(v[..] == item(k)[..], "key {k}: wrong bytes"),
            None => panic!("key {k}: missing"),
        }
    }
}

/// Key `k` is absent or exactly as written: never other bytes.
async fn absent_or_exact(store: &DiskStore, k: u64) -> bool {
    match store.get(&key(k)).await {
        Some(v) => {
            assert!(v[..] == item(k)[..], "key {k}: wrong bytes");
            true
        }
        None => false,
    }
}

/// `io::complete`: IO completions report EIO (writes only, then reads only), in both engines.
async fn io_completion_errors(engine: EngineKind) {
    let scenario = FailScenario::setup();
    let dir = scratch();
    let cfg = config(&dir.path().join("io.img"), SIZE, engine);
    let store = DiskStore::open(&cfg).await.expect("open");
    for k in 0..5 {
        store.insert(&key(k), &item(k)).await.expect("insert");
    }

    fail::cfg("io::complete", "return(write)").expect("failpoint");
    let err = store
        .insert(&key(5), &item(5))
        .await
        .expect_err("write must fail");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert_eq!(store.stats().io_errors, 1);
    assert!(
        store.get(&key(5)).await.is_none(),
        "a failed write is a miss"
    );
    all_present(&store, 0..5).await;

    fail::cfg("io::complete", "return(read)").expect("failpoint");
    assert!(
        store.get(&key(0)).await.is_none(),
        "a failed read is a miss"
    );
    assert_eq!(store.stats().io_errors, 2);
    // Dropped: the next request refetches it and stores it elsewhere, rather than reading a
    // failing place of the device again.
    assert!(!store.contains(&key(0)), "a failed read keeps the item");

    fail::remove("io::complete");
    all_present(&store, 1..5).await;
    assert!(store.get(&key(0)).await.is_none());
    store.insert(&key(0), &item(0)).await.expect("stored again");
    all_present(&store, 0..5).await;
    store.insert(&key(6), &item(6)).await.expect("insert heals");
    store.close().await.expect("close");
    drop(store);

    let store = DiskStore::open(&cfg).await.expect("reopen");
    all_present(&store, (0..5).chain([6])).await;
    // Its write did land (only its completion was failed): back, or absent, never other bytes.
    absent_or_exact(&store, 5).await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_complete_psync() {
    io_completion_errors(EngineKind::Psync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_complete_io_uring() {
    io_completion_errors(EngineKind::IoUring).await;
}

/// `disk::summary_write`: no sealed region gets its summary; after a crash (no close) every item
/// is found again by scanning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_write_failure_leaves_regions_to_scan() {
    let scenario = FailScenario::setup();
    let dir = scratch();
    let cfg = config(&dir.path().join("summary.img"), SIZE, EngineKind::Psync);
    let n = 35;
    {
        let store = DiskStore::open(&cfg).await.expect("open");
        fail::cfg("disk::summary_write", "return").expect("failpoint");
        for k in 0..n {
            store.insert(&key(k), &item(k)).await.expect("insert");
        }
        let s = store.stats();
        assert_eq!(s.io_errors, 3, "one per sealed region: {s:?}");
        all_present(&store, 0..n).await;
        // A crash: no close, no summary of the active region either.
    }
    fail::remove("disk::summary_write");
    let store = DiskStore::open(&cfg).await.expect("reopen");
    let s = store.stats();
    assert!(!s.last_shutdown_clean);
    assert_eq!(s.recovered_items, n);
    all_present(&store, 0..n).await;
    scenario.teardown();
}

/// `disk::seal`: regions are left unsealed; reclaiming them scans them, and second chance still
/// copies read items forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_failure_regions_are_reclaimed_by_scan() {
    let scenario = FailScenario::setup();
    let dir = scratch();
    let cfg = config(&dir.path().join("seal.img"), SIZE, EngineKind::Psync);
    let store = DiskStore::open(&cfg).await.expect("open");
    fail::cfg("disk::seal", "return").expect("failpoint");
    let n = 120u64;
    for k in 0..n {
        store.insert(&key(k), &item(k)).await.expect("insert");
        // Read every item once, so the reclaim of its region gives it a second chance.
        assert!(absent_or_exact(&store, k).await, "key {k} just written");
    }
    let s = store.stats();
    assert!(s.evicted_regions > 0, "{s:?}");
    assert!(
        s.reinserted_items > 0,
        "a scanned region kept its hot items: {s:?}"
    );
    assert!(s.io_errors >= s.evicted_regions, "every seal failed: {s:?}");
    let mut present = Vec::new();
    for k in 0..n {
        if absent_or_exact(&store, k).await {
            present.push(k);
        }
    }
    assert!(present.contains(&(n - 1)));

    fail::remove("disk::seal");
    store.close().await.expect("close");
    drop(store);
    let store = DiskStore::open(&cfg).await.expect("reopen");
    all_present(&store, present.iter().copied()).await;
    scenario.teardown();
}

/// `disk::region_header_write`: no region can be opened, so inserts fail until the fault clears;
/// what was written stays readable, before and after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_header_write_failure_refuses_inserts_until_it_heals() {
    let scenario = FailScenario::setup();
    let dir = scratch();
    let cfg = config(&dir.path().join("header.img"), SIZE, EngineKind::Psync);
    let mut written = Vec::new();
    {
        let store = DiskStore::open(&cfg).await.expect("open");
        for k in 0..3 {
            store.insert(&key(k), &item(k)).await.expect("insert");
            written.push(k);
        }
        fail::cfg("disk::region_header_write", "return").expect("failpoint");
        // Region 0 fills; sealing it and opening the next both write a header.
        let mut failed = None;
        for k in 3..20 {
            match store.insert(&key(k), &item(k)).await {
                Ok(()) => written.push(k),
                Err(e) => {
                    assert!(matches!(e, StorageError::Io { .. }), "{e}");
                    failed = Some(k);
                    break;
                }
            }
        }
        let failed = failed.expect("an insert needing a new region fails");
        assert!(
            store.stats().io_errors >= 2,
            "the seal's and the open's header"
        );
        assert!(store.get(&key(failed)).await.is_none());
        assert!(
            store.insert(&key(100), &item(100)).await.is_err(),
            "still failing"
        );
        all_present(&store, written.iter().copied()).await;

        fail::remove("disk::region_header_write");
        store.insert(&key(101), &item(101)).await.expect("heals");
        written.push(101);
        all_present(&store, written.iter().copied()).await;
        // A crash: region 0's header still says open, so it is scanned.
    }
    let store = DiskStore::open(&cfg).await.expect("reopen");
    assert_eq!(store.stats().recovered_items, written.len() as u64);
    all_present(&store, written.iter().copied()).await;
    scenario.teardown();
}

/// `disk::reclaim`: with no free region, an insert fails and the oldest region keeps its items;
/// once the fault clears, reclaim proceeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_failure_keeps_the_region_and_its_items() {
    let scenario = FailScenario::setup();
    let dir = scratch();
    let mut cfg = config(&dir.path().join("reclaim.img"), SIZE, EngineKind::Psync);
    cfg.eviction = strata_storage::EvictionPolicy::Fifo;
    let store = DiskStore::open(&cfg).await.expect("open");
    fail::cfg("disk::reclaim", "return").expect("failpoint");
    let mut written = Vec::new();
    let mut failed = None;
    for k in 0..100 {
        match store.insert(&key(k), &item(k)).await {
            Ok(()) => written.push(k),
            Err(e) => {
                assert!(matches!(e, StorageError::Io { .. }), "{e}");
                failed = Some(k);
                break;
            }
        }
    }
    let failed = failed.expect("the device fills up");
    let s = store.stats();
    assert_eq!(s.evicted_regions, 0);
    assert_eq!(s.io_errors, 1);
    assert!(store.get(&key(failed)).await.is_none());
    all_present(&store, written.iter().copied()).await;

    fail::remove("disk::reclaim");
    store
        .insert(&key(failed), &item(failed))
        .await
        .expect("reclaim heals");
    let s = store.stats();
    assert_eq!(s.evicted_regions, 1);
    assert!(absent_or_exact(&store, failed).await);
    // Region 0's items went with it (the oldest, FIFO); the rest are still there.
    let survivors: Vec<u64> = written[s.evicted_items as usize..].to_vec();
    all_present(&store, survivors.iter().copied()).await;
    store.close().await.expect("close");
    drop(store);
    let store = DiskStore::open(&cfg).await.expect("reopen");
    all_present(&store, survivors.iter().copied().chain([failed])).await;
    scenario.teardown();
}

/// `disk::item_write`: item writes that never land. The older version of the key stays served,
/// before and after a restart: the region's summary must not list bytes that never landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_item_write_keeps_the_older_version() {
    let scenario = FailScenario::setup();
    let dir = scratch();
    let cfg = config(&dir.path().join("item.img"), SIZE, EngineKind::Psync);
    let store = DiskStore::open(&cfg).await.expect("open");
    store.insert(&key(1), &item(1)).await.expect("insert");
    store.insert(&key(2), &item(2)).await.expect("insert");

    fail::cfg("disk::item_write", "return").expect("failpoint");
    let newer = value(1, 99, ITEM);
    let err = store
        .insert(&key(1), &newer)
        .await
        .expect_err("write must fail");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert!(
        store.remove(&key(2)).await.is_err(),
        "the removal record is an item write too"
    );
    assert_eq!(store.stats().io_errors, 2);
    fail::remove("disk::item_write");

    all_present(&store, [1]).await;
    assert!(
        store.get(&key(2)).await.is_none(),
        "removed from memory all the same"
    );
    // More items, so the region holding the failed writes is sealed with its summary.
    for k in 3..15 {
        store.insert(&key(k), &item(k)).await.expect("insert");
    }
    store.close().await.expect("close");
    drop(store);

    let store = DiskStore::open(&cfg).await.expect("reopen");
    all_present(&store, (1..2).chain(3..15)).await;
    assert_eq!(store.stats().checksum_failures, 0);
    // A removal whose record failed to land still applies: the summary lists it.
    assert!(store.get(&key(2)).await.is_none());
    scenario.teardown();
}

/// `disk::region_header_write` during a reclaim: the region whose next generation cannot be
/// opened keeps its old one, items indexed (none is lost or counted evicted); once the fault
/// clears, the reclaim proceeds and second chance copies the read items forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_cannot_be_reopened_keeps_its_items() {
    let scenario = FailScenario::setup();
    let dir = scratch();
    let cfg = config(&dir.path().join("hot.img"), SIZE, EngineKind::Psync);
    let store = DiskStore::open(&cfg).await.expect("open");
    // 7 regions of 10 items: the device is full.
    let n = 70u64;
    for k in 0..n {
        store.insert(&key(k), &item(k)).await.expect("insert");
    }
    // Half of region 0 is read, so it earns a second chance.
    all_present(&store, 0..5).await;
    assert_eq!(store.stats().items, n);

    fail::cfg("disk::region_header_write", "return").expect("failpoint");
    let err = store
        .insert(&key(n), &item(n))
        .await
        .expect_err("no region opens");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    fail::remove("disk::region_header_write");

    let s = store.stats();
    assert_eq!((s.evicted_regions, s.evicted_items), (0, 0), "{s:?}");
    assert_eq!(s.items, n, "region 0 keeps its items: {s:?}");
    all_present(&store, 0..n).await;
    store.insert(&key(n), &item(n)).await.expect("heals");
    let s = store.stats();
    assert_eq!(s.evicted_regions, 1);
    assert_eq!(s.reinserted_items, 5, "{s:?}");
    assert_eq!(s.items + s.evicted_items, n + 1, "{s:?}");
    all_present(&store, (0..5).chain(10..=n)).await;
    scenario.teardown();
}

/// `disk::item_write` (as a hook that holds one write back) and `io::complete`: a write that
/// fails after its region was sealed takes the region's summary away, so recovery scans the
/// region rather than trust a list naming the failed item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_after_its_region_was_sealed_unlists_the_summary() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Mutex};

    let scenario = FailScenario::setup();
    let dir = scratch();
    let path = dir.path().join("late.img");
    let cfg = config(&path, SIZE, EngineKind::Psync);
    let store = Arc::new(DiskStore::open(&cfg).await.expect("open"));
    store.insert(&key(0), &item(0)).await.expect("insert");

    // The first item write to reach the failpoint waits there until released.
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (first, release_rx) = (AtomicBool::new(true), Mutex::new(release_rx));
    fail::cfg_callback("disk::item_write", move || {
        if first.swap(false, Ordering::AcqRel) {
            let _ = held_tx.send(());
            let _ = release_rx.lock().expect("lock").recv();
        }
    })
    .expect("failpoint");
    let late = tokio::spawn({
        let store = store.clone();
        async move { store.insert(&key(1), &item(1)).await }
    });
    held_rx.recv().expect("the write is held");
    // Region 0 (keys 0, 1 and 8 more) fills, and is sealed by the next insert.
    for k in 2..11 {
        store.insert(&key(k), &item(k)).await.expect("insert");
    }
    fail::cfg("io::complete", "1*return(write)").expect("failpoint");
    release_tx.send(()).expect("release");
    let err = late.await.expect("task").expect_err("its completion fails");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    fail::remove("io::complete");
    fail::remove("disk::item_write");

    all_present(&store, (0..1).chain(2..11)).await;
    store.close().await.expect("close");
    drop(store);
    let report = strata_storage::inspect(&path).expect("inspect");
    assert_eq!(report.regions_in_use, 2);
    assert_eq!(report.regions_sealed, 1, "region 0 lost its summary");
    let store = DiskStore::open(&cfg).await.expect("reopen");
    all_present(&store, (0..1).chain(2..11)).await;
    absent_or_exact(&store, 1).await;
    scenario.teardown();
}
