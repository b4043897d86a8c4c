//! Token writes: on every member in service before the call returns; what
//! cannot be repeated is refused (or kept local when configured so); a
//! member that missed a write waits for a sync.

use crate::ck::{Rv, attr, mech};
use crate::config::{Config, Mode, WldSlots};
use crate::error::Error;
use crate::port::Attr;

extern crate std;
use std::sync::Arc;
use std::vec::Vec;

use super::{E, RW, engine, find, logged_in, mechanism, member_of};
use crate::testing::{self, LABEL, Token};

const DATA: [u8; core::mem::size_of::<core::ffi::c_ulong>()] = [0; _];

const NEW: [Attr<'static>; 3] = [
    Attr {
        ty: attr::CLASS,
        value: &DATA,
    },
    Attr {
        ty: attr::TOKEN,
        value: &[1],
    },
    Attr {
        ty: attr::LABEL,
        value: b"written",
    },
];

#[test]
fn a_token_object_made_through_one_member_is_on_every_member() {
    for mode in [Mode::Wld, Mode::Ha] {
        let (e, tokens) = engine(mode, 3);
        let s = logged_in(&e);
        let before: Vec<usize> = tokens.iter().map(|t| t.objects()).collect();
        let h = e.create_object(s, &NEW).unwrap();
        for (t, n) in tokens.iter().zip(&before) {
            assert_eq!(t.objects(), n + 1, "{mode:?}");
        }
        // One handle, whichever member a session is on.
        for _ in 0..3 {
            let t = e.open_session(0, RW).unwrap();
            assert_eq!(find(&e, t, "written"), h, "{mode:?}");
        }
        // Destroyed everywhere.
        e.destroy_object(s, h).unwrap();
        for (t, n) in tokens.iter().zip(&before) {
            assert_eq!(t.objects(), *n, "{mode:?}");
        }
    }
}

#[test]
fn a_generated_token_key_that_cannot_reach_every_member_is_refused() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let s = logged_in(&e);
    let before: Vec<usize> = tokens.iter().map(|t| t.objects()).collect();
    assert_eq!(
        e.generate_key(s, &mechanism(mech::AES_KEY_GEN), &NEW),
        Err(Error::Rv(Rv::FUNCTION_FAILED))
    );
    assert_eq!(e.events().count("Token object not made: C_GenerateKey"), 1);
    let after: Vec<usize> = tokens.iter().map(|t| t.objects()).collect();
    assert_eq!(after, before, "nothing left behind");
}

#[test]
fn p11ha_token_keys_local_keeps_it_on_one_member_and_says_so() {
    let config = Config {
        mode: Mode::Wld,
        wld_slots: WldSlots::new().with(0, LABEL),
        token_keys_local: true,
        ..Config::new()
    };
    let tokens: Vec<Arc<Token>> = (1..=2)
        .map(|slot| Arc::new(Token::new(slot, &testing::objects())))
        .collect();
    let e: E = testing::engine(&config, tokens.iter().cloned());
    let s = logged_in(&e);
    let own = member_of(&e, s);
    let before: Vec<usize> = tokens.iter().map(|t| t.objects()).collect();
    e.generate_key(s, &mechanism(mech::AES_KEY_GEN), &NEW)
        .unwrap();
    assert_eq!(tokens[own].objects(), before[own] + 1);
    assert_eq!(tokens[1 - own].objects(), before[1 - own]);
    assert_eq!(e.events().count("Token object on one HSM only"), 1);
}

#[test]
fn a_member_that_missed_a_write_waits_for_a_sync() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    let other = 1 - member_of(&e, s);
    tokens[other].kill();
    e.take_out(other, Rv::DEVICE_ERROR);
    e.create_object(s, &NEW).unwrap();
    assert_eq!(
        e.events()
            .count(&std::format!("HSM needs sync hsmIdx={other}")),
        1
    );
    assert!(e.member_needs_sync(other));
    // It answers again, and is not taken back: it lacks the object.
    tokens[other].restart();
    assert_eq!(e.recover(1_000), 0);
    assert!(!e.member_up(other));
    // Writes while it waits are not said again.
    e.create_object(s, &NEW).unwrap();
    assert_eq!(e.events().count("HSM needs sync"), 1);
}

#[test]
fn c_init_token_initialises_every_member_when_no_session_is_open() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let label = crate::config::label(LABEL).unwrap();
    let s = e.open_session(0, RW).unwrap();
    assert_eq!(
        e.init_token(0, Some(b"so"), &label),
        Err(Error::Rv(Rv::SESSION_EXISTS))
    );
    e.close_session(s).unwrap();
    // Another label: the virtual slot is the tokens that carry its own.
    let other = crate::config::label("Other").unwrap();
    assert_eq!(
        e.init_token(0, Some(b"so"), &other),
        Err(Error::Rv(Rv::ARGUMENTS_BAD))
    );
    assert_eq!(e.events().count("C_InitToken refused"), 1);
    assert!(tokens.iter().all(|t| t.objects() > 0));
    e.init_token(0, Some(b"so"), &label).unwrap();
    assert!(tokens.iter().all(|t| t.objects() == 0), "every member");
    // The members serve again (anchors opened anew).
    let s = e.open_session(0, RW).unwrap();
    assert!(e.session_info(s).is_ok());
}
