//! Diffie-Hellman key derivation (`CKM_DH_PKCS_DERIVE`), which the
//! `cryptoki` crate does not name: the one derivation SoftHSM 2.6.1 offers
//! whose parameter holds no pointer (the other party's public value, a
//! byte string), so it travels to a p11-kit 0.24.1 server. From a DH
//! private key of a fixed value made by `C_CreateObject`, the derived key is
//! the same on every member, and the HA journal can make it again.

use cryptoki::error::Result;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{
    CK_ATTRIBUTE, CK_BBOOL, CK_MECHANISM, CK_OBJECT_CLASS, CK_OBJECT_HANDLE, CK_ULONG, CKA_CLASS,
    CKA_DECRYPT, CKA_ENCRYPT, CKA_KEY_TYPE, CKA_SENSITIVE, CKA_TOKEN, CKA_VALUE_LEN, CKK_AES,
    CKM_DH_PKCS_DERIVE, CKO_SECRET_KEY,
};

use crate::raw;

/// RFC 2409's 1024-bit MODP group (Oakley group 2), generator 2.
const PRIME: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1\
29024E088A67CC74020BBEA63B139B22514A08798E3404DD\
EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245\
E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381\
FFFFFFFFFFFFFFFF";

/// The group's prime, big-endian.
pub fn prime() -> Vec<u8> {
    (0..PRIME.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PRIME[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A fixed public value of the other party: any value between 1 and p - 1
/// is one the derivation takes.
pub fn peer() -> Vec<u8> {
    (0..prime().len()).map(|i| 0x40 ^ (i as u8)).collect()
}

/// A session DH private key of a fixed value, made by `C_CreateObject`.
pub fn private_key(s: &Session) -> Result<ObjectHandle> {
    s.create_object(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::DH),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Derive(true),
        Attribute::Prime(prime()),
        Attribute::Base(vec![2]),
        Attribute::Value((1..=32u8).map(|b| b.wrapping_mul(37)).collect()),
    ])
}

/// `C_DeriveKey` with `CKM_DH_PKCS_DERIVE` and `peer`'s public value: an
/// AES-256 session key (sensitive, for encryption and decryption).
pub fn derive_aes(s: &Session, base: ObjectHandle, peer: &[u8]) -> Result<ObjectHandle> {
    let yes: CK_BBOOL = 1;
    let no: CK_BBOOL = 0;
    let class: CK_OBJECT_CLASS = CKO_SECRET_KEY;
    let key_type: CK_ULONG = CKK_AES;
    let len: CK_ULONG = 32;
    fn attr<T>(ty: CK_ULONG, v: &T) -> CK_ATTRIBUTE {
        CK_ATTRIBUTE {
            type_: ty,
            pValue: v as *const T as *mut _,
            ulValueLen: std::mem::size_of::<T>() as CK_ULONG,
        }
    }
    let mut template = [
        attr(CKA_CLASS, &class),
        attr(CKA_KEY_TYPE, &key_type),
        attr(CKA_VALUE_LEN, &len),
        attr(CKA_TOKEN, &no),
        attr(CKA_SENSITIVE, &yes),
        attr(CKA_ENCRYPT, &yes),
        attr(CKA_DECRYPT, &yes),
    ];
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_DH_PKCS_DERIVE,
        pParameter: peer.as_ptr() as *mut _,
        ulParameterLen: peer.len() as CK_ULONG,
    };
    let mut out: CK_OBJECT_HANDLE = 0;
    // SAFETY: the mechanism's parameter is `peer` and the template's values
    // are the locals above, all alive for the call, which only reads them;
    // out is a valid CK_OBJECT_HANDLE.
    let rv = unsafe {
        raw().C_DeriveKey.expect("C_DeriveKey")(
            s.handle(),
            &mut mechanism,
            base.handle(),
            template.as_mut_ptr(),
            template.len() as CK_ULONG,
            &mut out,
        )
    };
    cryptoki::error::Rv::from(rv).into_result(cryptoki::context::Function::DeriveKey)?;
    // SAFETY: a handle the library just returned for this session.
    Ok(unsafe { ObjectHandle::new_from_raw(out) })
}
