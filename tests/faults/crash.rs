//! Kill -9 under load, round after round, with a disk fault in every round.
//!
//! Each round, on the node (re)started over the same cache file:
//! 1. objects from earlier rounds are fetched again and compared (served after a crash);
//! 2. a kept set (small and sliced objects) is fetched and waited for until it is whole on
//!    disk; two marked objects are stored too, and one block of one of them is damaged in the
//!    cache file (a bit flipped, or zeroed): its next read must fail its checksum and be
//!    served from the origin;
//! 3. 20 clients fetch old and new objects, whole and by range, while one IO fault is set
//!    (EIO on reads or writes, short transfers, ENOSPC, every IO failing);
//! 4. the node is killed with SIGKILL at a random moment, restarted, and the kept set must be
//!    hits, byte for byte.
//!
//! `STRATA_FAULT_ROUNDS` (default 5, one per IO fault kind) and `STRATA_FAULT_MINUTES`
//! (default 0) set the length: the run goes on until both are reached.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::common::*;
use crate::harness::*;

/// The IO faults, one per round in turn: (name, failpoint, actions).
const IO_FAULTS: [(&str, &str, &str); 5] = [
    ("eio_read", "io::complete", "50%return(read)"),
    ("eio_write", "io::complete", "50%return(write)"),
    ("short_io", "io::short", "return"),
    ("nospace", "io::complete", "return(nospace)"),
    ("vanished", "io::complete", "return"),
];

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The objects of the run: path → (length, seed); bodies are `generated(seed, ..)`.
type Catalogue = BTreeMap<String, (u64, u64)>;

/// Objects carry a strong validator, as real origins' do: a slice lost to a disk fault while
/// its response streams is then fetched apart (without one, the response could only be cut).
fn add(origin: &TestOrigin, cat: &mut Catalogue, path: String, len: u64, seed: u64) {
    origin.put(
        &path,
        Object::generated(len, seed).header("etag", &format!("\"v{seed}\"")),
    );
    cat.insert(path, (len, seed));
}

/// 20 clients fetching from `paths` (whole or a random range) until `stop`; each response is
/// checked against the origin. Cuts seen while `stop` is still false are counted apart.
async fn load(
    node_url: String,
    cat: Arc<Catalogue>,
    paths: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> (Tally, u64) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let early_cuts = Arc::new(Mutex::new(0u64));
    let tasks: Vec<_> = (0..20u64)
        .map(|c| {
            let (node_url, cat, paths, stop, tally, early_cuts) = (
                node_url.clone(),
                cat.clone(),
                paths.clone(),
                stop.clone(),
                tally.clone(),
                early_cuts.clone(),
            );
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + c);
                while !stop.load(Ordering::Acquire) {
                    let path = &paths[rng.random_range(0..paths.len())];
                    let (len, oseed) = cat[path];
                    let range = rng.random_bool(0.4).then(|| {
                        let s = rng.random_range(0..len);
                        (s, (s + rng.random_range(0..2 << 20)).min(len - 1))
                    });
                    let before = tally.lock().unwrap().cut;
                    fetch_checked(
                        &client,
                        &format!("{node_url}{path}"),
                        range,
                        len,
                        &|s, e| generated(oseed, s, e),
                        &tally,
                    )
                    .await;
                    let cut = tally.lock().unwrap().cut > before;
                    if cut && !stop.load(Ordering::Acquire) {
                        *early_cuts.lock().unwrap() += 1;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    let t = tally.lock().unwrap().clone();
    let e = *early_cuts.lock().unwrap();
    (t, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_with_disk_faults_loses_nothing_kept_and_serves_no_wrong_byte() {
    let rounds = env_u64("STRATA_FAULT_ROUNDS", IO_FAULTS.len() as u64);
    let minutes = env_u64("STRATA_FAULT_MINUTES", 0);
    let started = Instant::now();
    let origin = TestOrigin::start().await;
    let mut cfg = NodeConfig::new(&origin.url());
    cfg.memory = "0".into();
    // Room for many rounds of writes: a kept item should not be evicted before its round's
    // kill (one that was is counted apart, see below).
    cfg.disk = Some("1GiB".into());
    cfg.log_level = "warn".into();
    cfg.log_access = false;
    let mut node = Strata::start(&cfg);
    let mut cat = Catalogue::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut total = Tally::default();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut io_errors: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut kept_total, mut kept_hits, mut detected) = (0u64, 0u64, 0u64);
    let (mut kept_evicted, mut racing_evictions) = (0u64, 0u64);
    let mut round = 0u64;
    while round < rounds || started.elapsed() < Duration::from_secs(minutes * 60) {
        let seed0 = 10_000 * (round + 1);
        // 1. What earlier rounds stored, served after a crash.
        let old: Vec<String> = cat.keys().cloned().collect();
        let recheck = Arc::new(Mutex::new(Tally::default()));
        let client = reqwest::Client::new();
        for p in old.iter().rev().take(12) {
            let (len, s) = cat[p];
            fetch_checked(
                &client,
                &node.url(p),
                None,
                len,
                &|a, b| generated(s, a, b),
                &recheck,
            )
            .await;
        }
        let recheck = recheck.lock().unwrap().clone();
        assert_eq!(
            (recheck.wrong, recheck.cut),
            (0, 0),
            "round {round}: {recheck:?}"
        );
        assert!(recheck.bad_status.is_empty(), "round {round}: {recheck:?}");
        total.add(&recheck);

        // 2. The kept set, stored whole on disk before the load.
        let mut kept = Vec::new();
        for i in 0..6u64 {
            let len = if i == 0 {
                rng.random_range(2u64 << 20..5 << 20)
            } else {
                rng.random_range(1u64..64 << 10)
            };
            let p = format!("/r{round}/kept{i}");
            add(&origin, &mut cat, p.clone(), len, seed0 + i);
            let (s, _, body) = get(&node.url(&p)).await;
            assert_eq!(s, 200);
            assert!(
                body == generated(seed0 + i, 0, len),
                "round {round}: {p} differs"
            );
            kept.push(p);
        }
        let missing = wait_on_disk(&node, &kept).await;
        assert!(
            missing.is_empty(),
            "round {round}: never stored whole: {missing:?}"
        );

        // A block of a stored object damaged under the running node.
        let how = if round.is_multiple_of(2) {
            Damage::Flip
        } else {
            Damage::Zero
        };
        let word = *format!("V{:07}", round % 10_000_000)
            .as_bytes()
            .first_chunk::<8>()
            .unwrap();
        let victim = format!("/r{round}/victim");
        let body = marked_body(word, 24 << 10);
        origin.put(&victim, Object::new(body.clone()));
        assert_eq!(get(&node.url(&victim)).await.2, body);
        assert!(wait_on_disk(&node, std::slice::from_ref(&victim))
            .await
            .is_empty());
        let crc_before = node.metric("strata_disk_checksum_failures_total").await;
        assert!(
            damage_marked(&node.dir.path().join("cache.img"), word, how),
            "round {round}: the victim's blocks were not found in the cache file"
        );
        let (s, cs, got) = get(&node.url(&victim)).await;
        assert_eq!(
            (s, got),
            (200, body),
            "round {round}: damaged object served wrong"
        );
        assert!(
            cs.contains("fwd="),
            "round {round}: damaged object was a hit: {cs}"
        );
        let crc_after = node.metric("strata_disk_checksum_failures_total").await;
        assert!(crc_after > crc_before, "round {round}: damage not counted");
        detected += 1;
        *faults
            .entry(if how == Damage::Flip {
                "bit_flip"
            } else {
                "zeroed_block"
            })
            .or_default() += 1;

        // 3. Load, with one IO fault set, and 4. a kill at a random moment.
        for i in 0..8u64 {
            let len = if i < 2 {
                rng.random_range(1u64 << 20..4 << 20)
            } else {
                rng.random_range(1u64..96 << 10)
            };
            add(
                &origin,
                &mut cat,
                format!("/r{round}/new{i}"),
                len,
                seed0 + 100 + i,
            );
        }
        // The kept set stays out of the load: a read fault there would drop it and a refetch
        // replace it with a version the kill may cut; what was whole before must be found whole.
        let mut paths: Vec<String> = cat.keys().rev().take(48).cloned().collect();
        paths.retain(|p| !p.ends_with("victim") && !kept.contains(p));
        let (kind, fp, actions) = IO_FAULTS[(round % IO_FAULTS.len() as u64) as usize];
        let io_before = node.metric("strata_disk_io_errors_total").await;
        failpoint(&node, fp, actions).await;
        *faults.entry(kind).or_default() += 1;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = tokio::spawn(load(
            node.url(""),
            Arc::new(cat.clone()),
            Arc::new(paths),
            stop.clone(),
            round,
        ));
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
        let io_after = node.metric("strata_disk_io_errors_total").await;
        // Faults make refetches, and refetches write: a heavy round can wrap the device and
        // evict the kept set like anything else. What is still on disk now must survive. (The
        // fault stops first: the check reads the records, and a read fault would drop them.)
        clear_failpoint(&node, fp).await;
        let evictions = "strata_cache_evictions_total{tier=\"disk\"}";
        let evicted_before = node.metric(evictions).await;
        let mut on_disk_now = Vec::new();
        for p in &kept {
            if on_disk(&node, p).await {
                on_disk_now.push(p.clone());
            }
        }
        // Eviction between the check and the kill would make a kept item look lost: such a
        // round (the device is large enough that none was seen) is counted, not judged.
        let evicted_between = node.metric(evictions).await > evicted_before;
        stop.store(true, Ordering::Release);
        node.child.kill().expect("kill -9");
        node.child.wait().expect("reap");
        let (tally, early_cuts) = clients.await.expect("clients");
        assert_eq!(
            tally.wrong, 0,
            "round {round} ({kind}): wrong bytes: {tally:?}"
        );
        assert!(
            tally.bad_status.is_empty(),
            "round {round} ({kind}): {tally:?}"
        );
        assert_eq!(
            early_cuts, 0,
            "round {round} ({kind}): responses cut before the kill"
        );
        // Counted per kind: a round's random faults may miss the few IOs a short round makes.
        *io_errors.entry(kind).or_default() += (io_after - io_before) as u64;
        total.add(&tally);

        // Restart over the same cache file: the kept set is still there.
        let dir = std::mem::replace(&mut node.dir, tempfile::tempdir().unwrap());
        drop(node);
        node = Strata::start_in(&cfg, dir);
        let mut hits = 0;
        for p in &on_disk_now {
            let (len, s) = cat[p];
            let (status, cs, got) = get(&node.url(p)).await;
            assert_eq!(status, 200);
            assert!(
                got == generated(s, 0, len),
                "round {round}: {p} differs after the kill"
            );
            total.bytes += len;
            if cs == "strata; hit" {
                hits += 1;
            } else {
                assert!(
                    evicted_between,
                    "round {round}: {p} was lost by the kill: {cs}"
                );
                racing_evictions += 1;
            }
        }
        kept_evicted += (kept.len() - on_disk_now.len()) as u64;
        kept_total += on_disk_now.len() as u64;
        kept_hits += hits;
        eprintln!(
            "round {round}: {kind}, {} responses ({} cut by the kill), {} MiB compared, kept {hits}/{} ({} evicted)",
            tally.complete + tally.cut,
            tally.cut,
            tally.bytes >> 20,
            on_disk_now.len(),
            kept.len() - on_disk_now.len()
        );
        round += 1;
    }
    let report = format!(
        "fault run: {round} kill rounds in {:.1} min\nfaults injected: {faults:?}\nIO errors counted by the node, per kind: {io_errors:?}\ndamaged blocks detected: {detected}\nresponses: {} complete, {} cut by kills\nbytes compared: {} ({} MiB), wrong bytes: {}\nkept items: {kept_hits}/{kept_total} hits after the kills ({kept_evicted} more evicted before their kill, {racing_evictions} in rounds with evictions between the check and the kill)\n",
        started.elapsed().as_secs_f64() / 60.0,
        total.complete,
        total.cut,
        total.bytes,
        total.bytes >> 20,
        total.wrong,
    );
    eprintln!("{report}");
    if let Ok(path) = std::env::var("STRATA_FAULT_REPORT") {
        std::fs::write(path, &report).expect("write report");
    }
    assert_eq!(total.wrong, 0);
    for kind in ["eio_read", "eio_write", "nospace", "vanished"] {
        assert!(
            io_errors.get(kind).copied().unwrap_or(0) > 0,
            "{kind}: no IO error counted in any round"
        );
    }
}
