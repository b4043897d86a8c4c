//! The one place where the application's raw pointers become Rust
//! references.
//!
//! Every function here checks what PKCS#11 lets a library check (NULL where
//! a pointer is required, a NULL buffer with a non-zero length, lengths that
//! do not fit this platform) and answers `CKR_ARGUMENTS_BAD` otherwise. What
//! no library can check (that a non-NULL pointer really points at as many
//! bytes as the application says) is the application's side of the PKCS#11
//! contract, and the `# Safety` sections below say so.

use std::ffi::c_void;
use std::ptr;

use cryptoki_sys::*;
use p11ha_adapters::sys::{from_ulong, len_to_ulong, ulong_to_len};
use p11ha_core::ck::{ParamKind, Rv, param_kind};
use p11ha_core::port::{Attr, AttrOut, Mechanism, Param};
use p11ha_core::{Error, Result};

const BAD: Error = Error::Rv(Rv::ARGUMENTS_BAD);

/// A count of `T`s as `usize`; `CKR_ARGUMENTS_BAD` if no buffer can hold
/// that many: more than `isize::MAX` bytes, the most any object (and so any
/// slice) may span. Such a length is refused before a slice is made over
/// it, since the application's buffer is certainly smaller.
fn count<T>(n: CK_ULONG) -> Result<usize> {
    let n = ulong_to_len(n).ok_or(BAD)?;
    let max = isize::MAX.unsigned_abs() / std::mem::size_of::<T>().max(1);
    if n > max { Err(BAD) } else { Ok(n) }
}

/// A length in bytes as `usize`; `CKR_ARGUMENTS_BAD` as [`count`] says.
fn len(n: CK_ULONG) -> Result<usize> {
    count::<u8>(n)
}

/// The bytes at `p`. NULL is accepted for an empty buffer only.
///
/// # Safety
/// A non-NULL `p` points at `n` readable bytes that stay valid, and are not
/// written through another reference, for `'a`.
pub unsafe fn bytes<'a>(p: *const u8, n: CK_ULONG) -> Result<&'a [u8]> {
    let n = len(n)?;
    if p.is_null() {
        return if n == 0 { Ok(&[]) } else { Err(BAD) };
    }
    // SAFETY: non-NULL, with n readable bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A writable buffer of `n` bytes. NULL is accepted for an empty one only.
///
/// # Safety
/// A non-NULL `p` points at `n` writable bytes that stay valid, and are not
/// used through another reference, for `'a`.
pub unsafe fn bytes_mut<'a>(p: *mut u8, n: CK_ULONG) -> Result<&'a mut [u8]> {
    let n = len(n)?;
    if p.is_null() {
        return if n == 0 { Ok(&mut []) } else { Err(BAD) };
    }
    // SAFETY: non-NULL, with n writable bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// An optional secret (a PIN): NULL means none (the protected
/// authentication path), whatever the length says.
///
/// # Safety
/// As [`bytes`].
pub unsafe fn optional<'a>(p: *const u8, n: CK_ULONG) -> Result<Option<&'a [u8]>> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { bytes(p, n).map(Some) }
    }
}

/// A required output location.
///
/// # Safety
/// A non-NULL `p` points at a writable `T` valid for `'a`.
pub unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T> {
    // SAFETY: checked for NULL; valid and writable by the caller's contract.
    unsafe { p.as_mut() }.ok_or(BAD)
}

/// Whether two byte ranges share memory.
fn overlap(a: *const u8, an: usize, b: *const u8, bn: usize) -> bool {
    let (a, b) = (a as usize, b as usize);
    an != 0 && bn != 0 && a < b.saturating_add(bn) && b < a.saturating_add(an)
}

/// An output buffer with its in/out length, as the PKCS#11 functions that
/// return bytes take them: a NULL buffer asks for the length; a buffer that
/// is too small gets `CKR_BUFFER_TOO_SMALL` with the needed length written.
pub struct OutBuf<'a> {
    buf: Option<&'a mut [u8]>,
    len: &'a mut CK_ULONG,
}

impl<'a> OutBuf<'a> {
    /// # Safety
    /// `len` is NULL or points at a writable `CK_ULONG`; a non-NULL `p` points
    /// at `*len` writable bytes; both stay valid for `'a` and are not used
    /// through another reference meanwhile (use [`OutBuf::with_input`] when
    /// an input buffer may share memory with this one).
    pub unsafe fn new(p: *mut u8, len: *mut CK_ULONG) -> Result<Self> {
        // SAFETY: forwarded contract.
        let len = unsafe { out(len) }?;
        let buf = if p.is_null() {
            None
        } else {
            let n = self::len(*len)?;
            // SAFETY: non-NULL, with *len writable bytes by the contract.
            Some(unsafe { std::slice::from_raw_parts_mut(p, n) })
        };
        Ok(OutBuf { buf, len })
    }

    /// The output buffer together with an input one (`input`, `input_len`)
    /// that PKCS#11 lets point at the same memory (in-place encryption): the
    /// input is then copied first, so that no byte is both read through one
    /// reference and written through another.
    ///
    /// # Safety
    /// As [`OutBuf::new`] and [`bytes`].
    pub unsafe fn with_input(
        input: *const u8,
        input_len: CK_ULONG,
        p: *mut u8,
        len: *mut CK_ULONG,
    ) -> Result<(Input<'a>, Self)> {
        // SAFETY: forwarded contract.
        let len = unsafe { out(len) }?;
        let in_n = self::len(input_len)?;
        // A NULL output asks for the length: the incoming `*len` means
        // nothing then (PKCS#11 5.2), and GnuTLS leaves it at 2^63 or more.
        let overlaps =
            !p.is_null() && !input.is_null() && overlap(input, in_n, p, self::len(*len)?);
        let input = if overlaps {
            // SAFETY: input is non-NULL with in_n readable bytes; it is copied
            // before the output slice below is made.
            Input::Copied(unsafe { std::slice::from_raw_parts(input, in_n) }.to_vec())
        } else {
            // SAFETY: forwarded contract; no overlap with the output.
            Input::Borrowed(unsafe { bytes(input, input_len) }?)
        };
        // SAFETY: forwarded contract (len re-borrowed from the same pointer).
        let out = unsafe { OutBuf::new(p, len) }?;
        Ok((input, out))
    }

    /// The buffer, `None` for a length query.
    pub fn buf(&mut self) -> Option<&mut [u8]> {
        self.buf.as_deref_mut()
    }

    /// Writes the length PKCS#11 says to write for `result`.
    pub fn finish(self, result: Result<usize>) -> Result<()> {
        match result {
            Ok(n) => {
                *self.len = len_to_ulong(n)?;
                Ok(())
            }
            Err(Error::BufferTooSmall { needed }) => {
                *self.len = len_to_ulong(needed)?;
                Err(Error::BufferTooSmall { needed })
            }
            Err(e) => Err(e),
        }
    }
}

/// Input bytes, borrowed from the application or copied where they shared
/// memory with the output.
pub enum Input<'a> {
    /// The application's own buffer.
    Borrowed(&'a [u8]),
    /// A copy.
    Copied(Vec<u8>),
}

impl Input<'_> {
    /// The bytes.
    pub fn get(&self) -> &[u8] {
        match self {
            Input::Borrowed(b) => b,
            Input::Copied(v) => v,
        }
    }
}

/// The attributes of an input template.
///
/// # Safety
/// A non-NULL `t` points at `n` `CK_ATTRIBUTE`s whose values are as
/// [`bytes`] requires, all valid for `'a`.
pub unsafe fn template<'a>(t: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<Attr<'a>>> {
    let n = count::<CK_ATTRIBUTE>(n)?;
    if t.is_null() {
        return if n == 0 { Ok(Vec::new()) } else { Err(BAD) };
    }
    // SAFETY: non-NULL with n attributes by the contract.
    let raw = unsafe { std::slice::from_raw_parts(t, n) };
    raw.iter()
        .map(|a| {
            Ok(Attr {
                ty: from_ulong(a.type_),
                // SAFETY: the attribute's value is as `bytes` requires.
                value: unsafe { bytes(a.pValue as *const u8, a.ulValueLen) }?,
            })
        })
        .collect()
}

/// The attributes of an output template (`C_GetAttributeValue`), and the
/// array itself so that lengths can be written back.
///
/// # Safety
/// A non-NULL `t` points at `n` writable `CK_ATTRIBUTE`s; each non-NULL
/// `pValue` points at `ulValueLen` writable bytes not shared with another
/// attribute; all valid for `'a`.
pub unsafe fn out_template<'a>(
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<(Vec<AttrOut<'a>>, &'a mut [CK_ATTRIBUTE])> {
    let n = count::<CK_ATTRIBUTE>(n)?;
    if t.is_null() {
        return if n == 0 {
            Ok((Vec::new(), &mut []))
        } else {
            Err(BAD)
        };
    }
    // SAFETY: non-NULL with n writable attributes by the contract.
    let raw = unsafe { std::slice::from_raw_parts_mut(t, n) };
    let mut outs = Vec::with_capacity(n);
    for a in raw.iter() {
        let buf = if a.pValue.is_null() {
            None
        } else {
            let n = len(a.ulValueLen)?;
            // SAFETY: non-NULL with ulValueLen writable bytes by the contract.
            Some(unsafe { std::slice::from_raw_parts_mut(a.pValue as *mut u8, n) })
        };
        outs.push(AttrOut {
            ty: from_ulong(a.type_),
            buf,
            len: None,
        });
    }
    Ok((outs, raw))
}

/// Writes the per-attribute lengths of a `C_GetAttributeValue` back.
pub fn write_lengths(raw: &mut [CK_ATTRIBUTE], outs: &[AttrOut<'_>]) {
    for (r, o) in raw.iter_mut().zip(outs) {
        r.ulValueLen = match o.len.map(len_to_ulong) {
            Some(Ok(n)) => n,
            _ => CK_UNAVAILABLE_INFORMATION,
        };
    }
}

/// Reads a parameter structure of exactly `T`'s size.
///
/// # Safety
/// `p` points at `n` readable bytes.
unsafe fn read_struct<T: Copy>(p: *const c_void, n: usize) -> Option<T> {
    (n == std::mem::size_of::<T>() && !p.is_null())
        // SAFETY: p has size_of::<T>() readable bytes; read_unaligned makes
        // no assumption about the application's alignment.
        .then(|| unsafe { ptr::read_unaligned(p as *const T) })
}

/// A mechanism, its parameter decoded as far as p11ha knows the layout. A
/// parameter whose size does not match the structure its mechanism takes is
/// passed on as it is ([`Param::Opaque`]), for the member to judge.
///
/// # Safety
/// A non-NULL `m` points at a `CK_MECHANISM` whose parameter, and whatever
/// buffers the parameter structure points at, are readable for `'a`.
pub unsafe fn mechanism<'a>(m: *const CK_MECHANISM) -> Result<Mechanism<'a>> {
    // SAFETY: checked for NULL; readable by the contract.
    let m = unsafe { m.as_ref() }.ok_or(BAD)?;
    let ty = from_ulong(m.mechanism);
    let n = len(m.ulParameterLen)?;
    let p = m.pParameter as *const c_void;
    // SAFETY: the parameter has n readable bytes by the contract.
    let raw = unsafe { bytes(p as *const u8, m.ulParameterLen) }?;
    if raw.is_empty() {
        return Ok(Mechanism {
            ty,
            param: Param::None,
        });
    }
    let decoded = match param_kind(ty) {
        ParamKind::Flat => Some(Param::Flat(raw)),
        // SAFETY (this and the arms below): p has n readable bytes; the
        // buffers the structure points at are readable by the contract.
        ParamKind::Handle => {
            unsafe { read_struct::<CK_OBJECT_HANDLE>(p, n) }.map(|h| Param::Handle(from_ulong(h)))
        }
        ParamKind::Oaep => match unsafe { read_struct::<CK_RSA_PKCS_OAEP_PARAMS>(p, n) } {
            Some(o) => Some(Param::Oaep {
                hash: from_ulong(o.hashAlg),
                mgf: from_ulong(o.mgf),
                source: from_ulong(o.source),
                source_data: unsafe { bytes(o.pSourceData as *const u8, o.ulSourceDataLen) }?,
            }),
            None => None,
        },
        ParamKind::Ecdh1 => match unsafe { read_struct::<CK_ECDH1_DERIVE_PARAMS>(p, n) } {
            Some(e) => Some(Param::Ecdh1 {
                kdf: from_ulong(e.kdf),
                shared_data: unsafe { bytes(e.pSharedData, e.ulSharedDataLen) }?,
                public_data: unsafe { bytes(e.pPublicData, e.ulPublicDataLen) }?,
            }),
            None => None,
        },
        ParamKind::Gcm => match unsafe { read_struct::<CK_GCM_PARAMS>(p, n) } {
            Some(g) => Some(Param::Gcm {
                iv: unsafe { bytes(g.pIv, g.ulIvLen) }?,
                iv_bits: from_ulong(g.ulIvBits),
                aad: unsafe { bytes(g.pAAD, g.ulAADLen) }?,
                tag_bits: from_ulong(g.ulTagBits),
            }),
            None => None,
        },
        ParamKind::Unknown => None,
    };
    Ok(Mechanism {
        ty,
        param: decoded.unwrap_or(Param::Opaque(raw)),
    })
}

/// A list of `CK_ULONG`s written from the core's `u64`s, with the usual
/// count in/out: a NULL list asks for the count.
///
/// # Safety
/// `count` is NULL or writable; a non-NULL `list` has `*count` writable
/// entries; both valid for the call.
pub unsafe fn ulong_list(
    list: *mut CK_ULONG,
    count: *mut CK_ULONG,
    fill: impl Fn(Option<&mut [u64]>) -> Result<usize>,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let count = unsafe { out(count) }?;
    if list.is_null() {
        *count = len_to_ulong(fill(None)?)?;
        return Ok(());
    }
    let room = self::count::<CK_ULONG>(*count)?;
    let needed = fill(None)?;
    if room < needed {
        *count = len_to_ulong(needed)?;
        return Err(Error::BufferTooSmall { needed });
    }
    let mut items = vec![0u64; needed];
    let n = match fill(Some(&mut items)) {
        Ok(n) => n,
        Err(Error::BufferTooSmall { needed }) => {
            *count = len_to_ulong(needed)?;
            return Err(Error::BufferTooSmall { needed });
        }
        Err(e) => return Err(e),
    };
    // SAFETY: list has room >= needed >= n writable entries; the slice
    // spans only the n written, whatever the application said it holds.
    let list = unsafe { std::slice::from_raw_parts_mut(list, n.min(room)) };
    for (o, i) in list.iter_mut().zip(&items[..n]) {
        *o = p11ha_adapters::sys::to_ulong(*i)?;
    }
    *count = len_to_ulong(n)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_no_buffer_can_have_are_refused_before_a_slice_is_made() {
        let mut buf = [0u8; 8];
        let mut attrs = [CK_ATTRIBUTE {
            type_: 0,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        let absurd = CK_ULONG::MAX - 1;
        // SAFETY (each call): the buffers are real and small; the lengths
        // are larger than any object, which is what must be refused before
        // the pointer is used.
        unsafe {
            assert!(matches!(bytes(buf.as_ptr(), absurd), Err(BAD)));
            assert!(matches!(bytes_mut(buf.as_mut_ptr(), absurd), Err(BAD)));
            assert!(matches!(template(attrs.as_ptr(), absurd), Err(BAD)));
            assert!(out_template(attrs.as_mut_ptr(), absurd).is_err());
            let mut len = absurd;
            assert!(OutBuf::new(buf.as_mut_ptr(), &mut len).is_err());
            let mut count = absurd / 2;
            let r = ulong_list(buf.as_mut_ptr() as *mut CK_ULONG, &mut count, |_| Ok(1));
            assert!(matches!(r, Err(BAD)));
            // The largest a byte buffer may be is still accepted as a length.
            let max = isize::MAX.unsigned_abs() as CK_ULONG;
            assert_eq!(len_of(max), Some(isize::MAX.unsigned_abs()));
            assert_eq!(len_of(max + 1), None);
        }
    }

    fn len_of(n: CK_ULONG) -> Option<usize> {
        len(n).ok()
    }
}
