//! Token writes and failover (HA mode, the test build: members fail on
//! command): a member that fails in the middle of a write is handled as any
//! failure; the members in service hold the whole write, and the failed one,
//! which missed it, does not come back until it is synced.

use std::sync::{Mutex, MutexGuard};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use p11ha_tests::ha::*;
use p11ha_tests::*;

fn lib() -> &'static Library {
    start(3, 50, &[("P11HA_REPLICATION_KEY", "aes-key")])
}

fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    let g = M.lock().unwrap_or_else(|e| e.into_inner());
    lib();
    g
}

/// A session on each member in service.
fn one_per_member(l: &Library) -> Vec<Session> {
    let up = (0..members())
        .filter(|&i| member_info(i).is_some_and(|m| m.up == 1))
        .count();
    let mut out: Vec<Session> = Vec::new();
    let mut spare = Vec::new();
    while out.len() < up {
        let s = l.session();
        if out.iter().any(|o| session_member(o) == session_member(&s)) {
            spare.push(s);
        } else {
            out.push(s);
        }
        assert!(spare.len() < 30, "sessions never reach {up} members");
    }
    out
}

/// The token objects labelled `label` that session `s`'s member holds (a
/// search for token objects runs where the session is).
fn held(s: &Session, label: &str) -> Vec<ObjectHandle> {
    s.find_objects(&[
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
    .unwrap()
}

fn data_object(s: &Session, label: &str) -> cryptoki::error::Result<ObjectHandle> {
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(b"one token".to_vec()),
    ])
}

#[test]
fn a_generated_token_key_pair_signs_on_every_member() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
                Attribute::Verify(true),
                Attribute::Label(b"ha-pair".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Extractable(true),
                Attribute::Sensitive(true),
                Attribute::Label(b"ha-pair".to_vec()),
            ],
        )
        .unwrap();
    let digest = sha256(b"on every member");
    for t in one_per_member(l) {
        assert_eq!(
            held(&t, "ha-pair").len(),
            2,
            "member {}",
            session_member(&t)
        );
        let sig = t.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
        s.verify(&Mechanism::Ecdsa, public, &digest, &sig).unwrap();
        // The copy is as sensitive as asked.
        let a = t
            .get_attributes(private, &[cryptoki::object::AttributeType::Sensitive])
            .unwrap();
        assert_eq!(a, vec![Attribute::Sensitive(true)]);
    }
    s.destroy_object(public).unwrap();
    s.destroy_object(private).unwrap();
    for t in one_per_member(l) {
        assert!(held(&t, "ha-pair").is_empty());
    }
}

/// Runs last in its own right: member 2 fails for good here (it missed a
/// write), so the test checks what is left, whatever ran before.
#[test]
fn a_member_that_fails_during_a_write_misses_it_and_stays_out() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    // The member that is not the session's, and not member 0.
    let victim = (0..members())
        .rev()
        .find(|&i| i != session_member(&s) && member_info(i).is_some_and(|m| m.up == 1))
        .unwrap();
    inject(victim, "on:create_object");
    let h = data_object(&s, "ha-written").unwrap();
    assert_eq!(member_info(victim).unwrap().up, 0);
    let lines = log_lines();
    assert!(lines.contains(&failure_line(victim)), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("HSM needs sync hsmIdx={victim}"))),
        "{lines:#?}"
    );
    // Every member in service holds it, once, with one handle.
    for t in one_per_member(l) {
        assert_eq!(
            held(&t, "ha-written"),
            vec![h],
            "member {}",
            session_member(&t)
        );
    }
    // Healed, the member answers again, and is not taken back.
    inject(victim, "heal");
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..3 {
        let _ = l.pkcs11.get_all_slots();
        let t = l.session();
        assert_ne!(session_member(&t), victim);
    }
    assert_eq!(member_info(victim).unwrap().up, 0);
    assert!(!log_lines().contains(&recovered_line(victim)));
    s.destroy_object(h).unwrap();
}

/// A member that refuses what the session's member accepted: the members
/// that took the write have it undone, and the application gets the
/// refusal; no member keeps anything of it. (The refusal is injected: with
/// identical SoftHSM tokens no member would refuse.)
#[test]
fn a_write_one_member_refuses_is_undone_on_the_others() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let other = (0..members())
        .find(|&i| i != session_member(&s) && member_info(i).is_some_and(|m| m.up == 1))
        .unwrap();
    // CKR_TEMPLATE_INCONSISTENT (0xD1) from the other member's create.
    inject(other, "on:create_object:1:0xD1");
    let r = data_object(&s, "ha-refused");
    inject(other, "heal");
    match r {
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::TemplateInconsistent, _)) => {}
        r => panic!("expected CKR_TEMPLATE_INCONSISTENT, got {r:?}"),
    }
    for t in one_per_member(l) {
        assert!(
            held(&t, "ha-refused").is_empty(),
            "member {}",
            session_member(&t)
        );
    }
    // A change refused by another member: undone where it was made.
    let h = data_object(&s, "ha-kept").unwrap();
    inject(other, "on:set_attributes:1:0xD1");
    let r = s.update_attributes(h, &[Attribute::Label(b"ha-renamed".to_vec())]);
    inject(other, "heal");
    assert!(r.is_err(), "{r:?}");
    for t in one_per_member(l) {
        assert_eq!(
            held(&t, "ha-kept"),
            vec![h],
            "member {}",
            session_member(&t)
        );
        assert!(held(&t, "ha-renamed").is_empty());
    }
    assert!(member_info(other).is_some_and(|m| m.up == 1), "not dropped");
    s.destroy_object(h).unwrap();
}
