//! The PKCS#11 vocabulary the core needs.
//!
//! `cryptoki-sys` needs std (it pulls in libloading), so the core owns its
//! vocabulary. Every `CK_ULONG` is carried as `u64` whatever the platform's
//! width; the edges (the C ABI, the module adapter, the RPC codec) convert
//! with `try_from` and map the all-ones "unavailable" value explicitly (see
//! [`UNAVAILABLE`]).

use core::fmt;

/// `CK_UNAVAILABLE_INFORMATION` as the core carries it: all ones of a `u64`,
/// whatever the platform's `CK_ULONG` width. The edges translate the
/// platform's own all-ones value to and from this one.
pub const UNAVAILABLE: u64 = u64::MAX;

/// `CK_EFFECTIVELY_INFINITE`.
pub const EFFECTIVELY_INFINITE: u64 = 0;

/// A PKCS#11 return value (`CK_RV`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rv(pub u64);

macro_rules! return_values {
    ($($name:ident = $value:expr,)*) => {
        impl Rv {
            $(#[allow(missing_docs)] pub const $name: Rv = Rv($value);)*

            /// The specification's name of this value (`CKR_` prefix dropped),
            /// or `None` for a value the core does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

return_values! {
    OK = 0x0,
    CANCEL = 0x1,
    HOST_MEMORY = 0x2,
    SLOT_ID_INVALID = 0x3,
    GENERAL_ERROR = 0x5,
    FUNCTION_FAILED = 0x6,
    ARGUMENTS_BAD = 0x7,
    NO_EVENT = 0x8,
    NEED_TO_CREATE_THREADS = 0x9,
    CANT_LOCK = 0xA,
    ATTRIBUTE_READ_ONLY = 0x10,
    ATTRIBUTE_SENSITIVE = 0x11,
    ATTRIBUTE_TYPE_INVALID = 0x12,
    ATTRIBUTE_VALUE_INVALID = 0x13,
    ACTION_PROHIBITED = 0x1B,
    DATA_INVALID = 0x20,
    DATA_LEN_RANGE = 0x21,
    DEVICE_ERROR = 0x30,
    DEVICE_MEMORY = 0x31,
    DEVICE_REMOVED = 0x32,
    ENCRYPTED_DATA_INVALID = 0x40,
    ENCRYPTED_DATA_LEN_RANGE = 0x41,
    AEAD_DECRYPT_FAILED = 0x42,
    FUNCTION_CANCELED = 0x50,
    FUNCTION_NOT_PARALLEL = 0x51,
    FUNCTION_NOT_SUPPORTED = 0x54,
    KEY_HANDLE_INVALID = 0x60,
    KEY_SIZE_RANGE = 0x62,
    KEY_TYPE_INCONSISTENT = 0x63,
    KEY_NOT_NEEDED = 0x64,
    KEY_CHANGED = 0x65,
    KEY_NEEDED = 0x66,
    KEY_INDIGESTIBLE = 0x67,
    KEY_FUNCTION_NOT_PERMITTED = 0x68,
    KEY_NOT_WRAPPABLE = 0x69,
    KEY_UNEXTRACTABLE = 0x6A,
    MECHANISM_INVALID = 0x70,
    MECHANISM_PARAM_INVALID = 0x71,
    OBJECT_HANDLE_INVALID = 0x82,
    OPERATION_ACTIVE = 0x90,
    OPERATION_NOT_INITIALIZED = 0x91,
    PIN_INCORRECT = 0xA0,
    PIN_INVALID = 0xA1,
    PIN_LEN_RANGE = 0xA2,
    PIN_EXPIRED = 0xA3,
    PIN_LOCKED = 0xA4,
    SESSION_CLOSED = 0xB0,
    SESSION_COUNT = 0xB1,
    SESSION_HANDLE_INVALID = 0xB3,
    SESSION_PARALLEL_NOT_SUPPORTED = 0xB4,
    SESSION_READ_ONLY = 0xB5,
    SESSION_EXISTS = 0xB6,
    SESSION_READ_ONLY_EXISTS = 0xB7,
    SESSION_READ_WRITE_SO_EXISTS = 0xB8,
    SIGNATURE_INVALID = 0xC0,
    SIGNATURE_LEN_RANGE = 0xC1,
    TEMPLATE_INCOMPLETE = 0xD0,
    TEMPLATE_INCONSISTENT = 0xD1,
    TOKEN_NOT_PRESENT = 0xE0,
    TOKEN_NOT_RECOGNIZED = 0xE1,
    TOKEN_WRITE_PROTECTED = 0xE2,
    UNWRAPPING_KEY_HANDLE_INVALID = 0xF0,
    UNWRAPPING_KEY_SIZE_RANGE = 0xF1,
    UNWRAPPING_KEY_TYPE_INCONSISTENT = 0xF2,
    USER_ALREADY_LOGGED_IN = 0x100,
    USER_NOT_LOGGED_IN = 0x101,
    USER_PIN_NOT_INITIALIZED = 0x102,
    USER_TYPE_INVALID = 0x103,
    USER_ANOTHER_ALREADY_LOGGED_IN = 0x104,
    USER_TOO_MANY_TYPES = 0x105,
    WRAPPED_KEY_INVALID = 0x110,
    WRAPPED_KEY_LEN_RANGE = 0x112,
    WRAPPING_KEY_HANDLE_INVALID = 0x113,
    WRAPPING_KEY_SIZE_RANGE = 0x114,
    WRAPPING_KEY_TYPE_INCONSISTENT = 0x115,
    RANDOM_SEED_NOT_SUPPORTED = 0x120,
    RANDOM_NO_RNG = 0x121,
    DOMAIN_PARAMS_INVALID = 0x130,
    CURVE_NOT_SUPPORTED = 0x140,
    BUFFER_TOO_SMALL = 0x150,
    SAVED_STATE_INVALID = 0x160,
    INFORMATION_SENSITIVE = 0x170,
    STATE_UNSAVEABLE = 0x180,
    CRYPTOKI_NOT_INITIALIZED = 0x190,
    CRYPTOKI_ALREADY_INITIALIZED = 0x191,
    MUTEX_BAD = 0x1A0,
    MUTEX_NOT_LOCKED = 0x1A1,
    NEW_PIN_MODE = 0x1B0,
    NEXT_OTP = 0x1B1,
    EXCEEDED_MAX_ITERATIONS = 0x1B5,
    FIPS_SELF_TEST_FAILED = 0x1B6,
    LIBRARY_LOAD_FAILED = 0x1B7,
    PIN_TOO_WEAK = 0x1B8,
    PUBLIC_KEY_INVALID = 0x1B9,
    FUNCTION_REJECTED = 0x200,
    OPERATION_CANCEL_FAILED = 0x202,
    VENDOR_DEFINED = 0x8000_0000,
}

impl fmt::Debug for Rv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "CKR_{name}"),
            None => write!(f, "CKR_{:#x}", self.0),
        }
    }
}

impl fmt::Display for Rv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Rv {
    fn format(&self, f: defmt::Formatter) {
        match self.name() {
            Some(name) => defmt::write!(f, "CKR_{=str}", name),
            None => defmt::write!(f, "CKR_{=u64:#x}", self.0),
        }
    }
}

/// Attribute types (`CKA_*`).
pub mod attr {
    #![allow(missing_docs)]
    pub const CLASS: u64 = 0x0;
    pub const TOKEN: u64 = 0x1;
    pub const PRIVATE: u64 = 0x2;
    pub const LABEL: u64 = 0x3;
    pub const VALUE: u64 = 0x11;
    pub const CERTIFICATE_TYPE: u64 = 0x80;
    pub const KEY_TYPE: u64 = 0x100;
    pub const ID: u64 = 0x102;
    pub const SENSITIVE: u64 = 0x103;
    pub const ENCRYPT: u64 = 0x104;
    pub const DECRYPT: u64 = 0x105;
    pub const WRAP: u64 = 0x106;
    pub const UNWRAP: u64 = 0x107;
    pub const SIGN: u64 = 0x108;
    pub const VERIFY: u64 = 0x10A;
    pub const DERIVE: u64 = 0x10C;
    pub const VALUE_LEN: u64 = 0x161;
    pub const EXTRACTABLE: u64 = 0x162;
    /// `CKA_SUBJECT`.
    pub const SUBJECT: u64 = 0x101;
    /// `CKA_SIGN_RECOVER`.
    pub const SIGN_RECOVER: u64 = 0x109;
    /// `CKA_VERIFY_RECOVER`.
    pub const VERIFY_RECOVER: u64 = 0x10B;
    /// `CKA_START_DATE`.
    pub const START_DATE: u64 = 0x110;
    /// `CKA_END_DATE`.
    pub const END_DATE: u64 = 0x111;
    /// `CKA_MODULUS`.
    pub const MODULUS: u64 = 0x120;
    /// `CKA_PUBLIC_EXPONENT`.
    pub const PUBLIC_EXPONENT: u64 = 0x122;
    /// `CKA_PRIME`.
    pub const PRIME: u64 = 0x130;
    /// `CKA_SUBPRIME`.
    pub const SUBPRIME: u64 = 0x131;
    /// `CKA_BASE`.
    pub const BASE: u64 = 0x132;
    /// `CKA_LOCAL`.
    pub const LOCAL: u64 = 0x163;
    /// `CKA_MODIFIABLE`.
    pub const MODIFIABLE: u64 = 0x170;
    /// `CKA_COPYABLE`.
    pub const COPYABLE: u64 = 0x171;
    /// `CKA_WRAP_WITH_TRUSTED`.
    pub const WRAP_WITH_TRUSTED: u64 = 0x210;
    pub const EC_PARAMS: u64 = 0x180;
    pub const EC_POINT: u64 = 0x181;
    /// Set in the type of every attribute whose value is itself an array of
    /// `CK_ATTRIBUTE` (`CKF_ARRAY_ATTRIBUTE`): such values hold pointers.
    pub const ARRAY_ATTRIBUTE: u64 = 0x4000_0000;
    pub const WRAP_TEMPLATE: u64 = ARRAY_ATTRIBUTE | 0x211;
    pub const UNWRAP_TEMPLATE: u64 = ARRAY_ATTRIBUTE | 0x212;
    pub const DERIVE_TEMPLATE: u64 = ARRAY_ATTRIBUTE | 0x213;
}

/// Object classes (`CKO_*`).
pub mod class {
    #![allow(missing_docs)]
    pub const DATA: u64 = 0;
    pub const CERTIFICATE: u64 = 1;
    pub const PUBLIC_KEY: u64 = 2;
    pub const PRIVATE_KEY: u64 = 3;
    pub const SECRET_KEY: u64 = 4;
}

/// User types (`CKU_*`).
pub mod user {
    #![allow(missing_docs)]
    pub const SO: u64 = 0;
    pub const USER: u64 = 1;
    pub const CONTEXT_SPECIFIC: u64 = 2;
}

/// Session states (`CKS_*`).
pub mod state {
    #![allow(missing_docs)]
    pub const RO_PUBLIC_SESSION: u64 = 0;
    pub const RO_USER_FUNCTIONS: u64 = 1;
    pub const RW_PUBLIC_SESSION: u64 = 2;
    pub const RW_USER_FUNCTIONS: u64 = 3;
    pub const RW_SO_FUNCTIONS: u64 = 4;
}

/// Flags (`CKF_*`) of slots, tokens, sessions and `C_Initialize`.
pub mod flags {
    #![allow(missing_docs)]
    // CK_SLOT_INFO
    pub const TOKEN_PRESENT: u64 = 0x1;
    pub const REMOVABLE_DEVICE: u64 = 0x2;
    pub const HW_SLOT: u64 = 0x4;
    // CK_TOKEN_INFO
    pub const RNG: u64 = 0x1;
    pub const WRITE_PROTECTED: u64 = 0x2;
    pub const LOGIN_REQUIRED: u64 = 0x4;
    pub const USER_PIN_INITIALIZED: u64 = 0x8;
    pub const PROTECTED_AUTHENTICATION_PATH: u64 = 0x100;
    pub const TOKEN_INITIALIZED: u64 = 0x400;
    // CK_SESSION_INFO and C_OpenSession
    pub const RW_SESSION: u64 = 0x2;
    pub const SERIAL_SESSION: u64 = 0x4;
    // C_WaitForSlotEvent
    pub const DONT_BLOCK: u64 = 0x1;
    // CK_C_INITIALIZE_ARGS
    pub const LIBRARY_CANT_CREATE_OS_THREADS: u64 = 0x1;
    pub const OS_LOCKING_OK: u64 = 0x2;
}

/// Mechanism types (`CKM_*`) the core treats specially: those whose
/// parameter holds pointers or object handles, and those whose parameter it
/// knows to be flat bytes.
pub mod mech {
    #![allow(missing_docs)]
    pub const RSA_PKCS_KEY_PAIR_GEN: u64 = 0x0;
    pub const RSA_PKCS: u64 = 0x1;
    pub const RSA_X_509: u64 = 0x3;
    pub const RSA_PKCS_OAEP: u64 = 0x9;
    pub const RSA_PKCS_PSS: u64 = 0xD;
    pub const SHA1_RSA_PKCS_PSS: u64 = 0xE;
    pub const DH_PKCS_KEY_PAIR_GEN: u64 = 0x20;
    pub const DH_PKCS_DERIVE: u64 = 0x21;
    pub const SHA256_RSA_PKCS: u64 = 0x40;
    pub const SHA256_RSA_PKCS_PSS: u64 = 0x43;
    pub const SHA384_RSA_PKCS_PSS: u64 = 0x44;
    pub const SHA512_RSA_PKCS_PSS: u64 = 0x45;
    pub const SHA224_RSA_PKCS_PSS: u64 = 0x47;
    pub const SHA_1: u64 = 0x220;
    pub const SHA256: u64 = 0x250;
    pub const SHA384: u64 = 0x260;
    pub const SHA512: u64 = 0x270;
    pub const GENERIC_SECRET_KEY_GEN: u64 = 0x350;
    pub const CONCATENATE_BASE_AND_KEY: u64 = 0x360;
    pub const EC_KEY_PAIR_GEN: u64 = 0x1040;
    pub const ECDSA: u64 = 0x1041;
    pub const ECDSA_SHA256: u64 = 0x1044;
    pub const ECDH1_DERIVE: u64 = 0x1050;
    pub const ECDH1_COFACTOR_DERIVE: u64 = 0x1051;
    pub const AES_KEY_GEN: u64 = 0x1080;
    pub const AES_ECB: u64 = 0x1081;
    pub const AES_CBC: u64 = 0x1082;
    pub const AES_MAC: u64 = 0x1083;
    pub const AES_MAC_GENERAL: u64 = 0x1084;
    pub const AES_CBC_PAD: u64 = 0x1085;
    pub const AES_CTR: u64 = 0x1086;
    pub const AES_GCM: u64 = 0x1087;
    pub const AES_CMAC: u64 = 0x108A;
    pub const AES_KEY_WRAP: u64 = 0x2109;
    pub const AES_KEY_WRAP_PAD: u64 = 0x210A;
    pub const DES3_CBC: u64 = 0x133;
    pub const DES3_CBC_PAD: u64 = 0x136;
}

/// How a mechanism's parameter is laid out, as far as the core knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// No pointers and no object handles inside: an IV, a counter block, a
    /// structure of plain integers. Safe to copy byte for byte.
    Flat,
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep,
    /// `CK_ECDH1_DERIVE_PARAMS`.
    Ecdh1,
    /// `CK_GCM_PARAMS`.
    Gcm,
    /// A `CK_OBJECT_HANDLE` (`CKM_CONCATENATE_BASE_AND_KEY`).
    Handle,
    /// Not known to p11ha: it may hold pointers or handles.
    Unknown,
}

/// The layout of `mechanism`'s parameter, as far as the core knows it.
pub fn param_kind(mechanism: u64) -> ParamKind {
    use mech::*;
    match mechanism {
        RSA_PKCS_OAEP => ParamKind::Oaep,
        ECDH1_DERIVE | ECDH1_COFACTOR_DERIVE => ParamKind::Ecdh1,
        AES_GCM => ParamKind::Gcm,
        CONCATENATE_BASE_AND_KEY => ParamKind::Handle,
        // Plain byte strings (IVs) and structures of plain integers.
        RSA_PKCS_PSS | SHA1_RSA_PKCS_PSS | SHA224_RSA_PKCS_PSS | SHA256_RSA_PKCS_PSS
        | SHA384_RSA_PKCS_PSS | SHA512_RSA_PKCS_PSS | AES_CBC | AES_CBC_PAD | AES_CTR
        | AES_MAC_GENERAL | DES3_CBC | DES3_CBC_PAD | AES_KEY_WRAP | AES_KEY_WRAP_PAD => {
            ParamKind::Flat
        }
        // The other party's public value, a byte string (PKCS#11 v2.40
        // Current Mechanisms, "PKCS #3 Diffie-Hellman key derivation"): the
        // one derivation SoftHSM offers whose parameter holds no pointer,
        // so it travels to a 0.24.1 server.
        DH_PKCS_DERIVE => ParamKind::Flat,
        // Mechanisms that take no parameter: whatever the caller passes is
        // passed on; a non-empty parameter is the member's to refuse.
        RSA_PKCS_KEY_PAIR_GEN
        | DH_PKCS_KEY_PAIR_GEN
        | RSA_PKCS
        | RSA_X_509
        | SHA256_RSA_PKCS
        | SHA_1
        | SHA256
        | SHA384
        | SHA512
        | GENERIC_SECRET_KEY_GEN
        | EC_KEY_PAIR_GEN
        | ECDSA
        | ECDSA_SHA256
        | AES_KEY_GEN
        | AES_ECB
        | AES_MAC
        | AES_CMAC => ParamKind::Flat,
        _ => ParamKind::Unknown,
    }
}

/// The value of a `CK_ULONG` attribute in the platform's native layout.
pub fn ulong_bytes(value: u64) -> [u8; core::mem::size_of::<core::ffi::c_ulong>()] {
    // Values the core writes (classes, key types) fit every CK_ULONG.
    (value as core::ffi::c_ulong).to_ne_bytes()
}

/// Reads a `CK_ULONG` attribute value in the platform's native layout.
pub fn ulong_from_bytes(bytes: &[u8]) -> Option<u64> {
    let bytes = bytes.try_into().ok()?;
    #[allow(clippy::useless_conversion)] // c_ulong is u32 on 32-bit targets
    Some(u64::from(core::ffi::c_ulong::from_ne_bytes(bytes)))
}

/// Writes `items` to `out` as PKCS#11 length queries expect: `None` asks
/// for the count; a list that is too short gets `BufferTooSmall` with it.
pub fn copy_out(items: &[u64], out: Option<&mut [u64]>) -> crate::Result<usize> {
    match out {
        None => Ok(items.len()),
        Some(out) if out.len() < items.len() => Err(crate::Error::BufferTooSmall {
            needed: items.len(),
        }),
        Some(out) => {
            out[..items.len()].copy_from_slice(items);
            Ok(items.len())
        }
    }
}

// The unavailable marker must not collide with a real length.
const _: () = assert!(UNAVAILABLE == u64::MAX);
