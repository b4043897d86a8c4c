//! Every function of the C interface, called through the raw function list
//! with the arguments PKCS#11 v2.40 says a library must refuse or treat
//! specially.
//!
//! Each function is described once, by its *shape* ([`shapes`]): its
//! arguments in order, each with its kind and the value a well-formed call
//! passes, and what must come first (an operation started, the user logged
//! out). From the shapes the table generates its systematic rows
//! ([`generated_rows`]):
//! - each required pointer NULL; each (pointer, length) pair (a buffer, a
//!   template, a template's first value, a mechanism's parameter) NULL with
//!   its length, NULL with a length past `isize::MAX`, and its real buffer
//!   with that absurd length: `CKR_ARGUMENTS_BAD`, before anything is read;
//! - each variable-length output with a NULL length pointer (with or
//!   without a buffer) or an absurd `*len`: `CKR_ARGUMENTS_BAD`; and asked
//!   for its length with a NULL buffer, whatever `*len` holds: `CKR_OK`, the
//!   operation still active;
//! - invalid session handles (0, never issued, closed, stale), object and
//!   key handles (0, never issued, destroyed, of a closed session) with the
//!   code the specification gives that argument, and bad slot ids;
//! - an operation's calls with no operation active, and, where PKCS#11 says
//!   a failed call ends the operation, a new Init after each refused call;
//! - every function before `C_Initialize` and after `C_Finalize`;
//! - every count the C interface takes (templates, attribute values, data,
//!   parameters, PINs, output rooms, list counts) at 2^16, 2^32 and 2^63
//!   ([`huge_rows`]): 2^32 backed by zero pages mapped but not reserved,
//!   2^63 by a small buffer before a guard page. A 2^32 or 2^63 call must
//!   answer within [`PROMPT`] (10 ms), and an output row must write
//!   nothing past what it returns (issue 14).
//!
//! Two generated rows also accept what p11ha answers, which breaks a rule
//! of its own without harm ([`P11HA_ALSO`], with the reasons).
//!
//! The rows that test behaviour (wrong-state sequences, buffers too small,
//! `CK_C_INITIALIZE_ARGS`, the 3.0 interface functions, SoftHSM's answers)
//! are written by hand ([`hand_rows`], [`bad_initialize_rows`]).
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

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ffi::c_void;
use std::ptr::{dangling_mut, null_mut};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
#[rustfmt::skip]
const FUNCTIONS: [&str; 70] = [
    "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList",
    "C_GetSlotList", "C_GetSlotInfo", "C_GetTokenInfo", "C_GetMechanismList",
    "C_GetMechanismInfo", "C_InitToken", "C_InitPIN", "C_SetPIN",
    "C_OpenSession", "C_CloseSession", "C_CloseAllSessions", "C_GetSessionInfo",
    "C_GetOperationState", "C_SetOperationState", "C_Login", "C_Logout",
    "C_CreateObject", "C_CopyObject", "C_DestroyObject", "C_GetObjectSize",
    "C_GetAttributeValue", "C_SetAttributeValue",
    "C_FindObjectsInit", "C_FindObjects", "C_FindObjectsFinal",
    "C_EncryptInit", "C_Encrypt", "C_EncryptUpdate", "C_EncryptFinal",
    "C_DecryptInit", "C_Decrypt", "C_DecryptUpdate", "C_DecryptFinal",
    "C_DigestInit", "C_Digest", "C_DigestUpdate", "C_DigestKey", "C_DigestFinal",
    "C_SignInit", "C_Sign", "C_SignUpdate", "C_SignFinal",
    "C_SignRecoverInit", "C_SignRecover",
    "C_VerifyInit", "C_Verify", "C_VerifyUpdate", "C_VerifyFinal",
    "C_VerifyRecoverInit", "C_VerifyRecover",
    "C_DigestEncryptUpdate", "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate", "C_DecryptVerifyUpdate",
    "C_GenerateKey", "C_GenerateKeyPair", "C_WrapKey", "C_UnwrapKey", "C_DeriveKey",
    "C_SeedRandom", "C_GenerateRandom",
    "C_GetFunctionStatus", "C_CancelFunction", "C_WaitForSlotEvent",
    "C_GetInterfaceList", "C_GetInterface",
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
    /// The object a row made on its session first ([`Needs::Made`]); the
    /// AES key where none was made.
    made: CK_OBJECT_HANDLE,
}

/// A slot id no slot has.
const BAD_SLOT: CK_SLOT_ID = 7;
/// A session or object handle never issued.
const NEVER: CK_ULONG = 0x7fff_fff0;
/// A length no buffer can have (more than `isize::MAX` bytes), but not
/// `CK_UNAVAILABLE_INFORMATION`.
const ABSURD: CK_ULONG = CK_ULONG::MAX - 1;
/// What `*len` holds when a length is asked for with a NULL buffer: GnuTLS
/// leaves 2^63 or more there.
const INCOMING: [CK_ULONG; 4] = [0, 1 << 63, ABSURD, CK_ULONG::MAX];
/// The size of the buffer behind each output pointer of a generated call.
const SCRATCH: usize = 4096;

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
            made: 3,
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

/// AES-CBC's IV, and the parameter a generated row gives a mechanism that
/// has none (static, so that a mechanism can outlive a row's locals).
static IV: [u8; 16] = [7; 16];

/// A mechanism without parameter.
fn mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

/// AES-CBC with a fixed IV.
fn cbc() -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: CKM_AES_CBC,
        pParameter: IV.as_ptr() as *mut c_void,
        ulParameterLen: 16,
    }
}

/// The mechanism a shape passes: CBC with its IV, the others without
/// parameter.
fn mechanism(ty: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    if ty == CKM_AES_CBC { cbc() } else { mech(ty) }
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
const X: [u8; 1] = *b"x";

/// A session data object's template (CKA_TOKEN false).
fn data_template() -> Vec<CK_ATTRIBUTE> {
    vec![attr(CKA_CLASS, &DATA), attr(CKA_TOKEN, &FALSE)]
}

/// A session AES key's template, for GenerateKey, UnwrapKey and DeriveKey.
fn aes_template() -> Vec<CK_ATTRIBUTE> {
    vec![
        attr(CKA_CLASS, &SECRET),
        attr(CKA_KEY_TYPE, &AES),
        attr(CKA_TOKEN, &FALSE),
        attr(CKA_VALUE_LEN, &LEN32),
        attr(CKA_ENCRYPT, &TRUE),
    ]
}

/// A session object: for CopyObject and GenerateKeyPair.
fn session_template() -> Vec<CK_ATTRIBUTE> {
    vec![attr(CKA_TOKEN, &FALSE)]
}

/// A new label, for SetAttributeValue.
fn label_template() -> Vec<CK_ATTRIBUTE> {
    vec![attr(CKA_LABEL, &X)]
}

// ---- shapes ---------------------------------------------------------------

/// One of the run's session, slot or object handles.
type Handle = fn(&Ctx) -> CK_ULONG;

/// One argument of a function as PKCS#11 declares it, with the value a
/// well-formed call passes, and the bad values the table gives it. A pair
/// (a pointer and its length) is one argument here and two parameters in
/// C; "absurd" is a length past `isize::MAX` bytes, which must be refused
/// before anything is read.
#[derive(Clone, Copy)]
enum Arg {
    /// `CK_SESSION_HANDLE`: the row's session. Bad: 0, never issued,
    /// closed, closed by `C_CloseAllSessions`: CKR_SESSION_HANDLE_INVALID.
    Session,
    /// `CK_SLOT_ID`: the virtual slot. Bad: 7 and ~0: CKR_SLOT_ID_INVALID.
    Slot,
    /// An object or key handle: its name, the handle, and the code PKCS#11
    /// gives a bad one: 0, never issued, destroyed, of a closed session.
    Object(&'static str, Handle, CK_RV),
    /// A required pointer to one value of fixed size, read or written
    /// (`CK_INFO *`, `CK_ULONG *`, `CK_OBJECT_HANDLE *`, a 32-byte label).
    /// Bad: NULL: CKR_ARGUMENTS_BAD.
    Ptr(&'static str),
    /// A pair: bytes the function reads. Bad: NULL with its length, NULL
    /// with an absurd one, itself with an absurd one: CKR_ARGUMENTS_BAD.
    In(&'static str, &'static [u8]),
    /// A pair: a PIN. NULL asks for the protected authentication path
    /// (5.6), whatever the length says, so only an absurd length is bad
    /// (CKR_ARGUMENTS_BAD); NULL PINs are rows by hand.
    Pin(&'static str, &'static str),
    /// A pair: a buffer the function fills, and its count of elements of
    /// the given size. Bad: as `In`.
    Array(&'static str, usize, CK_ULONG),
    /// Bytes the function writes, as many as it needs: pointer and pointer
    /// to the length. Bad: a NULL length pointer (with or without a
    /// buffer), an absurd `*len`: CKR_ARGUMENTS_BAD. A NULL buffer asks for
    /// "a number of bytes which would suffice" (5.2): CKR_OK.
    Out(&'static str),
    /// A list: pointer and pointer to its count of elements of the given
    /// size. Bad: as `Out`. A NULL list asks for the exact count.
    List(&'static str, usize),
    /// A pair: attributes the function reads, and their count. Bad: as
    /// `In`, and the same of the first attribute's value.
    Template(&'static str, fn() -> Vec<CK_ATTRIBUTE>),
    /// A pair: one attribute whose value the function writes
    /// (`C_GetAttributeValue`). Bad: as `In`, and its value with an absurd
    /// length. A NULL value asks for its exact length.
    OutTemplate(&'static str, CK_ATTRIBUTE_TYPE),
    /// `CK_MECHANISM *`; CBC gets its IV, other mechanisms no parameter.
    /// Bad: NULL, and its parameter as `In` (a 16-byte one if it has none).
    Mech(CK_MECHANISM_TYPE),
    /// `pReserved`. Bad: non-NULL: CKR_ARGUMENTS_BAD.
    Reserved,
    /// An optional pointer, passed NULL (its name is for the reader).
    Null(#[expect(dead_code, reason = "never varied")] &'static str),
    /// Any other value (flags, a user type, a mechanism type), passed as is.
    Value(CK_ULONG),
}

/// What a call needs before it can be made, on the row's session.
#[derive(Clone, Copy)]
enum Needs {
    Nothing,
    /// An operation, started by the well-formed calls of these functions
    /// (its Init first).
    Op(&'static [&'static str]),
    /// An operation SoftHSM 2.6.1 cannot start: only the argument checks
    /// run, and a call without one answers one of these codes.
    Lacking(&'static [CK_RV]),
    /// An object, made on the row's session by this function (`Ctx::made`):
    /// so that a call the library accepts by mistake cannot change the
    /// token's objects the other rows use.
    Made(fn(CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE),
    /// The user logged out; logged in again afterwards.
    LoggedOut,
}

/// SoftHSM 2.6.1 implements neither the dual-function updates nor
/// SignRecover and VerifyRecover (CKR_FUNCTION_NOT_SUPPORTED for any call,
/// their Init included), so without an operation p11ha's own
/// CKR_OPERATION_NOT_INITIALIZED or SoftHSM's answer comes back.
const SOFTHSM_LACKS: Needs =
    Needs::Lacking(&[CKR_OPERATION_NOT_INITIALIZED, CKR_FUNCTION_NOT_SUPPORTED]);

/// The `or` of the functions SoftHSM 2.6.1 lacks (the ones of
/// [`SOFTHSM_LACKS`], SignRecoverInit, VerifyRecoverInit and the operation
/// state): no member in service has them, so p11ha answers
/// CKR_FUNCTION_NOT_SUPPORTED, as SoftHSM does, right after the session
/// handle and before any other argument is looked at (issue 14;
/// `tests/tests/support.rs` compares every answer with SoftHSM's own).
const LACKING: CK_RV = CKR_FUNCTION_NOT_SUPPORTED;

/// A function's shape: its arguments and what it needs.
struct Shape {
    func: &'static str,
    /// Calls the function with the C arguments given.
    f: fn(&[Raw]) -> CK_RV,
    needs: Needs,
    args: Vec<Arg>,
    /// A code every bad argument may get instead (the reason is given
    /// where the shape is).
    or: Option<CK_RV>,
}

/// The shapes of a table of functions: for each, its arguments in order,
/// and after them what it needs (if anything) and a code every bad argument
/// may get instead (`or`, with the reason where it is used).
macro_rules! shapes {
    ($( $f:ident ( $($arg:expr),* $(,)? ) $(, needs $needs:expr)? $(, or $or:expr)? ; )*) => {
        vec![$(Shape {
            func: stringify!($f),
            // SAFETY: the arguments come from `Frame::pass`: each pointer
            // NULL on purpose or valid for the length passed with it,
            // except where the library must refuse the length before using
            // it. `CFunction::call` checks their number.
            f: |a| unsafe { ck_fn!($f).call(a) },
            args: vec![$($arg),*],
            needs: shapes!(@needs $($needs)?),
            or: shapes!(@or $($or)?),
        }),*]
    };
    (@needs) => { Needs::Nothing };
    (@needs $needs:expr) => { $needs };
    (@or) => { None };
    (@or $or:expr) => { Some($or) };
}

/// The function pointer of `$f`.
macro_rules! ck_fn {
    (C_GetInterfaceList) => {
        symbol::<GetInterfaceList>("C_GetInterfaceList")
    };
    (C_GetInterface) => {
        symbol::<GetInterface>("C_GetInterface")
    };
    ($f:ident) => {
        raw().$f.expect(stringify!($f))
    };
}

/// Every function, described once: its arguments as PKCS#11 declares
/// them (a pair, such as `In`, is a pointer and a length), and what must
/// come first.
fn shapes() -> &'static [Shape] {
    use Arg::*;
    use Needs::*;
    const ULONG: usize = std::mem::size_of::<CK_ULONG>();
    const INTERFACE: usize = std::mem::size_of::<CK_INTERFACE>();
    const OBJECT: CK_RV = CKR_OBJECT_HANDLE_INVALID;
    const KEY: CK_RV = CKR_KEY_HANDLE_INVALID;
    static SHAPES: OnceLock<Vec<Shape>> = OnceLock::new();
    SHAPES.get_or_init(|| shapes! {
        // ---- general purpose (5.4); C_Initialize's rows are by hand ----------
        C_Initialize(Null("pInitArgs"));
        C_Finalize(Reserved);
        C_GetInfo(Ptr("pInfo"));
        C_GetFunctionList(Ptr("ppFunctionList"));
        // ---- slots and tokens (5.5) ------------------------------------------
        C_GetSlotList(Value(TRUE.into()), List("pSlotList", ULONG));
        C_GetSlotInfo(Slot, Ptr("pInfo"));
        C_GetTokenInfo(Slot, Ptr("pInfo"));
        C_GetMechanismList(Slot, List("pMechanismList", ULONG));
        C_GetMechanismInfo(Slot, Value(CKM_SHA256), Ptr("pInfo"));
        // The application has sessions open: the valid call is answered
        // CKR_SESSION_EXISTS (5.5); a check of the arguments first is as right.
        C_InitToken(Slot, Pin("pPin", SO_PIN), Ptr("pLabel")), or CKR_SESSION_EXISTS;
        C_InitPIN(Session, Pin("pPin", USER_PIN));
        C_SetPIN(Session, Pin("pOldPin", USER_PIN), Pin("pNewPin", USER_PIN));
        // ---- sessions (5.6) --------------------------------------------------
        C_OpenSession(
            Slot, Value(CKF_SERIAL_SESSION), Null("pApplication"), Null("Notify"), Ptr("phSession"),
        );
        C_CloseSession(Session);
        C_CloseAllSessions(Slot);
        C_GetSessionInfo(Session, Ptr("pInfo"));
        // No operation is active: nothing to save. SoftHSM 2.6.1 has no
        // state saving at all (CKR_FUNCTION_NOT_SUPPORTED, which any
        // function may answer); CKR_OPERATION_NOT_INITIALIZED and
        // CKR_STATE_UNSAVEABLE are the specification's codes.
        C_GetOperationState(Session, Out("pOperationState")), needs Lacking(&[
            CKR_FUNCTION_NOT_SUPPORTED, CKR_OPERATION_NOT_INITIALIZED, CKR_STATE_UNSAVEABLE,
        ]), or LACKING;
        // The two key handles may be 0 ("none").
        C_SetOperationState(Session, In("pOperationState", &[0; 16]), Value(0), Value(0)),
            or LACKING;
        C_Login(Session, Value(CKU_USER), Pin("pPin", USER_PIN)), needs LoggedOut;
        C_Logout(Session);
        // ---- objects (5.7) ---------------------------------------------------
        C_CreateObject(Session, Template("pTemplate", data_template), Ptr("phObject"));
        C_CopyObject(
            Session, Object("hObject", |c| c.made, OBJECT),
            Template("pTemplate", session_template), Ptr("phNewObject"),
        ), needs Made(data_object);
        C_DestroyObject(Session, Object("hObject", |c| c.made, OBJECT)), needs Made(data_object);
        C_GetObjectSize(Session, Object("hObject", |c| c.aes, OBJECT), Ptr("pulSize"));
        C_GetAttributeValue(
            Session, Object("hObject", |c| c.aes, OBJECT), OutTemplate("pTemplate", CKA_LABEL),
        );
        C_SetAttributeValue(
            Session, Object("hObject", |c| c.made, OBJECT), Template("pTemplate", label_template),
        ), needs Made(data_object);
        C_FindObjectsInit(Session, Template("pTemplate", data_template));
        C_FindObjects(Session, Array("phObject", ULONG, 4), Ptr("pulObjectCount")),
            needs Op(&["C_FindObjectsInit"]);
        C_FindObjectsFinal(Session), needs Op(&["C_FindObjectsInit"]);
        // ---- encryption and decryption (5.8, 5.9) ----------------------------
        C_EncryptInit(Session, Mech(CKM_AES_CBC), Object("hKey", |c| c.aes, KEY));
        C_Encrypt(Session, In("pData", &[0; 16]), Out("pEncryptedData")),
            needs Op(&["C_EncryptInit"]);
        C_EncryptUpdate(Session, In("pPart", &[0; 16]), Out("pEncryptedPart")),
            needs Op(&["C_EncryptInit"]);
        C_EncryptFinal(Session, Out("pLastEncryptedPart")),
            needs Op(&["C_EncryptInit", "C_EncryptUpdate"]);
        C_DecryptInit(Session, Mech(CKM_AES_CBC), Object("hKey", |c| c.aes, KEY));
        C_Decrypt(Session, In("pEncryptedData", &[0; 16]), Out("pData")),
            needs Op(&["C_DecryptInit"]);
        C_DecryptUpdate(Session, In("pEncryptedPart", &[0; 16]), Out("pPart")),
            needs Op(&["C_DecryptInit"]);
        C_DecryptFinal(Session, Out("pLastPart")),
            needs Op(&["C_DecryptInit", "C_DecryptUpdate"]);
        // ---- digests (5.10) --------------------------------------------------
        C_DigestInit(Session, Mech(CKM_SHA256));
        C_Digest(Session, In("pData", &[0; 16]), Out("pDigest")), needs Op(&["C_DigestInit"]);
        C_DigestUpdate(Session, In("pPart", &[0; 32])), needs Op(&["C_DigestInit"]);
        C_DigestKey(Session, Object("hKey", |c| c.aes, KEY)), needs Op(&["C_DigestInit"]);
        C_DigestFinal(Session, Out("pDigest")), needs Op(&["C_DigestInit", "C_DigestUpdate"]);
        // ---- signatures (5.11, 5.12) -----------------------------------------
        // RSA: SoftHSM's raw ECDSA has no multi-part operation.
        C_SignInit(Session, Mech(CKM_SHA256_RSA_PKCS), Object("hKey", |c| c.rsa_priv, KEY));
        C_Sign(Session, In("pData", &[0; 32]), Out("pSignature")), needs Op(&["C_SignInit"]);
        C_SignUpdate(Session, In("pPart", &[0; 32])), needs Op(&["C_SignInit"]);
        C_SignFinal(Session, Out("pSignature")), needs Op(&["C_SignInit", "C_SignUpdate"]);
        C_SignRecoverInit(Session, Mech(CKM_RSA_PKCS), Object("hKey", |c| c.rsa_priv, KEY)),
            or LACKING;
        C_SignRecover(Session, In("pData", &[0; 32]), Out("pSignature")), needs SOFTHSM_LACKS,
            or LACKING;
        C_VerifyInit(Session, Mech(CKM_SHA256_RSA_PKCS), Object("hKey", |c| c.rsa_pub, KEY));
        C_Verify(Session, In("pData", &[0; 32]), In("pSignature", &[0; 256])),
            needs Op(&["C_VerifyInit"]);
        C_VerifyUpdate(Session, In("pPart", &[0; 32])), needs Op(&["C_VerifyInit"]);
        C_VerifyFinal(Session, In("pSignature", &[0; 256])),
            needs Op(&["C_VerifyInit", "C_VerifyUpdate"]);
        C_VerifyRecoverInit(Session, Mech(CKM_RSA_PKCS), Object("hKey", |c| c.rsa_pub, KEY)),
            or LACKING;
        C_VerifyRecover(Session, In("pSignature", &[0; 256]), Out("pData")),
            needs SOFTHSM_LACKS, or LACKING;
        // ---- dual-function updates (5.13) ------------------------------------
        C_DigestEncryptUpdate(Session, In("pPart", &[0; 16]), Out("pEncryptedPart")),
            needs SOFTHSM_LACKS, or LACKING;
        C_DecryptDigestUpdate(Session, In("pEncryptedPart", &[0; 16]), Out("pPart")),
            needs SOFTHSM_LACKS, or LACKING;
        C_SignEncryptUpdate(Session, In("pPart", &[0; 16]), Out("pEncryptedPart")),
            needs SOFTHSM_LACKS, or LACKING;
        C_DecryptVerifyUpdate(Session, In("pEncryptedPart", &[0; 16]), Out("pPart")),
            needs SOFTHSM_LACKS, or LACKING;
        // ---- keys (5.14) -----------------------------------------------------
        C_GenerateKey(
            Session, Mech(CKM_AES_KEY_GEN), Template("pTemplate", aes_template), Ptr("phKey"),
        );
        C_GenerateKeyPair(
            Session, Mech(CKM_EC_KEY_PAIR_GEN),
            Template("pPublicKeyTemplate", session_template),
            Template("pPrivateKeyTemplate", session_template),
            Ptr("phPublicKey"), Ptr("phPrivateKey"),
        );
        C_WrapKey(
            Session, Mech(CKM_AES_KEY_WRAP),
            Object("hWrappingKey", |c| c.aes, CKR_WRAPPING_KEY_HANDLE_INVALID),
            Object("hKey", |c| c.made, KEY), Out("pWrappedKey"),
        ), needs Made(extractable_key);
        C_UnwrapKey(
            Session, Mech(CKM_AES_KEY_WRAP),
            Object("hUnwrappingKey", |c| c.aes, CKR_UNWRAPPING_KEY_HANDLE_INVALID),
            In("pWrappedKey", &[0; 40]), Template("pTemplate", aes_template), Ptr("phKey"),
        );
        C_DeriveKey(
            Session, Mech(CKM_ECDH1_DERIVE), Object("hBaseKey", |c| c.ec_priv, KEY),
            Template("pTemplate", aes_template), Ptr("phKey"),
        );
        // ---- random numbers, legacy, events (5.15-5.17) ----------------------
        C_SeedRandom(Session, In("pSeed", &[1; 8]));
        C_GenerateRandom(Session, Array("RandomData", 1, 8));
        C_GetFunctionStatus(Session);
        C_CancelFunction(Session);
        C_WaitForSlotEvent(Value(CKF_DONT_BLOCK), Ptr("pSlot"), Reserved);
        // ---- interfaces (3.0 5.2) --------------------------------------------
        C_GetInterfaceList(List("pInterfacesList", INTERFACE));
        C_GetInterface(Null("pInterfaceName"), Null("pVersion"), Ptr("ppInterface"), Value(0));
    })
}

/// The shape of the function named `func`.
fn shape(func: &str) -> &'static Shape {
    shapes()
        .iter()
        .find(|s| s.func == func)
        .unwrap_or_else(|| panic!("no shape for {func}"))
}

/// How one argument of a well-formed call is changed.
#[derive(Clone, Copy)]
enum Change {
    /// A session, slot or object argument: this handle instead.
    Handle(Handle),
    /// A pointer NULL; `pReserved` non-NULL.
    Pointer,
    /// A pair: its pointer NULL or not, with this length (an output's
    /// `*len`).
    Pair { null: bool, len: CK_ULONG },
    /// A variable-length output's length pointer NULL, its buffer NULL or
    /// not.
    NoLen { null: bool },
    /// The pair inside the argument: a mechanism's parameter, a template's
    /// first value.
    Inner { null: bool, len: CK_ULONG },
    /// A pair (`inner`: the pair inside the argument) at memory of the
    /// row's own, `p`, with `len`: the huge-count rows' mappings.
    At {
        p: *mut c_void,
        len: CK_ULONG,
        inner: bool,
    },
}

/// What a generated call answered.
struct Answer {
    rv: CK_RV,
    /// The length its variable-length output (or attribute value) holds
    /// after the call.
    len: Option<CK_ULONG>,
    /// How long the call took (the function alone, not its set-up).
    took: Duration,
}

/// Where a shape's variable-length output is.
#[derive(Clone, Copy)]
struct Output {
    arg: usize,
    /// The size of its elements.
    elem: usize,
    /// Whether a query answers the exact length (lists, attribute values)
    /// or one that would suffice.
    exact: bool,
    /// Whether the length is a template's value length (a [`Change::Inner`]).
    inner: bool,
}

impl Output {
    /// The output's buffer NULL or not, with `len`.
    fn change(&self, null: bool, len: CK_ULONG) -> Change {
        if self.inner {
            Change::Inner { null, len }
        } else {
            Change::Pair { null, len }
        }
    }
}

impl Shape {
    fn takes_session(&self) -> bool {
        self.args.iter().any(|a| matches!(a, Arg::Session))
    }

    fn output(&self) -> Option<Output> {
        self.args.iter().enumerate().find_map(|(arg, a)| {
            let (elem, exact, inner) = match *a {
                Arg::Out(_) => (1, false, false),
                Arg::List(_, elem) => (elem, true, false),
                Arg::OutTemplate(..) => (1, true, true),
                _ => return None,
            };
            Some(Output {
                arg,
                elem,
                exact,
                inner,
            })
        })
    }

    /// The call on session `s` (ignored if the function takes none), well
    /// formed but for the change to argument `change.0`.
    fn call(&self, c: &Ctx, s: CK_SESSION_HANDLE, change: Option<(usize, Change)>) -> Answer {
        let mut frame = Frame::default();
        let mut raw = Vec::new();
        for (i, arg) in self.args.iter().enumerate() {
            let change = change.filter(|(j, _)| *j == i).map(|(_, ch)| ch);
            frame.pass(*arg, change, c, s, &mut raw);
        }
        CALLED.with(|called| called.borrow_mut().insert(self.func));
        let start = Instant::now();
        let rv = (self.f)(&raw);
        let took = start.elapsed();
        Answer {
            rv,
            len: frame.written(),
            took,
        }
    }

    /// Runs `f` where this function can be called: on a session of its own
    /// (if it takes one), with what it needs done first.
    fn within(&self, c: &Ctx, f: impl FnOnce(&Ctx, CK_SESSION_HANDLE) -> CK_RV) -> CK_RV {
        if !self.takes_session() {
            return f(c, CK_INVALID_HANDLE);
        }
        c.fresh(|s| {
            let mut c = *c;
            match self.needs {
                Needs::Nothing | Needs::Lacking(_) => {}
                Needs::Op(calls) => {
                    for func in calls {
                        let rv = shape(func).call(&c, s, None).rv;
                        assert_eq!(rv, CKR_OK, "{func} first");
                    }
                }
                Needs::Made(make) => c.made = make(s),
                Needs::LoggedOut => assert_eq!(ck!(C_Logout(s)), CKR_OK, "C_Logout first"),
            }
            let rv = f(&c, s);
            if let Needs::LoggedOut = self.needs {
                let rv = ck!(C_Login(
                    s,
                    CKU_USER,
                    USER_PIN.as_ptr() as *mut _,
                    USER_PIN.len() as _
                ));
                assert_eq!(rv, CKR_OK, "C_Login again");
            }
            rv
        })
    }
}

/// A session AES key that may be wrapped.
fn extractable_key(s: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
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

// ---- the generic call -----------------------------------------------------

/// One C argument of a generated call.
#[derive(Clone, Copy, Debug)]
enum Raw {
    Ulong(CK_ULONG),
    Ptr(*mut c_void),
}

/// The type of a function's parameter, made from a [`Raw`].
trait FromRaw {
    fn from_raw(r: Raw) -> Self;
}

impl FromRaw for CK_ULONG {
    fn from_raw(r: Raw) -> Self {
        match r {
            Raw::Ulong(v) => v,
            Raw::Ptr(_) => panic!("a pointer where the function takes a CK_ULONG"),
        }
    }
}

impl FromRaw for CK_BBOOL {
    fn from_raw(r: Raw) -> Self {
        CK_BBOOL::try_from(CK_ULONG::from_raw(r)).expect("a CK_BBOOL")
    }
}

impl<T> FromRaw for *mut T {
    fn from_raw(r: Raw) -> Self {
        match r {
            Raw::Ptr(p) => p.cast(),
            Raw::Ulong(_) => panic!("a CK_ULONG where the function takes a pointer"),
        }
    }
}

impl FromRaw for CK_NOTIFY {
    fn from_raw(r: Raw) -> Self {
        let p: *mut c_void = FromRaw::from_raw(r);
        assert!(p.is_null(), "no notification callback");
        None
    }
}

/// A PKCS#11 function, called with [`Raw`] arguments.
trait CFunction {
    /// # Safety
    ///
    /// Each pointer must be NULL or valid for what the function does with
    /// it, given the lengths passed.
    unsafe fn call(self, args: &[Raw]) -> CK_RV;
}

macro_rules! c_function {
    ($($t:ident $i:tt),+) => {
        impl<$($t: FromRaw),+> CFunction for unsafe extern "C" fn($($t),+) -> CK_RV {
            unsafe fn call(self, args: &[Raw]) -> CK_RV {
                assert_eq!(args.len(), [$($i),+].len(), "the shape's C arguments");
                // SAFETY: as the caller promises.
                unsafe { self($($t::from_raw(args[$i])),+) }
            }
        }
    };
}

c_function!(A0 0);
c_function!(A0 0, A1 1);
c_function!(A0 0, A1 1, A2 2);
c_function!(A0 0, A1 1, A2 2, A3 3);
c_function!(A0 0, A1 1, A2 2, A3 3, A4 4);
c_function!(A0 0, A1 1, A2 2, A3 3, A4 4, A5 5);
c_function!(A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7);

/// What a generated call's pointers point at, alive until the call has
/// returned.
#[derive(Default)]
struct Frame {
    /// Buffers, in 8-byte words so that any structure fits aligned.
    buffers: Vec<Vec<u64>>,
    /// Boxed, as the mechanisms: each stays where the call's pointer points
    /// while more are pushed.
    #[expect(clippy::vec_box, reason = "stable addresses")]
    lengths: Vec<Box<CK_ULONG>>,
    templates: Vec<Vec<CK_ATTRIBUTE>>,
    #[expect(clippy::vec_box, reason = "stable addresses")]
    mechanisms: Vec<Box<CK_MECHANISM>>,
    /// Where the call writes its output's length.
    written: Option<Written>,
}

enum Written {
    Length(usize),
    Attribute(usize),
}

impl Frame {
    /// Passes `arg` of a well-formed call, changed by `change`, to `out`.
    fn pass(
        &mut self,
        arg: Arg,
        change: Option<Change>,
        c: &Ctx,
        s: CK_SESSION_HANDLE,
        out: &mut Vec<Raw>,
    ) {
        let handle = |valid: CK_ULONG| match change {
            None => valid,
            Some(Change::Handle(h)) => h(c),
            Some(_) => panic!("a handle is changed only for another"),
        };
        match arg {
            Arg::Session => out.push(Raw::Ulong(handle(s))),
            Arg::Slot => out.push(Raw::Ulong(handle(c.slot))),
            Arg::Object(_, h, _) => out.push(Raw::Ulong(handle(h(c)))),
            Arg::Value(v) => out.push(Raw::Ulong(v)),
            Arg::Null(_) => out.push(Raw::Ptr(null_mut())),
            Arg::Reserved => out.push(Raw::Ptr(match change {
                Some(_) => dangling_mut(),
                None => null_mut(),
            })),
            Arg::Ptr(_) => {
                let p = match change {
                    Some(_) => null_mut(),
                    None => self.buffer(SCRATCH, &[]),
                };
                out.push(Raw::Ptr(p));
            }
            Arg::In(_, data) => {
                let p = self.buffer(data.len(), data);
                pair(p, data.len() as CK_ULONG, change, out);
            }
            Arg::Pin(_, pin) => {
                let p = self.buffer(pin.len(), pin.as_bytes());
                pair(p, pin.len() as CK_ULONG, change, out);
            }
            Arg::Array(_, elem, n) => {
                let p = self.buffer(elem * n as usize, &[]);
                pair(p, n, change, out);
            }
            Arg::Out(_) | Arg::List(..) => {
                let elem = match arg {
                    Arg::List(_, elem) => elem,
                    _ => 1,
                };
                let buf = self.buffer(SCRATCH, &[]);
                let (null, len, no_len, buf) = match change {
                    None => (false, (SCRATCH / elem) as CK_ULONG, false, buf),
                    Some(Change::Pair { null, len }) => (null, len, false, buf),
                    Some(Change::NoLen { null }) => (null, 0, true, buf),
                    Some(Change::At { p, len, .. }) => (false, len, false, p),
                    Some(_) => panic!("an output is changed as a pair"),
                };
                out.push(Raw::Ptr(if null { null_mut() } else { buf }));
                let len = self.length(len);
                out.push(Raw::Ptr(if no_len { null_mut() } else { len }));
            }
            Arg::Template(_, template) => {
                let mut t = template();
                match change {
                    Some(Change::Inner { null, len }) => {
                        if null {
                            t[0].pValue = null_mut();
                        }
                        t[0].ulValueLen = len;
                    }
                    Some(Change::At {
                        p,
                        len,
                        inner: true,
                    }) => {
                        t[0].pValue = p;
                        t[0].ulValueLen = len;
                    }
                    _ => {}
                }
                let n = t.len() as CK_ULONG;
                let p = self.template(t);
                pair(p, n, change, out);
            }
            Arg::OutTemplate(_, ty) => {
                let mut a = CK_ATTRIBUTE {
                    type_: ty,
                    pValue: self.buffer(SCRATCH, &[]),
                    ulValueLen: SCRATCH as CK_ULONG,
                };
                match change {
                    Some(Change::Inner { null, len }) => {
                        if null {
                            a.pValue = null_mut();
                        }
                        a.ulValueLen = len;
                    }
                    Some(Change::At {
                        p,
                        len,
                        inner: true,
                    }) => {
                        a.pValue = p;
                        a.ulValueLen = len;
                    }
                    _ => {}
                }
                let p = self.template(vec![a]);
                self.written = Some(Written::Attribute(self.templates.len() - 1));
                pair(p, 1, change, out);
            }
            Arg::Mech(ty) => {
                let mut m = mechanism(ty);
                match change {
                    Some(Change::Pointer) => return out.push(Raw::Ptr(null_mut())),
                    Some(Change::Inner { null, len }) => {
                        m.pParameter = if null {
                            null_mut()
                        } else {
                            IV.as_ptr() as *mut c_void
                        };
                        m.ulParameterLen = len;
                    }
                    Some(Change::At {
                        p,
                        len,
                        inner: true,
                    }) => {
                        m.pParameter = p;
                        m.ulParameterLen = len;
                    }
                    _ => {}
                }
                self.mechanisms.push(Box::new(m));
                let m = self.mechanisms.last_mut().expect("pushed");
                out.push(Raw::Ptr(&mut **m as *mut CK_MECHANISM as *mut c_void));
            }
        }
    }

    /// A buffer of at least `bytes` bytes, beginning with `fill`.
    fn buffer(&mut self, bytes: usize, fill: &[u8]) -> *mut c_void {
        let mut words = vec![0u64; bytes.div_ceil(8).max(1)];
        for (w, chunk) in words.iter_mut().zip(fill.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        self.buffers.push(words);
        self.buffers.last_mut().expect("pushed").as_mut_ptr().cast()
    }

    /// An output's length, holding `len`.
    fn length(&mut self, len: CK_ULONG) -> *mut c_void {
        self.lengths.push(Box::new(len));
        self.written = Some(Written::Length(self.lengths.len() - 1));
        let l = self.lengths.last_mut().expect("pushed");
        &mut **l as *mut CK_ULONG as *mut c_void
    }

    fn template(&mut self, t: Vec<CK_ATTRIBUTE>) -> *mut c_void {
        self.templates.push(t);
        self.templates
            .last_mut()
            .expect("pushed")
            .as_mut_ptr()
            .cast()
    }

    fn written(&self) -> Option<CK_ULONG> {
        match self.written {
            Some(Written::Length(i)) => Some(*self.lengths[i]),
            Some(Written::Attribute(i)) => Some(self.templates[i][0].ulValueLen),
            None => None,
        }
    }
}

/// Passes a pair: `p` and `n`, or as `change` says.
fn pair(p: *mut c_void, n: CK_ULONG, change: Option<Change>, out: &mut Vec<Raw>) {
    let (p, n) = match change {
        Some(Change::Pair { null: true, len }) => (null_mut(), len),
        Some(Change::Pair { null: false, len }) => (p, len),
        Some(Change::At {
            p,
            len,
            inner: false,
        }) => (p, len),
        _ => (p, n),
    };
    out.push(Raw::Ptr(p));
    out.push(Raw::Ulong(n));
}

// ---- rows -----------------------------------------------------------------

type Call = Box<dyn Fn(&Ctx) -> CK_RV>;

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

const BAD_SESSIONS: [(&str, Handle); 4] = [
    ("0", |_| CK_INVALID_HANDLE),
    ("never issued", |_| NEVER),
    ("closed", |c| c.closed),
    ("stale after CloseAllSessions", |c| c.stale),
];

const BAD_OBJECTS: [(&str, Handle); 4] = [
    ("0", |_| CK_INVALID_HANDLE),
    ("never issued", |_| NEVER),
    ("destroyed", |c| c.destroyed),
    ("of a closed session", |c| c.orphaned),
];

const BAD_SLOTS: [(&str, Handle); 2] = [("7", |_| BAD_SLOT), ("~0", |_| CK_SLOT_ID::MAX)];

/// One bad argument of a call, and the code it gets.
struct Bad {
    arg: usize,
    what: String,
    change: Change,
    want: CK_RV,
}

/// Every bad argument of `sh` but its session handle: handles, slot ids,
/// pointers, lengths.
fn bad_arguments(sh: &Shape) -> Vec<Bad> {
    let bad_args = CKR_ARGUMENTS_BAD;
    let outer = |null, len| Change::Pair { null, len };
    let inner = |null, len| Change::Inner { null, len };
    let mut bad = Vec::new();
    for (arg, a) in sh.args.iter().enumerate() {
        let rows: Vec<(String, Change, CK_RV)> = match *a {
            Arg::Slot => handles(&BAD_SLOTS, "slotID", CKR_SLOT_ID_INVALID),
            Arg::Object(name, _, code) => handles(&BAD_OBJECTS, name, code),
            Arg::Ptr(name) => vec![(format!("{name} NULL"), Change::Pointer, bad_args)],
            Arg::Reserved => vec![("pReserved non-NULL".into(), Change::Pointer, bad_args)],
            Arg::In(name, data) => pairs(name, data.len() as CK_ULONG, outer),
            Arg::Pin(name, _) => vec![(
                format!("{name} with an absurd length"),
                outer(false, ABSURD),
                bad_args,
            )],
            Arg::Array(name, _, n) => pairs(name, n, outer),
            Arg::Template(name, t) => {
                let t = t();
                let mut rows = pairs(name, t.len() as CK_ULONG, outer);
                rows.extend(pairs(&format!("{name}[0]'s value"), t[0].ulValueLen, inner));
                rows
            }
            Arg::OutTemplate(name, _) => {
                let mut rows = pairs(name, 1, outer);
                // A NULL value asks for its length: length_query_rows.
                let what = format!("{name}[0]'s value with an absurd length");
                rows.push((what, inner(false, ABSURD), bad_args));
                rows
            }
            Arg::Mech(ty) => {
                let mut rows = vec![("pMechanism NULL".into(), Change::Pointer, bad_args)];
                // A mechanism without parameter is given a 16-byte one.
                let n = mechanism(ty).ulParameterLen.max(16);
                rows.extend(pairs("pMechanism's parameter", n, inner));
                rows
            }
            Arg::Out(name) | Arg::List(name, _) => [
                ("with a NULL length pointer", Change::NoLen { null: false }),
                (
                    "NULL and a NULL length pointer",
                    Change::NoLen { null: true },
                ),
                ("with *len absurd", outer(false, ABSURD)),
            ]
            .into_iter()
            .map(|(what, change)| (format!("{name} {what}"), change, bad_args))
            .collect(),
            Arg::Session | Arg::Null(_) | Arg::Value(_) => Vec::new(),
        };
        bad.extend(rows.into_iter().map(|(what, change, want)| Bad {
            arg,
            what,
            change,
            want,
        }));
    }
    bad
}

/// Each of the bad `handles` in place of argument `name`: `code`.
fn handles(handles: &[(&str, Handle)], name: &str, code: CK_RV) -> Vec<(String, Change, CK_RV)> {
    let row = |&(what, h): &(&str, Handle)| (format!("{name} {what}"), Change::Handle(h), code);
    handles.iter().map(row).collect()
}

/// A (pointer, length) pair NULL with its length `n`, NULL with an absurd
/// length, and real with an absurd length: `CKR_ARGUMENTS_BAD`.
fn pairs(
    name: &str,
    n: CK_ULONG,
    change: fn(bool, CK_ULONG) -> Change,
) -> Vec<(String, Change, CK_RV)> {
    [
        (format!("{name} NULL, length {n}"), true, n),
        (format!("{name} NULL, length absurd"), true, ABSURD),
        (format!("{name} with an absurd length"), false, ABSURD),
    ]
    .into_iter()
    .map(|(what, null, len)| (what, change(null, len), CKR_ARGUMENTS_BAD))
    .collect()
}

/// The rows generated from the shapes, run while the library is
/// initialised.
fn generated_rows() -> Vec<Case> {
    let mut rows = Vec::new();
    for sh in shapes() {
        rows.extend(argument_rows(sh));
        rows.extend(no_operation_rows(sh));
        rows.extend(length_query_rows(sh));
        rows.extend(ending_rows(sh));
        rows.extend(session_rows(sh));
        rows.extend(huge_rows(sh));
    }
    for (name, _) in P11HA_ALSO {
        assert!(rows.iter().any(|r| r.name == name), "no row {name:?}");
    }
    rows
}

/// Generated rows p11ha answers otherwise, with the reason: they break the
/// rule that a length no buffer can have is refused, but p11ha never makes
/// a slice of that length, so nothing is read or written out of bounds.
/// Left as they are (and reported).
const P11HA_ALSO: [(&str, CK_RV); 2] = [
    // p11ha returns at most 1024 handles, and only those it found: a
    // maximum no buffer can hold answers as the u32::MAX one does.
    ("C_FindObjects: phObject with an absurd length", CKR_OK),
    // p11ha writes its one interface whatever *pulCount says past 1
    // (C_GetSlotList and C_GetMechanismList refuse such a count).
    (
        "C_GetInterfaceList: pInterfacesList with *len absurd",
        CKR_OK,
    ),
];

/// Each bad argument, the rest of the call well formed, where the function
/// can be called.
fn argument_rows(sh: &'static Shape) -> Vec<Case> {
    bad_arguments(sh)
        .into_iter()
        .map(|b| {
            let name = format!("{}: {}", sh.func, b.what);
            let also = P11HA_ALSO
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, rv)| *rv);
            let want: Vec<CK_RV> = [b.want].into_iter().chain(sh.or).chain(also).collect();
            case(&name, sh.func, &want, move |c| {
                sh.within(c, |c, s| sh.call(c, s, Some((b.arg, b.change))).rv)
            })
        })
        .collect()
}

/// An invalid session handle: 0 (`CK_INVALID_HANDLE`), one never issued,
/// one closed with `C_CloseSession`, one closed by `C_CloseAllSessions`:
/// `CKR_SESSION_HANDLE_INVALID`.
fn session_rows(sh: &'static Shape) -> Vec<Case> {
    let i = sh.args.iter().position(|a| matches!(a, Arg::Session));
    let Some(i) = i else { return Vec::new() };
    BAD_SESSIONS
        .into_iter()
        .map(|(what, h)| {
            let name = format!("{}: session {what}", sh.func);
            case(&name, sh.func, &[CKR_SESSION_HANDLE_INVALID], move |c| {
                sh.call(c, c.s, Some((i, Change::Handle(h)))).rv
            })
        })
        .collect()
}

/// A function of an operation, called when none is active.
fn no_operation_rows(sh: &'static Shape) -> Vec<Case> {
    let (init, want) = match sh.needs {
        Needs::Op(calls) => (calls[0], &[CKR_OPERATION_NOT_INITIALIZED][..]),
        Needs::Lacking(codes) => ("an operation", codes),
        _ => return Vec::new(),
    };
    let name = format!("{} without {init}", sh.func);
    vec![case(&name, sh.func, want, move |c| {
        c.fresh(|s| sh.call(c, s, None).rv)
    })]
}

/// v2.40 5.2: with a NULL buffer "the function should return (in
/// `*pulBufLen`) a number of bytes which would suffice", whatever
/// `*pulBufLen` held: GnuTLS leaves it at 2^63 or more. The query answers
/// `CKR_OK` with a length that a second query (with `*len` 0) repeats, the
/// operation stays active, and the call with a buffer of that length then
/// succeeds (writing exactly that length, for a list or an attribute value,
/// whose length is exact). Not for what SoftHSM cannot do.
fn length_query_rows(sh: &'static Shape) -> Vec<Case> {
    let Some(out) = sh.output() else {
        return Vec::new();
    };
    if let Needs::Lacking(_) = sh.needs {
        return Vec::new();
    }
    let func = sh.func;
    INCOMING
        .into_iter()
        .map(|incoming| {
            let name = format!("{func}: length query, NULL buffer, *len {incoming:#x}");
            case(&name, func, &[CKR_OK], move |c| {
                sh.within(c, |c, s| {
                    let query = sh.call(c, s, Some((out.arg, out.change(true, incoming))));
                    if query.rv != CKR_OK {
                        return query.rv;
                    }
                    let n = query.len.expect("a length");
                    assert!(
                        n as usize <= SCRATCH / out.elem,
                        "{func}: a query answered {n:#x}"
                    );
                    let again = sh.call(c, s, Some((out.arg, out.change(true, 0))));
                    assert_eq!(again.rv, CKR_OK, "{func}: a second query");
                    assert_eq!(again.len, Some(n), "{func}: a second query, *len 0");
                    let real = sh.call(c, s, Some((out.arg, out.change(false, n))));
                    assert_eq!(real.rv, CKR_OK, "{func}: the call after the query");
                    if out.exact {
                        assert_eq!(real.len, Some(n), "{func}: the exact length");
                    }
                    query.rv
                })
            })
        })
        .collect()
}

/// v2.40 5.8-5.12: "A call to C_Encrypt always terminates the active
/// encryption operation unless it returns CKR_BUFFER_TOO_SMALL or is a
/// successful call (i.e., one which returns CKR_OK) to determine the
/// length of the buffer needed", and likewise for every single-part and
/// Final function; an Update that "results in an error" terminates it too.
const ENDS_ON_ERROR: [&str; 15] = [
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestFinal",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
];

/// After p11ha refuses the arguments of a call that ends the operation, a
/// new Init succeeds (before p11ha's fix it answered CKR_OPERATION_ACTIVE:
/// the member never heard of the refused call).
fn ending_rows(sh: &'static Shape) -> Vec<Case> {
    let Needs::Op(calls) = sh.needs else {
        return Vec::new();
    };
    if !ENDS_ON_ERROR.contains(&sh.func) {
        return Vec::new();
    }
    let init = shape(calls[0]);
    bad_arguments(sh)
        .into_iter()
        .filter(|b| b.want == CKR_ARGUMENTS_BAD)
        .map(|b| {
            let name = format!("{} after {}: {} was refused", init.func, sh.func, b.what);
            case(&name, init.func, &[CKR_OK], move |c| {
                sh.within(c, |c, s| {
                    let rv = sh.call(c, s, Some((b.arg, b.change))).rv;
                    assert_eq!(rv, CKR_ARGUMENTS_BAD, "{}: {}", sh.func, b.what);
                    init.call(c, s, None).rv
                })
            })
        })
        .collect()
}

/// Rows for a phase where the library is not initialised: every function
/// but `C_Initialize` (whose rows are separate) answers
/// `CKR_CRYPTOKI_NOT_INITIALIZED`, except those PKCS#11 lets an
/// application call first: `C_GetFunctionList` (5.2) and the 3.0
/// `C_GetInterfaceList`/`C_GetInterface` (5.2, 3.0), which answer `CKR_OK`.
fn not_initialized_rows(phase: &str) -> Vec<Case> {
    shapes()
        .iter()
        .filter(|sh| sh.func != "C_Initialize")
        .map(|sh| {
            let want = match sh.func {
                "C_GetFunctionList" | "C_GetInterfaceList" | "C_GetInterface" => CKR_OK,
                _ => CKR_CRYPTOKI_NOT_INITIALIZED,
            };
            let name = format!("{} {phase}", sh.func);
            case(&name, sh.func, &[want], move |c| sh.call(c, c.s, None).rv)
        })
        .collect()
}

// ---- rows by hand -----------------------------------------------------------

/// `func`'s well-formed call twice, where it can be made: the first
/// answers `first`, the second `want`.
fn twice(func: &'static str, first: CK_RV, want: CK_RV) -> Case {
    let sh = shape(func);
    case(&format!("{func} twice"), func, &[want], move |c| {
        sh.within(c, |c, s| {
            assert_eq!(sh.call(c, s, None).rv, first, "{func} the first time");
            sh.call(c, s, None).rv
        })
    })
}

/// v2.40 5.2: a buffer too small gets `CKR_BUFFER_TOO_SMALL` with the
/// length needed written first, and the operation stays active: the call
/// with that length then succeeds, writing exactly that length.
fn too_small(func: &'static str) -> Case {
    let sh = shape(func);
    let out = sh.output().expect("a variable-length output");
    case(
        &format!("{func}: *len 0, too small, then right"),
        func,
        &[CKR_BUFFER_TOO_SMALL],
        move |c| {
            sh.within(c, |c, s| {
                let small = sh.call(c, s, Some((out.arg, out.change(false, 0))));
                if small.rv != CKR_BUFFER_TOO_SMALL {
                    return small.rv;
                }
                let n = small.len.expect("a length");
                assert!(n > 0, "{func}: the length needed is written");
                let right = sh.call(c, s, Some((out.arg, out.change(false, n))));
                assert_eq!(right.rv, CKR_OK, "{func} with the length it asked for");
                assert_eq!(right.len, Some(n), "{func}: the length it asked for");
                small.rv
            })
        },
    )
}

/// The well-formed call on the run's session, which needs nothing.
fn plain(name: &str, func: &'static str, want: CK_RV) -> Case {
    let sh = shape(func);
    case(name, func, &[want], move |c| sh.call(c, c.s, None).rv)
}

/// Logs out the run's session's user, calls `f`, logs in again.
fn logged_out(c: &Ctx, f: impl FnOnce() -> CK_RV) -> CK_RV {
    assert_eq!(ck!(C_Logout(c.s)), CKR_OK);
    let rv = f();
    let pin = USER_PIN.as_ptr() as *mut _;
    assert_eq!(ck!(C_Login(c.s, CKU_USER, pin, 4)), CKR_OK);
    rv
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

/// The rows that test behaviour, run while the library is initialised.
fn hand_rows() -> Vec<Case> {
    let pin = || USER_PIN.as_ptr() as *mut u8;
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
            "GetInfo after Finalize(non-NULL) was refused",
            "C_GetInfo",
            &[CKR_OK],
            |_| {
                assert_eq!(ck!(C_Finalize(dangling_mut())), CKR_ARGUMENTS_BAD);
                let mut info = CK_INFO::default();
                ck!(C_GetInfo(&mut info))
            },
        ),
        // ---- slots and tokens ---------------------------------------------
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
            // NULL PIN: the protected authentication path (5.5).
            "InitToken NULL PIN on the virtual slot",
            "C_InitToken",
            &[CKR_SESSION_EXISTS],
            |c| {
                let mut label = [b' '; 32];
                ck!(C_InitToken(c.slot, null_mut(), 0, label.as_mut_ptr()))
            },
        ),
        // 5.6: C_InitPIN only in the "R/W SO Functions" state.
        plain("InitPIN as the user", "C_InitPIN", CKR_USER_NOT_LOGGED_IN),
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
                let (old, new) = (b"0000".as_ptr() as *mut _, b"5678".as_ptr() as *mut _);
                ck!(C_SetPIN(c.s, old, 4, new, 4))
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
            "CloseSession twice",
            "C_CloseSession",
            &[CKR_SESSION_HANDLE_INVALID],
            |c| {
                let mut s = 0;
                let flags = CKF_SERIAL_SESSION;
                let rv = ck!(C_OpenSession(c.slot, flags, null_mut(), None, &mut s));
                assert_eq!(rv, CKR_OK);
                assert_eq!(ck!(C_CloseSession(s)), CKR_OK);
                ck!(C_CloseSession(s))
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
        plain(
            "Login when logged in",
            "C_Login",
            CKR_USER_ALREADY_LOGGED_IN,
        ),
        case(
            // 5.6: a type that is none of CKU_SO, CKU_USER and
            // CKU_CONTEXT_SPECIFIC, while the user is logged in: the type
            // is invalid, not "another user" (p11ha said
            // CKR_USER_ANOTHER_ALREADY_LOGGED_IN before its fix).
            "Login unknown user type",
            "C_Login",
            &[CKR_USER_TYPE_INVALID],
            move |c| ck!(C_Login(c.s, 7, pin(), 4)),
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
            "Login NULL PIN (protected path) after Logout",
            "C_Login",
            &[CKR_ARGUMENTS_BAD],
            |c| logged_out(c, || ck!(C_Login(c.s, CKU_USER, null_mut(), 0))),
        ),
        case(
            "Login NULL PIN with a length after Logout",
            "C_Login",
            &[CKR_ARGUMENTS_BAD],
            |c| logged_out(c, || ck!(C_Login(c.s, CKU_USER, null_mut(), 4))),
        ),
        case("Logout twice", "C_Logout", &[CKR_USER_NOT_LOGGED_IN], |c| {
            logged_out(c, || ck!(C_Logout(c.s)))
        }),
        // ---- objects ------------------------------------------------------
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
            "DestroyObject twice",
            "C_DestroyObject",
            &[CKR_OBJECT_HANDLE_INVALID],
            |c| {
                let o = data_object(c.s);
                assert_eq!(ck!(C_DestroyObject(c.s, o)), CKR_OK);
                ck!(C_DestroyObject(c.s, o))
            },
        ),
        case(
            "GetAttributeValue(NULL template, 0)",
            "C_GetAttributeValue",
            &[CKR_OK],
            |c| ck!(C_GetAttributeValue(c.s, c.aes, null_mut(), 0)),
        ),
        case(
            // An empty template (NULL, count 0): nothing to change.
            "SetAttributeValue(NULL template, 0)",
            "C_SetAttributeValue",
            &[CKR_OK],
            |c| ck!(C_SetAttributeValue(c.s, c.aes, null_mut(), 0)),
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
                    let max = u32::MAX as CK_ULONG;
                    let rv = ck!(C_FindObjects(s, o.as_mut_ptr(), max, &mut n));
                    assert!(n > 0 && n < 64, "found {n}");
                    rv
                })
            },
        ),
        // ---- random numbers, legacy, events -------------------------------
        case(
            // An empty seed: nothing to mix in.
            "SeedRandom(NULL, 0)",
            "C_SeedRandom",
            &[CKR_OK],
            |c| ck!(C_SeedRandom(c.s, null_mut(), 0)),
        ),
        case(
            // Zero bytes asked: nothing to write.
            "GenerateRandom(NULL, 0)",
            "C_GenerateRandom",
            &[CKR_OK],
            |c| ck!(C_GenerateRandom(c.s, null_mut(), 0)),
        ),
        // 11.16: legacy; a library "should" answer CKR_FUNCTION_NOT_PARALLEL.
        plain(
            "GetFunctionStatus",
            "C_GetFunctionStatus",
            CKR_FUNCTION_NOT_PARALLEL,
        ),
        plain(
            "CancelFunction",
            "C_CancelFunction",
            CKR_FUNCTION_NOT_PARALLEL,
        ),
        plain(
            "WaitForSlotEvent don't block",
            "C_WaitForSlotEvent",
            CKR_NO_EVENT,
        ),
        // ---- interfaces (3.0) ---------------------------------------------
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
            "GetInterface unknown name",
            "C_GetInterface",
            &[CKR_ARGUMENTS_BAD],
            |_| {
                let mut i = null_mut();
                let name = c"Vendor X".as_ptr() as *mut _;
                ck!(C_GetInterface(name, null_mut(), &mut i, 0))
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
        // ---- operations ---------------------------------------------------
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
            "DigestInit unknown mechanism",
            "C_DigestInit",
            &[CKR_MECHANISM_INVALID],
            |c| c.fresh(|s| ck!(C_DigestInit(s, &mut mech(0x7fff_0000)))),
        ),
        case(
            "GenerateKey unknown mechanism",
            "C_GenerateKey",
            &[CKR_MECHANISM_INVALID],
            |c| {
                let mut t = aes_template();
                let mut k = 0;
                let mut m = mech(0x7fff_0000);
                c.fresh(|s| ck!(C_GenerateKey(s, &mut m, t.as_mut_ptr(), 5, &mut k)))
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
                    let p = d.as_ptr() as *mut _;
                    let rv = ck!(C_Encrypt(s, p, 16, o.as_mut_ptr(), &mut n));
                    assert_eq!(n, 16);
                    rv
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
            "Verify a wrong ECDSA signature",
            "C_Verify",
            &[CKR_SIGNATURE_INVALID],
            |c| {
                c.fresh(|s| {
                    let rv = ck!(C_VerifyInit(s, &mut mech(CKM_ECDSA), c.ec_pub));
                    assert_eq!(rv, CKR_OK);
                    let d = [0u8; 32];
                    let sig = [1u8; 64];
                    let (d, sig) = (d.as_ptr() as *mut _, sig.as_ptr() as *mut _);
                    ck!(C_Verify(s, d, 32, sig, 64))
                })
            },
        ),
    ];
    // The shapes sign with RSA; an ECDSA signature's length query too.
    for incoming in INCOMING {
        let name = format!("Sign (ECDSA) length query, NULL buffer, *len {incoming:#x}");
        t.push(case(&name, "C_Sign", &[CKR_OK], move |c| {
            c.fresh(|s| {
                let rv = ck!(C_SignInit(s, &mut mech(CKM_ECDSA), c.ec_priv));
                assert_eq!(rv, CKR_OK);
                let d = [5u8; 32].as_ptr() as *mut u8;
                let mut n = incoming;
                let rv = ck!(C_Sign(s, d, 32, null_mut(), &mut n));
                if rv == CKR_OK {
                    assert!(n <= 4096, "the length query answered {n:#x}");
                    let mut buf = vec![0u8; n as usize + 1];
                    let rv = ck!(C_Sign(s, d, 32, buf.as_mut_ptr(), &mut n));
                    assert_eq!(rv, CKR_OK, "the call after the query");
                }
                rv
            })
        }));
    }
    // A buffer too small: the length needed, and the operation kept. Not
    // the CBC Finals: their last part is empty.
    for func in [
        "C_GetSlotList",
        "C_GetMechanismList",
        "C_GetInterfaceList",
        "C_Encrypt",
        "C_EncryptUpdate",
        "C_Decrypt",
        "C_DecryptUpdate",
        "C_Digest",
        "C_DigestFinal",
        "C_Sign",
        "C_SignFinal",
        "C_WrapKey",
    ] {
        t.push(too_small(func));
    }
    // An Init while its operation is active.
    for func in [
        "C_FindObjectsInit",
        "C_EncryptInit",
        "C_DecryptInit",
        "C_DigestInit",
        "C_SignInit",
        "C_VerifyInit",
    ] {
        t.push(twice(func, CKR_OK, CKR_OPERATION_ACTIVE));
    }
    // A single-part call or a Final ends its operation (5.8-5.12), a wrong
    // signature as a right one does.
    for (func, first) in [
        ("C_FindObjectsFinal", CKR_OK),
        ("C_Encrypt", CKR_OK),
        ("C_EncryptFinal", CKR_OK),
        ("C_Decrypt", CKR_OK),
        ("C_DecryptFinal", CKR_OK),
        ("C_Digest", CKR_OK),
        ("C_DigestFinal", CKR_OK),
        ("C_Sign", CKR_OK),
        ("C_SignFinal", CKR_OK),
        ("C_Verify", CKR_SIGNATURE_INVALID),
        ("C_VerifyFinal", CKR_SIGNATURE_INVALID),
    ] {
        t.push(twice(func, first, CKR_OPERATION_NOT_INITIALIZED));
    }
    t
}

// ---- huge counts -------------------------------------------------------------

/// The huge counts every count of the C interface is given: one p11ha
/// takes (2^16), one an application can really back with memory but p11ha
/// does not carry (2^32: 96 GiB of attributes, 4 GiB of data), and one no
/// buffer can have (2^63).
const HUGE: [(&str, CK_ULONG); 3] = [("2^16", 1 << 16), ("2^32", 1 << 32), ("2^63", 1 << 63)];

/// The most a call with a 2^32 or 2^63 count may take (issue 14: "in
/// microseconds"; 10 ms leaves room for a loaded machine, while walking
/// 2^32 entries or bytes takes seconds). A row over it fails.
const PROMPT: Duration = Duration::from_millis(10);

/// The bytes of the mappings: 2^32 `CK_ATTRIBUTE`s.
const MAPPED: usize = std::mem::size_of::<CK_ATTRIBUTE>() << 32;

thread_local! {
    /// Each huge-count call and how long it took, for the summary.
    static TIMES: RefCell<Vec<(String, Duration)>> = const { RefCell::new(Vec::new()) };
}

/// An anonymous private mapping of `bytes` zero pages that reserves no
/// memory (`MAP_NORESERVE`): a page costs memory only once written. Made
/// once, kept for the process (the library may hold nothing of it past a
/// call, but the rows share it). As an address, to be kept in a static.
fn map(bytes: usize, prot: libc::c_int) -> usize {
    // SAFETY: a new anonymous mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            bytes,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap {bytes:#x} bytes (vm.overcommit?)"
    );
    p as usize
}

/// Input: `MAPPED` bytes of zeros, read-only (a write by the library would
/// crash the test). Zeroed `CK_ATTRIBUTE`s are `CKA_CLASS` with no value.
fn zeros() -> *mut c_void {
    static ZEROS: OnceLock<usize> = OnceLock::new();
    *ZEROS.get_or_init(|| map(MAPPED, libc::PROT_READ)) as *mut c_void
}

/// Output: `MAPPED` writable bytes. Its first page is set by each row.
fn room() -> *mut c_void {
    static ROOM: OnceLock<usize> = OnceLock::new();
    *ROOM.get_or_init(|| map(MAPPED, libc::PROT_READ | libc::PROT_WRITE)) as *mut c_void
}

/// The last `bytes` (zeroed) of a writable page whose next page is
/// `PROT_NONE`: a buffer of `bytes` past which any read or write crashes
/// the test. For the 2^63 rows, whose count no memory can back.
fn guarded(bytes: usize) -> *mut c_void {
    const PAGE: usize = 4096;
    static GUARDED: OnceLock<usize> = OnceLock::new();
    let base = *GUARDED.get_or_init(|| {
        let p = map(2 * PAGE, libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: the second page of the mapping just made.
        let rv = unsafe { libc::mprotect((p + PAGE) as *mut c_void, PAGE, libc::PROT_NONE) };
        assert_eq!(rv, 0, "mprotect the guard page");
        p
    });
    assert!(bytes <= PAGE);
    // SAFETY: the first page of the mapping is writable and nothing else
    // refers to it between rows.
    unsafe { std::ptr::write_bytes(base as *mut u8, 0, PAGE) };
    (base + PAGE - bytes) as *mut c_void
}

/// What the room's first page is filled with before an output row, and
/// must still hold past what the call returned.
const CANARY: u8 = 0xa5;
const CANARY_BYTES: usize = 4096;

fn fill_canary() {
    // SAFETY: room() has MAPPED >= CANARY_BYTES writable bytes, used by
    // one row at a time.
    unsafe { std::ptr::write_bytes(room() as *mut u8, CANARY, CANARY_BYTES) };
}

/// Whether the room's first page still holds the canary from `from` on.
fn canary_intact(from: usize) -> bool {
    // SAFETY: as fill_canary.
    let page = unsafe { std::slice::from_raw_parts(room() as *const u8, CANARY_BYTES) };
    page.get(from..)
        .is_none_or(|rest| rest.iter().all(|&b| b == CANARY))
}

/// How a count argument is given its huge count.
#[derive(Clone, Copy, PartialEq)]
enum Count {
    /// Entries (of `elem` bytes) the library reads: backed by `zeros()`.
    Input,
    /// Room the library writes into: backed by `room()`, canary checked.
    Output,
    /// Entries written back into (`C_GetAttributeValue`'s template): the
    /// room, its first entries zeroed.
    InOut,
}

/// One count of one argument of `sh`: what it is, how it is changed, and
/// what the library must answer for each of [`HUGE`].
struct HugeArg {
    what: String,
    arg: usize,
    inner: bool,
    elem: usize,
    count: Count,
    /// The answers for 2^16, 2^32 and 2^63.
    want: [&'static [CK_RV]; 3],
}

const OK: &[CK_RV] = &[CKR_OK];
const HOST_MEMORY: &[CK_RV] = &[CKR_HOST_MEMORY];
const ARGS_BAD: &[CK_RV] = &[CKR_ARGUMENTS_BAD];

/// What p11ha answers an input (a template, its value, data, a parameter,
/// a PIN) of each huge count: 2^16 is within its bounds and goes to the
/// member (`member`: SoftHSM's answer), 2^32 is past them (`CKR_HOST_MEMORY`,
/// README "Huge counts"), 2^63 is more than any buffer (`CKR_ARGUMENTS_BAD`).
fn input(member: &'static [CK_RV]) -> [&'static [CK_RV]; 3] {
    [member, HOST_MEMORY, ARGS_BAD]
}

/// Every count `sh` takes.
fn huge_args(sh: &Shape) -> Vec<HugeArg> {
    const ATTR: usize = std::mem::size_of::<CK_ATTRIBUTE>();
    let mut v = Vec::new();
    for (arg, a) in sh.args.iter().enumerate() {
        let mut push = |what: String, inner, elem, count, want| {
            v.push(HugeArg {
                what,
                arg,
                inner,
                elem,
                count,
                want,
            })
        };
        match *a {
            Arg::In(name, _) | Arg::Pin(name, _) => {
                let want = input(member_answer(sh.func, name));
                push(format!("{name}'s length"), false, 1, Count::Input, want);
            }
            Arg::Array(name, elem, _) if sh.func == "C_FindObjects" => {
                // Any maximum is taken: p11ha writes only the handles found
                // (none here: a fresh session has no data objects).
                let what = format!("{name}'s ulMaxObjectCount");
                push(what, false, elem, Count::Output, [OK, OK, OK]);
            }
            Arg::Array(name, elem, _) => {
                // C_GenerateRandom: the bytes asked for are as many to
                // make, bounded as an input is.
                push(
                    format!("{name}'s length"),
                    false,
                    elem,
                    Count::Output,
                    input(OK),
                );
            }
            Arg::Template(name, _) => {
                let member = member_answer(sh.func, name);
                let what = format!("{name}'s ulCount");
                push(what, false, ATTR, Count::Input, input(member));
                let member = member_answer(sh.func, "value");
                let what = format!("{name}[0]'s ulValueLen");
                push(what, true, 1, Count::Input, input(member));
            }
            Arg::OutTemplate(name, _) => {
                // 2^16 CKA_CLASS with no buffer: each length asked for.
                let what = format!("{name}'s ulCount");
                push(what, false, ATTR, Count::InOut, input(OK));
                // Room for the value: only the value is written.
                let what = format!("{name}[0]'s ulValueLen");
                push(what, true, 1, Count::Output, [OK, OK, ARGS_BAD]);
            }
            Arg::Mech(_) => {
                let want = input(member_answer(sh.func, "pParameter"));
                push(
                    "pMechanism's ulParameterLen".into(),
                    true,
                    1,
                    Count::Input,
                    want,
                );
            }
            Arg::Out(name) => {
                // The call's own answer with room enough: OK, or what a
                // function SoftHSM lacks answers without an operation.
                let ok = match sh.needs {
                    Needs::Lacking(codes) => codes,
                    _ => OK,
                };
                push(
                    format!("*{name}Len"),
                    false,
                    1,
                    Count::Output,
                    [ok, ok, ARGS_BAD],
                );
            }
            Arg::List(name, elem) => {
                // A list writes each entry through the pointer and makes
                // no slice over the count, so C_GetInterfaceList takes any
                // count (P11HA_ALSO); the other lists refuse a count no
                // buffer can hold.
                let huge = if sh.func == "C_GetInterfaceList" {
                    OK
                } else {
                    ARGS_BAD
                };
                push(
                    format!("*{name}'s count"),
                    false,
                    elem,
                    Count::Output,
                    [OK, OK, huge],
                );
            }
            _ => {}
        }
    }
    v
}

/// What SoftHSM 2.6.1 (through p11ha, in WLD mode) answers the input
/// `name` of `func` given 2^16 zero entries or bytes, which p11ha passes
/// on. Zeroed attributes are `CKA_CLASS` without a value.
/// Each answer was checked against SoftHSM called directly with the same
/// arguments where it is not plain from the call (GENERAL_ERROR for 2^16
/// bytes of zeros to unwrap, ARGUMENTS_BAD for a parameter to AES key
/// wrap, which takes none). Where SoftHSM answers `CKR_ARGUMENTS_BAD`
/// itself, the row cannot tell it from a refusal by p11ha.
fn member_answer(func: &str, name: &str) -> &'static [CK_RV] {
    const LACKS: &[CK_RV] = &[CKR_OPERATION_NOT_INITIALIZED, CKR_FUNCTION_NOT_SUPPORTED];
    match (func, name) {
        // 5.6: C_InitPIN only in the "R/W SO Functions" state.
        ("C_InitPIN", _) => &[CKR_USER_NOT_LOGGED_IN],
        ("C_SetPIN" | "C_Login", "pOldPin" | "pPin") => &[CKR_PIN_INCORRECT],
        ("C_SetPIN", "pNewPin") => &[CKR_PIN_LEN_RANGE],
        // SoftHSM 2.6.1 has no state saving.
        ("C_SetOperationState", _) => &[CKR_FUNCTION_NOT_SUPPORTED],
        // 2^16 CKA_CLASS without a value: no class.
        ("C_CreateObject" | "C_GenerateKey" | "C_GenerateKeyPair", "pTemplate")
        | ("C_GenerateKeyPair", "pPublicKeyTemplate" | "pPrivateKeyTemplate")
        | ("C_UnwrapKey" | "C_DeriveKey", "pTemplate") => &[CKR_TEMPLATE_INCOMPLETE],
        // CKA_CLASS of 2^16 zero bytes: data objects need a class that
        // parses; AES key generation ignores it; the shape's EC key pair
        // has no CKA_EC_PARAMS anyway; unwrapping and ECDH fail first.
        ("C_CreateObject" | "C_GenerateKeyPair" | "C_UnwrapKey" | "C_DeriveKey", "value") => {
            &[CKR_TEMPLATE_INCOMPLETE]
        }
        ("C_GenerateKey", "value") => &[CKR_OK],
        // A class without a value, or one of 2^16 zero bytes.
        ("C_CopyObject", _) | ("C_SetAttributeValue", "pTemplate") => {
            &[CKR_ATTRIBUTE_VALUE_INVALID]
        }
        // A label of 2^16 zero bytes.
        ("C_SetAttributeValue", "value") => &[CKR_OK],
        ("C_FindObjectsInit", _) => &[CKR_OK],
        // CBC's IV must be 16 bytes (SoftHSM 2.6.1 answers
        // MECHANISM_INVALID, called directly too); ECDH's parameter
        // structure is not 2^16 bytes; AES key wrap takes no parameter;
        // SHA-256, RSA and AES key generation ignore one.
        ("C_EncryptInit" | "C_DecryptInit", "pParameter") => &[CKR_MECHANISM_INVALID],
        ("C_DeriveKey", "pParameter") => &[CKR_MECHANISM_PARAM_INVALID],
        ("C_WrapKey" | "C_UnwrapKey", "pParameter") => &[CKR_ARGUMENTS_BAD],
        ("C_GenerateKeyPair", "pParameter") => &[CKR_TEMPLATE_INCOMPLETE],
        ("C_DigestInit" | "C_SignInit" | "C_VerifyInit" | "C_GenerateKey", "pParameter") => {
            &[CKR_OK]
        }
        ("C_SignRecoverInit" | "C_VerifyRecoverInit", "pParameter") => {
            &[CKR_FUNCTION_NOT_SUPPORTED]
        }
        // 2^16 bytes of AES-CBC output do not fit the shape's 4 KiB.
        ("C_Encrypt" | "C_EncryptUpdate" | "C_Decrypt" | "C_DecryptUpdate", _) => {
            &[CKR_BUFFER_TOO_SMALL]
        }
        ("C_Digest" | "C_DigestUpdate" | "C_Sign" | "C_SignUpdate" | "C_VerifyUpdate", _) => {
            &[CKR_OK]
        }
        // Zeros are no signature of anything, nor 2^16 bytes one of a
        // 2048-bit key.
        ("C_Verify", "pData") => &[CKR_SIGNATURE_INVALID],
        ("C_Verify" | "C_VerifyFinal", "pSignature") => &[CKR_SIGNATURE_LEN_RANGE],
        (
            "C_SignRecover"
            | "C_VerifyRecover"
            | "C_DigestEncryptUpdate"
            | "C_DecryptDigestUpdate"
            | "C_SignEncryptUpdate"
            | "C_DecryptVerifyUpdate",
            _,
        ) => LACKS,
        // SoftHSM 2.6.1 answers 2^16 zero bytes to unwrap so.
        ("C_UnwrapKey", "pWrappedKey") => &[CKR_GENERAL_ERROR],
        ("C_SeedRandom", _) => &[CKR_OK],
        // C_InitToken: CKR_SESSION_EXISTS (the shape's `or`).
        _ => &[],
    }
}

/// `C_FindObjects` with two session objects to find and a maximum of 2^32
/// (room backed) or 2^63 (two handles' room before a guard page): both
/// found, and nothing written past them.
fn huge_find_rows() -> Vec<Case> {
    const ULONG: usize = std::mem::size_of::<CK_ULONG>();
    [(1u64 << 32) as CK_ULONG, 1 << 63]
        .into_iter()
        .map(|max| {
            let name = format!("C_FindObjects: 2 found, ulMaxObjectCount {max:#x}");
            let row_name = name.clone();
            case(&name, "C_FindObjects", &[CKR_OK], move |c| {
                prompt(&row_name, true, |took_out| {
                    c.fresh(|s| {
                        let made = [data_object(s), data_object(s)];
                        let mut t = data_template();
                        assert_eq!(ck!(C_FindObjectsInit(s, t.as_mut_ptr(), 2)), CKR_OK);
                        let backed = max as usize <= MAPPED / ULONG;
                        let p = if backed {
                            fill_canary();
                            room()
                        } else {
                            guarded(2 * ULONG)
                        } as *mut CK_OBJECT_HANDLE;
                        let mut n = 0;
                        let start = Instant::now();
                        let rv = ck!(C_FindObjects(s, p, max, &mut n));
                        took_out.set(start.elapsed());
                        assert_eq!(n, 2, "{row_name}: both found");
                        // SAFETY: p has room for 2 handles, both written.
                        let mut found = unsafe { [p.read(), p.add(1).read()] };
                        found.sort_unstable();
                        let mut made = made;
                        made.sort_unstable();
                        assert_eq!(found, made, "{row_name}: the handles");
                        if backed {
                            assert!(canary_intact(2 * ULONG), "{row_name}: written past 2");
                        }
                        assert_eq!(ck!(C_FindObjectsFinal(s)), CKR_OK);
                        rv
                    })
                })
            })
        })
        .collect()
}

/// The huge-count rows of every function: each count the C interface
/// takes, at 2^16, 2^32 and 2^63, backed by real (unreserved) memory where
/// a buffer of that size can exist and by a small buffer before a guard
/// page where none can. A 2^32 or 2^63 row also fails if the call took
/// [`PROMPT`] or more; an output row if anything past what the call
/// returned was written.
fn huge_rows(sh: &'static Shape) -> Vec<Case> {
    let mut rows = Vec::new();
    for h in huge_args(sh) {
        for (i, (label, n)) in HUGE.into_iter().enumerate() {
            let name = format!("{}: {} {label}", sh.func, h.what);
            let want: Vec<CK_RV> = h.want[i].iter().copied().chain(sh.or).collect();
            let (arg, inner, elem, count) = (h.arg, h.inner, h.elem, h.count);
            let row_name = name.clone();
            rows.push(case(&name, sh.func, &want, move |c| {
                // 2^16 rows are timed for the report, not bounded: they
                // are passed to the member, which takes its time.
                prompt(&row_name, n > 1 << 16, |took| {
                    sh.within(c, |c, s| {
                        let backed = n as usize <= MAPPED / elem;
                        let p = match count {
                            _ if !backed => guarded(elem),
                            Count::Input => zeros(),
                            Count::Output => {
                                fill_canary();
                                room()
                            }
                            Count::InOut => {
                                let entries = (n as usize).min(1 << 16) * elem;
                                // SAFETY: room() has MAPPED >= entries bytes.
                                unsafe { std::ptr::write_bytes(room() as *mut u8, 0, entries) };
                                room()
                            }
                        };
                        let change = Change::At { p, len: n, inner };
                        let a = sh.call(c, s, Some((arg, change)));
                        took.set(a.took);
                        if count == Count::InOut && n == 1 << 16 && a.rv == CKR_OK {
                            // Each CKA_CLASS's length written back: the last
                            // entry too, so every entry was answered.
                            let t = room() as *const CK_ATTRIBUTE;
                            for i in [0, (1 << 16) - 1] {
                                // SAFETY: room() holds 2^16 attributes here.
                                let a = unsafe { t.add(i).read() };
                                assert_eq!(a.ulValueLen, 8, "{row_name}: entry {i}'s length");
                            }
                        }
                        if let (Count::Output, true, CKR_OK, Some(len)) =
                            (count, backed, a.rv, a.len)
                        {
                            let written = len as usize * elem;
                            assert!(
                                canary_intact(written),
                                "{row_name}: written past the {written} bytes returned"
                            );
                        }
                        a.rv
                    })
                })
            }));
        }
    }
    rows
}

/// Runs `attempt` (which sets how long its huge-count call took), and, if
/// `bounded`, once more if that was [`PROMPT`] or more; fails if both
/// were. The call includes what PKCS#11 asks after a refusal (p11ha ends
/// the member's operation: an RSA-2048 signature for `C_Sign`, under
/// 1 ms), and two cores shared by several builds can stall one call; a
/// walk of 2^32 entries takes seconds every time.
fn prompt(name: &str, bounded: bool, attempt: impl Fn(&Cell<Duration>) -> CK_RV) -> CK_RV {
    let took = Cell::new(Duration::ZERO);
    let mut rv = attempt(&took);
    if !bounded {
        TIMES.with(|t| t.borrow_mut().push((name.to_string(), took.get())));
        return rv;
    }
    if took.get() >= PROMPT {
        let first = took.get();
        rv = attempt(&took);
        println!("{name}: {first:?}, then {:?}", took.get());
    }
    TIMES.with(|t| t.borrow_mut().push((name.to_string(), took.get())));
    assert!(
        took.get() < PROMPT,
        "{name} took {:?} twice, {PROMPT:?} at most",
        took.get()
    );
    rv
}

// ---- the run ----------------------------------------------------------------

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
    let aes = find(s, CKO_SECRET_KEY, "aes-key");
    Ctx {
        slot,
        s,
        closed,
        stale,
        ec_priv: find(s, CKO_PRIVATE_KEY, "ec-key"),
        ec_pub: find(s, CKO_PUBLIC_KEY, "ec-key"),
        aes,
        rsa_priv: find(s, CKO_PRIVATE_KEY, "rsa-key"),
        rsa_pub: find(s, CKO_PUBLIC_KEY, "rsa-key"),
        destroyed,
        orphaned,
        made: aes,
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
    let described: Vec<&str> = shapes().iter().map(|s| s.func).collect();
    assert_eq!(described, FUNCTIONS, "one shape per function, in order");
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
    cases += run(&ctx, hand_rows(), &mut bad, &mut covered);
    cases += run(&ctx, generated_rows(), &mut bad, &mut covered);
    cases += run(&ctx, huge_find_rows(), &mut bad, &mut covered);
    TIMES.with(|t| {
        let t = t.borrow();
        let slowest = |huge: bool| {
            t.iter()
                .filter(|(name, _)| name.contains("2^16") != huge)
                .max_by_key(|(_, d)| *d)
                .map(|(name, d)| format!("{d:?} ({name})"))
                .unwrap_or_default()
        };
        if std::env::var_os("ABI_TABLE_TIMES").is_some() {
            for (name, d) in t.iter() {
                println!("{d:>12.3?} {name}");
            }
        }
        println!(
            "huge counts: {} calls; slowest 2^32/2^63: {}; slowest 2^16: {}",
            t.len(),
            slowest(true),
            slowest(false)
        );
    });

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
