//! Objects: one virtual handle per object whichever member serves it, token
//! objects found again by identity, token-wide destruction, and session
//! objects that die with the session that made them.

use crate::ck::{Rv, attr, mech};
use crate::config::Mode;
use crate::error::Error;
use crate::port::{Attr, Op};

extern crate std;

use super::{E, RW, engine, find, logged_in, mechanism, member_of};

/// Two logged-in sessions of `e`, on different members.
fn two_sessions(e: &E) -> (u64, u64) {
    let a = logged_in(e);
    let b = e.open_session(0, RW).unwrap();
    assert_ne!(member_of(e, a), member_of(e, b));
    (a, b)
}

#[test]
fn a_token_object_has_one_handle_on_every_member() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let (a, b) = two_sessions(&e);
    let key = find(&e, a, "aes-key");
    // Used in the session on the other member, which never served it: found
    // there by identity.
    let searches = tokens[member_of(&e, b)].calls("find_init");
    let mut sig = [0u8; 8];
    e.op_init(b, Op::Sign, &mechanism(mech::AES_MAC), key)
        .unwrap();
    let n = e.op_single(b, Op::Sign, b"data", Some(&mut sig)).unwrap();
    assert_eq!(&sig[..n], &crate::testing::fnv(&[&[0x5a; 16], b"data"]));
    assert_eq!(tokens[member_of(&e, b)].calls("find_init"), searches + 1);
    // Found there by the application: the same handle.
    assert_eq!(find(&e, b, "aes-key"), key);
}

#[test]
fn a_token_object_destroyed_is_gone_from_every_member() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let (a, b) = two_sessions(&e);
    let note = find(&e, a, "note");
    let before: usize = tokens.iter().map(|t| t.objects()).sum();
    e.destroy_object(b, note).unwrap();
    let after: usize = tokens.iter().map(|t| t.objects()).sum();
    assert_eq!(after, before - 2, "on both members");
    assert_eq!(
        e.get_attributes(a, note, &mut []),
        Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
    );
}

#[test]
fn a_token_object_missing_on_a_member_is_answered_there() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let (a, b) = two_sessions(&e);
    let note = find(&e, a, "note");
    tokens[member_of(&e, b)].remove_token_object("note");
    assert_eq!(
        e.get_attributes(b, note, &mut []),
        Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
    );
    assert!(e.get_attributes(a, note, &mut []).is_ok());
}

#[test]
fn a_session_object_dies_with_its_session() {
    let (e, tokens) = engine(Mode::Wld, 1);
    let a = logged_in(&e);
    let b = e.open_session(0, RW).unwrap();
    let data = [Attr {
        ty: attr::LABEL,
        value: b"scratch",
    }];
    let o = e.create_object(a, &data).unwrap();
    assert!(e.objects.is_session_object(o));
    assert_eq!(find(&e, b, "scratch"), o, "seen from the other session");
    let objects = tokens[0].objects();
    e.close_session(a).unwrap();
    assert_eq!(tokens[0].objects(), objects - 1);
    assert_eq!(
        e.get_attributes(b, o, &mut []),
        Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
    );
}

/// An object p11ha cannot find on another member (its label is longer than
/// an identity keeps) gets a new entry each time a search meets it after
/// its member failed and came back: the old entry must go, or a long-lived
/// application fills the table with dead objects.
#[test]
fn an_object_known_to_one_member_only_leaks_no_entry_across_recoveries() {
    let long = [b'x'; 100];
    let data = (crate::ck::class::DATA as core::ffi::c_ulong).to_ne_bytes();
    let object: &[(u64, &[u8])] = &[
        (attr::CLASS, &data),
        (attr::TOKEN, &[1]),
        (attr::LABEL, &long),
    ];
    let token = std::sync::Arc::new(crate::testing::Token::new(1, &[object]));
    let config = crate::config::Config {
        mode: Mode::Ha,
        wld_slots: crate::config::WldSlots::new().with(0, crate::testing::LABEL),
        recover_delay_ms: Some(1),
        ..crate::config::Config::new()
    };
    let e = crate::testing::engine(&config, [token.clone()]);
    let s = logged_in(&e);
    let template = [Attr {
        ty: attr::LABEL,
        value: &long,
    }];
    // Twice the table's capacity of failures and recoveries.
    for round in 0..2 * crate::testing::CAPACITY.objects as u64 {
        e.find_init(s, &template).unwrap();
        let mut out = [0u64; 2];
        assert_eq!(e.find(s, &mut out), Ok(1), "round {round}");
        e.find_final(s).unwrap();
        token.kill();
        e.take_out(0, Rv::DEVICE_ERROR);
        token.restart();
        assert_eq!(e.recover(round + 1), 1, "round {round}");
    }
}
