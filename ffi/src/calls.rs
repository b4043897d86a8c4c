//! The body of every exported function: arguments checked and turned into
//! Rust values, the engine called, results written back as PKCS#11 says.
//!
//! Nothing here is `unsafe`: each body gets, with the application's
//! arguments as they are, the [`Contract`] of its call, which the export in
//! [`crate::exports`] asserted, and turns pointers into references only
//! through it ([`crate::args`]).

use std::ffi::c_void;

use cryptoki_sys::*;
use p11ha_adapters::sys::{
    from_ulong, len_to_ulong, sys_mechanism_info, sys_session_info, sys_slot_info, sys_token_info,
    to_ulong,
};
use p11ha_core::ck::{Rv, flags};
use p11ha_core::engine::Function;
use p11ha_core::port::{DualOp, Op};
use p11ha_core::{Error, Result};

use crate::args::Contract;
use crate::runtime::{self, Runtime, with};
use crate::types::P11HA_MEMBER_INFO;

const BAD: Error = Error::Rv(Rv::ARGUMENTS_BAD);

fn copy_padded<const N: usize>(dst: &mut [u8; N], src: &[u8]) {
    dst.fill(b' ');
    let n = src.len().min(N);
    dst[..n].copy_from_slice(&src[..n]);
}

// ---- general purpose --------------------------------------------------------

pub(crate) fn initialize(c: Contract<'_>, args: *mut c_void) -> Result<()> {
    // SAFETY: args is NULL or a CK_C_INITIALIZE_ARGS (module contract).
    runtime::initialize(runtime::init_args(c.init_args(args))?)
}

pub(crate) fn finalize(_: Contract<'_>, reserved: *mut c_void) -> Result<()> {
    if !reserved.is_null() {
        return Err(BAD);
    }
    runtime::finalize()
}

pub(crate) fn get_info(c: Contract<'_>, info: *mut CK_INFO) -> Result<()> {
    with(|_| {
        // SAFETY: a writable CK_INFO or NULL (module contract).
        let info = c.out(info)?;
        let mut manufacturer = [0u8; 32];
        copy_padded(&mut manufacturer, b"p11ha");
        let mut description = [0u8; 32];
        copy_padded(&mut description, b"p11ha high-availability PKCS#11");
        let (major, minor) = crate_version();
        *info = CK_INFO {
            cryptokiVersion: CK_VERSION {
                major: 2,
                minor: 40,
            },
            manufacturerID: manufacturer,
            flags: 0,
            libraryDescription: description,
            libraryVersion: CK_VERSION { major, minor },
        };
        Ok(())
    })
}

fn crate_version() -> (u8, u8) {
    let major = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    let minor = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
    (major, minor)
}

// ---- slots and tokens ---------------------------------------------------------

pub(crate) fn get_slot_list(
    c: Contract<'_>,
    present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        r.rescan();
        let present = present != CK_FALSE;
        c.ulong_list(list, count, |o| r.engine.slot_list(present, o))
    })
}

pub(crate) fn get_slot_info(
    c: Contract<'_>,
    slot: CK_SLOT_ID,
    info: *mut CK_SLOT_INFO,
) -> Result<()> {
    with(|r| {
        let info = c.out(info)?;
        *info = sys_slot_info(&r.engine.slot_info(from_ulong(slot))?);
        Ok(())
    })
}

pub(crate) fn get_token_info(
    c: Contract<'_>,
    slot: CK_SLOT_ID,
    info: *mut CK_TOKEN_INFO,
) -> Result<()> {
    with(|r| {
        let info = c.out(info)?;
        *info = sys_token_info(&r.engine.token_info(from_ulong(slot))?);
        Ok(())
    })
}

pub(crate) fn get_mechanism_list(
    c: Contract<'_>,
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        let slot = from_ulong(slot);
        c.ulong_list(list, count, |o| r.engine.mechanism_list(slot, o))
    })
}

pub(crate) fn get_mechanism_info(
    c: Contract<'_>,
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> Result<()> {
    with(|r| {
        let info = c.out(info)?;
        *info = sys_mechanism_info(
            &r.engine
                .mechanism_info(from_ulong(slot), from_ulong(mech))?,
        );
        Ok(())
    })
}

pub(crate) fn init_token(
    c: Contract<'_>,
    slot: CK_SLOT_ID,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> Result<()> {
    with(|r| {
        let (pin, label) = (c.optional(pin, pin_len)?, c.bytes(label, 32)?);
        let label: &[u8; 32] = label.try_into().map_err(|_| BAD)?;
        r.engine.init_token(from_ulong(slot), pin, label)
    })
}

pub(crate) fn init_pin(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let pin = c.optional(pin, len)?;
        r.engine.init_pin(from_ulong(s), pin)
    })
}

pub(crate) fn set_pin(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let (old, new) = (c.optional(old, old_len)?, c.optional(new, new_len)?);
        r.engine.set_pin(from_ulong(s), old, new)
    })
}

// ---- sessions ---------------------------------------------------------------

pub(crate) fn open_session(
    c: Contract<'_>,
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: *mut c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> Result<()> {
    with(|r| {
        let session = c.out(session)?;
        let h = r.engine.open_session(from_ulong(slot), from_ulong(flags))?;
        *session = to_ulong(h)?;
        Ok(())
    })
}

pub(crate) fn close_session(_: Contract<'_>, s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.close_session(from_ulong(s)))
}

pub(crate) fn close_all_sessions(_: Contract<'_>, slot: CK_SLOT_ID) -> Result<()> {
    with(|r| r.engine.close_all_sessions(from_ulong(slot)))
}

pub(crate) fn get_session_info(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> Result<()> {
    with(|r| {
        let info = c.out(info)?;
        *info = sys_session_info(&r.engine.session_info(from_ulong(s))?);
        Ok(())
    })
}

pub(crate) fn get_operation_state(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    state: *mut CK_BYTE,
    len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        r.engine
            .function_supported(from_ulong(s), Function::GetOperationState)?;
        let mut o = c.out_buf(state, len)?;
        let n = r.engine.operation_state(from_ulong(s), o.buf());
        o.finish(n)
    })
}

pub(crate) fn set_operation_state(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    state: *mut CK_BYTE,
    len: CK_ULONG,
    enc: CK_OBJECT_HANDLE,
    auth: CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        r.engine
            .function_supported(from_ulong(s), Function::SetOperationState)?;
        let state = c.bytes(state, len)?;
        r.engine
            .set_operation_state(from_ulong(s), state, from_ulong(enc), from_ulong(auth))
    })
}

pub(crate) fn login(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let pin = c.optional(pin, len)?;
        r.engine.login(from_ulong(s), from_ulong(user), pin)
    })
}

pub(crate) fn logout(_: Contract<'_>, s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.logout(from_ulong(s)))
}

// ---- objects ----------------------------------------------------------------

pub(crate) fn create_object(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        let (t, object) = (c.template(t, n)?, c.out(object)?);
        *object = to_ulong(r.engine.create_object(from_ulong(s), &t)?)?;
        Ok(())
    })
}

pub(crate) fn copy_object(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    src: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        let (t, object) = (c.template(t, n)?, c.out(object)?);
        *object = to_ulong(r.engine.copy_object(from_ulong(s), from_ulong(src), &t)?)?;
        Ok(())
    })
}

pub(crate) fn destroy_object(
    _: Contract<'_>,
    s: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| r.engine.destroy_object(from_ulong(s), from_ulong(object)))
}

pub(crate) fn get_object_size(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    size: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        let size = c.out(size)?;
        *size = to_ulong(r.engine.object_size(from_ulong(s), from_ulong(object))?)?;
        Ok(())
    })
}

pub(crate) fn get_attribute_value(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let (mut outs, raw) = c.out_template(t, n)?;
        let result = r
            .engine
            .get_attributes(from_ulong(s), from_ulong(object), &mut outs);
        // The lengths are written whatever the result: PKCS#11 defines them
        // for CKR_ATTRIBUTE_SENSITIVE, _TYPE_INVALID and BUFFER_TOO_SMALL too.
        match result {
            Ok(())
            | Err(Error::Rv(
                Rv::ATTRIBUTE_SENSITIVE | Rv::ATTRIBUTE_TYPE_INVALID | Rv::BUFFER_TOO_SMALL,
            )) => crate::args::write_lengths(raw, &outs),
            Err(_) => {}
        }
        result
    })
}

pub(crate) fn set_attribute_value(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let t = c.template(t, n)?;
        r.engine
            .set_attributes(from_ulong(s), from_ulong(object), &t)
    })
}

pub(crate) fn find_objects_init(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let t = c.template(t, n)?;
        r.engine.find_init(from_ulong(s), &t)
    })
}

/// The most handles one `C_FindObjects` returns; PKCS#11 lets a call return
/// fewer than asked, and the application calls again.
const FIND_BATCH: usize = 1024;

pub(crate) fn find_objects(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        let count = c.out(count)?;
        let mut objects = c.handles(objects, max)?;
        let mut found = vec![0u64; objects.max().min(FIND_BATCH)];
        let n = r.engine.find(from_ulong(s), &mut found)?;
        *count = len_to_ulong(objects.write(&found[..n])?)?;
        Ok(())
    })
}

pub(crate) fn find_objects_final(_: Contract<'_>, s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.find_final(from_ulong(s)))
}

// ---- cryptographic operations -------------------------------------------------

/// The converted arguments of a call that PKCS#11 says ends the active
/// operation whatever it answers (but `CKR_BUFFER_TOO_SMALL` and a length
/// query): where they are refused, the member's operation is ended too
/// (`single`: a single-part call), so that p11ha's refusal leaves the
/// session as the member's own would.
/// `CKR_FUNCTION_NOT_SUPPORTED` for a call of `op` where no member of the
/// session's slot has it, before the call's pointers are looked at, as a
/// module that lacks the function answers (after the session handle).
fn supported(r: &Runtime, s: CK_SESSION_HANDLE, op: Op) -> Result<()> {
    match Function::of_op(op) {
        Some(f) => r.engine.function_supported(from_ulong(s), f),
        None => Ok(()),
    }
}

fn or_abandon<T>(
    r: &Runtime,
    s: CK_SESSION_HANDLE,
    op: Op,
    single: bool,
    a: Result<T>,
) -> Result<T> {
    if a.is_err() {
        r.engine.op_abandon(from_ulong(s), op, single);
    }
    a
}

pub(crate) fn op_init(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    op: Op,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        supported(r, s, op)?;
        let m = c.mechanism(m)?;
        r.engine.op_init(from_ulong(s), op, &m, from_ulong(key))
    })
}

pub(crate) fn op_single(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    op: Op,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        supported(r, s, op)?;
        let a = c.in_out(data, len, o, o_len);
        let (input, mut o) = or_abandon(r, s, op, true, a)?;
        let n = r.engine.op_single(from_ulong(s), op, input.get(), o.buf());
        o.finish(n)
    })
}

pub(crate) fn op_update_out(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    op: Op,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        let a = c.in_out(data, len, o, o_len);
        let (input, mut o) = or_abandon(r, s, op, false, a)?;
        let n = r.engine.op_update(from_ulong(s), op, input.get(), o.buf());
        o.finish(n)
    })
}

pub(crate) fn op_update(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    op: Op,
    data: *mut CK_BYTE,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let data = or_abandon(r, s, op, false, c.bytes(data, len))?;
        r.engine
            .op_update(from_ulong(s), op, data, None)
            .map(|_| ())
    })
}

pub(crate) fn op_final(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    op: Op,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        let mut o = or_abandon(r, s, op, false, c.out_buf(o, o_len))?;
        let n = r.engine.op_final(from_ulong(s), op, o.buf());
        o.finish(n)
    })
}

pub(crate) fn verify(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let a = c
            .bytes(data, len)
            .and_then(|d| Ok((d, c.bytes(sig, sig_len)?)));
        let (data, sig) = or_abandon(r, s, Op::Verify, true, a)?;
        r.engine.verify(from_ulong(s), data, sig)
    })
}

pub(crate) fn verify_final(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let sig = or_abandon(r, s, Op::Verify, false, c.bytes(sig, len))?;
        r.engine.verify_final(from_ulong(s), sig)
    })
}

pub(crate) fn digest_key(
    _: Contract<'_>,
    s: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| r.engine.digest_key(from_ulong(s), from_ulong(key)))
}

pub(crate) fn dual_update(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    op: DualOp,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        r.engine
            .function_supported(from_ulong(s), Function::of_dual(op))?;
        let (input, mut o) = c.in_out(data, len, o, o_len)?;
        let n = r
            .engine
            .dual_update(from_ulong(s), op, input.get(), o.buf());
        o.finish(n)
    })
}

// ---- key management -----------------------------------------------------------

pub(crate) fn generate_key(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        let (m, t, key) = (c.mechanism(m)?, c.template(t, n)?, c.out(key)?);
        *key = to_ulong(r.engine.generate_key(from_ulong(s), &m, &t)?)?;
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn generate_key_pair(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    pt: *mut CK_ATTRIBUTE,
    pn: CK_ULONG,
    st: *mut CK_ATTRIBUTE,
    sn: CK_ULONG,
    public: *mut CK_OBJECT_HANDLE,
    private: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        let (m, pt, st, public, private) = {
            (
                c.mechanism(m)?,
                c.template(pt, pn)?,
                c.template(st, sn)?,
                c.out(public)?,
                c.out(private)?,
            )
        };
        let (p, k) = r.engine.generate_key_pair(from_ulong(s), &m, &pt, &st)?;
        *public = to_ulong(p)?;
        *private = to_ulong(k)?;
        Ok(())
    })
}

pub(crate) fn wrap_key(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        let (m, mut o) = (c.mechanism(m)?, c.out_buf(o, o_len)?);
        let n = r.engine.wrap_key(
            from_ulong(s),
            &m,
            from_ulong(wrapping),
            from_ulong(key),
            o.buf(),
        );
        o.finish(n)
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn unwrap_key(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    unwrapping: CK_OBJECT_HANDLE,
    wrapped: *mut CK_BYTE,
    wrapped_len: CK_ULONG,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        let (m, wrapped, t, key) = {
            (
                c.mechanism(m)?,
                c.bytes(wrapped, wrapped_len)?,
                c.template(t, n)?,
                c.out(key)?,
            )
        };
        let k = r
            .engine
            .unwrap_key(from_ulong(s), &m, from_ulong(unwrapping), wrapped, &t)?;
        *key = to_ulong(k)?;
        Ok(())
    })
}

pub(crate) fn derive_key(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        let (m, t, key) = (c.mechanism(m)?, c.template(t, n)?, c.out(key)?);
        *key = to_ulong(
            r.engine
                .derive_key(from_ulong(s), &m, from_ulong(base), &t)?,
        )?;
        Ok(())
    })
}

// ---- random numbers, legacy, events -------------------------------------------

pub(crate) fn seed_random(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    seed: *mut CK_BYTE,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        let seed = c.bytes(seed, len)?;
        r.engine.seed_random(from_ulong(s), seed)
    })
}

pub(crate) fn generate_random(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    o: *mut CK_BYTE,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: NULL or len writable bytes (module contract).
        let buf = c.bytes_mut(o, len)?;
        r.engine.generate_random(from_ulong(s), buf)
    })
}

pub(crate) fn get_function_status(_: Contract<'_>, s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.function_status(from_ulong(s)))
}

pub(crate) fn cancel_function(_: Contract<'_>, s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.cancel_function(from_ulong(s)))
}

pub(crate) fn wait_for_slot_event(
    _: Contract<'_>,
    event_flags: CK_FLAGS,
    slot: *mut CK_SLOT_ID,
    reserved: *mut c_void,
) -> Result<()> {
    with(|_| {
        if slot.is_null() || !reserved.is_null() {
            return Err(BAD);
        }
        Ok(())
    })?;
    // p11ha reports no slot events.
    with(|_| {
        if from_ulong(event_flags) & flags::DONT_BLOCK != 0 {
            Err(Error::Rv(Rv::NO_EVENT))
        } else {
            Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))
        }
    })
}

// ---- p11ha extensions ---------------------------------------------------------

pub(crate) fn get_member_info(
    c: Contract<'_>,
    index: CK_ULONG,
    info: *mut P11HA_MEMBER_INFO,
) -> Result<()> {
    with(|r| {
        // SAFETY: NULL or writable (extension contract, as PKCS#11's).
        let info = c.out(info)?;
        let index = p11ha_adapters::sys::ulong_to_len(index).ok_or(BAD)?;
        let st = r.engine.member_status(index).ok_or(BAD)?;
        *info = P11HA_MEMBER_INFO {
            slotID: to_ulong(st.slot)?,
            memberSlotID: to_ulong(st.member_slot)?,
            ulSessionCount: CK_ULONG::from(st.sessions),
            up: CK_BBOOL::from(st.up),
        };
        Ok(())
    })
}

pub(crate) fn get_session_member(
    c: Contract<'_>,
    s: CK_SESSION_HANDLE,
    index: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: NULL or writable (extension contract).
        let index = c.out(index)?;
        *index = len_to_ulong(r.engine.session_member(from_ulong(s))?)?;
        Ok(())
    })
}

#[cfg(feature = "fault-injection")]
pub(crate) fn inject_fault(
    c: Contract<'_>,
    index: CK_ULONG,
    command: *const std::ffi::c_char,
) -> Result<()> {
    with(|r| {
        if !r.config.fault_injection {
            return Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED));
        }
        let command = c.c_str(command).ok_or(BAD)?.to_str().map_err(|_| BAD)?;
        let index = p11ha_adapters::sys::ulong_to_len(index).ok_or(BAD)?;
        r.engine
            .with_member(index, |m| m.plan().command(command))
            .ok_or(BAD)?
            .map_err(|_| BAD)
    })
}
