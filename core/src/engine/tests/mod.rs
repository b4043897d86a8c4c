//! The engine's parts, each tested against scripted software tokens
//! ([`crate::testing::Token`]) through the engine's PKCS#11 calls and the
//! part's own state. The same behaviour is tested through `libp11ha.so`
//! against SoftHSM in `tests/tests/`; here each part's invariants are
//! checked where they live, and the token shows what reached each member.

extern crate std;

use std::sync::Arc;
use std::vec::Vec;

use crate::ck::{attr, flags, mech, user};
use crate::config::{Config, Mode, WldSlots};
use crate::port::{Attr, Mechanism, Param};
use crate::testing::{self, LABEL, PIN, Testbed, Token};

use super::Engine;

mod logins;
mod objects;
mod pool;
mod replay;
mod replicate;
mod secrets;
mod sessions;
mod support;

type E = Engine<Testbed<Arc<Token>>>;

/// Read/write serial session flags.
const RW: u64 = flags::SERIAL_SESSION | flags::RW_SESSION;

/// An engine in `mode` over `n` tokens holding [`testing::objects`], virtual
/// slot 0 showing them; failed members are tried again after 100 ms.
fn engine(mode: Mode, n: u64) -> (E, Vec<Arc<Token>>) {
    let config = Config {
        mode,
        wld_slots: WldSlots::new().with(0, LABEL),
        recover_delay_ms: Some(100),
        ..Config::new()
    };
    let tokens: Vec<Arc<Token>> = (1..=n)
        .map(|slot| Arc::new(Token::new(slot, &testing::objects())))
        .collect();
    let e = testing::engine(&config, tokens.iter().cloned());
    (e, tokens)
}

/// A session of `e` on slot 0, logged in as the user.
fn logged_in(e: &E) -> u64 {
    let s = e.open_session(0, RW).unwrap();
    e.login(s, user::USER, Some(PIN)).unwrap();
    s
}

/// The member that serves session `s`.
fn member_of(e: &E, s: u64) -> usize {
    e.session_member(s).unwrap()
}

/// The one object labelled `label` that a search in `s` finds.
fn find(e: &E, s: u64, label: &str) -> u64 {
    e.find_init(
        s,
        &[Attr {
            ty: attr::LABEL,
            value: label.as_bytes(),
        }],
    )
    .unwrap();
    let mut out = [0u64; 4];
    let n = e.find(s, &mut out).unwrap();
    e.find_final(s).unwrap();
    assert_eq!(n, 1, "one {label}");
    out[0]
}

fn mechanism(ty: u64) -> Mechanism<'static> {
    Mechanism {
        ty,
        param: Param::None,
    }
}

/// The toy digest (FNV-1a) of `data` through session `s`, in `parts`.
fn digest(e: &E, s: u64, data: &[u8], parts: usize) -> Vec<u8> {
    e.op_init(s, crate::port::Op::Digest, &mechanism(mech::SHA256), 0)
        .unwrap();
    for part in data.chunks(data.len().div_ceil(parts).max(1)) {
        e.op_update(s, crate::port::Op::Digest, part, None).unwrap();
    }
    let mut out = [0u8; 8];
    let n = e
        .op_final(s, crate::port::Op::Digest, Some(&mut out))
        .unwrap();
    out[..n].to_vec()
}
