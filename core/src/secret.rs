//! Secrets kept in memory: PINs that a later login must repeat.
//!
//! A PIN is kept only while the application is logged in, in a fixed buffer
//! that is overwritten with volatile writes when it is replaced, cleared or
//! dropped, so that it does not linger in memory a core dump could show.

use core::fmt;
use core::sync::atomic::{Ordering, compiler_fence};

/// The longest PIN p11ha keeps, in bytes.
pub const MAX_PIN: usize = 256;

/// A PIN, zeroised when cleared or dropped. Its `Debug` never shows it.
pub struct Pin {
    bytes: [u8; MAX_PIN],
    len: usize,
}

impl Pin {
    /// No PIN.
    pub const fn new() -> Self {
        Pin {
            bytes: [0; MAX_PIN],
            len: 0,
        }
    }

    /// Keeps `pin`, replacing (and zeroising) what was kept. `false`, with
    /// nothing kept, if it is longer than [`MAX_PIN`].
    pub fn set(&mut self, pin: &[u8]) -> bool {
        self.clear();
        if pin.len() > MAX_PIN {
            return false;
        }
        self.bytes[..pin.len()].copy_from_slice(pin);
        self.len = pin.len();
        true
    }

    /// The PIN kept (empty if none).
    pub fn get(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether nothing is kept and every byte of the buffer is zero (for
    /// the engine's tests of when a PIN is zeroised).
    #[cfg(test)]
    pub(crate) fn is_zeroised(&self) -> bool {
        self.len == 0 && self.bytes.iter().all(|&b| b == 0)
    }

    /// Overwrites the PIN with zeros.
    pub fn clear(&mut self) {
        zeroise(&mut self.bytes);
        self.len = 0;
    }
}

/// Overwrites `buf` with zeros in a way the compiler does not remove as a
/// dead store: for buffers a PIN passed through (an RPC request).
pub fn zeroise(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        // The volatile write keeps the compiler from removing the store
        // as dead, which is the point of zeroising.
        #[allow(unsafe_code)]
        unsafe {
            core::ptr::write_volatile(b, 0)
        };
    }
    compiler_fence(Ordering::SeqCst);
}

impl Default for Pin {
    fn default() -> Self {
        Pin::new()
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.clear();
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_kept_cleared_and_hidden() {
        let mut p = Pin::new();
        assert!(p.set(b"1234"));
        assert_eq!(p.get(), b"1234");
        p.clear();
        assert_eq!(p.get(), b"");
        assert!(p.is_zeroised());
        assert!(!p.set(&[b'x'; MAX_PIN + 1]));
        assert_eq!(p.get(), b"");
        let mut s = heapless::String::<16>::new();
        core::fmt::write(&mut s, format_args!("{p:?}")).unwrap();
        assert_eq!(s, "Pin(..)");
    }
}
