//! `CKM_DH_PKCS_DERIVE` over remote members (HA mode, two real `p11-kit
//! server`s). Its parameter, the other party's public value, is a byte
//! string with no pointer: it must travel to a p11-kit 0.24.1 server (until
//! p11ha knew its layout it answered `CKR_MECHANISM_INVALID` without
//! sending it, which left no derivation of SoftHSM's usable remotely). A
//! key derived from a DH key made by `C_CreateObject` is deterministic, so
//! when the member behind the session is killed the journal makes both
//! again on the other member: the derived key's handle keeps working and
//! encrypts exactly as before.

use cryptoki::mechanism::Mechanism;
use p11ha_tests::ha::{members, wait_for};
use p11ha_tests::remote::{self, with_server};
use p11ha_tests::*;

const IV: [u8; 16] = [9; 16];

#[test]
fn a_dh_derived_key_travels_and_survives_a_kill() {
    let l = remote::start(2, 200, &[]);
    let block: Vec<u8> = (0..64u8).collect();
    let s = l.user_session();
    let base = dh::private_key(&s).expect("C_CreateObject of a DH private key");
    let key = dh::derive_aes(&s, base, &dh::peer()).expect("C_DeriveKey CKM_DH_PKCS_DERIVE");
    let before = s
        .encrypt(&Mechanism::AesCbc(IV), key, &block)
        .expect("encrypt with the derived key");
    assert_eq!(before.len(), block.len());
    assert_ne!(before, block);

    // The same derivation on the other member gives the same key.
    let other = l.user_session();
    if session_member(&other) != session_member(&s) {
        let b = dh::private_key(&other).expect("DH key");
        let k = dh::derive_aes(&other, b, &dh::peer()).expect("derive");
        let ct = other.encrypt(&Mechanism::AesCbc(IV), k, &block).unwrap();
        assert_eq!(ct, before, "both members derive the same key");
    }
    drop(other);

    let m = session_member(&s);
    with_server(m, |server| server.kill());
    let after = s
        .encrypt(&Mechanism::AesCbc(IV), key, &block)
        .expect("the derived key, made again on the other member");
    assert_ne!(session_member(&s), m, "the session moved");
    assert_eq!(after, before, "the same key after the failover");
    let pt = s.decrypt(&Mechanism::AesCbc(IV), key, &after).unwrap();
    assert_eq!(pt, block);

    with_server(m, |server| server.start());
    wait_for("the member back", || {
        (0..members()).all(|i| member_info(i).is_some_and(|x| x.up == 1))
    });
}
