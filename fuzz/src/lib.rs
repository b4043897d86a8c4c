//! The `rpc_reply` fuzz target: p11ha's p11-kit RPC client
//! (`p11ha_adapters::rpc`) against a server whose every reply the fuzzer
//! writes, through the scripted stream of `rpc::script`.
//!
//! A real p11-kit server only sends well-formed replies, and those are
//! tested against real servers; this target is for everything else. The
//! client must never panic, never read or write out of bounds, never
//! return more than a buffer holds, and once it has given a transport
//! error it must fail every later call at once without writing a byte.
//!
//! # Input
//!
//! ```text
//! input   = version config record*
//! version   the answer to the first connection's version byte; 0xff: that
//!           connection hangs up instead (the client then offers 0 on a new
//!           one, whose answer must come from a record)
//! config    bits 0-1: the member's buffer (256, 512, 2048 or 8192 bytes);
//!           bits 2-4: the most bytes one read or write moves (no limit, 1,
//!           2, 3, 5, 8, 13, 64); bit 5: the member is token 0 or 1
//! record  = tag ...
//!   tag & 3 = 0: a reply frame (its header made with the request's call
//!                code): u16 big-endian length, then that many body bytes
//!   tag & 3 = 1: raw bytes, unframed: u16 length, bytes
//!   tag & 3 = 2: the replies of a good connect after the version byte,
//!                from one byte p: 1 + (p & 3) tokens, slots from 0x11
//!                (0x21 if p & 4), p & 8 and p & 16 shift labels and serials
//!   tag & 3 = 3: by (tag >> 2) & 3: a hang-up, a timeout, a refused
//!                connect, or the version byte tag >> 4
//! ```
//!
//! Then the harness connects and makes a fixed sequence of calls that
//! reaches every decoder of the client (see [`run`]); each call takes
//! whatever the script holds next, and [`seeds`] builds inputs that answer
//! all of them properly.

/// The `config` fuzz target's harness: the configuration parser.
pub mod config;

use p11ha_adapters::rpc::script::{Body, Script, ScriptConnector, Step};
use p11ha_adapters::rpc::{RpcMember, Token};
use p11ha_core::ck::{attr, mech};
use p11ha_core::error::TransportError;
use p11ha_core::port::{Attr, AttrOut, DualOp, Mechanism, Member, Op, Param};
use p11ha_core::sync::SpinLock;
use p11ha_core::{Error, Result};

type M = RpcMember<ScriptConnector, SpinLock, Box<[u8]>>;

/// The member buffers a config can choose.
pub const BUFFERS: [usize; 4] = [256, 512, 2048, 8192];
const CHUNKS: [usize; 8] = [0, 1, 2, 3, 5, 8, 13, 64];
/// What a member buffer keeps for the fixed part of a call (the client's
/// `HEADER + OVERHEAD`): an output buffer larger than the rest is
/// announced as the rest.
const RESERVED: usize = 12 + 64;
const NATIVE: usize = core::mem::size_of::<core::ffi::c_ulong>();

/// What became of one input's calls (for the seeds' own test).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Calls made after the connect.
    pub calls: usize,
    /// Calls that succeeded.
    pub ok: usize,
    /// Calls that failed in transport.
    pub transport: usize,
    /// Script steps never served.
    pub unread: usize,
}

/// Runs one input; `None` if the connect failed.
pub fn run(data: &[u8]) -> Option<Outcome> {
    let [version, config, records @ ..] = data else {
        return None;
    };
    let script = Script::new();
    match version {
        0xff => script.hang_up(),
        v => script.version(*v),
    };
    script.chunk(CHUNKS[usize::from(config >> 2) & 7]);
    feed(&script, records);
    let buf = BUFFERS[usize::from(config & 3)];
    let index = usize::from(config >> 5) & 1;
    let connected = RpcMember::connect(
        script.connector(),
        || Some(SpinLock::new()),
        [vec![0u8; buf].into_boxed_slice()],
        index,
    );
    let Ok((member, tokens)) = connected else {
        return None;
    };
    assert!(index < tokens && tokens <= 8, "{index} of {tokens} tokens");
    let mut h = Harness {
        m: &member,
        s: &script,
        state: State::Live,
        room: buf - RESERVED,
        outcome: Outcome::default(),
    };
    h.calls();
    let (state, mut outcome) = (h.state, h.outcome);
    outcome.unread = script.remaining();
    check_frames(&script);
    let before = script.written();
    drop(member);
    if state == State::Broken {
        assert_eq!(script.written(), before, "a broken member's drop wrote");
    }
    Some(outcome)
}

/// Turns records into steps.
fn feed(script: &Script, mut rest: &[u8]) {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (a, b) = rest.split_at(n.min(rest.len()));
        *rest = b;
        a
    }
    fn sized<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
        let len = match take(rest, 2) {
            [a, b] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => 0,
        };
        take(rest, len)
    }
    while let [tag, tail @ ..] = rest {
        rest = tail;
        match tag & 3 {
            0 => {
                script.reply(sized(&mut rest).to_vec());
            }
            1 => {
                script.raw(sized(&mut rest).to_vec());
            }
            2 => {
                let p = take(&mut rest, 1).first().copied().unwrap_or(0);
                script.serve_connect(&tokens(p));
            }
            _ => {
                script.push(match (tag >> 2) & 3 {
                    0 => Step::HangUp,
                    1 => Step::TimedOut,
                    2 => Step::Refuse,
                    _ => Step::Version(tag >> 4),
                });
            }
        }
    }
}

/// The tokens of a canned connect.
pub fn tokens(p: u8) -> Vec<Token> {
    let first = if p & 4 != 0 { 0x21 } else { 0x11 };
    let (l, s) = ((p >> 3) & 1, (p >> 4) & 1);
    (0..=u64::from(p & 3))
        .map(|i| {
            let mut label = [b' '; 32];
            label[..5].copy_from_slice(b"token");
            label[5] = b'0' + (i as u8 + l) % 2;
            let mut serial = [b' '; 16];
            serial[..3].copy_from_slice(b"000");
            serial[3] = b'0' + i as u8 + s;
            Token {
                slot: first + i,
                label,
                serial,
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Live,
    /// A transport error was given: every call fails at once.
    Broken,
}

struct Harness<'a> {
    m: &'a M,
    s: &'a Script,
    state: State,
    /// The most output a request announces.
    room: usize,
    outcome: Outcome,
}

fn native(xs: &[u64]) -> Vec<u8> {
    xs.iter()
        .flat_map(|&x| (x as core::ffi::c_ulong).to_ne_bytes())
        .collect()
}

impl Harness<'_> {
    /// One call through the connection, and the rules every call keeps.
    fn call<T>(&mut self, what: &str, f: impl FnOnce(&M) -> Result<T>) -> Result<T> {
        let before = self.s.written();
        let r = f(self.m);
        if self.state == State::Broken {
            assert!(
                matches!(r, Err(Error::Transport(TransportError::Disconnected))),
                "{what} on a broken connection did not fail at once"
            );
            assert_eq!(
                self.s.written(),
                before,
                "{what} wrote on a broken connection"
            );
        }
        self.tally(&r);
        r
    }

    /// Counts a result, and learns the connection's state from it.
    fn tally<T>(&mut self, r: &Result<T>) {
        self.state = match r {
            Err(Error::Transport(_)) => State::Broken,
            _ => State::Live,
        };
        self.outcome.calls += 1;
        self.outcome.ok += usize::from(r.is_ok());
        self.outcome.transport += usize::from(self.state == State::Broken);
    }

    /// A call with an output buffer: what comes back fits it.
    fn output(
        &mut self,
        what: &str,
        out: Option<&mut [u8]>,
        f: impl FnOnce(&M, Option<&mut [u8]>) -> Result<usize>,
    ) {
        let given = out.as_deref().map(<[u8]>::len);
        let r = self.call(what, |m| f(m, out));
        match (given, r) {
            (Some(len), Ok(n)) => assert!(n <= len, "{what}: {n} bytes into {len}"),
            // "Too small" always asks for more than was given.
            (Some(len), Err(Error::BufferTooSmall { needed })) => {
                assert!(needed > len, "{what}: too small, {needed} needed of {len}")
            }
            (None, Err(Error::BufferTooSmall { .. })) => {
                panic!("{what}: a length query answered too small")
            }
            _ => {}
        }
    }

    /// A call filling a list of handles or mechanisms.
    fn list(
        &mut self,
        what: &str,
        out: Option<&mut [u64]>,
        f: impl FnOnce(&M, Option<&mut [u64]>) -> Result<usize>,
    ) {
        let given = out.as_deref().map(<[u64]>::len);
        let r = self.call(what, |m| f(m, out));
        match (given, r) {
            (Some(len), Ok(n)) => assert!(n <= len, "{what}: {n} into {len}"),
            (Some(len), Err(Error::BufferTooSmall { needed })) => {
                assert!(needed > len, "{what}: too small, {needed} needed of {len}")
            }
            (None, Err(Error::BufferTooSmall { .. })) => {
                panic!("{what}: a length query answered too small")
            }
            _ => {}
        }
    }

    /// `C_GetAttributeValue`: lengths fit buffers, nested templates are
    /// never filled.
    fn attributes(&mut self, what: &str, t: &mut [AttrOut<'_>]) {
        let _ = self.call(what, |m| m.get_attributes(5, 7, t));
        for a in t.iter() {
            if let (Some(n), Some(b)) = (a.len, a.buf.as_deref()) {
                assert!(
                    n <= b.len(),
                    "{what}: {:#x} has {n} bytes in {}",
                    a.ty,
                    b.len()
                );
            }
            if a.ty & attr::ARRAY_ATTRIBUTE != 0 && a.ty != 0x4000_0600 {
                assert_eq!(a.len, None, "{what}: a nested template came back");
            }
        }
    }

    /// `C_GenerateRandom`, in pieces when larger than the member's buffer.
    fn random(&mut self, what: &str, len: usize) {
        let mut out = vec![0u8; len];
        let _ = self.call(what, |m| m.generate_random(5, &mut out));
    }

    /// `reconnect`: a new connection, live unless it failed in transport.
    fn reconnect(&mut self) {
        let r = self.m.reconnect();
        self.tally(&r);
    }

    /// The sequence: every decoder, every encoder of the client.
    fn calls(&mut self) {
        let data = [0x11u8; 32];
        let iv = [7u8; 16];
        let pss = native(&[mech::SHA256, 2, 32]);
        let ctr = {
            let mut v = native(&[64]);
            v.extend_from_slice(&[9; 16]);
            v
        };
        let mac_len = native(&[8]);
        let class = native(&[3]);
        let mechs = native(&[mech::ECDSA, mech::ECDSA_SHA256]);
        let ecdsa = Mechanism {
            ty: mech::ECDSA,
            param: Param::None,
        };
        let cbc = Mechanism {
            ty: mech::AES_CBC,
            param: Param::Flat(&iv),
        };
        let pss = Mechanism {
            ty: mech::SHA256_RSA_PKCS_PSS,
            param: Param::Flat(&pss),
        };
        let oaep = Mechanism {
            ty: mech::RSA_PKCS_OAEP,
            param: Param::Oaep {
                hash: mech::SHA256,
                mgf: 2,
                source: 1,
                source_data: b"label",
            },
        };
        let gcm = Mechanism {
            ty: mech::AES_GCM,
            param: Param::Gcm {
                iv: &[1; 12],
                iv_bits: 96,
                aad: b"aad",
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
        let concat = Mechanism {
            ty: mech::CONCATENATE_BASE_AND_KEY,
            param: Param::Handle(9),
        };
        let ctr = Mechanism {
            ty: mech::AES_CTR,
            param: Param::Flat(&ctr),
        };
        let mac = Mechanism {
            ty: mech::AES_MAC_GENERAL,
            param: Param::Flat(&mac_len),
        };
        let opaque = Mechanism {
            ty: 0x8000_0001,
            param: Param::Opaque(&[1, 2, 3]),
        };
        let template = [
            Attr {
                ty: attr::CLASS,
                value: &class,
            },
            Attr {
                ty: attr::LABEL,
                value: b"key",
            },
            Attr {
                ty: attr::TOKEN,
                value: &[1],
            },
            Attr {
                ty: 0x4000_0600,
                value: &mechs,
            },
            Attr {
                ty: 0x110,
                value: b"20240131",
            },
        ];
        let big = self.room + 64;

        let _ = self.call("slot_info", |m| m.slot_info());
        let _ = self.call("token_info", |m| m.token_info());
        self.list("mechanism_list(NULL)", None, |m, o| m.mechanism_list(o));
        self.list("mechanism_list(8)", Some(&mut [0; 8]), |m, o| {
            m.mechanism_list(o)
        });
        self.list("mechanism_list([])", Some(&mut []), |m, o| {
            m.mechanism_list(o)
        });
        let _ = self.call("mechanism_info", |m| m.mechanism_info(mech::ECDSA));
        let _ = self.call("open_session", |m| m.open_session(6));
        let _ = self.call("session_info", |m| m.session_info(5));
        let _ = self.call("login", |m| m.login(5, 1, Some(b"1234")));
        let _ = self.call("find_init", |m| m.find_init(5, &template));
        self.list("find", Some(&mut [0; 4]), |m, o| {
            m.find(5, o.unwrap_or_default())
        });
        let _ = self.call("find_final", |m| m.find_final(5));
        {
            let (mut c, mut k, mut l, mut s, mut v, mut a, mut d) = (
                [0u8; NATIVE],
                [0u8; 4],
                [0u8; 16],
                [0u8; 1],
                [0u8; 64],
                [0u8; 3 * NATIVE],
                [0u8; 8],
            );
            let mut t = [
                want(attr::CLASS, Some(&mut c)),
                want(attr::KEY_TYPE, Some(&mut k)),
                want(attr::LABEL, Some(&mut l)),
                want(attr::SIGN, Some(&mut s)),
                want(attr::VALUE, Some(&mut v)),
                want(0x4000_0600, Some(&mut a)),
                want(0x110, Some(&mut d)),
                want(attr::WRAP_TEMPLATE, None),
                want(attr::EC_POINT, Some(&mut [])),
            ];
            self.attributes("get_attributes(values)", &mut t);
        }
        {
            let mut t = [
                want(attr::CLASS, None),
                want(attr::LABEL, None),
                want(attr::TOKEN, None),
                want(0x4000_0600, None),
                want(attr::ID, None),
                want(0x111, None),
            ];
            self.attributes("get_attributes(sizes)", &mut t);
        }

        let _ = self.call("sign_init", |m| m.op_init(5, Op::Sign, &ecdsa, 4));
        self.output("sign(64)", Some(&mut [0; 64]), |m, o| {
            m.op_single(5, Op::Sign, &data, o)
        });
        self.output("sign(NULL)", None, |m, o| {
            m.op_single(5, Op::Sign, &data, o)
        });
        self.output("sign(big)", Some(&mut vec![0; big]), |m, o| {
            m.op_single(5, Op::Sign, &data, o)
        });
        let _ = self.call("sign_update", |m| m.op_update(5, Op::Sign, &data, None));
        self.output("sign_final(16)", Some(&mut [0; 16]), |m, o| {
            m.op_final(5, Op::Sign, o)
        });

        let _ = self.call("encrypt_init", |m| m.op_init(5, Op::Encrypt, &cbc, 4));
        self.output("encrypt_update(32)", Some(&mut [0; 32]), |m, o| {
            m.op_update(5, Op::Encrypt, &data, o)
        });
        self.output("encrypt_update(NULL)", None, |m, o| {
            m.op_update(5, Op::Encrypt, &data, o)
        });
        self.output("encrypt_final([])", Some(&mut []), |m, o| {
            m.op_final(5, Op::Encrypt, o)
        });
        self.output("encrypt_final(16)", Some(&mut [0; 16]), |m, o| {
            m.op_final(5, Op::Encrypt, o)
        });
        let _ = self.call("encrypt_init(ctr)", |m| m.op_init(5, Op::Encrypt, &ctr, 4));
        let _ = self.call("encrypt_init(gcm)", |m| m.op_init(5, Op::Encrypt, &gcm, 4));
        self.output("encrypt(48)", Some(&mut [0; 48]), |m, o| {
            m.op_single(5, Op::Encrypt, &data, o)
        });

        let sha = Mechanism {
            ty: mech::SHA256,
            param: Param::None,
        };
        let _ = self.call("digest_init", |m| m.op_init(5, Op::Digest, &sha, 0));
        let _ = self.call("digest_update", |m| m.op_update(5, Op::Digest, &data, None));
        let _ = self.call("digest_key", |m| m.digest_key(5, 4));
        self.output("digest_final(32)", Some(&mut [0; 32]), |m, o| {
            m.op_final(5, Op::Digest, o)
        });

        self.reconnect();

        let _ = self.call("verify_init", |m| m.op_init(5, Op::Verify, &pss, 4));
        let _ = self.call("verify", |m| m.verify(5, &data, &[0x5a; 64]));
        let _ = self.call("verify_update", |m| m.op_update(5, Op::Verify, &data, None));
        let _ = self.call("verify_final", |m| m.verify_final(5, &[0x5a; 64]));
        let _ = self.call("decrypt_init", |m| m.op_init(5, Op::Decrypt, &oaep, 4));
        self.output("decrypt(big)", Some(&mut vec![0; big]), |m, o| {
            m.op_single(5, Op::Decrypt, &data, o)
        });
        self.output("decrypt_digest(16)", Some(&mut [0; 16]), |m, o| {
            m.dual_update(5, DualOp::DecryptDigest, &data, o)
        });
        self.output("decrypt_final(NULL)", None, |m, o| {
            m.op_final(5, Op::Decrypt, o)
        });
        let _ = self.call("sign_recover_init", |m| {
            m.op_init(5, Op::SignRecover, &mac, 4)
        });
        self.output("sign_recover(8)", Some(&mut [0; 8]), |m, o| {
            m.op_single(5, Op::SignRecover, &data, o)
        });
        self.output("verify_recover(NULL)", None, |m, o| {
            m.op_single(5, Op::VerifyRecover, &data, o)
        });

        let aes = Mechanism {
            ty: mech::AES_KEY_GEN,
            param: Param::None,
        };
        let ec = Mechanism {
            ty: mech::EC_KEY_PAIR_GEN,
            param: Param::None,
        };
        let wrap = Mechanism {
            ty: mech::AES_KEY_WRAP,
            param: Param::None,
        };
        let _ = self.call("generate_key", |m| m.generate_key(5, &aes, &template));
        let _ = self.call("generate_key_pair", |m| {
            m.generate_key_pair(5, &ec, &template[..2], &template[2..])
        });
        self.output("wrap_key(40)", Some(&mut [0; 40]), |m, o| {
            m.wrap_key(5, &wrap, 4, 6, o)
        });
        self.output("wrap_key(NULL)", None, |m, o| m.wrap_key(5, &wrap, 4, 6, o));
        self.output("wrap_key(opaque)", None, |m, o| {
            m.wrap_key(5, &opaque, 4, 6, o)
        });
        let _ = self.call("unwrap_key", |m| {
            m.unwrap_key(5, &wrap, 4, &[1; 40], &template)
        });
        let _ = self.call("derive_key(ecdh)", |m| m.derive_key(5, &ecdh, 4, &template));
        let _ = self.call("derive_key(concat)", |m| {
            m.derive_key(5, &concat, 4, &template)
        });

        let _ = self.call("create_object", |m| m.create_object(5, &template));
        let _ = self.call("copy_object", |m| m.copy_object(5, 7, &template[1..]));
        let _ = self.call("set_attributes", |m| {
            m.set_attributes(5, 7, &template[1..2])
        });
        let _ = self.call("object_size", |m| m.object_size(5, 7));
        let _ = self.call("destroy_object", |m| m.destroy_object(5, 7));
        let _ = self.call("seed_random", |m| m.seed_random(5, &data));
        self.random("generate_random(16)", 16);
        self.random("generate_random(big)", big);
        self.output("operation_state(NULL)", None, |m, o| {
            m.operation_state(5, o)
        });
        self.output("operation_state(64)", Some(&mut [0; 64]), |m, o| {
            m.operation_state(5, o)
        });
        let _ = self.call("set_operation_state", |m| {
            m.set_operation_state(5, &[1; 20], 0, 0)
        });
        let _ = self.call("init_pin", |m| m.init_pin(5, Some(b"1234")));
        let _ = self.call("set_pin", |m| m.set_pin(5, Some(b"1234"), Some(b"5678")));
        let _ = self.call("init_token", |m| m.init_token(Some(b"so"), &[b' '; 32]));
        let _ = self.call("logout", |m| m.logout(5));
        let _ = self.call("close_session", |m| m.close_session(5));
        let _ = self.call("close_all_sessions", |m| m.close_all_sessions());

        self.reconnect();
        let _ = self.call("token_info", |m| m.token_info());
    }
}

fn want(ty: u64, buf: Option<&mut [u8]>) -> AttrOut<'_> {
    AttrOut { ty, buf, len: None }
}

/// What was written is requests as the client makes them: no options,
/// call codes from 0x11 up, never reused (the drop's `C_Finalize` aside),
/// call ids of protocol version 0.
fn check_frames(script: &Script) {
    let mut last = 0x10;
    for f in script.frames() {
        assert!(f.options.is_empty(), "options sent");
        let id = f.call_id().expect("a call id");
        assert!((1..=65).contains(&id), "call id {id}");
        assert!(f.code > last, "call code {:#x} after {last:#x}", f.code);
        last = f.code;
    }
}

// ---------------------------------------------------------------------------
// Seeds

/// One record of an input.
pub enum Record {
    /// A reply body.
    Reply(Vec<u8>),
    /// Raw bytes.
    Raw(Vec<u8>),
    /// A canned connect.
    Connect(u8),
    /// A hang-up, a timeout, a refused connect.
    Control(Step),
}

/// Encodes an input.
pub fn input(version: u8, config: u8, records: &[Record]) -> Vec<u8> {
    let mut v = vec![version, config];
    for r in records {
        match r {
            Record::Reply(b) | Record::Raw(b) => {
                v.push(if matches!(r, Record::Reply(_)) { 0 } else { 1 });
                v.extend_from_slice(&(b.len() as u16).to_be_bytes());
                v.extend_from_slice(b);
            }
            Record::Connect(p) => v.extend_from_slice(&[2, *p]),
            Record::Control(step) => v.push(match step {
                Step::HangUp => 3,
                Step::TimedOut => 3 | 1 << 2,
                Step::Refuse => 3 | 2 << 2,
                Step::Version(x) => 3 | 3 << 2 | x << 4,
                _ => 3,
            }),
        }
    }
    v
}

fn ok(id: u32) -> Record {
    Record::Reply(Body::new(id, "").0)
}

fn reply(b: &mut Body) -> Record {
    Record::Reply(b.0.clone())
}

/// The answers a healthy server gives to the whole sequence of [`run`]
/// (`version` the protocol version, for the sizes it asks).
pub fn happy(version: u8, p: u8) -> Vec<Record> {
    let t = tokens(p);
    let token = |i: usize| Body::token_info(&t[i].label, &t[i].serial).0;
    let mut r = vec![Record::Connect(p)];
    let mut slot = Body::new(5, "ssuvv");
    slot.bytes(&[b' '; 64])
        .bytes(&[b' '; 32])
        .ulong(7)
        .raw(&[1, 0, 2, 0]);
    r.push(reply(&mut slot));
    r.push(Record::Reply(token(0)));
    r.push(reply(Body::new(7, "au").length(3)));
    r.push(reply(
        Body::new(7, "au")
            .byte(1)
            .u32(3)
            .ulong(1)
            .ulong(0x1041)
            .ulong(0x250),
    ));
    r.push(reply(Body::new(7, "au").length(3)));
    r.push(reply(
        Body::new(8, "uuu").ulong(256).ulong(521).ulong(0x2800),
    ));
    r.push(reply(Body::new(10, "u").ulong(5)));
    r.push(reply(
        Body::new(13, "uuuu").ulong(0x11).ulong(3).ulong(6).ulong(0),
    ));
    r.push(ok(18));
    r.push(ok(26));
    r.push(reply(Body::new(27, "au").byte(1).u32(2).ulong(7).ulong(8)));
    r.push(ok(28));
    // get_attributes(values): 8 sent (the nested template is not).
    let mut a = Body::new(24, "aAu");
    a.u32(8);
    a.u32(0x0).byte(1).u32(8).ulong(3);
    a.u32(0x100).byte(1).u32(8).ulong(3);
    a.u32(0x3).byte(1).u32(5).bytes(b"eckey");
    a.u32(0x108).byte(1).u32(1).byte(1);
    a.u32(0x11).byte(0);
    a.u32(0x4000_0600)
        .byte(1)
        .u32(16)
        .u32(2)
        .ulong(0x1041)
        .ulong(0x1044);
    a.u32(0x110).byte(1).u32(8).bytes(b"20240131");
    a.u32(0x181).byte(0);
    a.ulong(0x11);
    r.push(reply(&mut a));
    let mut a = Body::new(24, "aAu");
    a.u32(6);
    a.u32(0x0).byte(1).u32(8).ulong(0);
    a.u32(0x3).byte(1).u32(5).u32(0xffff_ffff);
    a.u32(0x1).byte(1).u32(1).byte(0);
    a.u32(0x4000_0600).byte(1).u32(8).u32(1).ulong(0x1041);
    a.u32(0x102).byte(0);
    a.u32(0x111).byte(1).u32(0).u32(0xffff_ffff);
    a.ulong(0);
    r.push(reply(&mut a));
    // Sign.
    r.push(ok(42));
    r.push(reply(Body::new(43, "ay").data(&[0x5a; 64])));
    r.push(reply(Body::new(43, "ay").length(64)));
    r.push(reply(Body::new(43, "ay").data(&[0x5a; 64])));
    r.push(ok(44));
    r.push(reply(Body::new(45, "ay").length(64)));
    // Encrypt.
    r.push(ok(29));
    r.push(reply(Body::new(31, "ay").data(&[1; 32])));
    // encrypt_update(NULL) is answered by the client (AES-CBC, 32 bytes).
    r.push(reply(Body::new(32, "ay").length(16)));
    r.push(reply(Body::new(32, "ay").data(&[2; 16])));
    r.push(ok(29));
    if version > 0 {
        r.push(ok(29));
    }
    r.push(reply(Body::new(30, "ay").data(&[3; 48])));
    // Digest.
    r.push(ok(37));
    r.push(ok(39));
    r.push(ok(40));
    r.push(reply(Body::new(41, "ay").data(&[4; 32])));
    // Reconnect.
    r.push(Record::Control(Step::Version(version)));
    r.push(Record::Connect(p));
    // Verify, decrypt, recover.
    r.push(ok(48));
    r.push(ok(49));
    r.push(ok(50));
    r.push(ok(51));
    r.push(ok(33));
    r.push(reply(Body::new(34, "ay").data(&[5; 100])));
    r.push(reply(Body::new(55, "ay").data(&[6; 16])));
    r.push(reply(Body::new(36, "ay").length(0)));
    r.push(ok(46));
    r.push(reply(Body::new(47, "ay").data(&[7; 8])));
    r.push(reply(Body::new(53, "ay").length(32)));
    // Keys.
    r.push(reply(Body::new(58, "u").ulong(20)));
    r.push(reply(Body::new(59, "uu").ulong(21).ulong(22)));
    r.push(reply(Body::new(60, "ay").data(&[8; 40])));
    r.push(reply(Body::new(60, "ay").length(40)));
    r.push(reply(Body::new(61, "u").ulong(23)));
    if version > 0 {
        r.push(reply(Body::new(62, "u").ulong(24)));
    }
    r.push(reply(Body::new(62, "u").ulong(25)));
    // Objects.
    r.push(reply(Body::new(20, "u").ulong(26)));
    r.push(reply(Body::new(21, "u").ulong(27)));
    r.push(ok(25));
    r.push(reply(Body::new(23, "u").ulong(1024)));
    r.push(ok(22));
    // Random, state, PINs, the end.
    r.push(ok(63));
    r.push(reply(Body::new(64, "ay").data(&[9; 16])));
    r.push(Record::Reply(Body::error(0x2).0));
    r.push(reply(Body::new(16, "ay").length(64)));
    r.push(reply(Body::new(16, "ay").data(&[1; 20])));
    r.push(ok(17));
    r.push(ok(14));
    r.push(ok(15));
    r.push(ok(9));
    r.push(ok(19));
    r.push(ok(11));
    r.push(ok(12));
    r.push(Record::Control(Step::Version(version)));
    r.push(Record::Connect(p));
    r.push(Record::Reply(token(0)));
    r
}

/// A few inputs that reach deep: healthy servers of each version and
/// buffer size, one with error frames, one that hangs up on version 2,
/// one cut short at each of a few points, one dribbling bytes.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (version, config) in [(0u8, 0u8), (1, 1), (2, 2), (2, 3), (0, 0b10_0111)] {
        let p = if config & 0x20 != 0 { 1 } else { 0 };
        out.push((
            format!("happy-v{version}-c{config:02x}"),
            input(version, config, &happy(version, p)),
        ));
    }
    // Every call answered with an error frame after a good connect.
    let mut errors = vec![Record::Connect(0)];
    for rv in [0x3u64, 0xe0, 0x82, 0xa0, 0x150, 0x70, 0x0] {
        errors.push(Record::Reply(Body::error(rv).0));
    }
    out.push(("errors".into(), input(2, 1, &errors)));
    // A server before 0.24.1: hangs up on version 2.
    let mut old = vec![Record::Control(Step::Version(0))];
    old.extend(happy(0, 0));
    out.push(("fallback".into(), input(0xff, 0, &old)));
    // Bad framing right after connect.
    let raw = |b: &[u8]| Record::Raw(b.to_vec());
    for (name, rec) in [
        ("raw-header", raw(&[0, 0, 0, 0x14, 0, 0, 1, 1, 0, 0, 0, 8])),
        ("raw-short", raw(&[0, 0, 0, 0x14, 0, 0, 0, 0])),
        ("timeout", Record::Control(Step::TimedOut)),
    ] {
        out.push((name.into(), input(2, 0, &[Record::Connect(0), rec])));
    }
    // Short reads and writes.
    out.push(("dribble".into(), input(2, 0b1_0100, &happy(2, 0))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_seeds_answer_every_call() {
        for (name, input) in seeds()
            .iter()
            .filter(|(n, _)| n.starts_with("happy") || n == "fallback" || n == "dribble")
        {
            let o = run(input).unwrap_or_else(|| panic!("{name}: no connect"));
            assert_eq!((o.transport, o.unread), (0, 0), "{name}: {o:?}");
        }
    }

    #[test]
    fn the_other_seeds_run() {
        for (_, input) in seeds() {
            run(&input);
        }
    }

    /// Every input kept under `regressions/<target>/` (inputs that once
    /// broke a harness, and what the fix made of them) runs clean.
    #[test]
    fn the_regression_inputs_run() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
        let mut ran = 0;
        for (target, run) in [
            (
                "config",
                (|d: &[u8]| {
                    let _ = config::run(d);
                }) as fn(&[u8]),
            ),
            ("rpc_reply", |d: &[u8]| {
                let _ = run(d);
            }),
        ] {
            let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                run(&std::fs::read(&path).unwrap());
                ran += 1;
            }
        }
        assert!(ran > 0, "no input under {}", dir.display());
    }
}
