//! Fuzz target: see `strata_storage::fuzz::ondisk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_storage::fuzz::ondisk(data));
