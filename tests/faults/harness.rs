//! What the fault tests share: failpoints in the running node, damage written into its cache
//! file, and clients that check every byte they receive.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::common::*;

/// Sets failpoint `name` to `actions` in the running node (the admin API).
pub(crate) async fn failpoint(node: &Strata, name: &str, actions: &str) {
    let url = format!("http://{}/failpoints", node.admin);
    let r = reqwest::Client::new()
        .post(url)
        .query(&[("name", name), ("actions", actions)])
        .send()
        .await
        .expect("admin reachable");
    assert_eq!(r.status(), 200, "failpoint {name}={actions} refused");
}

/// Clears failpoint `name` in the running node.
pub(crate) async fn clear_failpoint(node: &Strata, name: &str) {
    let url = format!("http://{}/failpoints", node.admin);
    let r = reqwest::Client::new()
        .delete(url)
        .query(&[("name", name)])
        .send()
        .await
        .expect("admin reachable");
    assert_eq!(r.status(), 200);
}

/// Whether the node stores `path` whole on its disk tier: its description and every slice.
pub(crate) async fn on_disk(node: &Strata, path: &str) -> bool {
    let url = format!("http://{}/inspect", node.admin);
    let Ok(r) = reqwest::Client::new()
        .get(url)
        .query(&[("path", path)])
        .send()
        .await
    else {
        return false;
    };
    let Some(v) = r
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return false;
    };
    v["record_in"]["disk"] == true && v["stored"]["slices"]["missing"] == 0 && {
        let s = &v["stored"]["slices"];
        s["on_disk"] == s["count"]
    }
}

/// Waits (bounded) until every path is stored whole on disk; the paths that are not.
pub(crate) async fn wait_on_disk(node: &Strata, paths: &[String]) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut left: Vec<String> = paths.to_vec();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for p in left {
            if !on_disk(node, &p).await {
                still.push(p);
            }
        }
        left = still;
        if !left.is_empty() {
            // Writes land within milliseconds; inspect is the event, polled.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    left
}

/// A small object whose every 8 bytes repeat `word`: each 4 KiB block of it on the device is
/// recognisable (period 8, a rotation of `word`), so a test can find and damage it.
pub(crate) fn marked_body(word: [u8; 8], len: usize) -> bytes::Bytes {
    word.iter().copied().cycle().take(len).collect()
}

/// How to damage a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// One bit flipped.
    Flip,
    /// The block zeroed.
    Zero,
}

/// Damages, in the cache file at `path`, the first block that belongs to a body made by
/// [`marked_body`] with `word`; whether one was found.
pub(crate) fn damage_marked(path: &Path, word: [u8; 8], how: Damage) -> bool {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("cache file");
    let len = f.metadata().expect("metadata").len();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = f.read_at(&mut buf, at).expect("read cache file");
        if n == 0 {
            break;
        }
        for (i, block) in buf[..n].chunks_exact(4096).enumerate() {
            let periodic = block[8..] == block[..4088];
            if periodic && is_rotation(&block[..8], &word) {
                let off = at + (i * 4096) as u64;
                let mut b = block.to_vec();
                match how {
                    Damage::Flip => b[1234] ^= 0x10,
                    Damage::Zero => b.fill(0),
                }
                f.write_at(&b, off).expect("write cache file");
                f.sync_data().expect("sync");
                return true;
            }
        }
        at += n as u64;
    }
    false
}

fn is_rotation(got: &[u8], word: &[u8; 8]) -> bool {
    (0..8).any(|r| (0..8).all(|i| got[i] == word[(i + r) % 8]))
}

/// What clients received, checked against the origin.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// Responses read to their end.
    pub(crate) complete: u64,
    /// Responses cut (by a kill, or a fault the client saw as a broken stream).
    pub(crate) cut: u64,
    /// Body bytes compared.
    pub(crate) bytes: u64,
    /// Body bytes that differed from the origin's (must stay 0).
    pub(crate) wrong: u64,
    /// Statuses other than 200 and 206 seen before any kill (must stay empty).
    pub(crate) bad_status: BTreeMap<u16, u64>,
}

impl Tally {
    /// Adds another tally.
    pub(crate) fn add(&mut self, o: &Tally) {
        self.complete += o.complete;
        self.cut += o.cut;
        self.bytes += o.bytes;
        self.wrong += o.wrong;
        for (s, n) in &o.bad_status {
            *self.bad_status.entry(*s).or_default() += n;
        }
    }
}

/// One fetch: `range` (start, inclusive end) or the whole object, whose bytes are those of
/// `expected(start, end)`. Every byte received is compared; a stream cut short counts as cut.
pub(crate) async fn fetch_checked(
    client: &reqwest::Client,
    url: &str,
    range: Option<(u64, u64)>,
    len: u64,
    expected: &(dyn Fn(u64, u64) -> bytes::Bytes + Sync),
    tally: &Arc<Mutex<Tally>>,
) {
    let mut req = client.get(url);
    if let Some((s, e)) = range {
        req = req.header("range", format!("bytes={s}-{e}"));
    }
    let Ok(mut r) = req.send().await else {
        tally.lock().unwrap().cut += 1;
        return;
    };
    let status = r.status().as_u16();
    let (start, end) = match (status, range) {
        (206, Some((s, e))) => (s, e.min(len - 1) + 1),
        (200, _) => (0, len),
        _ => {
            *tally.lock().unwrap().bad_status.entry(status).or_default() += 1;
            return;
        }
    };
    let mut pos = start;
    let (mut wrong, mut ok) = (0u64, true);
    loop {
        match r.chunk().await {
            Ok(Some(c)) => {
                let upto = (pos + c.len() as u64).min(end);
                let want = expected(pos, upto);
                let got = &c[..(upto - pos) as usize];
                wrong += got.iter().zip(want.iter()).filter(|(a, b)| a != b).count() as u64;
                // Bytes past the end asked for are wrong too.
                wrong += c.len() as u64 - (upto - pos);
                pos += c.len() as u64;
            }
            Ok(None) => break,
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    let mut t = tally.lock().unwrap();
    t.bytes += pos - start;
    t.wrong += wrong;
    if ok && pos == end {
        t.complete += 1;
    } else {
        t.cut += 1;
    }
}
