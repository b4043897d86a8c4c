//! The one place where the application's raw pointers become Rust
//! references.
//!
//! Every conversion here checks what PKCS#11 lets a library check (NULL
//! where a pointer is required, a NULL buffer with a non-zero length,
//! lengths that do not fit this platform) and answers `CKR_ARGUMENTS_BAD`
//! otherwise; a template or an input longer than p11ha carries
//! ([`capacity::TEMPLATE`], [`capacity::DATA`]) is answered
//! `CKR_HOST_MEMORY`. Every count is judged before the first entry is
//! read, and an output's room is never walked: only what is returned is
//! written. What no library can check (that a non-NULL pointer really
//! points at as many bytes as the application says) is the application's
//! side of the PKCS#11 contract: [`Contract`] stands for it. An exported
//! function makes one, once, for the call it serves (the one `unsafe` of
//! every export), and the bodies in [`crate::calls`] turn that call's
//! pointer arguments into references through its methods, which are safe:
//! the contract was asserted where the call came in.

use std::ffi::{CStr, c_char, c_void};
use std::marker::PhantomData;
use std::ptr;

use cryptoki_sys::*;
use p11ha_adapters::sys::{from_ulong, len_to_ulong, ulong_to_len};
use p11ha_core::ck::{ParamKind, Rv, param_kind};
use p11ha_core::port::{Attr, AttrOut, Mechanism, Param};
use p11ha_core::{Error, Result};

use crate::runtime::capacity;

const BAD: Error = Error::Rv(Rv::ARGUMENTS_BAD);
/// More than p11ha carries in one call ([`capacity::TEMPLATE`],
/// [`capacity::DATA`]). PKCS#11 lets every function answer
/// `CKR_HOST_MEMORY` (v2.40 5.1.1, universal return values), and it is
/// what a remote member's request that does not fit its buffer answers.
const TOO_MANY: Error = Error::Rv(Rv::HOST_MEMORY);

/// A count of `T`s as `usize`; `CKR_ARGUMENTS_BAD` if no buffer can hold
/// that many: more than `isize::MAX` bytes, the most any object (and so any
/// slice) may span. Such a length is refused before a slice is made over
/// it, since the application's buffer is certainly smaller.
fn count<T>(n: CK_ULONG) -> Result<usize> {
    let n = ulong_to_len(n).ok_or(BAD)?;
    let max = isize::MAX.unsigned_abs() / std::mem::size_of::<T>().max(1);
    if n > max { Err(BAD) } else { Ok(n) }
}

/// A count of at most `max` `T`s that p11ha carries: `CKR_ARGUMENTS_BAD`
/// as [`count`] says, then `CKR_HOST_MEMORY` past `max`. Both before
/// anything at the pointer is read, so a huge count is answered at once.
fn bounded<T>(n: CK_ULONG, max: usize) -> Result<usize> {
    let n = count::<T>(n)?;
    if n > max { Err(TOO_MANY) } else { Ok(n) }
}

/// The room of an output buffer in bytes, as `usize`; `CKR_ARGUMENTS_BAD`
/// as [`count`] says. Any room that fits is taken: only what is returned
/// is written.
fn len(n: CK_ULONG) -> Result<usize> {
    count::<u8>(n)
}

/// The length of an input buffer (or of bytes asked for, as
/// `C_GenerateRandom`'s): as [`bounded`], at most [`capacity::DATA`].
fn input_len(n: CK_ULONG) -> Result<usize> {
    bounded::<u8>(n, capacity::DATA)
}

/// The bytes at `p`. NULL is accepted for an empty buffer only.
///
/// # Safety
/// A non-NULL `p` points at `n` readable bytes that stay valid, and are not
/// written through another reference, for `'a`.
unsafe fn bytes<'a>(p: *const u8, n: CK_ULONG) -> Result<&'a [u8]> {
    let n = input_len(n)?;
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
unsafe fn bytes_mut<'a>(p: *mut u8, n: CK_ULONG) -> Result<&'a mut [u8]> {
    let n = input_len(n)?;
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
unsafe fn optional<'a>(p: *const u8, n: CK_ULONG) -> Result<Option<&'a [u8]>> {
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
unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T> {
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
    unsafe fn new(p: *mut u8, len: *mut CK_ULONG) -> Result<Self> {
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
    unsafe fn with_input(
        input: *const u8,
        input_len: CK_ULONG,
        p: *mut u8,
        len: *mut CK_ULONG,
    ) -> Result<(Input<'a>, Self)> {
        // SAFETY: forwarded contract.
        let len = unsafe { out(len) }?;
        let in_n = self::input_len(input_len)?;
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
unsafe fn template<'a>(t: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<Attr<'a>>> {
    let n = bounded::<CK_ATTRIBUTE>(n, capacity::TEMPLATE)?;
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
unsafe fn out_template<'a>(
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<(Vec<AttrOut<'a>>, &'a mut [CK_ATTRIBUTE])> {
    let n = bounded::<CK_ATTRIBUTE>(n, capacity::TEMPLATE)?;
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
unsafe fn mechanism<'a>(m: *const CK_MECHANISM) -> Result<Mechanism<'a>> {
    // SAFETY: checked for NULL; readable by the contract.
    let m = unsafe { m.as_ref() }.ok_or(BAD)?;
    let ty = from_ulong(m.mechanism);
    let n = input_len(m.ulParameterLen)?;
    let p = m.pParameter as *const c_void;
    // SAFETY: the parameter has n readable bytes by the contract.
    let raw = unsafe { bytes(p as *const u8, m.ulParameterLen) }?;
    if raw.is_empty() {
        return Ok(Mechanism {
            ty,
            param: Param::None,
        });
    }
    // The structures' own buffers are readable by the contract, like the
    // parameter itself: `field` makes a slice of one.
    let field = |p: *const u8, n: CK_ULONG| {
        // SAFETY: a buffer a parameter structure points at is readable for
        // its length, for 'a, by the caller's contract.
        unsafe { bytes(p, n) }
    };
    let decoded = match param_kind(ty) {
        ParamKind::Flat => Some(Param::Flat(raw)),
        ParamKind::Handle => {
            // SAFETY: p has n readable bytes (above).
            let h = unsafe { read_struct::<CK_OBJECT_HANDLE>(p, n) };
            h.map(|h| Param::Handle(from_ulong(h)))
        }
        // SAFETY: p has n readable bytes (above).
        ParamKind::Oaep => match unsafe { read_struct::<CK_RSA_PKCS_OAEP_PARAMS>(p, n) } {
            Some(o) => Some(Param::Oaep {
                hash: from_ulong(o.hashAlg),
                mgf: from_ulong(o.mgf),
                source: from_ulong(o.source),
                source_data: field(o.pSourceData as *const u8, o.ulSourceDataLen)?,
            }),
            None => None,
        },
        // SAFETY: p has n readable bytes (above).
        ParamKind::Ecdh1 => match unsafe { read_struct::<CK_ECDH1_DERIVE_PARAMS>(p, n) } {
            Some(e) => Some(Param::Ecdh1 {
                kdf: from_ulong(e.kdf),
                shared_data: field(e.pSharedData, e.ulSharedDataLen)?,
                public_data: field(e.pPublicData, e.ulPublicDataLen)?,
            }),
            None => None,
        },
        // SAFETY: p has n readable bytes (above).
        ParamKind::Gcm => match unsafe { read_struct::<CK_GCM_PARAMS>(p, n) } {
            Some(g) => Some(Param::Gcm {
                iv: field(g.pIv, g.ulIvLen)?,
                iv_bits: from_ulong(g.ulIvBits),
                aad: field(g.pAAD, g.ulAADLen)?,
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
unsafe fn ulong_list(
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

/// The PKCS#11 contract of one call: the pointer arguments the application
/// passed to the exported function being served are NULL where PKCS#11
/// allows it, or valid for the lengths given (and for writes where they are
/// outputs), and unaliased by anything p11ha holds, for the duration of the
/// call (`'call`).
///
/// Only an exported function makes one ([`Contract::assume`]), for the
/// call it serves, and hands it with that call's arguments to the body in
/// [`crate::calls`]; the methods below may be given only those arguments.
#[derive(Clone, Copy)]
pub struct Contract<'call>(PhantomData<&'call mut ()>);

impl<'call> Contract<'call> {
    /// The contract of the call being served.
    ///
    /// # Safety
    /// Called by an exported PKCS#11 function (or p11ha extension), whose
    /// caller passed its arguments as PKCS#11 defines them for it; the
    /// contract is handed only that call's arguments, and does not outlive
    /// the call.
    pub unsafe fn assume() -> Self {
        Contract(PhantomData)
    }

    /// A required output location: `CKR_ARGUMENTS_BAD` for NULL.
    pub fn out<T>(self, p: *mut T) -> Result<&'call mut T> {
        // SAFETY: by the call's contract, a non-NULL p is a writable T.
        unsafe { out(p) }
    }

    /// An input that may be NULL.
    pub fn optional_ref<T>(self, p: *const T) -> Option<&'call T> {
        // SAFETY: by the call's contract, a non-NULL p is a readable T.
        unsafe { p.as_ref() }
    }

    /// `n` input bytes at `p` (NULL for none).
    pub fn bytes(self, p: *const u8, n: CK_ULONG) -> Result<&'call [u8]> {
        // SAFETY: by the call's contract, a non-NULL p has n readable bytes.
        unsafe { bytes(p, n) }
    }

    /// `n` bytes at `p` to write (NULL for none).
    pub fn bytes_mut(self, p: *mut u8, n: CK_ULONG) -> Result<&'call mut [u8]> {
        // SAFETY: by the call's contract, a non-NULL p has n writable bytes.
        unsafe { bytes_mut(p, n) }
    }

    /// A secret (a PIN): NULL means none (the protected authentication
    /// path), whatever `n` says.
    pub fn optional(self, p: *const u8, n: CK_ULONG) -> Result<Option<&'call [u8]>> {
        // SAFETY: by the call's contract, a non-NULL p has n readable bytes.
        unsafe { optional(p, n) }
    }

    /// A NUL-terminated string, or NULL.
    pub fn c_str(self, p: *const c_char) -> Option<&'call CStr> {
        // SAFETY: by the call's contract, a non-NULL p is NUL-terminated and
        // readable up to its NUL.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
    }

    /// A variable-length output (`p`, `*len`).
    pub fn out_buf(self, p: *mut u8, len: *mut CK_ULONG) -> Result<OutBuf<'call>> {
        // SAFETY: by the call's contract: len is NULL or writable, a
        // non-NULL p has *len writable bytes.
        unsafe { OutBuf::new(p, len) }
    }

    /// An input (`input`, `input_len`) and a variable-length output (`p`,
    /// `*len`), which PKCS#11 lets share memory.
    pub fn in_out(
        self,
        input: *const u8,
        input_len: CK_ULONG,
        p: *mut u8,
        len: *mut CK_ULONG,
    ) -> Result<(Input<'call>, OutBuf<'call>)> {
        // SAFETY: by the call's contract, as out_buf and bytes.
        unsafe { OutBuf::with_input(input, input_len, p, len) }
    }

    /// An input template of `n` attributes.
    pub fn template(self, t: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<Attr<'call>>> {
        // SAFETY: by the call's contract, a non-NULL t has n attributes whose
        // values are readable.
        unsafe { template(t, n) }
    }

    /// An output template (`C_GetAttributeValue`), and the array itself for
    /// the lengths written back.
    pub fn out_template(
        self,
        t: *mut CK_ATTRIBUTE,
        n: CK_ULONG,
    ) -> Result<(Vec<AttrOut<'call>>, &'call mut [CK_ATTRIBUTE])> {
        // SAFETY: by the call's contract, a non-NULL t has n writable
        // attributes whose values are writable and do not overlap.
        unsafe { out_template(t, n) }
    }

    /// A mechanism and its parameter.
    pub fn mechanism(self, m: *const CK_MECHANISM) -> Result<Mechanism<'call>> {
        // SAFETY: by the call's contract, a non-NULL m and its parameter's
        // buffers are readable.
        unsafe { mechanism(m) }
    }

    /// A list of `CK_ULONG`s with its count in/out (`list` NULL asks for the
    /// count), filled by `fill` as [`ulong_list`] says.
    pub fn ulong_list(
        self,
        list: *mut CK_ULONG,
        count: *mut CK_ULONG,
        fill: impl Fn(Option<&mut [u64]>) -> Result<usize>,
    ) -> Result<()> {
        // SAFETY: by the call's contract: count is NULL or writable, a
        // non-NULL list has *count writable entries.
        unsafe { ulong_list(list, count, fill) }
    }

    /// Room for at most `max` handles at `p` (`C_FindObjects`), into which
    /// [`Handles::write`] puts those found.
    pub fn handles(self, p: *mut CK_ULONG, max: CK_ULONG) -> Result<Handles<'call>> {
        // No slice is made over the array: any `max` that fits is taken.
        let max = ulong_to_len(max).ok_or(BAD)?;
        if p.is_null() && max != 0 {
            return Err(BAD);
        }
        Ok(Handles {
            p,
            max,
            _call: PhantomData,
        })
    }

    /// Writes `items` to `list` as PKCS#11 lists of structures go: a NULL
    /// `list` asks for the count, a short one gets `CKR_BUFFER_TOO_SMALL`
    /// with the count written.
    pub fn list_of<T: Copy>(self, list: *mut T, count: *mut CK_ULONG, items: &[T]) -> Result<()> {
        let count = self.out(count)?;
        let needed = len_to_ulong(items.len())?;
        if list.is_null() {
            *count = needed;
            return Ok(());
        }
        if *count < needed {
            *count = needed;
            return Err(Error::BufferTooSmall {
                needed: items.len(),
            });
        }
        for (i, item) in items.iter().enumerate() {
            // SAFETY: by the call's contract list has *count >= items.len()
            // writable entries.
            unsafe { list.add(i).write(*item) };
        }
        *count = needed;
        Ok(())
    }

    /// `C_Initialize`'s argument: NULL or a `CK_C_INITIALIZE_ARGS`.
    pub fn init_args(self, p: *mut c_void) -> Option<&'call CK_C_INITIALIZE_ARGS> {
        self.optional_ref(p as *const CK_C_INITIALIZE_ARGS)
    }
}

/// The application's array of object handles of one `C_FindObjects`.
pub struct Handles<'call> {
    p: *mut CK_ULONG,
    max: usize,
    _call: PhantomData<&'call mut CK_ULONG>,
}

impl Handles<'_> {
    /// How many it holds.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Writes `items` (at most [`Handles::max`]) from the start; how many.
    /// Only those entries are touched, whatever `max` the application gave.
    pub fn write(&mut self, items: &[u64]) -> Result<usize> {
        let n = items.len().min(self.max);
        for (i, &h) in items[..n].iter().enumerate() {
            // SAFETY: i < max, and the array has max writable entries by the
            // call's contract (made in Contract::handles).
            unsafe { self.p.add(i).write(p11ha_adapters::sys::to_ulong(h)?) };
        }
        Ok(n)
    }
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
        // SAFETY: (each call) the buffers are real and small; the lengths
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

    #[test]
    fn counts_past_what_p11ha_carries_are_refused_before_an_entry_is_read() {
        fn host_memory<T>(r: Result<T>) -> bool {
            matches!(r, Err(Error::Rv(Rv::HOST_MEMORY)))
        }
        let buf = [0u8; 8];
        let attrs = [CK_ATTRIBUTE {
            type_: 0,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        let mut out = attrs;
        let many = (capacity::TEMPLATE + 1) as CK_ULONG;
        let long = capacity::DATA as CK_ULONG + 1;
        // SAFETY: (each call) the buffers are real and small; the counts
        // are past p11ha's bounds, which must be refused before the pointer
        // is used.
        unsafe {
            assert!(host_memory(template(attrs.as_ptr(), many)));
            assert!(host_memory(out_template(out.as_mut_ptr(), many)));
            assert!(host_memory(bytes(buf.as_ptr(), long)));
            assert!(host_memory(optional(buf.as_ptr(), long)));
            // A count no buffer can have is still the application's error.
            assert!(matches!(template(attrs.as_ptr(), 1 << 63), Err(BAD)));
            assert!(matches!(bytes(buf.as_ptr(), 1 << 63), Err(BAD)));
            // At the bounds, taken (the slices are made, never read here).
            assert_eq!(
                input_len(capacity::DATA as CK_ULONG).ok(),
                Some(capacity::DATA)
            );
            let n = bounded::<CK_ATTRIBUTE>(capacity::TEMPLATE as CK_ULONG, capacity::TEMPLATE);
            assert_eq!(n.ok(), Some(capacity::TEMPLATE));
            // An output's room is not bounded by DATA: only what is
            // returned is written.
            assert_eq!(len_of(long), Some(capacity::DATA + 1));
        }
    }

    fn len_of(n: CK_ULONG) -> Option<usize> {
        len(n).ok()
    }
}
