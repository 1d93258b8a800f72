//! Block devices: a loop device with 4 KiB sectors (as root), and a real ext4 filesystem that
//! must be refused untouched.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use strata_storage::{DeviceKind, DiskStore, EngineKind, StorageError};

/// A loop device over a file, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Result<Loop, String> {
        // SAFETY: geteuid takes nothing and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        let out = Command::new("losetup")
            .args(["-f", "--show", "--direct-io=on", "-b", "4096"])
            .arg(file)
            .output()
            .map_err(|e| format!("losetup unavailable: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Loop(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

async fn loop_roundtrip(engine: EngineKind) {
    let dir = scratch();
    let backing = dir.path().join("loop.img");
    std::fs::write(&backing, vec![0u8; 48 << 20]).unwrap();
    let dev = match Loop::attach(&backing) {
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
        assert!(
            DiskStore::open(&cfg).await.is_err(),
            "O_EXCL must refuse a second opener"
        );
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
