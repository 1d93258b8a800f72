//! What a hit does with its stored record: decode it, and build the response header from it
//! (the stored fields, then length, `Via`, `Age` and `Cache-Status`): the first hit of a
//! decoding builds it, later ones clone it and add `Age` and `Cache-Status`. Feature `bench`:
//!
//! ```text
//! cargo bench --features bench --bench records
//! ```
// criterion's group and main macros define undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use strata::bench;

fn records(c: &mut Criterion) {
    let raw = bench::typical_record();
    let mut g = c.benchmark_group("record");
    g.bench_function("decode", |b| b.iter(|| bench::decode(black_box(&raw))));
    let decoded = bench::decode(&raw).expect("a typical record decodes");
    g.bench_function("first_hit_header", |b| {
        b.iter(|| bench::first_hit_header(black_box(&decoded)))
    });
    g.bench_function("hit_header", |b| {
        b.iter(|| bench::hit_header(black_box(&decoded)))
    });
    g.bench_function("decode_and_hit_header", |b| {
        b.iter(|| bench::decode(black_box(&raw)).and_then(|d| bench::hit_header(&d)))
    });
    g.finish();
}

criterion_group!(benches, records);
criterion_main!(benches);
