//! The link check of `scripts/check-nostd.sh`: a staticlib that depends on
//! p11ha-core and the adapters' no_std features (fault, rpc) and instantiates
//! the RPC client over a made-up stream, so that the whole client is compiled.
//! The script links every object of the archive (`--whole-archive`, no gc)
//! into an ELF with ld.lld-22 for thumbv7em-none-eabihf; an undefined symbol
//! fails the link, so anything in the graph that expects an OS, a libc
//! (malloc, write...), an allocator (`__rust_alloc`...) or another runtime
//! fails the check. It is linked, never run.
#![no_std]
// No `extern crate alloc`, no #[global_allocator]: if anything in the graph needed an
// allocator or std, this crate could not be built or linked.
extern crate p11ha_adapters;
extern crate p11ha_core;

use p11ha_adapters::rpc::{Connector, RpcMember};
use p11ha_core::error::TransportError;
use p11ha_core::port::Member;
use p11ha_core::sync::SpinLock;

/// A stream a board would give (a UART, a TCP socket of its own stack): here, one whose bytes
/// the optimiser cannot predict, so that the RPC client is instantiated and linked in full.
struct Wire;

impl embedded_io::ErrorType for Wire {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        for b in buf.iter_mut() {
            *b = core::hint::black_box(0);
        }
        Ok(core::hint::black_box(buf.len()))
    }
}

impl embedded_io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct Dial;

impl Connector for Dial {
    type Stream = Wire;
    fn connect(&self) -> Result<Wire, TransportError> {
        Ok(Wire)
    }
}

/// Entry point for the link check; keeps the archive's objects meaningful to the linker.
#[unsafe(no_mangle)]
pub extern "C" fn p11ha_nostd_probe() -> usize {
    static mut BUF: [u8; 4096] = [0; 4096];
    // SAFETY: the probe is linked, never run; nothing else touches BUF.
    let buf: &'static mut [u8] = unsafe { &mut *core::ptr::addr_of_mut!(BUF) };
    match RpcMember::connect(Dial, || Some(SpinLock::new()), [buf], 0) {
        Ok((member, _)) => {
            // Every method, through the vtable.
            let member: &dyn Member = core::hint::black_box(&member);
            member.open_session(6).unwrap_or(0) as usize
        }
        Err(e) => core::hint::black_box(e.rv().0) as usize,
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
