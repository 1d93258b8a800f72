//! Large objects as slices: ranges, partial hits, coalescing, cancellation, odd origins.

mod common;

use std::time::{Duration, Instant};

use common::origin::generated;
use common::*;

const MIB: u64 = 1 << 20;

/// How many times the origin sent each slice of `path` (a 1-byte probe does not count).
fn slice_fetches(origin: &TestOrigin, path: &str, len: u64) -> Vec<u32> {
    let n = len.div_ceil(MIB) as usize;
    let mut counts = vec![0u32; n];
    for s in origin
        .seen()
        .iter()
        .filter(|s| s.path == path && s.method == "GET")
    {
        let (a, b) = match s.headers.get("range") {
            None => (0, len - 1),
            Some(r) => {
                let spec = r.strip_prefix("bytes=").expect("bytes range");
                let (a, b) = spec.split_once('-').unwrap();
                let a: u64 = a.parse().unwrap();
                let b: u64 = if b.is_empty() {
                    len - 1
                } else {
                    b.parse::<u64>().unwrap().min(len - 1)
                };
                if a == b && a == 0 {
                    continue;
                }
                (a, b)
            }
        };
        for c in &mut counts[(a / MIB) as usize..=(b / MIB) as usize] {
            *c += 1;
        }
    }
    counts
}

async fn ranged(url: &str, range: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("range", range)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_random_ranges_are_exact_and_each_slice_is_fetched_once() {
    let origin = TestOrigin::start().await;
    let len = 64 * MIB;
    origin.put("/big", Object::generated(len, 1).header("etag", "\"v1\""));
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let url = node.url("/big");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    for i in 0..200 {
        let (header, start, end) = match i % 8 {
            0 => {
                let s = rnd(64) * MIB;
                (format!("bytes={}-{}", s, s + MIB - 1), s, s + MIB - 1)
            }
            1 | 2 => {
                let s = rnd(len);
                let e = (s + rnd(3 * MIB)).min(len - 1);
                (format!("bytes={s}-{e}"), s, e)
            }
            3 => {
                let n = 1 + rnd(2 * MIB);
                (format!("bytes=-{n}"), len - n, len - 1)
            }
            4 => {
                let s = len - 1 - rnd(3 * MIB);
                (format!("bytes={s}-"), s, len - 1)
            }
            5 => {
                let s = rnd(len);
                (format!("bytes={s}-{s}"), s, s)
            }
            6 => ("bytes=0-".to_string(), 0, len - 1),
            _ => {
                let s = rnd(len);
                (
                    format!("bytes={}-{}", s, s + 10 * MIB),
                    s,
                    (s + 10 * MIB).min(len - 1),
                )
            }
        };
        let r = ranged(&url, &header).await;
        assert_eq!(r.status().as_u16(), 206, "{header}");
        let cr = r.headers()["content-range"].to_str().unwrap().to_string();
        assert_eq!(cr, format!("bytes {start}-{end}/{len}"), "{header}");
        let cl: u64 = r.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(cl, end - start + 1, "{header}");
        let body = r.bytes().await.unwrap();
        assert!(
            body == generated(1, start, end + 1),
            "bytes differ for {header}"
        );
    }
    // And the whole file, stitched from cache and origin.
    let (s, _, body) = get(&url).await;
    assert_eq!(s, 200);
    assert!(body == generated(1, 0, len));
    let counts = slice_fetches(&origin, "/big", len);
    assert!(
        counts.iter().all(|&c| c <= 1),
        "slices fetched more than once: {counts:?}"
    );
    let (_, cs, _) = get(&url).await;
    assert_eq!(cs, "strata; hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_object_is_completed_as_one_200_stream() {
    let origin = TestOrigin::start().await;
    let len = 16 * MIB + 12345;
    origin.put("/p", Object::generated(len, 2).header("etag", "\"p\""));
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let url = node.url("/p");
    let r = ranged(&url, "bytes=5242880-8388607").await; // slices 5..=7
    assert_eq!(r.headers()["cache-status"], "strata; fwd=uri-miss; stored");
    assert!(r.bytes().await.unwrap() == generated(2, 5 * MIB, 8 * MIB));
    let (s, cs, body) = get(&url).await;
    assert_eq!((s, cs.as_str()), (200, "strata; fwd=partial"));
    assert!(body == generated(2, 0, len), "stitched body differs");
    // Only the missing runs went to the origin: slices 0..=4 and 8..=16.
    let ranges: Vec<String> = origin
        .seen()
        .iter()
        .filter_map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(
        ranges,
        vec![
            "bytes=5242880-8388607".to_string(),
            "bytes=0-5242879".to_string(),
            format!("bytes=8388608-{}", len - 1),
        ]
    );
    assert_eq!(get(&url).await.1, "strata; hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_range_inputs_get_the_rfc_answer() {
    let origin = TestOrigin::start().await;
    let len = 3 * MIB;
    origin.put("/r", Object::generated(len, 3).header("etag", "\"r\""));
    origin.put("/fresh1", Object::generated(len, 3));
    origin.put("/fresh2", Object::generated(len, 3));
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    get(&node.url("/r")).await;
    let many = format!("bytes={}", vec!["1-2"; 10_000].join(","));
    let cases: Vec<(&str, Vec<u16>, Option<String>)> = vec![
        ("bytes=5-1", vec![200], None),
        ("bytes=abc", vec![200], None),
        ("bytes=-0", vec![416], Some(format!("bytes */{len}"))),
        (&many, vec![200, 400, 413, 431], None),
        (
            "bytes=99999999999999999999999-",
            vec![416],
            Some(format!("bytes */{len}")),
        ),
        (
            "bytes=0-99999999999999999999999",
            vec![206],
            Some(format!("bytes 0-{}/{len}", len - 1)),
        ),
        (
            "bytes=-99999999999999999999999",
            vec![206],
            Some(format!("bytes 0-{}/{len}", len - 1)),
        ),
        ("bytes=0-1,3-4", vec![200], None),
        ("bytes=3145728-", vec![416], Some(format!("bytes */{len}"))),
    ];
    for path in ["/r", "/fresh1"] {
        for (h, statuses, cr) in &cases {
            let r = ranged(&node.url(path), h).await;
            let s = r.status().as_u16();
            assert!(statuses.contains(&s), "{path} {h:.40}: status {s}");
            if let Some(cr) = cr {
                assert_eq!(
                    r.headers()["content-range"].to_str().unwrap(),
                    cr,
                    "{path} {h:.40}"
                );
            }
            let body = r.bytes().await.unwrap();
            match s {
                200 | 206 => assert!(body == generated(3, 0, len), "{path} {h:.40}"),
                _ => assert!(body.len() < 1024),
            }
        }
    }
    // If-Range: a matching entity-tag gets the range, another one the whole object.
    let r = reqwest::Client::new()
        .get(node.url("/r"))
        .header("range", "bytes=10-19")
        .header("if-range", "\"r\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    let r = reqwest::Client::new()
        .get(node.url("/r"))
        .header("range", "bytes=10-19")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().len() as u64, len);
    // A suffix on an unknown object.
    let r = ranged(&node.url("/fresh2"), "bytes=-100").await;
    assert_eq!(r.status().as_u16(), 206);
    assert!(r.bytes().await.unwrap() == generated(3, len - 100, len));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_share_one_origin_fetch_and_stream_at_once() {
    let origin = TestOrigin::start().await;
    let len = 64 * MIB;
    let mut obj = Object::generated(len, 4).header("etag", "\"c\"");
    // A slow origin (~1.5 s for the file), so "first byte long before the end" means something.
    obj.chunk_delay = Duration::from_micros(1500);
    origin.put("/cold", obj);
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let expected = generated(4, 0, len);
    let started = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let url = node.url("/cold");
            let expected = expected.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let mut r = reqwest::get(&url).await.unwrap();
                let mut first_byte = None;
                let mut n = 0usize;
                let mut same = true;
                while let Some(c) = r.chunk().await.unwrap() {
                    first_byte.get_or_insert_with(|| t.elapsed());
                    same &= expected.get(n..n + c.len()) == Some(&c[..]);
                    n += c.len();
                }
                (first_byte.unwrap(), t.elapsed(), n as u64, same)
            })
        })
        .collect();
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    let total = started.elapsed();
    for (_, _, n, same) in &results {
        assert_eq!(*n, len);
        assert!(*same, "a client got different bytes");
    }
    let counts = slice_fetches(&origin, "/cold", len);
    assert!(
        counts.iter().all(|&c| c == 1),
        "each slice once: {counts:?}"
    );
    assert!(
        origin.body_bytes() <= len + MIB,
        "origin sent {}",
        origin.body_bytes()
    );
    let worst_ttfb = results.iter().map(|r| r.0).max().unwrap();
    let first_done = results.iter().map(|r| r.1).min().unwrap();
    eprintln!(
        "50 clients: worst first byte {worst_ttfb:?}, first complete {first_done:?}, all {total:?}"
    );
    assert!(
        worst_ttfb * 4 < first_done,
        "first byte {worst_ttfb:?} vs complete {first_done:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_alone_cancels_the_origin_fetch() {
    let origin = TestOrigin::start().await;
    let len = 64 * MIB;
    let mut obj = Object::generated(len, 5);
    obj.chunk_delay = Duration::from_millis(2);
    origin.put("/leave", obj);
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    {
        let mut r = reqwest::get(node.url("/leave")).await.unwrap();
        let mut n = 0;
        while n < MIB {
            n += r.chunk().await.unwrap().unwrap().len() as u64;
        }
    } // the client hangs up here
    assert!(
        origin.wait_abandoned(Duration::from_secs(10)).await,
        "origin fetch was not cancelled"
    );
    let sent = origin.body_bytes();
    assert!(
        sent < len / 4,
        "origin sent {sent} bytes after the client left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_continues_while_another_client_reads_it() {
    let origin = TestOrigin::start().await;
    let len = 8 * MIB;
    let mut obj = Object::generated(len, 6);
    obj.chunk_delay = Duration::from_millis(1);
    origin.put("/shared", obj);
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let url = node.url("/shared");
    let stayer = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    {
        let mut r = reqwest::get(&url).await.unwrap();
        r.chunk().await.unwrap();
    } // one client hangs up early
    let (s, _, body) = stayer.await.unwrap();
    assert_eq!(s, 200);
    assert!(body == generated(6, 0, len));
    assert_eq!(get(&url).await.1, "strata; hit");
    assert_eq!(
        origin.hits("/shared"),
        1,
        "the early leaver shared the one fetch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_that_ignore_range_or_omit_length_still_work() {
    let origin = TestOrigin::start().await;
    let len = 5 * MIB + 7;
    let mut deaf = Object::generated(len, 7).header("etag", "\"d\"");
    deaf.ignore_range = true;
    origin.put("/deaf", deaf);
    let mut chunked = Object::generated(len, 8);
    chunked.chunked = true;
    origin.put("/chunked", chunked);
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    for (path, seed) in [("/deaf", 7u64), ("/chunked", 8)] {
        for range in ["bytes=3000000-3000099", "bytes=-10", "bytes=4194304-"] {
            let r = ranged(&node.url(path), range).await;
            let s = r.status().as_u16();
            let body = r
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("{path} {range}: {e} {}", node.log_text()));
            match s {
                206 => {
                    let spec = range.strip_prefix("bytes=").unwrap();
                    let (a, b) = spec.split_once('-').unwrap();
                    let (start, end) = if a.is_empty() {
                        (len - b.parse::<u64>().unwrap(), len)
                    } else {
                        let a: u64 = a.parse().unwrap();
                        (
                            a,
                            if b.is_empty() {
                                len
                            } else {
                                b.parse::<u64>().unwrap() + 1
                            },
                        )
                    };
                    assert!(body == generated(seed, start, end), "{path} {range}");
                }
                200 => assert!(body == generated(seed, 0, len), "{path} {range}"),
                other => panic!("{path} {range}: status {other}"),
            }
        }
        let (s, _, body) = get(&node.url(path)).await;
        assert_eq!(s, 200);
        assert!(body == generated(seed, 0, len), "{path}");
    }
    // Both end up cached. The strong ETag lets /deaf be completed slice by slice; /chunked,
    // without one, is refetched whole once (slices of two fetches never mix) and then kept.
    assert_eq!(get(&node.url("/deaf")).await.1, "strata; hit");
    get(&node.url("/chunked")).await;
    assert_eq!(get(&node.url("/chunked")).await.1, "strata; hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_range_numbers_on_an_unknown_object() {
    let origin = TestOrigin::start().await;
    origin.put("/x", Object::generated(3 * MIB, 9).header("etag", "\"x\""));
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let r = ranged(&node.url("/x"), "bytes=0-18446744073709551615").await;
    assert_eq!(r.status().as_u16(), 206);
    assert!(r.bytes().await.unwrap() == generated(9, 0, 3 * MIB));
    let r = ranged(&node.url("/x"), "bytes=18446744073709551615-").await;
    assert_eq!(r.status().as_u16(), 416);
}
