//! Every function of the C interface, called through the raw function list
//! with the arguments PKCS#11 v2.40 says a library must refuse or treat
//! specially, from a table: NULL for each pointer, zero and absurd
//! lengths, unknown, closed and stale session and object handles, bad slot
//! ids, wrong-state sequences, calls before `C_Initialize` and after
//! `C_Finalize`, and bad `CK_C_INITIALIZE_ARGS`.
//!
//! Each row names the function it tests, the call (a closure over [`Ctx`],
//! the valid handles of the run) and the return codes the specification
//! allows. Every row runs; mismatches are collected and reported together;
//! the run fails if a function of the list has no row.
//!
//! The library is a per-process singleton, so one test drives the phases in
//! order: before `C_Initialize`, initialised (the handles made once, in WLD
//! mode over three SoftHSM tokens so that handles are translated), and
//! after `C_Finalize`.
//!
//! Where SoftHSM 2.6.1 (the member) answers a code the specification does
//! not give and p11ha passes it on, the row accepts both, with a comment.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ffi::c_void;
use std::ptr::{dangling_mut, null_mut};

use cryptoki_sys::*;
use p11ha_tests::*;

type GetInterfaceList = unsafe extern "C" fn(*mut CK_INTERFACE, *mut CK_ULONG) -> CK_RV;
type GetInterface = unsafe extern "C" fn(
    *mut CK_UTF8CHAR,
    *mut CK_VERSION,
    *mut *mut CK_INTERFACE,
    CK_FLAGS,
) -> CK_RV;

thread_local! {
    /// The functions the current row has called, to check that a row calls
    /// the function it claims to test.
    static CALLED: RefCell<BTreeSet<&'static str>> = const { RefCell::new(BTreeSet::new()) };
}

/// Calls a function of `libp11ha.so` by its PKCS#11 name.
macro_rules! ck {
    (C_GetInterfaceList ( $($a:expr),* $(,)? )) => {{
        CALLED.with(|c| c.borrow_mut().insert("C_GetInterfaceList"));
        let f: GetInterfaceList = symbol("C_GetInterfaceList");
        // SAFETY: as in the last arm: each pointer NULL on purpose or valid
        // for the length the row gives with it.
        unsafe { f($($a),*) }
    }};
    (C_GetInterface ( $($a:expr),* $(,)? )) => {{
        CALLED.with(|c| c.borrow_mut().insert("C_GetInterface"));
        let f: GetInterface = symbol("C_GetInterface");
        // SAFETY: as in the last arm: each pointer NULL on purpose or valid
        // for the length the row gives with it.
        unsafe { f($($a),*) }
    }};
    ($f:ident ( $($a:expr),* $(,)? )) => {{
        CALLED.with(|c| c.borrow_mut().insert(stringify!($f)));
        let f = raw().$f.expect(stringify!($f));
        // SAFETY: every pointer a row passes is either NULL (or dangling
        // with a zero length) on purpose, or points at a live local of at
        // least the size its length argument states; a row never passes a
        // length larger than its buffer except where the pointer is NULL or
        // the library must refuse the length before using it. The library
        // must answer each call, not crash.
        unsafe { f($($a),*) }
    }};
}

/// The 68 functions of the PKCS#11 v2.40 `CK_FUNCTION_LIST` and the two
/// 3.0 interface functions `libp11ha.so` exports.
const FUNCTIONS: [&str; 70] = [
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_SeedRandom",
    "C_GenerateRandom",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
    "C_GetInterfaceList",
    "C_GetInterface",
];

/// The handles of a run: valid ones, and invalid ones of each kind.
#[derive(Clone, Copy, Debug)]
struct Ctx {
    /// The virtual slot.
    slot: CK_SLOT_ID,
    /// A read/write session, logged in as the user, with no operation active
    /// between rows.
    s: CK_SESSION_HANDLE,
    /// A session closed with `C_CloseSession`.
    closed: CK_SESSION_HANDLE,
    /// A session closed by `C_CloseAllSessions`.
    stale: CK_SESSION_HANDLE,
    ec_priv: CK_OBJECT_HANDLE,
    ec_pub: CK_OBJECT_HANDLE,
    aes: CK_OBJECT_HANDLE,
    rsa_priv: CK_OBJECT_HANDLE,
    rsa_pub: CK_OBJECT_HANDLE,
    /// A session object destroyed with `C_DestroyObject`.
    destroyed: CK_OBJECT_HANDLE,
    /// A session object of a session that was closed.
    orphaned: CK_OBJECT_HANDLE,
}

/// A slot id no slot has.
const BAD_SLOT: CK_SLOT_ID = 7;
/// A session or object handle never issued.
const NEVER: CK_ULONG = 0x7fff_fff0;
/// A length no buffer can have (more than `isize::MAX` bytes), but not
/// `CK_UNAVAILABLE_INFORMATION`.
const ABSURD: CK_ULONG = CK_ULONG::MAX - 1;

impl Ctx {
    /// Handles for the phases where the library is not initialised: any
    /// value must give `CKR_CRYPTOKI_NOT_INITIALIZED`.
    fn placeholder() -> Ctx {
        Ctx {
            slot: 0,
            s: 1,
            closed: 2,
            stale: 3,
            ec_priv: 1,
            ec_pub: 2,
            aes: 3,
            rsa_priv: 4,
            rsa_pub: 5,
            destroyed: 6,
            orphaned: 7,
        }
    }

    /// Runs `f` on a fresh session of the slot (logged in, since login is
    /// token-wide), closed afterwards: for rows that leave state behind.
    fn fresh(&self, f: impl FnOnce(CK_SESSION_HANDLE) -> CK_RV) -> CK_RV {
        let mut s = 0;
        let rv = ck!(C_OpenSession(
            self.slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            null_mut(),
            None,
            &mut s
        ));
        assert_eq!(rv, CKR_OK, "open a fresh session");
        let rv = f(s);
        assert_eq!(ck!(C_CloseSession(s)), CKR_OK, "close a fresh session");
        rv
    }
}

/// A mechanism without parameter.
fn mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

/// AES-CBC with a fixed IV (static, so the mechanism can outlive a row's
/// locals).
fn cbc() -> CK_MECHANISM {
    static IV: [u8; 16] = [7; 16];
    CK_MECHANISM {
        mechanism: CKM_AES_CBC,
        pParameter: IV.as_ptr() as *mut c_void,
        ulParameterLen: 16,
    }
}

/// One attribute, pointing at `v`.
fn attr<T>(ty: CK_ATTRIBUTE_TYPE, v: &T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: ty,
        pValue: v as *const T as *mut c_void,
        ulValueLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

const TRUE: CK_BBOOL = CK_TRUE;
const FALSE: CK_BBOOL = CK_FALSE;
const DATA: CK_OBJECT_CLASS = CKO_DATA;
const SECRET: CK_OBJECT_CLASS = CKO_SECRET_KEY;
const AES: CK_KEY_TYPE = CKK_AES;
const LEN32: CK_ULONG = 32;

/// A session data object's template (CKA_TOKEN false).
fn data_template() -> [CK_ATTRIBUTE; 2] {
    [attr(CKA_CLASS, &DATA), attr(CKA_TOKEN, &FALSE)]
}

/// A session AES key's template, for GenerateKey, UnwrapKey and DeriveKey.
fn aes_template() -> [CK_ATTRIBUTE; 5] {
    [
        attr(CKA_CLASS, &SECRET),
        attr(CKA_KEY_TYPE, &AES),
        attr(CKA_TOKEN, &FALSE),
        attr(CKA_VALUE_LEN, &LEN32),
        attr(CKA_ENCRYPT, &TRUE),
    ]
}

/// A zeroed structure of the PKCS#11 headers (the ones without `Default`).
fn slot_info() -> CK_SLOT_INFO {
    CK_SLOT_INFO {
        slotDescription: [0; 64],
        manufacturerID: [0; 32],
        flags: 0,
        hardwareVersion: CK_VERSION::default(),
        firmwareVersion: CK_VERSION::default(),
    }
}

type Call = Box<dyn Fn(&Ctx) -> CK_RV>;

/// One of the run's session or object handles (session and object
/// handles are both `CK_ULONG`).
type Handle = fn(&Ctx) -> CK_ULONG;

/// One row of the table.
struct Case {
    /// What the row does.
    name: String,
    /// The function whose answer is checked.
    func: &'static str,
    /// The codes the specification allows.
    want: Vec<CK_RV>,
    call: Call,
}

fn case(
    name: &str,
    func: &'static str,
    want: &[CK_RV],
    call: impl Fn(&Ctx) -> CK_RV + 'static,
) -> Case {
    Case {
        name: name.to_string(),
        func,
        want: want.to_vec(),
        call: Box::new(call),
    }
}

/// A well-formed call of each function, with every pointer valid, for the
/// rows that vary only the library's state or the session handle: the
/// function's name, whether it takes a session handle, and the call with
/// that handle (ignored by functions without one).
type Wellformed = (&'static str, bool, fn(&Ctx, CK_SESSION_HANDLE) -> CK_RV);

fn wellformed() -> Vec<Wellformed> {
    vec![
        ("C_Finalize", false, |_, _| ck!(C_Finalize(null_mut()))),
        ("C_GetInfo", false, |_, _| {
            let mut info = CK_INFO::default();
            ck!(C_GetInfo(&mut info))
        }),
        ("C_GetFunctionList", false, |_, _| {
            let mut l = null_mut();
            ck!(C_GetFunctionList(&mut l))
        }),
        ("C_GetSlotList", false, |_, _| {
            let mut n = 0;
            ck!(C_GetSlotList(CK_TRUE, null_mut(), &mut n))
        }),
        ("C_GetSlotInfo", false, |c, _| {
            let mut info = slot_info();
            ck!(C_GetSlotInfo(c.slot, &mut info))
        }),
        ("C_GetTokenInfo", false, |c, _| {
            let mut info = CK_TOKEN_INFO::default();
            ck!(C_GetTokenInfo(c.slot, &mut info))
        }),
        ("C_GetMechanismList", false, |c, _| {
            let mut n = 0;
            ck!(C_GetMechanismList(c.slot, null_mut(), &mut n))
        }),
        ("C_GetMechanismInfo", false, |c, _| {
            let mut info = CK_MECHANISM_INFO::default();
            ck!(C_GetMechanismInfo(c.slot, CKM_SHA256, &mut info))
        }),
        ("C_InitToken", false, |c, _| {
            let mut label = [b' '; 32];
            ck!(C_InitToken(
                c.slot,
                SO_PIN.as_ptr() as *mut _,
                SO_PIN.len() as _,
                label.as_mut_ptr()
            ))
        }),
        ("C_InitPIN", true, |_, h| {
            ck!(C_InitPIN(
                h,
                USER_PIN.as_ptr() as *mut _,
                USER_PIN.len() as _
            ))
        }),
        ("C_SetPIN", true, |_, h| {
            ck!(C_SetPIN(
                h,
                USER_PIN.as_ptr() as *mut _,
                USER_PIN.len() as _,
                USER_PIN.as_ptr() as *mut _,
                USER_PIN.len() as _
            ))
        }),
        ("C_OpenSession", false, |c, _| {
            let mut s = 0;
            ck!(C_OpenSession(
                c.slot,
                CKF_SERIAL_SESSION,
                null_mut(),
                None,
                &mut s
            ))
        }),
        ("C_CloseSession", true, |_, h| ck!(C_CloseSession(h))),
        ("C_CloseAllSessions", false, |c, _| {
            ck!(C_CloseAllSessions(c.slot))
        }),
        ("C_GetSessionInfo", true, |_, h| {
            let mut info = CK_SESSION_INFO::default();
            ck!(C_GetSessionInfo(h, &mut info))
        }),
        ("C_GetOperationState", true, |_, h| {
            let mut n = 0;
            ck!(C_GetOperationState(h, null_mut(), &mut n))
        }),
        ("C_SetOperationState", true, |_, h| {
            let mut state = [0u8; 16];
            ck!(C_SetOperationState(h, state.as_mut_ptr(), 16, 0, 0))
        }),
        ("C_Login", true, |_, h| {
            ck!(C_Login(
                h,
                CKU_USER,
                USER_PIN.as_ptr() as *mut _,
                USER_PIN.len() as _
            ))
        }),
        ("C_Logout", true, |_, h| ck!(C_Logout(h))),
        ("C_CreateObject", true, |_, h| {
            let mut t = data_template();
            let mut o = 0;
            ck!(C_CreateObject(h, t.as_mut_ptr(), 2, &mut o))
        }),
        ("C_CopyObject", true, |c, h| {
            let mut o = 0;
            ck!(C_CopyObject(h, c.aes, null_mut(), 0, &mut o))
        }),
        ("C_DestroyObject", true, |c, h| {
            ck!(C_DestroyObject(h, c.aes))
        }),
        ("C_GetObjectSize", true, |c, h| {
            let mut n = 0;
            ck!(C_GetObjectSize(h, c.aes, &mut n))
        }),
        ("C_GetAttributeValue", true, |c, h| {
            let mut t = [CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: null_mut(),
                ulValueLen: 0,
            }];
            ck!(C_GetAttributeValue(h, c.aes, t.as_mut_ptr(), 1))
        }),
        ("C_SetAttributeValue", true, |c, h| {
            let label = *b"x";
            let mut t = [attr(CKA_LABEL, &label)];
            ck!(C_SetAttributeValue(h, c.aes, t.as_mut_ptr(), 1))
        }),
        ("C_FindObjectsInit", true, |_, h| {
            ck!(C_FindObjectsInit(h, null_mut(), 0))
        }),
        ("C_FindObjects", true, |_, h| {
            let mut o = [0; 4];
            let mut n = 0;
            ck!(C_FindObjects(h, o.as_mut_ptr(), 4, &mut n))
        }),
        ("C_FindObjectsFinal", true, |_, h| {
            ck!(C_FindObjectsFinal(h))
        }),
        ("C_EncryptInit", true, |c, h| {
            ck!(C_EncryptInit(h, &mut cbc(), c.aes))
        }),
        ("C_Encrypt", true, |_, h| {
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_Encrypt(
                h,
                d.as_ptr() as *mut _,
                16,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_EncryptUpdate", true, |_, h| {
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_EncryptUpdate(
                h,
                d.as_ptr() as *mut _,
                16,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_EncryptFinal", true, |_, h| {
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_EncryptFinal(h, o.as_mut_ptr(), &mut n))
        }),
        ("C_DecryptInit", true, |c, h| {
            ck!(C_DecryptInit(h, &mut cbc(), c.aes))
        }),
        ("C_Decrypt", true, |_, h| {
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_Decrypt(
                h,
                d.as_ptr() as *mut _,
                16,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_DecryptUpdate", true, |_, h| {
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_DecryptUpdate(
                h,
                d.as_ptr() as *mut _,
                16,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_DecryptFinal", true, |_, h| {
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_DecryptFinal(h, o.as_mut_ptr(), &mut n))
        }),
        ("C_DigestInit", true, |_, h| {
            ck!(C_DigestInit(h, &mut mech(CKM_SHA256)))
        }),
        ("C_Digest", true, |_, h| {
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_Digest(
                h,
                d.as_ptr() as *mut _,
                16,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_DigestUpdate", true, |_, h| {
            let d = [0u8; 16];
            ck!(C_DigestUpdate(h, d.as_ptr() as *mut _, 16))
        }),
        ("C_DigestKey", true, |c, h| ck!(C_DigestKey(h, c.aes))),
        ("C_DigestFinal", true, |_, h| {
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_DigestFinal(h, o.as_mut_ptr(), &mut n))
        }),
        ("C_SignInit", true, |c, h| {
            ck!(C_SignInit(h, &mut mech(CKM_ECDSA), c.ec_priv))
        }),
        ("C_Sign", true, |_, h| {
            let d = [0u8; 32];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_Sign(h, d.as_ptr() as *mut _, 32, o.as_mut_ptr(), &mut n))
        }),
        ("C_SignUpdate", true, |_, h| {
            let d = [0u8; 32];
            ck!(C_SignUpdate(h, d.as_ptr() as *mut _, 32))
        }),
        ("C_SignFinal", true, |_, h| {
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_SignFinal(h, o.as_mut_ptr(), &mut n))
        }),
        ("C_SignRecoverInit", true, |c, h| {
            ck!(C_SignRecoverInit(h, &mut mech(CKM_ECDSA), c.ec_priv))
        }),
        ("C_SignRecover", true, |_, h| {
            let d = [0u8; 32];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_SignRecover(
                h,
                d.as_ptr() as *mut _,
                32,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_VerifyInit", true, |c, h| {
            ck!(C_VerifyInit(h, &mut mech(CKM_ECDSA), c.ec_pub))
        }),
        ("C_Verify", true, |_, h| {
            let d = [0u8; 32];
            let sig = [0u8; 64];
            ck!(C_Verify(
                h,
                d.as_ptr() as *mut _,
                32,
                sig.as_ptr() as *mut _,
                64
            ))
        }),
        ("C_VerifyUpdate", true, |_, h| {
            let d = [0u8; 32];
            ck!(C_VerifyUpdate(h, d.as_ptr() as *mut _, 32))
        }),
        ("C_VerifyFinal", true, |_, h| {
            let sig = [0u8; 64];
            ck!(C_VerifyFinal(h, sig.as_ptr() as *mut _, 64))
        }),
        ("C_VerifyRecoverInit", true, |c, h| {
            ck!(C_VerifyRecoverInit(h, &mut mech(CKM_ECDSA), c.ec_pub))
        }),
        ("C_VerifyRecover", true, |_, h| {
            let sig = [0u8; 64];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_VerifyRecover(
                h,
                sig.as_ptr() as *mut _,
                64,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_DigestEncryptUpdate", true, |_, h| {
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_DigestEncryptUpdate(
                h,
                d.as_ptr() as *mut _,
                16,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_DecryptDigestUpdate", true, |_, h| {
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_DecryptDigestUpdate(
                h,
                d.as_ptr() as *mut _,
                16,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_SignEncryptUpdate", true, |_, h| {
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_SignEncryptUpdate(
                h,
                d.as_ptr() as *mut _,
                16,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_DecryptVerifyUpdate", true, |_, h| {
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_DecryptVerifyUpdate(
                h,
                d.as_ptr() as *mut _,
                16,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_GenerateKey", true, |_, h| {
            let mut t = aes_template();
            let mut k = 0;
            ck!(C_GenerateKey(
                h,
                &mut mech(CKM_AES_KEY_GEN),
                t.as_mut_ptr(),
                5,
                &mut k
            ))
        }),
        ("C_GenerateKeyPair", true, |_, h| {
            let (mut p, mut k) = (0, 0);
            ck!(C_GenerateKeyPair(
                h,
                &mut mech(CKM_EC_KEY_PAIR_GEN),
                null_mut(),
                0,
                null_mut(),
                0,
                &mut p,
                &mut k
            ))
        }),
        ("C_WrapKey", true, |c, h| {
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_WrapKey(
                h,
                &mut mech(CKM_AES_KEY_WRAP),
                c.aes,
                c.aes,
                o.as_mut_ptr(),
                &mut n
            ))
        }),
        ("C_UnwrapKey", true, |c, h| {
            let mut w = [0u8; 40];
            let mut t = aes_template();
            let mut k = 0;
            ck!(C_UnwrapKey(
                h,
                &mut mech(CKM_AES_KEY_WRAP),
                c.aes,
                w.as_mut_ptr(),
                40,
                t.as_mut_ptr(),
                5,
                &mut k
            ))
        }),
        ("C_DeriveKey", true, |c, h| {
            let mut t = aes_template();
            let mut k = 0;
            ck!(C_DeriveKey(
                h,
                &mut mech(CKM_ECDH1_DERIVE),
                c.ec_priv,
                t.as_mut_ptr(),
                5,
                &mut k
            ))
        }),
        ("C_SeedRandom", true, |_, h| {
            let mut seed = [1u8; 8];
            ck!(C_SeedRandom(h, seed.as_mut_ptr(), 8))
        }),
        ("C_GenerateRandom", true, |_, h| {
            let mut o = [0u8; 8];
            ck!(C_GenerateRandom(h, o.as_mut_ptr(), 8))
        }),
        ("C_GetFunctionStatus", true, |_, h| {
            ck!(C_GetFunctionStatus(h))
        }),
        ("C_CancelFunction", true, |_, h| ck!(C_CancelFunction(h))),
        ("C_WaitForSlotEvent", false, |_, _| {
            let mut slot = 0;
            ck!(C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut slot, null_mut()))
        }),
        ("C_GetInterfaceList", false, |_, _| {
            let mut n = 0;
            ck!(C_GetInterfaceList(null_mut(), &mut n))
        }),
        ("C_GetInterface", false, |_, _| {
            let mut i = null_mut();
            ck!(C_GetInterface(null_mut(), null_mut(), &mut i, 0))
        }),
    ]
}

/// Rows for a phase where the library is not initialised: every function
/// but `C_Initialize` (whose rows are separate) answers
/// `CKR_CRYPTOKI_NOT_INITIALIZED`, except those PKCS#11 lets an
/// application call first: `C_GetFunctionList` (5.2) and the 3.0
/// `C_GetInterfaceList`/`C_GetInterface` (5.2, 3.0), which answer `CKR_OK`.
fn not_initialized_rows(phase: &str) -> Vec<Case> {
    wellformed()
        .into_iter()
        .map(|(func, _, call)| {
            let want = match func {
                "C_GetFunctionList" | "C_GetInterfaceList" | "C_GetInterface" => CKR_OK,
                _ => CKR_CRYPTOKI_NOT_INITIALIZED,
            };
            case(&format!("{func} {phase}"), func, &[want], move |c| {
                call(c, c.s)
            })
        })
        .collect()
}

/// `CK_C_INITIALIZE_ARGS` with the given callbacks, flags and reserved
/// pointer.
fn init_args(mutexes: [bool; 4], flags: CK_FLAGS, reserved: *mut c_void) -> CK_C_INITIALIZE_ARGS {
    unsafe extern "C" fn create(m: *mut *mut c_void) -> CK_RV {
        // SAFETY: PKCS#11 hands CreateMutex a writable pointer; never
        // called here anyway, since these arguments are all refused.
        unsafe { *m = dangling_mut() };
        CKR_OK
    }
    unsafe extern "C" fn other(_: *mut c_void) -> CK_RV {
        CKR_OK
    }
    CK_C_INITIALIZE_ARGS {
        CreateMutex: mutexes[0].then_some(create as _),
        DestroyMutex: mutexes[1].then_some(other as _),
        LockMutex: mutexes[2].then_some(other as _),
        UnlockMutex: mutexes[3].then_some(other as _),
        flags,
        pReserved: reserved,
    }
}

/// `C_Initialize` rows that must fail and leave the library uninitialised
/// (the next row, a `C_GetInfo`, checks it stays so).
fn bad_initialize_rows() -> Vec<Case> {
    let mut rows = vec![case(
        "Initialize with pReserved non-NULL",
        "C_Initialize",
        // 5.4: pReserved "should be NULL"; C_Initialize: CKR_ARGUMENTS_BAD.
        &[CKR_ARGUMENTS_BAD],
        |_| {
            let mut a = init_args([false; 4], CKF_OS_LOCKING_OK, dangling_mut());
            ck!(C_Initialize(&mut a as *mut _ as *mut c_void))
        },
    )];
    // 5.4: the four mutex callbacks are all supplied or none is; a partial
    // set is CKR_ARGUMENTS_BAD, with or without CKF_OS_LOCKING_OK.
    for given in 1..15u8 {
        let mutexes = [0, 1, 2, 3].map(|i| given & (1 << i) != 0);
        for flags in [0, CKF_OS_LOCKING_OK] {
            rows.push(case(
                &format!("Initialize with mutex callbacks {mutexes:?}, flags {flags:#x}"),
                "C_Initialize",
                &[CKR_ARGUMENTS_BAD],
                move |_| {
                    let mut a = init_args(mutexes, flags, null_mut());
                    ck!(C_Initialize(&mut a as *mut _ as *mut c_void))
                },
            ));
        }
        rows.push(case(
            &format!("GetInfo after the refused Initialize {mutexes:?}"),
            "C_GetInfo",
            &[CKR_CRYPTOKI_NOT_INITIALIZED],
            |_| {
                let mut info = CK_INFO::default();
                ck!(C_GetInfo(&mut info))
            },
        ));
    }
    rows.push(case(
        "Finalize(non-NULL) before Initialize",
        "C_Finalize",
        // Either check may come first: both codes are C_Finalize's.
        &[CKR_ARGUMENTS_BAD, CKR_CRYPTOKI_NOT_INITIALIZED],
        |_| ck!(C_Finalize(dangling_mut())),
    ));
    rows
}

/// Every session function with an invalid handle: 0 (`CK_INVALID_HANDLE`),
/// one never issued, one closed with `C_CloseSession`, one closed by
/// `C_CloseAllSessions`: `CKR_SESSION_HANDLE_INVALID`.
fn session_handle_rows() -> Vec<Case> {
    let mut rows = Vec::new();
    for (func, takes_session, call) in wellformed() {
        if !takes_session {
            continue;
        }
        let handles: [(&str, Handle); 4] = [
            ("0", |_| CK_INVALID_HANDLE),
            ("never issued", |_| NEVER),
            ("closed", |c| c.closed),
            ("stale after CloseAllSessions", |c| c.stale),
        ];
        for (what, h) in handles {
            rows.push(case(
                &format!("{func} with session {what}"),
                func,
                &[CKR_SESSION_HANDLE_INVALID],
                move |c| call(c, h(c)),
            ));
        }
    }
    rows
}

/// The rows run while the library is initialised, in order.
fn initialized_rows() -> Vec<Case> {
    let mut t = vec![
        // ---- general purpose --------------------------------------------
        case(
            "Initialize(NULL) twice",
            "C_Initialize",
            &[CKR_CRYPTOKI_ALREADY_INITIALIZED],
            |_| ck!(C_Initialize(null_mut())),
        ),
        case(
            "Initialize(args) twice",
            "C_Initialize",
            &[CKR_CRYPTOKI_ALREADY_INITIALIZED],
            |_| {
                let mut a = init_args([false; 4], CKF_OS_LOCKING_OK, null_mut());
                ck!(C_Initialize(&mut a as *mut _ as *mut c_void))
            },
        ),
        case(
            "Finalize(non-NULL)",
            "C_Finalize",
            &[CKR_ARGUMENTS_BAD],
            |_| ck!(C_Finalize(dangling_mut())),
        ),
        case(
            "GetInfo after Finalize(non-NULL) was refused",
            "C_GetInfo",
            &[CKR_OK],
            |_| {
                let mut info = CK_INFO::default();
                ck!(C_GetInfo(&mut info))
            },
        ),
        case("GetInfo(NULL)", "C_GetInfo", &[CKR_ARGUMENTS_BAD], |_| {
            ck!(C_GetInfo(null_mut()))
        }),
        case(
            "GetFunctionList(NULL)",
            "C_GetFunctionList",
            &[CKR_ARGUMENTS_BAD],
            |_| ck!(C_GetFunctionList(null_mut())),
        ),
        // ---- slots and tokens ---------------------------------------------
        case(
            "GetSlotList(NULL count)",
            "C_GetSlotList",
            &[CKR_ARGUMENTS_BAD],
            |_| ck!(C_GetSlotList(CK_FALSE, null_mut(), null_mut())),
        ),
        case(
            "GetSlotList(list, NULL count)",
            "C_GetSlotList",
            &[CKR_ARGUMENTS_BAD],
            |_| {
                let mut l = [0; 4];
                ck!(C_GetSlotList(CK_FALSE, l.as_mut_ptr(), null_mut()))
            },
        ),
        case(
            // 5.5: a NULL list asks for the count; *pulCount's value is
            // ignored then.
            "GetSlotList(NULL list) with an absurd count in",
            "C_GetSlotList",
            &[CKR_OK],
            |_| {
                let mut n = ABSURD;
                ck!(C_GetSlotList(CK_TRUE, null_mut(), &mut n))
            },
        ),
        case(
            "GetSlotList count 0",
            "C_GetSlotList",
            &[CKR_BUFFER_TOO_SMALL],
            |_| {
                let mut l = [0; 4];
                let mut n = 0;
                ck!(C_GetSlotList(CK_TRUE, l.as_mut_ptr(), &mut n))
            },
        ),
        case(
            "GetSlotList count absurd",
            "C_GetSlotList",
            &[CKR_ARGUMENTS_BAD],
            |_| {
                let mut l = [0; 4];
                let mut n = ABSURD;
                ck!(C_GetSlotList(CK_TRUE, l.as_mut_ptr(), &mut n))
            },
        ),
        case(
            "GetSlotInfo(NULL)",
            "C_GetSlotInfo",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_GetSlotInfo(c.slot, null_mut())),
        ),
        case(
            "GetSlotInfo bad slot",
            "C_GetSlotInfo",
            &[CKR_SLOT_ID_INVALID],
            |_| {
                let mut i = slot_info();
                ck!(C_GetSlotInfo(BAD_SLOT, &mut i))
            },
        ),
        case(
            "GetSlotInfo slot ~0",
            "C_GetSlotInfo",
            &[CKR_SLOT_ID_INVALID],
            |_| {
                let mut i = slot_info();
                ck!(C_GetSlotInfo(CK_SLOT_ID::MAX, &mut i))
            },
        ),
        case(
            "GetTokenInfo(NULL)",
            "C_GetTokenInfo",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_GetTokenInfo(c.slot, null_mut())),
        ),
        case(
            "GetTokenInfo bad slot",
            "C_GetTokenInfo",
            &[CKR_SLOT_ID_INVALID],
            |_| {
                let mut i = CK_TOKEN_INFO::default();
                ck!(C_GetTokenInfo(BAD_SLOT, &mut i))
            },
        ),
        case(
            "GetTokenInfo slot ~0",
            "C_GetTokenInfo",
            &[CKR_SLOT_ID_INVALID],
            |_| {
                let mut i = CK_TOKEN_INFO::default();
                ck!(C_GetTokenInfo(CK_SLOT_ID::MAX, &mut i))
            },
        ),
        case(
            "GetMechanismList(NULL count)",
            "C_GetMechanismList",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_GetMechanismList(c.slot, null_mut(), null_mut())),
        ),
        case(
            "GetMechanismList bad slot",
            "C_GetMechanismList",
            &[CKR_SLOT_ID_INVALID],
            |_| {
                let mut n = 0;
                ck!(C_GetMechanismList(BAD_SLOT, null_mut(), &mut n))
            },
        ),
        case(
            "GetMechanismList count 0",
            "C_GetMechanismList",
            &[CKR_BUFFER_TOO_SMALL],
            |c| {
                let mut l = [0; 4];
                let mut n = 0;
                ck!(C_GetMechanismList(c.slot, l.as_mut_ptr(), &mut n))
            },
        ),
        case(
            "GetMechanismList count absurd",
            "C_GetMechanismList",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut l = [0; 4];
                let mut n = ABSURD;
                ck!(C_GetMechanismList(c.slot, l.as_mut_ptr(), &mut n))
            },
        ),
        case(
            "GetMechanismInfo(NULL)",
            "C_GetMechanismInfo",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_GetMechanismInfo(c.slot, CKM_SHA256, null_mut())),
        ),
        case(
            "GetMechanismInfo bad slot",
            "C_GetMechanismInfo",
            &[CKR_SLOT_ID_INVALID],
            |_| {
                let mut i = CK_MECHANISM_INFO::default();
                ck!(C_GetMechanismInfo(BAD_SLOT, CKM_SHA256, &mut i))
            },
        ),
        case(
            "GetMechanismInfo unknown mechanism",
            "C_GetMechanismInfo",
            &[CKR_MECHANISM_INVALID],
            |c| {
                let mut i = CK_MECHANISM_INFO::default();
                ck!(C_GetMechanismInfo(c.slot, 0x7fff_0000, &mut i))
            },
        ),
        case(
            "InitToken(NULL label)",
            "C_InitToken",
            // p11ha answers CKR_FUNCTION_NOT_SUPPORTED for a virtual slot
            // (any function may, 11.1); a check of the arguments first is
            // as right.
            &[CKR_ARGUMENTS_BAD, CKR_FUNCTION_NOT_SUPPORTED],
            |c| {
                ck!(C_InitToken(
                    c.slot,
                    SO_PIN.as_ptr() as *mut _,
                    8,
                    null_mut()
                ))
            },
        ),
        case(
            "InitToken bad slot",
            "C_InitToken",
            &[CKR_SLOT_ID_INVALID, CKR_FUNCTION_NOT_SUPPORTED],
            |_| {
                let mut label = [b' '; 32];
                ck!(C_InitToken(
                    BAD_SLOT,
                    SO_PIN.as_ptr() as *mut _,
                    8,
                    label.as_mut_ptr()
                ))
            },
        ),
        case(
            // NULL PIN: the protected authentication path (5.5).
            "InitToken NULL PIN on the virtual slot",
            "C_InitToken",
            &[CKR_FUNCTION_NOT_SUPPORTED],
            |c| {
                let mut label = [b' '; 32];
                ck!(C_InitToken(c.slot, null_mut(), 0, label.as_mut_ptr()))
            },
        ),
        case(
            // 5.6: C_InitPIN only in the "R/W SO Functions" state.
            "InitPIN as the user",
            "C_InitPIN",
            &[CKR_USER_NOT_LOGGED_IN],
            |c| ck!(C_InitPIN(c.s, USER_PIN.as_ptr() as *mut _, 4)),
        ),
        case(
            // NULL PIN: the protected path; the state is wrong anyway.
            "InitPIN NULL PIN as the user",
            "C_InitPIN",
            &[CKR_USER_NOT_LOGGED_IN],
            |c| ck!(C_InitPIN(c.s, null_mut(), 0)),
        ),
        case(
            "SetPIN wrong old PIN",
            "C_SetPIN",
            &[CKR_PIN_INCORRECT],
            |c| {
                ck!(C_SetPIN(
                    c.s,
                    b"0000".as_ptr() as *mut _,
                    4,
                    b"5678".as_ptr() as *mut _,
                    4
                ))
            },
        ),
        case(
            // NULL PINs: the protected path; SoftHSM has none and answers
            // CKR_ARGUMENTS_BAD, which PKCS#11 allows for C_SetPIN.
            "SetPIN NULL PINs",
            "C_SetPIN",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_SetPIN(c.s, null_mut(), 0, null_mut(), 0)),
        ),
        // ---- sessions -----------------------------------------------------
        case(
            "OpenSession(NULL handle)",
            "C_OpenSession",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                ck!(C_OpenSession(
                    c.slot,
                    CKF_SERIAL_SESSION,
                    null_mut(),
                    None,
                    null_mut()
                ))
            },
        ),
        case(
            "OpenSession bad slot",
            "C_OpenSession",
            &[CKR_SLOT_ID_INVALID],
            |_| {
                let mut s = 0;
                ck!(C_OpenSession(
                    BAD_SLOT,
                    CKF_SERIAL_SESSION,
                    null_mut(),
                    None,
                    &mut s
                ))
            },
        ),
        case(
            // 5.6: CKF_SERIAL_SESSION must be set, for legacy reasons.
            "OpenSession without CKF_SERIAL_SESSION",
            "C_OpenSession",
            &[CKR_SESSION_PARALLEL_NOT_SUPPORTED],
            |c| {
                let mut s = 0;
                ck!(C_OpenSession(c.slot, 0, null_mut(), None, &mut s))
            },
        ),
        case(
            "CloseAllSessions bad slot",
            "C_CloseAllSessions",
            &[CKR_SLOT_ID_INVALID],
            |_| ck!(C_CloseAllSessions(BAD_SLOT)),
        ),
        case(
            "CloseSession twice",
            "C_CloseSession",
            &[CKR_SESSION_HANDLE_INVALID],
            |c| {
                let mut s = 0;
                let rv = ck!(C_OpenSession(
                    c.slot,
                    CKF_SERIAL_SESSION,
                    null_mut(),
                    None,
                    &mut s
                ));
                assert_eq!(rv, CKR_OK);
                assert_eq!(ck!(C_CloseSession(s)), CKR_OK);
                ck!(C_CloseSession(s))
            },
        ),
        case(
            "GetSessionInfo(NULL)",
            "C_GetSessionInfo",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_GetSessionInfo(c.s, null_mut())),
        ),
        case(
            "GetOperationState(NULL length)",
            "C_GetOperationState",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut b = [0u8; 16];
                ck!(C_GetOperationState(c.s, b.as_mut_ptr(), null_mut()))
            },
        ),
        case(
            // No operation is active: nothing to save. SoftHSM 2.6.1 has no
            // state saving at all (CKR_FUNCTION_NOT_SUPPORTED, which any
            // function may answer); CKR_OPERATION_NOT_INITIALIZED and
            // CKR_STATE_UNSAVEABLE are the specification's codes.
            "GetOperationState with no operation",
            "C_GetOperationState",
            &[
                CKR_FUNCTION_NOT_SUPPORTED,
                CKR_OPERATION_NOT_INITIALIZED,
                CKR_STATE_UNSAVEABLE,
            ],
            |c| {
                let mut n = 0;
                ck!(C_GetOperationState(c.s, null_mut(), &mut n))
            },
        ),
        case(
            "SetOperationState(NULL state, length 16)",
            "C_SetOperationState",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_SetOperationState(c.s, null_mut(), 16, 0, 0)),
        ),
        case(
            "SetOperationState(state, absurd length)",
            "C_SetOperationState",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut b = [0u8; 16];
                ck!(C_SetOperationState(c.s, b.as_mut_ptr(), ABSURD, 0, 0))
            },
        ),
        case(
            // Garbage state: CKR_SAVED_STATE_INVALID; SoftHSM has no state
            // saving (CKR_FUNCTION_NOT_SUPPORTED).
            "SetOperationState garbage",
            "C_SetOperationState",
            &[CKR_SAVED_STATE_INVALID, CKR_FUNCTION_NOT_SUPPORTED],
            |c| {
                let mut b = [0u8; 16];
                ck!(C_SetOperationState(c.s, b.as_mut_ptr(), 16, 0, 0))
            },
        ),
        case(
            "Login when logged in",
            "C_Login",
            &[CKR_USER_ALREADY_LOGGED_IN],
            |c| ck!(C_Login(c.s, CKU_USER, USER_PIN.as_ptr() as *mut _, 4)),
        ),
        case(
            // 5.6: a type that is none of CKU_SO, CKU_USER and
            // CKU_CONTEXT_SPECIFIC, while the user is logged in: the type
            // is invalid, not "another user" (p11ha said
            // CKR_USER_ANOTHER_ALREADY_LOGGED_IN before its fix).
            "Login unknown user type",
            "C_Login",
            &[CKR_USER_TYPE_INVALID],
            |c| ck!(C_Login(c.s, 7, USER_PIN.as_ptr() as *mut _, 4)),
        ),
        case(
            "Login SO while the user is logged in",
            "C_Login",
            &[CKR_USER_ANOTHER_ALREADY_LOGGED_IN],
            |c| ck!(C_Login(c.s, CKU_SO, SO_PIN.as_ptr() as *mut _, 8)),
        ),
        case(
            // Logged out: a NULL PIN asks for the protected authentication
            // path (5.6), which SoftHSM lacks: it answers CKR_ARGUMENTS_BAD.
            // Logged in again afterwards for the rows that follow.
            "Login NULL PIN (protected path) after Logout",
            "C_Login",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                assert_eq!(ck!(C_Logout(c.s)), CKR_OK);
                let rv = ck!(C_Login(c.s, CKU_USER, null_mut(), 0));
                assert_eq!(
                    ck!(C_Login(c.s, CKU_USER, USER_PIN.as_ptr() as *mut _, 4)),
                    CKR_OK
                );
                rv
            },
        ),
        case(
            "Login NULL PIN with a length after Logout",
            "C_Login",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                assert_eq!(ck!(C_Logout(c.s)), CKR_OK);
                let rv = ck!(C_Login(c.s, CKU_USER, null_mut(), 4));
                assert_eq!(
                    ck!(C_Login(c.s, CKU_USER, USER_PIN.as_ptr() as *mut _, 4)),
                    CKR_OK
                );
                rv
            },
        ),
        case(
            "Login PIN with an absurd length after Logout",
            "C_Login",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                assert_eq!(ck!(C_Logout(c.s)), CKR_OK);
                let rv = ck!(C_Login(c.s, CKU_USER, USER_PIN.as_ptr() as *mut _, ABSURD));
                assert_eq!(
                    ck!(C_Login(c.s, CKU_USER, USER_PIN.as_ptr() as *mut _, 4)),
                    CKR_OK
                );
                rv
            },
        ),
        case("Logout twice", "C_Logout", &[CKR_USER_NOT_LOGGED_IN], |c| {
            assert_eq!(ck!(C_Logout(c.s)), CKR_OK);
            let rv = ck!(C_Logout(c.s));
            assert_eq!(
                ck!(C_Login(c.s, CKU_USER, USER_PIN.as_ptr() as *mut _, 4)),
                CKR_OK
            );
            rv
        }),
        // ---- objects ------------------------------------------------------
        case(
            "CreateObject(NULL template, 2)",
            "C_CreateObject",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut o = 0;
                ck!(C_CreateObject(c.s, null_mut(), 2, &mut o))
            },
        ),
        case(
            "CreateObject(NULL template, absurd)",
            "C_CreateObject",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut o = 0;
                ck!(C_CreateObject(c.s, null_mut(), ABSURD, &mut o))
            },
        ),
        case(
            "CreateObject(template, absurd count)",
            "C_CreateObject",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut t = data_template();
                let mut o = 0;
                ck!(C_CreateObject(c.s, t.as_mut_ptr(), ABSURD, &mut o))
            },
        ),
        case(
            "CreateObject(NULL handle out)",
            "C_CreateObject",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut t = data_template();
                ck!(C_CreateObject(c.s, t.as_mut_ptr(), 2, null_mut()))
            },
        ),
        case(
            // An empty template lacks CKA_CLASS.
            "CreateObject(NULL template, 0)",
            "C_CreateObject",
            &[CKR_TEMPLATE_INCOMPLETE],
            |c| {
                let mut o = 0;
                ck!(C_CreateObject(c.s, null_mut(), 0, &mut o))
            },
        ),
        case(
            "CreateObject attribute NULL value with a length",
            "C_CreateObject",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut t = data_template();
                t[1].pValue = null_mut();
                let mut o = 0;
                ck!(C_CreateObject(c.s, t.as_mut_ptr(), 2, &mut o))
            },
        ),
        case(
            "CopyObject(NULL handle out)",
            "C_CopyObject",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_CopyObject(c.s, c.aes, null_mut(), 0, null_mut())),
        ),
        case(
            "CopyObject(NULL template, 1)",
            "C_CopyObject",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut o = 0;
                ck!(C_CopyObject(c.s, c.aes, null_mut(), 1, &mut o))
            },
        ),
        case(
            "DestroyObject twice",
            "C_DestroyObject",
            &[CKR_OBJECT_HANDLE_INVALID],
            |c| {
                let mut t = data_template();
                let mut o = 0;
                assert_eq!(ck!(C_CreateObject(c.s, t.as_mut_ptr(), 2, &mut o)), CKR_OK);
                assert_eq!(ck!(C_DestroyObject(c.s, o)), CKR_OK);
                ck!(C_DestroyObject(c.s, o))
            },
        ),
        case(
            "GetObjectSize(NULL)",
            "C_GetObjectSize",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_GetObjectSize(c.s, c.aes, null_mut())),
        ),
        case(
            "GetAttributeValue(NULL template, 1)",
            "C_GetAttributeValue",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_GetAttributeValue(c.s, c.aes, null_mut(), 1)),
        ),
        case(
            "GetAttributeValue(NULL template, 0)",
            "C_GetAttributeValue",
            &[CKR_OK],
            |c| ck!(C_GetAttributeValue(c.s, c.aes, null_mut(), 0)),
        ),
        case(
            "GetAttributeValue(template, absurd count)",
            "C_GetAttributeValue",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut t = [CK_ATTRIBUTE {
                    type_: CKA_LABEL,
                    pValue: null_mut(),
                    ulValueLen: 0,
                }];
                ck!(C_GetAttributeValue(c.s, c.aes, t.as_mut_ptr(), ABSURD))
            },
        ),
        case(
            "GetAttributeValue value buffer with an absurd length",
            "C_GetAttributeValue",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut b = [0u8; 8];
                let mut t = [CK_ATTRIBUTE {
                    type_: CKA_LABEL,
                    pValue: b.as_mut_ptr() as *mut c_void,
                    ulValueLen: ABSURD,
                }];
                ck!(C_GetAttributeValue(c.s, c.aes, t.as_mut_ptr(), 1))
            },
        ),
        case(
            "SetAttributeValue(NULL template, 1)",
            "C_SetAttributeValue",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_SetAttributeValue(c.s, c.aes, null_mut(), 1)),
        ),
        case(
            // An empty template (NULL, count 0): nothing to change.
            "SetAttributeValue(NULL template, 0)",
            "C_SetAttributeValue",
            &[CKR_OK],
            |c| ck!(C_SetAttributeValue(c.s, c.aes, null_mut(), 0)),
        ),
        case(
            "FindObjectsInit(NULL template, 2)",
            "C_FindObjectsInit",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_FindObjectsInit(c.s, null_mut(), 2)),
        ),
        case(
            "FindObjectsInit(NULL template, absurd)",
            "C_FindObjectsInit",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_FindObjectsInit(c.s, null_mut(), ABSURD)),
        ),
        case(
            "FindObjectsInit twice",
            "C_FindObjectsInit",
            &[CKR_OPERATION_ACTIVE],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_FindObjectsInit(s, null_mut(), 0)), CKR_OK);
                    ck!(C_FindObjectsInit(s, null_mut(), 0))
                })
            },
        ),
        case(
            "FindObjects without Init",
            "C_FindObjects",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let mut o = [0; 4];
                let mut n = 0;
                ck!(C_FindObjects(c.s, o.as_mut_ptr(), 4, &mut n))
            },
        ),
        case(
            "FindObjects(NULL count)",
            "C_FindObjects",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_FindObjectsInit(s, null_mut(), 0)), CKR_OK);
                    let mut o = [0; 4];
                    ck!(C_FindObjects(s, o.as_mut_ptr(), 4, null_mut()))
                })
            },
        ),
        case(
            "FindObjects(NULL handles, 4)",
            "C_FindObjects",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_FindObjectsInit(s, null_mut(), 0)), CKR_OK);
                    let mut n = 0;
                    ck!(C_FindObjects(s, null_mut(), 4, &mut n))
                })
            },
        ),
        case(
            "FindObjects(NULL handles, absurd)",
            "C_FindObjects",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_FindObjectsInit(s, null_mut(), 0)), CKR_OK);
                    let mut n = 0;
                    ck!(C_FindObjects(s, null_mut(), ABSURD, &mut n))
                })
            },
        ),
        case("FindObjects max 0", "C_FindObjects", &[CKR_OK], |c| {
            c.fresh(|s| {
                assert_eq!(ck!(C_FindObjectsInit(s, null_mut(), 0)), CKR_OK);
                let mut o = [0; 1];
                let mut n = 99;
                let rv = ck!(C_FindObjects(s, o.as_mut_ptr(), 0, &mut n));
                assert_eq!(n, 0, "no handle asked, none given");
                rv
            })
        }),
        case(
            // A huge maximum with a buffer that holds every object of the
            // token (the test tokens have a handful): p11ha must write only
            // what it found.
            "FindObjects u32::MAX maximum, 64-entry buffer",
            "C_FindObjects",
            &[CKR_OK],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_FindObjectsInit(s, null_mut(), 0)), CKR_OK);
                    let mut o = [0; 64];
                    let mut n = 0;
                    let rv = ck!(C_FindObjects(
                        s,
                        o.as_mut_ptr(),
                        u32::MAX as CK_ULONG,
                        &mut n
                    ));
                    assert!(n > 0 && n < 64, "found {n}");
                    rv
                })
            },
        ),
        case(
            "FindObjectsFinal without Init",
            "C_FindObjectsFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| ck!(C_FindObjectsFinal(c.s)),
        ),
        case(
            "FindObjectsFinal twice",
            "C_FindObjectsFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_FindObjectsInit(s, null_mut(), 0)), CKR_OK);
                    assert_eq!(ck!(C_FindObjectsFinal(s)), CKR_OK);
                    ck!(C_FindObjectsFinal(s))
                })
            },
        ),
        // ---- random numbers, legacy, events -------------------------------
        case(
            "SeedRandom(NULL, 8)",
            "C_SeedRandom",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_SeedRandom(c.s, null_mut(), 8)),
        ),
        case(
            "SeedRandom(seed, absurd)",
            "C_SeedRandom",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut b = [0u8; 8];
                ck!(C_SeedRandom(c.s, b.as_mut_ptr(), ABSURD))
            },
        ),
        case(
            // An empty seed: nothing to mix in.
            "SeedRandom(NULL, 0)",
            "C_SeedRandom",
            &[CKR_OK],
            |c| ck!(C_SeedRandom(c.s, null_mut(), 0)),
        ),
        case(
            "GenerateRandom(NULL, 8)",
            "C_GenerateRandom",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_GenerateRandom(c.s, null_mut(), 8)),
        ),
        case(
            "GenerateRandom(NULL, absurd)",
            "C_GenerateRandom",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_GenerateRandom(c.s, null_mut(), ABSURD)),
        ),
        case(
            "GenerateRandom(buffer, absurd)",
            "C_GenerateRandom",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut b = [0u8; 8];
                ck!(C_GenerateRandom(c.s, b.as_mut_ptr(), ABSURD))
            },
        ),
        case(
            // Zero bytes asked: nothing to write.
            "GenerateRandom(NULL, 0)",
            "C_GenerateRandom",
            &[CKR_OK],
            |c| ck!(C_GenerateRandom(c.s, null_mut(), 0)),
        ),
        case(
            // 11.16: legacy; a library "should" answer
            // CKR_FUNCTION_NOT_PARALLEL.
            "GetFunctionStatus",
            "C_GetFunctionStatus",
            &[CKR_FUNCTION_NOT_PARALLEL],
            |c| ck!(C_GetFunctionStatus(c.s)),
        ),
        case(
            "CancelFunction",
            "C_CancelFunction",
            &[CKR_FUNCTION_NOT_PARALLEL],
            |c| ck!(C_CancelFunction(c.s)),
        ),
        case(
            "WaitForSlotEvent(NULL slot)",
            "C_WaitForSlotEvent",
            &[CKR_ARGUMENTS_BAD],
            |_| ck!(C_WaitForSlotEvent(CKF_DONT_BLOCK, null_mut(), null_mut())),
        ),
        case(
            // pReserved "must be NULL".
            "WaitForSlotEvent(pReserved non-NULL)",
            "C_WaitForSlotEvent",
            &[CKR_ARGUMENTS_BAD],
            |_| {
                let mut slot = 0;
                ck!(C_WaitForSlotEvent(
                    CKF_DONT_BLOCK,
                    &mut slot,
                    dangling_mut()
                ))
            },
        ),
        case(
            "WaitForSlotEvent don't block",
            "C_WaitForSlotEvent",
            &[CKR_NO_EVENT],
            |_| {
                let mut slot = 0;
                ck!(C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut slot, null_mut()))
            },
        ),
        // ---- interfaces (3.0) ---------------------------------------------
        case(
            "GetInterfaceList(NULL count)",
            "C_GetInterfaceList",
            &[CKR_ARGUMENTS_BAD],
            |_| ck!(C_GetInterfaceList(null_mut(), null_mut())),
        ),
        case(
            "GetInterfaceList count 0",
            "C_GetInterfaceList",
            &[CKR_BUFFER_TOO_SMALL],
            |_| {
                let mut l = [CK_INTERFACE {
                    pInterfaceName: null_mut(),
                    pFunctionList: null_mut(),
                    flags: 0,
                }];
                let mut n = 0;
                ck!(C_GetInterfaceList(l.as_mut_ptr(), &mut n))
            },
        ),
        case(
            "GetInterfaceList(list, NULL count)",
            "C_GetInterfaceList",
            &[CKR_ARGUMENTS_BAD],
            |_| {
                let mut l = [CK_INTERFACE {
                    pInterfaceName: null_mut(),
                    pFunctionList: null_mut(),
                    flags: 0,
                }];
                ck!(C_GetInterfaceList(l.as_mut_ptr(), null_mut()))
            },
        ),
        case(
            // 3.0 5.2: flags the interface must have; p11ha's has none.
            "GetInterface with flags",
            "C_GetInterface",
            &[CKR_ARGUMENTS_BAD],
            |_| {
                let mut i = null_mut();
                ck!(C_GetInterface(null_mut(), null_mut(), &mut i, 1))
            },
        ),
        case(
            "GetInterface(NULL out)",
            "C_GetInterface",
            &[CKR_ARGUMENTS_BAD],
            |_| ck!(C_GetInterface(null_mut(), null_mut(), null_mut(), 0)),
        ),
        case(
            "GetInterface unknown name",
            "C_GetInterface",
            &[CKR_ARGUMENTS_BAD],
            |_| {
                let mut i = null_mut();
                ck!(C_GetInterface(
                    c"Vendor X".as_ptr() as *mut _,
                    null_mut(),
                    &mut i,
                    0
                ))
            },
        ),
        case(
            "GetInterface version 3.0",
            "C_GetInterface",
            &[CKR_ARGUMENTS_BAD],
            |_| {
                let mut v = CK_VERSION { major: 3, minor: 0 };
                let mut i = null_mut();
                ck!(C_GetInterface(null_mut(), &mut v, &mut i, 0))
            },
        ),
    ];
    t.extend(object_handle_rows());
    t.extend(ending_rows());
    t.extend(length_query_rows());
    t.extend(crypto_rows());
    t.extend(session_handle_rows());
    t
}

/// Unknown and dead object handles, per function, with the code the
/// specification gives that function's handle argument.
fn object_handle_rows() -> Vec<Case> {
    let mut rows = Vec::new();
    let handles: [(&str, Handle); 4] = [
        ("0", |_| CK_INVALID_HANDLE),
        ("never issued", |_| NEVER),
        ("destroyed", |c| c.destroyed),
        ("of a closed session", |c| c.orphaned),
    ];
    for (what, h) in handles {
        let mut push =
            |func: &'static str, want: CK_RV, call: fn(&Ctx, CK_OBJECT_HANDLE) -> CK_RV| {
                rows.push(case(
                    &format!("{func} with object {what}"),
                    func,
                    &[want],
                    move |c| call(c, h(c)),
                ));
            };
        push("C_CopyObject", CKR_OBJECT_HANDLE_INVALID, |c, o| {
            let mut n = 0;
            ck!(C_CopyObject(c.s, o, null_mut(), 0, &mut n))
        });
        push("C_DestroyObject", CKR_OBJECT_HANDLE_INVALID, |c, o| {
            ck!(C_DestroyObject(c.s, o))
        });
        push("C_GetObjectSize", CKR_OBJECT_HANDLE_INVALID, |c, o| {
            let mut n = 0;
            ck!(C_GetObjectSize(c.s, o, &mut n))
        });
        push("C_GetAttributeValue", CKR_OBJECT_HANDLE_INVALID, |c, o| {
            let mut t = [CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: null_mut(),
                ulValueLen: 0,
            }];
            ck!(C_GetAttributeValue(c.s, o, t.as_mut_ptr(), 1))
        });
        push("C_SetAttributeValue", CKR_OBJECT_HANDLE_INVALID, |c, o| {
            let label = *b"x";
            let mut t = [attr(CKA_LABEL, &label)];
            ck!(C_SetAttributeValue(c.s, o, t.as_mut_ptr(), 1))
        });
        // Keys: CKR_KEY_HANDLE_INVALID.
        push("C_EncryptInit", CKR_KEY_HANDLE_INVALID, |c, k| {
            ck!(C_EncryptInit(c.s, &mut cbc(), k))
        });
        push("C_DecryptInit", CKR_KEY_HANDLE_INVALID, |c, k| {
            ck!(C_DecryptInit(c.s, &mut cbc(), k))
        });
        push("C_SignInit", CKR_KEY_HANDLE_INVALID, |c, k| {
            ck!(C_SignInit(c.s, &mut mech(CKM_ECDSA), k))
        });
        push("C_VerifyInit", CKR_KEY_HANDLE_INVALID, |c, k| {
            ck!(C_VerifyInit(c.s, &mut mech(CKM_ECDSA), k))
        });
        // p11ha translates the handle before a member sees the call, so
        // these answer CKR_KEY_HANDLE_INVALID although SoftHSM 2.6.1 has no
        // SignRecover/VerifyRecover at all.
        push("C_SignRecoverInit", CKR_KEY_HANDLE_INVALID, |c, k| {
            ck!(C_SignRecoverInit(c.s, &mut mech(CKM_RSA_PKCS), k))
        });
        push("C_VerifyRecoverInit", CKR_KEY_HANDLE_INVALID, |c, k| {
            ck!(C_VerifyRecoverInit(c.s, &mut mech(CKM_RSA_PKCS), k))
        });
        push("C_DigestKey", CKR_KEY_HANDLE_INVALID, |c, k| {
            c.fresh(|s| {
                assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                ck!(C_DigestKey(s, k))
            })
        });
        push("C_WrapKey", CKR_WRAPPING_KEY_HANDLE_INVALID, |c, k| {
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_WrapKey(
                c.s,
                &mut mech(CKM_AES_KEY_WRAP),
                k,
                c.aes,
                o.as_mut_ptr(),
                &mut n
            ))
        });
        push("C_WrapKey", CKR_KEY_HANDLE_INVALID, |c, k| {
            let mut o = [0u8; 64];
            let mut n = 64;
            ck!(C_WrapKey(
                c.s,
                &mut mech(CKM_AES_KEY_WRAP),
                c.aes,
                k,
                o.as_mut_ptr(),
                &mut n
            ))
        });
        push("C_UnwrapKey", CKR_UNWRAPPING_KEY_HANDLE_INVALID, |c, k| {
            let mut w = [0u8; 40];
            let mut t = aes_template();
            let mut n = 0;
            ck!(C_UnwrapKey(
                c.s,
                &mut mech(CKM_AES_KEY_WRAP),
                k,
                w.as_mut_ptr(),
                40,
                t.as_mut_ptr(),
                5,
                &mut n
            ))
        });
        push("C_DeriveKey", CKR_KEY_HANDLE_INVALID, |c, k| {
            let mut t = aes_template();
            let mut n = 0;
            ck!(C_DeriveKey(
                c.s,
                &mut mech(CKM_ECDH1_DERIVE),
                k,
                t.as_mut_ptr(),
                5,
                &mut n
            ))
        });
    }
    rows
}

/// Encryption, decryption, digests, signatures, dual functions and key
/// management: NULL pointers, lengths and wrong-state sequences.
fn crypto_rows() -> Vec<Case> {
    let mut rows = vec![
        case(
            "EncryptInit(NULL mechanism)",
            "C_EncryptInit",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_EncryptInit(c.s, null_mut(), c.aes)),
        ),
        case(
            "EncryptInit NULL parameter, length 16",
            "C_EncryptInit",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut m = mech(CKM_AES_CBC);
                m.ulParameterLen = 16;
                ck!(C_EncryptInit(c.s, &mut m, c.aes))
            },
        ),
        case(
            "EncryptInit parameter, absurd length",
            "C_EncryptInit",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut m = cbc();
                m.ulParameterLen = ABSURD;
                ck!(C_EncryptInit(c.s, &mut m, c.aes))
            },
        ),
        case(
            // NULL parameter with length 0 is "no parameter": CBC needs its
            // IV, so CKR_MECHANISM_PARAM_INVALID. SoftHSM 2.6.1 answers
            // CKR_ARGUMENTS_BAD ("CBC mode requires an init vector"), which
            // p11ha passes on: p11ha does not judge parameters it need not
            // decode.
            "EncryptInit CBC without IV",
            "C_EncryptInit",
            &[CKR_MECHANISM_PARAM_INVALID, CKR_ARGUMENTS_BAD],
            |c| c.fresh(|s| ck!(C_EncryptInit(s, &mut mech(CKM_AES_CBC), c.aes))),
        ),
        case(
            "EncryptInit unknown mechanism",
            "C_EncryptInit",
            &[CKR_MECHANISM_INVALID],
            |c| c.fresh(|s| ck!(C_EncryptInit(s, &mut mech(0x7fff_0000), c.aes))),
        ),
        case(
            "EncryptInit twice",
            "C_EncryptInit",
            &[CKR_OPERATION_ACTIVE],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    ck!(C_EncryptInit(s, &mut cbc(), c.aes))
                })
            },
        ),
        case(
            "DecryptInit(NULL mechanism)",
            "C_DecryptInit",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_DecryptInit(c.s, null_mut(), c.aes)),
        ),
        case(
            "DecryptInit twice",
            "C_DecryptInit",
            &[CKR_OPERATION_ACTIVE],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DecryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    ck!(C_DecryptInit(s, &mut cbc(), c.aes))
                })
            },
        ),
        case(
            "DigestInit(NULL mechanism)",
            "C_DigestInit",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_DigestInit(c.s, null_mut())),
        ),
        case(
            "DigestInit unknown mechanism",
            "C_DigestInit",
            &[CKR_MECHANISM_INVALID],
            |c| c.fresh(|s| ck!(C_DigestInit(s, &mut mech(0x7fff_0000)))),
        ),
        case(
            "DigestInit twice",
            "C_DigestInit",
            &[CKR_OPERATION_ACTIVE],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                    ck!(C_DigestInit(s, &mut mech(CKM_SHA256)))
                })
            },
        ),
        case(
            "SignInit(NULL mechanism)",
            "C_SignInit",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_SignInit(c.s, null_mut(), c.ec_priv)),
        ),
        case(
            "SignInit twice",
            "C_SignInit",
            &[CKR_OPERATION_ACTIVE],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_SignInit(s, &mut mech(CKM_ECDSA), c.ec_priv)), CKR_OK);
                    ck!(C_SignInit(s, &mut mech(CKM_ECDSA), c.ec_priv))
                })
            },
        ),
        case(
            "VerifyInit(NULL mechanism)",
            "C_VerifyInit",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_VerifyInit(c.s, null_mut(), c.ec_pub)),
        ),
        case(
            "VerifyInit twice",
            "C_VerifyInit",
            &[CKR_OPERATION_ACTIVE],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_VerifyInit(s, &mut mech(CKM_ECDSA), c.ec_pub)), CKR_OK);
                    ck!(C_VerifyInit(s, &mut mech(CKM_ECDSA), c.ec_pub))
                })
            },
        ),
        case(
            "SignRecoverInit(NULL mechanism)",
            "C_SignRecoverInit",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_SignRecoverInit(c.s, null_mut(), c.ec_priv)),
        ),
        case(
            "VerifyRecoverInit(NULL mechanism)",
            "C_VerifyRecoverInit",
            &[CKR_ARGUMENTS_BAD],
            |c| ck!(C_VerifyRecoverInit(c.s, null_mut(), c.ec_pub)),
        ),
        // Encrypt: NULL length pointer, NULL data with a length, absurd
        // lengths, the query keeps the operation, Final twice.
        case(
            "Encrypt(NULL length)",
            "C_Encrypt",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    ck!(C_Encrypt(
                        s,
                        d.as_ptr() as *mut _,
                        16,
                        o.as_mut_ptr(),
                        null_mut()
                    ))
                })
            },
        ),
        case(
            "Encrypt(NULL data, 16)",
            "C_Encrypt",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let mut o = [0u8; 16];
                    let mut n = 16;
                    ck!(C_Encrypt(s, null_mut(), 16, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        case(
            "Encrypt(data, absurd length)",
            "C_Encrypt",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    let mut n = 16;
                    ck!(C_Encrypt(
                        s,
                        d.as_ptr() as *mut _,
                        ABSURD,
                        o.as_mut_ptr(),
                        &mut n
                    ))
                })
            },
        ),
        case(
            "Encrypt output length absurd",
            "C_Encrypt",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    let mut n = ABSURD;
                    ck!(C_Encrypt(
                        s,
                        d.as_ptr() as *mut _,
                        16,
                        o.as_mut_ptr(),
                        &mut n
                    ))
                })
            },
        ),
        case(
            // A large (not absurd) output length with a buffer big enough
            // for the result: only the result is written.
            "Encrypt output length u32::MAX, 16-byte buffer",
            "C_Encrypt",
            &[CKR_OK],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    let mut n = u32::MAX as CK_ULONG;
                    let rv = ck!(C_Encrypt(
                        s,
                        d.as_ptr() as *mut _,
                        16,
                        o.as_mut_ptr(),
                        &mut n
                    ));
                    assert_eq!(n, 16);
                    rv
                })
            },
        ),
        case(
            // 5.2: a NULL output buffer asks for the length and leaves the
            // operation active: the real call then succeeds.
            "Encrypt after a length query",
            "C_Encrypt",
            &[CKR_OK],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    let mut n = 0;
                    assert_eq!(
                        ck!(C_Encrypt(s, d.as_ptr() as *mut _, 16, null_mut(), &mut n)),
                        CKR_OK
                    );
                    assert_eq!(n, 16);
                    ck!(C_Encrypt(
                        s,
                        d.as_ptr() as *mut _,
                        16,
                        o.as_mut_ptr(),
                        &mut n
                    ))
                })
            },
        ),
        case(
            "Encrypt without Init",
            "C_Encrypt",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 16];
                let mut o = [0u8; 16];
                let mut n = 16;
                ck!(C_Encrypt(
                    c.s,
                    d.as_ptr() as *mut _,
                    16,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case(
            "Encrypt twice",
            "C_Encrypt",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    let mut n = 16;
                    assert_eq!(
                        ck!(C_Encrypt(
                            s,
                            d.as_ptr() as *mut _,
                            16,
                            o.as_mut_ptr(),
                            &mut n
                        )),
                        CKR_OK
                    );
                    ck!(C_Encrypt(
                        s,
                        d.as_ptr() as *mut _,
                        16,
                        o.as_mut_ptr(),
                        &mut n
                    ))
                })
            },
        ),
        case(
            "EncryptUpdate without Init",
            "C_EncryptUpdate",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 16];
                let mut o = [0u8; 16];
                let mut n = 16;
                ck!(C_EncryptUpdate(
                    c.s,
                    d.as_ptr() as *mut _,
                    16,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case(
            "EncryptUpdate(NULL length)",
            "C_EncryptUpdate",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    ck!(C_EncryptUpdate(
                        s,
                        d.as_ptr() as *mut _,
                        16,
                        o.as_mut_ptr(),
                        null_mut()
                    ))
                })
            },
        ),
        case(
            "EncryptUpdate(NULL part, 16)",
            "C_EncryptUpdate",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let mut o = [0u8; 16];
                    let mut n = 16;
                    ck!(C_EncryptUpdate(s, null_mut(), 16, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        case(
            "EncryptFinal without Init",
            "C_EncryptFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let mut o = [0u8; 16];
                let mut n = 16;
                ck!(C_EncryptFinal(c.s, o.as_mut_ptr(), &mut n))
            },
        ),
        case(
            "EncryptFinal(NULL length)",
            "C_EncryptFinal",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let mut o = [0u8; 16];
                    ck!(C_EncryptFinal(s, o.as_mut_ptr(), null_mut()))
                })
            },
        ),
        case(
            "EncryptFinal twice",
            "C_EncryptFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_EncryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    let mut n = 16;
                    assert_eq!(
                        ck!(C_EncryptUpdate(
                            s,
                            d.as_ptr() as *mut _,
                            16,
                            o.as_mut_ptr(),
                            &mut n
                        )),
                        CKR_OK
                    );
                    n = 16;
                    assert_eq!(ck!(C_EncryptFinal(s, o.as_mut_ptr(), &mut n)), CKR_OK);
                    n = 16;
                    ck!(C_EncryptFinal(s, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        case(
            "Decrypt without Init",
            "C_Decrypt",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 16];
                let mut o = [0u8; 16];
                let mut n = 16;
                ck!(C_Decrypt(
                    c.s,
                    d.as_ptr() as *mut _,
                    16,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case(
            "Decrypt(NULL length)",
            "C_Decrypt",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DecryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    ck!(C_Decrypt(
                        s,
                        d.as_ptr() as *mut _,
                        16,
                        o.as_mut_ptr(),
                        null_mut()
                    ))
                })
            },
        ),
        case(
            "Decrypt(NULL data, 16)",
            "C_Decrypt",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DecryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let mut o = [0u8; 16];
                    let mut n = 16;
                    ck!(C_Decrypt(s, null_mut(), 16, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        case(
            "DecryptUpdate without Init",
            "C_DecryptUpdate",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 16];
                let mut o = [0u8; 16];
                let mut n = 16;
                ck!(C_DecryptUpdate(
                    c.s,
                    d.as_ptr() as *mut _,
                    16,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case(
            "DecryptUpdate(NULL part, 16)",
            "C_DecryptUpdate",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DecryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let mut o = [0u8; 16];
                    let mut n = 16;
                    ck!(C_DecryptUpdate(s, null_mut(), 16, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        case(
            "DecryptFinal without Init",
            "C_DecryptFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let mut o = [0u8; 16];
                let mut n = 16;
                ck!(C_DecryptFinal(c.s, o.as_mut_ptr(), &mut n))
            },
        ),
        case(
            "DecryptFinal(NULL length)",
            "C_DecryptFinal",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DecryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let mut o = [0u8; 16];
                    ck!(C_DecryptFinal(s, o.as_mut_ptr(), null_mut()))
                })
            },
        ),
        case(
            "DecryptFinal twice",
            "C_DecryptFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DecryptInit(s, &mut cbc(), c.aes)), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 16];
                    let mut n = 16;
                    assert_eq!(
                        ck!(C_DecryptUpdate(
                            s,
                            d.as_ptr() as *mut _,
                            16,
                            o.as_mut_ptr(),
                            &mut n
                        )),
                        CKR_OK
                    );
                    n = 16;
                    assert_eq!(ck!(C_DecryptFinal(s, o.as_mut_ptr(), &mut n)), CKR_OK);
                    n = 16;
                    ck!(C_DecryptFinal(s, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        // Digest.
        case(
            "Digest without Init",
            "C_Digest",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 16];
                let mut o = [0u8; 32];
                let mut n = 32;
                ck!(C_Digest(
                    c.s,
                    d.as_ptr() as *mut _,
                    16,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case(
            "Digest(NULL length)",
            "C_Digest",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 32];
                    ck!(C_Digest(
                        s,
                        d.as_ptr() as *mut _,
                        16,
                        o.as_mut_ptr(),
                        null_mut()
                    ))
                })
            },
        ),
        case(
            "Digest(NULL data, 0) of nothing",
            "C_Digest",
            &[CKR_OK],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                    let mut o = [0u8; 32];
                    let mut n = 32;
                    ck!(C_Digest(s, null_mut(), 0, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        case(
            "Digest too small, then right: BUFFER_TOO_SMALL keeps the operation",
            "C_Digest",
            &[CKR_OK],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                    let d = [0u8; 16];
                    let mut o = [0u8; 32];
                    let mut n = 4;
                    assert_eq!(
                        ck!(C_Digest(
                            s,
                            d.as_ptr() as *mut _,
                            16,
                            o.as_mut_ptr(),
                            &mut n
                        )),
                        CKR_BUFFER_TOO_SMALL
                    );
                    assert_eq!(n, 32, "the needed length is written");
                    ck!(C_Digest(
                        s,
                        d.as_ptr() as *mut _,
                        16,
                        o.as_mut_ptr(),
                        &mut n
                    ))
                })
            },
        ),
        case(
            "DigestUpdate without Init",
            "C_DigestUpdate",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 16];
                ck!(C_DigestUpdate(c.s, d.as_ptr() as *mut _, 16))
            },
        ),
        case(
            "DigestUpdate(NULL part, 16)",
            "C_DigestUpdate",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                    ck!(C_DigestUpdate(s, null_mut(), 16))
                })
            },
        ),
        case(
            "DigestUpdate(part, absurd)",
            "C_DigestUpdate",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                    let d = [0u8; 16];
                    ck!(C_DigestUpdate(s, d.as_ptr() as *mut _, ABSURD))
                })
            },
        ),
        case(
            "DigestKey without Init",
            "C_DigestKey",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| ck!(C_DigestKey(c.s, c.aes)),
        ),
        case(
            "DigestFinal without Init",
            "C_DigestFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let mut o = [0u8; 32];
                let mut n = 32;
                ck!(C_DigestFinal(c.s, o.as_mut_ptr(), &mut n))
            },
        ),
        case(
            "DigestFinal(NULL length)",
            "C_DigestFinal",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                    let mut o = [0u8; 32];
                    ck!(C_DigestFinal(s, o.as_mut_ptr(), null_mut()))
                })
            },
        ),
        case(
            "DigestFinal twice",
            "C_DigestFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                    let mut o = [0u8; 32];
                    let mut n = 32;
                    assert_eq!(ck!(C_DigestFinal(s, o.as_mut_ptr(), &mut n)), CKR_OK);
                    n = 32;
                    ck!(C_DigestFinal(s, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        case(
            "DigestFinal length query, then Final",
            "C_DigestFinal",
            &[CKR_OK],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                    let mut o = [0u8; 32];
                    let mut n = 0;
                    assert_eq!(ck!(C_DigestFinal(s, null_mut(), &mut n)), CKR_OK);
                    assert_eq!(n, 32);
                    ck!(C_DigestFinal(s, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        // Sign and verify.
        case(
            "Sign without Init",
            "C_Sign",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 32];
                let mut o = [0u8; 64];
                let mut n = 64;
                ck!(C_Sign(
                    c.s,
                    d.as_ptr() as *mut _,
                    32,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case("Sign(NULL length)", "C_Sign", &[CKR_ARGUMENTS_BAD], |c| {
            c.fresh(|s| {
                assert_eq!(ck!(C_SignInit(s, &mut mech(CKM_ECDSA), c.ec_priv)), CKR_OK);
                let d = [0u8; 32];
                let mut o = [0u8; 64];
                ck!(C_Sign(
                    s,
                    d.as_ptr() as *mut _,
                    32,
                    o.as_mut_ptr(),
                    null_mut()
                ))
            })
        }),
        case("Sign(NULL data, 32)", "C_Sign", &[CKR_ARGUMENTS_BAD], |c| {
            c.fresh(|s| {
                assert_eq!(ck!(C_SignInit(s, &mut mech(CKM_ECDSA), c.ec_priv)), CKR_OK);
                let mut o = [0u8; 64];
                let mut n = 64;
                ck!(C_Sign(s, null_mut(), 32, o.as_mut_ptr(), &mut n))
            })
        }),
        case(
            "SignUpdate without Init",
            "C_SignUpdate",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 32];
                ck!(C_SignUpdate(c.s, d.as_ptr() as *mut _, 32))
            },
        ),
        case(
            "SignUpdate(NULL part, 32)",
            "C_SignUpdate",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(
                        ck!(C_SignInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_priv)),
                        CKR_OK
                    );
                    ck!(C_SignUpdate(s, null_mut(), 32))
                })
            },
        ),
        case(
            "SignFinal without Init",
            "C_SignFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let mut o = [0u8; 64];
                let mut n = 64;
                ck!(C_SignFinal(c.s, o.as_mut_ptr(), &mut n))
            },
        ),
        case(
            "SignFinal(NULL length)",
            "C_SignFinal",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(
                        ck!(C_SignInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_priv)),
                        CKR_OK
                    );
                    let mut o = [0u8; 64];
                    ck!(C_SignFinal(s, o.as_mut_ptr(), null_mut()))
                })
            },
        ),
        case(
            "SignFinal twice",
            "C_SignFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                c.fresh(|s| {
                    assert_eq!(
                        ck!(C_SignInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_priv)),
                        CKR_OK
                    );
                    let d = [0u8; 32];
                    assert_eq!(ck!(C_SignUpdate(s, d.as_ptr() as *mut _, 32)), CKR_OK);
                    let mut o = [0u8; 256];
                    let mut n = 256;
                    assert_eq!(ck!(C_SignFinal(s, o.as_mut_ptr(), &mut n)), CKR_OK);
                    n = 256;
                    ck!(C_SignFinal(s, o.as_mut_ptr(), &mut n))
                })
            },
        ),
        case(
            // SoftHSM 2.6.1 has no SignRecover (its Init answers
            // CKR_FUNCTION_NOT_SUPPORTED), so without Init p11ha's own
            // answer or SoftHSM's is what comes back.
            "SignRecover without Init",
            "C_SignRecover",
            &[CKR_OPERATION_NOT_INITIALIZED, CKR_FUNCTION_NOT_SUPPORTED],
            |c| {
                let d = [0u8; 32];
                let mut o = [0u8; 64];
                let mut n = 64;
                ck!(C_SignRecover(
                    c.s,
                    d.as_ptr() as *mut _,
                    32,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case(
            "SignRecover(NULL length)",
            "C_SignRecover",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let d = [0u8; 32];
                let mut o = [0u8; 64];
                ck!(C_SignRecover(
                    c.s,
                    d.as_ptr() as *mut _,
                    32,
                    o.as_mut_ptr(),
                    null_mut()
                ))
            },
        ),
        case(
            "Verify without Init",
            "C_Verify",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 32];
                let sig = [0u8; 64];
                ck!(C_Verify(
                    c.s,
                    d.as_ptr() as *mut _,
                    32,
                    sig.as_ptr() as *mut _,
                    64
                ))
            },
        ),
        case(
            "Verify(NULL signature, 64)",
            "C_Verify",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_VerifyInit(s, &mut mech(CKM_ECDSA), c.ec_pub)), CKR_OK);
                    let d = [0u8; 32];
                    ck!(C_Verify(s, d.as_ptr() as *mut _, 32, null_mut(), 64))
                })
            },
        ),
        case(
            "Verify(NULL data, 32)",
            "C_Verify",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_VerifyInit(s, &mut mech(CKM_ECDSA), c.ec_pub)), CKR_OK);
                    let sig = [0u8; 64];
                    ck!(C_Verify(s, null_mut(), 32, sig.as_ptr() as *mut _, 64))
                })
            },
        ),
        case(
            "Verify(signature, absurd)",
            "C_Verify",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_VerifyInit(s, &mut mech(CKM_ECDSA), c.ec_pub)), CKR_OK);
                    let d = [0u8; 32];
                    let sig = [0u8; 64];
                    ck!(C_Verify(
                        s,
                        d.as_ptr() as *mut _,
                        32,
                        sig.as_ptr() as *mut _,
                        ABSURD
                    ))
                })
            },
        ),
        case(
            "Verify a wrong signature",
            "C_Verify",
            &[CKR_SIGNATURE_INVALID],
            |c| {
                c.fresh(|s| {
                    assert_eq!(ck!(C_VerifyInit(s, &mut mech(CKM_ECDSA), c.ec_pub)), CKR_OK);
                    let d = [0u8; 32];
                    let sig = [1u8; 64];
                    ck!(C_Verify(
                        s,
                        d.as_ptr() as *mut _,
                        32,
                        sig.as_ptr() as *mut _,
                        64
                    ))
                })
            },
        ),
        case(
            "VerifyUpdate without Init",
            "C_VerifyUpdate",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let d = [0u8; 32];
                ck!(C_VerifyUpdate(c.s, d.as_ptr() as *mut _, 32))
            },
        ),
        case(
            "VerifyUpdate(NULL part, 32)",
            "C_VerifyUpdate",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(
                        ck!(C_VerifyInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_pub)),
                        CKR_OK
                    );
                    ck!(C_VerifyUpdate(s, null_mut(), 32))
                })
            },
        ),
        case(
            "VerifyFinal without Init",
            "C_VerifyFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                let sig = [0u8; 64];
                ck!(C_VerifyFinal(c.s, sig.as_ptr() as *mut _, 64))
            },
        ),
        case(
            "VerifyFinal(NULL signature, 64)",
            "C_VerifyFinal",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                c.fresh(|s| {
                    assert_eq!(
                        ck!(C_VerifyInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_pub)),
                        CKR_OK
                    );
                    ck!(C_VerifyFinal(s, null_mut(), 64))
                })
            },
        ),
        case(
            "VerifyFinal twice",
            "C_VerifyFinal",
            &[CKR_OPERATION_NOT_INITIALIZED],
            |c| {
                c.fresh(|s| {
                    assert_eq!(
                        ck!(C_VerifyInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_pub)),
                        CKR_OK
                    );
                    let sig = [1u8; 256];
                    // A wrong signature ends the operation as a right one does.
                    assert_eq!(
                        ck!(C_VerifyFinal(s, sig.as_ptr() as *mut _, 256)),
                        CKR_SIGNATURE_INVALID
                    );
                    ck!(C_VerifyFinal(s, sig.as_ptr() as *mut _, 256))
                })
            },
        ),
        case(
            "VerifyRecover without Init",
            "C_VerifyRecover",
            // As SignRecover: SoftHSM has none.
            &[CKR_OPERATION_NOT_INITIALIZED, CKR_FUNCTION_NOT_SUPPORTED],
            |c| {
                let sig = [0u8; 64];
                let mut o = [0u8; 64];
                let mut n = 64;
                ck!(C_VerifyRecover(
                    c.s,
                    sig.as_ptr() as *mut _,
                    64,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case(
            "VerifyRecover(NULL length)",
            "C_VerifyRecover",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let sig = [0u8; 64];
                let mut o = [0u8; 64];
                ck!(C_VerifyRecover(
                    c.s,
                    sig.as_ptr() as *mut _,
                    64,
                    o.as_mut_ptr(),
                    null_mut()
                ))
            },
        ),
        // Key management.
        case(
            "GenerateKey(NULL mechanism)",
            "C_GenerateKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut t = aes_template();
                let mut k = 0;
                ck!(C_GenerateKey(c.s, null_mut(), t.as_mut_ptr(), 5, &mut k))
            },
        ),
        case(
            "GenerateKey(NULL template, 5)",
            "C_GenerateKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut k = 0;
                ck!(C_GenerateKey(
                    c.s,
                    &mut mech(CKM_AES_KEY_GEN),
                    null_mut(),
                    5,
                    &mut k
                ))
            },
        ),
        case(
            "GenerateKey(NULL handle out)",
            "C_GenerateKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut t = aes_template();
                ck!(C_GenerateKey(
                    c.s,
                    &mut mech(CKM_AES_KEY_GEN),
                    t.as_mut_ptr(),
                    5,
                    null_mut()
                ))
            },
        ),
        case(
            "GenerateKey unknown mechanism",
            "C_GenerateKey",
            &[CKR_MECHANISM_INVALID],
            |c| {
                let mut t = aes_template();
                let mut k = 0;
                ck!(C_GenerateKey(
                    c.s,
                    &mut mech(0x7fff_0000),
                    t.as_mut_ptr(),
                    5,
                    &mut k
                ))
            },
        ),
        case(
            "GenerateKeyPair(NULL mechanism)",
            "C_GenerateKeyPair",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let (mut p, mut k) = (0, 0);
                ck!(C_GenerateKeyPair(
                    c.s,
                    null_mut(),
                    null_mut(),
                    0,
                    null_mut(),
                    0,
                    &mut p,
                    &mut k
                ))
            },
        ),
        case(
            "GenerateKeyPair(NULL public template, 1)",
            "C_GenerateKeyPair",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let (mut p, mut k) = (0, 0);
                let mut m = mech(CKM_EC_KEY_PAIR_GEN);
                ck!(C_GenerateKeyPair(
                    c.s,
                    &mut m,
                    null_mut(),
                    1,
                    null_mut(),
                    0,
                    &mut p,
                    &mut k
                ))
            },
        ),
        case(
            "GenerateKeyPair(NULL private template, 1)",
            "C_GenerateKeyPair",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let (mut p, mut k) = (0, 0);
                let mut m = mech(CKM_EC_KEY_PAIR_GEN);
                ck!(C_GenerateKeyPair(
                    c.s,
                    &mut m,
                    null_mut(),
                    0,
                    null_mut(),
                    1,
                    &mut p,
                    &mut k
                ))
            },
        ),
        case(
            "GenerateKeyPair(NULL public handle out)",
            "C_GenerateKeyPair",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut k = 0;
                let mut m = mech(CKM_EC_KEY_PAIR_GEN);
                ck!(C_GenerateKeyPair(
                    c.s,
                    &mut m,
                    null_mut(),
                    0,
                    null_mut(),
                    0,
                    null_mut(),
                    &mut k
                ))
            },
        ),
        case(
            "GenerateKeyPair(NULL private handle out)",
            "C_GenerateKeyPair",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut p = 0;
                let mut m = mech(CKM_EC_KEY_PAIR_GEN);
                ck!(C_GenerateKeyPair(
                    c.s,
                    &mut m,
                    null_mut(),
                    0,
                    null_mut(),
                    0,
                    &mut p,
                    null_mut()
                ))
            },
        ),
        case(
            "WrapKey(NULL mechanism)",
            "C_WrapKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut o = [0u8; 64];
                let mut n = 64;
                ck!(C_WrapKey(
                    c.s,
                    null_mut(),
                    c.aes,
                    c.aes,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case(
            "WrapKey(NULL length)",
            "C_WrapKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut o = [0u8; 64];
                ck!(C_WrapKey(
                    c.s,
                    &mut mech(CKM_AES_KEY_WRAP),
                    c.aes,
                    c.aes,
                    o.as_mut_ptr(),
                    null_mut()
                ))
            },
        ),
        case(
            "WrapKey output length absurd",
            "C_WrapKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut o = [0u8; 64];
                let mut n = ABSURD;
                ck!(C_WrapKey(
                    c.s,
                    &mut mech(CKM_AES_KEY_WRAP),
                    c.aes,
                    c.aes,
                    o.as_mut_ptr(),
                    &mut n
                ))
            },
        ),
        case(
            "UnwrapKey(NULL mechanism)",
            "C_UnwrapKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut w = [0u8; 40];
                let mut t = aes_template();
                let mut k = 0;
                ck!(C_UnwrapKey(
                    c.s,
                    null_mut(),
                    c.aes,
                    w.as_mut_ptr(),
                    40,
                    t.as_mut_ptr(),
                    5,
                    &mut k
                ))
            },
        ),
        case(
            "UnwrapKey(NULL wrapped key, 40)",
            "C_UnwrapKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut t = aes_template();
                let mut k = 0;
                let mut m = mech(CKM_AES_KEY_WRAP);
                ck!(C_UnwrapKey(
                    c.s,
                    &mut m,
                    c.aes,
                    null_mut(),
                    40,
                    t.as_mut_ptr(),
                    5,
                    &mut k
                ))
            },
        ),
        case(
            "UnwrapKey(wrapped key, absurd)",
            "C_UnwrapKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut w = [0u8; 40];
                let mut t = aes_template();
                let mut k = 0;
                let mut m = mech(CKM_AES_KEY_WRAP);
                ck!(C_UnwrapKey(
                    c.s,
                    &mut m,
                    c.aes,
                    w.as_mut_ptr(),
                    ABSURD,
                    t.as_mut_ptr(),
                    5,
                    &mut k
                ))
            },
        ),
        case(
            "UnwrapKey(NULL template, 5)",
            "C_UnwrapKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut w = [0u8; 40];
                let mut k = 0;
                let mut m = mech(CKM_AES_KEY_WRAP);
                ck!(C_UnwrapKey(
                    c.s,
                    &mut m,
                    c.aes,
                    w.as_mut_ptr(),
                    40,
                    null_mut(),
                    5,
                    &mut k
                ))
            },
        ),
        case(
            "UnwrapKey(NULL handle out)",
            "C_UnwrapKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut w = [0u8; 40];
                let mut t = aes_template();
                let mut m = mech(CKM_AES_KEY_WRAP);
                ck!(C_UnwrapKey(
                    c.s,
                    &mut m,
                    c.aes,
                    w.as_mut_ptr(),
                    40,
                    t.as_mut_ptr(),
                    5,
                    null_mut()
                ))
            },
        ),
        case(
            "DeriveKey(NULL mechanism)",
            "C_DeriveKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut t = aes_template();
                let mut k = 0;
                ck!(C_DeriveKey(
                    c.s,
                    null_mut(),
                    c.ec_priv,
                    t.as_mut_ptr(),
                    5,
                    &mut k
                ))
            },
        ),
        case(
            "DeriveKey(NULL template, 5)",
            "C_DeriveKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut k = 0;
                let mut m = mech(CKM_ECDH1_DERIVE);
                ck!(C_DeriveKey(c.s, &mut m, c.ec_priv, null_mut(), 5, &mut k))
            },
        ),
        case(
            "DeriveKey(NULL handle out)",
            "C_DeriveKey",
            &[CKR_ARGUMENTS_BAD],
            |c| {
                let mut t = aes_template();
                let mut m = mech(CKM_ECDH1_DERIVE);
                ck!(C_DeriveKey(
                    c.s,
                    &mut m,
                    c.ec_priv,
                    t.as_mut_ptr(),
                    5,
                    null_mut()
                ))
            },
        ),
    ];
    // Dual-function updates: NULL length pointer, NULL input with a
    // length, and no operation active. SoftHSM 2.6.1 implements none of
    // them (CKR_FUNCTION_NOT_SUPPORTED for any call), so without an active
    // operation either p11ha's CKR_OPERATION_NOT_INITIALIZED or SoftHSM's
    // answer comes back.
    type Dual = unsafe extern "C" fn(
        CK_SESSION_HANDLE,
        *mut CK_BYTE,
        CK_ULONG,
        *mut CK_BYTE,
        *mut CK_ULONG,
    ) -> CK_RV;
    type DualFn = fn() -> Dual;
    let duals: [(&'static str, DualFn); 4] = [
        ("C_DigestEncryptUpdate", || {
            raw().C_DigestEncryptUpdate.unwrap()
        }),
        ("C_DecryptDigestUpdate", || {
            raw().C_DecryptDigestUpdate.unwrap()
        }),
        ("C_SignEncryptUpdate", || raw().C_SignEncryptUpdate.unwrap()),
        ("C_DecryptVerifyUpdate", || {
            raw().C_DecryptVerifyUpdate.unwrap()
        }),
    ];
    for (func, f) in duals {
        let call = move |s: CK_SESSION_HANDLE, input: bool, out_len: bool| -> CK_RV {
            CALLED.with(|c| c.borrow_mut().insert(func));
            let d = [0u8; 16];
            let mut o = [0u8; 64];
            let mut n: CK_ULONG = 64;
            let d = if input {
                d.as_ptr() as *mut u8
            } else {
                null_mut()
            };
            let n = if out_len {
                &mut n as *mut CK_ULONG
            } else {
                null_mut()
            };
            // SAFETY: d is NULL or 16 readable bytes; o has 64 writable
            // bytes; n is NULL or a live CK_ULONG holding 64.
            unsafe { f()(s, d, 16, o.as_mut_ptr(), n) }
        };
        rows.push(case(
            &format!("{func}(NULL length)"),
            func,
            &[CKR_ARGUMENTS_BAD],
            move |c| call(c.s, true, false),
        ));
        rows.push(case(
            &format!("{func}(NULL part, 16)"),
            func,
            &[CKR_ARGUMENTS_BAD],
            move |c| call(c.s, false, true),
        ));
        rows.push(case(
            &format!("{func} with no operation active"),
            func,
            &[CKR_OPERATION_NOT_INITIALIZED, CKR_FUNCTION_NOT_SUPPORTED],
            move |c| call(c.s, true, true),
        ));
    }
    rows
}

/// A call that PKCS#11 says ends the active operation whatever it answers
/// (but `CKR_BUFFER_TOO_SMALL` and a length query), made with an argument
/// p11ha refuses.
struct Ends {
    /// The refused call.
    what: &'static str,
    /// The Init function that starts the operation.
    init_func: &'static str,
    init: fn(&Ctx, CK_SESSION_HANDLE) -> CK_RV,
    refused: fn(&Ctx, CK_SESSION_HANDLE) -> CK_RV,
}

/// v2.40 5.8-5.12: "A call to C_Encrypt always terminates the active
/// encryption operation unless it returns CKR_BUFFER_TOO_SMALL or is a
/// successful call (i.e., one which returns CKR_OK) to determine the
/// length of the buffer needed", and likewise for every single-part and
/// Final function; an Update that "results in an error" terminates it too.
/// So after p11ha refuses such a call's arguments, a new Init succeeds
/// (before p11ha's fix it answered CKR_OPERATION_ACTIVE: the member never
/// heard of the refused call).
fn ending_rows() -> Vec<Case> {
    fn d() -> [u8; 32] {
        [0u8; 32]
    }
    let ends = [
        Ends {
            what: "C_Encrypt(NULL length)",
            init_func: "C_EncryptInit",
            init: |c, s| ck!(C_EncryptInit(s, &mut cbc(), c.aes)),
            refused: |_, s| {
                let mut o = [0u8; 32];
                ck!(C_Encrypt(
                    s,
                    d().as_mut_ptr(),
                    16,
                    o.as_mut_ptr(),
                    null_mut()
                ))
            },
        },
        Ends {
            what: "C_EncryptUpdate(NULL part, 16)",
            init_func: "C_EncryptInit",
            init: |c, s| ck!(C_EncryptInit(s, &mut cbc(), c.aes)),
            refused: |_, s| {
                let mut o = [0u8; 32];
                let mut n = 32;
                ck!(C_EncryptUpdate(s, null_mut(), 16, o.as_mut_ptr(), &mut n))
            },
        },
        Ends {
            what: "C_EncryptFinal(NULL length)",
            init_func: "C_EncryptInit",
            init: |c, s| ck!(C_EncryptInit(s, &mut cbc(), c.aes)),
            refused: |_, s| {
                let mut o = [0u8; 32];
                ck!(C_EncryptFinal(s, o.as_mut_ptr(), null_mut()))
            },
        },
        Ends {
            what: "C_Decrypt(NULL data, 16)",
            init_func: "C_DecryptInit",
            init: |c, s| ck!(C_DecryptInit(s, &mut cbc(), c.aes)),
            refused: |_, s| {
                let mut o = [0u8; 32];
                let mut n = 32;
                ck!(C_Decrypt(s, null_mut(), 16, o.as_mut_ptr(), &mut n))
            },
        },
        Ends {
            what: "C_DecryptUpdate(NULL length)",
            init_func: "C_DecryptInit",
            init: |c, s| ck!(C_DecryptInit(s, &mut cbc(), c.aes)),
            refused: |_, s| {
                let mut o = [0u8; 32];
                ck!(C_DecryptUpdate(
                    s,
                    d().as_mut_ptr(),
                    16,
                    o.as_mut_ptr(),
                    null_mut()
                ))
            },
        },
        Ends {
            what: "C_DecryptFinal(NULL length)",
            init_func: "C_DecryptInit",
            init: |c, s| ck!(C_DecryptInit(s, &mut cbc(), c.aes)),
            refused: |_, s| {
                let mut o = [0u8; 32];
                ck!(C_DecryptFinal(s, o.as_mut_ptr(), null_mut()))
            },
        },
        Ends {
            what: "C_Digest(NULL length)",
            init_func: "C_DigestInit",
            init: |_, s| ck!(C_DigestInit(s, &mut mech(CKM_SHA256))),
            refused: |_, s| {
                let mut o = [0u8; 32];
                ck!(C_Digest(
                    s,
                    d().as_mut_ptr(),
                    16,
                    o.as_mut_ptr(),
                    null_mut()
                ))
            },
        },
        Ends {
            what: "C_DigestUpdate(NULL part, 16)",
            init_func: "C_DigestInit",
            init: |_, s| ck!(C_DigestInit(s, &mut mech(CKM_SHA256))),
            refused: |_, s| ck!(C_DigestUpdate(s, null_mut(), 16)),
        },
        Ends {
            what: "C_DigestFinal(NULL length)",
            init_func: "C_DigestInit",
            init: |_, s| ck!(C_DigestInit(s, &mut mech(CKM_SHA256))),
            refused: |_, s| {
                let mut o = [0u8; 32];
                ck!(C_DigestFinal(s, o.as_mut_ptr(), null_mut()))
            },
        },
        Ends {
            what: "C_Sign(NULL data, 32)",
            init_func: "C_SignInit",
            init: |c, s| ck!(C_SignInit(s, &mut mech(CKM_ECDSA), c.ec_priv)),
            refused: |_, s| {
                let mut o = [0u8; 64];
                let mut n = 64;
                ck!(C_Sign(s, null_mut(), 32, o.as_mut_ptr(), &mut n))
            },
        },
        Ends {
            what: "C_SignUpdate(NULL part, 32)",
            init_func: "C_SignInit",
            init: |c, s| ck!(C_SignInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_priv)),
            refused: |_, s| ck!(C_SignUpdate(s, null_mut(), 32)),
        },
        Ends {
            what: "C_SignFinal(NULL length)",
            init_func: "C_SignInit",
            init: |c, s| ck!(C_SignInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_priv)),
            refused: |_, s| {
                let mut o = [0u8; 256];
                ck!(C_SignFinal(s, o.as_mut_ptr(), null_mut()))
            },
        },
        Ends {
            what: "C_Verify(NULL signature, 64)",
            init_func: "C_VerifyInit",
            init: |c, s| ck!(C_VerifyInit(s, &mut mech(CKM_ECDSA), c.ec_pub)),
            refused: |_, s| ck!(C_Verify(s, d().as_mut_ptr(), 32, null_mut(), 64)),
        },
        Ends {
            what: "C_VerifyUpdate(NULL part, 32)",
            init_func: "C_VerifyInit",
            init: |c, s| ck!(C_VerifyInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_pub)),
            refused: |_, s| ck!(C_VerifyUpdate(s, null_mut(), 32)),
        },
        Ends {
            what: "C_VerifyFinal(NULL signature, 256)",
            init_func: "C_VerifyInit",
            init: |c, s| ck!(C_VerifyInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_pub)),
            refused: |_, s| ck!(C_VerifyFinal(s, null_mut(), 256)),
        },
    ];
    ends.into_iter()
        .map(|e| {
            case(
                &format!("{} after {} was refused", e.init_func, e.what),
                e.init_func,
                &[CKR_OK],
                move |c| {
                    c.fresh(|s| {
                        assert_eq!((e.init)(c, s), CKR_OK, "Init");
                        assert_eq!((e.refused)(c, s), CKR_ARGUMENTS_BAD, "{}", e.what);
                        (e.init)(c, s)
                    })
                },
            )
        })
        .collect()
}

/// A function that returns bytes in a variable-length buffer, asked for
/// its length with a NULL buffer.
struct Query {
    func: &'static str,
    /// Starts what the query needs (an operation, or a key to wrap, whose
    /// handle it returns); asserts its own success.
    init: fn(&Ctx, CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE,
    /// The call with `buf` (NULL for the query) and its in/out length.
    call: fn(&Ctx, CK_SESSION_HANDLE, CK_OBJECT_HANDLE, *mut u8, &mut CK_ULONG) -> CK_RV,
}

/// v2.40 5.2: with a NULL buffer "the function should return (in
/// `*pulBufLen`) a number of bytes which would suffice", whatever
/// `*pulBufLen` held: GnuTLS leaves it at 2^63 or more. The query answers
/// `CKR_OK` with a length, leaves the operation active, and the call with a
/// buffer of that length then succeeds.
fn length_query_rows() -> Vec<Case> {
    fn data() -> *mut u8 {
        static D: [u8; 32] = [5; 32];
        D.as_ptr() as *mut u8
    }
    fn ok(rv: CK_RV) -> CK_OBJECT_HANDLE {
        assert_eq!(rv, CKR_OK, "set-up");
        0
    }
    let queries = [
        Query {
            func: "C_Encrypt",
            init: |c, s| ok(ck!(C_EncryptInit(s, &mut cbc(), c.aes))),
            call: |_, s, _, b, n| ck!(C_Encrypt(s, data(), 32, b, n)),
        },
        Query {
            func: "C_EncryptUpdate",
            init: |c, s| ok(ck!(C_EncryptInit(s, &mut cbc(), c.aes))),
            call: |_, s, _, b, n| ck!(C_EncryptUpdate(s, data(), 32, b, n)),
        },
        Query {
            func: "C_EncryptFinal",
            init: |c, s| {
                let mut o = [0u8; 32];
                let mut n = 32;
                let rv = ck!(C_EncryptInit(s, &mut cbc(), c.aes));
                assert_eq!(rv, CKR_OK);
                ok(ck!(C_EncryptUpdate(s, data(), 16, o.as_mut_ptr(), &mut n)))
            },
            call: |_, s, _, b, n| ck!(C_EncryptFinal(s, b, n)),
        },
        Query {
            func: "C_Decrypt",
            init: |c, s| ok(ck!(C_DecryptInit(s, &mut cbc(), c.aes))),
            call: |_, s, _, b, n| ck!(C_Decrypt(s, data(), 32, b, n)),
        },
        Query {
            func: "C_DecryptUpdate",
            init: |c, s| ok(ck!(C_DecryptInit(s, &mut cbc(), c.aes))),
            call: |_, s, _, b, n| ck!(C_DecryptUpdate(s, data(), 32, b, n)),
        },
        Query {
            func: "C_DecryptFinal",
            init: |c, s| {
                let mut o = [0u8; 32];
                let mut n = 32;
                let rv = ck!(C_DecryptInit(s, &mut cbc(), c.aes));
                assert_eq!(rv, CKR_OK);
                ok(ck!(C_DecryptUpdate(s, data(), 16, o.as_mut_ptr(), &mut n)))
            },
            call: |_, s, _, b, n| ck!(C_DecryptFinal(s, b, n)),
        },
        Query {
            func: "C_Digest",
            init: |_, s| ok(ck!(C_DigestInit(s, &mut mech(CKM_SHA256)))),
            call: |_, s, _, b, n| ck!(C_Digest(s, data(), 32, b, n)),
        },
        Query {
            func: "C_DigestFinal",
            init: |_, s| {
                assert_eq!(ck!(C_DigestInit(s, &mut mech(CKM_SHA256))), CKR_OK);
                ok(ck!(C_DigestUpdate(s, data(), 32)))
            },
            call: |_, s, _, b, n| ck!(C_DigestFinal(s, b, n)),
        },
        Query {
            func: "C_Sign",
            init: |c, s| {
                ok(ck!(C_SignInit(
                    s,
                    &mut mech(CKM_SHA256_RSA_PKCS),
                    c.rsa_priv
                )))
            },
            call: |_, s, _, b, n| ck!(C_Sign(s, data(), 32, b, n)),
        },
        Query {
            func: "C_Sign",
            init: |c, s| ok(ck!(C_SignInit(s, &mut mech(CKM_ECDSA), c.ec_priv))),
            call: |_, s, _, b, n| ck!(C_Sign(s, data(), 32, b, n)),
        },
        Query {
            func: "C_SignFinal",
            init: |c, s| {
                let rv = ck!(C_SignInit(s, &mut mech(CKM_SHA256_RSA_PKCS), c.rsa_priv));
                assert_eq!(rv, CKR_OK);
                ok(ck!(C_SignUpdate(s, data(), 32)))
            },
            call: |_, s, _, b, n| ck!(C_SignFinal(s, b, n)),
        },
        Query {
            func: "C_WrapKey",
            init: extractable_key,
            call: |c, s, k, b, n| ck!(C_WrapKey(s, &mut mech(CKM_AES_KEY_WRAP), c.aes, k, b, n)),
        },
    ];
    let mut rows = Vec::new();
    for q in queries {
        for incoming in [0, 1 << 63, CK_ULONG::MAX] {
            rows.push(case(
                &format!("{} length query, NULL buffer, *len {incoming:#x}", q.func),
                q.func,
                &[CKR_OK],
                move |c| {
                    c.fresh(|s| {
                        let k = (q.init)(c, s);
                        let mut n = incoming;
                        let rv = (q.call)(c, s, k, null_mut(), &mut n);
                        if rv != CKR_OK {
                            return rv;
                        }
                        assert!(n <= 4096, "{}: the length query answered {n:#x}", q.func);
                        // The operation is still active: the real call
                        // succeeds with a buffer of the length given.
                        let mut buf = vec![0u8; n as usize + 1];
                        let rv = (q.call)(c, s, k, buf.as_mut_ptr(), &mut n);
                        assert_eq!(rv, CKR_OK, "{}: the call after the query", q.func);
                        rv
                    })
                },
            ));
        }
    }
    for incoming in [0, 1 << 63, CK_ULONG::MAX] {
        rows.push(case(
            &format!("GetSlotList count query, *count {incoming:#x}"),
            "C_GetSlotList",
            &[CKR_OK],
            move |_| {
                let mut n = incoming;
                let rv = ck!(C_GetSlotList(CK_TRUE, null_mut(), &mut n));
                assert!(rv != CKR_OK || n == 1, "one virtual slot, not {n:#x}");
                rv
            },
        ));
        rows.push(case(
            &format!("GetMechanismList count query, *count {incoming:#x}"),
            "C_GetMechanismList",
            &[CKR_OK],
            move |c| {
                let mut n = incoming;
                let rv = ck!(C_GetMechanismList(c.slot, null_mut(), &mut n));
                assert!(rv != CKR_OK || (1..1000).contains(&n), "{n:#x} mechanisms");
                rv
            },
        ));
        rows.push(case(
            &format!("GetAttributeValue NULL pValue, ulValueLen {incoming:#x}"),
            "C_GetAttributeValue",
            &[CKR_OK],
            move |c| {
                let mut t = [CK_ATTRIBUTE {
                    type_: CKA_LABEL,
                    pValue: null_mut(),
                    ulValueLen: incoming,
                }];
                let rv = ck!(C_GetAttributeValue(c.s, c.aes, t.as_mut_ptr(), 1));
                assert!(
                    rv != CKR_OK || t[0].ulValueLen == 7,
                    "\"aes-key\" has 7 bytes"
                );
                rv
            },
        ));
    }
    rows
}

/// A session AES key that may be wrapped.
fn extractable_key(_: &Ctx, s: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    let mut t = aes_template();
    t[4] = attr(CKA_EXTRACTABLE, &TRUE);
    let mut k = 0;
    let rv = ck!(C_GenerateKey(
        s,
        &mut mech(CKM_AES_KEY_GEN),
        t.as_mut_ptr(),
        5,
        &mut k
    ));
    assert_eq!(rv, CKR_OK, "C_GenerateKey");
    k
}

/// Runs `rows`, adding mismatches to `bad` and covered functions to
/// `covered`; returns how many ran.
fn run(
    ctx: &Ctx,
    rows: Vec<Case>,
    bad: &mut Vec<String>,
    covered: &mut BTreeSet<&'static str>,
) -> usize {
    let n = rows.len();
    // ABI_TABLE_TRACE=1 names each row before it runs (to find one that
    // crashes) and prints its answer.
    let trace = std::env::var_os("ABI_TABLE_TRACE").is_some();
    for row in rows {
        if trace {
            eprint!("row: {} ... ", row.name);
        }
        CALLED.with(|c| c.borrow_mut().clear());
        // A row's own set-up asserts what it needs (a session opened, an
        // Init that succeeds): its failure is a mismatch too, reported with
        // the rest.
        let got = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (row.call)(ctx))) {
            Ok(rv) => rv,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                bad.push(format!("{} ({}): set-up failed: {msg}", row.name, row.func));
                covered.insert(row.func);
                continue;
            }
        };
        if trace {
            eprintln!("{got:#x}");
        }
        let called = CALLED.with(|c| c.borrow().contains(row.func));
        assert!(called, "row {:?} does not call {}", row.name, row.func);
        covered.insert(row.func);
        if !row.want.contains(&got) {
            let want: Vec<String> = row.want.iter().map(|w| format!("{w:#x}")).collect();
            bad.push(format!(
                "{} ({}): want {}, got {got:#x}",
                row.name,
                row.func,
                want.join(" or ")
            ));
        }
    }
    n
}

/// Opens a session on the slot.
fn open(slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    let mut s = 0;
    let rv = ck!(C_OpenSession(
        slot,
        CKF_SERIAL_SESSION | CKF_RW_SESSION,
        null_mut(),
        None,
        &mut s
    ));
    assert_eq!(rv, CKR_OK, "C_OpenSession");
    s
}

/// The one object of `class` labelled `label`.
fn find(s: CK_SESSION_HANDLE, class: CK_OBJECT_CLASS, label: &str) -> CK_OBJECT_HANDLE {
    let mut t = [
        attr(CKA_CLASS, &class),
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_ptr() as *mut c_void,
            ulValueLen: label.len() as CK_ULONG,
        },
    ];
    assert_eq!(ck!(C_FindObjectsInit(s, t.as_mut_ptr(), 2)), CKR_OK);
    let mut h = [0; 2];
    let mut n = 0;
    assert_eq!(ck!(C_FindObjects(s, h.as_mut_ptr(), 2, &mut n)), CKR_OK);
    assert_eq!(ck!(C_FindObjectsFinal(s)), CKR_OK);
    assert_eq!(n, 1, "one {label}");
    h[0]
}

/// A session data object, its handle.
fn data_object(s: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    let mut t = data_template();
    let mut o = 0;
    assert_eq!(ck!(C_CreateObject(s, t.as_mut_ptr(), 2, &mut o)), CKR_OK);
    o
}

/// Makes the handles of a run: stale and closed sessions first (a
/// `C_CloseAllSessions` closes every session of the slot), then the
/// logged-in session the rows use, the keys, and dead objects.
fn make_ctx() -> Ctx {
    let slot = 0;
    let mut n = 0;
    assert_eq!(ck!(C_GetSlotList(CK_TRUE, null_mut(), &mut n)), CKR_OK);
    assert_eq!(n, 1, "WLD: one virtual slot");
    let stale = open(slot);
    assert_eq!(ck!(C_CloseAllSessions(slot)), CKR_OK);
    let closed = open(slot);
    assert_eq!(ck!(C_CloseSession(closed)), CKR_OK);
    let s = open(slot);
    let rv = ck!(C_Login(
        s,
        CKU_USER,
        USER_PIN.as_ptr() as *mut _,
        USER_PIN.len() as _
    ));
    assert_eq!(rv, CKR_OK, "C_Login");
    let destroyed = data_object(s);
    assert_eq!(ck!(C_DestroyObject(s, destroyed)), CKR_OK);
    let other = open(slot);
    let orphaned = data_object(other);
    assert_eq!(ck!(C_CloseSession(other)), CKR_OK);
    Ctx {
        slot,
        s,
        closed,
        stale,
        ec_priv: find(s, CKO_PRIVATE_KEY, "ec-key"),
        ec_pub: find(s, CKO_PUBLIC_KEY, "ec-key"),
        aes: find(s, CKO_SECRET_KEY, "aes-key"),
        rsa_priv: find(s, CKO_PRIVATE_KEY, "rsa-key"),
        rsa_pub: find(s, CKO_PUBLIC_KEY, "rsa-key"),
        destroyed,
        orphaned,
    }
}

#[test]
fn every_function_answers_the_specified_code_for_every_bad_argument() {
    let tokens = tokens(3);
    // The only test of this binary, before the library exists: nothing
    // else reads the environment yet.
    configure(
        &tokens,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
    );
    let mut bad = Vec::new();
    let mut covered = BTreeSet::new();
    let mut cases = 0;

    // Before C_Initialize: every function, then refused C_Initialize
    // arguments (each followed by a check that nothing was initialised).
    let none = Ctx::placeholder();
    cases += run(
        &none,
        not_initialized_rows("before C_Initialize"),
        &mut bad,
        &mut covered,
    );
    cases += run(&none, bad_initialize_rows(), &mut bad, &mut covered);

    // Initialised.
    let mut args = init_args([false; 4], CKF_OS_LOCKING_OK, null_mut());
    assert_eq!(
        ck!(C_Initialize(&mut args as *mut _ as *mut c_void)),
        CKR_OK
    );
    let ctx = make_ctx();
    cases += run(&ctx, initialized_rows(), &mut bad, &mut covered);

    // After C_Finalize, with the run's (now dead) handles.
    assert_eq!(ck!(C_Finalize(null_mut())), CKR_OK);
    cases += run(
        &ctx,
        not_initialized_rows("after C_Finalize"),
        &mut bad,
        &mut covered,
    );

    // And the library can be initialised again.
    assert_eq!(ck!(C_Initialize(null_mut())), CKR_OK);
    assert_eq!(ck!(C_Finalize(null_mut())), CKR_OK);

    println!("abi table: {cases} cases, {} functions", covered.len());
    let missing: Vec<&str> = FUNCTIONS
        .iter()
        .copied()
        .filter(|f| !covered.contains(f))
        .collect();
    assert!(missing.is_empty(), "functions without a row: {missing:?}");
    assert_eq!(
        covered.len(),
        FUNCTIONS.len(),
        "rows name only functions of the list"
    );
    assert!(
        bad.is_empty(),
        "{} of {cases} cases answered a code the specification does not give:\n  {}",
        bad.len(),
        bad.join("\n  ")
    );
}
