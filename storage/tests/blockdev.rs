//! Block devices: a loop device with 4 KiB sectors (as root), and a real ext4 filesystem that
//! must be refused untouched.

mod common;
#[path = "support/loopdev.rs"]
mod loopdev;

use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use loopdev::Loop;
use strata_storage::{DeviceKind, DiskStore, EngineKind, StorageError};

async fn loop_roundtrip(engine: EngineKind) {
    let dir = scratch();
    let dev = match Loop::blank(dir.path(), 48 << 20) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED loop device test: {why}");
            return;
        }
    };
    // The size in the config is ignored for a block device: it uses its own.
    let cfg = config(&dev.0, 0, engine);
    let n = 60u64;
    {
        let store = DiskStore::open(&cfg).await.unwrap();
        assert_eq!(store.device_kind(), DeviceKind::Block);
        assert_eq!(store.stats().regions, 47);
        for i in 0..n {
            store
                .insert(&key(i), &value(i, 1, len_for(i)))
                .await
                .unwrap();
        }
        for i in 0..n {
            assert_eq!(
                &store.get(&key(i)).await.unwrap()[..],
                &value(i, 1, len_for(i))[..]
            );
        }
        // While open, the device is held exclusively.
        match DiskStore::open(&cfg).await {
            Err(StorageError::DeviceBusy { path, .. }) => assert_eq!(path, dev.0),
            Err(e) => panic!("a second opener: wrong error: {e}"),
            Ok(_) => panic!("O_EXCL must refuse a second opener"),
        }
        store.close().await.unwrap();
    }
    let store = DiskStore::open(&cfg).await.unwrap();
    assert_eq!(store.stats().recovered_items, n);
    for i in 0..n {
        assert_eq!(
            &store.get(&key(i)).await.unwrap()[..],
            &value(i, 1, len_for(i))[..],
            "item {i} after restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_device_roundtrip_and_restart_psync() {
    loop_roundtrip(EngineKind::Psync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_device_roundtrip_and_restart_io_uring() {
    loop_roundtrip(EngineKind::IoUring).await;
}

/// A device another holder lets go of a moment after the store asks for it is opened, not
/// refused: the kernel releases a closed store's claim (the last reference its io_uring took)
/// in the background, so a store reopened at once, or a node restarted at once, finds the
/// device still busy for a moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_let_go_a_moment_later_is_opened() {
    let dir = scratch();
    let dev = match Loop::blank(dir.path(), 16 << 20) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED loop device test: {why}");
            return;
        }
    };
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&dev.0)
        .unwrap();
    // Let go well after the store first finds the device busy, and well within its wait.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(holder);
    });
    let store = DiskStore::open(&config(&dev.0, 0, EngineKind::Auto)).await;
    release.join().unwrap();
    let store = store.expect("a device let go within the wait must be opened");
    assert_eq!(store.device_kind(), DeviceKind::Block);
    store.insert(b"k", b"value").await.unwrap();
    assert_eq!(store.get(b"k").await.as_deref(), Some(&b"value"[..]));
}

#[tokio::test]
async fn a_real_ext4_filesystem_is_refused_untouched() {
    let dir = scratch();
    let img = dir.path().join("ext4.img");
    std::fs::write(&img, vec![0u8; 32 << 20]).unwrap();
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED real ext4 test: mkfs.ext4 unavailable (the synthetic signature test covers refusal)");
        return;
    }
    let before = head_digest(&img);
    let err = DiskStore::open(&config(&img, 32 << 20, EngineKind::Auto))
        .await
        .err()
        .expect("an ext4 image must be refused");
    assert!(matches!(err, StorageError::ForeignData { .. }), "{err}");
    assert!(err.to_string().contains("ext2/3/4"), "{err}");
    assert_eq!(head_digest(&img), before, "first MiB changed");

    // The same on a block device, when we can make one.
    if let Ok(dev) = Loop::attach(&img) {
        let err = DiskStore::open(&config(&dev.0, 0, EngineKind::Auto))
            .await
            .err()
            .expect("an ext4 block device must be refused");
        assert!(err.to_string().contains("ext2/3/4"), "{err}");
        drop(dev);
        assert_eq!(head_digest(&img), before, "first MiB changed");
    }
}
