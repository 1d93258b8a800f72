//! Races of the disk store, held open at named failpoints (`--features failpoints`): removals
//! against inserts in flight, and reclaims and reopens against inserts not yet indexed. A key
//! removed stays removed, in memory and after a crash, and a reclaim never moves a region out
//! from under an insert.
//!
//! Failpoints are process-wide: every test holds a [`FailScenario`], which serialises them.
#![cfg(feature = "failpoints")]

mod common;

use common::*;
use fail::FailScenario;
use strata_storage::{DiskStore, EngineKind};

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

/// An item is never packed into the write unit of a write still in flight: that write, landing
/// after it, would wipe it. While one small item's write is held before the device has it, the
/// next starts at the next unit; all read back, before and after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_never_packs_onto_a_write_in_flight() {
    use std::sync::Arc;

    let scenario = FailScenario::setup();
    let dir = scratch();
    let cfg = config(&dir.path().join("inflight.img"), SIZE, EngineKind::Psync);
    let small = |k: u64| value(k, 5, 600);
    let intact = |store: Arc<DiskStore>| async move {
        for k in 0..3 {
            let got = store.get(&key(k)).await;
            assert_eq!(got.as_deref(), Some(&small(k)[..]), "key {k}");
        }
    };
    {
        let store = Arc::new(DiskStore::open(&cfg).await.expect("open"));
        store.insert(&key(0), &small(0)).await.expect("insert");
        let (held, release) = hold_first("disk::item_write");
        let first = tokio::spawn({
            let store = store.clone();
            async move { store.insert(&key(1), &small(1)).await }
        });
        held.recv().expect("the write is held");
        store.insert(&key(2), &small(2)).await.expect("insert");
        release.send(()).expect("release");
        first.await.expect("task").expect("insert");
        fail::remove("disk::item_write");
        intact(store.clone()).await;
        // A crash: no close; the active region is scanned at reopen.
    }
    let store = Arc::new(DiskStore::open(&cfg).await.expect("reopen"));
    intact(store).await;
    scenario.teardown();
}
