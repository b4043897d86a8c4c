//! The data length limit and PTK's "Session potentially not recoverable"
//! warning, in a library of their own (the warning is written at most once
//! per C_Initialize/C_Finalize): `P11HA_HA_UPDATE_LIMIT=4096`.

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use p11ha_tests::ha::*;
use p11ha_tests::*;

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        r => panic!("expected a PKCS#11 error, got {r:?}"),
    }
}

#[test]
fn past_the_limit_the_operation_goes_on_and_a_failover_ends_it_clearly() {
    let l = start(3, 50, &[("P11HA_HA_UPDATE_LIMIT", "4096")]);
    let s = l.user_session();
    let pid = std::process::id();
    let warning = |desc: &str| {
        format!("p11ha-test[{pid}] Warning: Session potentially not recoverable: {desc}")
    };

    // Within the limit: 4096 bytes are replayed after a failure at Final.
    let data = vec![7u8; 4096];
    s.digest_init(&Mechanism::Sha256).unwrap();
    s.digest_update(&data[..2048]).unwrap();
    s.digest_update(&data[2048..]).unwrap();
    fail_member_of(&s, "on:op_final:1");
    assert_eq!(s.digest_final().unwrap(), sha256(&data));
    assert!(!log_lines().iter().any(|l| l.contains("not recoverable")));
    heal_all();

    // Past it: the operation goes on normally while nothing fails...
    let big = vec![9u8; 5000];
    s.digest_init(&Mechanism::Sha256).unwrap();
    s.digest_update(&big[..3000]).unwrap();
    s.digest_update(&big[3000..]).unwrap();
    assert_eq!(s.digest_final().unwrap(), sha256(&big));
    let lines = log_lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| **l == warning("update data past the data length limit"))
            .count(),
        1,
        "{lines:#?}"
    );

    // ...and if a member fails under it, the call that needs it gets
    // CKR_DEVICE_ERROR and a log line, not a digest of part of the data.
    s.digest_init(&Mechanism::Sha256).unwrap();
    s.digest_update(&big[..3000]).unwrap();
    s.digest_update(&big[3000..]).unwrap();
    let before = fail_member_of(&s, "on:op_final:1");
    assert_eq!(rv(s.digest_final()), RvError::DeviceError);
    assert_ne!(session_member(&s), before);
    let incomplete = format!(
        "p11ha-test[{pid}] Error: Session recovery incomplete: the operation in progress \
         could not be rebuilt; the application gets CKR_DEVICE_ERROR"
    );
    assert!(log_lines().contains(&incomplete));
    // The session itself lives on, on the new member.
    assert_eq!(
        s.digest(&Mechanism::Sha256, b"abc").unwrap(),
        sha256(b"abc")
    );
    heal_all();

    // Another unrecoverable act (a generated key used): it is not recoverable
    // either, but the warning is not written a second time.
    let k = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(32.into()), Attribute::Encrypt(true)],
        )
        .unwrap();
    s.encrypt(&Mechanism::AesCbc([0; 16]), k, &[0u8; 16])
        .unwrap();
    fail_member_of(&s, "down");
    assert_eq!(
        rv(s.encrypt(&Mechanism::AesCbc([0; 16]), k, &[0u8; 16])),
        RvError::KeyHandleInvalid
    );
    let lines = log_lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("not recoverable"))
            .count(),
        1,
        "once per C_Initialize: {lines:#?}"
    );
    // The token's own keys are still there, found on the new member.
    let rsa = find_one(&s, ObjectClass::PRIVATE_KEY, "rsa-key");
    s.sign(&Mechanism::Sha256RsaPkcs, rsa, b"ok").unwrap();
}
