//! A member's connection: its stream, its buffer, and the framing of
//! PKCS11-RPC.md, section 2 (a 12-byte header: call code, options length,
//! body length; then the body).
//!
//! One request is outstanding per connection. A transport error, a deadline
//! passed (the stream's business: its read returns `TimedOut`) or a reply
//! that is not the protocol breaks the connection for good: the stream is
//! dropped, so a late or misread reply can never be taken for the answer to
//! a later request, and every later call fails at once, writing nothing.
//! Only a new connection mends it.
//!
//! That rule is kept here, apart from the calls, so that it holds in one
//! place: every frame goes out and comes back through [`Conn::transact`],
//! and every call (its error frame, its id and signature checked) through
//! [`Conn::call`].

use embedded_io::{ErrorKind, Read, Write};
use p11ha_core::ck::Rv;
use p11ha_core::error::TransportError;
use p11ha_core::{Error, Result};

use super::codec::{Reader, Version, Writer};
use super::lengths::Lengths;

/// Opens a byte stream to a server, with whatever deadlines the platform
/// gives it (a read that takes too long must return an error of kind
/// `TimedOut`).
pub trait Connector: Send + Sync {
    /// The stream.
    type Stream: Read + Write;
    /// A new connection.
    fn connect(&self) -> core::result::Result<Self::Stream, TransportError>;

    /// Called when the connection is set up (version, `C_Initialize`, the
    /// slots and tokens read): a deadline for setting up, rather than the
    /// one for each call, may end here. The default does nothing.
    fn established(&self, _stream: &mut Self::Stream) {}
}

fn transport<E: embedded_io::Error>(e: E) -> TransportError {
    match e.kind() {
        ErrorKind::TimedOut => TransportError::TimedOut,
        _ => TransportError::Disconnected,
    }
}

/// The most bytes of options a reply may carry (the server sends none).
const MAX_OPTIONS: usize = 256;
/// Frame header: call code, options length, body length.
pub(super) const HEADER: usize = 12;

/// One connection and its buffer.
pub(super) struct Conn<S, B> {
    /// `None` once broken (or not yet connected): never read again.
    pub(super) stream: Option<S>,
    pub(super) buf: B,
    pub(super) version: Version,
    code: u32,
    /// What the connection knows to answer length queries itself.
    pub(super) lengths: Lengths,
}

impl<S: Read + Write, B: core::ops::DerefMut<Target = [u8]>> Conn<S, B> {
    /// No stream yet: [`super::client`] opens one (the version byte) and
    /// sets the version it was answered.
    pub(super) fn new(buf: B) -> Self {
        Conn {
            stream: None,
            buf,
            version: Version::V0,
            code: 0x10,
            lengths: Lengths::default(),
        }
    }

    pub(super) fn broken(&mut self, e: TransportError) -> Error {
        self.stream = None;
        Error::Transport(e)
    }

    /// Sends the request of `len` body bytes (encoded at `buf[HEADER..]`)
    /// and reads the reply body into `buf`; returns its length.
    fn transact(&mut self, len: usize) -> Result<usize> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Error::Transport(TransportError::Disconnected));
        };
        self.code = self.code.wrapping_add(1).max(0x10);
        let code = self.code;
        let body = u32::try_from(len).map_err(|_| Error::Rv(Rv::HOST_MEMORY))?;
        self.buf[..4].copy_from_slice(&code.to_be_bytes());
        self.buf[4..8].copy_from_slice(&0u32.to_be_bytes());
        self.buf[8..12].copy_from_slice(&body.to_be_bytes());
        if let Err(e) = write_all(stream, &self.buf[..HEADER + len]) {
            return Err(self.broken(e));
        }
        let mut header = [0u8; HEADER];
        if let Err(e) = read_exact(stream, &mut header) {
            return Err(self.broken(e));
        }
        let word =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (rcode, options, body) = (word(0), word(4) as usize, word(8) as usize);
        if rcode != code || options > MAX_OPTIONS || body > self.buf.len() {
            return Err(self.broken(TransportError::Protocol));
        }
        let mut skip = [0u8; MAX_OPTIONS];
        if let Err(e) = read_exact(stream, &mut skip[..options]) {
            return Err(self.broken(e));
        }
        if let Err(e) = read_exact(stream, &mut self.buf[..body]) {
            return Err(self.broken(e));
        }
        Ok(body)
    }

    /// One call: `encode` writes the request's values after the call id and
    /// signature; `decode` reads the reply's values. An error frame becomes
    /// its CK_RV; anything that is not the protocol breaks the connection.
    pub(super) fn call<T>(
        &mut self,
        id: u32,
        request: &str,
        reply: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
        decode: impl FnOnce(&mut Reader<'_>) -> Option<T>,
    ) -> Result<T> {
        if self.stream.is_none() {
            return Err(Error::Transport(TransportError::Disconnected));
        }
        let version = self.version;
        let len = {
            let mut w = Writer::new(&mut self.buf[HEADER..]);
            w.call(id, request).ok_or(Error::Rv(Rv::HOST_MEMORY))?;
            encode(&mut w, version)?;
            w.len()
        };
        let n = self.transact(len)?;
        let mut r = Reader::new(&self.buf[..n]);
        let parsed = (|| {
            let (rid, sig) = r.call()?;
            if rid == 0 && sig == b"u" {
                let rv = r.ulong()?;
                // An error frame must carry an error.
                return (rv != 0).then_some(Err(Error::Rv(Rv(rv))));
            }
            if rid != id || sig != reply.as_bytes() {
                return None;
            }
            decode(&mut r).map(Ok)
        })();
        match parsed {
            Some(result) => result,
            None => Err(self.broken(TransportError::Protocol)),
        }
    }
}

pub(super) fn write_all<S: Write>(
    s: &mut S,
    mut b: &[u8],
) -> core::result::Result<(), TransportError> {
    while !b.is_empty() {
        match s.write(b) {
            Ok(0) => return Err(TransportError::Disconnected),
            Ok(n) => b = &b[n.min(b.len())..],
            Err(e) => return Err(transport(e)),
        }
    }
    s.flush().map_err(transport)
}

pub(super) fn read_exact<S: Read>(
    s: &mut S,
    mut b: &mut [u8],
) -> core::result::Result<(), TransportError> {
    while !b.is_empty() {
        match s.read(b) {
            Ok(0) => return Err(TransportError::Disconnected),
            Ok(n) => {
                let n = n.min(b.len());
                b = &mut core::mem::take(&mut b)[n..];
            }
            Err(e) => return Err(transport(e)),
        }
    }
    Ok(())
}
impl<S: Write, B> Conn<S, B> {
    /// C_Finalize, then close: the server's way to end cleanly. The answer
    /// is not waited for; a broken connection gets nothing.
    pub(super) fn finalize(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let mut frame = [0u8; HEADER + 4 + 4];
            frame[3] = 0x7f;
            frame[11] = 8;
            frame[15] = 2;
            let _ = write_all(&mut stream, &frame);
        }
    }
}
