//! Fuzz target: see `strata::fuzz::request_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzz::request_path(data));
