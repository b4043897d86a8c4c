//! A remote member: one token of a `p11-kit server` (or `p11-kit remote`),
//! behind one connection of its own; setting that connection up, and the
//! machinery every call goes through.
//!
//! Each connection is its own PKCS#11 application on the server (its
//! sessions, login, session objects and object handles die with it), so a
//! member that reconnects is, to the engine, a member that failed and came
//! back: the engine rebuilds everything (PKCS11-RPC.md, section 9). All a
//! member keeps across connections is what finds its token again: its
//! position among the server's tokens, its label and its serial.
//!
//! The calls themselves (`calls`) differ only in their ids and values; how
//! an output buffer is announced, a "too small" read back, and a length
//! query answered without a round trip (PKCS11-RPC.md, section 8) is
//! decided once, here.

use core::sync::atomic::{AtomicU32, Ordering};

use p11ha_core::ck::Rv;
use p11ha_core::error::TransportError;
use p11ha_core::port::{Mechanism, Op, RawLock, TokenInfo};
use p11ha_core::sync::Mutex;
use p11ha_core::{Error, Result};

use super::codec::{HANDSHAKE, Reader, Version, Writer, put_mechanism};
use super::conn::{Connector, HEADER, Link, Setup, read_exact, write_all};
use super::lengths::Lengths;
use super::lengths::Phase;

/// The request-body room left for data after the fixed part of a call.
pub(super) const OVERHEAD: usize = 64;

/// One slot of a remote server, reached over its own connection.
pub struct RpcMember<C: Connector, L: RawLock, B> {
    connector: C,
    pub(super) link: Link<C::Stream, L, B>,
    /// What the connection knows to answer length queries itself.
    pub(super) lengths: Mutex<L, Lengths>,
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
    /// `locks` makes each of the member's locks (three, and one per
    /// buffer; `None`: `CKR_CANT_LOCK`). `bufs` are the connection's
    /// buffers, up to [`MAX_IN_FLIGHT`](super::MAX_IN_FLIGHT), one per call
    /// in flight: every request and reply must fit the smallest (a larger
    /// request answers `CKR_HOST_MEMORY`). With one buffer, or a connector
    /// that cannot split its streams, the member makes one call at a time.
    /// The second value says how many slots with a token the server has.
    pub fn connect(
        connector: C,
        locks: impl FnMut() -> Option<L>,
        bufs: impl IntoIterator<Item = B>,
        index: usize,
    ) -> Result<(Self, usize)> {
        let mut locks = locks;
        let link = Link::new(&mut locks, bufs)?;
        let lengths = Mutex::new(locks().ok_or(Error::Rv(Rv::CANT_LOCK))?, Lengths::default());
        let tokens = link.reconnect(
            |buf, code| open(&connector, buf, code),
            |s| connector.split(s),
        )?;
        let n = tokens.len();
        let token = *tokens.get(index).ok_or(Error::Rv(Rv::SLOT_ID_INVALID))?;
        Ok((
            RpcMember {
                connector,
                link,
                lengths,
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
        self.link.version()
    }

    /// The room a request or reply has for data after the fixed part of a
    /// call.
    pub(super) fn room(&self) -> usize {
        self.link.capacity().saturating_sub(HEADER + OVERHEAD)
    }

    pub(super) fn slot(&self) -> u64 {
        u64::from(self.slot.load(Ordering::Acquire))
    }

    pub(super) fn call<T>(
        &self,
        id: u32,
        request: &str,
        reply: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
        decode: impl FnOnce(&mut Reader<'_>) -> Option<T>,
    ) -> Result<T> {
        self.link.call(id, request, reply, encode, decode, false)
    }

    /// A call whose request carries a PIN: the connection's buffer is
    /// zeroised after it, so that the PIN does not stay in memory until
    /// later requests happen to overwrite it.
    pub(super) fn call_secret(
        &self,
        id: u32,
        request: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
    ) -> Result<()> {
        self.link.call(id, request, "", encode, |_| Some(()), true)
    }

    /// A call that takes a session and returns nothing.
    pub(super) fn simple(&self, id: u32, session: u64) -> Result<()> {
        self.call(id, "u", "", |w, _| put(w.ulong(session)), |_| Some(()))
    }

    /// A call with `ay` data and a `fy` output buffer, returning `ay`.
    pub(super) fn data_out(
        &self,
        id: u32,
        session: u64,
        input: Option<&[u8]>,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let sig = if input.is_some() { "uayfy" } else { "ufy" };
        let capacity = capacity(out.as_deref(), self.version(), self.room())?;
        self.call(
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
    pub(super) fn data_in(&self, id: u32, session: u64, data: &[u8]) -> Result<()> {
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
    pub(super) fn init(
        &self,
        id: u32,
        session: u64,
        m: &Mechanism<'_>,
        key: Option<u64>,
    ) -> Result<()> {
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
    pub(super) fn known_length(
        &self,
        session: u64,
        op: Op,
        phase: Phase,
        input: usize,
    ) -> Option<usize> {
        self.lengths.lock().answer(session, op, phase, input)
    }

    /// A Single or Final call: a length query answered here if it can be,
    /// else the call, whose result is then noted ([`Self::settle`]).
    pub(super) fn ending(
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
        let mut lengths = self.lengths.lock();
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
    pub(super) fn unsure<T>(&self, session: u64, op: Op, r: &Result<T>) {
        if matches!(r, Err(e) if !matches!(e, Error::BufferTooSmall { .. })) {
            self.lengths.lock().end(session, op);
        }
    }

    /// A call returning one handle, after a session, a mechanism and/or a
    /// template.
    pub(super) fn make(
        &self,
        id: u32,
        sig: &str,
        encode: impl FnOnce(&mut Writer<'_>, Version) -> Result<()>,
    ) -> Result<u64> {
        self.call(id, sig, "u", encode, |r| r.ulong())
    }

    /// A new connection: version, `C_Initialize`, and the same token found
    /// again (by serial, else by label and position). The old connection's
    /// sessions died with it on the server.
    pub(super) fn reopen(&self) -> Result<()> {
        self.lengths.lock().clear();
        let tokens = self.link.reconnect(
            |buf, code| open(&self.connector, buf, code),
            |s| self.connector.split(s),
        )?;
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

/// A server's slot id as the member keeps it. p11-kit numbers slots from
/// 0x11; an id past 32 bits (which a 32-bit CK_ULONG could not hold
/// either) is refused as not the protocol.
fn slot32(slot: u64) -> Result<u32> {
    u32::try_from(slot).map_err(|_| Error::Transport(TransportError::Protocol))
}

/// A writer's `None` (the buffer is full) as a CK_RV.
pub(super) fn put(r: Option<()>) -> Result<()> {
    r.ok_or(Error::Rv(Rv::HOST_MEMORY))
}

/// The capacity to announce for an output buffer: 0 asks for the length
/// (a NULL buffer); a buffer of length 0 is not NULL, which 0.24.1 cannot
/// say, so it is announced as 1 (0.25 and later have `0xffffffff` for it).
/// A capacity is never more than a reply can carry.
pub(super) fn capacity(out: Option<&[u8]>, version: Version, room: usize) -> Result<u32> {
    Ok(match out {
        None => 0,
        Some([]) if version == Version::V0 => 1,
        Some([]) => 0xffff_ffff,
        Some(b) => u32::try_from(b.len().min(room)).map_err(|_| Error::Rv(Rv::HOST_MEMORY))?,
    })
}

/// Reads an `ay` reply into `out`: data, or the needed length (the answer
/// to a length query, or CKR_BUFFER_TOO_SMALL when a buffer was sent).
pub(super) fn output(
    r: &mut Reader<'_>,
    out: Option<&mut [u8]>,
    capacity: u32,
) -> Option<Result<usize>> {
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
pub(super) fn ulong_list(
    r: &mut Reader<'_>,
    out: Option<&mut [u64]>,
    full: usize,
) -> Option<Result<usize>> {
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

/// Connects, negotiates, initialises, and lists the slots with a token,
/// over `buf`, the call codes going on from `code` (kept there even if
/// this fails).
fn open<'a, C: Connector>(
    connector: &C,
    buf: &'a mut [u8],
    code: &'a mut u32,
) -> Result<(Setup<'a, C::Stream>, heapless::Vec<Token, 8>)> {
    // Offer version 2; a server before 0.24.1 hangs up on anything but 0,
    // and then gets a second connection that offers 0.
    let mut connected = None;
    for offer in [2u8, 0u8] {
        let mut stream = connector.connect().map_err(Error::Transport)?;
        let mut answer = [0u8; 1];
        let exchanged =
            write_all(&mut stream, &[offer]).and_then(|()| read_exact(&mut stream, &mut answer));
        match exchanged {
            Ok(()) => {
                // A server answers the lower of the offer and its own
                // version: anything above the offer is not the protocol.
                let version = match answer[0] {
                    0 => Version::V0,
                    1 if offer >= 1 => Version::V1,
                    2 if offer >= 2 => Version::V2,
                    _ => return Err(Error::Transport(TransportError::Protocol)),
                };
                connected = Some((stream, version));
                break;
            }
            Err(TransportError::Disconnected) if offer == 2 => continue,
            Err(e) => return Err(Error::Transport(e)),
        }
    }
    let (stream, version) = connected.ok_or(Error::Transport(TransportError::Protocol))?;
    let mut conn = Setup::new(stream, buf, version, code);
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
        let info = conn.call(6, "u", TOKEN_INFO, |w, _| put(w.ulong(slot)), token_info)?;
        let _ = tokens.push(Token {
            slot,
            label: info.label,
            serial: info.serial,
        });
    }
    connector.established(&mut conn.stream);
    Ok((conn, tokens))
}

/// The reply signature of `C_GetTokenInfo`.
pub(super) const TOKEN_INFO: &str = "ssssuuuuuuuuuuuvvs";

/// Reads a `C_GetTokenInfo` reply.
pub(super) fn token_info(r: &mut Reader<'_>) -> Option<TokenInfo> {
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
}

impl<C: Connector, L: RawLock, B> Drop for RpcMember<C, L, B> {
    fn drop(&mut self) {
        self.link.finalize();
    }
}
