//! The wire encoding of the p11-kit RPC protocol (`shared/PKCS11-RPC.md`
//! is our reference): big-endian integers, `u` always 64 bits, byte arrays
//! and attributes as p11-kit lays them out, mechanisms in the layout of the
//! negotiated protocol version.
//!
//! Every read is bounds-checked and answers `None` for a body that ends too
//! soon or holds something impossible: a malformed reply is a member
//! failure, never a panic or a read past the end.

use p11ha_core::bytes;
use p11ha_core::ck::{Rv, attr};
use p11ha_core::port::{Attr, Mechanism, Param};
use p11ha_core::{Error, Result};

/// The width of the platform's `CK_ULONG`, in which attribute values and
/// flat mechanism parameters reach p11ha.
pub const NATIVE: usize = core::mem::size_of::<core::ffi::c_ulong>();

/// The handshake string of `C_Initialize`.
pub const HANDSHAKE: &[u8] = b"PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1";

/// Writes big-endian values into a buffer; every method answers `None`
/// when the buffer is full (over the core's bounds-checked cursor).
pub struct Writer<'a>(bytes::Writer<'a>);

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer(bytes::Writer::new(buf))
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Raw bytes.
    pub fn raw(&mut self, b: &[u8]) -> Option<()> {
        self.0.put(b)
    }

    /// `y`.
    pub fn byte(&mut self, x: u8) -> Option<()> {
        self.0.u8(x)
    }

    /// A u32 (lengths, counts, capacities, attribute types).
    pub fn u32(&mut self, x: u32) -> Option<()> {
        self.0.u32_be(x)
    }

    /// `u`: a CK_ULONG, always 64 bits.
    pub fn ulong(&mut self, x: u64) -> Option<()> {
        self.0.u64_be(x)
    }

    /// A byte array inside values: u32 length + bytes.
    pub fn bytes(&mut self, b: &[u8]) -> Option<()> {
        self.u32(u32::try_from(b.len()).ok().filter(|&n| n < 0x7fff_ffff)?)?;
        self.raw(b)
    }

    /// A NULL byte array inside values.
    pub fn null_bytes(&mut self) -> Option<()> {
        self.u32(0xffff_ffff)
    }

    /// `ay` in a request: present, length, bytes.
    pub fn input(&mut self, b: &[u8]) -> Option<()> {
        self.byte(1)?;
        self.bytes(b)
    }

    /// The call id and signature that start a body.
    pub fn call(&mut self, id: u32, signature: &str) -> Option<()> {
        self.u32(id)?;
        self.bytes(signature.as_bytes())
    }
}

/// Reads big-endian values out of a reply body (over the core's
/// bounds-checked cursor).
pub struct Reader<'a>(bytes::Reader<'a>);

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader(bytes::Reader::new(buf))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        self.0.take(n)
    }

    /// `y`.
    pub fn byte(&mut self) -> Option<u8> {
        self.0.u8()
    }

    /// A u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.0.u32_be()
    }

    /// `u`.
    pub fn ulong(&mut self) -> Option<u64> {
        self.0.u64_be()
    }

    /// A byte array inside values; `None` inside `Some` for NULL.
    pub fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u32()? {
            0xffff_ffff => Some(None),
            n => Some(Some(self.take(n as usize)?)),
        }
    }

    /// `s`: a space-padded string of exactly `N` bytes.
    pub fn fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.u32()? as usize != N {
            return None;
        }
        self.take(N)?.try_into().ok()
    }

    /// `v`.
    pub fn version(&mut self) -> Option<p11ha_core::port::Version> {
        Some(p11ha_core::port::Version {
            major: self.byte()?,
            minor: self.byte()?,
        })
    }

    /// The call id and signature at the start of a body.
    pub fn call(&mut self) -> Option<(u32, &'a [u8])> {
        let id = self.u32()?;
        let sig = self.bytes()??;
        Some((id, sig))
    }
}

/// How p11-kit encodes an attribute's value (the 0.24.1 table, the same in
/// later releases for standard attributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrClass {
    /// `CK_BBOOL`: one byte.
    Bool,
    /// `CK_ULONG`: a u64 with length 8.
    Ulong,
    /// `CK_MECHANISM_TYPE[]`: a u32 count and u64s.
    MechanismArray,
    /// `CK_DATE`: a byte array of 0 or 8 bytes.
    Date,
    /// Nested templates: p11-kit 0.24.1 refuses them.
    Template,
    /// Everything else: a byte array.
    Bytes,
}

/// The class of attribute type `ty`.
pub fn attr_class(ty: u64) -> AttrClass {
    match ty {
        0x1 | 0x2 | 0x86 | 0x103 | 0x104 | 0x105 | 0x106 | 0x107 | 0x108 | 0x109 | 0x10A
        | 0x10B | 0x10C | 0x162 | 0x163 | 0x164 | 0x165 | 0x170 | 0x171 | 0x200 | 0x202 | 0x210
        | 0x301 | 0x302 | 0x405 => AttrClass::Bool,
        0x0 | 0x80 | 0x87 | 0x88 | 0x100 | 0x121 | 0x133 | 0x134 | 0x160 | 0x161 | 0x166
        | 0x201 | 0x300 | 0x400 | 0x401 | 0x402 | 0x403 | 0x404 | 0x406 | 0x500 => AttrClass::Ulong,
        0x4000_0600 => AttrClass::MechanismArray,
        0x110 | 0x111 => AttrClass::Date,
        t if t & attr::ARRAY_ATTRIBUTE != 0 => AttrClass::Template,
        _ => AttrClass::Bytes,
    }
}

/// A native `CK_ULONG` value as u64; `None` if `b` is not one.
pub fn native_ulong(b: &[u8]) -> Option<u64> {
    p11ha_core::ck::ulong_from_bytes(b)
}

/// Writes `x` as a native `CK_ULONG` into `out`; the bytes written, or
/// `None` if it does not fit the platform's width or `out`.
pub fn put_native_ulong(x: u64, out: &mut [u8]) -> Option<usize> {
    let v = core::ffi::c_ulong::try_from(x).ok()?;
    let b = v.to_ne_bytes();
    out.get_mut(..NATIVE)?.copy_from_slice(&b);
    Some(NATIVE)
}

/// Encodes an input template (`aA`). `CKR_ATTRIBUTE_TYPE_INVALID` for a
/// nested template, `CKR_ATTRIBUTE_VALUE_INVALID` for a value of the wrong
/// size for its type, `CKR_HOST_MEMORY` if it does not fit the buffer.
pub fn put_template(w: &mut Writer<'_>, template: &[Attr<'_>]) -> Result<()> {
    let full = Error::Rv(Rv::HOST_MEMORY);
    w.u32(u32::try_from(template.len()).map_err(|_| full)?)
        .ok_or(full)?;
    for a in template {
        let ty = u32::try_from(a.ty).map_err(|_| Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID))?;
        w.u32(ty).ok_or(full)?;
        w.byte(1).ok_or(full)?;
        let bad = Error::Rv(Rv::ATTRIBUTE_VALUE_INVALID);
        match attr_class(a.ty) {
            AttrClass::Bool => {
                let [b] = a.value else { return Err(bad) };
                w.u32(1).and_then(|()| w.byte(*b)).ok_or(full)?;
            }
            AttrClass::Ulong => {
                let v = native_ulong(a.value).ok_or(bad)?;
                w.u32(8).and_then(|()| w.ulong(v)).ok_or(full)?;
            }
            AttrClass::MechanismArray => {
                if a.value.len() % NATIVE != 0 {
                    return Err(bad);
                }
                let n = a.value.len() / NATIVE;
                w.u32(u32::try_from(8 * n).map_err(|_| full)?)
                    .and_then(|()| w.u32(n as u32))
                    .ok_or(full)?;
                for m in a.value.chunks_exact(NATIVE) {
                    w.ulong(native_ulong(m).ok_or(bad)?).ok_or(full)?;
                }
            }
            AttrClass::Date | AttrClass::Bytes => {
                let n = u32::try_from(a.value.len()).map_err(|_| full)?;
                w.u32(n).and_then(|()| w.bytes(a.value)).ok_or(full)?;
            }
            AttrClass::Template => return Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID)),
        }
    }
    Ok(())
}

/// The protocol versions p11ha speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// p11-kit up to 0.24.x (Debian 12's 0.24.1): parameters are raw bytes
    /// in the server's native layout, but for PSS and OAEP.
    V0,
    /// 0.25.0 to 0.25.5: parameters of known mechanisms by structure.
    V1,
    /// 0.25.6 and later: parameterless mechanisms send their type alone,
    /// others a has-parameter byte first.
    V2,
}

/// Mechanisms p11-kit (0.25.6 and later) sends without a parameter.
/// (The standard ones of p11-kit's list; its IBM vendor mechanisms are
/// not here.)
const NO_PARAMETER: &[u64] = &[
    0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xa, 0xb, 0xc, 0x10, 0x11, 0x12, 0x20, 0x30, 0x40,
    0x41, 0x42, 0x46, 0x48, 0x49, 0x4b, 0x4c, 0x4d, 0x4f, 0x50, 0x51, 0x53, 0x100, 0x101, 0x103,
    0x110, 0x111, 0x120, 0x121, 0x123, 0x130, 0x131, 0x132, 0x134, 0x138, 0x140, 0x141, 0x143,
    0x200, 0x201, 0x210, 0x211, 0x220, 0x221, 0x230, 0x231, 0x240, 0x241, 0x250, 0x251, 0x255,
    0x256, 0x260, 0x261, 0x270, 0x271, 0x300, 0x301, 0x303, 0x310, 0x311, 0x313, 0x320, 0x321,
    0x330, 0x331, 0x333, 0x340, 0x341, 0x343, 0x350, 0x370, 0x374, 0x380, 0x381, 0x392, 0x393,
    0x394, 0x395, 0x396, 0x400, 0x1000, 0x1008, 0x1010, 0x1020, 0x1030, 0x1036, 0x1040, 0x1041,
    0x1042, 0x1043, 0x1044, 0x1045, 0x1046, 0x1060, 0x1065, 0x1070, 0x1080, 0x1081, 0x1083, 0x108a,
    0x2000, 0x2001, 0x2002,
];

/// How p11-kit (0.25 and later) serialises a mechanism's parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serializer {
    /// u64 hashAlg, u64 mgf, u64 sLen.
    Pss,
    /// u64 hashAlg, u64 mgf, u64 source, bytes.
    Oaep,
    /// u64 kdf, bytes shared, bytes public.
    Ecdh1,
    /// bytes, 16 of them.
    AesIv,
    /// bytes, 8 of them.
    DesIv,
    /// u64 counterBits, bytes cb (16).
    AesCtr,
    /// bytes iv, u64 ivBits, bytes aad, u64 tagBits.
    Gcm,
    /// u64 (`CK_MAC_GENERAL_PARAMS`).
    MacGeneral,
    /// Anything else: the raw bytes.
    Bytes,
}

fn serializer(mechanism: u64) -> Serializer {
    match mechanism {
        0x0D | 0x0E | 0x43 | 0x44 | 0x45 | 0x47 => Serializer::Pss,
        0x09 => Serializer::Oaep,
        0x1050 => Serializer::Ecdh1,
        0x1082 | 0x1085 | 0x2104 | 0x2108 | 0x2106 | 0x2105 | 0x2107 | 0x1089 => Serializer::AesIv,
        0x122 | 0x125 | 0x133 | 0x136 | 0x153 | 0x152 | 0x150 => Serializer::DesIv,
        0x1086 => Serializer::AesCtr,
        0x1087 => Serializer::Gcm,
        0x222 | 0x257 | 0x252 | 0x262 | 0x272 | 0x4a | 0x4e | 0x1084 | 0x108b | 0x135 | 0x137 => {
            Serializer::MacGeneral
        }
        _ => Serializer::Bytes,
    }
}

/// The native-layout integers of a flat parameter structure.
fn native_ulongs<const N: usize>(b: &[u8]) -> Option<[u64; N]> {
    if b.len() != N * NATIVE {
        return None;
    }
    let mut out = [0u64; N];
    for (o, c) in out.iter_mut().zip(b.chunks_exact(NATIVE)) {
        *o = native_ulong(c)?;
    }
    Some(out)
}

/// Encodes a mechanism (`M`) for the server's protocol `version`.
/// `CKR_MECHANISM_INVALID` for a parameter that cannot be carried (its
/// layout unknown, or holding pointers that 0.24.1 cannot take),
/// `CKR_MECHANISM_PARAM_INVALID` for one of the wrong size for its type.
pub fn put_mechanism(w: &mut Writer<'_>, m: &Mechanism<'_>, version: Version) -> Result<()> {
    let full = Error::Rv(Rv::HOST_MEMORY);
    let invalid = Error::Rv(Rv::MECHANISM_INVALID);
    let bad = Error::Rv(Rv::MECHANISM_PARAM_INVALID);
    let ty = u32::try_from(m.ty).map_err(|_| invalid)?;
    w.u32(ty).ok_or(full)?;
    if version == Version::V2 && NO_PARAMETER.contains(&m.ty) {
        return Ok(());
    }
    if version == Version::V2 {
        w.byte(u8::from(m.param != Param::None)).ok_or(full)?;
        if m.param == Param::None {
            return Ok(());
        }
    }
    let ser = serializer(m.ty);
    // 0.24.1 structures only PSS itself and OAEP; everything else is raw.
    let ser = match (version, ser) {
        (Version::V0, Serializer::Pss) if m.ty == 0x0D => Serializer::Pss,
        (Version::V0, Serializer::Oaep) => Serializer::Oaep,
        (Version::V0, _) => Serializer::Bytes,
        (_, s) => s,
    };
    match (ser, m.param) {
        (Serializer::Pss, Param::Flat(b)) => {
            let [hash, mgf, slen] = native_ulongs::<3>(b).ok_or(bad)?;
            w.ulong(hash)
                .and_then(|()| w.ulong(mgf))
                .and_then(|()| w.ulong(slen))
                .ok_or(full)?;
        }
        (
            Serializer::Oaep,
            Param::Oaep {
                hash,
                mgf,
                source,
                source_data,
            },
        ) => {
            w.ulong(hash)
                .and_then(|()| w.ulong(mgf))
                .and_then(|()| w.ulong(source))
                .ok_or(full)?;
            if source_data.is_empty() {
                w.null_bytes().ok_or(full)?;
            } else {
                w.bytes(source_data).ok_or(full)?;
            }
        }
        (
            Serializer::Ecdh1,
            Param::Ecdh1 {
                kdf,
                shared_data,
                public_data,
            },
        ) => {
            w.ulong(kdf).ok_or(full)?;
            for d in [shared_data, public_data] {
                if d.is_empty() {
                    w.null_bytes().ok_or(full)?;
                } else {
                    w.bytes(d).ok_or(full)?;
                }
            }
        }
        (Serializer::AesIv, Param::Flat(b)) if b.len() == 16 => w.bytes(b).ok_or(full)?,
        (Serializer::DesIv, Param::Flat(b)) if b.len() == 8 => w.bytes(b).ok_or(full)?,
        (Serializer::AesIv | Serializer::DesIv, Param::Flat(_)) => return Err(bad),
        (Serializer::AesCtr, Param::Flat(b)) => {
            if b.len() != NATIVE + 16 {
                return Err(bad);
            }
            let bits = native_ulong(&b[..NATIVE]).ok_or(bad)?;
            w.ulong(bits)
                .and_then(|()| w.bytes(&b[NATIVE..]))
                .ok_or(full)?;
        }
        (
            Serializer::Gcm,
            Param::Gcm {
                iv,
                iv_bits,
                aad,
                tag_bits,
            },
        ) => {
            w.bytes(iv)
                .and_then(|()| w.ulong(iv_bits))
                .and_then(|()| w.bytes(aad))
                .and_then(|()| w.ulong(tag_bits))
                .ok_or(full)?;
        }
        (Serializer::MacGeneral, Param::Flat(b)) => {
            w.ulong(native_ulong(b).ok_or(bad)?).ok_or(full)?
        }
        (Serializer::Bytes, param) => put_raw_param(w, m.ty, param, version)?,
        // The parameter's form does not match its mechanism.
        _ => return Err(bad),
    }
    Ok(())
}

/// A parameter passed as raw bytes, which the server hands to its module as
/// they are: flat structures must then be in the server's layout, taken to
/// be LP64 little-endian (x86-64, aarch64).
fn put_raw_param(w: &mut Writer<'_>, ty: u64, param: Param<'_>, version: Version) -> Result<()> {
    let full = Error::Rv(Rv::HOST_MEMORY);
    let bad = Error::Rv(Rv::MECHANISM_PARAM_INVALID);
    match param {
        Param::None => w.null_bytes().ok_or(full),
        Param::Handle(h) => w.bytes(&h.to_le_bytes()).ok_or(full),
        Param::Flat(b) => match (version, serializer(ty)) {
            // On 0.24.1 the structured types above travel as raw structs.
            (Version::V0, Serializer::Pss) => {
                let v = native_ulongs::<3>(b).ok_or(bad)?;
                let mut out = [0u8; 24];
                for (o, x) in out.chunks_exact_mut(8).zip(v) {
                    o.copy_from_slice(&x.to_le_bytes());
                }
                w.bytes(&out).ok_or(full)
            }
            (Version::V0, Serializer::AesCtr) => {
                if b.len() != NATIVE + 16 {
                    return Err(bad);
                }
                let mut out = [0u8; 24];
                out[..8].copy_from_slice(&native_ulong(&b[..NATIVE]).ok_or(bad)?.to_le_bytes());
                out[8..].copy_from_slice(&b[NATIVE..]);
                w.bytes(&out).ok_or(full)
            }
            (Version::V0, Serializer::MacGeneral) => {
                let x = native_ulong(b).ok_or(bad)?;
                w.bytes(&x.to_le_bytes()).ok_or(full)
            }
            _ => w.bytes(b).ok_or(full),
        },
        // Structures with pointers: 0.24.1 takes only OAEP (handled above).
        // Unknown layouts may hold pointers: never sent.
        Param::Oaep { .. } | Param::Ecdh1 { .. } | Param::Gcm { .. } | Param::Opaque(_) => {
            Err(Error::Rv(Rv::MECHANISM_INVALID))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(m: &Mechanism<'_>, v: Version) -> Result<heapless::Vec<u8, 128>> {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        put_mechanism(&mut w, m, v)?;
        let n = w.len();
        Ok(heapless::Vec::from_slice(&buf[..n]).unwrap())
    }

    fn native(xs: &[u64]) -> heapless::Vec<u8, 64> {
        let mut v = heapless::Vec::new();
        for &x in xs {
            let mut b = [0u8; NATIVE];
            put_native_ulong(x, &mut b).unwrap();
            v.extend_from_slice(&b).unwrap();
        }
        v
    }

    #[test]
    fn mechanisms_as_the_0_24_1_server_reads_them() {
        // ECDSA: a NULL parameter.
        let ecdsa = Mechanism {
            ty: 0x1041,
            param: Param::None,
        };
        assert_eq!(
            &encode(&ecdsa, Version::V0).unwrap()[..],
            &[0, 0, 0x10, 0x41, 0xff, 0xff, 0xff, 0xff]
        );
        // AES-CBC: the IV as a byte array.
        let iv = [7u8; 16];
        let cbc = Mechanism {
            ty: 0x1082,
            param: Param::Flat(&iv),
        };
        let e = encode(&cbc, Version::V0).unwrap();
        assert_eq!(&e[..8], &[0, 0, 0x10, 0x82, 0, 0, 0, 16]);
        assert_eq!(&e[8..], &iv);
        // RSA-PSS: three u64, no length prefix (as the reference client).
        let pss = native(&[0x250, 2, 32]);
        let e = encode(
            &Mechanism {
                ty: 0x0D,
                param: Param::Flat(&pss),
            },
            Version::V0,
        )
        .unwrap();
        assert_eq!(e.len(), 4 + 24);
        assert_eq!(&e[4..12], &0x250u64.to_be_bytes());
        // SHA256-RSA-PSS on 0.24.1: the native LE struct as bytes.
        let e = encode(
            &Mechanism {
                ty: 0x43,
                param: Param::Flat(&pss),
            },
            Version::V0,
        )
        .unwrap();
        assert_eq!(&e[4..8], &[0, 0, 0, 24]);
        assert_eq!(&e[8..16], &0x250u64.to_le_bytes());
        // GCM cannot travel to 0.24.1; it is refused before anything is sent.
        let gcm = Mechanism {
            ty: 0x1087,
            param: Param::Gcm {
                iv: &[1; 12],
                iv_bits: 96,
                aad: &[],
                tag_bits: 128,
            },
        };
        assert_eq!(
            encode(&gcm, Version::V0),
            Err(Error::Rv(Rv::MECHANISM_INVALID))
        );
        let opaque = Mechanism {
            ty: 0x8000_0001,
            param: Param::Opaque(&[1, 2, 3]),
        };
        assert_eq!(
            encode(&opaque, Version::V2),
            Err(Error::Rv(Rv::MECHANISM_INVALID))
        );
    }

    #[test]
    fn mechanisms_as_newer_servers_read_them() {
        let ecdsa = Mechanism {
            ty: 0x1041,
            param: Param::None,
        };
        // 0.25.6+: a parameterless mechanism is its type alone.
        assert_eq!(
            &encode(&ecdsa, Version::V2).unwrap()[..],
            &[0, 0, 0x10, 0x41]
        );
        let gcm = Mechanism {
            ty: 0x1087,
            param: Param::Gcm {
                iv: &[1; 12],
                iv_bits: 96,
                aad: b"a",
                tag_bits: 128,
            },
        };
        let e = encode(&gcm, Version::V2).unwrap();
        assert_eq!(e[4], 1, "has a parameter");
        assert_eq!(&e[5..9], &[0, 0, 0, 12]);
        assert_eq!(e.len(), 4 + 1 + 4 + 12 + 8 + 4 + 1 + 8);
        // 0.25.0-0.25.5: no has-parameter byte; CTR by structure.
        let ctr = {
            let mut v = native(&[64]);
            v.extend_from_slice(&[9; 16]).unwrap();
            v
        };
        let e = encode(
            &Mechanism {
                ty: 0x1086,
                param: Param::Flat(&ctr),
            },
            Version::V1,
        )
        .unwrap();
        assert_eq!(&e[4..12], &64u64.to_be_bytes());
        assert_eq!(&e[12..16], &[0, 0, 0, 16]);
        // An IV of the wrong length is refused.
        let short = Mechanism {
            ty: 0x1082,
            param: Param::Flat(&[0; 8]),
        };
        assert_eq!(
            encode(&short, Version::V2),
            Err(Error::Rv(Rv::MECHANISM_PARAM_INVALID))
        );
    }

    #[test]
    fn templates_follow_the_type_table() {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        let class = native(&[3]);
        put_template(
            &mut w,
            &[
                Attr {
                    ty: attr::CLASS,
                    value: &class,
                },
                Attr {
                    ty: attr::LABEL,
                    value: b"eckey",
                },
                Attr {
                    ty: attr::TOKEN,
                    value: &[1],
                },
            ],
        )
        .unwrap();
        let n = w.len();
        let expect: &[u8] = &[
            0, 0, 0, 3, // count
            0, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 3, // CKA_CLASS
            0, 0, 0, 3, 1, 0, 0, 0, 5, 0, 0, 0, 5, b'e', b'c', b'k', b'e', b'y', // CKA_LABEL
            0, 0, 0, 1, 1, 0, 0, 0, 1, 1, // CKA_TOKEN
        ];
        assert_eq!(&buf[..n], expect);
        let mut w = Writer::new(&mut buf);
        let nested = [Attr {
            ty: attr::WRAP_TEMPLATE,
            value: &[],
        }];
        assert_eq!(
            put_template(&mut w, &nested),
            Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID))
        );
        let bad_bool = [Attr {
            ty: attr::TOKEN,
            value: &[1, 0],
        }];
        assert_eq!(
            put_template(&mut w, &bad_bool),
            Err(Error::Rv(Rv::ATTRIBUTE_VALUE_INVALID))
        );
    }

    #[test]
    fn readers_refuse_short_and_impossible_input() {
        let mut r = Reader::new(&[0, 0, 0, 5, 1, 2]);
        assert_eq!(r.bytes(), None, "5 bytes announced, 2 there");
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.bytes(), Some(None), "NULL");
        let mut r = Reader::new(&[0, 0, 0, 31, b'x']);
        assert_eq!(r.fixed::<32>(), None, "a fixed string of the wrong size");
        assert_eq!(Reader::new(&[1, 2, 3]).ulong(), None);
    }
}
