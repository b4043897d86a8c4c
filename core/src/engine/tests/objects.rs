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

/// A token object deleted on one member behind p11ha's back: that member
/// no longer holds what the others hold. It is taken out, said in the log;
/// in HA mode the call fails over and the application sees the right
/// answer.
#[test]
fn a_token_object_missing_on_a_member_takes_it_out_as_inconsistent() {
    for mode in [Mode::Wld, Mode::Ha] {
        let (e, tokens) = engine(mode, 2);
        let (a, b) = two_sessions(&e);
        let note = find(&e, a, "note");
        let lacking = member_of(&e, b);
        tokens[lacking].remove_token_object("note");
        let r = e.get_attributes(b, note, &mut []);
        assert_eq!(
            e.events()
                .count(&std::format!("HSM inconsistent hsmIdx={lacking}")),
            1,
            "{mode:?}"
        );
        assert!(!e.member_up(lacking), "{mode:?}");
        match mode {
            Mode::Ha => assert_eq!(r, Ok(()), "failed over"),
            _ => assert_eq!(r, Err(Error::Rv(Rv::DEVICE_ERROR))),
        }
        assert!(e.get_attributes(a, note, &mut []).is_ok());
    }
}

/// A token object another application destroyed on every member: gone,
/// and no member is blamed.
#[test]
fn a_token_object_gone_everywhere_is_gone() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let (a, b) = two_sessions(&e);
    let note = find(&e, a, "note");
    for t in &tokens {
        t.remove_token_object("note");
    }
    assert_eq!(
        e.get_attributes(b, note, &mut []),
        Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
    );
    assert!(e.member_up(member_of(&e, b)));
    assert_eq!(e.events().count("HSM inconsistent"), 0);
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

/// Generates a session AES key in `s` (labelled `label`).
fn session_key(e: &E, s: u64, label: &'static str) -> u64 {
    e.generate_key(
        s,
        &mechanism(mech::AES_KEY_GEN),
        &[Attr {
            ty: attr::LABEL,
            value: label.as_bytes(),
        }],
    )
    .unwrap()
}

/// The AES-MAC of `data` under `key`, through session `s`.
fn mac(e: &E, s: u64, key: u64, data: &[u8]) -> crate::error::Result<std::vec::Vec<u8>> {
    e.op_init(s, Op::Sign, &mechanism(mech::AES_MAC), key)?;
    let mut out = [0u8; 8];
    let n = e.op_single(s, Op::Sign, data, Some(&mut out))?;
    Ok(out[..n].to_vec())
}

#[test]
fn a_session_object_is_used_in_every_session_whatever_its_member() {
    for mode in [Mode::Wld, Mode::Ha] {
        let (e, tokens) = engine(mode, 2);
        let (a, b) = two_sessions(&e);
        let home = member_of(&e, a);
        // Made in one session (a generated key: it cannot be made again)...
        let key = session_key(&e, a, "k");
        let by_a = mac(&e, a, key, b"data").unwrap();
        // ...and used in the other, placed on the other member: that session
        // moves to the key's member first, and gets the same answer.
        assert_eq!(mac(&e, b, key, b"data").unwrap(), by_a, "{mode:?}");
        assert_eq!(member_of(&e, b), home, "{mode:?}");
        assert_eq!(
            tokens[1 - home].sessions(),
            1,
            "{mode:?}: only the anchor is left on the other member"
        );
        // The same handle in both sessions' searches, once.
        assert_eq!(find(&e, b, "k"), key);
        assert_eq!(find(&e, a, "k"), key);
    }
}

#[test]
fn every_session_object_of_a_slot_is_made_at_its_home() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let (a, b) = two_sessions(&e);
    let home = member_of(&e, a);
    let k1 = session_key(&e, a, "k1");
    let data = [Attr {
        ty: attr::LABEL,
        value: b"k2",
    }];
    // Made in the session on the other member: made at home.
    let k2 = e.create_object(b, &data).unwrap();
    assert_eq!(member_of(&e, b), home);
    assert_eq!(tokens[1 - home].objects(), tokens[home].objects() - 2);
    // A search from a third session, placed anywhere, sees each once.
    let c = e.open_session(0, RW).unwrap();
    assert_eq!(find(&e, c, "k1"), k1);
    assert_eq!(find(&e, c, "k2"), k2);
    // A search for token objects alone does not move a session.
    let d = e.open_session(0, RW).unwrap();
    let d_member = member_of(&e, d);
    e.find_init(
        d,
        &[Attr {
            ty: attr::TOKEN,
            value: &[1],
        }],
    )
    .unwrap();
    e.find_final(d).unwrap();
    assert_eq!(member_of(&e, d), d_member);
    // Destroyed from another session, closed with its maker.
    e.destroy_object(c, k2).unwrap();
    assert_eq!(
        e.get_attributes(a, k2, &mut []),
        Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
    );
    e.close_session(a).unwrap();
    assert_eq!(
        e.get_attributes(b, k1, &mut []),
        Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
    );
    assert_eq!(tokens[home].objects(), tokens[1 - home].objects());
}

#[test]
fn a_session_whose_state_cannot_move_is_answered_operation_active() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let (a, b) = two_sessions(&e);
    let key = session_key(&e, a, "k");
    let b_member = member_of(&e, b);
    // A digest in progress on b: WLD mode keeps no journal to move it with.
    e.op_init(b, Op::Digest, &mechanism(mech::SHA256), 0)
        .unwrap();
    e.op_update(b, Op::Digest, b"part", None).unwrap();
    assert_eq!(
        e.op_init(b, Op::Sign, &mechanism(mech::AES_MAC), key),
        Err(Error::Rv(Rv::OPERATION_ACTIVE))
    );
    assert_eq!(e.events().count("Session not moved to hsmIdx="), 1);
    // Nothing changed: the digest goes on where it was.
    assert_eq!(member_of(&e, b), b_member);
    let mut out = [0u8; 8];
    let n = e.op_final(b, Op::Digest, Some(&mut out)).unwrap();
    assert_eq!(&out[..n], &crate::testing::fnv(&[b"part"]));
    // Once it is over, the session moves.
    assert!(mac(&e, b, key, b"x").is_ok());
    assert_eq!(member_of(&e, b), member_of(&e, a));
    let _ = tokens;
}

#[test]
fn in_ha_mode_the_journal_moves_a_session_with_its_search() {
    let (e, _tokens) = engine(Mode::Ha, 2);
    let (a, b) = two_sessions(&e);
    // A search in progress on b (before any session object exists, so it
    // runs where b is), one of its two results received.
    e.find_init(
        b,
        &[Attr {
            ty: attr::CLASS,
            value: &(crate::ck::class::SECRET_KEY as core::ffi::c_ulong).to_ne_bytes(),
        }],
    )
    .unwrap();
    let mut first = [0u64; 1];
    assert_eq!(e.find(b, &mut first), Ok(1));
    let key = session_key(&e, a, "k");
    // The sign needs the key at home: b moves, its search replayed there.
    assert!(mac(&e, b, key, b"data").is_ok());
    assert_eq!(member_of(&e, b), member_of(&e, a));
    // The rest of the search: nothing b had received already.
    let mut rest = [0u64; 8];
    let n = e.find(b, &mut rest).unwrap();
    e.find_final(b).unwrap();
    assert!(!rest[..n].contains(&first[0]));
}

#[test]
fn in_ha_mode_session_objects_follow_their_home_for_every_session() {
    let (e, tokens) = engine(Mode::Ha, 3);
    let a = logged_in(&e);
    let b = e.open_session(0, RW).unwrap();
    let c = e.open_session(0, RW).unwrap();
    let data = [Attr {
        ty: attr::VALUE,
        value: &[7; 16],
    }];
    let key = e.create_object(a, &data).unwrap();
    let home = member_of(&e, a);
    let by_a = mac(&e, a, key, b"data").unwrap();
    assert_eq!(mac(&e, b, key, b"data").unwrap(), by_a);
    tokens[home].kill();
    // c, elsewhere, uses the key first: a (its maker) has not failed over
    // yet, so a fails over now, and c follows the key to its new home.
    assert_eq!(mac(&e, c, key, b"data").unwrap(), by_a);
    let new_home = member_of(&e, a);
    assert_ne!(new_home, home);
    assert_eq!(member_of(&e, c), new_home);
    assert_eq!(mac(&e, b, key, b"data").unwrap(), by_a);
    assert_eq!(member_of(&e, b), new_home);
    assert_eq!(e.events().count("HSM Failure detected"), 1);
    assert_eq!(e.events().count("Session recovery incomplete"), 0);
}

/// The home fails while a session that did not make the key has an
/// operation with it in progress: that session fails over to the next
/// home, where the key's maker is made to fail over first, so that the
/// operation is replayed with the same key.
#[test]
fn an_operation_with_another_sessions_key_survives_the_homes_failure() {
    let (e, tokens) = engine(Mode::Ha, 3);
    let a = logged_in(&e);
    let b = e.open_session(0, RW).unwrap();
    let key = e
        .create_object(
            a,
            &[Attr {
                ty: attr::VALUE,
                value: &[9; 16],
            }],
        )
        .unwrap();
    let reference = mac(&e, a, key, b"first part, second part").unwrap();
    e.op_init(b, Op::Sign, &mechanism(mech::AES_MAC), key)
        .unwrap();
    e.op_update(b, Op::Sign, b"first part, ", None).unwrap();
    let home = member_of(&e, b);
    tokens[home].kill();
    e.op_update(b, Op::Sign, b"second part", None).unwrap();
    let mut out = [0u8; 8];
    let n = e.op_final(b, Op::Sign, Some(&mut out)).unwrap();
    assert_eq!(&out[..n], &reference[..]);
    assert_ne!(member_of(&e, b), home);
    assert_eq!(member_of(&e, a), member_of(&e, b), "the maker followed");
    assert_eq!(e.events().count("Session recovery incomplete"), 0);
}

/// A session that makes and destroys session objects for a long time keeps
/// room in its journal for the ones alive (HA mode): the dead recipes go
/// when it fills up, and what is alive survives a failover.
#[test]
fn a_long_lived_session_keeps_journalling_its_live_objects() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let a = logged_in(&e);
    let value = [Attr {
        ty: attr::VALUE,
        value: &[3; 16],
    }];
    for _ in 0..500 {
        let k = e.create_object(a, &value).unwrap();
        e.destroy_object(a, k).unwrap();
    }
    let key = e.create_object(a, &value).unwrap();
    let before = mac(&e, a, key, b"kept").unwrap();
    assert_eq!(e.events().count("Session potentially not recoverable"), 0);
    tokens[member_of(&e, a)].kill();
    assert_eq!(mac(&e, a, key, b"kept").unwrap(), before);
    assert_eq!(e.events().count("Session recovery incomplete"), 0);
}

/// An object another session destroyed is not made again by its maker's
/// failover, even once its table entry serves another object.
#[test]
fn an_object_destroyed_from_another_session_stays_destroyed() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let a = logged_in(&e);
    let b = e.open_session(0, RW).unwrap();
    let value = [Attr {
        ty: attr::VALUE,
        value: &[4; 16],
    }];
    let gone = e.create_object(a, &value).unwrap();
    e.destroy_object(b, gone).unwrap();
    // b's objects take the freed entry until its generation wraps and one
    // has the very handle a's had.
    let theirs = [Attr {
        ty: attr::VALUE,
        value: &[5; 16],
    }];
    let mut other = 0;
    for _ in 0..5000 {
        other = e.create_object(b, &theirs).unwrap();
        if other == gone {
            break;
        }
        e.destroy_object(b, other).unwrap();
    }
    assert_eq!(other, gone, "the handle came round again");
    let by_b = mac(&e, b, other, b"x").unwrap();
    let home = member_of(&e, a);
    let objects = tokens[1 - home].objects();
    tokens[home].kill();
    // a fails over: it makes nothing of what b destroyed.
    assert!(e.session_info(a).is_ok());
    assert_eq!(tokens[1 - home].objects(), objects, "nothing of a's");
    // b fails over: its own object, made again.
    assert_eq!(mac(&e, b, other, b"x").unwrap(), by_b);
    assert_eq!(tokens[1 - home].objects(), objects + 1);
}
