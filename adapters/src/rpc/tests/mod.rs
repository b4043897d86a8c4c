//! The client against a scripted server: the bytes it sends, and what it
//! makes of replies a real p11-kit server would not send (malformed,
//! truncated, mislabelled, oversized). The well-formed paths are also
//! tested against real `p11-kit server` processes, in the integration
//! tests (`tests/tests/remote*.rs`).
//!
//! By subject, as the client is in parts:
//! - `connect`: connecting, versions, finding the token and finding it
//!   again, and the end of a member;
//! - `framing`: frames, error frames, and what breaks a connection for good
//!   (timeouts, hang-ups, replies that are not the protocol);
//! - `calls`: each call's request, by protocol version; mechanisms that
//!   cannot travel; PINs that do not stay in the buffer;
//! - `outputs`: output buffers, length queries and "too small";
//! - `attributes`: `C_GetAttributeValue`'s typed values;
//! - `pipeline`: several calls in flight on one connection, against a
//!   stand-in server on a real Unix socket (a p11-kit server cannot be
//!   made to hold a reply back, answer out of order, or freeze on cue).
//!
//! Here is what they share: a member connected to a scripted server, the
//! values a request should carry ([`Values`]), and [`assert_broken`], since
//! most unhappy paths end in a connection that must never be read again.

extern crate std;

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use p11ha_core::Error;
use p11ha_core::ck::attr;
use p11ha_core::error::TransportError;
use p11ha_core::port::{AttrOut, Member, Op};
use p11ha_core::sync::SpinLock;

use crate::rpc::codec::{NATIVE, put_native_ulong};
use crate::rpc::script::{Body, Frame, Script, ScriptConnector};
use crate::rpc::{RpcMember, Token};

mod attributes;
mod calls;
mod connect;
mod framing;
mod outputs;
#[cfg(feature = "net")]
mod pipeline;

type M = RpcMember<ScriptConnector, SpinLock, Box<[u8]>>;

/// The member buffer of most tests.
const BUF: usize = 4096;
/// `HEADER + OVERHEAD` in the client (`conn`, `client`): what a buffer
/// keeps for the fixed part of a call, the rest being the most an output
/// can announce.
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
        || Some(SpinLock::new()),
        [vec![0u8; buf].into_boxed_slice()],
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
    // A request that could not even be encoded (a parameter that cannot
    // travel) is answered as broken too, not CKR_MECHANISM_INVALID: the
    // connection is what fails first.
    let opaque = p11ha_core::port::Mechanism {
        ty: 0x8000_0001,
        param: p11ha_core::port::Param::Opaque(&[1, 2, 3]),
    };
    assert_eq!(m.op_init(1, Op::Sign, &opaque, 2), gone);
    assert_eq!(s.written(), before, "a broken member writes nothing");
}
