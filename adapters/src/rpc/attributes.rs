//! `C_GetAttributeValue` on the wire: the capacity asked for each
//! attribute, and each value read back into the application's buffer in
//! the platform's native layout (PKCS11-RPC.md, section 5.1).
//!
//! Apart from the calls because this is the one reply whose values are
//! typed by attribute: the server sends a CK_ULONG as 8 bytes and a
//! CK_BBOOL as one, whatever the platform's own sizes, and 0.24.1 cannot
//! say "empty, not NULL" and answers a length query of
//! `CKA_ALLOWED_MECHANISMS` wrongly. Those differences are made good here
//! and nowhere else.

use p11ha_core::Result;
use p11ha_core::ck::{Rv, UNAVAILABLE};
use p11ha_core::port::AttrOut;

use super::codec::{AttrClass, NATIVE, Reader, attr_class, put_native_ulong};

/// The most attributes of one `C_GetAttributeValue` p11ha sends.
pub(super) const MAX_GET: usize = 64;
/// The capacity asked for `CKA_ALLOWED_MECHANISMS` when the application
/// asks for its length (0.24.1 answers a length query of it wrongly).
const MECHANISMS_PROBE: u32 = 8 * 64;

/// The capacity to ask for one attribute of `C_GetAttributeValue`.
pub(super) fn request_capacity(a: &AttrOut<'_>) -> u32 {
    match (attr_class(a.ty), a.buf.as_deref()) {
        (AttrClass::MechanismArray, None) => MECHANISMS_PROBE,
        (AttrClass::MechanismArray, Some(b)) => ((b.len() / NATIVE).min(1024) * 8).max(8) as u32,
        (_, None) => 0,
        (AttrClass::Bool, Some(_)) => 1,
        (AttrClass::Ulong, Some(_)) => 8,
        (_, Some(b)) => b.len().min(0x7fff_fffe) as u32,
    }
}

/// Reads the `aA` array and the `u` CK_RV of a `C_GetAttributeValue` reply
/// into `t`, converting values to the platform's native layout.
pub(super) fn read_attributes(r: &mut Reader<'_>, t: &mut [AttrOut<'_>]) -> Option<Result<Rv>> {
    let count = r.u32()? as usize;
    let mut slots = t
        .iter_mut()
        .filter(|a| attr_class(a.ty) != AttrClass::Template);
    let mut too_small = false;
    for _ in 0..count {
        let a = slots.next()?;
        if u64::from(r.u32()?) != a.ty {
            return None;
        }
        if r.byte()? == 0 {
            a.len = None;
            continue;
        }
        let length = r.u32()? as usize;
        let native_len = match attr_class(a.ty) {
            AttrClass::Bool => {
                let b = r.byte()?;
                match a.buf.as_deref_mut() {
                    Some([]) => {
                        too_small = true;
                        a.len = None;
                        continue;
                    }
                    Some([first, ..]) => *first = b,
                    None => {}
                }
                1
            }
            AttrClass::Ulong => {
                let v = r.ulong()?;
                if let Some(buf) = a.buf.as_deref_mut() {
                    if buf.len() < NATIVE {
                        too_small = true;
                        a.len = None;
                        continue;
                    }
                    put_native_ulong(v, buf)?;
                }
                NATIVE
            }
            AttrClass::MechanismArray => {
                let n = r.u32()? as usize;
                let mut dst = a.buf.as_deref_mut();
                if dst.as_deref().is_some_and(|d| d.len() < n * NATIVE) {
                    too_small = true;
                    a.len = None;
                    for _ in 0..n {
                        r.ulong()?;
                    }
                    continue;
                }
                for i in 0..n {
                    let m = r.ulong()?;
                    if let Some(d) = dst.as_deref_mut() {
                        put_native_ulong(m, &mut d[i * NATIVE..])?;
                    }
                }
                n * NATIVE
            }
            AttrClass::Date | AttrClass::Bytes => {
                let value = r.bytes()?;
                match (a.buf.as_deref_mut(), value) {
                    (Some(buf), Some(v)) => {
                        if v.len() > buf.len() {
                            too_small = true;
                            a.len = None;
                            continue;
                        }
                        buf[..v.len()].copy_from_slice(v);
                        v.len()
                    }
                    // A size query: a placeholder value, the length given.
                    (None, _) => length,
                    // An empty buffer goes out as a size query (0.24.1
                    // cannot say "empty, not NULL"), answered with the
                    // length and no value.
                    (Some(buf), None) if length > buf.len() => {
                        too_small = true;
                        a.len = None;
                        continue;
                    }
                    // A buffer was sent but no value came: not the protocol.
                    (Some(_), None) if length != 0 => return None,
                    (Some(_), None) => 0,
                }
            }
            AttrClass::Template => return None,
        };
        a.len = Some(native_len);
    }
    if slots.next().is_some() {
        return None;
    }
    let rv = Rv(r.ulong()?);
    Some(Ok(match rv {
        Rv::OK if too_small => Rv::BUFFER_TOO_SMALL,
        rv if rv.0 == UNAVAILABLE => return None,
        rv => rv,
    }))
}
