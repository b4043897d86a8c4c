//! WLD mode when members fail: a member that answers CKR_DEVICE_ERROR or
//! CKR_GENERAL_ERROR (or whose transport breaks) is dropped for the life of
//! the application; the others carry on; with none left the slot has no
//! token. Real SoftHSM members sit behind the fault adapter, armed through
//! `P11HA_InjectFault` (this needs `P11HA_FAULT_INJECTION=YES`).

use std::ffi::{CString, c_char};
use std::os::fd::AsRawFd;

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use cryptoki::session::Session;
use cryptoki_sys::{CK_RV, CK_ULONG};
use p11ha_tests::*;

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        r => panic!("expected a PKCS#11 error, got {r:?}"),
    }
}

fn inject(member: usize, command: &str) {
    let f: unsafe extern "C" fn(CK_ULONG, *const c_char) -> CK_RV = symbol("P11HA_InjectFault");
    let c = CString::new(command).unwrap();
    // SAFETY: a NUL-terminated command.
    let rv = unsafe { f(member as CK_ULONG, c.as_ptr()) };
    assert_eq!(rv, 0, "inject {command}");
}

/// Sends fd 2 to a file while the test runs, to read what the library
/// reports there.
struct Stderr {
    saved: i32,
    path: std::path::PathBuf,
}

impl Stderr {
    fn capture() -> Self {
        let path = std::env::temp_dir().join(format!("p11ha-stderr-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        // SAFETY: dup/dup2 on this process's own descriptors.
        let saved = unsafe { libc::dup(2) };
        // SAFETY: as above: fd 2 now points at the file.
        unsafe { libc::dup2(file.as_raw_fd(), 2) };
        Stderr { saved, path }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }
}

impl Drop for Stderr {
    fn drop(&mut self) {
        // SAFETY: restores the saved descriptor.
        unsafe {
            libc::dup2(self.saved, 2);
            libc::close(self.saved);
        }
    }
}

#[test]
fn failed_members_are_dropped_and_the_rest_carry_on() {
    let err = Stderr::capture();
    let l = Library::start(
        3,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
            ("P11HA_FAULT_INJECTION", "YES"),
        ],
    );
    let login = l.user_session();
    // One session on each member.
    let mut s: Vec<Option<Session>> = vec![None, None, None];
    let mut spare = Vec::new();
    while s.iter().any(Option::is_none) {
        let t = l.session();
        let m = session_member(&t);
        if s[m].is_none() {
            s[m] = Some(t);
        } else {
            spare.push(t);
        }
    }
    let s: Vec<Session> = s.into_iter().map(Option::unwrap).collect();
    let key = find_one(&s[0], ObjectClass::PRIVATE_KEY, "ec-key");
    let digest = sha256(b"wld failure");

    // Member 1 fails with CKR_DEVICE_ERROR at its next signature.
    inject(1, "on:op_single:1:0x30");
    assert_eq!(
        rv(s[1].sign(&Mechanism::Ecdsa, key, &digest)),
        RvError::DeviceError
    );
    assert_eq!(member_info(1).unwrap().up, 0, "member 1 dropped");
    // Its session now answers CKR_DEVICE_ERROR, and closes cleanly.
    assert_eq!(rv(s[1].get_session_info()), RvError::DeviceError);
    // The others carry on, and new sessions avoid member 1.
    assert_eq!(
        s[0].sign(&Mechanism::Ecdsa, key, &digest).unwrap().len(),
        64
    );
    assert_eq!(
        s[2].sign(&Mechanism::Ecdsa, key, &digest).unwrap().len(),
        64
    );
    let fresh: Vec<Session> = (0..6).map(|_| l.session()).collect();
    assert!(fresh.iter().all(|f| session_member(f) != 1));
    // Healing the fault does not bring it back: WLD drops for good.
    inject(1, "heal");
    let more: Vec<Session> = (0..6).map(|_| l.session()).collect();
    assert!(more.iter().all(|f| session_member(f) != 1));
    assert_eq!(member_info(1).unwrap().up, 0);

    // Member 2 answers CKR_GENERAL_ERROR at a final: dropped too.
    inject(2, "on:op_final:1:0x5");
    s[2].digest_init(&Mechanism::Sha256).unwrap();
    s[2].digest_update(b"abc").unwrap();
    assert_eq!(rv(s[2].digest_final()), RvError::GeneralError);
    assert_eq!(member_info(2).unwrap().up, 0);

    // An application error on the last member drops nothing.
    let public = find_one(&s[0], ObjectClass::PUBLIC_KEY, "ec-key");
    assert_eq!(
        rv(s[0].verify(&Mechanism::Ecdsa, public, &digest, &[0u8; 64])),
        RvError::SignatureInvalid
    );
    assert_eq!(member_info(0).unwrap().up, 1);

    // The last member's transport breaks: no member left, no token.
    inject(0, "on:session_info:1:transport");
    assert_eq!(rv(s[0].get_session_info()), RvError::DeviceError);
    assert_eq!(member_info(0).unwrap().up, 0);
    assert!(l.pkcs11.get_slots_with_token().unwrap().is_empty());
    assert_eq!(l.pkcs11.get_all_slots().unwrap().len(), 1, "the slot stays");
    let slot = l.pkcs11.get_all_slots().unwrap()[0];
    assert_eq!(rv(l.pkcs11.get_token_info(slot)), RvError::TokenNotPresent);
    assert_eq!(rv(l.pkcs11.open_rw_session(slot)), RvError::TokenNotPresent);
    drop((s, spare, fresh, more, login));

    let text = err.text();
    drop(err);
    let members: Vec<MemberInfo> = (0..3).map(|i| member_info(i).unwrap()).collect();
    for (i, want) in [
        (1, "CKR_DEVICE_ERROR"),
        (2, "CKR_GENERAL_ERROR"),
        (0, "CKR_DEVICE_ERROR"),
    ] {
        let line = format!(
            "p11ha: Error: HSM dropped hsmIdx={i}, hsmSlotId={}: it answered {want}; \
             no longer used by this application",
            members[i].member_slot
        );
        assert_eq!(text.matches(&line).count(), 1, "once: {line}\nin:\n{text}");
    }
}
