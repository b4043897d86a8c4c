//! The client against a scripted server: the bytes it sends, and what it
//! makes of replies a real p11-kit server would not send (malformed,
//! truncated, mislabelled, oversized). The well-formed paths are also
//! tested against real `p11-kit server` processes, in the integration
//! tests (`tests/tests/remote*.rs`).

extern crate std;

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use p11ha_core::Error;
use p11ha_core::ck::{Rv, attr, mech};
use p11ha_core::error::TransportError;
use p11ha_core::port::{AttrOut, Mechanism, Member, Op, Param, SessionInfo};
use p11ha_core::sync::SpinLock;

use super::codec::{HANDSHAKE, NATIVE, Version, put_native_ulong};
use super::script::{Body, Frame, Script, ScriptConnector, Step};
use super::{RpcMember, Token};

type M = RpcMember<ScriptConnector, SpinLock, Box<[u8]>>;

/// The member buffer of most tests.
const BUF: usize = 4096;
/// `HEADER + OVERHEAD` in the client: what a buffer keeps for the fixed
/// part of a call, the rest being the most an output can announce.
const RESERVED: usize = 12 + 64;

fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut b = [b' '; N];
    b[..s.len()].copy_from_slice(s.as_bytes());
    b
}

fn token(slot: u64, label: &str, serial: &str) -> Token {
    Token {
        slot,
        label: padded(label),
        serial: padded(serial),
    }
}

fn alpha() -> Token {
    token(0x11, "alpha", "0001")
}

fn member(script: &Script, buf: usize, index: usize) -> p11ha_core::Result<(M, usize)> {
    RpcMember::connect(
        script.connector(),
        SpinLock::new(),
        vec![0u8; buf].into_boxed_slice(),
        index,
    )
}

/// A member connected to a server answering `version`, with one token.
fn connected(version: u8) -> (Script, M) {
    connected_with(version, BUF)
}

fn connected_with(version: u8, buf: usize) -> (Script, M) {
    let s = Script::new();
    s.version(version).serve_connect(&[alpha()]);
    let (m, n) = member(&s, buf, 0).expect("connect");
    assert_eq!(n, 1);
    assert_eq!(s.remaining(), 0, "connect took every reply");
    (s, m)
}

fn native(xs: &[u64]) -> Vec<u8> {
    let mut v = Vec::new();
    for &x in xs {
        let mut b = [0u8; NATIVE];
        put_native_ulong(x, &mut b).unwrap();
        v.extend_from_slice(&b);
    }
    v
}

fn last(s: &Script) -> Frame {
    s.frames().pop().expect("a request was sent")
}

/// The code the client will put on its next request.
fn next_code(s: &Script) -> u32 {
    last(s).code + 1
}

fn header(code: u32, options: u32, body: u32) -> Vec<u8> {
    let mut h = Vec::new();
    for w in [code, options, body] {
        h.extend_from_slice(&w.to_be_bytes());
    }
    h
}

/// Values as the client writes them, for comparing requests.
struct Values(Vec<u8>);

impl Values {
    fn new() -> Self {
        Values(Vec::new())
    }
    fn u32(mut self, x: u32) -> Self {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }
    fn ulong(mut self, x: u64) -> Self {
        self.0.extend_from_slice(&x.to_be_bytes());
        self
    }
    fn byte(mut self, x: u8) -> Self {
        self.0.push(x);
        self
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn input(self, b: &[u8]) -> Self {
        self.byte(1).u32(b.len() as u32).raw(b)
    }
}

/// An output attribute, its length not yet known.
fn want(ty: u64, buf: Option<&mut [u8]>) -> AttrOut<'_> {
    AttrOut { ty, buf, len: None }
}

fn session_info_reply() -> Body {
    let mut b = Body::new(13, "uuuu");
    b.ulong(0x11).ulong(3).ulong(6).ulong(0);
    b
}

/// The member is broken: every call fails at once, writing nothing.
fn assert_broken(s: &Script, m: &M) {
    let before = s.written();
    let gone = Err(Error::Transport(TransportError::Disconnected));
    assert_eq!(m.session_info(1).map(|_| ()), gone);
    assert_eq!(m.slot_info().map(|_| ()), gone);
    assert_eq!(m.open_session(6).map(|_| ()), gone);
    assert_eq!(
        m.op_single(1, Op::Sign, b"x", Some(&mut [0; 8]))
            .map(|_| ()),
        gone
    );
    assert_eq!(m.generate_random(1, &mut [0; 8]), gone);
    let mut t = [want(attr::LABEL, None)];
    assert_eq!(m.get_attributes(1, 2, &mut t), gone);
    assert_eq!(s.written(), before, "a broken member writes nothing");
}

// ---------------------------------------------------------------------------
// Connect

#[test]
fn connect_sends_the_handshake_and_finds_the_tokens() {
    let s = Script::new();
    let beta = token(0x12, "beta", "0002");
    s.version(2).serve_connect(&[alpha(), beta]);
    let (m, n) = member(&s, BUF, 1).unwrap();
    assert_eq!(n, 2);
    assert_eq!(m.slot_id(), 0x12);
    assert_eq!(m.version(), Version::V2);
    assert_eq!(s.offers(), [2], "version 2 offered first");
    assert_eq!(s.connections(), 1);

    let f = s.frames();
    assert_eq!(f.len(), 4, "Initialize, GetSlotList, two GetTokenInfo");
    // C_Initialize: code 0x11, no options, the handshake string, no
    // pReserved, the reserved string's NUL.
    let init = &f[0];
    assert_eq!(init.code, 0x11);
    assert!(init.options.is_empty());
    assert_eq!(init.call_id(), Some(1));
    assert_eq!(init.signature(), Some(&b"ayyay"[..]));
    let expect = Values::new().input(HANDSHAKE).byte(0).input(&[0]).0;
    assert_eq!(init.values(), &expect[..]);
    let mut bytes = header(0x11, 0, init.body.len() as u32);
    bytes.extend_from_slice(&init.body);
    assert_eq!(
        &bytes[..16],
        &[0, 0, 0, 0x11, 0, 0, 0, 0, 0, 0, 0, 66, 0, 0, 0, 1]
    );
    assert_eq!(&bytes[16..29], b"\0\0\0\x05ayyay\x01\0\0\0");
    // C_GetSlotList(tokenPresent, capacity 8).
    assert_eq!((f[1].code, f[1].call_id()), (0x12, Some(4)));
    assert_eq!(f[1].signature(), Some(&b"yfu"[..]));
    assert_eq!(f[1].values(), &Values::new().byte(1).u32(8).0[..]);
    // C_GetTokenInfo per slot.
    for (frame, slot) in f[2..].iter().zip([0x11u64, 0x12]) {
        assert_eq!(frame.call_id(), Some(6));
        assert_eq!(frame.signature(), Some(&b"u"[..]));
        assert_eq!(frame.values(), &slot.to_be_bytes());
    }
    assert_eq!(
        f.iter().map(|f| f.code).collect::<Vec<_>>(),
        [0x11, 0x12, 0x13, 0x14]
    );
}

#[test]
fn an_index_past_the_tokens_is_an_invalid_slot() {
    let s = Script::new();
    s.version(2).serve_connect(&[alpha()]);
    assert_eq!(
        member(&s, BUF, 1).err(),
        Some(Error::Rv(Rv::SLOT_ID_INVALID))
    );
}

#[test]
fn a_server_that_hangs_up_on_version_2_gets_a_connection_offering_0() {
    let s = Script::new();
    s.hang_up().version(0).serve_connect(&[alpha()]);
    let (m, _) = member(&s, BUF, 0).unwrap();
    assert_eq!(s.offers(), [2, 0]);
    assert_eq!(s.connections(), 2);
    assert_eq!(m.version(), Version::V0);
    assert!(
        s.frames().iter().all(|f| f.connection == 1),
        "nothing framed on the first"
    );
}

#[test]
fn versions_are_taken_as_answered() {
    for (answer, version) in [(0, Version::V0), (1, Version::V1), (2, Version::V2)] {
        let (_, m) = connected(answer);
        assert_eq!(m.version(), version);
    }
}

#[test]
fn a_bad_handshake_fails_the_connect() {
    // An unknown version.
    let s = Script::new();
    s.version(3).serve_connect(&[alpha()]);
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::Protocol))
    );
    assert!(s.frames().is_empty());
    // Both connections hang up.
    let s = Script::new();
    s.hang_up();
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::Disconnected))
    );
    assert_eq!(s.offers(), [2, 0]);
    // Nobody listening.
    let s = Script::new();
    s.push(Step::Refuse);
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::Disconnected))
    );
    assert_eq!(s.written(), 0);
    // A deadline passed on the version byte: not a reason to offer 0.
    let s = Script::new();
    s.push(Step::TimedOut);
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::TimedOut))
    );
    assert_eq!(s.offers(), [2]);
    // C_Initialize refused.
    let s = Script::new();
    s.version(2).error(0x5);
    assert_eq!(member(&s, BUF, 0).err(), Some(Error::Rv(Rv::GENERAL_ERROR)));
}

#[test]
fn a_version_above_the_offer_is_not_the_protocol() {
    // The fallback connection offers 0; a server answers min(offer, its
    // own), so 2 cannot be an answer to it.
    let s = Script::new();
    s.hang_up().version(2).serve_connect(&[alpha()]);
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::Protocol))
    );
}

#[test]
fn a_slot_id_past_32_bits_is_kept_or_refused() {
    // Slot ids are `u` (u64) on the wire; p11-kit numbers from 0x11, but a
    // server is free to send any.
    let s = Script::new();
    s.version(2)
        .serve_connect(&[token(0x1_0000_0011, "alpha", "0001")]);
    if let Ok((m, _)) = member(&s, BUF, 0) {
        assert_eq!(m.slot_id(), 0x1_0000_0011);
    }
}

#[test]
fn short_reads_and_writes_are_carried_on() {
    let s = Script::new();
    s.chunk(1).version(2).serve_connect(&[alpha()]);
    let (m, _) = member(&s, BUF, 0).unwrap();
    s.reply(session_info_reply());
    assert_eq!(
        m.session_info(7),
        Ok(SessionInfo {
            slot: 0x11,
            state: 3,
            flags: 6,
            device_error: 0,
        })
    );
    assert_eq!(last(&s).values(), &7u64.to_be_bytes());
}

#[test]
fn dropping_a_member_finalizes_and_dropping_a_broken_one_writes_nothing() {
    let (s, m) = connected(2);
    drop(m);
    let f = last(&s);
    assert_eq!(
        (f.code, f.call_id(), f.signature()),
        (0x7f, Some(2), Some(&b""[..]))
    );

    let (s, m) = connected(2);
    assert!(m.slot_info().is_err(), "EOF");
    let before = s.written();
    drop(m);
    assert_eq!(s.written(), before);
}

/// A member buffer that hands its last contents to the test when the
/// member drops it.
struct Spy(Box<[u8]>, std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl core::ops::Deref for Spy {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl core::ops::DerefMut for Spy {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for Spy {
    fn drop(&mut self) {
        *self.1.lock().unwrap() = self.0.to_vec();
    }
}

#[test]
fn a_pin_does_not_stay_in_the_member_buffer() {
    const PIN: &[u8] = b"p11ha-secret-PIN-7f3a";
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    type Call = fn(&RpcMember<ScriptConnector, SpinLock, Spy>) -> p11ha_core::Result<()>;
    let calls: [(&str, u32, Call); 4] = [
        ("C_Login", 18, |m| m.login(5, 1, Some(PIN))),
        ("C_InitPIN", 14, |m| m.init_pin(5, Some(PIN))),
        ("C_SetPIN", 15, |m| m.set_pin(5, Some(PIN), Some(PIN))),
        ("C_InitToken", 9, |m| m.init_token(Some(PIN), &[b' '; 32])),
    ];
    for (name, id, call) in calls {
        for answer in [true, false] {
            let s = Script::new();
            s.version(2).serve_connect(&[alpha()]);
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let buf = Spy(vec![0u8; BUF].into_boxed_slice(), seen.clone());
            let (m, _) =
                RpcMember::connect(s.connector(), SpinLock::new(), buf, 0).expect("connect");
            if answer {
                s.reply(Body::new(id, ""));
            } else {
                s.error(0xa0);
            }
            assert_eq!(call(&m).is_ok(), answer, "{name}");
            assert!(contains(last(&s).values(), PIN), "{name} sent it");
            drop(m);
            assert!(
                !contains(&seen.lock().unwrap(), PIN),
                "{name} left the PIN in the buffer"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Calls and their outputs

#[test]
fn a_sign_with_a_reply() {
    let (s, m) = connected(2);
    s.reply(Body::new(42, ""));
    let ecdsa = Mechanism {
        ty: mech::ECDSA,
        param: Param::None,
    };
    m.op_init(5, Op::Sign, &ecdsa, 4).unwrap();
    let f = last(&s);
    assert_eq!((f.call_id(), f.signature()), (Some(42), Some(&b"uMu"[..])));
    // Version 2: a parameterless mechanism is its type alone.
    let expect = Values::new().ulong(5).u32(0x1041).ulong(4).0;
    assert_eq!(f.values(), &expect[..]);

    let signature = [0x5a; 64];
    s.reply(Body::new(43, "ay").data(&signature));
    let mut out = [0u8; 72];
    assert_eq!(
        m.op_single(5, Op::Sign, &[0x11; 32], Some(&mut out)),
        Ok(64)
    );
    assert_eq!(out[..64], signature);
    let f = last(&s);
    assert_eq!(
        (f.call_id(), f.signature()),
        (Some(43), Some(&b"uayfy"[..]))
    );
    let expect = Values::new().ulong(5).input(&[0x11; 32]).u32(72).0;
    assert_eq!(f.values(), &expect[..]);
}

#[test]
fn a_digest_in_parts() {
    let (s, m) = connected(0);
    s.reply(Body::new(37, ""));
    let sha = Mechanism {
        ty: mech::SHA256,
        param: Param::None,
    };
    m.op_init(5, Op::Digest, &sha, 0).unwrap();
    let f = last(&s);
    assert_eq!(f.signature(), Some(&b"uM"[..]));
    // Version 0: NULL parameter as a NULL byte array.
    let expect = Values::new().ulong(5).u32(0x250).u32(0xffff_ffff).0;
    assert_eq!(f.values(), &expect[..]);

    s.reply(Body::new(39, ""));
    assert_eq!(m.op_update(5, Op::Digest, b"abc", None), Ok(0));
    assert_eq!(
        last(&s).values(),
        &Values::new().ulong(5).input(b"abc").0[..]
    );

    s.reply(Body::new(41, "ay").data(&[7; 32]));
    let mut out = [0u8; 32];
    assert_eq!(m.op_final(5, Op::Digest, Some(&mut out)), Ok(32));
    assert_eq!(out, [7; 32]);
    let f = last(&s);
    assert_eq!((f.call_id(), f.signature()), (Some(41), Some(&b"ufy"[..])));
    assert_eq!(f.values(), &Values::new().ulong(5).u32(32).0[..]);
}

#[test]
fn a_length_query_is_answered_with_the_length() {
    let (s, m) = connected(2);
    s.reply(Body::new(43, "ay").length(256));
    assert_eq!(m.op_single(5, Op::Sign, b"data", None), Ok(256));
    let expect = Values::new().ulong(5).input(b"data").u32(0).0;
    assert_eq!(last(&s).values(), &expect[..], "capacity 0: NULL");

    s.reply(Body::new(45, "ay").length(64));
    assert_eq!(m.op_final(5, Op::Sign, None), Ok(64));
    assert_eq!(last(&s).values(), &Values::new().ulong(5).u32(0).0[..]);

    s.reply(Body::new(60, "ay").length(40));
    let wrap = Mechanism {
        ty: mech::AES_KEY_WRAP,
        param: Param::None,
    };
    assert_eq!(m.wrap_key(5, &wrap, 1, 2, None), Ok(40));

    // A list's length.
    s.reply(Body::new(7, "au").byte(0).u32(70));
    assert_eq!(m.mechanism_list(None), Ok(70));
    assert_eq!(last(&s).values(), &Values::new().ulong(0x11).u32(0).0[..]);
}

#[test]
fn too_small_for_a_buffer_that_was_sent_is_buffer_too_small() {
    let (s, m) = connected(2);
    s.reply(Body::new(43, "ay").length(64));
    let mut out = [0u8; 10];
    assert_eq!(
        m.op_single(5, Op::Sign, b"data", Some(&mut out)),
        Err(Error::BufferTooSmall { needed: 64 })
    );
    assert_eq!(
        last(&s).values(),
        &Values::new().ulong(5).input(b"data").u32(10).0[..]
    );
    // Not a failure of the member: the next call goes out.
    s.reply(Body::new(43, "ay").data(&[1; 10]));
    assert_eq!(m.op_single(5, Op::Sign, b"data", Some(&mut out)), Ok(10));

    // A list too small.
    s.reply(Body::new(7, "au").byte(0).u32(70));
    let mut list = [0u64; 4];
    assert_eq!(
        m.mechanism_list(Some(&mut list)),
        Err(Error::BufferTooSmall { needed: 70 })
    );
    s.reply(Body::new(7, "au").byte(1).u32(2).ulong(0x1041).ulong(0x250));
    assert_eq!(m.mechanism_list(Some(&mut list)), Ok(2));
    assert_eq!(list[..2], [0x1041, 0x250]);
}

#[test]
fn an_empty_buffer_is_not_a_length_query() {
    // Version 0 cannot say "non-NULL, length 0": it is announced as 1, and
    // any data is then too much.
    let (s, m) = connected(0);
    s.reply(Body::new(32, "ay").data(&[9]));
    assert_eq!(
        m.op_final(5, Op::Encrypt, Some(&mut [])),
        Err(Error::BufferTooSmall { needed: 1 })
    );
    assert_eq!(last(&s).values(), &Values::new().ulong(5).u32(1).0[..]);
    s.reply(Body::new(32, "ay").data(&[]));
    assert_eq!(m.op_final(5, Op::Encrypt, Some(&mut [])), Ok(0));
    // Version 2 has 0xffffffff for it.
    let (s, m) = connected(2);
    s.reply(Body::new(32, "ay").length(16));
    assert_eq!(
        m.op_final(5, Op::Encrypt, Some(&mut [])),
        Err(Error::BufferTooSmall { needed: 16 })
    );
    assert_eq!(
        last(&s).values(),
        &Values::new().ulong(5).u32(0xffff_ffff).0[..]
    );
}

#[test]
fn an_error_frame_is_its_rv() {
    let (s, m) = connected(2);
    s.error(0xa0);
    assert_eq!(
        m.login(5, 1, Some(b"9999")),
        Err(Error::Rv(Rv::PIN_INCORRECT))
    );
    let expect = Values::new().ulong(5).ulong(1).input(b"9999").0;
    assert_eq!(last(&s).values(), &expect[..]);
    // An error frame answers any call, and does not break the connection.
    s.error(0xb3);
    assert_eq!(
        m.op_single(5, Op::Sign, b"x", None),
        Err(Error::Rv(Rv(0xb3)))
    );
    s.error(0x82);
    let mut t = [want(attr::LABEL, None)];
    assert_eq!(
        m.get_attributes(5, 9, &mut t),
        Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
    );
    s.reply(session_info_reply());
    assert!(m.session_info(5).is_ok());
}

#[test]
fn an_error_frame_carrying_rv_0_is_not_the_protocol() {
    let (s, m) = connected(2);
    s.error(0);
    assert_eq!(m.logout(5), Err(Error::Transport(TransportError::Protocol)));
    assert_broken(&s, &m);
}

#[test]
fn a_timeout_breaks_the_connection() {
    let (s, m) = connected(2);
    s.push(Step::TimedOut).reply(session_info_reply());
    assert_eq!(
        m.session_info(5),
        Err(Error::Transport(TransportError::TimedOut))
    );
    // The late reply is never read as the answer to a later request.
    assert_broken(&s, &m);
    assert_eq!(s.remaining(), 1);
}

#[test]
fn replies_that_are_not_the_protocol_break_the_connection() {
    use TransportError::{Disconnected, Protocol};
    type Case = (&'static str, fn(&Script, u32), TransportError);
    // Each case answers `session_info` (call 13, reply "uuuu"); `code` is
    // the code of that request.
    let cases: &[Case] = &[
        (
            "wrong call code (a later one)",
            |s, code| {
                let body = session_info_reply().0;
                let mut f = header(code + 1, 0, body.len() as u32);
                f.extend_from_slice(&body);
                s.raw(f);
            },
            Protocol,
        ),
        (
            "wrong call code (the previous request's, a late reply)",
            |s, code| {
                let body = session_info_reply().0;
                let mut f = header(code - 1, 0, body.len() as u32);
                f.extend_from_slice(&body);
                s.raw(f);
            },
            Protocol,
        ),
        (
            "call code 0",
            |s, _| {
                s.raw(header(0, 0, 8));
            },
            Protocol,
        ),
        (
            "wrong call id",
            |s, _| {
                s.reply(Body::new(12, "uuuu").ulong(1).ulong(2).ulong(3).ulong(4));
            },
            Protocol,
        ),
        (
            "wrong signature",
            |s, _| {
                s.reply(Body::new(13, "uuu").ulong(1).ulong(2).ulong(3));
            },
            Protocol,
        ),
        (
            "a NULL signature",
            |s, _| {
                s.reply(Body(Values::new().u32(13).u32(0xffff_ffff).0));
            },
            Protocol,
        ),
        (
            "a signature longer than the body",
            |s, _| {
                s.reply(Body(Values::new().u32(13).u32(9).raw(b"uuuu").0));
            },
            Protocol,
        ),
        (
            "a body larger than the member's buffer",
            |s, code| {
                let mut f = header(code, 0, BUF as u32 + 1);
                f.extend_from_slice(&session_info_reply().0);
                s.raw(f);
            },
            Protocol,
        ),
        (
            "a body length of 4 GiB - 1",
            |s, code| {
                s.raw(header(code, 0, u32::MAX));
            },
            Protocol,
        ),
        (
            "options longer than 256",
            |s, code| {
                let body = session_info_reply().0;
                let mut f = header(code, 257, body.len() as u32);
                f.extend_from_slice(&[b'x'; 257]);
                f.extend_from_slice(&body);
                s.raw(f);
            },
            Protocol,
        ),
        (
            "a value cut short (3 of 4 ulongs)",
            |s, _| {
                s.reply(Body::new(13, "uuuu").ulong(1).ulong(2).ulong(3));
            },
            Protocol,
        ),
        (
            "an error frame cut short",
            |s, _| {
                s.reply(Body::new(0, "u").u32(0));
            },
            Protocol,
        ),
        (
            "an error frame with the wrong signature",
            |s, _| {
                s.reply(Body::new(0, "y").byte(5));
            },
            Protocol,
        ),
        (
            "an empty body",
            |s, _| {
                s.reply(Vec::new());
            },
            Protocol,
        ),
        (
            "a body cut short by EOF",
            |s, code| {
                let body = session_info_reply().0;
                let mut f = header(code, 0, body.len() as u32);
                f.extend_from_slice(&body[..20]);
                s.raw(f);
            },
            Disconnected,
        ),
        (
            "options cut short by EOF",
            |s, code| {
                let mut f = header(code, 16, 8);
                f.extend_from_slice(b"client");
                s.raw(f);
            },
            Disconnected,
        ),
        (
            "EOF mid-header",
            |s, code| {
                s.raw(header(code, 0, 44)[..6].to_vec());
            },
            Disconnected,
        ),
        ("EOF before the reply", |_, _| {}, Disconnected),
        (
            "a hang-up before the reply",
            |s, _| {
                s.hang_up().reply(session_info_reply());
            },
            Disconnected,
        ),
    ];
    for (what, script, error) in cases {
        let (s, m) = connected(2);
        script(&s, next_code(&s));
        assert_eq!(m.session_info(5), Err(Error::Transport(*error)), "{what}");
        assert_broken(&s, &m);
    }
}

#[test]
fn options_within_the_limit_are_skipped() {
    let (s, m) = connected(2);
    let body = session_info_reply().0;
    let mut f = header(next_code(&s), 256, body.len() as u32);
    f.extend_from_slice(&[b'o'; 256]);
    f.extend_from_slice(&body);
    s.raw(f);
    assert!(m.session_info(5).is_ok());
    // Trailing bytes after the last value are ignored.
    s.reply(session_info_reply().u32(0xdead_beef));
    assert!(m.session_info(5).is_ok());
}

#[test]
fn outputs_that_are_not_the_protocol_break_the_connection() {
    type Case = (&'static str, fn(&M) -> Result<usize, Error>, Body);
    let cases: Vec<Case> = vec![
        (
            "too small for a buffer that was large enough",
            |m| m.op_single(5, Op::Sign, b"x", Some(&mut [0; 64])),
            Body::new(43, "ay").length(16).clone(),
        ),
        (
            "data in answer to a length query",
            |m| m.op_single(5, Op::Sign, b"x", None),
            Body::new(43, "ay").data(&[1; 8]).clone(),
        ),
        (
            "an array flag other than 0 and 1",
            |m| m.op_single(5, Op::Sign, b"x", Some(&mut [0; 64])),
            Body::new(43, "ay").byte(2).u32(8).clone(),
        ),
        (
            "data longer than the body",
            |m| m.op_single(5, Op::Sign, b"x", Some(&mut [0; 64])),
            Body::new(43, "ay").byte(1).u32(64).raw(&[1; 8]).clone(),
        ),
        (
            "NULL data",
            |m| m.op_single(5, Op::Sign, b"x", Some(&mut [0; 64])),
            Body::new(43, "ay").byte(1).u32(0xffff_ffff).clone(),
        ),
        (
            "more handles than asked for",
            |m| m.find(5, &mut [0; 2]),
            Body::new(27, "au")
                .byte(1)
                .u32(3)
                .ulong(1)
                .ulong(2)
                .ulong(3)
                .clone(),
        ),
        (
            "a list of handles cut short",
            |m| m.find(5, &mut [0; 4]),
            Body::new(27, "au").byte(1).u32(3).ulong(1).clone(),
        ),
        (
            "a list in answer to a length query",
            |m| m.mechanism_list(None),
            Body::new(7, "au").byte(1).u32(1).ulong(1).clone(),
        ),
        (
            "a handle cut short",
            |m| m.open_session(6).map(|h| h as usize),
            Body::new(10, "u").u32(1).clone(),
        ),
        (
            "a key pair with one handle",
            |m| {
                let ec = Mechanism {
                    ty: mech::EC_KEY_PAIR_GEN,
                    param: Param::None,
                };
                m.generate_key_pair(5, &ec, &[], &[]).map(|_| 0)
            },
            Body::new(59, "uu").ulong(1).clone(),
        ),
        (
            "a slot description of the wrong size",
            |m| m.slot_info().map(|_| 0),
            Body::new(5, "ssuvv").bytes(&[b' '; 63]).clone(),
        ),
        (
            "token info cut short",
            |m| m.token_info().map(|_| 0),
            Body::new(6, "ssssuuuuuuuuuuuvvs")
                .bytes(&[b' '; 32])
                .clone(),
        ),
    ];
    for (what, call, reply) in cases {
        let (s, m) = connected(2);
        s.reply(reply);
        assert_eq!(
            call(&m),
            Err(Error::Transport(TransportError::Protocol)),
            "{what}"
        );
        assert_broken(&s, &m);
    }
}

#[test]
fn infos_are_decoded() {
    let (s, m) = connected(2);
    let mut b = Body::new(5, "ssuvv");
    b.bytes(&padded::<64>("slot"))
        .bytes(&padded::<32>("maker"))
        .ulong(7)
        .raw(&[1, 2, 3, 4]);
    s.reply(b);
    let info = m.slot_info().unwrap();
    assert_eq!(
        (
            info.flags,
            info.hardware_version.minor,
            info.firmware_version.major
        ),
        (7, 2, 3)
    );
    assert_eq!(&info.description[..4], b"slot");
    assert_eq!(last(&s).values(), &0x11u64.to_be_bytes());

    s.reply(Body::token_info(&padded("alpha"), &padded("0001")));
    let t = m.token_info().unwrap();
    assert_eq!(t.label, padded::<32>("alpha"));
    assert_eq!(t.max_pin_len, u64::MAX);

    s.reply(Body::new(8, "uuu").ulong(256).ulong(4096).ulong(0x2800));
    let i = m.mechanism_info(mech::RSA_PKCS).unwrap();
    assert_eq!(
        (i.min_key_size, i.max_key_size, i.flags),
        (256, 4096, 0x2800)
    );

    s.reply(Body::new(10, "u").ulong(0x33));
    assert_eq!(m.open_session(6), Ok(0x33));

    s.reply(Body::new(27, "au").byte(1).u32(2).ulong(4).ulong(5));
    let mut found = [0u64; 10];
    assert_eq!(m.find(0x33, &mut found), Ok(2));
    assert_eq!(found[..2], [4, 5]);
    assert_eq!(last(&s).values(), &Values::new().ulong(0x33).u32(10).0[..]);
    assert_eq!(m.find(0x33, &mut []), Ok(0), "nothing asked, nothing sent");
    assert_eq!(s.remaining(), 0);
}

#[test]
fn generate_random_asks_for_its_length() {
    let (s, m) = connected(2);
    s.reply(Body::new(64, "ay").data(&[3; 20]));
    let mut out = [0u8; 20];
    m.generate_random(5, &mut out).unwrap();
    assert_eq!(out, [3; 20]);
    assert_eq!(last(&s).values(), &Values::new().ulong(5).u32(20).0[..]);
    let before = s.written();
    assert_eq!(m.generate_random(5, &mut []), Ok(()));
    assert_eq!(s.written(), before);
}

#[test]
fn a_short_random_reply_breaks_the_connection() {
    let (s, m) = connected(2);
    s.reply(Body::new(64, "ay").data(&[3; 8]));
    assert_eq!(
        m.generate_random(5, &mut [0; 20]),
        Err(Error::Transport(TransportError::Protocol))
    );
    assert_broken(&s, &m);
}

#[test]
fn random_larger_than_the_buffer_is_not_a_member_failure() {
    // A server does as asked: it returns as many bytes as the capacity.
    let buf = 512;
    let (s, m) = connected_with(2, buf);
    let room = buf - RESERVED;
    s.reply(Body::new(64, "ay").data(&vec![3; room]));
    s.reply(Body::new(64, "ay").data(&[3; 1]));
    let mut out = vec![0u8; room + 1];
    let r = m.generate_random(5, &mut out);
    assert!(
        !matches!(r, Err(Error::Transport(_))),
        "a healthy member reported as failed: {r:?}"
    );
}

#[test]
fn an_output_larger_than_the_member_buffer_is_not_buffer_too_small() {
    // An RSA-4096 signature (512 bytes) through a member whose buffer
    // announces at most 436: the caller's 512-byte buffer was enough, and
    // retrying with `needed` bytes can never succeed.
    let buf = 512;
    let (s, m) = connected_with(2, buf);
    s.reply(Body::new(43, "ay").length(512));
    let mut out = [0u8; 512];
    let r = m.op_single(5, Op::Sign, b"x", Some(&mut out));
    assert_eq!(
        last(&s).values()[..],
        Values::new()
            .ulong(5)
            .input(b"x")
            .u32((buf - RESERVED) as u32)
            .0[..]
    );
    if let Err(Error::BufferTooSmall { needed }) = r {
        assert!(
            needed > out.len(),
            "BufferTooSmall {{ needed: {needed} }} for a {}-byte buffer",
            out.len()
        );
    }
}

#[test]
fn a_list_that_fits_is_not_too_small() {
    // An empty list into an empty buffer (sent as capacity 0, a length
    // query, which a real server answers `00 00000000`).
    let (s, m) = connected(2);
    s.reply(Body::new(7, "au").byte(0).u32(0));
    assert_eq!(m.mechanism_list(Some(&mut [])), Ok(0));
    // "Too small" for a buffer that was not: not the protocol, as for
    // byte arrays (`output`).
    s.reply(Body::new(7, "au").byte(0).u32(2));
    assert_eq!(
        m.mechanism_list(Some(&mut [0; 4])),
        Err(Error::Transport(TransportError::Protocol))
    );
}

// ---------------------------------------------------------------------------
// Mechanisms that cannot travel

#[test]
fn a_mechanism_that_cannot_be_carried_is_refused_before_anything_is_sent() {
    let gcm = Mechanism {
        ty: mech::AES_GCM,
        param: Param::Gcm {
            iv: &[1; 12],
            iv_bits: 96,
            aad: &[],
            tag_bits: 128,
        },
    };
    let ecdh = Mechanism {
        ty: mech::ECDH1_DERIVE,
        param: Param::Ecdh1 {
            kdf: 1,
            shared_data: &[],
            public_data: &[4; 65],
        },
    };
    let (s, m) = connected(0);
    let before = s.written();
    let invalid = Err(Error::Rv(Rv::MECHANISM_INVALID));
    assert_eq!(m.op_init(5, Op::Encrypt, &gcm, 7), invalid);
    assert_eq!(m.generate_key(5, &gcm, &[]), invalid.map(|()| 0));
    assert_eq!(m.derive_key(5, &ecdh, 7, &[]), invalid.map(|()| 0));
    assert_eq!(m.wrap_key(5, &gcm, 7, 8, None), invalid.map(|()| 0));
    assert_eq!(s.written(), before, "nothing sent");
    // Unknown layouts never travel, whatever the version.
    let (s, m) = connected(2);
    let before = s.written();
    let opaque = Mechanism {
        ty: 0x8000_0001,
        param: Param::Opaque(&[1, 2, 3]),
    };
    assert_eq!(m.op_init(5, Op::Sign, &opaque, 7), invalid);
    assert_eq!(s.written(), before, "nothing sent");
    // The connection is intact.
    s.reply(session_info_reply());
    assert!(m.session_info(5).is_ok());
}

#[test]
fn parameters_travel_in_the_form_of_the_version() {
    let iv = [7u8; 16];
    let cbc = Mechanism {
        ty: mech::AES_CBC,
        param: Param::Flat(&iv),
    };
    let (s, m) = connected(0);
    s.reply(Body::new(29, ""));
    m.op_init(5, Op::Encrypt, &cbc, 9).unwrap();
    let expect = Values::new()
        .ulong(5)
        .u32(0x1082)
        .u32(16)
        .raw(&iv)
        .ulong(9)
        .0;
    assert_eq!(last(&s).values(), &expect[..]);
    let (s, m) = connected(2);
    s.reply(Body::new(29, ""));
    m.op_init(5, Op::Encrypt, &cbc, 9).unwrap();
    let expect = Values::new()
        .ulong(5)
        .u32(0x1082)
        .byte(1)
        .u32(16)
        .raw(&iv)
        .ulong(9)
        .0;
    assert_eq!(last(&s).values(), &expect[..]);
}

// ---------------------------------------------------------------------------
// C_GetAttributeValue

#[test]
fn attributes_are_decoded_by_type() {
    let (s, m) = connected(2);
    let (mut class, mut label, mut sign, mut value, mut mechs, mut date) = (
        [0u8; NATIVE],
        [0u8; 32],
        [0u8; 1],
        [0u8; 32],
        [0u8; 3 * NATIVE],
        [0u8; 8],
    );
    let mut t = [
        want(attr::CLASS, Some(&mut class)),
        want(attr::KEY_TYPE, None),
        want(attr::LABEL, Some(&mut label)),
        want(attr::ID, None),
        want(attr::SIGN, Some(&mut sign)),
        want(attr::DERIVE, None),
        want(attr::VALUE, Some(&mut value)),
        want(0x4000_0600, Some(&mut mechs)),
        want(0x4000_0600, None),
        want(0x110, Some(&mut date)),
    ];
    let mut b = Body::new(24, "aAu");
    b.u32(10);
    b.u32(0x0).byte(1).u32(8).ulong(3); // CLASS = 3
    b.u32(0x100).byte(1).u32(8).ulong(0); // KEY_TYPE: size query, placeholder 0
    b.u32(0x3).byte(1).u32(5).bytes(b"eckey"); // LABEL
    b.u32(0x102).byte(1).u32(1).u32(0xffff_ffff); // ID: size query, NULL placeholder
    b.u32(0x108).byte(1).u32(1).byte(1); // SIGN = TRUE
    b.u32(0x10c).byte(1).u32(1).byte(0); // DERIVE: size query, placeholder byte
    b.u32(0x11).byte(0); // VALUE: sensitive
    b.u32(0x4000_0600)
        .byte(1)
        .u32(16)
        .u32(2)
        .ulong(0x1041)
        .ulong(0x1044);
    b.u32(0x4000_0600).byte(1).u32(8).u32(1).ulong(0x250);
    b.u32(0x110).byte(1).u32(8).bytes(b"20240131"); // START_DATE
    b.ulong(0x11); // CKR_ATTRIBUTE_SENSITIVE, inside the success frame
    s.reply(b);
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::ATTRIBUTE_SENSITIVE))
    );
    let lens: Vec<_> = t.iter().map(|a| a.len).collect();
    assert_eq!(
        lens,
        [
            Some(NATIVE),
            Some(NATIVE),
            Some(5),
            Some(1),
            Some(1),
            Some(1),
            None,
            Some(2 * NATIVE),
            Some(NATIVE),
            Some(8),
        ]
    );
    assert_eq!(class[..], native(&[3])[..]);
    assert_eq!(&label[..5], b"eckey");
    assert_eq!(sign, [1]);
    assert_eq!(mechs[..2 * NATIVE], native(&[0x1041, 0x1044])[..]);
    assert_eq!(&date, b"20240131");

    // The request: (type, capacity) pairs; a size query sends 0, but for
    // ALLOWED_MECHANISMS, which 0.24.1 answers wrongly and gets a probe.
    let f = last(&s);
    assert_eq!((f.call_id(), f.signature()), (Some(24), Some(&b"uufA"[..])));
    let mut expect = Values::new().ulong(5).ulong(4).u32(10);
    for (ty, cap) in [
        (0x0, 8),
        (0x100, 0),
        (0x3, 32),
        (0x102, 0),
        (0x108, 1),
        (0x10c, 0),
        (0x11, 32),
        (0x4000_0600, 24),
        (0x4000_0600, 512),
        (0x110, 8),
    ] {
        expect = expect.u32(ty).u32(cap);
    }
    assert_eq!(f.values(), &expect.0[..]);
}

#[test]
fn nested_templates_are_answered_here() {
    let (s, m) = connected(2);
    let mut label = [0u8; 8];
    let mut t = [
        AttrOut {
            ty: attr::WRAP_TEMPLATE,
            buf: None,
            len: Some(3),
        },
        want(attr::LABEL, Some(&mut label)),
    ];
    s.reply(
        Body::new(24, "aAu")
            .u32(1)
            .u32(3)
            .byte(1)
            .u32(2)
            .bytes(b"ab")
            .ulong(0),
    );
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID))
    );
    assert_eq!((t[0].len, t[1].len), (None, Some(2)));
    assert_eq!(
        last(&s).values(),
        &Values::new().ulong(5).ulong(4).u32(1).u32(3).u32(8).0[..]
    );
    // All is well otherwise.
    let mut t = [want(attr::LABEL, Some(&mut label))];
    s.reply(
        Body::new(24, "aAu")
            .u32(1)
            .u32(3)
            .byte(1)
            .u32(2)
            .bytes(b"ab")
            .ulong(0),
    );
    assert_eq!(m.get_attributes(5, 4, &mut t), Ok(()));
}

#[test]
fn attribute_buffers_too_small_give_buffer_too_small() {
    let (s, m) = connected(2);
    let (mut label, mut class, mut mechs) = ([0u8; 2], [0u8; NATIVE - 1], [0u8; NATIVE]);
    let mut t = [
        want(attr::LABEL, Some(&mut label)),
        want(attr::CLASS, Some(&mut class)),
        want(0x4000_0600, Some(&mut mechs)),
    ];
    let mut b = Body::new(24, "aAu");
    b.u32(3);
    b.u32(0x3).byte(1).u32(5).bytes(b"eckey");
    b.u32(0x0).byte(1).u32(8).ulong(3);
    b.u32(0x4000_0600).byte(1).u32(16).u32(2).ulong(1).ulong(2);
    b.ulong(0);
    s.reply(b);
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::BUFFER_TOO_SMALL))
    );
    assert!(t.iter().all(|a| a.len.is_none()));
    // The module's own answer passes through, and the member is intact.
    let mut t = [want(attr::LABEL, None)];
    s.reply(Body::new(24, "aAu").u32(1).u32(3).byte(0).ulong(0x12));
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID))
    );
    assert_eq!(t[0].len, None);
}

#[test]
fn attribute_replies_that_are_not_the_protocol_break_the_connection() {
    let cases: &[(&str, Vec<u8>)] = &[
        (
            "another type",
            Body::new(24, "aAu").u32(1).u32(4).byte(0).ulong(0).into(),
        ),
        ("more attributes than asked", {
            Body::new(24, "aAu")
                .u32(2)
                .u32(3)
                .byte(0)
                .u32(3)
                .byte(0)
                .ulong(0)
                .into()
        }),
        (
            "fewer attributes than asked",
            Body::new(24, "aAu").u32(0).ulong(0).into(),
        ),
        ("no rv", Body::new(24, "aAu").u32(1).u32(3).byte(0).into()),
        ("rv CK_UNAVAILABLE_INFORMATION", {
            Body::new(24, "aAu")
                .u32(1)
                .u32(3)
                .byte(0)
                .ulong(u64::MAX)
                .into()
        }),
        (
            "a value cut short",
            Body::new(24, "aAu")
                .u32(1)
                .u32(3)
                .byte(1)
                .u32(5)
                .u32(5)
                .raw(b"eck")
                .into(),
        ),
        ("no value for a buffer", {
            Body::new(24, "aAu")
                .u32(1)
                .u32(3)
                .byte(1)
                .u32(5)
                .u32(0xffff_ffff)
                .ulong(0)
                .into()
        }),
    ];
    for (what, reply) in cases {
        let (s, m) = connected(2);
        let mut label = [0u8; 8];
        let mut t = [want(attr::LABEL, Some(&mut label))];
        s.reply(reply.clone());
        assert_eq!(
            m.get_attributes(5, 4, &mut t),
            Err(Error::Transport(TransportError::Protocol)),
            "{what}"
        );
        assert_broken(&s, &m);
    }
    // A ulong cut short, and a count of mechanisms past the body.
    for (ty, reply) in [
        (
            attr::CLASS,
            Body::new(24, "aAu")
                .u32(1)
                .u32(0)
                .byte(1)
                .u32(8)
                .u32(3)
                .clone(),
        ),
        (
            0x4000_0600,
            Body::new(24, "aAu")
                .u32(1)
                .u32(0x4000_0600)
                .byte(1)
                .u32(8)
                .u32(0x1000_0000)
                .ulong(1)
                .clone(),
        ),
    ] {
        let (s, m) = connected(2);
        let mut v = [0u8; 64];
        let mut t = [AttrOut {
            ty,
            buf: Some(&mut v),
            len: None,
        }];
        s.reply(reply);
        assert_eq!(
            m.get_attributes(5, 4, &mut t),
            Err(Error::Transport(TransportError::Protocol))
        );
        assert_broken(&s, &m);
    }
}

#[test]
fn an_empty_buffer_for_a_bool_attribute_is_too_small() {
    let (s, m) = connected(2);
    let mut t = [want(attr::SIGN, Some(&mut []))];
    // The client announces 1; the server has room and sends the value.
    s.reply(
        Body::new(24, "aAu")
            .u32(1)
            .u32(0x108)
            .byte(1)
            .u32(1)
            .byte(1)
            .ulong(0),
    );
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::BUFFER_TOO_SMALL))
    );
    assert_eq!(t[0].len, None);
}

#[test]
fn an_empty_buffer_for_a_byte_array_attribute_is_too_small() {
    let (s, m) = connected(2);
    let mut t = [want(attr::LABEL, Some(&mut []))];
    // Capacity 0 went out, which is a size query to the server: it answers
    // with the length and a NULL placeholder, as p11-kit does.
    s.reply(
        Body::new(24, "aAu")
            .u32(1)
            .u32(0x3)
            .byte(1)
            .u32(5)
            .u32(0xffff_ffff)
            .ulong(0),
    );
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::BUFFER_TOO_SMALL))
    );
    assert_eq!(t[0].len, None);
}

// ---------------------------------------------------------------------------
// Reconnect

#[test]
fn reconnect_opens_a_new_connection_and_finds_the_token_again() {
    let s = Script::new();
    let beta = token(0x12, "beta", "0002");
    s.version(2).serve_connect(&[alpha(), beta]);
    let (m, _) = member(&s, BUF, 1).unwrap();
    // The connection breaks.
    assert!(m.session_info(5).is_err());
    assert_broken(&s, &m);
    // The server comes back with its slots renumbered and another token.
    let before = s.frames().len();
    let gamma = token(0x11, "gamma", "0003");
    s.version(2).serve_connect(&[
        gamma,
        token(0x12, "alpha", "0001"),
        token(0x13, "beta", "0002"),
    ]);
    m.reconnect().unwrap();
    assert_eq!(m.slot_id(), 0x13);
    assert_eq!(s.connections(), 2);
    assert_eq!(s.offers(), [2, 2]);
    let f = s.frames();
    assert!(f[before..].iter().all(|f| f.connection == 1));
    assert_eq!(f[before].call_id(), Some(1), "C_Initialize first");
    // Calls go to the new connection and the new slot id.
    s.reply(Body::new(10, "u").ulong(0x21));
    assert_eq!(m.open_session(6), Ok(0x21));
    let f = last(&s);
    assert_eq!(
        (f.connection, f.values()),
        (1, &Values::new().ulong(0x13).ulong(6).0[..])
    );
}

#[test]
fn reconnect_of_a_live_member_drops_its_connection() {
    let (s, m) = connected(2);
    s.version(0).serve_connect(&[token(0x11, "alpha", "0001")]);
    m.reconnect().unwrap();
    assert_eq!(m.version(), Version::V0);
    assert_eq!(s.connections(), 2);
}

#[test]
fn reconnect_without_the_token_or_the_server_fails() {
    let (s, m) = connected(2);
    s.version(2).serve_connect(&[token(0x11, "other", "0009")]);
    assert_eq!(m.reconnect(), Err(Error::Rv(Rv::TOKEN_NOT_PRESENT)));
    s.push(Step::Refuse);
    assert_eq!(
        m.reconnect(),
        Err(Error::Transport(TransportError::Disconnected))
    );
    assert_broken(&s, &m);
    // And then it is back.
    s.version(2).serve_connect(&[alpha()]);
    assert_eq!(m.reconnect(), Ok(()));
    assert_eq!(m.slot_id(), 0x11);
}

#[test]
fn reconnect_finds_a_token_with_a_new_serial_by_its_label() {
    // Index 0 among tokens that all have the label (the usual HA layout).
    let s = Script::new();
    s.version(2)
        .serve_connect(&[alpha(), token(0x12, "alpha", "0002")]);
    let (m, _) = member(&s, BUF, 0).unwrap();
    s.version(2)
        .serve_connect(&[token(0x11, "alpha", "0007"), token(0x12, "alpha", "0002")]);
    m.reconnect().unwrap();
    assert_eq!(m.slot_id(), 0x11);
}

#[test]
fn reconnect_finds_a_reinitialised_token_among_other_labels() {
    // The member is the second token (index 1); its token was
    // re-initialised (SoftHSM gives it a new serial), its label kept.
    let s = Script::new();
    s.version(2)
        .serve_connect(&[alpha(), token(0x12, "beta", "0002")]);
    let (m, _) = member(&s, BUF, 1).unwrap();
    s.version(2)
        .serve_connect(&[alpha(), token(0x12, "beta", "0099")]);
    assert_eq!(m.reconnect(), Ok(()));
    assert_eq!(m.slot_id(), 0x12);
}
