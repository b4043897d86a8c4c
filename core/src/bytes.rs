//! Bounds-checked byte cursors, the one pair p11ha writes and reads its
//! encodings with: the journal's records (little-endian), the PKCS#11 RPC
//! protocol (big-endian, in the adapters), and text written into the
//! fixed-size fields of PKCS#11 structures (`core::fmt::Write`).
//!
//! Every method answers `None` (or `fmt::Error`) instead of going past the
//! end: a cursor never panics and never reads or writes out of bounds, so a
//! full buffer or a short input is an answer for the caller to give.

use core::fmt;

/// Writes into a buffer from its start.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, at: 0 }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.at
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.at == 0
    }

    /// The room after what was written, to be filled by an encoder that
    /// takes a plain slice (then [`Writer::skip`] over what it wrote).
    pub fn rest(&mut self) -> &mut [u8] {
        &mut self.buf[self.at..]
    }

    /// Counts `n` bytes of the rest as written.
    pub fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len())?;
        self.at = end;
        Some(())
    }

    /// Raw bytes.
    pub fn put(&mut self, b: &[u8]) -> Option<()> {
        let end = self.at.checked_add(b.len())?;
        self.buf.get_mut(self.at..end)?.copy_from_slice(b);
        self.at = end;
        Some(())
    }

    /// One byte.
    pub fn u8(&mut self, x: u8) -> Option<()> {
        self.put(&[x])
    }

    /// A u32, little-endian.
    pub fn u32_le(&mut self, x: u32) -> Option<()> {
        self.put(&x.to_le_bytes())
    }

    /// A u32, big-endian.
    pub fn u32_be(&mut self, x: u32) -> Option<()> {
        self.put(&x.to_be_bytes())
    }

    /// A u64, little-endian.
    pub fn u64_le(&mut self, x: u64) -> Option<()> {
        self.put(&x.to_le_bytes())
    }

    /// A u64, big-endian.
    pub fn u64_be(&mut self, x: u64) -> Option<()> {
        self.put(&x.to_be_bytes())
    }
}

/// Text, for the blank-padded strings of PKCS#11 structures: a write that
/// does not fit writes nothing and is an error.
impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes()).ok_or(fmt::Error)
    }
}

/// Reads a buffer from its start.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let b = self.buf.get(self.at..end)?;
        self.at = end;
        Some(b)
    }

    /// The next `N` bytes, as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A u32, little-endian.
    pub fn u32_le(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// A u32, big-endian.
    pub fn u32_be(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// A u64, little-endian.
    pub fn u64_le(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A u64, big-endian.
    pub fn u64_be(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn a_writer_stops_at_the_end_and_keeps_what_fitted() {
        let mut buf = [0u8; 7];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.u32_be(0x0102_0304), Some(()));
        assert_eq!(w.u32_le(0x0506_0708), None, "4 bytes do not fit in 3");
        assert_eq!(w.len(), 4);
        assert_eq!(w.u8(9), Some(()));
        assert_eq!(w.skip(3), None);
        assert_eq!(w.skip(2), Some(()));
        assert!(w.rest().is_empty());
        assert_eq!(write!(w, "x"), Err(fmt::Error));
        assert_eq!(buf, [1, 2, 3, 4, 9, 0, 0]);
    }

    #[test]
    fn a_reader_refuses_short_input() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(r.u32_le(), Some(0x0403_0201));
        assert_eq!(r.u32_be(), Some(0x0506_0708));
        assert_eq!(r.u64_be(), None);
        assert_eq!(r.remaining(), 1, "a failed read takes nothing");
        assert_eq!(r.u8(), Some(9));
        assert_eq!(r.take(usize::MAX), None);
    }

    #[test]
    fn text_fills_a_fixed_field() {
        let mut serial = [b' '; 16];
        let mut w = Writer::new(&mut serial);
        write!(w, "P11HA-{}", 15).unwrap();
        assert_eq!(&serial, b"P11HA-15        ");
    }
}
