//! NORMAL mode: every slot of every module appears, renumbered, and calls
//! pass through with their handles translated.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use cryptoki::session::{SessionState, UserType};
use cryptoki::types::AuthPin;
use p11ha_tests::*;

fn lib() -> &'static Library {
    // No mode item at all: NORMAL is the default.
    Library::start(3, &[])
}

#[test]
fn every_slot_appears_renumbered_from_zero() {
    let l = lib();
    let all = l.pkcs11.get_all_slots().unwrap();
    let ids: Vec<u64> = all.iter().map(|s| s.id()).collect();
    // Three tokens and SoftHSM's spare uninitialised slot.
    assert_eq!(ids, vec![0, 1, 2, 3]);
    let with_token: Vec<_> = l
        .pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .filter(|s| l.pkcs11.get_token_info(*s).unwrap().label() == LABEL)
        .collect();
    assert_eq!(with_token.len(), 3);
    // Each slot is its own token: distinct serials, as SoftHSM gives them.
    let mut serials: Vec<String> = with_token
        .iter()
        .map(|s| {
            l.pkcs11
                .get_token_info(*s)
                .unwrap()
                .serial_number()
                .to_owned()
        })
        .collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 3);
    let info = l.pkcs11.get_slot_info(all[0]).unwrap();
    assert!(info.slot_description().starts_with("SoftHSM slot ID"));
}

#[test]
fn sessions_login_and_signatures_pass_through_per_slot() {
    let l = lib();
    let slots: Vec<_> = (0..3)
        .map(|i| l.pkcs11.get_all_slots().unwrap()[i])
        .collect();
    let sessions: Vec<_> = slots
        .iter()
        .map(|&s| l.pkcs11.open_rw_session(s).unwrap())
        .collect();
    for (s, slot) in sessions.iter().zip(&slots) {
        assert_eq!(s.get_session_info().unwrap().slot_id(), *slot);
    }
    // Login is per token: logging in on slot 0 leaves slot 1 public.
    sessions[0]
        .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .unwrap();
    assert_eq!(
        sessions[0].get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    assert_eq!(
        sessions[1].get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
    let key = find_one(&sessions[0], ObjectClass::PRIVATE_KEY, "rsa-key");
    let data = b"normal mode";
    let sig = sessions[0]
        .sign(&Mechanism::Sha256RsaPkcs, key, data)
        .unwrap();
    assert!(openssl_verifies(
        &l.tokens.keys.join("rsa-pub.pem"),
        data,
        &sig
    ));
    // Object handles are the module's own in NORMAL mode.
    let public = find_one(&sessions[2], ObjectClass::PUBLIC_KEY, "rsa-key");
    sessions[2]
        .verify(&Mechanism::Sha256RsaPkcs, public, data, &sig)
        .unwrap();
    sessions[0].logout().unwrap();
}
