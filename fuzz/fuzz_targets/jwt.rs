//! Fuzz target: see `strata::fuzz::jwt_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzz::jwt_request(data));
