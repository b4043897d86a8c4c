//! What members support, learnt at join: a function no member in service
//! has is answered `CKR_FUNCTION_NOT_SUPPORTED` after the session handle
//! and before any other handle; mechanisms are known per member.

use crate::Error;
use crate::ck::{Rv, mech};
use crate::config::Mode;
use crate::engine::{Function, MAX_MEMBER_MECHANISMS};
use crate::port::{DualOp, Op};

use super::{engine, logged_in, mechanism};

#[test]
fn a_join_learns_the_functions_and_mechanisms_of_a_member() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let support = e.member_support(0).unwrap();
    // The scripted token has none of the optional functions.
    for f in Function::ALL {
        assert!(!support.has_function(f), "{f:?}");
    }
    for m in crate::testing::MECHANISMS {
        assert!(support.has_mechanism(m));
    }
    assert!(!support.has_mechanism(mech::RSA_PKCS));
    assert!(!support.can_run(Op::SignRecover, mech::SHA256));
    assert!(support.can_run(Op::Digest, mech::SHA256));
    assert!(e.member_support(2).is_none());
    // The probe's session is closed again.
    for t in &tokens {
        assert_eq!(
            t.calls("open_session"),
            t.calls("close_session") + 1,
            "anchor"
        );
    }
    assert!(MAX_MEMBER_MECHANISMS >= crate::testing::MECHANISMS.len());
}

#[test]
fn a_function_no_member_has_is_refused_before_its_key_handle() {
    for mode in [Mode::Normal, Mode::Wld, Mode::Ha] {
        let (e, tokens) = engine(mode, 2);
        let s = logged_in(&e);
        let rsa = mechanism(mech::RSA_PKCS);
        let init = |session, op| e.op_init(session, op, &rsa, 0);
        // The session handle comes first, as SoftHSM checks it first.
        assert_eq!(
            init(0xdead, Op::SignRecover),
            Err(Error::Rv(Rv::SESSION_HANDLE_INVALID))
        );
        let before: usize = tokens.iter().map(|t| t.calls("op_init")).sum();
        for op in [Op::SignRecover, Op::VerifyRecover] {
            // Key handle 0 names nothing, but the function is missing.
            assert_eq!(
                init(s, op),
                Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED)),
                "{mode:?}"
            );
            assert_eq!(
                e.op_single(s, op, b"x", None),
                Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))
            );
        }
        let after: usize = tokens.iter().map(|t| t.calls("op_init")).sum();
        assert_eq!(before, after, "no member was asked");
        assert_eq!(
            e.dual_update(s, DualOp::SignEncrypt, b"x", None),
            Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))
        );
        assert_eq!(
            e.operation_state(s, None),
            Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))
        );
        assert_eq!(
            e.function_supported(s, Function::SetOperationState),
            Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))
        );
        // A function the members have answers as before: key 0 is invalid.
        assert_eq!(
            e.op_init(s, Op::Sign, &mechanism(mech::AES_MAC), 0),
            Err(Error::Rv(Rv::KEY_HANDLE_INVALID)),
            "{mode:?}"
        );
    }
}
