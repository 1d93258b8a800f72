//! The disk store and the tiered cache against real files (and a loop device as root), run
//! against both io engines.

mod common;

use common::*;
use strata_storage::{
    inspect, DiskStore, EngineKind, EvictionPolicy, Shed, StorageError, TieredCache,
    TieredCacheConfig,
};

async fn roundtrip_restart(engine: EngineKind) {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    let cfg = config(&path, 64 << 20, engine);
    let n = 120u64;
    {
        let store = DiskStore::open(&cfg).await.unwrap();
        assert_eq!(
            store.engine_name(),
            if engine == EngineKind::Psync {
                "psync"
            } else {
                "io_uring"
            }
        );
        assert!(store.is_direct(), "O_DIRECT expected on a real filesystem");
        for i in 0..n {
            store
                .insert(&key(i), &value(i, 0, len_for(i)))
                .await
                .unwrap();
        }
        for i in 0..n {
            let got = store.get(&key(i)).await.expect("present");
            assert_eq!(&got[..], &value(i, 0, len_for(i))[..], "item {i}");
        }
        assert!(store.get(b"absent").await.is_none());
        store.close().await.unwrap();
    }
    let store = DiskStore::open(&cfg).await.unwrap();
    let s = store.stats();
    assert!(s.last_shutdown_clean);
    assert_eq!(s.recovered_items, n);
    for i in 0..n {
        let got = store.get(&key(i)).await.expect("present after restart");
        assert_eq!(
            &got[..],
            &value(i, 0, len_for(i))[..],
            "item {i} after restart"
        );
    }
}

async fn restart_without_close_scans(engine: EngineKind) {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    let cfg = config(&path, 32 << 20, engine);
    {
        let store = DiskStore::open(&cfg).await.unwrap();
        for i in 0..30 {
            store
                .insert(&key(i), &value(i, 0, len_for(i)))
                .await
                .unwrap();
        }
        // Dropped without close: as after a crash, the active region has no summary.
    }
    let store = DiskStore::open(&cfg).await.unwrap();
    assert!(!store.stats().last_shutdown_clean);
    for i in 0..30 {
        let got = store.get(&key(i)).await.expect("recovered by scan");
        assert_eq!(&got[..], &value(i, 0, len_for(i))[..]);
    }
}

async fn overwrites_and_removals_survive_restart(engine: EngineKind) {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    let cfg = config(&path, 32 << 20, engine);
    {
        let store = DiskStore::open(&cfg).await.unwrap();
        store.insert(b"k", b"version one").await.unwrap();
        store.insert(b"k", b"version two").await.unwrap();
        store.insert(b"gone", b"soon removed").await.unwrap();
        store.remove(b"gone").await.unwrap();
        assert!(store.get(b"gone").await.is_none());
        assert_eq!(&store.get(b"k").await.unwrap()[..], b"version two");
    }
    let store = DiskStore::open(&cfg).await.unwrap();
    assert_eq!(&store.get(b"k").await.unwrap()[..], b"version two");
    assert!(
        store.get(b"gone").await.is_none(),
        "a removed key must stay removed"
    );
}

async fn eviction_keeps_every_read_exact(engine: EngineKind) {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    // 15 regions of 1 MiB; ~48 MiB written: most regions are reclaimed several times.
    let cfg = config(&path, 16 << 20, engine);
    let store = DiskStore::open(&cfg).await.unwrap();
    let n = 1500u64;
    for i in 0..n {
        store
            .insert(&key(i), &value(i, 0, len_for(i) / 2))
            .await
            .unwrap();
    }
    let s = store.stats();
    assert!(s.evicted_regions > 15, "{s:?}");
    let mut present = 0;
    for i in 0..n {
        if let Some(v) = store.get(&key(i)).await {
            assert_eq!(&v[..], &value(i, 0, len_for(i) / 2)[..], "item {i}");
            present += 1;
        }
    }
    assert!(
        store.get(&key(n - 1)).await.is_some(),
        "the newest item is kept"
    );
    assert!(present > 20 && present < n, "present {present}");
    drop(store);
    let store = DiskStore::open(&cfg).await.unwrap();
    for i in 0..n {
        if let Some(v) = store.get(&key(i)).await {
            assert_eq!(
                &v[..],
                &value(i, 0, len_for(i) / 2)[..],
                "item {i} after restart"
            );
        }
    }
}

async fn a_flipped_byte_is_a_miss(engine: EngineKind) {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    let cfg = config(&path, 16 << 20, engine);
    let store = DiskStore::open(&cfg).await.unwrap();
    let v = value(1, 0, 50_000);
    store.insert(b"victim", &v).await.unwrap();
    let mut data = std::fs::read(&path).unwrap();
    let pos = data.windows(64).position(|w| w == &v[1000..1064]).unwrap();
    data[pos + 7] ^= 1;
    std::fs::write(&path, &data).unwrap();
    assert!(
        store.get(b"victim").await.is_none(),
        "corrupt bytes must never be served"
    );
    assert_eq!(store.stats().checksum_failures, 1);
}

async fn concurrent_writers_and_readers(engine: EngineKind) {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    let cfg = config(&path, 64 << 20, engine);
    let store = std::sync::Arc::new(DiskStore::open(&cfg).await.unwrap());
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..40u64 {
                let i = t * 1000 + j;
                store
                    .insert(&key(i), &value(i, 0, len_for(i) / 4))
                    .await
                    .unwrap();
                let got = store.get(&key(i)).await;
                if let Some(g) = got {
                    assert_eq!(&g[..], &value(i, 0, len_for(i) / 4)[..]);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.stats().inserts, 320);
}

macro_rules! for_both_engines {
    ($($name:ident),* $(,)?) => {
        mod psync {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(strata_storage::EngineKind::Psync).await })*
        }
        mod io_uring {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(strata_storage::EngineKind::IoUring).await })*
        }
    };
}

for_both_engines!(
    roundtrip_restart,
    restart_without_close_scans,
    overwrites_and_removals_survive_restart,
    eviction_keeps_every_read_exact,
    a_flipped_byte_is_a_miss,
    concurrent_writers_and_readers,
);

#[tokio::test]
async fn a_filesystem_is_refused_untouched() {
    let dir = scratch();
    let path = dir.path().join("ext4.img");
    let mut img = vec![0u8; 16 << 20];
    img[1080] = 0x53;
    img[1081] = 0xEF;
    img[1024..1030].copy_from_slice(b"inodes");
    std::fs::write(&path, &img).unwrap();
    let before = head_digest(&path);
    let err = DiskStore::open(&config(&path, 16 << 20, EngineKind::Auto))
        .await
        .err()
        .expect("must refuse");
    assert!(matches!(err, StorageError::ForeignData { .. }), "{err}");
    assert!(err.to_string().contains("ext2/3/4"), "{err}");
    assert_eq!(
        head_digest(&path),
        before,
        "the device must be left untouched"
    );
    assert_eq!(std::fs::read(&path).unwrap(), img);

    // Unknown non-blank data is refused too; `overwrite` formats it.
    let other = dir.path().join("data.img");
    let mut data = vec![0u8; 16 << 20];
    data[4096..4100].copy_from_slice(b"data");
    std::fs::write(&other, &data).unwrap();
    let cfg = config(&other, 16 << 20, EngineKind::Auto);
    assert!(DiskStore::open(&cfg).await.is_err());
    assert_eq!(std::fs::read(&other).unwrap(), data);
    let mut forced = cfg.clone();
    forced.overwrite = true;
    let store = DiskStore::open(&forced).await.unwrap();
    store.insert(b"a", b"b").await.unwrap();
}

#[tokio::test]
async fn another_geometry_is_refused_untouched() {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    let cfg = config(&path, 32 << 20, EngineKind::Auto);
    let store = DiskStore::open(&cfg).await.unwrap();
    store.insert(b"a", b"b").await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let before = std::fs::read(&path).unwrap();
    let mut other = cfg.clone();
    other.region_size = 2 << 20;
    let err = DiskStore::open(&other).await.err().expect("must refuse");
    assert!(
        matches!(err, StorageError::GeometryMismatch { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// A region size that is only the largest allowed (not fixed) recovers a cache formatted with
/// another one, with its items: an upgrade does not cost the operator the cache.
#[tokio::test]
async fn a_fitted_region_size_recovers_a_cache_of_another() {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    let cfg = config(&path, 32 << 20, EngineKind::Auto);
    let store = DiskStore::open(&cfg).await.unwrap();
    store.insert(b"a", b"kept").await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let mut fitted = cfg.clone();
    fitted.region_size = 16 << 20;
    fitted.region_fit = true;
    let store = DiskStore::open(&fitted).await.expect("recovered");
    assert_eq!(store.get(b"a").await.as_deref(), Some(&b"kept"[..]));
    assert_eq!(store.stats().region_size, 1 << 20, "the recorded geometry");
    store.close().await.unwrap();
    drop(store);
    // Those regions cannot hold a 1 MiB value: refused, the device untouched.
    let before = std::fs::read(&path).unwrap();
    fitted.largest_value = 1 << 20;
    let err = DiskStore::open(&fitted).await.err().expect("must refuse");
    assert!(
        matches!(err, StorageError::RegionsTooSmall { region_size, value, .. }
            if region_size == 1 << 20 && value == 1 << 20),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn inspect_reports_what_is_stored() {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    let cfg = config(&path, 32 << 20, EngineKind::Auto);
    let store = DiskStore::open(&cfg).await.unwrap();
    for i in 0..50 {
        store.insert(&key(i), &value(i, 0, 30_000)).await.unwrap();
    }
    store.remove(&key(0)).await.unwrap();
    store.close().await.unwrap();
    let r = inspect(&path).unwrap();
    assert_eq!((r.items, r.tombstones), (50, 1));
    assert!(r.regions_in_use >= 2 && r.regions_sealed == r.regions_in_use);
    assert_eq!(r.superblock.clean_shutdown, 1);
}

#[tokio::test]
async fn second_chance_keeps_a_hot_set_that_fifo_loses() {
    async fn hot_survivors(policy: EvictionPolicy) -> usize {
        let dir = scratch();
        let path = dir.path().join("cache.img");
        let mut cfg = config(&path, 16 << 20, EngineKind::Auto);
        cfg.eviction = policy;
        let store = DiskStore::open(&cfg).await.unwrap();
        let hot: Vec<u64> = (0..20).collect();
        for &h in &hot {
            store.insert(&key(h), &value(h, 0, 20_000)).await.unwrap();
        }
        // Stream cold items through (several times the device), reading the hot set between.
        for i in 1000..1800u64 {
            store.insert(&key(i), &value(i, 0, 60_000)).await.unwrap();
            if i % 20 == 0 {
                for &h in &hot {
                    if let Some(v) = store.get(&key(h)).await {
                        assert_eq!(&v[..], &value(h, 0, 20_000)[..]);
                    }
                }
            }
        }
        let mut n = 0;
        for &h in &hot {
            n += store.get(&key(h)).await.is_some() as usize;
        }
        n
    }
    let fifo = hot_survivors(EvictionPolicy::Fifo).await;
    let sc = hot_survivors(EvictionPolicy::SecondChance).await;
    assert_eq!(fifo, 0, "FIFO drops the hot set once it is old");
    assert_eq!(sc, 20, "second chance keeps every hot item");
}

#[tokio::test]
async fn tiered_cache_prefers_l1_and_falls_back_to_l2() {
    let dir = scratch();
    let path = dir.path().join("cache.img");
    let cache = TieredCache::open(TieredCacheConfig {
        memory: 256 * 1024,
        disk: Some(config(&path, 32 << 20, EngineKind::Auto)),
        admission: Default::default(),
    })
    .await
    .unwrap();
    for i in 0..40 {
        cache
            .insert(&key(i), value(i, 0, 20_000).into())
            .await
            .unwrap();
    }
    // The newest item is still in memory; the oldest only on disk.
    assert_eq!(
        &cache.get(&key(39)).await.unwrap()[..],
        &value(39, 0, 20_000)[..]
    );
    assert_eq!(cache.stats().memory.hits, 1);
    for i in 0..40 {
        assert_eq!(
            &cache.get(&key(i)).await.unwrap()[..],
            &value(i, 0, 20_000)[..]
        );
    }
    let s = cache.stats();
    assert!(
        s.memory.hits > 0 && s.disk.as_ref().unwrap().hits > 0,
        "{s:?}"
    );
    cache.remove(&key(3)).await.unwrap();
    assert!(cache.get(&key(3)).await.is_none());
}

/// A region of 4 GiB would not fit the u32 lengths of a region scan: refused with a typed error
/// before anything is written.
#[tokio::test]
async fn a_region_of_4gib_is_refused() {
    let dir = scratch();
    let path = dir.path().join("big-region.img");
    let mut cfg = config(&path, 16 << 20, EngineKind::Psync);
    cfg.region_size = 4 << 30;
    match DiskStore::open(&cfg).await {
        Err(StorageError::RegionTooLarge { region_size, max }) => {
            assert_eq!(region_size, 4 << 30);
            assert_eq!(max, strata_storage::MAX_REGION_SIZE);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a 4 GiB region was accepted"),
    }
    assert!(strata_storage::format(&cfg).is_err());
}

/// Writes past `write_queue` bytes in flight are shed at once, not queued: the disk store
/// refuses them with a typed error and counts them, and the tiered cache keeps the value in
/// memory instead. Both engines.
#[tokio::test]
async fn writes_past_the_write_queue_are_shed_and_kept_in_memory() {
    for engine in [EngineKind::Psync, EngineKind::Auto] {
        let dir = scratch();
        let mut cfg = config(&dir.path().join("cache.img"), 32 << 20, engine);
        // One item's worth: a second write while the first is in flight is shed.
        cfg.write_queue = 4096;
        let store = DiskStore::open(&cfg).await.unwrap();
        let (a, b) = (value(1, 0, 20_000), value(2, 0, 20_000));
        // The first is polled first: admitted, it waits for the device; the second finds the
        // queue full.
        let (k1, k2) = (key(1), key(2));
        let (first, second) = tokio::join!(store.insert(&k1, &a), store.insert(&k2, &b));
        first.unwrap();
        assert!(
            matches!(second, Err(StorageError::Overloaded { budget: 4096, .. })),
            "{engine:?}: {second:?}"
        );
        let s = store.stats();
        assert_eq!((s.shed_writes, s.queued_write_bytes), (1, 0), "{engine:?}");
        assert!(store.get(&key(2)).await.is_none(), "{engine:?}");
        // Once the queue has drained, writes are admitted again.
        store.insert(&key(2), &b).await.unwrap();
        assert_eq!(&store.get(&key(2)).await.unwrap()[..], &b[..], "{engine:?}");
        drop(store);

        let dir = scratch();
        let mut disk = config(&dir.path().join("tiered.img"), 32 << 20, engine);
        disk.write_queue = 4096;
        let cache = TieredCache::open(TieredCacheConfig {
            memory: 1 << 20,
            disk: Some(disk),
            admission: Default::default(),
        })
        .await
        .unwrap();
        let parts = |v: &[u8]| {
            vec![
                bytes::Bytes::copy_from_slice(&v[..9000]),
                bytes::Bytes::copy_from_slice(&v[9000..]),
            ]
        };
        let (pa, pb) = (parts(&a), parts(&b));
        let (k1, k2) = (key(1), key(2));
        let (first, second) = tokio::join!(
            cache.insert_parts(&k1, &pa, Shed::Allowed),
            cache.insert_parts(&k2, &pb, Shed::Allowed)
        );
        first.unwrap();
        second.expect("a shed disk write is not a failed insert");
        let p = cache.placement(&key(2));
        assert!(p.memory && !p.disk, "{engine:?}: kept in memory only");
        assert_eq!(&cache.get(&key(2)).await.unwrap()[..], &b[..], "{engine:?}");
        assert_eq!(cache.stats().disk.unwrap().shed_writes, 1, "{engine:?}");
    }
}
