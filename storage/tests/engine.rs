//! The io engines on their own: where their completions are delivered and what happens to IO
//! whose caller stopped waiting.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_storage::{start_engine, AlignedBuf, Device, EngineKind, EngineOptions, IoEngine};

const SIZE: u64 = 8 << 20;
/// A bound on a wait that should take milliseconds; reaching it means an IO was never completed.
const BOUND: Duration = Duration::from_secs(20);

fn start(kind: EngineKind, dir: &tempfile::TempDir) -> (Arc<dyn IoEngine>, usize) {
    let dev = Device::open(&dir.path().join("engine.img"), SIZE).expect("open device");
    assert!(dev.direct, "the scratch file must take O_DIRECT");
    let block = dev.block_size;
    let engine = start_engine(kind, Arc::new(dev.file), EngineOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    (engine, block)
}

fn pattern(i: u64, block: usize) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(block, block);
    for (j, x) in b.as_mut_slice().iter_mut().enumerate() {
        *x = (i as usize * 31 + j * 7) as u8;
    }
    b
}

/// The node opens its store on a start-up runtime that is not driven while requests are served
/// from others: IO submitted there must complete all the same.
#[test]
fn io_completes_on_a_runtime_other_than_the_opening_one() {
    let dir = common::scratch();
    let opening = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (engine, block) = opening.block_on(async {
        let (engine, block) = start(EngineKind::IoUring, &dir);
        let (res, _) = engine.write(0, pattern(0, block), None).await;
        res.expect("write on the opening runtime");
        (engine, block)
    });
    let serving = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    serving.block_on(async {
        let blocks = SIZE / block as u64;
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let at = (i % blocks) * block as u64;
                    let (res, _) = engine.write(at, pattern(i, block), None).await;
                    res.expect("write");
                    let (res, back) = engine.read(at, AlignedBuf::zeroed(block, block)).await;
                    res.expect("read");
                    assert!(
                        back.as_slice() == pattern(i, block).as_slice(),
                        "block {i} read back different bytes"
                    );
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(BOUND, t)
                .await
                .expect("an IO was never completed")
                .expect("task");
        }
    });
    drop(engine);
    drop(opening);
}

/// A future submitted on one runtime and awaited on another that never submitted anything (the
/// first no longer driven) still completes: the waiting runtime gets a reaper too.
#[test]
fn io_awaited_on_a_runtime_that_did_not_submit_completes() {
    let dir = common::scratch();
    let (engine, block) = start(EngineKind::IoUring, &dir);
    let submitting = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let waiting = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let write = {
        let _in = submitting.enter();
        engine.write(0, pattern(3, block), None)
    };
    let (res, _) = waiting.block_on(async {
        tokio::time::timeout(BOUND, write)
            .await
            .expect("the IO was never completed")
    });
    res.expect("write");
    let read = {
        let _in = submitting.enter();
        engine.read(0, AlignedBuf::zeroed(block, block))
    };
    let (res, back) = waiting.block_on(async {
        tokio::time::timeout(BOUND, read)
            .await
            .expect("the IO was never completed")
    });
    res.expect("read");
    assert!(back.as_slice() == pattern(3, block).as_slice());
}

/// A write whose caller gave up still runs its completion hook once the device has it.
async fn abandoned_write_still_finishes(kind: EngineKind) {
    let dir = common::scratch();
    let (engine, block) = start(kind, &dir);
    let finished = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    let hook = {
        let finished = finished.clone();
        Box::new(move || {
            finished.fetch_add(1, Ordering::SeqCst);
            if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(());
            }
        })
    };
    drop(engine.write(0, pattern(7, block), Some(hook)));
    tokio::time::timeout(BOUND, rx)
        .await
        .expect("the abandoned write's hook never ran")
        .expect("hook dropped without running");
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    let (res, back) = engine.read(0, AlignedBuf::zeroed(block, block)).await;
    res.expect("read");
    assert!(back.as_slice() == pattern(7, block).as_slice());
}

#[tokio::test]
async fn abandoned_write_still_finishes_psync() {
    abandoned_write_still_finishes(EngineKind::Psync).await;
}

#[tokio::test]
async fn abandoned_write_still_finishes_io_uring() {
    abandoned_write_still_finishes(EngineKind::IoUring).await;
}

/// Outside a tokio runtime nothing would reap io_uring completions: the IO fails at once and
/// hands its buffer back instead of waiting forever.
#[test]
fn io_uring_outside_a_runtime_fails_clearly() {
    let dir = common::scratch();
    let (engine, block) = start(EngineKind::IoUring, &dir);
    let fut = engine.read(0, AlignedBuf::zeroed(block, block));
    let (res, buf) = futures::executor::block_on(fut);
    let err = res.expect_err("no runtime, no IO");
    assert!(err.to_string().contains("outside a tokio runtime"), "{err}");
    assert_eq!(buf.len(), block);
}

/// Many concurrent writes to consecutive blocks (which the engines merge into vectored writes
/// while another write is in flight), of one and of several blocks, all land exactly.
async fn concurrent_adjacent_writes_land_exactly(kind: EngineKind) {
    let dir = common::scratch();
    let (engine, block) = start(kind, &dir);
    // Runs of 1 to 3 blocks back to back, with a one-block gap after every seventh: write i
    // covers blocks at[i]..at[i] + len(i). A merge across a gap would land bytes off by one.
    let len = |i: u64| 1 + (i % 3) as usize;
    let mut at = Vec::new();
    let mut next = 0u64;
    for i in 0..600u64 {
        at.push(next);
        next += len(i) as u64 + u64::from(i % 7 == 6);
    }
    let image = move |i: u64| {
        let mut b = AlignedBuf::zeroed(len(i) * block, block);
        for (j, x) in b.as_mut_slice().iter_mut().enumerate() {
            *x = (i as usize * 131 + j / 7) as u8;
        }
        b
    };
    let writes: Vec<_> = (0..600u64)
        .map(|i| {
            let engine = engine.clone();
            let offset = at[i as usize] * block as u64;
            let buf = image(i);
            tokio::spawn(async move { engine.write(offset, buf, None).await.0 })
        })
        .collect();
    for w in writes {
        tokio::time::timeout(BOUND, w)
            .await
            .expect("a write was never completed")
            .expect("task")
            .expect("write");
    }
    for i in 0..600u64 {
        let buf = AlignedBuf::zeroed(len(i) * block, block);
        let (res, back) = engine.read(at[i as usize] * block as u64, buf).await;
        res.expect("read");
        assert!(
            back.as_slice() == image(i).as_slice(),
            "write {i} did not land exactly"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adjacent_writes_land_exactly_psync() {
    concurrent_adjacent_writes_land_exactly(EngineKind::Psync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adjacent_writes_land_exactly_io_uring() {
    concurrent_adjacent_writes_land_exactly(EngineKind::IoUring).await;
}

/// A write whose runtime shut down while it was in flight (no reaper left anywhere) finishes,
/// hook included, once another runtime asks for finished IO: what closing the store does after
/// the serving runtime has stopped.
#[test]
fn io_of_a_runtime_that_shut_down_is_finished_on_request() {
    let dir = common::scratch();
    let (engine, block) = start(EngineKind::IoUring, &dir);
    let (tx, rx) = std::sync::mpsc::channel();
    let serving = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    {
        let _in = serving.enter();
        let mut big = AlignedBuf::zeroed(4 << 20, block);
        big.as_mut_slice().fill(0x5c);
        let hook = Box::new(move || {
            let _ = tx.send(());
        });
        drop(engine.write(0, big, Some(hook)));
    }
    drop(serving);
    let closing = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    closing.block_on(async {
        let deadline = std::time::Instant::now() + BOUND;
        while rx.try_recv().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the write's hook never ran"
            );
            engine.complete_finished();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

/// Dropping an engine with writes still waiting to be merged finishes every one of them (hooks
/// included) and returns.
fn dropping_with_writes_waiting_finishes_them(kind: EngineKind) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = common::scratch();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (engine, block) = start(kind, &dir);
            let finished = Arc::new(AtomicUsize::new(0));
            for i in 0..200u64 {
                let f = finished.clone();
                let hook = Box::new(move || {
                    f.fetch_add(1, Ordering::SeqCst);
                });
                drop(engine.write(i * block as u64, pattern(i, block), Some(hook)));
            }
            drop(engine);
            let _ = tx.send(finished.load(Ordering::SeqCst));
        });
    });
    let n = rx.recv_timeout(BOUND).expect("dropping the engine hung");
    assert_eq!(n, 200, "writes left unfinished");
}

#[test]
fn dropping_with_writes_waiting_finishes_them_psync() {
    dropping_with_writes_waiting_finishes_them(EngineKind::Psync);
}

#[test]
fn dropping_with_writes_waiting_finishes_them_io_uring() {
    dropping_with_writes_waiting_finishes_them(EngineKind::IoUring);
}
