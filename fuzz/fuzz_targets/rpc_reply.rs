//! The RPC client against replies the fuzzer writes (input format and
//! invariants: `src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = p11ha_fuzz::run(data);
});
