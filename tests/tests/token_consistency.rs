//! A member changed behind p11ha's back: a token object deleted on one
//! SoftHSM token directly (`pkcs11-tool` on SoftHSM, another process) while
//! `libp11ha.so` serves both in WLD mode. The member that lacks what the
//! others hold is taken out, said, and never answers for the token again;
//! the others go on.

use std::process::Command;

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use cryptoki::session::Session;
use p11ha_tests::*;

#[test]
fn a_member_that_lost_an_object_behind_p11has_back_is_taken_out() {
    let l = Library::start(
        2,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
    );
    let _login = l.user_session();
    let mut s: Vec<Session> = Vec::new();
    while s.len() < 2 {
        let t = l.session();
        if s.iter().all(|o| session_member(o) != session_member(&t)) {
            s.push(t);
        }
    }
    let key = find_one(&s[0], ObjectClass::SECRET_KEY, "aes-key");
    let iv = [5u8; 16];
    let data = [7u8; 32];
    let ct = s[0].encrypt(&Mechanism::AesCbc(iv), key, &data).unwrap();
    // Deleted on the second session's token, by another application.
    let lacking = session_member(&s[1]);
    let slot = member_info(lacking).unwrap().member_slot.to_string();
    let out = Command::new("pkcs11-tool")
        .args([
            "--module", SOFTHSM, "--slot", &slot, "--login", "--pin", "1234",
        ])
        .args(["--delete-object", "--type", "secrkey", "--label", "aes-key"])
        .env("SOFTHSM2_CONF", l.tokens.conf())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Used there: the member is taken out (WLD mode: the session with it
    // gets CKR_DEVICE_ERROR, as for any member dropped), never served by.
    match s[1].encrypt(&Mechanism::AesCbc(iv), key, &data) {
        Err(Error::Pkcs11(RvError::DeviceError, _)) => {}
        r => panic!("expected CKR_DEVICE_ERROR, got {r:?}"),
    }
    assert_eq!(member_info(lacking).unwrap().up, 0);
    // The rest of the token goes on, with the right answers.
    for _ in 0..4 {
        let t = l.session();
        assert_ne!(session_member(&t), lacking);
        assert_eq!(t.encrypt(&Mechanism::AesCbc(iv), key, &data).unwrap(), ct);
    }
}
