//! A library that reads out of bounds and leaks on request: ASan must catch both.
#[unsafe(no_mangle)]
pub extern "C" fn canary_oob(i: usize) -> u8 {
    let v = std::hint::black_box(vec![1u8; 8]);
    // SAFETY: none; i = 8 reads one byte past the end, on purpose.
    unsafe { *v.as_ptr().add(i) }
}
#[unsafe(no_mangle)]
pub extern "C" fn canary_leak() {
    std::mem::forget(std::hint::black_box(vec![7u8; 4096]));
}
