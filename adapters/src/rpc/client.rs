//! A connection to a `p11-kit server` (or `p11-kit remote`) and the member
//! it serves: one slot of the server, behind one connection of its own.
//!
//! Each connection is its own PKCS#11 application on the server (its
//! sessions, login, session objects and object handles die with it), so a
//! member that reconnects is, to the engine, a member that failed and came
//! back: the engine rebuilds everything (PKCS11-RPC.md, section 9).
//!
//! One request is outstanding per connection. A transport error, a deadline
//! passed (the stream's business: its read returns `TimedOut`) or a reply
//! that is not the protocol breaks the connection for good: a late or
//! misread reply can never be taken for the answer to a later request.

use core::sync::atomic::{AtomicU32, Ordering};

use embedded_io::{ErrorKind, Read, Write};
use p11ha_core::ck::{Rv, UNAVAILABLE};
use p11ha_core::error::TransportError;
use p11ha_core::port::{
    Attr, AttrOut, DualOp, Mechanism, MechanismInfo, Member, Op, RawLock, SessionInfo, SlotInfo,
    TokenInfo,
};
use p11ha_core::sync::Mutex;
use p11ha_core::{Error, Result};

use super::codec::{
    AttrClass, HANDSHAKE, NATIVE, Reader, Version, Writer, attr_class, put_mechanism,
    put_native_ulong, put_template,
};
use super::lengths::{Lengths, Phase};

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
const HEADER: usize = 12;

/// One connection and its buffer.
struct Conn<S, B> {
    stream: Option<S>,
    buf: B,
    version: Version,
    code: u32,
    /// What the connection knows to answer length queries itself.
    lengths: Lengths,
}

impl<S: Read + Write, B: core::ops::DerefMut<Target = [u8]>> Conn<S, B> {
    fn broken(&mut self, e: TransportError) -> Error {
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
    fn call<T>(
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

fn write_all<S: Write>(s: &mut S, mut b: &[u8]) -> core::result::Result<(), TransportError> {
    while !b.is_empty() {
        match s.write(b) {
            Ok(0) => return Err(TransportError::Disconnected),
            Ok(n) => b = &b[n.min(b.len())..],
            Err(e) => return Err(transport(e)),
        }
    }
    s.flush().map_err(transport)
}

fn read_exact<S: Read>(s: &mut S, mut b: &mut [u8]) -> core::result::Result<(), TransportError> {
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

/// The request-body room left for data after the fixed part of a call.
const OVERHEAD: usize = 64;

/// One slot of a remote server, reached over its own connection.
pub struct RpcMember<C: Connector, L: RawLock, B> {
    connector: C,
    conn: Mutex<L, Conn<C::Stream, B>>,
    /// The slot's id on the server (it renumbers slots: 0x11, 0x12, ...).
    slot: AtomicU32,
    /// Which of the server's slots with a token this member is, and that
    /// token's label and serial, to find it again after a reconnect.
    index: usize,
    label: [u8; 32],
    serial: [u8; 16],
}

/// What a server shows when p11ha connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// The slot id on the server.
    pub slot: u64,
    /// The token's label.
    pub label: [u8; 32],
    /// The token's serial number.
    pub serial: [u8; 16],
}

impl<C, L, B> RpcMember<C, L, B>
where
    C: Connector,
    L: RawLock,
    B: core::ops::DerefMut<Target = [u8]> + Send + Sync,
    C::Stream: Send,
{
    /// Connects (`connector`), negotiates the protocol version, initialises
    /// the server and takes the `index`th slot with a token as this member.
    /// `buf` is the connection's buffer: every request and reply must fit it
    /// (a larger request answers `CKR_HOST_MEMORY`). The second value says
    /// how many slots with a token the server has.
    pub fn connect(connector: C, lock: L, buf: B, index: usize) -> Result<(Self, usize)> {
        let mut conn = Conn {
            stream: None,
            buf,
            version: Version::V0,
            code: 0x10,
            lengths: Lengths::default(),
        };
        let tokens = open(&connector, &mut conn)?;
        let n = tokens.len();
        let token = *tokens.get(index).ok_or(Error::Rv(Rv::SLOT_ID_INVALID))?;
        Ok((
            RpcMember {
                connector,
                conn: Mutex::new(lock, conn),
                slot: AtomicU32::new(slot32(token.slot)?),
                index,
                label: token.label,
                serial: token.serial,
            },
            n,
        ))
    }

    /// The protocol version the server speaks.
    pub fn version(&self) -> Version {
        self.conn.lock().version
    }

    fn slot(&self) -> u64 {
        u64::from(self.slot.load(Ordering::Acquire))
    }

    fn call<T>(
        &self,
        id: u32,
        request: &str,
        reply: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
        decode: impl FnOnce(&mut Reader<'_>) -> Option<T>,
    ) -> Result<T> {
        self.conn.lock().call(id, request, reply, encode, decode)
    }

    /// A call whose request carries a PIN: the connection's buffer is
    /// zeroised after it, so that the PIN does not stay in memory until
    /// later requests happen to overwrite it.
    fn call_secret(
        &self,
        id: u32,
        request: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
    ) -> Result<()> {
        let mut conn = self.conn.lock();
        let r = conn.call(id, request, "", encode, |_| Some(()));
        p11ha_core::secret::zeroise(&mut conn.buf);
        r
    }

    /// A call that takes a session and returns nothing.
    fn simple(&self, id: u32, session: u64) -> Result<()> {
        self.call(id, "u", "", |w, _| put(w.ulong(session)), |_| Some(()))
    }

    /// A call with `ay` data and a `fy` output buffer, returning `ay`.
    fn data_out(
        &self,
        id: u32,
        session: u64,
        input: Option<&[u8]>,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let sig = if input.is_some() { "uayfy" } else { "ufy" };
        let mut guard = self.conn.lock();
        let room = guard.buf.len().saturating_sub(HEADER + OVERHEAD);
        let capacity = capacity(out.as_deref(), guard.version, room)?;
        guard.call(
            id,
            sig,
            "ay",
            |w, _| {
                put(w.ulong(session))?;
                if let Some(input) = input {
                    put(w.input(input))?;
                }
                put(w.u32(capacity))
            },
            |r| output(r, out, capacity),
        )?
    }

    /// A call with `ay` data and no output.
    fn data_in(&self, id: u32, session: u64, data: &[u8]) -> Result<()> {
        self.call(
            id,
            "uay",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.input(data))
            },
            |_| Some(()),
        )
    }

    /// `C_*Init` with a mechanism and a key.
    fn init(&self, id: u32, session: u64, m: &Mechanism<'_>, key: Option<u64>) -> Result<()> {
        let sig = if key.is_some() { "uMu" } else { "uM" };
        self.call(
            id,
            sig,
            "",
            |w, v| {
                put(w.ulong(session))?;
                put_mechanism(w, m, v)?;
                match key {
                    Some(k) => put(w.ulong(k)),
                    None => Ok(()),
                }
            },
            |_| Some(()),
        )
    }

    /// A length query answered without a round trip, if the connection is
    /// sure of the answer (see [`super::lengths`]).
    fn known_length(&self, session: u64, op: Op, phase: Phase, input: usize) -> Option<usize> {
        self.conn.lock().lengths.answer(session, op, phase, input)
    }

    /// A Single or Final call: a length query answered here if it can be,
    /// else the call, whose result is then noted ([`Self::settle`]).
    fn ending(
        &self,
        id: u32,
        session: u64,
        op: Op,
        phase: Phase,
        input: Option<&[u8]>,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let had_out = out.is_some();
        let len = input.map_or(0, <[u8]>::len);
        if !had_out && let Some(n) = self.known_length(session, op, phase, len) {
            return Ok(n);
        }
        let r = self.data_out(id, session, input, out);
        self.settle(session, op, had_out, &r);
        r
    }

    /// Notes what a Single or Final call's result says of its operation:
    /// a result with output ends it, so does any error but a buffer too
    /// small; lengths the server gave are learned.
    fn settle(&self, session: u64, op: Op, had_out: bool, r: &Result<usize>) {
        let lengths = &mut self.conn.lock().lengths;
        match *r {
            Ok(n) => {
                lengths.learned(session, op, n);
                if had_out {
                    lengths.end(session, op);
                }
            }
            Err(Error::BufferTooSmall { needed }) => lengths.learned(session, op, needed),
            Err(_) => lengths.end(session, op),
        }
    }

    /// An Update (or another call inside an operation) failed: the
    /// operation may have ended.
    fn unsure<T>(&self, session: u64, op: Op, r: &Result<T>) {
        if matches!(r, Err(e) if !matches!(e, Error::BufferTooSmall { .. })) {
            self.conn.lock().lengths.end(session, op);
        }
    }

    /// A call returning one handle, after a session, a mechanism and/or a
    /// template.
    fn make(
        &self,
        id: u32,
        sig: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
    ) -> Result<u64> {
        self.call(id, sig, "u", encode, |r| r.ulong())
    }
}

/// A server's slot id as the member keeps it. p11-kit numbers slots from
/// 0x11; an id past 32 bits (which a 32-bit CK_ULONG could not hold
/// either) is refused as not the protocol.
fn slot32(slot: u64) -> Result<u32> {
    u32::try_from(slot).map_err(|_| Error::Transport(TransportError::Protocol))
}

/// A writer's `None` (the buffer is full) as a CK_RV.
fn put(r: Option<()>) -> Result<()> {
    r.ok_or(Error::Rv(Rv::HOST_MEMORY))
}

/// The capacity to announce for an output buffer: 0 asks for the length
/// (a NULL buffer); a buffer of length 0 is not NULL, which 0.24.1 cannot
/// say, so it is announced as 1 (0.25 and later have `0xffffffff` for it).
/// A capacity is never more than a reply can carry.
fn capacity(out: Option<&[u8]>, version: Version, room: usize) -> Result<u32> {
    Ok(match out {
        None => 0,
        Some([]) if version == Version::V0 => 1,
        Some([]) => 0xffff_ffff,
        Some(b) => u32::try_from(b.len().min(room)).map_err(|_| Error::Rv(Rv::HOST_MEMORY))?,
    })
}

/// Reads an `ay` reply into `out`: data, or the needed length (the answer
/// to a length query, or CKR_BUFFER_TOO_SMALL when a buffer was sent).
fn output(r: &mut Reader<'_>, out: Option<&mut [u8]>, capacity: u32) -> Option<Result<usize>> {
    match r.byte()? {
        1 => {
            let data = r.bytes()??;
            match out {
                Some(out) if data.len() <= out.len() => {
                    out[..data.len()].copy_from_slice(data);
                    Some(Ok(data.len()))
                }
                // More than the application's buffer (only possible for a
                // buffer of length 0, announced as 1).
                Some(_) => Some(Err(Error::BufferTooSmall { needed: data.len() })),
                None => None,
            }
        }
        0 => {
            let needed = r.u32()? as usize;
            Some(if capacity == 0 {
                Ok(needed)
            } else if out.is_none_or(|o| needed > o.len()) {
                Err(Error::BufferTooSmall { needed })
            } else if needed > capacity as usize {
                // The application's buffer is large enough but the
                // member's is not: retrying cannot help.
                Err(Error::Rv(Rv::HOST_MEMORY))
            } else {
                // The server said too small for a buffer that was not.
                return None;
            })
        }
        _ => None,
    }
}

/// Reads an `au` reply into `out` (or the count, for a length query).
/// `out` is what was announced; `full` the length of the caller's array,
/// which may be longer.
fn ulong_list(r: &mut Reader<'_>, out: Option<&mut [u64]>, full: usize) -> Option<Result<usize>> {
    match r.byte()? {
        1 => {
            let n = r.u32()? as usize;
            let out = out?;
            if n > out.len() {
                return None;
            }
            for o in out[..n].iter_mut() {
                *o = r.ulong()?;
            }
            Some(Ok(n))
        }
        0 => {
            let n = r.u32()? as usize;
            Some(match out {
                None => Ok(n),
                // An empty array is announced as a length query.
                Some([]) if n == 0 => Ok(0),
                Some(_) if n > full => Err(Error::BufferTooSmall { needed: n }),
                // Fits the caller's array, not what could be announced.
                Some(o) if n > o.len() => Err(Error::Rv(Rv::HOST_MEMORY)),
                // "Too small" for an array that was not.
                Some(_) => return None,
            })
        }
        _ => None,
    }
}

/// Connects, negotiates, initialises, and lists the slots with a token.
fn open<C: Connector, B: core::ops::DerefMut<Target = [u8]>>(
    connector: &C,
    conn: &mut Conn<C::Stream, B>,
) -> Result<heapless::Vec<Token, 8>> {
    // Offer version 2; a server before 0.24.1 hangs up on anything but 0,
    // and then gets a second connection that offers 0.
    let mut version = None;
    for offer in [2u8, 0u8] {
        let mut stream = connector.connect().map_err(Error::Transport)?;
        let mut answer = [0u8; 1];
        let exchanged =
            write_all(&mut stream, &[offer]).and_then(|()| read_exact(&mut stream, &mut answer));
        match exchanged {
            Ok(()) => {
                // A server answers the lower of the offer and its own
                // version: anything above the offer is not the protocol.
                version = Some(match answer[0] {
                    0 => Version::V0,
                    1 if offer >= 1 => Version::V1,
                    2 if offer >= 2 => Version::V2,
                    _ => return Err(Error::Transport(TransportError::Protocol)),
                });
                conn.stream = Some(stream);
                break;
            }
            Err(TransportError::Disconnected) if offer == 2 => continue,
            Err(e) => return Err(Error::Transport(e)),
        }
    }
    conn.version = version.ok_or(Error::Transport(TransportError::Protocol))?;
    conn.lengths.clear();
    conn.call(
        1,
        "ayyay",
        "",
        |w, _| {
            put(w.input(HANDSHAKE))?;
            put(w.byte(0))?;
            put(w.input(&[0]))
        },
        |_| Some(()),
    )?;
    let mut slots = [0u64; 8];
    let capacity = slots.len() as u32;
    let n = conn.call(
        4,
        "yfu",
        "au",
        |w, _| {
            put(w.byte(1))?;
            put(w.u32(capacity))
        },
        |r| ulong_list(r, Some(&mut slots), capacity as usize),
    )??;
    let mut tokens = heapless::Vec::new();
    for &slot in &slots[..n] {
        let info = token_info_on(conn, slot)?;
        let _ = tokens.push(Token {
            slot,
            label: info.label,
            serial: info.serial,
        });
    }
    if let Some(stream) = conn.stream.as_mut() {
        connector.established(stream);
    }
    Ok(tokens)
}

fn token_info_on<S: Read + Write, B: core::ops::DerefMut<Target = [u8]>>(
    conn: &mut Conn<S, B>,
    slot: u64,
) -> Result<TokenInfo> {
    conn.call(
        6,
        "u",
        "ssssuuuuuuuuuuuvvs",
        |w, _| put(w.ulong(slot)),
        |r| {
            Some(TokenInfo {
                label: r.fixed()?,
                manufacturer: r.fixed()?,
                model: r.fixed()?,
                serial: r.fixed()?,
                flags: r.ulong()?,
                max_session_count: r.ulong()?,
                session_count: r.ulong()?,
                max_rw_session_count: r.ulong()?,
                rw_session_count: r.ulong()?,
                max_pin_len: r.ulong()?,
                min_pin_len: r.ulong()?,
                total_public_memory: r.ulong()?,
                free_public_memory: r.ulong()?,
                total_private_memory: r.ulong()?,
                free_private_memory: r.ulong()?,
                hardware_version: r.version()?,
                firmware_version: r.version()?,
                utc_time: r.fixed()?,
            })
        },
    )
}

/// The most attributes of one `C_GetAttributeValue` p11ha sends.
const MAX_GET: usize = 64;
/// The capacity asked for `CKA_ALLOWED_MECHANISMS` when the application
/// asks for its length (0.24.1 answers a length query of it wrongly).
const MECHANISMS_PROBE: u32 = 8 * 64;

impl<C, L, B> Member for RpcMember<C, L, B>
where
    C: Connector + 'static,
    L: RawLock + 'static,
    B: core::ops::DerefMut<Target = [u8]> + Send + Sync + 'static,
    C::Stream: Send + 'static,
{
    fn slot_id(&self) -> u64 {
        self.slot()
    }

    fn slot_info(&self) -> Result<SlotInfo> {
        let slot = self.slot();
        self.call(
            5,
            "u",
            "ssuvv",
            |w, _| put(w.ulong(slot)),
            |r| {
                Some(SlotInfo {
                    description: r.fixed()?,
                    manufacturer: r.fixed()?,
                    flags: r.ulong()?,
                    hardware_version: r.version()?,
                    firmware_version: r.version()?,
                })
            },
        )
    }

    fn token_info(&self) -> Result<TokenInfo> {
        let slot = self.slot();
        token_info_on(&mut self.conn.lock(), slot)
    }

    fn mechanism_list(&self, out: Option<&mut [u64]>) -> Result<usize> {
        let slot = self.slot();
        let full = out.as_deref().map_or(0, <[u64]>::len);
        let cap = full.min(1024);
        let out = out.map(|o| &mut o[..cap]);
        let cap = cap as u32;
        self.call(
            7,
            "ufu",
            "au",
            |w, _| {
                put(w.ulong(slot))?;
                put(w.u32(cap))
            },
            |r| ulong_list(r, out, full),
        )?
    }

    fn mechanism_info(&self, mechanism: u64) -> Result<MechanismInfo> {
        let slot = self.slot();
        self.call(
            8,
            "uu",
            "uuu",
            |w, _| {
                put(w.ulong(slot))?;
                put(w.ulong(mechanism))
            },
            |r| {
                Some(MechanismInfo {
                    min_key_size: r.ulong()?,
                    max_key_size: r.ulong()?,
                    flags: r.ulong()?,
                })
            },
        )
    }

    fn init_token(&self, so_pin: Option<&[u8]>, label: &[u8; 32]) -> Result<()> {
        let slot = self.slot();
        // A NULL PIN (protected path) cannot travel before the label on
        // 0.24.1 (PKCS11-RPC.md, section 5).
        let pin = so_pin.ok_or(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))?;
        self.conn.lock().lengths.clear();
        self.call_secret(9, "uayz", |w, _| {
            put(w.ulong(slot))?;
            put(w.input(pin))?;
            put(w.bytes(label))
        })
    }

    fn open_session(&self, flags: u64) -> Result<u64> {
        let slot = self.slot();
        self.make(10, "uu", |w, _| {
            put(w.ulong(slot))?;
            put(w.ulong(flags))
        })
    }

    fn close_session(&self, session: u64) -> Result<()> {
        let r = self.simple(11, session);
        self.conn.lock().lengths.session_closed(session);
        r
    }

    fn close_all_sessions(&self) -> Result<()> {
        let r = self.simple(12, self.slot());
        self.conn.lock().lengths.clear();
        r
    }

    fn session_info(&self, session: u64) -> Result<SessionInfo> {
        self.call(
            13,
            "u",
            "uuuu",
            |w, _| put(w.ulong(session)),
            |r| {
                Some(SessionInfo {
                    slot: r.ulong()?,
                    state: r.ulong()?,
                    flags: r.ulong()?,
                    device_error: r.ulong()?,
                })
            },
        )
    }

    fn init_pin(&self, session: u64, pin: Option<&[u8]>) -> Result<()> {
        self.call_secret(14, "uay", |w, _| {
            put(w.ulong(session))?;
            // Last value: a NULL PIN may travel as flag 0.
            match pin {
                Some(p) => put(w.input(p)),
                None => put(w.byte(0).and_then(|()| w.u32(0))),
            }
        })
    }

    fn set_pin(&self, session: u64, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()> {
        let (old, new) = match (old, new) {
            (Some(o), Some(n)) => (o, n),
            _ => return Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED)),
        };
        self.call_secret(15, "uayay", |w, _| {
            put(w.ulong(session))?;
            put(w.input(old))?;
            put(w.input(new))
        })
    }

    fn operation_state(&self, session: u64, out: Option<&mut [u8]>) -> Result<usize> {
        self.data_out(16, session, None, out)
    }

    fn set_operation_state(
        &self,
        session: u64,
        state: &[u8],
        encryption_key: u64,
        authentication_key: u64,
    ) -> Result<()> {
        // Whatever operations the session had are replaced.
        self.conn.lock().lengths.forget(session);
        self.call(
            17,
            "uayuu",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.input(state))?;
                put(w.ulong(encryption_key))?;
                put(w.ulong(authentication_key))
            },
            |_| Some(()),
        )
    }

    fn login(&self, session: u64, user: u64, pin: Option<&[u8]>) -> Result<()> {
        self.call_secret(18, "uuay", |w, _| {
            put(w.ulong(session))?;
            put(w.ulong(user))?;
            match pin {
                Some(p) => put(w.input(p)),
                None => put(w.byte(0).and_then(|()| w.u32(0))),
            }
        })
    }

    fn logout(&self, session: u64) -> Result<()> {
        let r = self.simple(19, session);
        self.conn.lock().lengths.objects_changed();
        r
    }

    fn create_object(&self, session: u64, template: &[Attr<'_>]) -> Result<u64> {
        self.make(20, "uaA", |w, _| {
            put(w.ulong(session))?;
            put_template(w, template)
        })
    }

    fn copy_object(&self, session: u64, object: u64, template: &[Attr<'_>]) -> Result<u64> {
        self.make(21, "uuaA", |w, _| {
            put(w.ulong(session))?;
            put(w.ulong(object))?;
            put_template(w, template)
        })
    }

    fn destroy_object(&self, session: u64, object: u64) -> Result<()> {
        let r = self.call(
            22,
            "uu",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.ulong(object))
            },
            |_| Some(()),
        );
        self.conn.lock().lengths.objects_changed();
        r
    }

    fn object_size(&self, session: u64, object: u64) -> Result<u64> {
        self.make(23, "uu", |w, _| {
            put(w.ulong(session))?;
            put(w.ulong(object))
        })
    }

    fn get_attributes(&self, session: u64, object: u64, t: &mut [AttrOut<'_>]) -> Result<()> {
        if t.len() > MAX_GET {
            return Err(Error::Rv(Rv::HOST_MEMORY));
        }
        // Nested templates cannot travel: they are answered here, as a
        // token that does not know the type would.
        let mut refused = false;
        for a in t.iter_mut() {
            if attr_class(a.ty) == AttrClass::Template {
                a.len = None;
                refused = true;
            }
        }
        let mut ask = [(0u32, 0u32); MAX_GET];
        let mut sent = 0;
        for a in t.iter().filter(|a| attr_class(a.ty) != AttrClass::Template) {
            let ty = u32::try_from(a.ty).map_err(|_| Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID))?;
            ask[sent] = (ty, request_capacity(a));
            sent += 1;
        }
        let rv = self.call(
            24,
            "uufA",
            "aAu",
            |w, _| {
                put(w.ulong(session))?;
                put(w.ulong(object))?;
                put(w.u32(sent as u32))?;
                for &(ty, capacity) in &ask[..sent] {
                    put(w.u32(ty))?;
                    put(w.u32(capacity))?;
                }
                Ok(())
            },
            |r| read_attributes(r, t),
        )??;
        match rv {
            Rv::OK if refused => Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID)),
            Rv::OK => Ok(()),
            rv => Err(Error::Rv(rv)),
        }
    }

    fn set_attributes(&self, session: u64, object: u64, template: &[Attr<'_>]) -> Result<()> {
        self.call(
            25,
            "uuaA",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.ulong(object))?;
                put_template(w, template)
            },
            |_| Some(()),
        )
    }

    fn find_init(&self, session: u64, template: &[Attr<'_>]) -> Result<()> {
        self.call(
            26,
            "uaA",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put_template(w, template)
            },
            |_| Some(()),
        )
    }

    fn find(&self, session: u64, out: &mut [u64]) -> Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // SoftHSM refuses a NULL array; a capacity of 0 would be one.
        let full = out.len();
        let cap = full.min(1024) as u32;
        let out = &mut out[..cap as usize];
        self.call(
            27,
            "ufu",
            "au",
            |w, _| {
                put(w.ulong(session))?;
                put(w.u32(cap))
            },
            |r| ulong_list(r, Some(out), full),
        )?
    }

    fn find_final(&self, session: u64) -> Result<()> {
        self.simple(28, session)
    }

    fn op_init(&self, session: u64, op: Op, mechanism: &Mechanism<'_>, key: u64) -> Result<()> {
        let (id, key) = match op {
            Op::Encrypt => (29, Some(key)),
            Op::Decrypt => (33, Some(key)),
            Op::Digest => (37, None),
            Op::Sign => (42, Some(key)),
            Op::SignRecover => (46, Some(key)),
            Op::Verify => (48, Some(key)),
            Op::VerifyRecover => (52, Some(key)),
        };
        self.init(id, session, mechanism, key)?;
        self.conn
            .lock()
            .lengths
            .begin(session, op, mechanism.ty, key.unwrap_or(0));
        Ok(())
    }

    fn op_single(
        &self,
        session: u64,
        op: Op,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let id = match op {
            Op::Encrypt => 30,
            Op::Decrypt => 34,
            Op::Digest => 38,
            Op::Sign => 43,
            Op::SignRecover => 47,
            Op::VerifyRecover => 53,
            Op::Verify => return Err(Error::Rv(Rv::FUNCTION_FAILED)),
        };
        self.ending(id, session, op, Phase::Single, Some(input), out)
    }

    fn op_update(
        &self,
        session: u64,
        op: Op,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        if out.is_none()
            && matches!(op, Op::Encrypt | Op::Decrypt)
            && let Some(n) = self.known_length(session, op, Phase::Update, input.len())
        {
            return Ok(n);
        }
        let r = match op {
            Op::Encrypt => self.data_out(31, session, Some(input), out),
            Op::Decrypt => self.data_out(35, session, Some(input), out),
            Op::Digest => self.data_in(39, session, input).map(|()| 0),
            Op::Sign => self.data_in(44, session, input).map(|()| 0),
            Op::Verify => self.data_in(50, session, input).map(|()| 0),
            Op::SignRecover | Op::VerifyRecover => Err(Error::Rv(Rv::FUNCTION_FAILED)),
        };
        self.unsure(session, op, &r);
        r
    }

    fn op_final(&self, session: u64, op: Op, out: Option<&mut [u8]>) -> Result<usize> {
        let id = match op {
            Op::Encrypt => 32,
            Op::Decrypt => 36,
            Op::Digest => 41,
            Op::Sign => 45,
            _ => return Err(Error::Rv(Rv::FUNCTION_FAILED)),
        };
        self.ending(id, session, op, Phase::Final, None, out)
    }

    fn verify(&self, session: u64, data: &[u8], signature: &[u8]) -> Result<()> {
        self.conn.lock().lengths.end(session, Op::Verify);
        self.call(
            49,
            "uayay",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.input(data))?;
                put(w.input(signature))
            },
            |_| Some(()),
        )
    }

    fn verify_final(&self, session: u64, signature: &[u8]) -> Result<()> {
        self.conn.lock().lengths.end(session, Op::Verify);
        self.data_in(51, session, signature)
    }

    fn digest_key(&self, session: u64, key: u64) -> Result<()> {
        let r = self.call(
            40,
            "uu",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.ulong(key))
            },
            |_| Some(()),
        );
        self.unsure(session, Op::Digest, &r);
        r
    }

    fn dual_update(
        &self,
        session: u64,
        op: DualOp,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let id = match op {
            DualOp::DigestEncrypt => 54,
            DualOp::DecryptDigest => 55,
            DualOp::SignEncrypt => 56,
            DualOp::DecryptVerify => 57,
        };
        let r = self.data_out(id, session, Some(input), out);
        if r.is_err() {
            // Which of the two operations ended is the module's business.
            self.conn.lock().lengths.forget(session);
        }
        r
    }

    fn generate_key(&self, session: u64, m: &Mechanism<'_>, template: &[Attr<'_>]) -> Result<u64> {
        self.make(58, "uMaA", |w, v| {
            put(w.ulong(session))?;
            put_mechanism(w, m, v)?;
            put_template(w, template)
        })
    }

    fn generate_key_pair(
        &self,
        session: u64,
        m: &Mechanism<'_>,
        public_template: &[Attr<'_>],
        private_template: &[Attr<'_>],
    ) -> Result<(u64, u64)> {
        self.call(
            59,
            "uMaAaA",
            "uu",
            |w, v| {
                put(w.ulong(session))?;
                put_mechanism(w, m, v)?;
                put_template(w, public_template)?;
                put_template(w, private_template)
            },
            |r| Some((r.ulong()?, r.ulong()?)),
        )
    }

    fn wrap_key(
        &self,
        session: u64,
        m: &Mechanism<'_>,
        wrapping_key: u64,
        key: u64,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let mut guard = self.conn.lock();
        let room = guard.buf.len().saturating_sub(HEADER + OVERHEAD);
        let capacity = capacity(out.as_deref(), guard.version, room)?;
        guard.call(
            60,
            "uMuufy",
            "ay",
            |w, v| {
                put(w.ulong(session))?;
                put_mechanism(w, m, v)?;
                put(w.ulong(wrapping_key))?;
                put(w.ulong(key))?;
                put(w.u32(capacity))
            },
            |r| output(r, out, capacity),
        )?
    }

    fn unwrap_key(
        &self,
        session: u64,
        m: &Mechanism<'_>,
        unwrapping_key: u64,
        wrapped: &[u8],
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.make(61, "uMuayaA", |w, v| {
            put(w.ulong(session))?;
            put_mechanism(w, m, v)?;
            put(w.ulong(unwrapping_key))?;
            put(w.input(wrapped))?;
            put_template(w, template)
        })
    }

    fn derive_key(
        &self,
        session: u64,
        m: &Mechanism<'_>,
        base_key: u64,
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.make(62, "uMuaA", |w, v| {
            put(w.ulong(session))?;
            put_mechanism(w, m, v)?;
            put(w.ulong(base_key))?;
            put_template(w, template)
        })
    }

    fn seed_random(&self, session: u64, seed: &[u8]) -> Result<()> {
        self.data_in(63, session, seed)
    }

    fn generate_random(&self, session: u64, out: &mut [u8]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        // In pieces that fit the member's buffer; each must come whole.
        let room = {
            let conn = self.conn.lock();
            conn.buf.len().saturating_sub(HEADER + OVERHEAD).max(1)
        };
        for piece in out.chunks_mut(room) {
            let want = piece.len();
            let n = self.data_out(64, session, None, Some(piece))?;
            if n != want {
                return Err(self.conn.lock().broken(TransportError::Protocol));
            }
        }
        Ok(())
    }

    fn function_status(&self, _session: u64) -> Result<()> {
        // Not carried by the protocol; what a v2.20+ module answers.
        Err(Error::Rv(Rv::FUNCTION_NOT_PARALLEL))
    }

    fn cancel_function(&self, _session: u64) -> Result<()> {
        Err(Error::Rv(Rv::FUNCTION_NOT_PARALLEL))
    }

    /// A new connection: version, `C_Initialize`, and the same token found
    /// again (by serial, else by label and position). The old connection's
    /// sessions died with it on the server.
    fn reconnect(&self) -> Result<()> {
        let mut conn = self.conn.lock();
        if let Some(stream) = conn.stream.take() {
            drop(stream);
        }
        let tokens = open(&self.connector, &mut conn)?;
        // By serial; else (a re-initialised token gets a new serial) the
        // token at the member's old position, if it kept the label.
        let token = tokens
            .iter()
            .find(|t| t.serial == self.serial && t.label == self.label)
            .or_else(|| tokens.get(self.index).filter(|t| t.label == self.label))
            .ok_or(Error::Rv(Rv::TOKEN_NOT_PRESENT))?;
        self.slot.store(slot32(token.slot)?, Ordering::Release);
        Ok(())
    }
}

impl<C: Connector, L: RawLock, B> Drop for RpcMember<C, L, B> {
    fn drop(&mut self) {
        let conn = self.conn.get_mut();
        if let Some(mut stream) = conn.stream.take() {
            // C_Finalize, then close: the server's way to end cleanly. The
            // answer is not waited for.
            let mut frame = [0u8; HEADER + 4 + 4];
            frame[3] = 0x7f;
            frame[11] = 8;
            frame[15] = 2;
            let _ = write_all(&mut stream, &frame);
        }
    }
}

/// The capacity to ask for one attribute of `C_GetAttributeValue`.
fn request_capacity(a: &AttrOut<'_>) -> u32 {
    match (attr_class(a.ty), a.buf.as_deref()) {
        (AttrClass::MechanismArray, None) => MECHANISMS_PROBE,
        (AttrClass::MechanismArray, Some(b)) => ((b.len() / NATIVE).min(1024) * 8).max(8) as u32,
        (_, None) => 0,
        (AttrClass::Bool, Some(_)) => 1,
        (AttrClass::Ulong, Some(_)) => 8,
        (_, Some(b)) => b.len().min(0x7fff_fffe) as u32,
    }
}

/// Reads the `aA` array and the `u` CK_RV of a `C_GetAttributeValue` reply
/// into `t`, converting values to the platform's native layout.
fn read_attributes(r: &mut Reader<'_>, t: &mut [AttrOut<'_>]) -> Option<Result<Rv>> {
    let count = r.u32()? as usize;
    let mut slots = t
        .iter_mut()
        .filter(|a| attr_class(a.ty) != AttrClass::Template);
    let mut too_small = false;
    for _ in 0..count {
        let a = slots.next()?;
        if u64::from(r.u32()?) != a.ty {
            return None;
        }
        if r.byte()? == 0 {
            a.len = None;
            continue;
        }
        let length = r.u32()? as usize;
        let native_len = match attr_class(a.ty) {
            AttrClass::Bool => {
                let b = r.byte()?;
                match a.buf.as_deref_mut() {
                    Some([]) => {
                        too_small = true;
                        a.len = None;
                        continue;
                    }
                    Some([first, ..]) => *first = b,
                    None => {}
                }
                1
            }
            AttrClass::Ulong => {
                let v = r.ulong()?;
                if let Some(buf) = a.buf.as_deref_mut() {
                    if buf.len() < NATIVE {
                        too_small = true;
                        a.len = None;
                        continue;
                    }
                    put_native_ulong(v, buf)?;
                }
                NATIVE
            }
            AttrClass::MechanismArray => {
                let n = r.u32()? as usize;
                let mut dst = a.buf.as_deref_mut();
                if dst.as_deref().is_some_and(|d| d.len() < n * NATIVE) {
                    too_small = true;
                    a.len = None;
                    for _ in 0..n {
                        r.ulong()?;
                    }
                    continue;
                }
                for i in 0..n {
                    let m = r.ulong()?;
                    if let Some(d) = dst.as_deref_mut() {
                        put_native_ulong(m, &mut d[i * NATIVE..])?;
                    }
                }
                n * NATIVE
            }
            AttrClass::Date | AttrClass::Bytes => {
                let value = r.bytes()?;
                match (a.buf.as_deref_mut(), value) {
                    (Some(buf), Some(v)) => {
                        if v.len() > buf.len() {
                            too_small = true;
                            a.len = None;
                            continue;
                        }
                        buf[..v.len()].copy_from_slice(v);
                        v.len()
                    }
                    // A size query: a placeholder value, the length given.
                    (None, _) => length,
                    // An empty buffer goes out as a size query (0.24.1
                    // cannot say "empty, not NULL"), answered with the
                    // length and no value.
                    (Some(buf), None) if length > buf.len() => {
                        too_small = true;
                        a.len = None;
                        continue;
                    }
                    // A buffer was sent but no value came: not the protocol.
                    (Some(_), None) if length != 0 => return None,
                    (Some(_), None) => 0,
                }
            }
            AttrClass::Template => return None,
        };
        a.len = Some(native_len);
    }
    if slots.next().is_some() {
        return None;
    }
    let rv = Rv(r.ulong()?);
    Some(Ok(match rv {
        Rv::OK if too_small => Rv::BUFFER_TOO_SMALL,
        rv if rv.0 == UNAVAILABLE => return None,
        rv => rv,
    }))
}
