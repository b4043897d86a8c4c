//! A member's connection: its stream, its buffers, and the framing of
//! PKCS11-RPC.md, section 2 (a 12-byte header: call code, options length,
//! body length; then the body).
//!
//! **Several calls in flight.** A p11-kit server answers a connection's
//! requests one after another, in order (PKCS11-RPC.md, sections 1 and 9).
//! When the connector can split the stream into a reading and a writing
//! handle ([`Connector::split`]) and the member has more than one buffer, a
//! call writes its request while earlier calls still wait for their replies,
//! so the server always finds the next request queued. Each call in flight
//! has a buffer of its own (its request goes out of it and its reply comes
//! back into it). Order is kept by one rule: a call takes the read side
//! before it lets go of the write side, so replies are read in the order
//! the requests were written, each by the call that wrote it, and each
//! reply must carry its own request's call code. Lock order: a buffer, then
//! the write side, then the read side.
//!
//! With one buffer, or a stream that cannot be split (a UART), the write
//! side is held for the whole round trip: one call at a time.
//!
//! **A broken connection stays broken.** A transport error, a deadline
//! passed (the stream's business: its read returns `TimedOut`) or a reply
//! that is not the protocol marks the connection's generation dead: its
//! streams are dropped by the next call that reaches them, every call in
//! flight on it fails at once (none waits for a reply that cannot come),
//! and nothing more is written on it. A late or misread reply can never be
//! taken for the answer to a later request. Only a new connection (a new
//! generation, [`Link::reconnect`]) mends it.
//!
//! That rule is kept here, apart from the calls, so that it holds in one
//! place: every call goes out and comes back through [`Link::call`].

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use embedded_io::{ErrorKind, Read, Write};
use p11ha_core::ck::Rv;
use p11ha_core::error::TransportError;
use p11ha_core::port::RawLock;
use p11ha_core::sync::{Guard, Mutex};
use p11ha_core::{Error, Result};

use super::codec::{Reader, Version, Writer};

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

    /// A second handle on an established `stream`, for writing requests
    /// while another thread reads replies from `stream`: what lets one
    /// connection carry several calls at once. After a split, `stream` only
    /// reads and the handle returned only writes; the client flushes the
    /// reading handle before it reads each reply, which starts that reply's
    /// deadline, and flushes the writing handle after each request. The
    /// default, `None`: the stream carries one call at a time.
    fn split(&self, _stream: &mut Self::Stream) -> Option<Self::Stream> {
        None
    }
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
/// The most buffers, so calls in flight, on one connection.
pub const MAX_IN_FLIGHT: usize = 4;

/// The code after `code`: codes start at 0x11 and skip the low values.
fn next_code(code: u32) -> u32 {
    code.wrapping_add(1).max(0x11)
}

/// Encodes a call (id, signature, then `encode`'s values) at
/// `buf[HEADER..]`; returns the body's length.
fn encode_call(
    buf: &mut [u8],
    id: u32,
    request: &str,
    version: Version,
    encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
) -> Result<usize> {
    let body = buf.get_mut(HEADER..).ok_or(Error::Rv(Rv::HOST_MEMORY))?;
    let mut w = Writer::new(body);
    w.call(id, request).ok_or(Error::Rv(Rv::HOST_MEMORY))?;
    encode(&mut w, version)?;
    Ok(w.len())
}

/// Puts the frame header of a request of `len` body bytes before it.
fn frame(buf: &mut [u8], code: u32, len: usize) -> Result<&[u8]> {
    let body = u32::try_from(len).map_err(|_| Error::Rv(Rv::HOST_MEMORY))?;
    buf[..4].copy_from_slice(&code.to_be_bytes());
    buf[4..8].copy_from_slice(&0u32.to_be_bytes());
    buf[8..12].copy_from_slice(&body.to_be_bytes());
    Ok(&buf[..HEADER + len])
}

/// Reads one reply frame, which must answer the request of `code`, into
/// `buf`; returns the body's length.
fn read_reply<S: Read>(
    stream: &mut S,
    code: u32,
    buf: &mut [u8],
) -> core::result::Result<usize, TransportError> {
    let mut header = [0u8; HEADER];
    read_exact(stream, &mut header)?;
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (rcode, options, body) = (word(0), word(4) as usize, word(8) as usize);
    if rcode != code || options > MAX_OPTIONS || body > buf.len() {
        return Err(TransportError::Protocol);
    }
    let mut skip = [0u8; MAX_OPTIONS];
    read_exact(stream, &mut skip[..options])?;
    read_exact(stream, &mut buf[..body])?;
    Ok(body)
}

/// Decodes a reply body. An error frame becomes its CK_RV; `None` is
/// anything that is not the protocol.
fn decode_call<T>(
    body: &[u8],
    id: u32,
    reply: &str,
    decode: impl FnOnce(&mut Reader<'_>) -> Option<T>,
) -> Option<Result<T>> {
    let mut r = Reader::new(body);
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
}

/// A connection being set up: one call at a time on one stream and one
/// buffer. Any error ends the setting up, and the stream with it.
pub(super) struct Setup<'a, S> {
    pub(super) stream: S,
    buf: &'a mut [u8],
    pub(super) version: Version,
    /// The connection's last call code, which goes on across connections
    /// (a setting up that fails included): a code is never reused.
    code: &'a mut u32,
}

impl<'a, S: Read + Write> Setup<'a, S> {
    pub(super) fn new(stream: S, buf: &'a mut [u8], version: Version, code: &'a mut u32) -> Self {
        Setup {
            stream,
            buf,
            version,
            code,
        }
    }

    /// One call, as [`Link::call`] makes it.
    pub(super) fn call<T>(
        &mut self,
        id: u32,
        request: &str,
        reply: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
        decode: impl FnOnce(&mut Reader<'_>) -> Option<T>,
    ) -> Result<T> {
        let len = encode_call(self.buf, id, request, self.version, encode)?;
        *self.code = next_code(*self.code);
        let code = *self.code;
        let request = frame(self.buf, code, len)?;
        send(&mut self.stream, request).map_err(Error::Transport)?;
        let n = read_reply(&mut self.stream, code, self.buf).map_err(Error::Transport)?;
        decode_call(&self.buf[..n], id, reply, decode)
            .unwrap_or(Err(Error::Transport(TransportError::Protocol)))
    }
}

/// The write side: the writing stream (the only stream when calls go one
/// at a time) and the last call code.
struct Tx<S> {
    stream: Option<S>,
    code: u32,
    /// Whether the read side holds a reading handle: calls may overlap.
    piped: bool,
}

/// The write side, held from a request to its reply's decoding when calls
/// go one at a time.
type Held<'a, L, S> = Guard<'a, L, Tx<S>>;

/// One connection and its buffers (see the module documentation).
pub(super) struct Link<S, L: RawLock, B> {
    tx: Mutex<L, Tx<S>>,
    /// The read side: the reading handle, when the stream is split.
    rx: Mutex<L, Option<S>>,
    bufs: heapless::Vec<Mutex<L, B>, MAX_IN_FLIGHT>,
    /// Which buffer the next call takes.
    turn: AtomicUsize,
    /// The smallest buffer's length: what every call may use.
    capacity: usize,
    /// The generation of the current connection (0: none yet). Changed
    /// only by a reconnect, which holds both sides: a call that holds
    /// either side sees it stay.
    generation: AtomicU32,
    /// The latest generation known broken.
    dead: AtomicU32,
    version: AtomicU8,
}

impl<S: Read + Write, L: RawLock, B: core::ops::DerefMut<Target = [u8]>> Link<S, L, B> {
    /// No connection yet ([`Self::reconnect`] makes one). `locks` makes
    /// each lock (none made: `CKR_CANT_LOCK`); up to [`MAX_IN_FLIGHT`] of
    /// `bufs` are taken (none given: `CKR_HOST_MEMORY`).
    pub(super) fn new(
        mut locks: impl FnMut() -> Option<L>,
        bufs: impl IntoIterator<Item = B>,
    ) -> Result<Self> {
        let mut lock = || locks().ok_or(Error::Rv(Rv::CANT_LOCK));
        let mut held = heapless::Vec::new();
        for buf in bufs.into_iter().take(MAX_IN_FLIGHT) {
            let _ = held.push(Mutex::new(lock()?, buf));
        }
        let capacity = held.iter_mut().map(|b| b.get_mut().len()).min();
        let capacity = capacity.ok_or(Error::Rv(Rv::HOST_MEMORY))?;
        let tx = Tx {
            stream: None,
            code: 0,
            piped: false,
        };
        Ok(Link {
            tx: Mutex::new(lock()?, tx),
            rx: Mutex::new(lock()?, None),
            bufs: held,
            turn: AtomicUsize::new(0),
            capacity,
            generation: AtomicU32::new(0),
            dead: AtomicU32::new(0),
            version: AtomicU8::new(0),
        })
    }

    /// The protocol version of the current connection.
    pub(super) fn version(&self) -> Version {
        match self.version.load(Ordering::Acquire) {
            2 => Version::V2,
            1 => Version::V1,
            _ => Version::V0,
        }
    }

    /// The length of every call's buffer.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    fn is_dead(&self, generation: u32) -> bool {
        self.dead.load(Ordering::Acquire) >= generation
    }

    fn kill(&self, generation: u32, e: TransportError) -> Error {
        self.dead.fetch_max(generation, Ordering::AcqRel);
        Error::Transport(e)
    }

    /// Breaks the current connection (a reply that was framed well but
    /// said something impossible).
    pub(super) fn broken(&self, e: TransportError) -> Error {
        self.kill(self.generation.load(Ordering::Acquire), e)
    }

    /// Drops the current connection and sets up a new one: `open` connects
    /// and sets it up over one buffer, as a [`Setup`]; then `split` may
    /// give a writing handle. Every call in flight on the old connection
    /// fails; calls wait while this runs.
    pub(super) fn reconnect<T>(
        &self,
        open: impl for<'a> FnOnce(&'a mut [u8], &'a mut u32) -> Result<(Setup<'a, S>, T)>,
        split: impl FnOnce(&mut S) -> Option<S>,
    ) -> Result<T> {
        let mut buf = self.bufs[0].lock();
        let mut tx = self.tx.lock();
        let mut rx = self.rx.lock();
        // The old connection is gone whatever happens next.
        let old = self.generation.load(Ordering::Acquire);
        self.kill(old, TransportError::Disconnected);
        tx.stream = None;
        *rx = None;
        tx.piped = false;
        let generation = old.wrapping_add(1).max(1);
        self.generation.store(generation, Ordering::Release);
        let tx = &mut *tx;
        let (setup, found) = match open(&mut buf, &mut tx.code) {
            Ok(opened) => opened,
            Err(e) => {
                // No connection: calls fail at once, as on a broken one.
                self.kill(generation, TransportError::Disconnected);
                return Err(e);
            }
        };
        let Setup {
            mut stream,
            version,
            ..
        } = setup;
        self.version.store(
            match version {
                Version::V0 => 0,
                Version::V1 => 1,
                Version::V2 => 2,
            },
            Ordering::Release,
        );
        let writer = if self.bufs.len() > 1 {
            split(&mut stream)
        } else {
            None
        };
        match writer {
            Some(writer) => {
                tx.stream = Some(writer);
                *rx = Some(stream);
                tx.piped = true;
            }
            None => tx.stream = Some(stream),
        }
        Ok(found)
    }

    /// One call: `encode` writes the request's values after the call id
    /// and signature; `decode` reads the reply's values. An error frame
    /// becomes its CK_RV; anything that is not the protocol breaks the
    /// connection. `secret`: the request carries a PIN, and the buffer is
    /// zeroised after the call, so that the PIN does not stay in memory
    /// until later requests happen to overwrite it.
    pub(super) fn call<T>(
        &self,
        id: u32,
        request: &str,
        reply: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
        decode: impl FnOnce(&mut Reader<'_>) -> Option<T>,
        secret: bool,
    ) -> Result<T> {
        let i = match self.bufs.len() {
            1 => 0,
            n => self.turn.fetch_add(1, Ordering::Relaxed) % n,
        };
        let mut buf = self.bufs[i].lock();
        let r = self.call_in(&mut buf, id, request, reply, encode, decode);
        if secret {
            p11ha_core::secret::zeroise(&mut buf);
        }
        r
    }

    fn call_in<T>(
        &self,
        buf: &mut [u8],
        id: u32,
        request: &str,
        reply: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
        decode: impl FnOnce(&mut Reader<'_>) -> Option<T>,
    ) -> Result<T> {
        let buf = &mut buf[..self.capacity];
        let generation = self.generation.load(Ordering::Acquire);
        if self.is_dead(generation) {
            return Err(Error::Transport(TransportError::Disconnected));
        }
        // Encoded before the write side is taken, so that a long request
        // is copied while other calls write theirs.
        let len = encode_call(buf, id, request, self.version(), encode)?;
        let (n, _held) = self.exchange(buf, generation, len)?;
        match decode_call(&buf[..n], id, reply, decode) {
            Some(result) => result,
            None => Err(self.kill(generation, TransportError::Protocol)),
        }
    }

    /// Sends the request of `len` body bytes encoded at `buf[HEADER..]` on
    /// the connection of `generation`, and reads its reply into `buf`.
    /// Returns the reply's length, and the write side when calls go one at
    /// a time (held until the reply is decoded). Apart from the calls, so
    /// that its code is there once, not once per call.
    fn exchange(
        &self,
        buf: &mut [u8],
        generation: u32,
        len: usize,
    ) -> Result<(usize, Option<Held<'_, L, S>>)> {
        let mut tx_guard = self.tx.lock();
        let tx = &mut *tx_guard;
        // A reconnect since the encoding: the request was for a
        // connection that is gone (its session handles with it).
        if self.generation.load(Ordering::Acquire) != generation {
            return Err(Error::Transport(TransportError::Disconnected));
        }
        if self.is_dead(generation) {
            tx.stream = None;
        }
        tx.code = next_code(tx.code);
        let (code, piped) = (tx.code, tx.piped);
        let Some(stream) = tx.stream.as_mut() else {
            return Err(Error::Transport(TransportError::Disconnected));
        };
        let request = frame(buf, code, len)?;
        if let Err(e) = send(stream, request) {
            tx.stream = None;
            return Err(self.kill(generation, e));
        }
        if piped {
            // Taken before the write side is let go: still `generation`.
            let mut rx = self.rx.lock();
            drop(tx_guard);
            if self.is_dead(generation) {
                *rx = None;
            }
            let Some(stream) = rx.as_mut() else {
                return Err(Error::Transport(TransportError::Disconnected));
            };
            // The reply's deadline starts now: the replies before it are
            // read.
            let read = stream
                .flush()
                .map_err(transport)
                .and_then(|()| read_reply(stream, code, buf));
            match read {
                Ok(n) => Ok((n, None)),
                Err(e) => {
                    *rx = None;
                    Err(self.kill(generation, e))
                }
            }
        } else {
            match read_reply(stream, code, buf) {
                // The write side is held until the reply is decoded: one
                // call at a time.
                Ok(n) => Ok((n, Some(tx_guard))),
                Err(e) => {
                    tx.stream = None;
                    Err(self.kill(generation, e))
                }
            }
        }
    }
}

impl<S: Write, L: RawLock, B> Link<S, L, B> {
    /// C_Finalize, then close: the server's way to end cleanly. The answer
    /// is not waited for; a broken connection gets nothing.
    pub(super) fn finalize(&mut self) {
        let alive = *self.dead.get_mut() < *self.generation.get_mut();
        let tx = self.tx.get_mut();
        if let Some(mut stream) = tx.stream.take().filter(|_| alive) {
            let mut frame = [0u8; HEADER + 4 + 4];
            frame[3] = 0x7f;
            frame[11] = 8;
            frame[15] = 2;
            let _ = write_all(&mut stream, &frame);
        }
        *self.rx.get_mut() = None;
    }
}

/// Sends a request frame: its header, then the rest, in two writes, as
/// p11-kit's own client does (it writes header, options and body apart).
/// Measured on this project's 2-core VM against p11-kit server 0.24.1, one
/// thread making `C_GetSessionInfo` calls (12 runs of 10,000 calls taking
/// turns, medians): 59.4 us a round trip with the frame in one write, 47.9
/// us in two, 47.6 us through p11-kit-client.so; with the client and the
/// server's process pinned to one CPU, about 20 us either way. Why the
/// server answers sooner is not known; the second write costs about a
/// microsecond where it does not help.
fn send<S: Write>(s: &mut S, frame: &[u8]) -> core::result::Result<(), TransportError> {
    let (header, body) = frame.split_at(HEADER.min(frame.len()));
    write_out(s, header)?;
    write_out(s, body)?;
    s.flush().map_err(transport)
}

pub(super) fn write_all<S: Write>(s: &mut S, b: &[u8]) -> core::result::Result<(), TransportError> {
    write_out(s, b)?;
    s.flush().map_err(transport)
}

/// Writes all of `b`, without flushing.
fn write_out<S: Write>(s: &mut S, mut b: &[u8]) -> core::result::Result<(), TransportError> {
    while !b.is_empty() {
        match s.write(b) {
            Ok(0) => return Err(TransportError::Disconnected),
            Ok(n) => b = &b[n.min(b.len())..],
            Err(e) => return Err(transport(e)),
        }
    }
    Ok(())
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
