//! WLD mode through `libp11ha.so`: one virtual slot over three SoftHSM
//! tokens labelled TokName that hold the same keys.
//!
//! The tests of this file share one library (one process, one
//! C_Initialize) and run one at a time: session distribution and login are
//! token-wide state.

use std::sync::{Mutex, MutexGuard};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::types::AuthPin;
use p11ha_tests::*;

fn lib() -> &'static Library {
    Library::start(
        3,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
    )
}

fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn rv(e: Error) -> RvError {
    match e {
        Error::Pkcs11(rv, _) => rv,
        e => panic!("not a PKCS#11 error: {e}"),
    }
}

/// Sessions open until one lands on each of `n` distinct members.
fn sessions_on_distinct_members(n: usize) -> Vec<Session> {
    let l = lib();
    let mut out: Vec<Session> = Vec::new();
    let mut spare = Vec::new();
    while out.len() < n {
        let s = l.session();
        if out.iter().any(|o| session_member(o) == session_member(&s)) {
            spare.push(s);
        } else {
            out.push(s);
        }
        assert!(spare.len() < 20, "sessions never reach {n} members");
    }
    out
}

#[test]
fn one_virtual_slot_shows_the_configured_token() {
    let _g = serial();
    let l = lib();
    let slots = l.pkcs11.get_slots_with_token().unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].id(), 0);
    let token = l.pkcs11.get_token_info(slots[0]).unwrap();
    assert_eq!(token.label(), LABEL);
    assert_eq!(token.serial_number(), "P11HA-0");
    let slot = l.pkcs11.get_slot_info(slots[0]).unwrap();
    assert!(
        slot.slot_description()
            .starts_with("p11ha virtual slot: TokName")
    );
    let mechs = l.pkcs11.get_mechanism_list(slots[0]).unwrap();
    for m in [
        MechanismType::ECDSA,
        MechanismType::AES_CBC,
        MechanismType::SHA256,
    ] {
        assert!(mechs.contains(&m), "{m} offered");
    }
    // Three members, all serving slot 0, none else.
    for i in 0..3 {
        let m = member_info(i).expect("member");
        assert_eq!((m.slot, m.up), (0, 1));
    }
    assert!(member_info(3).is_none());
}

#[test]
fn sessions_go_to_the_member_with_fewest_ties_at_random() {
    let _g = serial();
    let l = lib();
    let sessions: Vec<Session> = (0..6).map(|_| l.session()).collect();
    let mut per_member = [0; 3];
    for s in &sessions {
        per_member[session_member(s)] += 1;
    }
    assert_eq!(per_member, [2, 2, 2], "fewest sessions first");
    for (i, &n) in per_member.iter().enumerate() {
        assert_eq!(member_info(i).unwrap().sessions as usize, n);
    }
    drop(sessions);
    // With every member idle, the first session's member is a tie broken at
    // random: over 60 tries each member must come up (a fixed choice, or a
    // bias to one member, fails; chance of a false failure ~1e-10).
    let mut seen = [false; 3];
    for _ in 0..60 {
        let s = l.session();
        seen[session_member(&s)] = true;
    }
    assert_eq!(seen, [true; 3]);
}

#[test]
fn login_on_one_session_logs_in_every_member() {
    let _g = serial();
    let sessions = sessions_on_distinct_members(3);
    for s in &sessions {
        assert_eq!(
            s.get_session_info().unwrap().session_state(),
            SessionState::RwPublic
        );
    }
    sessions[0]
        .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .unwrap();
    for s in &sessions {
        assert_eq!(
            s.get_session_info().unwrap().session_state(),
            SessionState::RwUser
        );
        // Private objects are visible through every member.
        find_one(s, ObjectClass::PRIVATE_KEY, "ec-key");
    }
    // A session opened now, on any member, is logged in too.
    let late = lib().session();
    assert_eq!(
        late.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    assert_eq!(
        rv(sessions[1]
            .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
            .unwrap_err()),
        RvError::UserAlreadyLoggedIn
    );
    sessions[2].logout().unwrap();
    for s in sessions.iter().chain([&late]) {
        assert_eq!(
            s.get_session_info().unwrap().session_state(),
            SessionState::RwPublic
        );
    }
    assert_eq!(
        rv(sessions[0].logout().unwrap_err()),
        RvError::UserNotLoggedIn
    );
}

#[test]
fn a_wrong_pin_is_the_applications_answer_and_changes_nothing() {
    let _g = serial();
    let s = lib().session();
    let e = s
        .login(UserType::User, Some(&AuthPin::new("9999".into())))
        .unwrap_err();
    assert_eq!(rv(e), RvError::PinIncorrect);
    for i in 0..3 {
        assert_eq!(member_info(i).unwrap().up, 1, "a wrong PIN drops no member");
    }
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
}

#[test]
fn the_last_session_closing_logs_the_application_out() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    drop(s);
    let s = l.session();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
}

#[test]
fn a_token_object_handle_works_in_a_session_on_another_member() {
    let _g = serial();
    let l = lib();
    let _login = l.user_session();
    let s = sessions_on_distinct_members(3);
    let key = find_one(&s[0], ObjectClass::PRIVATE_KEY, "ec-key");
    let public = find_one(&s[2], ObjectClass::PUBLIC_KEY, "ec-key");
    // The same object found on another member has the same virtual handle.
    assert_eq!(find_one(&s[1], ObjectClass::PRIVATE_KEY, "ec-key"), key);
    let digest = sha256(b"signed on member 1 with a handle found on member 0");
    let sig = s[1].sign(&Mechanism::Ecdsa, key, &digest).unwrap();
    s[2].verify(&Mechanism::Ecdsa, public, &digest, &sig)
        .unwrap();
    assert_ne!(session_member(&s[0]), session_member(&s[1]));
    assert_ne!(session_member(&s[1]), session_member(&s[2]));
}

#[test]
fn ecdsa_and_rsa_signatures_verify_with_openssl() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let data = b"p11ha signs this";
    let ec = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let raw = s.sign(&Mechanism::Ecdsa, ec, &sha256(data)).unwrap();
    assert!(openssl_verifies(
        &l.tokens.keys.join("ec-pub.pem"),
        data,
        &ecdsa_der(&raw)
    ));
    let rsa = find_one(&s, ObjectClass::PRIVATE_KEY, "rsa-key");
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, rsa, data).unwrap();
    assert!(openssl_verifies(
        &l.tokens.keys.join("rsa-pub.pem"),
        data,
        &sig
    ));
    // And a tampered message does not verify: the check can fail.
    assert!(!openssl_verifies(
        &l.tokens.keys.join("rsa-pub.pem"),
        b"other",
        &sig
    ));
    let rsa_pub = find_one(&s, ObjectClass::PUBLIC_KEY, "rsa-key");
    s.verify(&Mechanism::Sha256RsaPkcs, rsa_pub, data, &sig)
        .unwrap();
    assert_eq!(
        rv(s.verify(&Mechanism::Sha256RsaPkcs, rsa_pub, b"other", &sig)
            .unwrap_err()),
        RvError::SignatureInvalid
    );
    for i in 0..3 {
        assert_eq!(
            member_info(i).unwrap().up,
            1,
            "CKR_SIGNATURE_INVALID drops nothing"
        );
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn aes_cbc_multipart_matches_openssl_and_round_trips() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let key = find_one(&s, ObjectClass::SECRET_KEY, "aes-key");
    let iv = [7u8; 16];
    let data = pattern(48 * 1024);
    s.encrypt_init(&Mechanism::AesCbc(iv), key).unwrap();
    let mut ct = Vec::new();
    for chunk in [&data[..1000], &data[1000..40_000], &data[40_000..]] {
        ct.extend(s.encrypt_update(chunk).unwrap());
    }
    ct.extend(s.encrypt_final().unwrap());
    let expected = openssl_aes_256_cbc(&l.tokens.keys, &iv, false, &data);
    assert_eq!(ct, expected, "ciphertext as openssl computes it");
    s.decrypt_init(&Mechanism::AesCbc(iv), key).unwrap();
    let mut pt = Vec::new();
    for chunk in ct.chunks(5000) {
        pt.extend(s.decrypt_update(chunk).unwrap());
    }
    pt.extend(s.decrypt_final().unwrap());
    assert_eq!(pt, data);
}

#[test]
fn multipart_digest_matches_openssl() {
    let _g = serial();
    let s = lib().session();
    let data = pattern(100_003);
    s.digest_init(&Mechanism::Sha256).unwrap();
    for chunk in data.chunks(4099) {
        s.digest_update(chunk).unwrap();
    }
    assert_eq!(s.digest_final().unwrap(), sha256(&data));
    assert_eq!(s.digest(&Mechanism::Sha256, &data).unwrap(), sha256(&data));
}

#[test]
fn generated_keys_work_in_their_session() {
    let _g = serial();
    let s = lib().user_session();
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    let data = pattern(64);
    let ct = s.encrypt(&Mechanism::AesCbc([1; 16]), aes, &data).unwrap();
    assert_ne!(ct, data);
    assert_eq!(
        s.decrypt(&Mechanism::AesCbc([1; 16]), aes, &ct).unwrap(),
        data
    );
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Verify(true),
            ],
            &[Attribute::Sign(true)],
        )
        .unwrap();
    let digest = sha256(b"x");
    let sig = s.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
    s.verify(&Mechanism::Ecdsa, public, &digest, &sig).unwrap();
}

/// DER of the P-256 curve OID, as CKA_EC_PARAMS takes it.
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

#[test]
fn wrap_and_unwrap_give_the_same_key() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let kek = find_one(&s, ObjectClass::SECRET_KEY, "aes-key");
    let key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, kek, key).unwrap();
    assert_eq!(wrapped.len(), 40);
    let unwrapped = s
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            kek,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    assert_ne!(key, unwrapped);
    let data = pattern(32);
    let iv = [3u8; 16];
    assert_eq!(
        s.encrypt(&Mechanism::AesCbc(iv), key, &data).unwrap(),
        s.encrypt(&Mechanism::AesCbc(iv), unwrapped, &data).unwrap()
    );
}

#[test]
fn ecdh_derives_the_same_secret_both_ways() {
    let _g = serial();
    let s = lib().user_session();
    let ours = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let ours_pub = find_one(&s, ObjectClass::PUBLIC_KEY, "ec-key");
    let (peer_pub, peer) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(P256_OID.to_vec())],
            &[Attribute::Derive(true)],
        )
        .unwrap();
    let point = |h| match &s.get_attributes(h, &[AttributeType::EcPoint]).unwrap()[0] {
        Attribute::EcPoint(p) => p[2..].to_vec(), // DER OCTET STRING header off
        a => panic!("{a:?}"),
    };
    let secret_template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen(32.into()),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    let derive = |base, public: &[u8]| {
        let params = Ecdh1DeriveParams::new(EcKdf::null(), public);
        let k = s
            .derive_key(&Mechanism::Ecdh1Derive(params), base, &secret_template)
            .unwrap();
        match &s.get_attributes(k, &[AttributeType::Value]).unwrap()[0] {
            Attribute::Value(v) => v.clone(),
            a => panic!("{a:?}"),
        }
    };
    let a = derive(ours, &point(peer_pub));
    let b = derive(peer, &point(ours_pub));
    assert_eq!(a.len(), 32);
    assert_eq!(a, b);
}

#[test]
fn attributes_are_read_changed_and_objects_destroyed() {
    let _g = serial();
    let s = lib().user_session();
    let obj = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(b"first".to_vec()),
            Attribute::Value(b"payload".to_vec()),
        ])
        .unwrap();
    let label = |s: &Session| match &s.get_attributes(obj, &[AttributeType::Label]).unwrap()[0] {
        Attribute::Label(l) => l.clone(),
        a => panic!("{a:?}"),
    };
    assert_eq!(label(&s), b"first");
    s.update_attributes(obj, &[Attribute::Label(b"second".to_vec())])
        .unwrap();
    assert_eq!(label(&s), b"second");
    let ec = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    // A sensitive value is refused with the right code, and the rest read.
    let e = s
        .get_attributes(ec, &[AttributeType::Value])
        .map(|v| v.is_empty());
    assert!(
        matches!(e, Ok(true)),
        "cryptoki hides the unavailable value: {e:?}"
    );
    s.destroy_object(obj).unwrap();
    assert_eq!(
        rv(s.get_attributes(obj, &[AttributeType::Label]).unwrap_err()),
        RvError::ObjectHandleInvalid
    );
}

/// PKCS#11 v2.40 §4.4: a session object is visible to every session of the
/// application. Java's SunPKCS11, OpenSSL's providers and most frameworks
/// make keys in one session and use them in others.
#[test]
fn a_session_object_works_in_every_session_whatever_its_member() {
    let _g = serial();
    let l = lib();
    let _login = l.user_session();
    let s = sessions_on_distinct_members(3);
    let home = session_member(&s[0]);
    let data = s[0]
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(b"everywhere".to_vec()),
            Attribute::Value(b"one token".to_vec()),
        ])
        .unwrap();
    // A generated key cannot be made again on another HSM: it is used
    // where it is.
    let key = s[0]
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"everywhere-key".to_vec()),
            ],
        )
        .unwrap();
    let iv = [7u8; 16];
    let plain = pattern(100);
    let ct = s[0]
        .encrypt(&Mechanism::AesCbcPad(iv), key, &plain)
        .unwrap();
    for t in &s[1..] {
        assert_ne!(session_member(t), home);
        assert_eq!(
            t.get_attributes(data, &[AttributeType::Value]).unwrap(),
            vec![Attribute::Value(b"one token".to_vec())]
        );
        assert_eq!(
            t.decrypt(&Mechanism::AesCbcPad(iv), key, &ct).unwrap(),
            plain
        );
        assert_eq!(session_member(t), home, "moved to the objects' member");
    }
    // Made in a session on another member: made where the others are.
    let fresh = l.session();
    let made_there = fresh
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(b"everywhere".to_vec()),
        ])
        .unwrap();
    assert_eq!(session_member(&fresh), home);
    // Each object found once, by every session.
    let template = [
        Attribute::Class(ObjectClass::DATA),
        Attribute::Label(b"everywhere".to_vec()),
    ];
    for t in s.iter().chain([&fresh]) {
        let mut found = t.find_objects(&template).unwrap();
        found.sort_by_key(|h| h.handle());
        let mut want = vec![data, made_there];
        want.sort_by_key(|h| h.handle());
        assert_eq!(found, want);
    }
    // Destroyed from a session that did not make it: gone for all.
    s[2].destroy_object(made_there).unwrap();
    assert_eq!(
        rv(s[0]
            .get_attributes(made_there, &[AttributeType::Label])
            .unwrap_err()),
        RvError::ObjectHandleInvalid
    );
    // The session that made them closes: they end, for every session.
    let [maker, rest @ ..] = <[Session; 3]>::try_from(s).ok().unwrap();
    drop(maker);
    for t in &rest {
        assert_eq!(
            rv(t.get_attributes(data, &[AttributeType::Label]).unwrap_err()),
            RvError::ObjectHandleInvalid
        );
        assert_eq!(
            rv(t.decrypt(&Mechanism::AesCbcPad(iv), key, &ct).unwrap_err()),
            RvError::KeyHandleInvalid
        );
    }
    assert!(fresh.find_objects(&template).unwrap().is_empty());
}

#[test]
fn many_threads_each_with_its_own_session_get_right_answers() {
    let _g = serial();
    let l = lib();
    let _login = l.user_session();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let s = lib().session();
                let key = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
                let public = find_one(&s, ObjectClass::PUBLIC_KEY, "ec-key");
                for i in 0..50 {
                    let data = pattern(1000 + t * 100 + i);
                    let d = s.digest(&Mechanism::Sha256, &data).unwrap();
                    assert_eq!(d.len(), 32);
                    let sig = s.sign(&Mechanism::Ecdsa, key, &d).unwrap();
                    s.verify(&Mechanism::Ecdsa, public, &d, &sig).unwrap();
                }
                let expected = sha256(&pattern(1000 + t * 100));
                assert_eq!(
                    s.digest(&Mechanism::Sha256, &pattern(1000 + t * 100))
                        .unwrap(),
                    expected
                );
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}
