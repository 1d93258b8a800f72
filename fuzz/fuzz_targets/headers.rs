//! Fuzz target: see `strata::fuzz::cache_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzz::cache_headers(data));
