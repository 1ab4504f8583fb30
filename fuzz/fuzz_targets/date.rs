//! Fuzz target `date`: see `checks::date` (shared with the stable regression
//! test, tests/daemon/fuzz_corpora.rs).

#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::date(data));
