//! Loads the canary with dlopen, as the tests load libp11ha.so, and calls it.
//!
//! Usage: p11ha-asan-canary-app oob|leak PATH/libp11ha_asan_canary.so
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::ffi::CString::new(args[2].as_str()).unwrap();
    // SAFETY: loading and calling the canary is the point.
    unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!h.is_null(), "dlopen {}", args[2]);
        if args[1] == "oob" {
            let f: extern "C" fn(usize) -> u8 =
                std::mem::transmute(libc::dlsym(h, c"canary_oob".as_ptr()));
            println!("{}", f(std::hint::black_box(8)));
        } else {
            let f: extern "C" fn() = std::mem::transmute(libc::dlsym(h, c"canary_leak".as_ptr()));
            f();
        }
    }
}
