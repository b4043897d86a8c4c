//! The session table: handles that die with their session, a full table
//! answered, and closing that leaves nothing of the session on its member.

extern crate std;

use std::vec::Vec;

use crate::ck::Rv;
use crate::config::Mode;
use crate::error::Error;
use crate::testing::CAPACITY;

use super::{RW, engine, member_of};

#[test]
fn a_closed_sessions_handle_stays_invalid_when_its_cell_is_reused() {
    let (e, _) = engine(Mode::Wld, 1);
    let s = e.open_session(0, RW).unwrap();
    e.close_session(s).unwrap();
    let t = e.open_session(0, RW).unwrap();
    assert_ne!(s, t, "the same cell, a new generation");
    let invalid = Err(Error::Rv(Rv::SESSION_HANDLE_INVALID));
    assert_eq!(e.session_info(s).map(|_| ()), invalid);
    assert_eq!(e.close_session(s), invalid);
    for bad in [0, u64::MAX, 1 << 40] {
        assert_eq!(e.session_info(bad).map(|_| ()), invalid, "{bad:#x}");
    }
    assert!(e.session_info(t).is_ok());
}

#[test]
fn a_full_table_is_an_answer() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let open: Vec<u64> = (0..CAPACITY.sessions)
        .map(|_| e.open_session(0, RW).unwrap())
        .collect();
    assert_eq!(e.open_session(0, RW), Err(Error::Rv(Rv::SESSION_COUNT)));
    // Nothing was opened on a member for the refused session.
    let on_members: usize = tokens.iter().map(|t| t.sessions()).sum();
    assert_eq!(on_members, CAPACITY.sessions + 2, "sessions and anchors");
    e.close_session(open[3]).unwrap();
    assert!(e.open_session(0, RW).is_ok());
}

#[test]
fn closing_a_session_closes_it_on_its_member_and_counts_it() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let s = e.open_session(0, RW).unwrap();
    let m = member_of(&e, s);
    assert_eq!(tokens[m].sessions(), 2);
    assert_eq!(e.token_info(0).unwrap().session_count, 1);
    assert_eq!(e.token_info(0).unwrap().rw_session_count, 1);
    e.close_session(s).unwrap();
    assert_eq!(tokens[m].sessions(), 1, "its anchor only");
    assert_eq!(e.token_info(0).unwrap().session_count, 0);
    assert_eq!(e.member_status(m).unwrap().sessions, 0);
}
