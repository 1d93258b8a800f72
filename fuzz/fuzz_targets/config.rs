//! Fuzz target: see `strata::fuzz::config_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzz::config_text(data));
