//! Memory under load: clients streaming distinct cold 64 MiB objects at once, 200 of them and
//! then 50. Long (16 GiB through the proxy): run by `scripts/soak`, not by default. And, by
//! default, that freed memory goes back to the system without waiting for the next allocation.
//!
//! The peak RSS of a node grows by what each fill holds plus budgets that do not grow with the
//! number of fills (the memory tier, the disk write queue, idle IO buffers). The difference
//! between the two runs is what 150 more fills cost: that, per fill, is the figure reported.

mod common;

use std::time::Instant;

use common::origin::generated;
use common::*;

const SLICE: u64 = 1 << 20;

/// Peak RSS growth of a fresh node while `clients` clients stream distinct cold objects.
async fn peak_growth(clients: u64) -> u64 {
    let origin = TestOrigin::start().await;
    let len = 64u64 << 20;
    // With a strong validator, as mirrors and object stores send: a slice write that the
    // device is too slow for may be shed, since the slice can be fetched again on its own.
    for i in 0..clients {
        let etag = format!("\"o{i}\"");
        origin.put(
            &format!("/o{i}"),
            Object::generated(len, 1000 + i).header("etag", &etag),
        );
    }
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "16MiB".into();
    cfg.disk = Some("1GiB".into());
    let node = Strata::start(&cfg);
    origin.put("/warm", Object::new(random_bytes(4096, 1)));
    get(&node.url("/warm")).await;
    let base = node.rss();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let url = node.url(&format!("/o{i}"));
            tokio::spawn(async move {
                let mut r = reqwest::get(&url).await.unwrap();
                let (mut n, mut same) = (0u64, true);
                while let Some(c) = r.chunk().await.unwrap() {
                    // Spot-check one word per chunk: full comparison would dominate the run.
                    let k = c.len().min(8);
                    same &= c[..k] == generated(1000 + i, n, n + k as u64)[..];
                    n += c.len() as u64;
                }
                (n, same)
            })
        })
        .collect();
    for t in tasks {
        let (n, same) = t.await.unwrap();
        assert_eq!(n, len);
        assert!(same);
    }
    let growth = node.peak_rss().saturating_sub(base);
    eprintln!(
        "{clients} x 64 MiB in {:.1}s: base RSS {} MiB, peak growth {} MiB",
        started.elapsed().as_secs_f64(),
        base >> 20,
        growth >> 20,
    );
    growth
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: scripts/soak runs it (release build)"]
async fn peak_rss_per_concurrent_fill() {
    let many = peak_growth(200).await;
    let few = peak_growth(50).await;
    let per_fill = many.saturating_sub(few) as f64 / (150 * SLICE) as f64;
    eprintln!(
        "{per_fill:.2} slices per fill (150 more fills cost {} MiB); \
         {:.2} slices per fill counting the fixed budgets at 200",
        many.saturating_sub(few) >> 20,
        many as f64 / (200 * SLICE) as f64
    );
    // A fill gathers its slice straight into the buffer the device writes from, and its client
    // reads that buffer: about one slice per fill, with some slack for a noisy machine.
    assert!(per_fill < 1.4, "{per_fill:.2} slices per fill");
    // Every budget together stays within the bound from before (then: one slice per fill, its
    // copy, and a base).
    assert!(
        many < 2 * SLICE * 200 + (64 << 20),
        "peak RSS grew by {many} bytes"
    );
}

/// The names of the node's threads.
fn thread_names(pid: i32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the node's threads");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[tokio::test]
async fn freed_memory_goes_back_from_a_thread_of_its_own() {
    // jemalloc hands freed pages back only when an allocation or free comes by, unless its
    // background thread runs: then an idle node's resident memory still falls to what it uses.
    // The thread runs only if the node's allocator options were read.
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let names = thread_names(node.pid());
    assert!(
        names.iter().any(|n| n.starts_with("jemalloc_bg_thd")),
        "no background thread of the allocator among {names:?}"
    );
}
