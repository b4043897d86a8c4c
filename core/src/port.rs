//! What the core needs from outside, as traits.
//!
//! The core never calls libc, dlopen, a socket or a clock. A platform hands
//! it members ([`Member`]: one slot of one HSM, reached however the adapter
//! reaches it), a lock ([`RawLock`]: OS locking, the application's mutex
//! callbacks, or a spin lock on a single-core board), a sink for events
//! ([`Events`]) and the storage for its tables ([`Platform::Store`]).
//!
//! Arguments are borrowed and outputs are caller-provided buffers, so that
//! no call needs an allocation. Handles are the member's own (real) ones.

use crate::ck::ParamKind;
use crate::error::Result;
use crate::event::Event;

/// The types a platform supplies to the engine.
pub trait Platform: 'static {
    /// One slot of one HSM.
    type Member: Member;
    /// The lock held across member calls on one session (see [`RawLock`]).
    type Lock: RawLock;
    /// Where events go.
    type Events: Events;
    /// Monotonic time, for the recovery schedule.
    type Clock: Clock;
    /// One session's journal buffer (HA mode): a host hands out chunks of
    /// one lazily committed arena, a firmware `&'static mut [u8]`.
    type Journal: core::ops::DerefMut<Target = [u8]> + Send + Sync + 'static;
    /// Storage for the engine's fixed-capacity tables. A host uses
    /// `Box<[T]>`, allocated once at `C_Initialize`; a firmware uses
    /// `&'static mut [T]` carved out of statics. The capacity of each table
    /// is the length of the slice it is given.
    type Store<T: Send + Sync + 'static>: core::ops::DerefMut<Target = [T]> + Send + Sync;
}

/// A mutual-exclusion primitive without data, like `lock_api::RawMutex`.
///
/// The engine holds one across every member call on a session, so that a
/// session's member state and journal change in the order the member saw the
/// calls, and so that a session is never closed under a call in flight. A
/// call on one session therefore never waits behind another session: each
/// session has its own lock.
///
/// # Safety
/// Implementations must provide mutual exclusion: between a `lock` (or a
/// `try_lock` that returned `true`) and the matching `unlock`, no other
/// `lock` returns and no other `try_lock` returns `true`.
#[allow(unsafe_code)]
pub unsafe trait RawLock: Send + Sync {
    /// Blocks until the lock is held by the caller.
    fn lock(&self);
    /// Takes the lock if it is free.
    fn try_lock(&self) -> bool;
    /// Releases the lock.
    ///
    /// # Safety
    /// The caller holds the lock.
    unsafe fn unlock(&self);
}

/// A sink for the engine's events (the HA log, defmt, a test's recorder).
///
/// Called from application threads: it must not block for long and must not
/// fail. Events never carry a PIN or key material.
pub trait Events: Send + Sync {
    /// Records one event.
    fn event(&self, event: &Event<'_>);

    /// A call of an application session took `micros` inside member
    /// `member` (the call alone: no failover or replay), for a platform
    /// that keeps latency figures; ignored by default.
    fn member_call(&self, member: usize, micros: u64) {
        let _ = (member, micros);
    }

    /// Whether [`member_call`](Self::member_call) is wanted: the engine
    /// reads its clock around a member call only then (two clock reads
    /// are a good part of a quick call's cost). No by default.
    fn times_calls(&self) -> bool {
        false
    }
}

/// Monotonic milliseconds (any epoch).
pub trait Clock: Send + Sync {
    /// Milliseconds since an arbitrary, fixed point; never decreases.
    fn now_ms(&self) -> u64;

    /// Microseconds on the same kind of clock, for durations: `now_ms`
    /// times 1000 unless the platform has better.
    fn now_us(&self) -> u64 {
        self.now_ms().saturating_mul(1000)
    }
}

/// A PKCS#11 version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Version {
    /// Major number.
    pub major: u8,
    /// Minor number.
    pub minor: u8,
}

/// `CK_SLOT_INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// Blank-padded, not NUL-terminated.
    pub description: [u8; 64],
    /// Blank-padded, not NUL-terminated.
    pub manufacturer: [u8; 32],
    /// `CKF_TOKEN_PRESENT` and friends.
    pub flags: u64,
    /// Hardware version.
    pub hardware_version: Version,
    /// Firmware version.
    pub firmware_version: Version,
}

/// `CK_TOKEN_INFO`. Counters use [`crate::ck::UNAVAILABLE`] for
/// `CK_UNAVAILABLE_INFORMATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TokenInfo {
    pub label: [u8; 32],
    pub manufacturer: [u8; 32],
    pub model: [u8; 16],
    pub serial: [u8; 16],
    pub flags: u64,
    pub max_session_count: u64,
    pub session_count: u64,
    pub max_rw_session_count: u64,
    pub rw_session_count: u64,
    pub max_pin_len: u64,
    pub min_pin_len: u64,
    pub total_public_memory: u64,
    pub free_public_memory: u64,
    pub total_private_memory: u64,
    pub free_private_memory: u64,
    pub hardware_version: Version,
    pub firmware_version: Version,
    pub utc_time: [u8; 16],
}

/// `CK_SESSION_INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The slot, as the answering party numbers it.
    pub slot: u64,
    /// `CKS_*`.
    pub state: u64,
    /// `CKF_RW_SESSION`, `CKF_SERIAL_SESSION`.
    pub flags: u64,
    /// Device-specific error code.
    pub device_error: u64,
}

/// `CK_MECHANISM_INFO`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MechanismInfo {
    /// Minimum key size.
    pub min_key_size: u64,
    /// Maximum key size.
    pub max_key_size: u64,
    /// `CKF_ENCRYPT`, `CKF_SIGN`, ...
    pub flags: u64,
}

/// An attribute of an input template (`CK_ATTRIBUTE` with its value).
///
/// The value is in the platform's native layout (a `CK_ULONG` is as wide as
/// the platform's, a `CK_BBOOL` one byte). An attribute whose type has
/// [`crate::ck::attr::ARRAY_ATTRIBUTE`] set holds pointers: it can be passed
/// to an in-process module, but not copied or sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    /// `CKA_*`.
    pub ty: u64,
    /// The value, in the platform's native layout.
    pub value: &'a [u8],
}

/// An attribute of an output template (`C_GetAttributeValue`).
#[derive(Debug, PartialEq, Eq)]
pub struct AttrOut<'a> {
    /// `CKA_*`.
    pub ty: u64,
    /// Where the value goes; `None` asks for its length only.
    pub buf: Option<&'a mut [u8]>,
    /// Set by the call: the value's length, or `None` for
    /// `CK_UNAVAILABLE_INFORMATION` (sensitive, invalid type, too small).
    pub len: Option<usize>,
}

/// A mechanism with its parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mechanism<'a> {
    /// `CKM_*`.
    pub ty: u64,
    /// The parameter, decoded as far as p11ha knows its layout.
    pub param: Param<'a>,
}

/// A mechanism parameter.
///
/// Parameters whose layout holds pointers are decoded into the variants
/// below so that they can be copied (for replay) and encoded (for the RPC
/// protocol) without touching the application's memory afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param<'a> {
    /// No parameter (`pParameter` NULL, length 0).
    None,
    /// A parameter with no pointers or handles inside, in the platform's
    /// native layout ([`ParamKind::Flat`]).
    Flat(&'a [u8]),
    /// A parameter that is an object handle (virtual, as the application
    /// gave it, until the engine translates it).
    Handle(u64),
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep {
        /// `hashAlg`.
        hash: u64,
        /// `mgf`.
        mgf: u64,
        /// `source`.
        source: u64,
        /// `pSourceData`.
        source_data: &'a [u8],
    },
    /// `CK_ECDH1_DERIVE_PARAMS`.
    Ecdh1 {
        /// `kdf`.
        kdf: u64,
        /// `pSharedData`.
        shared_data: &'a [u8],
        /// `pPublicData`.
        public_data: &'a [u8],
    },
    /// `CK_GCM_PARAMS`.
    Gcm {
        /// `pIv`.
        iv: &'a [u8],
        /// `ulIvBits`.
        iv_bits: u64,
        /// `pAAD`.
        aad: &'a [u8],
        /// `ulTagBits`.
        tag_bits: u64,
    },
    /// A parameter whose layout p11ha does not know ([`ParamKind::Unknown`]):
    /// it may hold pointers into the application's memory, so it can only be
    /// handed, as is, to a module in the same process.
    Opaque(&'a [u8]),
}

impl Param<'_> {
    /// The layout class of this parameter.
    pub fn kind(&self) -> ParamKind {
        match self {
            Param::None | Param::Flat(_) => ParamKind::Flat,
            Param::Handle(_) => ParamKind::Handle,
            Param::Oaep { .. } => ParamKind::Oaep,
            Param::Ecdh1 { .. } => ParamKind::Ecdh1,
            Param::Gcm { .. } => ParamKind::Gcm,
            Param::Opaque(_) => ParamKind::Unknown,
        }
    }
}

/// The seven single- or multi-part operations that PKCS#11 runs through
/// Init/Update/Final and that HA replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op {
    /// `C_EncryptInit`, `C_Encrypt`, `C_EncryptUpdate`, `C_EncryptFinal`.
    Encrypt,
    /// `C_DecryptInit`, ...
    Decrypt,
    /// `C_SignInit`, ...
    Sign,
    /// `C_VerifyInit`, ... (single-part and final take the signature)
    Verify,
    /// `C_SignRecoverInit`, `C_SignRecover`.
    SignRecover,
    /// `C_VerifyRecoverInit`, `C_VerifyRecover`.
    VerifyRecover,
    /// `C_DigestInit`, ... (no key)
    Digest,
}

impl Op {
    /// Every operation, in a fixed order (used to index per-operation state).
    pub const ALL: [Op; 7] = [
        Op::Encrypt,
        Op::Decrypt,
        Op::Sign,
        Op::Verify,
        Op::SignRecover,
        Op::VerifyRecover,
        Op::Digest,
    ];

    /// Position in [`Op::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The four dual-function updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DualOp {
    /// `C_DigestEncryptUpdate`.
    DigestEncrypt,
    /// `C_DecryptDigestUpdate`.
    DecryptDigest,
    /// `C_SignEncryptUpdate`.
    SignEncrypt,
    /// `C_DecryptVerifyUpdate`.
    DecryptVerify,
}

impl DualOp {
    /// The two operations it continues.
    pub fn parts(self) -> (Op, Op) {
        match self {
            DualOp::DigestEncrypt => (Op::Digest, Op::Encrypt),
            DualOp::DecryptDigest => (Op::Decrypt, Op::Digest),
            DualOp::SignEncrypt => (Op::Sign, Op::Encrypt),
            DualOp::DecryptVerify => (Op::Decrypt, Op::Verify),
        }
    }
}

/// One slot of one HSM: the PKCS#11 call surface the engine forwards to.
///
/// Session and object handles here are the member's own. Output buffers
/// follow PKCS#11: `None` asks for the length only and never ends an
/// operation; a buffer that is too small gives
/// [`Error::BufferTooSmall`](crate::Error::BufferTooSmall) with the needed
/// length. Methods take `&self`: the engine calls a member from many threads
/// at once (never on the same member session at once).
#[allow(missing_docs)]
pub trait Member: Send + Sync + 'static {
    /// The member's slot id as its module or server numbers it (for logs).
    fn slot_id(&self) -> u64;

    fn slot_info(&self) -> Result<SlotInfo>;
    fn token_info(&self) -> Result<TokenInfo>;
    fn mechanism_list(&self, out: Option<&mut [u64]>) -> Result<usize>;
    fn mechanism_info(&self, mechanism: u64) -> Result<MechanismInfo>;
    fn init_token(&self, so_pin: Option<&[u8]>, label: &[u8; 32]) -> Result<()>;

    fn open_session(&self, flags: u64) -> Result<u64>;
    fn close_session(&self, session: u64) -> Result<()>;
    fn session_info(&self, session: u64) -> Result<SessionInfo>;
    fn init_pin(&self, session: u64, pin: Option<&[u8]>) -> Result<()>;
    fn set_pin(&self, session: u64, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()>;
    fn operation_state(&self, session: u64, out: Option<&mut [u8]>) -> Result<usize>;
    fn set_operation_state(
        &self,
        session: u64,
        state: &[u8],
        encryption_key: u64,
        authentication_key: u64,
    ) -> Result<()>;
    fn login(&self, session: u64, user: u64, pin: Option<&[u8]>) -> Result<()>;
    fn logout(&self, session: u64) -> Result<()>;

    fn create_object(&self, session: u64, template: &[Attr<'_>]) -> Result<u64>;
    fn copy_object(&self, session: u64, object: u64, template: &[Attr<'_>]) -> Result<u64>;
    fn destroy_object(&self, session: u64, object: u64) -> Result<()>;
    fn object_size(&self, session: u64, object: u64) -> Result<u64>;
    /// Fills `template` as `C_GetAttributeValue` does. Per-attribute lengths
    /// are set even when the result is `CKR_ATTRIBUTE_SENSITIVE`,
    /// `CKR_ATTRIBUTE_TYPE_INVALID` or `CKR_BUFFER_TOO_SMALL` (returned as
    /// `Error::Rv`, not `Error::BufferTooSmall`: there is no single length).
    fn get_attributes(&self, session: u64, object: u64, template: &mut [AttrOut<'_>])
    -> Result<()>;
    fn set_attributes(&self, session: u64, object: u64, template: &[Attr<'_>]) -> Result<()>;
    fn find_init(&self, session: u64, template: &[Attr<'_>]) -> Result<()>;
    fn find(&self, session: u64, out: &mut [u64]) -> Result<usize>;
    fn find_final(&self, session: u64) -> Result<()>;

    /// `C_<op>Init`. `key` is ignored for [`Op::Digest`].
    fn op_init(&self, session: u64, op: Op, mechanism: &Mechanism<'_>, key: u64) -> Result<()>;
    /// The single-part call: `C_Encrypt`, `C_Decrypt`, `C_Sign`,
    /// `C_SignRecover`, `C_VerifyRecover` (input is the signature), `C_Digest`.
    /// Not for [`Op::Verify`] (see [`Member::verify`]).
    fn op_single(
        &self,
        session: u64,
        op: Op,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize>;
    /// `C_<op>Update`. Encrypt and Decrypt write output; the others take
    /// `out = None` and return 0.
    fn op_update(
        &self,
        session: u64,
        op: Op,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize>;
    /// `C_<op>Final` for Encrypt, Decrypt, Sign and Digest.
    fn op_final(&self, session: u64, op: Op, out: Option<&mut [u8]>) -> Result<usize>;
    fn verify(&self, session: u64, data: &[u8], signature: &[u8]) -> Result<()>;
    fn verify_final(&self, session: u64, signature: &[u8]) -> Result<()>;
    fn digest_key(&self, session: u64, key: u64) -> Result<()>;
    fn dual_update(
        &self,
        session: u64,
        op: DualOp,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize>;

    fn generate_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        template: &[Attr<'_>],
    ) -> Result<u64>;
    fn generate_key_pair(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        public_template: &[Attr<'_>],
        private_template: &[Attr<'_>],
    ) -> Result<(u64, u64)>;
    fn wrap_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        wrapping_key: u64,
        key: u64,
        out: Option<&mut [u8]>,
    ) -> Result<usize>;
    fn unwrap_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        unwrapping_key: u64,
        wrapped: &[u8],
        template: &[Attr<'_>],
    ) -> Result<u64>;
    fn derive_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        base_key: u64,
        template: &[Attr<'_>],
    ) -> Result<u64>;

    fn seed_random(&self, session: u64, seed: &[u8]) -> Result<()>;
    fn generate_random(&self, session: u64, out: &mut [u8]) -> Result<()>;
    fn function_status(&self, session: u64) -> Result<()>;
    fn cancel_function(&self, session: u64) -> Result<()>;

    /// `C_CloseAllSessions` on the member's slot: a recovered member must
    /// not keep the sessions p11ha abandoned when it failed (their session
    /// objects would show in searches, their logins outlive a logout). The
    /// default does nothing.
    fn close_all_sessions(&self) -> Result<()> {
        Ok(())
    }

    /// Brings a failed member back before its token is checked again
    /// (reconnect a remote member; re-initialise a module none of whose
    /// slots is in service). The default does nothing.
    fn reconnect(&self) -> Result<()> {
        Ok(())
    }
}

/// Calls `$m!` with every [`Member`] method but `slot_id` and `reconnect`,
/// each as `fn name(&self, args..) -> Ret = CallName;`, so that wrappers
/// that pass every call on (a fault injector, a choice of two members)
/// list them once, here. `CallName` names the call, for wrappers that
/// count or match calls.
#[macro_export]
macro_rules! member_calls {
    ($m:ident) => {
        $m! {
            fn slot_info(&self) -> Result<SlotInfo> = SlotInfo;
            fn token_info(&self) -> Result<TokenInfo> = TokenInfo;
            fn mechanism_list(&self, out: Option<&mut [u64]>) -> Result<usize> = MechanismList;
            fn mechanism_info(&self, mechanism: u64) -> Result<MechanismInfo> = MechanismInfo;
            fn init_token(&self, so_pin: Option<&[u8]>, label: &[u8; 32]) -> Result<()> = InitToken;
            fn open_session(&self, flags: u64) -> Result<u64> = OpenSession;
            fn close_session(&self, session: u64) -> Result<()> = CloseSession;
            fn session_info(&self, session: u64) -> Result<SessionInfo> = SessionInfo;
            fn init_pin(&self, session: u64, pin: Option<&[u8]>) -> Result<()> = InitPin;
            fn set_pin(&self, session: u64, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()> = SetPin;
            fn operation_state(&self, session: u64, out: Option<&mut [u8]>) -> Result<usize> = OperationState;
            fn set_operation_state(&self, session: u64, state: &[u8], encryption_key: u64, authentication_key: u64) -> Result<()> = SetOperationState;
            fn login(&self, session: u64, user: u64, pin: Option<&[u8]>) -> Result<()> = Login;
            fn logout(&self, session: u64) -> Result<()> = Logout;
            fn create_object(&self, session: u64, template: &[Attr<'_>]) -> Result<u64> = CreateObject;
            fn copy_object(&self, session: u64, object: u64, template: &[Attr<'_>]) -> Result<u64> = CopyObject;
            fn destroy_object(&self, session: u64, object: u64) -> Result<()> = DestroyObject;
            fn object_size(&self, session: u64, object: u64) -> Result<u64> = ObjectSize;
            fn get_attributes(&self, session: u64, object: u64, template: &mut [AttrOut<'_>]) -> Result<()> = GetAttributes;
            fn set_attributes(&self, session: u64, object: u64, template: &[Attr<'_>]) -> Result<()> = SetAttributes;
            fn find_init(&self, session: u64, template: &[Attr<'_>]) -> Result<()> = FindInit;
            fn find(&self, session: u64, out: &mut [u64]) -> Result<usize> = Find;
            fn find_final(&self, session: u64) -> Result<()> = FindFinal;
            fn op_init(&self, session: u64, op: Op, mechanism: &Mechanism<'_>, key: u64) -> Result<()> = OpInit;
            fn op_single(&self, session: u64, op: Op, input: &[u8], out: Option<&mut [u8]>) -> Result<usize> = OpSingle;
            fn op_update(&self, session: u64, op: Op, input: &[u8], out: Option<&mut [u8]>) -> Result<usize> = OpUpdate;
            fn op_final(&self, session: u64, op: Op, out: Option<&mut [u8]>) -> Result<usize> = OpFinal;
            fn verify(&self, session: u64, data: &[u8], signature: &[u8]) -> Result<()> = Verify;
            fn verify_final(&self, session: u64, signature: &[u8]) -> Result<()> = VerifyFinal;
            fn digest_key(&self, session: u64, key: u64) -> Result<()> = DigestKey;
            fn dual_update(&self, session: u64, op: DualOp, input: &[u8], out: Option<&mut [u8]>) -> Result<usize> = DualUpdate;
            fn generate_key(&self, session: u64, mechanism: &Mechanism<'_>, template: &[Attr<'_>]) -> Result<u64> = GenerateKey;
            fn generate_key_pair(&self, session: u64, mechanism: &Mechanism<'_>, public_template: &[Attr<'_>], private_template: &[Attr<'_>]) -> Result<(u64, u64)> = GenerateKeyPair;
            fn wrap_key(&self, session: u64, mechanism: &Mechanism<'_>, wrapping_key: u64, key: u64, out: Option<&mut [u8]>) -> Result<usize> = WrapKey;
            fn unwrap_key(&self, session: u64, mechanism: &Mechanism<'_>, unwrapping_key: u64, wrapped: &[u8], template: &[Attr<'_>]) -> Result<u64> = UnwrapKey;
            fn derive_key(&self, session: u64, mechanism: &Mechanism<'_>, base_key: u64, template: &[Attr<'_>]) -> Result<u64> = DeriveKey;
            fn seed_random(&self, session: u64, seed: &[u8]) -> Result<()> = SeedRandom;
            fn generate_random(&self, session: u64, out: &mut [u8]) -> Result<()> = GenerateRandom;
            fn function_status(&self, session: u64) -> Result<()> = FunctionStatus;
            fn cancel_function(&self, session: u64) -> Result<()> = CancelFunction;
            fn close_all_sessions(&self) -> Result<()> = CloseAllSessions;
        }
    };
}
