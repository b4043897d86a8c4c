//! The configuration parser against a file text and an environment the
//! fuzzer writes (input format and invariants: `src/config.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    p11ha_fuzz::config::run(data);
});
