//! The C ABI itself, through the raw function list: what the `cryptoki`
//! crate cannot express (NULL pointers, inconsistent lengths, stale
//! handles, calls outside C_Initialize/C_Finalize, length queries).
//!
//! One test drives the whole life cycle in order, since initialisation is
//! process-wide.

use std::ptr::{null, null_mut};

use cryptoki_sys::*;
use p11ha_tests::*;

fn setup_env() -> Tokens {
    let t = tokens(3);
    // Single-threaded at this point of the only test: configure is safe here.
    configure(
        &t,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
    );
    t
}

macro_rules! call {
    ($f:ident ( $($a:expr),* )) => {{
        let f = raw().$f.expect(stringify!($f));
        // SAFETY: the arguments are what each step of the test means to
        // pass, NULLs included: the library must answer, not crash.
        unsafe { f($($a),*) }
    }};
}

type GetInterfaceList = unsafe extern "C" fn(*mut CK_INTERFACE, *mut CK_ULONG) -> CK_RV;
type GetInterface = unsafe extern "C" fn(
    *mut CK_UTF8CHAR,
    *mut CK_VERSION,
    *mut *mut CK_INTERFACE,
    CK_FLAGS,
) -> CK_RV;

/// Calls an exported function that is not in the 2.40 function list.
macro_rules! exported {
    ($f:ident : $ty:ident ( $($a:expr),* )) => {{
        let f: $ty = symbol(stringify!($f));
        // SAFETY: as for call!.
        unsafe { f($($a),*) }
    }};
}

fn find(session: CK_SESSION_HANDLE, class: CK_OBJECT_CLASS, label: &str) -> CK_OBJECT_HANDLE {
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &class as *const _ as *mut _,
            ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_ptr() as *mut _,
            ulValueLen: label.len() as CK_ULONG,
        },
    ];
    assert_eq!(
        call!(C_FindObjectsInit(session, template.as_mut_ptr(), 2)),
        CKR_OK
    );
    let mut h = [0; 2];
    let mut n = 0;
    assert_eq!(
        call!(C_FindObjects(session, h.as_mut_ptr(), 2, &mut n)),
        CKR_OK
    );
    assert_eq!(call!(C_FindObjectsFinal(session)), CKR_OK);
    assert_eq!(n, 1);
    h[0]
}

#[test]
fn the_c_abi_answers_every_case_with_the_specified_code() {
    let tokens = setup_env();
    let _ = tokens;
    let cases = std::cell::Cell::new(0);
    let check = |what: &str, got: CK_RV, want: CK_RV| {
        cases.set(cases.get() + 1);
        assert_eq!(got, want, "{what}: got {got:#x}, want {want:#x}");
    };

    // Before C_Initialize.
    // SAFETY: CK_INFO is plain data, valid all zeros.
    let mut info: CK_INFO = unsafe { std::mem::zeroed() };
    check(
        "GetInfo before init",
        call!(C_GetInfo(&mut info)),
        CKR_CRYPTOKI_NOT_INITIALIZED,
    );
    let mut count: CK_ULONG = 0;
    check(
        "GetSlotList before init",
        call!(C_GetSlotList(0, null_mut(), &mut count)),
        CKR_CRYPTOKI_NOT_INITIALIZED,
    );
    check(
        "Finalize before init",
        call!(C_Finalize(null_mut())),
        CKR_CRYPTOKI_NOT_INITIALIZED,
    );
    let mut fl: *mut CK_FUNCTION_LIST = null_mut();
    check(
        "GetFunctionList(NULL)",
        call!(C_GetFunctionList(null_mut())),
        CKR_ARGUMENTS_BAD,
    );
    check("GetFunctionList", call!(C_GetFunctionList(&mut fl)), CKR_OK);
    // SAFETY: C_GetFunctionList answered CKR_OK, so fl is the library's list.
    assert_eq!(unsafe { (*fl).version.major }, 2);

    // PKCS#11 3.0 interface discovery.
    let mut n_if: CK_ULONG = 0;
    check(
        "GetInterfaceList count",
        exported!(C_GetInterfaceList: GetInterfaceList(null_mut(), &mut n_if)),
        CKR_OK,
    );
    assert_eq!(n_if, 1);
    let mut iface: *mut CK_INTERFACE = null_mut();
    check(
        "GetInterface default",
        exported!(C_GetInterface: GetInterface(null_mut(), null_mut(), &mut iface, 0)),
        CKR_OK,
    );
    // SAFETY: C_GetInterface answered CKR_OK, so iface is the library's.
    let list = unsafe { (*iface).pFunctionList };
    assert_eq!(list as *const CK_FUNCTION_LIST, fl as *const _);
    check(
        "GetInterface PKCS 11",
        exported!(C_GetInterface: GetInterface(c"PKCS 11".as_ptr() as *mut _, null_mut(), &mut iface, 0)),
        CKR_OK,
    );
    check(
        "GetInterface unknown name",
        exported!(C_GetInterface: GetInterface(c"Vendor X".as_ptr() as *mut _, null_mut(), &mut iface, 0)),
        CKR_ARGUMENTS_BAD,
    );
    let mut v3 = CK_VERSION { major: 3, minor: 0 };
    check(
        "GetInterface version 3.0",
        exported!(C_GetInterface: GetInterface(null_mut(), &mut v3, &mut iface, 0)),
        CKR_ARGUMENTS_BAD,
    );
    check(
        "GetInterface NULL out",
        exported!(C_GetInterface: GetInterface(null_mut(), null_mut(), null_mut(), 0)),
        CKR_ARGUMENTS_BAD,
    );

    // C_Initialize argument checks.
    let mut reserved = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: std::ptr::dangling_mut(),
    };
    check(
        "Initialize pReserved",
        call!(C_Initialize(&mut reserved as *mut _ as *mut _)),
        CKR_ARGUMENTS_BAD,
    );
    unsafe extern "C" fn create(m: *mut *mut std::ffi::c_void) -> CK_RV {
        // SAFETY: the library passes a writable pointer, as PKCS#11 says.
        unsafe { *m = std::ptr::dangling_mut() };
        CKR_OK
    }
    let mut partial = CK_C_INITIALIZE_ARGS {
        CreateMutex: Some(create),
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: 0,
        pReserved: null_mut(),
    };
    check(
        "Initialize with some mutex callbacks",
        call!(C_Initialize(&mut partial as *mut _ as *mut _)),
        CKR_ARGUMENTS_BAD,
    );
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: null_mut(),
    };
    check(
        "Initialize",
        call!(C_Initialize(&mut args as *mut _ as *mut _)),
        CKR_OK,
    );
    check(
        "Initialize twice",
        call!(C_Initialize(null_mut())),
        CKR_CRYPTOKI_ALREADY_INITIALIZED,
    );
    check("GetInfo", call!(C_GetInfo(&mut info)), CKR_OK);
    assert_eq!(
        (info.cryptokiVersion.major, info.cryptokiVersion.minor),
        (2, 40)
    );
    check(
        "GetInfo(NULL)",
        call!(C_GetInfo(null_mut())),
        CKR_ARGUMENTS_BAD,
    );

    // Slot lists: count, too small (count written first), NULL count.
    check(
        "GetSlotList(NULL count)",
        call!(C_GetSlotList(1, null_mut(), null_mut())),
        CKR_ARGUMENTS_BAD,
    );
    check(
        "GetSlotList count",
        call!(C_GetSlotList(1, null_mut(), &mut count)),
        CKR_OK,
    );
    assert_eq!(count, 1);
    let mut slots = [CK_SLOT_ID::MAX; 4];
    let mut zero: CK_ULONG = 0;
    check(
        "GetSlotList too small",
        call!(C_GetSlotList(1, slots.as_mut_ptr(), &mut zero)),
        CKR_BUFFER_TOO_SMALL,
    );
    assert_eq!(
        zero, 1,
        "the needed count is written with CKR_BUFFER_TOO_SMALL"
    );
    count = 4;
    check(
        "GetSlotList",
        call!(C_GetSlotList(1, slots.as_mut_ptr(), &mut count)),
        CKR_OK,
    );
    assert_eq!((count, slots[0]), (1, 0));

    // SAFETY: plain data, valid all zeros.
    let mut slot_info: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
    check(
        "GetSlotInfo bad slot",
        call!(C_GetSlotInfo(7, &mut slot_info)),
        CKR_SLOT_ID_INVALID,
    );
    check(
        "GetSlotInfo(NULL)",
        call!(C_GetSlotInfo(0, null_mut())),
        CKR_ARGUMENTS_BAD,
    );
    // SAFETY: plain data, valid all zeros.
    let mut token: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    check(
        "GetTokenInfo bad slot",
        call!(C_GetTokenInfo(99, &mut token)),
        CKR_SLOT_ID_INVALID,
    );
    let mut n_mech: CK_ULONG = 0;
    check(
        "GetMechanismList count",
        call!(C_GetMechanismList(0, null_mut(), &mut n_mech)),
        CKR_OK,
    );
    assert!(n_mech > 10);
    let mut one = [0; 1];
    let mut one_n: CK_ULONG = 1;
    check(
        "GetMechanismList too small",
        call!(C_GetMechanismList(0, one.as_mut_ptr(), &mut one_n)),
        CKR_BUFFER_TOO_SMALL,
    );
    assert_eq!(one_n, n_mech);
    // A label that is not the virtual slot's: refused before any member
    // is touched (the virtual slot is the tokens that carry its label).
    let mut label = [b' '; 32];
    check(
        "InitToken on a virtual slot with another label",
        call!(C_InitToken(
            0,
            b"12345678".as_ptr() as *mut _,
            8,
            label.as_mut_ptr()
        )),
        CKR_ARGUMENTS_BAD,
    );

    // Sessions.
    let mut s: CK_SESSION_HANDLE = 0;
    check(
        "OpenSession(NULL handle)",
        call!(C_OpenSession(
            0,
            CKF_SERIAL_SESSION,
            null_mut(),
            None,
            null_mut()
        )),
        CKR_ARGUMENTS_BAD,
    );
    check(
        "OpenSession bad slot",
        call!(C_OpenSession(
            5,
            CKF_SERIAL_SESSION,
            null_mut(),
            None,
            &mut s
        )),
        CKR_SLOT_ID_INVALID,
    );
    check(
        "OpenSession without CKF_SERIAL_SESSION",
        call!(C_OpenSession(0, 0, null_mut(), None, &mut s)),
        CKR_SESSION_PARALLEL_NOT_SUPPORTED,
    );
    check(
        "OpenSession",
        call!(C_OpenSession(
            0,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            null_mut(),
            None,
            &mut s
        )),
        CKR_OK,
    );
    // SAFETY: plain data, valid all zeros.
    let mut si: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
    check(
        "GetSessionInfo(0)",
        call!(C_GetSessionInfo(0, &mut si)),
        CKR_SESSION_HANDLE_INVALID,
    );
    check(
        "GetSessionInfo unknown",
        call!(C_GetSessionInfo(0x7fff_ffff, &mut si)),
        CKR_SESSION_HANDLE_INVALID,
    );
    check(
        "GetSessionInfo(NULL)",
        call!(C_GetSessionInfo(s, null_mut())),
        CKR_ARGUMENTS_BAD,
    );
    check(
        "GetSessionInfo",
        call!(C_GetSessionInfo(s, &mut si)),
        CKR_OK,
    );
    assert_eq!((si.slotID, si.state), (0, CKS_RW_PUBLIC_SESSION));
    check(
        "Login NULL PIN with a length",
        call!(C_Login(s, CKU_USER, null_mut(), 4)),
        // NULL is the protected authentication path; SoftHSM has none.
        CKR_ARGUMENTS_BAD,
    );
    check(
        "Login wrong PIN",
        call!(C_Login(s, CKU_USER, b"0000".as_ptr() as *mut _, 4)),
        CKR_PIN_INCORRECT,
    );
    check(
        "Login",
        call!(C_Login(s, CKU_USER, b"1234".as_ptr() as *mut _, 4)),
        CKR_OK,
    );

    // Find without init, and with a NULL template and a length.
    let mut h = [0; 4];
    let mut n: CK_ULONG = 0;
    check(
        "FindObjects without Init",
        call!(C_FindObjects(s, h.as_mut_ptr(), 4, &mut n)),
        CKR_OPERATION_NOT_INITIALIZED,
    );
    check(
        "FindObjectsInit NULL template, count 2",
        call!(C_FindObjectsInit(s, null_mut(), 2)),
        CKR_ARGUMENTS_BAD,
    );
    check(
        "FindObjectsFinal without Init",
        call!(C_FindObjectsFinal(s)),
        CKR_OPERATION_NOT_INITIALIZED,
    );

    // Sign: a length query and a too-small buffer do not end the operation.
    let key = find(s, CKO_PRIVATE_KEY, "ec-key");
    let mut mech = CK_MECHANISM {
        mechanism: CKM_ECDSA,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    check(
        "SignInit(NULL mechanism)",
        call!(C_SignInit(s, null_mut(), key)),
        CKR_ARGUMENTS_BAD,
    );
    check(
        "SignInit bad key",
        call!(C_SignInit(s, &mut mech, 0x7fff_fff0)),
        CKR_KEY_HANDLE_INVALID,
    );
    check("SignInit", call!(C_SignInit(s, &mut mech, key)), CKR_OK);
    check(
        "SignInit again",
        call!(C_SignInit(s, &mut mech, key)),
        CKR_OPERATION_ACTIVE,
    );
    let digest = [0x5au8; 32];
    let mut sig_len: CK_ULONG = 0;
    check(
        "Sign length query",
        call!(C_Sign(
            s,
            digest.as_ptr() as *mut _,
            32,
            null_mut(),
            &mut sig_len
        )),
        CKR_OK,
    );
    assert_eq!(sig_len, 64);
    let mut sig = [0u8; 64];
    let mut small: CK_ULONG = 10;
    check(
        "Sign too small",
        call!(C_Sign(
            s,
            digest.as_ptr() as *mut _,
            32,
            sig.as_mut_ptr(),
            &mut small
        )),
        CKR_BUFFER_TOO_SMALL,
    );
    assert_eq!(
        small, 64,
        "the needed length is written with CKR_BUFFER_TOO_SMALL"
    );
    sig_len = 64;
    check(
        "Sign after the query and the too-small call",
        call!(C_Sign(
            s,
            digest.as_ptr() as *mut _,
            32,
            sig.as_mut_ptr(),
            &mut sig_len
        )),
        CKR_OK,
    );
    // Refused arguments end an operation as any other error does (PKCS#11
    // 5.11: C_Sign always terminates it but for CKR_BUFFER_TOO_SMALL and a
    // length query), so these come after the signature is made.
    check(
        "Sign NULL length",
        call!(C_Sign(
            s,
            digest.as_ptr() as *mut _,
            32,
            sig.as_mut_ptr(),
            null_mut()
        )),
        CKR_ARGUMENTS_BAD,
    );
    check(
        "Sign NULL data with a length",
        call!(C_Sign(s, null_mut(), 32, sig.as_mut_ptr(), &mut sig_len)),
        CKR_ARGUMENTS_BAD,
    );
    check(
        "Sign after the operation ended",
        call!(C_Sign(
            s,
            digest.as_ptr() as *mut _,
            32,
            sig.as_mut_ptr(),
            &mut sig_len
        )),
        CKR_OPERATION_NOT_INITIALIZED,
    );
    let public = find(s, CKO_PUBLIC_KEY, "ec-key");
    check(
        "VerifyInit",
        call!(C_VerifyInit(s, &mut mech, public)),
        CKR_OK,
    );
    check(
        "Verify",
        call!(C_Verify(
            s,
            digest.as_ptr() as *mut _,
            32,
            sig.as_mut_ptr(),
            64
        )),
        CKR_OK,
    );

    // In-place multi-part encryption (input and output are one buffer).
    let aes = find(s, CKO_SECRET_KEY, "aes-key");
    let mut iv = [9u8; 16];
    let mut cbc = CK_MECHANISM {
        mechanism: CKM_AES_CBC,
        pParameter: iv.as_mut_ptr() as *mut _,
        ulParameterLen: 16,
    };
    let plain = [0x11u8; 64];
    let mut buf = plain;
    check(
        "EncryptInit",
        call!(C_EncryptInit(s, &mut cbc, aes)),
        CKR_OK,
    );
    let mut out_len: CK_ULONG = 64;
    check(
        "EncryptUpdate in place",
        call!(C_EncryptUpdate(
            s,
            buf.as_mut_ptr(),
            64,
            buf.as_mut_ptr(),
            &mut out_len
        )),
        CKR_OK,
    );
    assert_eq!(out_len, 64);
    let mut fin_len: CK_ULONG = 0;
    check(
        "EncryptFinal length",
        call!(C_EncryptFinal(s, null_mut(), &mut fin_len)),
        CKR_OK,
    );
    check(
        "EncryptFinal",
        call!(C_EncryptFinal(s, buf.as_mut_ptr(), &mut fin_len)),
        CKR_OK,
    );
    let mut again = [0u8; 64];
    let mut again_len: CK_ULONG = 64;
    check(
        "EncryptInit single",
        call!(C_EncryptInit(s, &mut cbc, aes)),
        CKR_OK,
    );
    check(
        "Encrypt single",
        call!(C_Encrypt(
            s,
            plain.as_ptr() as *mut _,
            64,
            again.as_mut_ptr(),
            &mut again_len
        )),
        CKR_OK,
    );
    assert_eq!(buf, again, "in place gives what separate buffers give");
    check(
        "EncryptUpdate without Init",
        call!(C_EncryptUpdate(
            s,
            buf.as_mut_ptr(),
            16,
            again.as_mut_ptr(),
            &mut again_len
        )),
        CKR_OPERATION_NOT_INITIALIZED,
    );

    // Attributes: unknown object, NULL template with a count, per-attribute
    // lengths for sensitive and invalid types.
    let mut attrs = [CK_ATTRIBUTE {
        type_: CKA_LABEL,
        pValue: null_mut(),
        ulValueLen: 0,
    }];
    check(
        "GetAttributeValue unknown object",
        call!(C_GetAttributeValue(s, 0x7fff_fff0, attrs.as_mut_ptr(), 1)),
        CKR_OBJECT_HANDLE_INVALID,
    );
    check(
        "GetAttributeValue NULL template",
        call!(C_GetAttributeValue(s, key, null_mut(), 1)),
        CKR_ARGUMENTS_BAD,
    );
    let mut mixed = [
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: null_mut(),
            ulValueLen: 0,
        },
        CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: null_mut(),
            ulValueLen: 0,
        },
        CK_ATTRIBUTE {
            type_: 0x7fff_0000,
            pValue: null_mut(),
            ulValueLen: 0,
        },
    ];
    let rv = call!(C_GetAttributeValue(s, key, mixed.as_mut_ptr(), 3));
    cases.set(cases.get() + 1);
    assert!(
        rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID,
        "GetAttributeValue sensitive + invalid: {rv:#x}"
    );
    assert_eq!(mixed[0].ulValueLen, 6, "the label's length is still given");
    assert_eq!(mixed[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(mixed[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);

    // Random numbers: NULL with a length.
    check(
        "GenerateRandom NULL",
        call!(C_GenerateRandom(s, null_mut(), 8)),
        CKR_ARGUMENTS_BAD,
    );
    let mut rnd = [0u8; 8];
    check(
        "GenerateRandom",
        call!(C_GenerateRandom(s, rnd.as_mut_ptr(), 8)),
        CKR_OK,
    );

    // Slot events: none, and never a block.
    let mut ev_slot: CK_SLOT_ID = 0;
    check(
        "WaitForSlotEvent don't block",
        call!(C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut ev_slot, null_mut())),
        CKR_NO_EVENT,
    );
    check(
        "WaitForSlotEvent blocking",
        call!(C_WaitForSlotEvent(0, &mut ev_slot, null_mut())),
        CKR_FUNCTION_NOT_SUPPORTED,
    );

    // Closed and stale session handles.
    check("CloseSession", call!(C_CloseSession(s)), CKR_OK);
    check(
        "CloseSession twice",
        call!(C_CloseSession(s)),
        CKR_SESSION_HANDLE_INVALID,
    );
    check(
        "GetSessionInfo closed",
        call!(C_GetSessionInfo(s, &mut si)),
        CKR_SESSION_HANDLE_INVALID,
    );
    let mut s2: CK_SESSION_HANDLE = 0;
    check(
        "OpenSession again",
        call!(C_OpenSession(
            0,
            CKF_SERIAL_SESSION,
            null_mut(),
            None,
            &mut s2
        )),
        CKR_OK,
    );
    assert_ne!(s, s2, "a reused session entry gets a new handle");
    check(
        "stale handle after reuse",
        call!(C_GetSessionInfo(s, &mut si)),
        CKR_SESSION_HANDLE_INVALID,
    );
    check(
        "CloseAllSessions bad slot",
        call!(C_CloseAllSessions(3)),
        CKR_SLOT_ID_INVALID,
    );
    check("CloseAllSessions", call!(C_CloseAllSessions(0)), CKR_OK);
    check(
        "session closed by CloseAllSessions",
        call!(C_GetSessionInfo(s2, &mut si)),
        CKR_SESSION_HANDLE_INVALID,
    );

    // C_Finalize: reserved argument, then the real one, then nothing works.
    check(
        "Finalize(non-NULL)",
        call!(C_Finalize(std::ptr::dangling_mut())),
        CKR_ARGUMENTS_BAD,
    );
    check("Finalize", call!(C_Finalize(null_mut())), CKR_OK);
    check(
        "GetInfo after Finalize",
        call!(C_GetInfo(&mut info)),
        CKR_CRYPTOKI_NOT_INITIALIZED,
    );
    check(
        "OpenSession after Finalize",
        call!(C_OpenSession(
            0,
            CKF_SERIAL_SESSION,
            null_mut(),
            None,
            &mut s
        )),
        CKR_CRYPTOKI_NOT_INITIALIZED,
    );
    check(
        "Finalize twice",
        call!(C_Finalize(null_mut())),
        CKR_CRYPTOKI_NOT_INITIALIZED,
    );

    // And the library can be initialised again in the same process.
    check("Initialize again", call!(C_Initialize(null_mut())), CKR_OK);
    check(
        "GetSlotList after re-init",
        call!(C_GetSlotList(1, null_mut(), &mut count)),
        CKR_OK,
    );
    assert_eq!(count, 1);
    check("Finalize again", call!(C_Finalize(null_mut())), CKR_OK);
    let _ = null::<u8>();
    println!("C ABI cases checked: {}", cases.get());
}
