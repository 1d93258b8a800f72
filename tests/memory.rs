//! Memory under load: 200 clients streaming 200 distinct cold 64 MiB objects at once.
//! Long (12.5 GiB through the proxy): run by `scripts/soak`, not by default.

mod common;

use std::time::Instant;

use common::origin::generated;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: scripts/soak runs it (release build)"]
async fn peak_rss_with_200_distinct_streams() {
    let origin = TestOrigin::start().await;
    let (clients, len) = (200u64, 64u64 << 20);
    for i in 0..clients {
        origin.put(&format!("/o{i}"), Object::generated(len, 1000 + i));
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
    let peak = node.peak_rss();
    let growth = peak.saturating_sub(base);
    let slice = 1u64 << 20;
    eprintln!(
        "200 x 64 MiB in {:.1}s: base RSS {} MiB, peak {} MiB, growth {} MiB = {:.2} slices per fill",
        started.elapsed().as_secs_f64(),
        base >> 20,
        peak >> 20,
        growth >> 20,
        growth as f64 / (slice * clients) as f64
    );
    // One slice per fill in flight, its copy into the cache, plus a fixed base (L1 budget, buffers).
    assert!(
        growth < 2 * slice * clients + (64 << 20),
        "peak RSS grew by {growth} bytes"
    );
}
