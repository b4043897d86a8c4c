//! The C ABI: the 68 PKCS#11 v2.40 functions, `C_GetFunctionList`, and
//! PKCS#11 3.0's `C_GetInterfaceList` and `C_GetInterface`.
//!
//! Each export is a one-line shim: it hands its arguments, as they are, to
//! the function of the same name in [`crate::calls`] inside [`shim`], which
//! catches panics (answered `CKR_GENERAL_ERROR`, so no unwinding crosses
//! into C) and maps the one error type to a `CK_RV`.
//!
//! Buffer rules, for every function that returns bytes or a list (the
//! PKCS#11 convention): a NULL buffer asks for the length, which is written
//! to the length argument, and the operation goes on; a buffer too small
//! gets `CKR_BUFFER_TOO_SMALL` with the needed length written first, and the
//! operation goes on. Ownership: p11ha keeps no pointer the application
//! passes beyond the call; the function list and interface that
//! `C_GetFunctionList` and `C_GetInterface*` return are static and must not
//! be written.
#![allow(non_snake_case)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use cryptoki_sys::*;
use p11ha_adapters::sys::to_ulong_lossy;
use p11ha_core::Result;
use p11ha_core::ck::Rv;
use p11ha_core::port::{DualOp, Op};

use crate::args::Contract;
use crate::calls;
use crate::types::{P11HA_MEMBER_INFO, VERSION_2_40};

/// Runs one call's body: panics become `CKR_GENERAL_ERROR`, errors their
/// `CK_RV`.
fn shim(f: impl FnOnce() -> Result<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => to_ulong_lossy(e.rv().0),
        Err(_) => CKR_GENERAL_ERROR,
    }
}

macro_rules! exports {
    (
        |$c:ident|
        list { $( $(#[$ldoc:meta])* fn $lname:ident ( $($larg:ident : $lty:ty),* $(,)? ) => $lbody:expr; )* }
        extra { $( $(#[$xdoc:meta])* fn $xname:ident ( $($xarg:ident : $xty:ty),* $(,)? ) => $xbody:expr; )* }
    ) => {
        $( export!($c, $(#[$ldoc])* fn $lname($($larg: $lty),*) => $lbody); )*
        $( export!($c, $(#[$xdoc])* fn $xname($($xarg: $xty),*) => $xbody); )*

        /// The function list `C_GetFunctionList` and the interface hand out:
        /// every function of the `list` above.
        pub static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
            version: VERSION_2_40,
            $( $lname: Some($lname), )*
        };
    };
}

/// One exported function: a shim that asserts the call's PKCS#11 contract
/// once and hands the arguments, as they are, to its body.
macro_rules! export {
    ($c:ident, $(#[$doc:meta])* fn $name:ident ( $($arg:ident : $ty:ty),* ) => $body:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The arguments are as PKCS#11 defines them for this function:
        /// each pointer NULL where allowed, or valid for the length given,
        /// for the duration of the call.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            shim(|| {
                // SAFETY: this is the exported function itself, whose caller
                // passed its arguments as PKCS#11 defines them; the contract
                // is handed this call's arguments only, and ends with it.
                let $c = unsafe { Contract::assume() };
                $body
            })
        }
    };
}

exports! {
    |c|
    // The functions of PKCS#11 v2.40's CK_FUNCTION_LIST, which is built from
    // this list (FUNCTION_LIST).
    list {
        /// Initialises the library. `pInitArgs`: NULL or a `CK_C_INITIALIZE_ARGS`
        /// read during the call only; mutex callbacks given without
        /// `CKF_OS_LOCKING_OK` are used for all of p11ha's locking.
        fn C_Initialize(pInitArgs: *mut c_void) => calls::initialize(c, pInitArgs);
        /// Closes every session and unloads the members. `pReserved` must be NULL.
        fn C_Finalize(pReserved: *mut c_void) => calls::finalize(c, pReserved);
        /// Writes the library's information to `*pInfo`.
        fn C_GetInfo(pInfo: *mut CK_INFO) => calls::get_info(c, pInfo);
        /// Lists slot ids (buffer rules above; `*pulCount` in/out).
        fn C_GetSlotList(tokenPresent: CK_BBOOL, pSlotList: *mut CK_SLOT_ID, pulCount: *mut CK_ULONG)
            => calls::get_slot_list(c, tokenPresent, pSlotList, pulCount);
        /// Writes a slot's information to `*pInfo`.
        fn C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_SLOT_INFO)
            => calls::get_slot_info(c, slotID, pInfo);
        /// Writes a token's information to `*pInfo`.
        fn C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_TOKEN_INFO)
            => calls::get_token_info(c, slotID, pInfo);
        /// Lists mechanisms (buffer rules above).
        fn C_GetMechanismList(slotID: CK_SLOT_ID, pMechanismList: *mut CK_MECHANISM_TYPE, pulCount: *mut CK_ULONG)
            => calls::get_mechanism_list(c, slotID, pMechanismList, pulCount);
        /// Writes a mechanism's information to `*pInfo`.
        fn C_GetMechanismInfo(slotID: CK_SLOT_ID, type_: CK_MECHANISM_TYPE, pInfo: *mut CK_MECHANISM_INFO)
            => calls::get_mechanism_info(c, slotID, type_, pInfo);
        /// Initialises a token (NORMAL mode only). `pLabel`: 32 bytes.
        fn C_InitToken(slotID: CK_SLOT_ID, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG, pLabel: *mut CK_UTF8CHAR)
            => calls::init_token(c, slotID, pPin, ulPinLen, pLabel);
        /// Sets the user PIN (on every member in WLD and HA mode).
        fn C_InitPIN(hSession: CK_SESSION_HANDLE, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG)
            => calls::init_pin(c, hSession, pPin, ulPinLen);
        /// Changes a PIN (on every member in WLD and HA mode).
        fn C_SetPIN(hSession: CK_SESSION_HANDLE, pOldPin: *mut CK_UTF8CHAR, ulOldLen: CK_ULONG, pNewPin: *mut CK_UTF8CHAR, ulNewLen: CK_ULONG)
            => calls::set_pin(c, hSession, pOldPin, ulOldLen, pNewPin, ulNewLen);
        /// Opens a session. Notification callbacks are accepted and never called.
        fn C_OpenSession(slotID: CK_SLOT_ID, flags: CK_FLAGS, pApplication: *mut c_void, Notify: CK_NOTIFY, phSession: *mut CK_SESSION_HANDLE)
            => calls::open_session(c, slotID, flags, pApplication, Notify, phSession);
        /// Closes a session.
        fn C_CloseSession(hSession: CK_SESSION_HANDLE) => calls::close_session(c, hSession);
        /// Closes every session of a slot.
        fn C_CloseAllSessions(slotID: CK_SLOT_ID) => calls::close_all_sessions(c, slotID);
        /// Writes a session's information to `*pInfo`.
        fn C_GetSessionInfo(hSession: CK_SESSION_HANDLE, pInfo: *mut CK_SESSION_INFO)
            => calls::get_session_info(c, hSession, pInfo);
        /// Saves the operation state (buffer rules above).
        fn C_GetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: *mut CK_BYTE, pulOperationStateLen: *mut CK_ULONG)
            => calls::get_operation_state(c, hSession, pOperationState, pulOperationStateLen);
        /// Restores an operation state.
        fn C_SetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: *mut CK_BYTE, ulOperationStateLen: CK_ULONG, hEncryptionKey: CK_OBJECT_HANDLE, hAuthenticationKey: CK_OBJECT_HANDLE)
            => calls::set_operation_state(c, hSession, pOperationState, ulOperationStateLen, hEncryptionKey, hAuthenticationKey);
        /// Logs in. `pPin` NULL: protected authentication path.
        fn C_Login(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG)
            => calls::login(c, hSession, userType, pPin, ulPinLen);
        /// Logs out.
        fn C_Logout(hSession: CK_SESSION_HANDLE) => calls::logout(c, hSession);
        /// Creates an object; its handle goes to `*phObject`.
        fn C_CreateObject(hSession: CK_SESSION_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG, phObject: *mut CK_OBJECT_HANDLE)
            => calls::create_object(c, hSession, pTemplate, ulCount, phObject);
        /// Copies an object; the new handle goes to `*phNewObject`.
        fn C_CopyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG, phNewObject: *mut CK_OBJECT_HANDLE)
            => calls::copy_object(c, hSession, hObject, pTemplate, ulCount, phNewObject);
        /// Destroys an object.
        fn C_DestroyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE)
            => calls::destroy_object(c, hSession, hObject);
        /// Writes an object's size to `*pulSize`.
        fn C_GetObjectSize(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pulSize: *mut CK_ULONG)
            => calls::get_object_size(c, hSession, hObject, pulSize);
        /// Reads attributes: each `pValue` NULL asks for its length; every
        /// `ulValueLen` is written, `CK_UNAVAILABLE_INFORMATION` where PKCS#11
        /// says.
        fn C_GetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG)
            => calls::get_attribute_value(c, hSession, hObject, pTemplate, ulCount);
        /// Changes attributes.
        fn C_SetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG)
            => calls::set_attribute_value(c, hSession, hObject, pTemplate, ulCount);
        /// Starts a search.
        fn C_FindObjectsInit(hSession: CK_SESSION_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG)
            => calls::find_objects_init(c, hSession, pTemplate, ulCount);
        /// Continues a search: up to `ulMaxObjectCount` handles (at most 1024 per
        /// call) into `phObject`, their number into `*pulObjectCount`.
        fn C_FindObjects(hSession: CK_SESSION_HANDLE, phObject: *mut CK_OBJECT_HANDLE, ulMaxObjectCount: CK_ULONG, pulObjectCount: *mut CK_ULONG)
            => calls::find_objects(c, hSession, phObject, ulMaxObjectCount, pulObjectCount);
        /// Ends a search.
        fn C_FindObjectsFinal(hSession: CK_SESSION_HANDLE) => calls::find_objects_final(c, hSession);
        /// Starts an encryption.
        fn C_EncryptInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE)
            => calls::op_init(c, hSession, Op::Encrypt, pMechanism, hKey);
        /// Encrypts in one part (buffer rules above; input and output may overlap).
        fn C_Encrypt(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pEncryptedData: *mut CK_BYTE, pulEncryptedDataLen: *mut CK_ULONG)
            => calls::op_single(c, hSession, Op::Encrypt, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen);
        /// Encrypts a part (buffer rules above).
        fn C_EncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG, pEncryptedPart: *mut CK_BYTE, pulEncryptedPartLen: *mut CK_ULONG)
            => calls::op_update_out(c, hSession, Op::Encrypt, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen);
        /// Ends an encryption (buffer rules above).
        fn C_EncryptFinal(hSession: CK_SESSION_HANDLE, pLastEncryptedPart: *mut CK_BYTE, pulLastEncryptedPartLen: *mut CK_ULONG)
            => calls::op_final(c, hSession, Op::Encrypt, pLastEncryptedPart, pulLastEncryptedPartLen);
        /// Starts a decryption.
        fn C_DecryptInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE)
            => calls::op_init(c, hSession, Op::Decrypt, pMechanism, hKey);
        /// Decrypts in one part (buffer rules above).
        fn C_Decrypt(hSession: CK_SESSION_HANDLE, pEncryptedData: *mut CK_BYTE, ulEncryptedDataLen: CK_ULONG, pData: *mut CK_BYTE, pulDataLen: *mut CK_ULONG)
            => calls::op_single(c, hSession, Op::Decrypt, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen);
        /// Decrypts a part (buffer rules above).
        fn C_DecryptUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: *mut CK_BYTE, ulEncryptedPartLen: CK_ULONG, pPart: *mut CK_BYTE, pulPartLen: *mut CK_ULONG)
            => calls::op_update_out(c, hSession, Op::Decrypt, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen);
        /// Ends a decryption (buffer rules above).
        fn C_DecryptFinal(hSession: CK_SESSION_HANDLE, pLastPart: *mut CK_BYTE, pulLastPartLen: *mut CK_ULONG)
            => calls::op_final(c, hSession, Op::Decrypt, pLastPart, pulLastPartLen);
        /// Starts a digest.
        fn C_DigestInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM)
            => calls::op_init(c, hSession, Op::Digest, pMechanism, 0);
        /// Digests in one part (buffer rules above).
        fn C_Digest(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pDigest: *mut CK_BYTE, pulDigestLen: *mut CK_ULONG)
            => calls::op_single(c, hSession, Op::Digest, pData, ulDataLen, pDigest, pulDigestLen);
        /// Digests a part.
        fn C_DigestUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG)
            => calls::op_update(c, hSession, Op::Digest, pPart, ulPartLen);
        /// Digests a key's value.
        fn C_DigestKey(hSession: CK_SESSION_HANDLE, hKey: CK_OBJECT_HANDLE) => calls::digest_key(c, hSession, hKey);
        /// Ends a digest (buffer rules above).
        fn C_DigestFinal(hSession: CK_SESSION_HANDLE, pDigest: *mut CK_BYTE, pulDigestLen: *mut CK_ULONG)
            => calls::op_final(c, hSession, Op::Digest, pDigest, pulDigestLen);
        /// Starts a signature.
        fn C_SignInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE)
            => calls::op_init(c, hSession, Op::Sign, pMechanism, hKey);
        /// Signs in one part (buffer rules above).
        fn C_Sign(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, pulSignatureLen: *mut CK_ULONG)
            => calls::op_single(c, hSession, Op::Sign, pData, ulDataLen, pSignature, pulSignatureLen);
        /// Signs a part.
        fn C_SignUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG)
            => calls::op_update(c, hSession, Op::Sign, pPart, ulPartLen);
        /// Ends a signature (buffer rules above).
        fn C_SignFinal(hSession: CK_SESSION_HANDLE, pSignature: *mut CK_BYTE, pulSignatureLen: *mut CK_ULONG)
            => calls::op_final(c, hSession, Op::Sign, pSignature, pulSignatureLen);
        /// Starts a signature with recovery.
        fn C_SignRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE)
            => calls::op_init(c, hSession, Op::SignRecover, pMechanism, hKey);
        /// Signs with recovery (buffer rules above).
        fn C_SignRecover(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, pulSignatureLen: *mut CK_ULONG)
            => calls::op_single(c, hSession, Op::SignRecover, pData, ulDataLen, pSignature, pulSignatureLen);
        /// Starts a verification.
        fn C_VerifyInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE)
            => calls::op_init(c, hSession, Op::Verify, pMechanism, hKey);
        /// Verifies in one part.
        fn C_Verify(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG)
            => calls::verify(c, hSession, pData, ulDataLen, pSignature, ulSignatureLen);
        /// Verifies a part.
        fn C_VerifyUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG)
            => calls::op_update(c, hSession, Op::Verify, pPart, ulPartLen);
        /// Ends a verification.
        fn C_VerifyFinal(hSession: CK_SESSION_HANDLE, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG)
            => calls::verify_final(c, hSession, pSignature, ulSignatureLen);
        /// Starts a verification with recovery.
        fn C_VerifyRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE)
            => calls::op_init(c, hSession, Op::VerifyRecover, pMechanism, hKey);
        /// Verifies with recovery (buffer rules above).
        fn C_VerifyRecover(hSession: CK_SESSION_HANDLE, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG, pData: *mut CK_BYTE, pulDataLen: *mut CK_ULONG)
            => calls::op_single(c, hSession, Op::VerifyRecover, pSignature, ulSignatureLen, pData, pulDataLen);
        /// Digests and encrypts a part (buffer rules above).
        fn C_DigestEncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG, pEncryptedPart: *mut CK_BYTE, pulEncryptedPartLen: *mut CK_ULONG)
            => calls::dual_update(c, hSession, DualOp::DigestEncrypt, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen);
        /// Decrypts and digests a part (buffer rules above).
        fn C_DecryptDigestUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: *mut CK_BYTE, ulEncryptedPartLen: CK_ULONG, pPart: *mut CK_BYTE, pulPartLen: *mut CK_ULONG)
            => calls::dual_update(c, hSession, DualOp::DecryptDigest, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen);
        /// Signs and encrypts a part (buffer rules above).
        fn C_SignEncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG, pEncryptedPart: *mut CK_BYTE, pulEncryptedPartLen: *mut CK_ULONG)
            => calls::dual_update(c, hSession, DualOp::SignEncrypt, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen);
        /// Decrypts and verifies a part (buffer rules above).
        fn C_DecryptVerifyUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: *mut CK_BYTE, ulEncryptedPartLen: CK_ULONG, pPart: *mut CK_BYTE, pulPartLen: *mut CK_ULONG)
            => calls::dual_update(c, hSession, DualOp::DecryptVerify, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen);
        /// Generates a secret key; its handle goes to `*phKey`.
        fn C_GenerateKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG, phKey: *mut CK_OBJECT_HANDLE)
            => calls::generate_key(c, hSession, pMechanism, pTemplate, ulCount, phKey);
        /// Generates a key pair; the handles go to `*phPublicKey`, `*phPrivateKey`.
        fn C_GenerateKeyPair(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, pPublicKeyTemplate: *mut CK_ATTRIBUTE, ulPublicKeyAttributeCount: CK_ULONG, pPrivateKeyTemplate: *mut CK_ATTRIBUTE, ulPrivateKeyAttributeCount: CK_ULONG, phPublicKey: *mut CK_OBJECT_HANDLE, phPrivateKey: *mut CK_OBJECT_HANDLE)
            => calls::generate_key_pair(c, hSession, pMechanism, pPublicKeyTemplate, ulPublicKeyAttributeCount, pPrivateKeyTemplate, ulPrivateKeyAttributeCount, phPublicKey, phPrivateKey);
        /// Wraps a key (buffer rules above).
        fn C_WrapKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hWrappingKey: CK_OBJECT_HANDLE, hKey: CK_OBJECT_HANDLE, pWrappedKey: *mut CK_BYTE, pulWrappedKeyLen: *mut CK_ULONG)
            => calls::wrap_key(c, hSession, pMechanism, hWrappingKey, hKey, pWrappedKey, pulWrappedKeyLen);
        /// Unwraps a key; its handle goes to `*phKey`.
        fn C_UnwrapKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hUnwrappingKey: CK_OBJECT_HANDLE, pWrappedKey: *mut CK_BYTE, ulWrappedKeyLen: CK_ULONG, pTemplate: *mut CK_ATTRIBUTE, ulAttributeCount: CK_ULONG, phKey: *mut CK_OBJECT_HANDLE)
            => calls::unwrap_key(c, hSession, pMechanism, hUnwrappingKey, pWrappedKey, ulWrappedKeyLen, pTemplate, ulAttributeCount, phKey);
        /// Derives a key; its handle goes to `*phKey`.
        fn C_DeriveKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hBaseKey: CK_OBJECT_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulAttributeCount: CK_ULONG, phKey: *mut CK_OBJECT_HANDLE)
            => calls::derive_key(c, hSession, pMechanism, hBaseKey, pTemplate, ulAttributeCount, phKey);
        /// Mixes seed material into the member's generator.
        fn C_SeedRandom(hSession: CK_SESSION_HANDLE, pSeed: *mut CK_BYTE, ulSeedLen: CK_ULONG)
            => calls::seed_random(c, hSession, pSeed, ulSeedLen);
        /// Fills `pRandomData` with `ulRandomLen` random bytes.
        fn C_GenerateRandom(hSession: CK_SESSION_HANDLE, pRandomData: *mut CK_BYTE, ulRandomLen: CK_ULONG)
            => calls::generate_random(c, hSession, pRandomData, ulRandomLen);
        /// Legacy; answered by the member.
        fn C_GetFunctionStatus(hSession: CK_SESSION_HANDLE) => calls::get_function_status(c, hSession);
        /// Legacy; answered by the member.
        fn C_CancelFunction(hSession: CK_SESSION_HANDLE) => calls::cancel_function(c, hSession);
        /// p11ha reports no slot events: `CKR_NO_EVENT` with `CKF_DONT_BLOCK`,
        /// `CKR_FUNCTION_NOT_SUPPORTED` for a blocking wait.
        fn C_WaitForSlotEvent(flags: CK_FLAGS, pSlot: *mut CK_SLOT_ID, pReserved: *mut c_void)
            => calls::wait_for_slot_event(c, flags, pSlot, pReserved);
        /// Writes a pointer to the static 2.40 function list to `*ppFunctionList`.
        fn C_GetFunctionList(ppFunctionList: *mut *mut CK_FUNCTION_LIST) => get_function_list(c, ppFunctionList);
    }
    // PKCS#11 3.0's interface functions, and p11ha's extensions.
    extra {
        /// Lists the one interface, "PKCS 11" 2.40 (buffer rules above, counted
        /// in `CK_INTERFACE`s).
        fn C_GetInterfaceList(pInterfacesList: *mut CK_INTERFACE, pulCount: *mut CK_ULONG)
            => get_interface_list(c, pInterfacesList, pulCount);
        /// p11ha extension: what member `index` (zero-based, as the HA log counts
        /// them) is. `CKR_ARGUMENTS_BAD` past the last member.
        fn P11HA_GetMemberInfo(index: CK_ULONG, pInfo: *mut P11HA_MEMBER_INFO)
            => calls::get_member_info(c, index, pInfo);
        /// p11ha extension: the index of the member that serves a session.
        fn P11HA_GetSessionMember(hSession: CK_SESSION_HANDLE, pulIndex: *mut CK_ULONG)
            => calls::get_session_member(c, hSession, pulIndex);
        /// p11ha extension, for tests, in the build with the
        /// `fault-injection` feature only: arms member `index`'s fault plan
        /// with a command (`heal`, `down[:RV]`, `after:N[:RV]`,
        /// `on:CALL[:N[:RV]]`, see the fault adapter).
        /// `CKR_FUNCTION_NOT_SUPPORTED` unless the library was initialised
        /// with `P11HA_FAULT_INJECTION=YES`.
        #[cfg(feature = "fault-injection")]
        fn P11HA_InjectFault(index: CK_ULONG, pCommand: *const std::ffi::c_char)
            => calls::inject_fault(c, index, pCommand);
        /// Finds the interface "PKCS 11" (a NULL name or version matches it);
        /// writes a pointer to the static interface to `*ppInterface`.
        fn C_GetInterface(pInterfaceName: *mut CK_UTF8CHAR, pVersion: *mut CK_VERSION, ppInterface: *mut *mut CK_INTERFACE, flags: CK_FLAGS)
            => get_interface(c, pInterfaceName, pVersion, ppInterface, flags);
    }
}

/// `CK_INTERFACE` holds raw pointers, which are not `Sync`; these point at
/// immutable statics.
struct Interface(CK_INTERFACE);

// SAFETY: the pointers inside point at 'static immutable data (a string
// literal and FUNCTION_LIST); nothing writes through them.
unsafe impl Sync for Interface {}

static INTERFACE_NAME: &[u8] = b"PKCS 11\0";

static INTERFACE: Interface = Interface(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
    pFunctionList: &raw const FUNCTION_LIST as *mut c_void,
    flags: 0,
});

fn get_function_list(c: Contract<'_>, pp: *mut *mut CK_FUNCTION_LIST) -> Result<()> {
    *c.out(pp)? = &raw const FUNCTION_LIST as *mut CK_FUNCTION_LIST;
    Ok(())
}

fn get_interface_list(
    c: Contract<'_>,
    list: *mut CK_INTERFACE,
    count: *mut CK_ULONG,
) -> Result<()> {
    c.list_of(list, count, &[INTERFACE.0])
}

fn get_interface(
    c: Contract<'_>,
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    pp: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> Result<()> {
    let pp = c.out(pp)?;
    let name_ok = c
        .c_str(name as *const std::ffi::c_char)
        .is_none_or(|n| n.to_bytes() == b"PKCS 11");
    let version_ok = c
        .optional_ref(version)
        .is_none_or(|v| v.major == VERSION_2_40.major && v.minor == VERSION_2_40.minor);
    // Our interface has no flags: a request for any is not met.
    if !name_ok || !version_ok || flags != 0 {
        return Err(p11ha_core::Error::Rv(Rv::ARGUMENTS_BAD));
    }
    *pp = &raw const INTERFACE.0 as *mut CK_INTERFACE;
    Ok(())
}
