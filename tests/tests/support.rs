//! Functions and mechanisms a member lacks (issue 14, part 2).
//!
//! SoftHSM 2.6.1 has no SignRecover, VerifyRecover, dual-function updates
//! or operation state: in a valid session it answers
//! `CKR_FUNCTION_NOT_SUPPORTED` to each, whatever the other arguments (a
//! key handle 0, a real key, NULL pointers); for session handle 0 it answers
//! `CKR_SESSION_HANDLE_INVALID` first. An application that probes for a
//! function decides from that answer, so `libp11ha.so` must give the same
//! one, in NORMAL, WLD and HA mode and over remote members: each scenario
//! runs the same calls through SoftHSM directly and through `libp11ha.so`
//! and compares every answer.
//!
//! The mechanism rule (an operation goes to a member that has its
//! mechanism, also in a failover) needs members that differ, which SoftHSM
//! tokens never do: the test build's fault adapter hides one mechanism from
//! member 0 (`P11HA_FAULT_HIDE_MECHANISM`), a mock of a member without it.
//!
//! Each scenario runs in a child process of this test binary (this file's
//! `child` test, told what to do by `SUPPORT_TEST_CHILD`): a library is
//! configured once per process.

use std::ffi::CString;
use std::process::Command;
use std::ptr;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use cryptoki_sys::*;
use p11ha_tests::ha::{FAULT_INJECTION, inject};
use p11ha_tests::remote::{Server, serve};
use p11ha_tests::*;

const MODE: &str = "SUPPORT_TEST_CHILD";
/// `CKM_SHA256`, the mechanism hidden from member 0 in the routing tests.
const SHA256: &str = "0x250";

/// Runs this binary's `child` test as `mode` with `env`; its stdout.
fn run_child(mode: &str, env: &[(String, String)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(MODE, mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {mode} failed:\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The answers a child printed (`answer <case> <rv>` lines).
fn answers(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("answer "))
        .map(str::to_string)
        .collect()
}

fn env(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The answers of SoftHSM directly and of `libp11ha.so` configured with
/// `config` over the same tokens must be the same, and SoftHSM's must be
/// what this file's docs say (else the comparison proves nothing).
fn same_as_softhsm(tokens: &Tokens, config: &[(&str, &str)]) {
    let conf = tokens.conf().display().to_string();
    let direct = answers(&run_child(
        "direct",
        &env(&[("SOFTHSM2_CONF", &conf), ("SUPPORT_TEST_LIB", SOFTHSM)]),
    ));
    let lib = lib_path().display().to_string();
    let mut items = vec![
        ("SOFTHSM2_CONF", conf.as_str()),
        ("P11HA_MODULES", SOFTHSM),
        ("SUPPORT_TEST_LIB", lib.as_str()),
    ];
    items.extend_from_slice(config);
    let through = answers(&run_child("probe", &env(&items)));
    for case in [
        "session SignRecoverInit(NULL) 0x54",
        "session SignRecoverInit(key 0) 0x54",
        "session SignRecoverInit(key) 0x54",
        "session SignRecover 0x54",
        "session VerifyRecoverInit(key 0) 0x54",
        "session VerifyRecoverInit(key) 0x54",
        "session VerifyRecover 0x54",
        "session DigestEncryptUpdate 0x54",
        "session DecryptVerifyUpdate(NULL) 0x54",
        "session GetOperationState(NULL) 0x54",
        "session SetOperationState 0x54",
        "session 0 SignRecoverInit(key 0) 0xb3",
        "session Sign 0x0",
    ] {
        assert!(
            direct.iter().any(|a| a == case),
            "SoftHSM answers {case}: {direct:#?}"
        );
    }
    assert_eq!(through, direct, "libp11ha.so answers as SoftHSM does");
}

#[test]
fn normal_mode_answers_not_supported_as_softhsm_does() {
    same_as_softhsm(&tokens(1), &[]);
}

#[test]
fn wld_mode_answers_not_supported_as_softhsm_does() {
    same_as_softhsm(
        &tokens(3),
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
    );
}

#[test]
fn ha_mode_answers_not_supported_as_softhsm_does() {
    same_as_softhsm(
        &tokens(3),
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "HA"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
    );
}

/// Through `p11-kit server` the probe at join reaches SoftHSM behind it.
/// Two servers are the members; SoftHSM directly reads a third token.
#[test]
fn remote_members_answer_not_supported_as_softhsm_does() {
    let t = tokens(3);
    let servers = serve(&t, 2);
    let list = servers
        .iter()
        .map(Server::address)
        .collect::<Vec<_>>()
        .join(" ");
    same_as_softhsm(
        &t,
        &[
            ("P11HA_MODULES", ""),
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "HA"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
            ("ET_HSM_NETCLIENT_SERVERLIST", &list),
        ],
    );
    drop(servers);
}

#[test]
fn wld_mode_routes_to_a_member_with_the_mechanism() {
    run_child("route-wld", &[]);
}

#[test]
fn ha_mode_routes_and_fails_over_to_a_member_with_the_mechanism() {
    run_child("route-ha", &[]);
}

// ---- the children -----------------------------------------------------------

/// What a child process does; nothing in a normal test run.
#[test]
fn child() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    match mode.as_str() {
        "direct" | "probe" => probe(&std::env::var("SUPPORT_TEST_LIB").expect("the module")),
        "route-wld" => route(false),
        "route-ha" => route(true),
        m => panic!("no child mode {m}"),
    }
}

/// The function list of the module at `path`.
fn function_list(path: &str) -> &'static CK_FUNCTION_LIST {
    let c = CString::new(path).expect("path");
    // SAFETY: a NUL-terminated path; the module stays loaded for the
    // process.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW) };
    assert!(!h.is_null(), "dlopen {path}");
    // SAFETY: a loaded module and a NUL-terminated name.
    let sym = unsafe { libc::dlsym(h, c"C_GetFunctionList".as_ptr()) };
    assert!(!sym.is_null(), "C_GetFunctionList in {path}");
    // SAFETY: C_GetFunctionList has this type (PKCS#11 v2.40 §5.2).
    let f: unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV =
        unsafe { std::mem::transmute(sym) };
    let mut list = ptr::null_mut();
    // SAFETY: writes a pointer to the module's static list.
    assert_eq!(unsafe { f(&mut list) }, CKR_OK);
    // SAFETY: static in the module, which stays loaded.
    unsafe { &*list }
}

/// Calls entry `$name` of function list `$f`.
macro_rules! call {
    ($f:expr, $name:ident $(, $arg:expr)*) => {{
        let entry = $f.$name.expect(stringify!($name));
        // SAFETY: every pointer passed is NULL or points to live memory of
        // the length passed with it.
        unsafe { entry($($arg),*) }
    }};
}

/// One handle of class `class` labelled `label` in session `s`.
fn find(
    f: &CK_FUNCTION_LIST,
    s: CK_SESSION_HANDLE,
    class: CK_OBJECT_CLASS,
    label: &str,
) -> CK_ULONG {
    let mut class = class;
    let mut t = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: (&raw mut class).cast(),
            ulValueLen: size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_ptr() as *mut _,
            ulValueLen: label.len() as CK_ULONG,
        },
    ];
    assert_eq!(call!(f, C_FindObjectsInit, s, t.as_mut_ptr(), 2), CKR_OK);
    let mut h = 0;
    let mut n = 0;
    assert_eq!(call!(f, C_FindObjects, s, &mut h, 1, &mut n), CKR_OK);
    assert_eq!(call!(f, C_FindObjectsFinal, s), CKR_OK);
    assert_eq!(n, 1, "one {label}");
    h
}

/// Calls the functions SoftHSM lacks (and two it has) through the module
/// at `path`, in session 0 and in a real, logged-in session, and prints
/// each answer.
fn probe(path: &str) {
    let f = function_list(path);
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: ptr::null_mut(),
    };
    assert_eq!(call!(f, C_Initialize, (&raw mut args).cast()), CKR_OK);
    // The first slot whose token is the test tokens'.
    let mut slots = [0; 16];
    let mut n = slots.len() as CK_ULONG;
    assert_eq!(
        call!(f, C_GetSlotList, CK_TRUE, slots.as_mut_ptr(), &mut n),
        CKR_OK
    );
    let slot = slots[..n as usize]
        .iter()
        .copied()
        .find(|&slot| {
            // SAFETY: CK_TOKEN_INFO is plain data.
            let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
            call!(f, C_GetTokenInfo, slot, &mut info) == CKR_OK
                && info.label.starts_with(LABEL.as_bytes())
        })
        .expect("a TokName slot");
    let mut s = 0;
    assert_eq!(
        call!(
            f,
            C_OpenSession,
            slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            ptr::null_mut(),
            None,
            &mut s
        ),
        CKR_OK
    );
    let pin = USER_PIN.as_bytes();
    assert_eq!(
        call!(
            f,
            C_Login,
            s,
            CKU_USER,
            pin.as_ptr() as *mut _,
            pin.len() as CK_ULONG
        ),
        CKR_OK
    );
    let private = find(f, s, CKO_PRIVATE_KEY, "rsa-key");
    let public = find(f, s, CKO_PUBLIC_KEY, "rsa-key");
    let mut rsa = CK_MECHANISM {
        mechanism: CKM_RSA_PKCS,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    let rsa: *mut CK_MECHANISM = &raw mut rsa;
    // NULL, of whatever pointer type each use needs.
    macro_rules! null {
        () => {
            ptr::null_mut()
        };
    }
    let mut data = [1u8, 2, 3, 4];
    let data = data.as_mut_ptr();
    let mut out = [0u8; 512];
    let out = out.as_mut_ptr();
    let mut len: CK_ULONG = 0;
    let len: *mut CK_ULONG = &raw mut len;
    let full = || {
        // SAFETY: len points to a live CK_ULONG.
        unsafe { *len = 512 };
        len
    };
    for (name, h) in [("session 0", 0), ("session", s)] {
        let answer = |case: &str, rv: CK_RV| println!("answer {name} {case} {rv:#x}");
        answer(
            "SignRecoverInit(NULL)",
            call!(f, C_SignRecoverInit, h, null!(), 0),
        );
        answer(
            "SignRecoverInit(key 0)",
            call!(f, C_SignRecoverInit, h, rsa, 0),
        );
        answer(
            "SignRecoverInit(key)",
            call!(f, C_SignRecoverInit, h, rsa, private),
        );
        answer(
            "SignRecover",
            call!(f, C_SignRecover, h, data, 4, out, full()),
        );
        answer(
            "SignRecover(NULL)",
            call!(f, C_SignRecover, h, null!(), 0, null!(), null!()),
        );
        answer(
            "VerifyRecoverInit(key 0)",
            call!(f, C_VerifyRecoverInit, h, rsa, 0),
        );
        answer(
            "VerifyRecoverInit(key)",
            call!(f, C_VerifyRecoverInit, h, rsa, public),
        );
        answer(
            "VerifyRecover",
            call!(f, C_VerifyRecover, h, data, 4, out, full()),
        );
        answer(
            "DigestEncryptUpdate",
            call!(f, C_DigestEncryptUpdate, h, data, 4, out, full()),
        );
        answer(
            "DecryptDigestUpdate",
            call!(f, C_DecryptDigestUpdate, h, data, 4, out, full()),
        );
        answer(
            "SignEncryptUpdate",
            call!(f, C_SignEncryptUpdate, h, data, 4, out, full()),
        );
        answer(
            "DecryptVerifyUpdate",
            call!(f, C_DecryptVerifyUpdate, h, data, 4, out, full()),
        );
        answer(
            "DecryptVerifyUpdate(NULL)",
            call!(f, C_DecryptVerifyUpdate, h, null!(), 0, null!(), null!()),
        );
        answer(
            "GetOperationState(NULL)",
            call!(f, C_GetOperationState, h, null!(), null!()),
        );
        answer(
            "GetOperationState",
            call!(f, C_GetOperationState, h, out, full()),
        );
        answer(
            "SetOperationState",
            call!(f, C_SetOperationState, h, data, 4, 0, 0),
        );
        // A function SoftHSM has still answers as it does. (Not with key
        // handle 0: in WLD and HA mode p11ha answers CKR_KEY_HANDLE_INVALID
        // where SoftHSM answers CKR_OBJECT_HANDLE_INVALID, a difference of
        // its own, older than this rule.)
        answer("SignInit(key)", call!(f, C_SignInit, h, rsa, private));
        answer("Sign", call!(f, C_Sign, h, data, 4, out, full()));
    }
    assert_eq!(call!(f, C_CloseSession, s), CKR_OK);
    assert_eq!(call!(f, C_Finalize, null!()), CKR_OK);
}

/// A mock of members that differ: member 0 of three lacks SHA-256 (hidden
/// by the test build's fault adapter, which leaves it out of the member's
/// mechanism list and answers `CKR_MECHANISM_INVALID` for it; a real
/// SoftHSM cannot show this). A digest on a session of member 0 moves it
/// to a member that has SHA-256; other operations stay; in HA mode a
/// digest in progress fails over to the member that has SHA-256, not to
/// member 0, though member 0 serves fewer sessions.
fn route(ha: bool) {
    let hide = ("P11HA_FAULT_HIDE_MECHANISM", format!("0:{SHA256}"));
    let l = if ha {
        p11ha_tests::ha::start(3, 600_000, &[(hide.0, hide.1.as_str())])
    } else {
        Library::start(
            3,
            &[
                ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
                ("ET_PTKC_WLD_SLOT_0", LABEL),
                FAULT_INJECTION,
                (hide.0, hide.1.as_str()),
            ],
        )
    };
    let data = b"p11ha routes by mechanism";
    // Sessions until one is on member 0.
    let mut kept = Vec::new();
    let on_0 = loop {
        let s = l.user_session();
        if session_member(&s) == 0 {
            break s;
        }
        kept.push(s);
        assert!(kept.len() < 30, "no session reaches member 0");
    };
    // Another operation stays on member 0.
    let key = find_one(&on_0, ObjectClass::PRIVATE_KEY, "ec-key");
    let sig = on_0
        .sign(&Mechanism::Ecdsa, key, &sha256(data))
        .expect("ECDSA on member 0");
    assert_eq!(sig.len(), 64);
    assert_eq!(session_member(&on_0), 0, "ECDSA stays on member 0");
    // The digest moves it.
    assert_eq!(
        on_0.digest(&Mechanism::Sha256, data).expect("SHA-256"),
        sha256(data)
    );
    assert_ne!(session_member(&on_0), 0, "SHA-256 moved the session");
    if !ha {
        return;
    }
    // Every session but one digest session away from member 0, which then
    // has the fewest sessions; the digest's member fails.
    drop(kept);
    drop(on_0);
    let s = l.user_session();
    s.digest_init(&Mechanism::Sha256).expect("DigestInit");
    s.digest_update(&data[..5]).expect("DigestUpdate");
    let m = session_member(&s);
    assert_ne!(m, 0);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let o = l.user_session();
            o.digest_init(&Mechanism::Sha256).expect("DigestInit");
            o
        })
        .collect();
    assert!(busy.iter().all(|o| session_member(o) != 0));
    assert_eq!(member_info(0).expect("member 0").sessions, 0);
    inject(m, "down");
    s.digest_update(&data[5..])
        .expect("DigestUpdate after the failure");
    assert_eq!(s.digest_final().expect("DigestFinal"), sha256(data));
    let now = session_member(&s);
    assert!(now != 0 && now != m, "failed over to {now}");
    drop(busy);
}
