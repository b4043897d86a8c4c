//! The pool: placement by fewest sessions, failure detection (and the
//! harmless probe behind `CKR_GENERAL_ERROR`), a member taken out once with
//! its epoch moved on, and the recovery schedule.

extern crate std;

use std::vec::Vec;

use crate::ck::Rv;
use crate::config::Mode;
use crate::error::{Error, TransportError};

use super::{RW, engine, logged_in, member_of};

#[test]
fn sessions_go_to_the_member_with_the_fewest() {
    let (e, _) = engine(Mode::Wld, 3);
    let sessions: Vec<u64> = (0..6).map(|_| e.open_session(0, RW).unwrap()).collect();
    let mut per_member = [0; 3];
    for &s in &sessions {
        per_member[member_of(&e, s)] += 1;
    }
    assert_eq!(per_member, [2, 2, 2]);
    // Closing frees a place: the next session goes where one closed.
    let freed = member_of(&e, sessions[0]);
    e.close_session(sessions[0]).unwrap();
    let s = e.open_session(0, RW).unwrap();
    assert_eq!(member_of(&e, s), freed);
    let counts: Vec<u32> = (0..3)
        .map(|m| e.member_status(m).unwrap().sessions)
        .collect();
    assert_eq!(counts, [2, 2, 2]);
}

#[test]
fn what_means_a_member_failed() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let pool = &e.pool;
    for failure in [
        Error::Rv(Rv::DEVICE_ERROR),
        Error::Rv(Rv::DEVICE_REMOVED),
        Error::Rv(Rv::TOKEN_NOT_PRESENT),
        Error::Rv(Rv::CRYPTOKI_NOT_INITIALIZED),
        Error::Transport(TransportError::TimedOut),
    ] {
        assert!(pool.failed(0, None, &failure), "{failure:?}");
    }
    for answer in [
        Error::Rv(Rv::PIN_INCORRECT),
        Error::Rv(Rv::SIGNATURE_INVALID),
        Error::Rv(Rv::MECHANISM_INVALID),
        Error::BufferTooSmall { needed: 8 },
    ] {
        assert!(!pool.failed(0, None, &answer), "{answer:?}");
    }
    // A session p11ha holds open that the member calls invalid: it reset.
    let invalid = Error::Rv(Rv::SESSION_HANDLE_INVALID);
    assert!(pool.failed(0, Some(5), &invalid));
    assert!(!pool.failed(0, None, &invalid));
    // CKR_GENERAL_ERROR is ambiguous: the member is asked once more.
    let general = Error::Rv(Rv::GENERAL_ERROR);
    let asked = tokens[0].calls("token_info");
    assert!(
        !pool.failed(0, None, &general),
        "alive: the request's error"
    );
    assert_eq!(tokens[0].calls("token_info"), asked + 1, "probed once");
    tokens[0].kill();
    assert!(pool.failed(0, None, &general), "dead: the member's");
}

#[test]
fn a_member_is_taken_out_once_and_its_sessions_are_stale() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    let m = member_of(&e, s);
    let epoch = e.pool.entry(m).epoch();
    tokens[m].kill();
    e.take_out(m, Rv::DEVICE_ERROR);
    e.take_out(m, Rv::DEVICE_ERROR);
    assert_eq!(e.events().count("HSM Failure detected"), 1);
    assert!(!e.member_up(m));
    assert!(!e.pool.current(m, epoch), "what was opened before is gone");
    assert_eq!(e.pool.entry(m).epoch(), epoch + 1);
    // No new session goes there.
    for _ in 0..4 {
        let t = e.open_session(0, RW).unwrap();
        assert_eq!(member_of(&e, t), 1 - m);
    }
}

#[test]
fn in_wld_mode_a_failed_member_is_dropped_for_good() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let s = logged_in(&e);
    let m = member_of(&e, s);
    tokens[m].kill();
    let mut r = [0u8; 4];
    assert_eq!(
        e.generate_random(s, &mut r),
        Err(Error::Rv(Rv::DEVICE_ERROR)),
        "the session's call gets the member's error"
    );
    assert_eq!(e.events().count("HSM dropped"), 1);
    assert!(!e.recovery_due(u64::MAX), "nothing to recover in WLD mode");
    tokens[m].restart();
    assert_eq!(e.recover(u64::MAX), 0);
    assert!(!e.member_up(m));
}

#[test]
fn a_failed_member_comes_back_after_the_delay() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    let m = member_of(&e, s);
    tokens[m].kill();
    let mut r = [0u8; 4];
    e.generate_random(s, &mut r).unwrap();
    assert_eq!(member_of(&e, s), 1 - m, "the session moved");
    // Failed at 0; the delay is 100 ms.
    assert!(!e.recovery_due(99));
    assert!(e.recovery_due(100));
    // Still dead: tried, and tried again a delay later.
    assert_eq!(e.recover(100), 0);
    assert!(!e.recovery_due(150));
    assert!(e.recovery_due(200));
    tokens[m].restart();
    // A call still inside the member holds recovery off.
    {
        let _busy = e.pool.entry(m).busy();
        assert_eq!(e.recover(200), 0);
    }
    assert_eq!(e.recover(300), 1);
    assert!(e.member_up(m));
    assert!(!e.recovery_due(u64::MAX));
    assert_eq!(e.events().count("HSM recovered"), 1);
    // It was logged in again before it took sessions, through a new anchor.
    assert!(tokens[m].logged_in());
    // The session that moved stays where it is.
    assert_eq!(member_of(&e, s), 1 - m);
}
