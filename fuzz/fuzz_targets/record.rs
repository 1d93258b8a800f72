//! Fuzz target: see `strata::fuzz::stored_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzz::stored_record(data));
