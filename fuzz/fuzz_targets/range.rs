//! Fuzz target: see `strata::fuzz::range_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzz::range_header(data));
