//! Logins: one login held on every member through its anchor, members
//! logged in as they take sessions, token-wide changes on every member, and
//! a member that refuses what the others accepted taken out.

use crate::ck::{Rv, user};
use crate::config::Mode;
use crate::error::Error;
use crate::testing::PIN;

use super::{RW, engine, logged_in, member_of};

#[test]
fn each_member_gets_an_anchor_when_it_joins() {
    let (e, tokens) = engine(Mode::Wld, 2);
    for (m, t) in tokens.iter().enumerate() {
        assert_eq!(t.sessions(), 1, "member {m}: its anchor");
        assert!(e.logins.lock(0).has_anchor(&e.pool, m));
    }
}

#[test]
fn one_login_logs_every_member_in_through_its_anchor() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let s = logged_in(&e);
    assert!(tokens.iter().all(|t| t.logged_in()));
    assert_eq!(
        tokens.iter().map(|t| t.attempts().len()).sum::<usize>(),
        2,
        "one login per member"
    );
    // A session on the other member is logged in already.
    let t = e.open_session(0, RW).unwrap();
    assert_ne!(member_of(&e, s), member_of(&e, t));
    assert_eq!(e.session_info(t).unwrap().state, 3);
    assert_eq!(
        e.login(t, user::USER, Some(PIN)),
        Err(Error::Rv(Rv::USER_ALREADY_LOGGED_IN))
    );
    assert_eq!(
        e.login(t, user::SO, Some(PIN)),
        Err(Error::Rv(Rv::USER_ANOTHER_ALREADY_LOGGED_IN))
    );
    e.logout(t).unwrap();
    assert!(tokens.iter().all(|t| !t.logged_in()));
    // The anchors stay open, logged out.
    assert!(tokens.iter().all(|t| t.sessions() >= 1));
}

#[test]
fn an_anchor_dies_with_its_members_epoch() {
    let (e, tokens) = engine(Mode::Ha, 2);
    logged_in(&e);
    let anchor = e.logins.lock(0).anchor_of(&e.pool, 0).unwrap();
    tokens[0].kill();
    e.take_out(0, Rv::DEVICE_ERROR);
    assert_eq!(e.logins.lock(0).anchor_of(&e.pool, 0), None);
    tokens[0].restart();
    assert_eq!(e.recover(1_000), 1);
    let again = e.logins.lock(0).anchor_of(&e.pool, 0).unwrap();
    assert_ne!(again, anchor, "a new anchor, logged in again");
    assert!(e.logins.lock(0).logged_in(&e.pool, 0));
    assert!(tokens[0].logged_in());
}

#[test]
fn set_pin_reaches_every_member_and_the_kept_pin_follows() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let s = logged_in(&e);
    e.set_pin(s, Some(PIN), Some(b"a-new-PIN")).unwrap();
    assert!(tokens.iter().all(|t| t.calls("set_pin") == 1));
    e.logout(s).unwrap();
    // Both members take the new PIN; the old one is refused by the first.
    assert_eq!(
        e.login(s, user::USER, Some(PIN)),
        Err(Error::Rv(Rv::PIN_INCORRECT))
    );
    e.login(s, user::USER, Some(b"a-new-PIN")).unwrap();
    assert!(tokens.iter().all(|t| t.logged_in()));
    assert_eq!(e.events().count("inconsistent"), 0);
}

#[test]
fn a_member_that_refuses_the_pin_the_others_took_is_taken_out() {
    let (e, tokens) = engine(Mode::Wld, 2);
    let s = e.open_session(0, RW).unwrap();
    let own = member_of(&e, s);
    // The other HSM's PIN was changed behind p11ha's back.
    tokens[1 - own].change_pin(b"changed-elsewhere");
    e.login(s, user::USER, Some(PIN)).unwrap();
    assert_eq!(
        e.events().count("HSM inconsistent"),
        1,
        "{:?}",
        e.events().lines()
    );
    assert!(!e.member_up(1 - own));
    assert!(e.member_up(own));
    // The application goes on, on the member that agreed.
    let t = e.open_session(0, RW).unwrap();
    assert_eq!(member_of(&e, t), own);
}
