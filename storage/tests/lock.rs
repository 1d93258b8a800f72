//! A cache file is locked for the life of the store that opened it: a second store (another node
//! on the same file) or a `format` of it is refused with a typed error naming the path, until the
//! first store is dropped.

mod common;

use common::*;
use strata_storage::{format, DiskStore, EngineKind, StorageError};

fn assert_locked<T>(res: Result<T, StorageError>, path: &std::path::Path, what: &str) {
    match res {
        Err(e @ StorageError::DeviceLocked { .. }) => {
            let StorageError::DeviceLocked { path: got, .. } = &e else {
                unreachable!()
            };
            assert_eq!(got, path);
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        Err(e) => panic!("{what}: wrong error: {e}"),
        Ok(_) => panic!("{what}: a file in use by a store was opened again"),
    }
}

async fn refused_until_dropped(engine: EngineKind) {
    let dir = scratch();
    let path = dir.path().join("locked.img");
    let cfg = config(&path, 8 << 20, engine);
    let first = DiskStore::open(&cfg).await.expect("open");
    first.insert(b"k", b"value").await.expect("insert");

    assert_locked(DiskStore::open(&cfg).await, &path, "second open");
    assert_locked(format(&cfg), &path, "format");
    // Closing seals, but the store is still alive (and readable): still locked.
    first.close().await.expect("close");
    assert_locked(DiskStore::open(&cfg).await, &path, "open after close");
    assert_eq!(first.get(b"k").await.as_deref(), Some(&b"value"[..]));
    drop(first);

    let second = DiskStore::open(&cfg).await.expect("open after drop");
    assert_eq!(second.get(b"k").await.as_deref(), Some(&b"value"[..]));
    drop(second);
    format(&cfg).expect("format once no store has it");
}

#[tokio::test]
async fn a_file_in_use_is_refused_until_its_store_is_dropped_psync() {
    refused_until_dropped(EngineKind::Psync).await;
}

#[tokio::test]
async fn a_file_in_use_is_refused_until_its_store_is_dropped_io_uring() {
    refused_until_dropped(EngineKind::IoUring).await;
}
