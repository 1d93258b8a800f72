//! The HTTP rules every hit runs, each on its own: range planning (a `Range` evaluated against
//! the stored length and mapped to slices), the freshness decision, preconditions, and the
//! `Cache-Status` value. Pure functions: no IO, no allocation that the hit path would not make.
//!
//! ```text
//! cargo bench --bench http_rules
//! ```
// criterion's group and main macros define undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use strata::http::cache_status::CacheStatus;
use strata::http::conditional::{self, Validators};
use strata::http::freshness::{Overrides, Policy};
use strata::http::range::{self, RangeRequest};

/// A 4 GiB object in 1 MiB slices: what a mirror's ISO looks like.
const LEN: u64 = 4 << 30;
const SLICE: u64 = 1 << 20;

fn range_planning(c: &mut Criterion) {
    let mut g = c.benchmark_group("range");
    for (name, value) in [
        ("single", &b"bytes=1048000-2097151"[..]),
        ("open", &b"bytes=3221225472-"[..]),
        ("suffix", &b"bytes=-65536"[..]),
        ("spaces", &b"bytes = 100 - 200"[..]),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| match range::evaluate(black_box(value), black_box(LEN)) {
                RangeRequest::Single(r) => r.slices(SLICE).1,
                _ => 0,
            })
        });
    }
    g.bench_function("content_range", |b| {
        b.iter(|| range::parse_content_range(black_box(b"bytes 1048576-2097151/4294967296")))
    });
    g.finish();
}

fn origin_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in [
        (
            "cache-control",
            "public, max-age=3600, stale-while-revalidate=60",
        ),
        ("etag", "\"6b0ecbd1-2000\""),
        ("last-modified", "Tue, 01 Dec 2026 13:29:53 GMT"),
        ("date", "Tue, 01 Dec 2026 13:32:12 GMT"),
        ("content-type", "application/octet-stream"),
        ("content-length", "8192"),
    ] {
        h.insert(n, HeaderValue::from_static(v));
    }
    h
}

fn freshness(c: &mut Criterion) {
    let resp = origin_headers();
    let now = SystemTime::now();
    let ov = Overrides::default();
    let mut g = c.benchmark_group("freshness");
    g.bench_function("policy_from_response", |b| {
        b.iter(|| Policy::new(StatusCode::OK, black_box(&resp), now, &ov))
    });
    let policy = Policy::new(StatusCode::OK, &resp, now, &ov);
    let req = HeaderMap::new();
    let later = now + Duration::from_secs(30);
    g.bench_function("reuse_decision", |b| {
        b.iter(|| black_box(&policy).reuse(black_box(&req), later))
    });
    g.finish();
}

fn preconditions(c: &mut Criterion) {
    let stored = Validators {
        status: 200,
        etag: Some(b"\"6b0ecbd1-2000\""),
        last_modified: Some(b"Tue, 01 Dec 2026 13:29:53 GMT"),
    };
    let plain = HeaderMap::new();
    let mut inm = HeaderMap::new();
    inm.insert(
        "if-none-match",
        HeaderValue::from_static("\"a\", \"b\", \"6b0ecbd1-2000\""),
    );
    let mut g = c.benchmark_group("preconditions");
    g.bench_function("none", |b| {
        b.iter(|| conditional::evaluate(&Method::GET, black_box(&plain), stored))
    });
    g.bench_function("if_none_match", |b| {
        b.iter(|| conditional::evaluate(&Method::GET, black_box(&inm), stored))
    });
    g.finish();
}

fn cache_status(c: &mut Criterion) {
    c.bench_function("cache_status/hit", |b| {
        b.iter(|| black_box(CacheStatus::hit()).header_value())
    });
}

criterion_group!(
    benches,
    range_planning,
    freshness,
    preconditions,
    cache_status
);
criterion_main!(benches);
