//! HA mode through `libp11ha.so`: a member fails at an exact point (real
//! SoftHSM members behind the fault adapter) and the application sees
//! nothing but the right answer. Deterministic mechanisms must give
//! byte-identical output to a run without failure; signatures must verify.
//!
//! SignRecover and VerifyRecover are not here: SoftHSM 2.6.1 answers
//! `CKR_FUNCTION_NOT_SUPPORTED` to their Init. They are replayed against a
//! software member in `adapters/tests/replay.rs`.
//!
//! The tests share one library and run one at a time; each ends with every
//! member healed and recovered (failed members come back 50 ms after they
//! fail, once healed).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::types::AuthPin;
use p11ha_tests::ha::*;
use p11ha_tests::*;

fn lib() -> &'static Library {
    start(3, 50, &[])
}

fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    let g = M.lock().unwrap_or_else(|e| e.into_inner());
    lib();
    heal_all();
    g
}

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        r => panic!("expected a PKCS#11 error, got {r:?}"),
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
}

/// Where in a multi-part operation the member fails.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// Right after Init, at the first Update.
    AfterInit,
    /// After `k` Updates, at the next one.
    AfterUpdates(usize),
    /// At Final.
    AtFinal,
}

const POINTS: [Point; 4] = [
    Point::AfterInit,
    Point::AfterUpdates(1),
    Point::AfterUpdates(2),
    Point::AtFinal,
];

/// Runs a three-part operation, making the member fail at `point` (if
/// any); checks the session moved when it did. `init`, `update` and
/// `finish` drive the operation on the session; `final_call` names the
/// member call the final is (`op_final`, or `verify_final`).
fn three_parts<T>(
    s: &Session,
    point: Option<Point>,
    final_call: &str,
    init: impl Fn(&Session),
    update: impl Fn(&Session, &[u8]) -> Vec<u8>,
    finish: impl Fn(&Session) -> T,
    data: &[u8],
) -> (Vec<u8>, T) {
    init(s);
    let before = session_member(s);
    let command = match point {
        Some(Point::AfterInit) => Some("on:op_update:1".to_owned()),
        Some(Point::AfterUpdates(k)) => Some(format!("on:op_update:{}", k + 1)),
        Some(Point::AtFinal) => Some(format!("on:{final_call}:1")),
        None => None,
    };
    if let Some(c) = &command {
        inject(before, c);
    }
    let mut out = Vec::new();
    for chunk in [&data[..1000], &data[1000..2500], &data[2500..]] {
        out.extend(update(s, chunk));
    }
    let last = finish(s);
    if command.is_some() {
        assert_ne!(
            session_member(s),
            before,
            "{point:?}: the session failed over"
        );
        assert!(
            log_lines().contains(&failure_line(before)),
            "{point:?}: logged {}",
            failure_line(before)
        );
    }
    (out, last)
}

#[test]
fn encrypt_and_decrypt_give_identical_bytes_after_failover_at_every_point() {
    let _g = serial();
    let s = lib().user_session();
    let key = find_one(&s, ObjectClass::SECRET_KEY, "aes-key");
    let iv = [5u8; 16];
    let data = pattern(4000);
    let encrypt = |point| {
        let (mut ct, last) = three_parts(
            &s,
            point,
            "op_final",
            |s| s.encrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap(),
            |s, c| s.encrypt_update(c).unwrap(),
            |s| s.encrypt_final().unwrap(),
            &data,
        );
        ct.extend(last);
        ct
    };
    let reference = encrypt(None);
    assert_eq!(reference.len(), 4016);
    for point in POINTS {
        assert_eq!(
            encrypt(Some(point)),
            reference,
            "encrypt, failure {point:?}"
        );
        heal_all();
    }
    let decrypt = |point| {
        let (mut pt, last) = three_parts(
            &s,
            point,
            "op_final",
            |s| s.decrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap(),
            |s, c| s.decrypt_update(c).unwrap(),
            |s| s.decrypt_final().unwrap(),
            &reference,
        );
        pt.extend(last);
        pt
    };
    for point in POINTS {
        assert_eq!(decrypt(Some(point)), data, "decrypt, failure {point:?}");
        heal_all();
    }
}

#[test]
fn digest_sign_and_verify_survive_failover_at_every_point() {
    let _g = serial();
    let s = lib().user_session();
    let rsa = find_one(&s, ObjectClass::PRIVATE_KEY, "rsa-key");
    let rsa_pub = find_one(&s, ObjectClass::PUBLIC_KEY, "rsa-key");
    let data = pattern(3000);
    let digest = |point| {
        three_parts(
            &s,
            point,
            "op_final",
            |s| s.digest_init(&Mechanism::Sha256).unwrap(),
            |s, c| {
                s.digest_update(c).unwrap();
                Vec::new()
            },
            |s| s.digest_final().unwrap(),
            &data,
        )
        .1
    };
    assert_eq!(digest(None), sha256(&data));
    for point in POINTS {
        assert_eq!(
            digest(Some(point)),
            sha256(&data),
            "digest, failure {point:?}"
        );
        heal_all();
    }
    // RSA PKCS#1 v1.5 is deterministic: the same bytes, and openssl agrees.
    let sign = |point| {
        three_parts(
            &s,
            point,
            "op_final",
            |s| s.sign_init(&Mechanism::Sha256RsaPkcs, rsa).unwrap(),
            |s, c| {
                s.sign_update(c).unwrap();
                Vec::new()
            },
            |s| s.sign_final().unwrap(),
            &data,
        )
        .1
    };
    let reference = sign(None);
    assert!(openssl_verifies(
        &lib().tokens.keys.join("rsa-pub.pem"),
        &data,
        &reference
    ));
    for point in POINTS {
        assert_eq!(sign(Some(point)), reference, "sign, failure {point:?}");
        heal_all();
    }
    let verify = |point, signature: &[u8]| {
        three_parts(
            &s,
            point,
            "verify_final",
            |s| s.verify_init(&Mechanism::Sha256RsaPkcs, rsa_pub).unwrap(),
            |s, c| {
                s.verify_update(c).unwrap();
                Vec::new()
            },
            |s| s.verify_final(signature),
            &data,
        )
        .1
    };
    for point in POINTS {
        verify(Some(point), &reference).expect("a good signature verifies after failover");
        heal_all();
        let mut bad = reference.clone();
        bad[7] ^= 1;
        assert_eq!(
            rv(verify(Some(point), &bad)),
            RvError::SignatureInvalid,
            "a bad one still does not ({point:?})"
        );
        heal_all();
    }
}

#[test]
fn single_part_calls_after_init_and_length_queries_survive_failover() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let ec = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let data = b"single part";
    // Init, then the member fails at the signature itself.
    let raw = raw();
    let h = s.handle();
    let mut mech = cryptoki_sys::CK_MECHANISM {
        mechanism: cryptoki_sys::CKM_ECDSA,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let digest = sha256(data);
    // SAFETY: valid arguments for each call.
    unsafe {
        assert_eq!(raw.C_SignInit.unwrap()(h, &mut mech, ec.handle()), 0);
        // A length query does not end the operation...
        let mut len: cryptoki_sys::CK_ULONG = 0;
        assert_eq!(
            raw.C_Sign.unwrap()(
                h,
                digest.as_ptr() as *mut _,
                32,
                std::ptr::null_mut(),
                &mut len
            ),
            0
        );
        assert_eq!(len, 64);
        // ...nor does a buffer too small, which writes the needed length...
        let mut sig = [0u8; 64];
        let mut small: cryptoki_sys::CK_ULONG = 8;
        assert_eq!(
            raw.C_Sign.unwrap()(
                h,
                digest.as_ptr() as *mut _,
                32,
                sig.as_mut_ptr(),
                &mut small
            ),
            cryptoki_sys::CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(small, 64);
        // ...and the member fails at the real call: it is made on another.
        let before = fail_member_of(&s, "on:op_single:1");
        assert_eq!(
            raw.C_Sign.unwrap()(h, digest.as_ptr() as *mut _, 32, sig.as_mut_ptr(), &mut len),
            0
        );
        assert_ne!(session_member(&s), before);
        assert!(openssl_verifies(
            &l.tokens.keys.join("ec-pub.pem"),
            data,
            &ecdsa_der(&sig)
        ));
    }
    heal_all();
    // Encryption length query, then failure, then the call with a buffer.
    let key = find_one(&s, ObjectClass::SECRET_KEY, "aes-key");
    let plain = pattern(64);
    let reference = s.encrypt(&Mechanism::AesCbc([2; 16]), key, &plain).unwrap();
    s.encrypt_init(&Mechanism::AesCbc([2; 16]), key).unwrap();
    fail_member_of(&s, "on:op_single:2");
    // cryptoki's encrypt() is Init + a length query + the call: the member
    // fails at the second C_Encrypt, after the length query.
    let _ = s.encrypt_final();
    let ct = s.encrypt(&Mechanism::AesCbc([2; 16]), key, &plain).unwrap();
    assert_eq!(ct, reference);
}

/// The search calls through the raw function list (the cryptoki crate
/// runs a whole search in one call): Init with an empty template, then
/// batches of `n` handles, then Final.
fn find_init(s: &Session) {
    // SAFETY: a NULL template of length 0 is valid.
    let rv = unsafe { raw().C_FindObjectsInit.unwrap()(s.handle(), std::ptr::null_mut(), 0) };
    assert_eq!(rv, 0, "C_FindObjectsInit");
}

fn find_final(s: &Session) {
    // SAFETY: a session handle.
    assert_eq!(unsafe { raw().C_FindObjectsFinal.unwrap()(s.handle()) }, 0);
}

#[test]
fn a_search_restarts_where_it_stopped() {
    let _g = serial();
    let s = lib().user_session();
    let rest = |s: &Session, mut got: Vec<u64>| {
        loop {
            let batch = find_batch(s, 2);
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        find_final(s);
        got
    };
    find_init(&s);
    let reference: BTreeSet<u64> = rest(&s, Vec::new()).into_iter().collect();
    assert_eq!(reference.len(), 5, "five token objects");
    for failing_call in 1..=3 {
        find_init(&s);
        let first = find_batch(&s, 2);
        let before = fail_member_of(&s, &format!("on:find:{failing_call}"));
        let got = rest(&s, first);
        assert_ne!(session_member(&s), before);
        let set: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(
            set.len(),
            got.len(),
            "no handle twice (failure at find {failing_call})"
        );
        assert_eq!(
            set, reference,
            "none skipped (failure at find {failing_call})"
        );
        heal_all();
    }
}

/// The first search on a member after its recovery reads each result's
/// identity (`C_GetAttributeValue`), since the member's handles were
/// forgotten: when the member fails there, after the first result was
/// read, the call fails over and the search restarts on another member,
/// which must return that result too.
#[test]
fn a_search_whose_member_fails_while_its_results_are_read() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    find_init(&s);
    let reference: BTreeSet<u64> = find_batch(&s, 10).into_iter().collect();
    find_final(&s);
    assert_eq!(reference.len(), 5, "five token objects");
    // Member m fails and comes back: p11ha forgets its handles.
    let m = fail_one(l);
    inject(m, "heal");
    wait_for("the member back", || member_info(m).unwrap().up == 1);
    // A session on m (new sessions go to the least loaded members).
    let mut others = Vec::new();
    let on_m = loop {
        let t = l.session();
        if session_member(&t) == m {
            break t;
        }
        assert!(others.len() < 20, "no session lands on member {m}");
        others.push(t);
    };
    find_init(&on_m);
    inject(m, "on:get_attributes:2");
    let mut got = find_batch(&on_m, 10);
    loop {
        let batch = find_batch(&on_m, 10);
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    find_final(&on_m);
    assert_ne!(session_member(&on_m), m, "the session moved");
    let set: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "no handle twice");
    assert_eq!(set, reference, "none skipped");
    heal_all();
}

#[test]
fn login_survives_failure_before_and_after_it() {
    let _g = serial();
    let l = lib();
    // Before: the session's member fails before C_Login; another answers.
    let s = l.session();
    fail_member_of(&s, "down");
    s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .unwrap();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    heal_all();
    // After: logged in, the member fails; the new member is logged in.
    let before = fail_member_of(&s, "down");
    let key = find_one(&s, ObjectClass::PRIVATE_KEY, "rsa-key");
    assert_ne!(session_member(&s), before);
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, key, b"after").unwrap();
    assert!(openssl_verifies(
        &l.tokens.keys.join("rsa-pub.pem"),
        b"after",
        &sig
    ));
    heal_all();
    // A wrong PIN is the application's answer: nobody fails, nothing moves.
    s.logout().unwrap();
    let m = session_member(&s);
    assert_eq!(
        rv(s.login(UserType::User, Some(&AuthPin::new("0000".into())))),
        RvError::PinIncorrect
    );
    assert_eq!(session_member(&s), m);
    assert!((0..3).all(|i| member_info(i).unwrap().up == 1));
}

/// DER of the P-256 curve OID, as CKA_EC_PARAMS takes it.
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn value(s: &Session, h: ObjectHandle) -> Vec<u8> {
    match &s.get_attributes(h, &[AttributeType::Value]).unwrap()[0] {
        Attribute::Value(v) => v.clone(),
        a => panic!("{a:?}"),
    }
}

#[test]
fn session_objects_are_recreated_and_used_random_keys_are_not() {
    let _g = serial();
    let s = lib().user_session();
    let kek = find_one(&s, ObjectClass::SECRET_KEY, "aes-key");
    let ec = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let data = pattern(32);
    let iv = [4u8; 16];
    // C_CreateObject and C_CopyObject.
    let created = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(b"ha-data".to_vec()),
            Attribute::Value(b"kept".to_vec()),
        ])
        .unwrap();
    let copied = s
        .copy_object(created, &[Attribute::Label(b"ha-copy".to_vec())])
        .unwrap();
    // C_GenerateKey, never used: re-generated after the failover.
    let aes_template = [
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    let unused = s
        .generate_key(&Mechanism::AesKeyGen, &aes_template)
        .unwrap();
    // C_GenerateKeyPair, never used.
    let (pair_pub, pair_priv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Verify(true),
            ],
            &[Attribute::Sign(true)],
        )
        .unwrap();
    // C_GenerateKey, used: not re-generated.
    let used = s
        .generate_key(&Mechanism::AesKeyGen, &aes_template)
        .unwrap();
    s.encrypt(&Mechanism::AesCbc(iv), used, &data).unwrap();
    // C_DeriveKey from a token key and fixed public data: deterministic.
    let peer = [
        0x04, 0x60, 0xFE, 0xD4, 0xBA, 0x25, 0x5A, 0x9D, 0x31, 0xC9, 0x61, 0xEB, 0x74, 0xC6, 0x35,
        0x6D, 0x68, 0xC0, 0x49, 0xB8, 0x92, 0x3B, 0x61, 0xFA, 0x6C, 0xE6, 0x69, 0x62, 0x2E, 0x60,
        0xF2, 0x9F, 0xB6, 0x79, 0x03, 0xFE, 0x10, 0x08, 0xB8, 0xBC, 0x99, 0xA4, 0x1A, 0xE9, 0xE9,
        0x56, 0x28, 0xBC, 0x64, 0xF2, 0xF1, 0xB2, 0x0C, 0x2D, 0x7E, 0x9F, 0x51, 0x77, 0xA3, 0xC2,
        0x94, 0xD4, 0x46, 0x22, 0x99,
    ];
    let derived = s
        .derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &peer)),
            ec,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ],
        )
        .unwrap();
    let derived_value = value(&s, derived);
    // C_UnwrapKey of a blob wrapped by the token key: deterministic.
    let to_wrap = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(32.into()), Attribute::Extractable(true)],
        )
        .unwrap();
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, kek, to_wrap).unwrap();
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
    let unwrapped_ct = s.encrypt(&Mechanism::AesCbc(iv), unwrapped, &data).unwrap();

    // The member fails; the next call fails the session over.
    let before = fail_member_of(&s, "down");
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    assert_ne!(session_member(&s), before);

    let label = |h| match &s.get_attributes(h, &[AttributeType::Label]).unwrap()[0] {
        Attribute::Label(l) => l.clone(),
        a => panic!("{a:?}"),
    };
    assert_eq!(label(created), b"ha-data");
    assert_eq!(label(copied), b"ha-copy");
    let ct = s.encrypt(&Mechanism::AesCbc(iv), unused, &data).unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::AesCbc(iv), unused, &ct).unwrap(),
        data
    );
    let d = sha256(b"pair");
    let sig = s.sign(&Mechanism::Ecdsa, pair_priv, &d).unwrap();
    s.verify(&Mechanism::Ecdsa, pair_pub, &d, &sig).unwrap();
    assert_eq!(
        value(&s, derived),
        derived_value,
        "derived: the same secret"
    );
    assert_eq!(
        s.encrypt(&Mechanism::AesCbc(iv), unwrapped, &data).unwrap(),
        unwrapped_ct,
        "unwrapped: the same key"
    );
    // The used random key is gone, with a clear code, not another key.
    assert_eq!(
        rv(s.encrypt(&Mechanism::AesCbc(iv), used, &data)),
        RvError::KeyHandleInvalid
    );
    assert_eq!(
        rv(s.get_attributes(used, &[AttributeType::Label])),
        RvError::ObjectHandleInvalid
    );
    let _ = to_wrap;
}

#[test]
fn every_member_down_then_one_back() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let key = find_one(&s, ObjectClass::PRIVATE_KEY, "rsa-key");
    let slot = l.slot();
    for i in 0..3 {
        inject(i, "down");
    }
    let t = std::time::Instant::now();
    assert_eq!(
        rv(s.sign(&Mechanism::Sha256RsaPkcs, key, b"x")),
        RvError::DeviceError
    );
    assert!((0..3).all(|i| member_info(i).unwrap().up == 0));
    assert_eq!(rv(l.pkcs11.open_rw_session(slot)), RvError::TokenNotPresent);
    assert_eq!(rv(s.get_session_info()), RvError::DeviceError);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "answers come at once, not after a hang ({:?})",
        t.elapsed()
    );
    // One member comes back: the same session works again, no restart.
    inject(2, "heal");
    wait_for("member 2 back", || member_info(2).unwrap().up == 1);
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    assert_eq!(session_member(&s), 2);
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, key, b"back").unwrap();
    assert!(openssl_verifies(
        &l.tokens.keys.join("rsa-pub.pem"),
        b"back",
        &sig
    ));
    assert!(log_lines().contains(&recovered_line(2)));
}

#[test]
fn application_errors_are_never_taken_for_failures() {
    let _g = serial();
    let s = lib().user_session();
    let ec = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let m = session_member(&s);
    let lines = log_lines().len();
    // SoftHSM answers CKR_GENERAL_ERROR at SignFinal for an RSA mechanism
    // on an EC key: an answer about the request, as the probe shows.
    s.sign_init(&Mechanism::Sha256RsaPkcs, ec).unwrap();
    s.sign_update(b"x").unwrap();
    assert_eq!(rv(s.sign_final()), RvError::GeneralError);
    assert_eq!(
        rv(s.sign(&Mechanism::AesCbc([0; 16]), ec, b"x")),
        RvError::MechanismInvalid
    );
    assert_eq!(session_member(&s), m);
    assert!((0..3).all(|i| member_info(i).unwrap().up == 1));
    assert_eq!(log_lines().len(), lines, "nothing logged");
    let _ = MechanismType::ECDSA;
}
