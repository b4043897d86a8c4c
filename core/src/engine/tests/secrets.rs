//! The kept PIN: it is kept only while the application is logged in on the
//! slot, zeroised at each way the login ends (C_Logout, the last session
//! closed, C_CloseAllSessions, C_Finalize), and a failed C_Login is never
//! tried on another member, then or at a failover. The PIN buffer itself is
//! read through the test-only `Pin::is_zeroised`.

extern crate std;

use std::vec::Vec;

use crate::ck::{Rv, user};
use crate::config::Mode;
use crate::error::Error;
use crate::testing::PIN;

use super::{E, RW, engine, logged_in, member_of};

const WRONG: &[u8] = b"p11ha-wrong-PIN-0b9e";

/// The PIN the engine keeps for slot 0: `Some` while it holds one, `None`
/// once its buffer is all zeros and empty.
fn kept(e: &E) -> Option<Vec<u8>> {
    let login = e.logins.lock(0);
    if login.pin.is_zeroised() {
        assert!(login.user.is_none(), "logged in with no PIN kept");
        None
    } else {
        Some(login.pin.get().to_vec())
    }
}

#[test]
fn the_pin_is_zeroised_at_logout() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    assert_eq!(kept(&e).as_deref(), Some(PIN));
    e.logout(s).unwrap();
    assert_eq!(kept(&e), None);
    // The members are logged out too.
    assert!(tokens.iter().all(|t| !t.logged_in()));
    assert_eq!(e.session_info(s).unwrap().state, 2);
}

#[test]
fn the_pin_is_zeroised_when_the_last_session_closes() {
    let (e, _) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    let other = e.open_session(0, RW).unwrap();
    e.close_session(s).unwrap();
    // Another session is open: the application is still logged in.
    assert_eq!(kept(&e).as_deref(), Some(PIN));
    e.close_session(other).unwrap();
    assert_eq!(kept(&e), None);
}

#[test]
fn the_pin_is_zeroised_at_close_all_sessions() {
    let (e, _) = engine(Mode::Ha, 2);
    logged_in(&e);
    e.open_session(0, RW).unwrap();
    e.close_all_sessions(0).unwrap();
    assert_eq!(kept(&e), None);
}

#[test]
fn the_pin_is_zeroised_at_finalize() {
    let (e, _) = engine(Mode::Ha, 2);
    logged_in(&e);
    e.close_everything();
    assert_eq!(kept(&e), None);
    // Even a login that no session holds (none should be) ends there.
    {
        let mut login = e.logins.lock(0);
        login.user = Some(user::USER);
        assert!(login.pin.set(PIN));
    }
    e.close_everything();
    assert_eq!(kept(&e), None);
}

#[test]
fn the_pin_follows_set_pin_and_dies_with_the_login() {
    let (e, _) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    e.set_pin(s, Some(PIN), Some(b"another-PIN")).unwrap();
    assert_eq!(kept(&e).as_deref(), Some(&b"another-PIN"[..]));
    e.logout(s).unwrap();
    assert_eq!(kept(&e), None);
    // Not logged in: a C_SetPIN keeps nothing.
    e.set_pin(s, Some(b"another-PIN"), Some(PIN)).unwrap();
    assert_eq!(kept(&e), None);
}

#[test]
fn the_so_pin_follows_set_pin_too() {
    let (e, _) = engine(Mode::Ha, 2);
    let s = e.open_session(0, RW).unwrap();
    e.login(s, user::SO, Some(PIN)).unwrap();
    e.set_pin(s, Some(PIN), Some(b"a-new-SO-PIN")).unwrap();
    assert_eq!(kept(&e).as_deref(), Some(&b"a-new-SO-PIN"[..]));
    e.close_session(s).unwrap();
    assert_eq!(kept(&e), None);
}

#[test]
fn a_failed_login_is_kept_nowhere_and_never_replayed() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = e.open_session(0, RW).unwrap();
    let own = member_of(&e, s);
    let other = 1 - own;
    assert_eq!(
        e.login(s, user::USER, Some(WRONG)),
        Err(Error::Rv(Rv::PIN_INCORRECT))
    );
    assert_eq!(kept(&e), None);
    assert_eq!(tokens[own].attempts(), [WRONG]);
    assert!(tokens[other].attempts().is_empty());

    // The session's member fails: the session moves, not logged in, and
    // the other member has still seen no login at all.
    tokens[own].kill();
    let mut random = [0u8; 4];
    e.generate_random(s, &mut random).unwrap();
    assert_eq!(member_of(&e, s), other);
    assert_eq!(e.session_info(s).unwrap().state, 2);
    assert!(tokens[other].attempts().is_empty());
    assert_eq!(kept(&e), None);

    // The right PIN goes to the member in service only.
    e.login(s, user::USER, Some(PIN)).unwrap();
    assert_eq!(tokens[other].attempts(), [PIN]);
    assert_eq!(tokens[own].attempts(), [WRONG]);
}
