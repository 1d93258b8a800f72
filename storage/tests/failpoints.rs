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
    assert!(
        store.contains(&key(0)),
        "a failed read does not drop the item"
    );

    fail::remove("io::complete");
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

/// The first operation to reach the failpoint `name` waits there until released; returns the
/// receiver of "held" and the sender of "release".
fn hold_first(name: &'static str) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Mutex};
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (first, release_rx) = (AtomicBool::new(true), Mutex::new(release_rx));
    fail::cfg_callback(name, move || {
        if first.swap(false, Ordering::AcqRel) {
            let _ = held_tx.send(());
            let _ = release_rx.lock().expect("lock").recv();
        }
    })
    .expect("failpoint");
    (held_rx, release_tx)
}

/// L1 updates are guarded per key: a removal of key A while key B is being written does not keep
/// B out of memory, but a removal of A while A is being written still keeps that (stale) A out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_keeps_only_its_own_key_out_of_memory() {
    use std::sync::Arc;
    use strata_storage::{TieredCache, TieredCacheConfig};

    let scenario = FailScenario::setup();
    let dir = scratch();
    let cache = Arc::new(
        TieredCache::open(TieredCacheConfig {
            memory: 16 << 20,
            disk: Some(config(
                &dir.path().join("tiered.img"),
                SIZE,
                EngineKind::Psync,
            )),
            admission: Default::default(),
        })
        .await
        .expect("open"),
    );
    let small = |n: u64| bytes::Bytes::from(value(n, 1, 1000));
    let memory_hits = |c: &TieredCache| c.stats().memory.hits;
    // With no removal at all, a written value is served from memory.
    cache.insert(b"c", small(3)).await.expect("insert");
    let hits = memory_hits(&cache);
    assert_eq!(cache.get(b"c").await, Some(small(3)));
    assert_eq!(memory_hits(&cache), hits + 1, "c from memory");

    // B's write is held while A is removed.
    cache.insert(b"a", small(1)).await.expect("insert");
    let (held, release) = hold_first("disk::item_write");
    let b = tokio::spawn({
        let cache = cache.clone();
        async move { cache.insert(b"b", small(2)).await }
    });
    held.recv().expect("b's write is held");
    cache.remove(b"a").await.expect("remove a");
    release.send(()).expect("release");
    b.await.expect("task").expect("insert b");
    fail::remove("disk::item_write");
    let hits = memory_hits(&cache);
    assert_eq!(cache.get(b"b").await, Some(small(2)));
    assert_eq!(
        memory_hits(&cache),
        hits + 1,
        "b was kept out of memory by a removal of a"
    );

    // A's write (a newer value) is held while A is removed: neither tier may serve it.
    let (held, release) = hold_first("disk::item_write");
    let a = tokio::spawn({
        let cache = cache.clone();
        async move { cache.insert(b"a", small(9)).await }
    });
    held.recv().expect("a's write is held");
    cache.remove(b"a").await.expect("remove a");
    release.send(()).expect("release");
    a.await.expect("task").expect("insert a");
    fail::remove("disk::item_write");
    let hits = memory_hits(&cache);
    assert_eq!(cache.get(b"a").await, None, "a removed while written");
    assert_eq!(memory_hits(&cache), hits);
    scenario.teardown();
}

/// `disk::index_insert`: an insert whose write has landed is held before its index entry goes
/// in, while the device fills and regions are reclaimed. Its region must not be reclaimed (and
/// reopened) under it: once it finishes, the key is indexed only where its bytes are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_is_not_reclaimed_under_an_insert_not_yet_indexed() {
    use std::sync::Arc;

    let scenario = FailScenario::setup();
    let dir = scratch();
    let mut cfg = config(&dir.path().join("late-index.img"), SIZE, EngineKind::Psync);
    cfg.eviction = strata_storage::EvictionPolicy::Fifo;
    let store = Arc::new(DiskStore::open(&cfg).await.expect("open"));

    let (held_rx, release_tx) = hold_first("disk::index_insert");
    // Key 1000 is the first item of region 0, the oldest: the first to be reclaimed.
    let late = tokio::spawn({
        let store = store.clone();
        async move { store.insert(&key(1000), &item(1000)).await }
    });
    held_rx.recv().expect("the insert is held before the index");
    // 7 regions of 10 items: 80 more inserts need several reclaims.
    for k in 0..80 {
        store.insert(&key(k), &item(k)).await.expect("insert");
    }
    assert!(store.stats().evicted_regions >= 2, "{:?}", store.stats());
    release_tx.send(()).expect("release");
    late.await.expect("task").expect("insert");
    fail::remove("disk::index_insert");

    let indexed = store.contains(&key(1000));
    let read = absent_or_exact(&store, 1000).await;
    assert_eq!(
        indexed, read,
        "an index entry must point at the item's bytes, not into a reopened region"
    );
    scenario.teardown();
}

/// `disk::region_header_write` during a reclaim, then a removal and a crash: the region that
/// could not be reopened keeps its old generation on the device, so its items must not have left
/// the index either. Otherwise the removal finds nothing to record, and after the crash the
/// region's old summary brings the removed key back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_whose_reopen_failed_does_not_bring_removed_keys_back() {
    let scenario = FailScenario::setup();
    let dir = scratch();
    let mut cfg = config(&dir.path().join("reopen.img"), SIZE, EngineKind::Psync);
    cfg.eviction = strata_storage::EvictionPolicy::Fifo;
    let n = 70u64;
    {
        let store = DiskStore::open(&cfg).await.expect("open");
        // 7 regions of 10 items: the device is full, region 0 (keys 0..10) the oldest.
        for k in 0..n {
            store.insert(&key(k), &item(k)).await.expect("insert");
        }
        fail::cfg("disk::region_header_write", "return").expect("failpoint");
        store
            .insert(&key(n), &item(n))
            .await
            .expect_err("region 0 cannot be reopened");
        fail::remove("disk::region_header_write");
        store.remove(&key(0)).await.expect("remove");
        assert!(store.get(&key(0)).await.is_none());
        // A crash: no close.
    }
    let store = DiskStore::open(&cfg).await.expect("reopen");
    assert!(
        store.get(&key(0)).await.is_none(),
        "a removed key came back from a region whose reopen failed"
    );
    all_present(&store, 10..n).await;
    scenario.teardown();
}

/// A burst of removals (more than any fixed window of recent removals) while an insert of a
/// removed key is in flight: the insert, older than the removal, must not bring the key back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_removals_does_not_let_a_stale_insert_back() {
    use std::sync::Arc;

    let scenario = FailScenario::setup();
    let dir = scratch();
    let cfg = config(&dir.path().join("burst.img"), SIZE, EngineKind::Psync);
    let store = Arc::new(DiskStore::open(&cfg).await.expect("open"));
    store.insert(&key(1), &item(1)).await.expect("insert");
    let (held, release) = hold_first("disk::index_insert");
    let stale = tokio::spawn({
        let store = store.clone();
        async move { store.insert(&key(1), &value(1, 99, ITEM)).await }
    });
    held.recv().expect("the insert is held");
    store.remove(&key(1)).await.expect("remove");
    for k in 10_000..15_000 {
        store.remove(&key(k)).await.expect("remove");
    }
    release.send(()).expect("release");
    stale.await.expect("task").expect("insert");
    fail::remove("disk::index_insert");
    assert!(
        !store.contains(&key(1)),
        "a stale insert brought a removed key back"
    );
    assert!(store.get(&key(1)).await.is_none());
    scenario.teardown();
}

/// A key removed while its first insert is in flight (written, not indexed yet) is removed
/// durably: after a crash the insert's item must not bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_during_the_first_insert_of_a_key_survives_a_crash() {
    use std::sync::Arc;

    let scenario = FailScenario::setup();
    let dir = scratch();
    let cfg = config(&dir.path().join("unindexed.img"), SIZE, EngineKind::Psync);
    {
        let store = Arc::new(DiskStore::open(&cfg).await.expect("open"));
        store.insert(&key(0), &item(0)).await.expect("insert");
        let (held, release) = hold_first("disk::index_insert");
        let first = tokio::spawn({
            let store = store.clone();
            async move { store.insert(&key(1), &item(1)).await }
        });
        held.recv().expect("the insert is held");
        store.remove(&key(1)).await.expect("remove");
        release.send(()).expect("release");
        first.await.expect("task").expect("insert");
        fail::remove("disk::index_insert");
        assert!(store.get(&key(1)).await.is_none());
        // A crash: no close; the active region is scanned at reopen.
    }
    let store = DiskStore::open(&cfg).await.expect("reopen");
    all_present(&store, [0]).await;
    assert!(
        store.get(&key(1)).await.is_none(),
        "a key removed during its insert came back after a crash"
    );
    scenario.teardown();
}
