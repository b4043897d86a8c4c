//! The body of every exported function: arguments checked and turned into
//! Rust values (through [`crate::args`]), the engine called, results written
//! back as PKCS#11 says.
//!
//! # Safety
//! Every function here is `unsafe` with one contract: its arguments are
//! what PKCS#11 defines for the C function of the same name (pointers NULL
//! or valid for the lengths given, for the duration of the call). The
//! exports in [`crate::exports`] forward the application's arguments as
//! they are.

use std::ffi::c_void;

use cryptoki_sys::*;
use p11ha_adapters::sys::{
    from_ulong, len_to_ulong, sys_mechanism_info, sys_session_info, sys_slot_info, sys_token_info,
    to_ulong,
};
use p11ha_core::ck::Rv;
use p11ha_core::port::{DualOp, Op};
use p11ha_core::{Error, Result};

use crate::args::{self, OutBuf, bytes, mechanism, optional, out, template};
use crate::runtime::{self, Runtime, with};

const BAD: Error = Error::Rv(Rv::ARGUMENTS_BAD);

fn copy_padded<const N: usize>(dst: &mut [u8; N], src: &[u8]) {
    dst.fill(b' ');
    let n = src.len().min(N);
    dst[..n].copy_from_slice(&src[..n]);
}

// ---- general purpose --------------------------------------------------------

pub(crate) unsafe fn initialize(args: *mut c_void) -> Result<()> {
    // SAFETY: args is NULL or a CK_C_INITIALIZE_ARGS (module contract).
    let args = unsafe { runtime::init_args(args) }?;
    runtime::initialize(args)
}

pub(crate) unsafe fn finalize(reserved: *mut c_void) -> Result<()> {
    if !reserved.is_null() {
        return Err(BAD);
    }
    runtime::finalize()
}

pub(crate) unsafe fn get_info(info: *mut CK_INFO) -> Result<()> {
    with(|_| {
        // SAFETY: a writable CK_INFO or NULL (module contract).
        let info = unsafe { out(info) }?;
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

pub(crate) unsafe fn get_slot_list(
    present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        r.rescan();
        let present = Runtime::token_present_flag(present);
        // SAFETY: module contract for list/count.
        unsafe { args::ulong_list(list, count, |o| r.engine.slot_list(present, o)) }
    })
}

pub(crate) unsafe fn get_slot_info(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let info = unsafe { out(info) }?;
        *info = sys_slot_info(&r.engine.slot_info(from_ulong(slot))?);
        Ok(())
    })
}

pub(crate) unsafe fn get_token_info(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let info = unsafe { out(info) }?;
        *info = sys_token_info(&r.engine.token_info(from_ulong(slot))?);
        Ok(())
    })
}

pub(crate) unsafe fn get_mechanism_list(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        let slot = from_ulong(slot);
        // SAFETY: module contract for list/count.
        unsafe { args::ulong_list(list, count, |o| r.engine.mechanism_list(slot, o)) }
    })
}

pub(crate) unsafe fn get_mechanism_info(
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let info = unsafe { out(info) }?;
        *info = sys_mechanism_info(
            &r.engine
                .mechanism_info(from_ulong(slot), from_ulong(mech))?,
        );
        Ok(())
    })
}

pub(crate) unsafe fn init_token(
    slot: CK_SLOT_ID,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract: a PIN of pin_len bytes or NULL, and a
        // 32-byte label.
        let (pin, label) = unsafe { (optional(pin, pin_len)?, bytes(label, 32)?) };
        let label: &[u8; 32] = label.try_into().map_err(|_| BAD)?;
        r.engine.init_token(from_ulong(slot), pin, label)
    })
}

pub(crate) unsafe fn init_pin(
    s: CK_SESSION_HANDLE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let pin = unsafe { optional(pin, len) }?;
        r.engine.init_pin(from_ulong(s), pin)
    })
}

pub(crate) unsafe fn set_pin(
    s: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let (old, new) = unsafe { (optional(old, old_len)?, optional(new, new_len)?) };
        r.engine.set_pin(from_ulong(s), old, new)
    })
}

// ---- sessions ---------------------------------------------------------------

pub(crate) unsafe fn open_session(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: *mut c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract. Notification callbacks are optional for
        // a library (PKCS#11 5.6): p11ha never calls them.
        let session = unsafe { out(session) }?;
        let h = r.engine.open_session(from_ulong(slot), from_ulong(flags))?;
        *session = to_ulong(h)?;
        Ok(())
    })
}

pub(crate) unsafe fn close_session(s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.close_session(from_ulong(s)))
}

pub(crate) unsafe fn close_all_sessions(slot: CK_SLOT_ID) -> Result<()> {
    with(|r| r.engine.close_all_sessions(from_ulong(slot)))
}

pub(crate) unsafe fn get_session_info(
    s: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let info = unsafe { out(info) }?;
        *info = sys_session_info(&r.engine.session_info(from_ulong(s))?);
        Ok(())
    })
}

pub(crate) unsafe fn get_operation_state(
    s: CK_SESSION_HANDLE,
    state: *mut CK_BYTE,
    len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let mut o = unsafe { OutBuf::new(state, len) }?;
        let n = r.engine.operation_state(from_ulong(s), o.buf());
        o.finish(n)
    })
}

pub(crate) unsafe fn set_operation_state(
    s: CK_SESSION_HANDLE,
    state: *mut CK_BYTE,
    len: CK_ULONG,
    enc: CK_OBJECT_HANDLE,
    auth: CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let state = unsafe { bytes(state, len) }?;
        r.engine
            .set_operation_state(from_ulong(s), state, from_ulong(enc), from_ulong(auth))
    })
}

pub(crate) unsafe fn login(
    s: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let pin = unsafe { optional(pin, len) }?;
        r.engine.login(from_ulong(s), from_ulong(user), pin)
    })
}

pub(crate) unsafe fn logout(s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.logout(from_ulong(s)))
}

// ---- objects ----------------------------------------------------------------

pub(crate) unsafe fn create_object(
    s: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let (t, object) = unsafe { (template(t, n)?, out(object)?) };
        *object = to_ulong(r.engine.create_object(from_ulong(s), &t)?)?;
        Ok(())
    })
}

pub(crate) unsafe fn copy_object(
    s: CK_SESSION_HANDLE,
    src: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let (t, object) = unsafe { (template(t, n)?, out(object)?) };
        *object = to_ulong(r.engine.copy_object(from_ulong(s), from_ulong(src), &t)?)?;
        Ok(())
    })
}

pub(crate) unsafe fn destroy_object(s: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> Result<()> {
    with(|r| r.engine.destroy_object(from_ulong(s), from_ulong(object)))
}

pub(crate) unsafe fn get_object_size(
    s: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    size: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let size = unsafe { out(size) }?;
        *size = to_ulong(r.engine.object_size(from_ulong(s), from_ulong(object))?)?;
        Ok(())
    })
}

pub(crate) unsafe fn get_attribute_value(
    s: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let (mut outs, raw) = unsafe { args::out_template(t, n) }?;
        let result = r
            .engine
            .get_attributes(from_ulong(s), from_ulong(object), &mut outs);
        // The lengths are written whatever the result: PKCS#11 defines them
        // for CKR_ATTRIBUTE_SENSITIVE, _TYPE_INVALID and BUFFER_TOO_SMALL too.
        match result {
            Ok(())
            | Err(Error::Rv(
                Rv::ATTRIBUTE_SENSITIVE | Rv::ATTRIBUTE_TYPE_INVALID | Rv::BUFFER_TOO_SMALL,
            )) => args::write_lengths(raw, &outs),
            Err(_) => {}
        }
        result
    })
}

pub(crate) unsafe fn set_attribute_value(
    s: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let t = unsafe { template(t, n) }?;
        r.engine
            .set_attributes(from_ulong(s), from_ulong(object), &t)
    })
}

pub(crate) unsafe fn find_objects_init(
    s: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let t = unsafe { template(t, n) }?;
        r.engine.find_init(from_ulong(s), &t)
    })
}

/// The most handles one `C_FindObjects` returns; PKCS#11 lets a call return
/// fewer than asked, and the application calls again.
const FIND_BATCH: usize = 1024;

pub(crate) unsafe fn find_objects(
    s: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let count = unsafe { out(count) }?;
        let max = p11ha_adapters::sys::ulong_to_len(max).ok_or(BAD)?;
        if objects.is_null() && max != 0 {
            return Err(BAD);
        }
        let mut found = vec![0u64; max.min(FIND_BATCH)];
        let n = r.engine.find(from_ulong(s), &mut found)?;
        for (i, h) in found[..n].iter().enumerate() {
            // SAFETY: objects has max >= n writable entries (contract).
            unsafe { objects.add(i).write(to_ulong(*h)?) };
        }
        *count = len_to_ulong(n)?;
        Ok(())
    })
}

pub(crate) unsafe fn find_objects_final(s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.find_final(from_ulong(s)))
}

// ---- cryptographic operations -------------------------------------------------

/// The converted arguments of a call that PKCS#11 says ends the active
/// operation whatever it answers (but `CKR_BUFFER_TOO_SMALL` and a length
/// query): where they are refused, the member's operation is ended too
/// (`single`: a single-part call), so that p11ha's refusal leaves the
/// session as the member's own would.
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

pub(crate) unsafe fn op_init(
    s: CK_SESSION_HANDLE,
    op: Op,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let m = unsafe { mechanism(m) }?;
        r.engine.op_init(from_ulong(s), op, &m, from_ulong(key))
    })
}

pub(crate) unsafe fn op_single(
    s: CK_SESSION_HANDLE,
    op: Op,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract (input and output may overlap).
        let a = unsafe { OutBuf::with_input(data, len, o, o_len) };
        let (input, mut o) = or_abandon(r, s, op, true, a)?;
        let n = r.engine.op_single(from_ulong(s), op, input.get(), o.buf());
        o.finish(n)
    })
}

pub(crate) unsafe fn op_update_out(
    s: CK_SESSION_HANDLE,
    op: Op,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract (input and output may overlap).
        let a = unsafe { OutBuf::with_input(data, len, o, o_len) };
        let (input, mut o) = or_abandon(r, s, op, false, a)?;
        let n = r.engine.op_update(from_ulong(s), op, input.get(), o.buf());
        o.finish(n)
    })
}

pub(crate) unsafe fn op_update(
    s: CK_SESSION_HANDLE,
    op: Op,
    data: *mut CK_BYTE,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let data = or_abandon(r, s, op, false, unsafe { bytes(data, len) })?;
        r.engine
            .op_update(from_ulong(s), op, data, None)
            .map(|_| ())
    })
}

pub(crate) unsafe fn op_final(
    s: CK_SESSION_HANDLE,
    op: Op,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let mut o = or_abandon(r, s, op, false, unsafe { OutBuf::new(o, o_len) })?;
        let n = r.engine.op_final(from_ulong(s), op, o.buf());
        o.finish(n)
    })
}

pub(crate) unsafe fn verify(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let a = unsafe { bytes(data, len).and_then(|d| Ok((d, bytes(sig, sig_len)?))) };
        let (data, sig) = or_abandon(r, s, Op::Verify, true, a)?;
        r.engine.verify(from_ulong(s), data, sig)
    })
}

pub(crate) unsafe fn verify_final(
    s: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let sig = or_abandon(r, s, Op::Verify, false, unsafe { bytes(sig, len) })?;
        r.engine.verify_final(from_ulong(s), sig)
    })
}

pub(crate) unsafe fn digest_key(s: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> Result<()> {
    with(|r| r.engine.digest_key(from_ulong(s), from_ulong(key)))
}

pub(crate) unsafe fn dual_update(
    s: CK_SESSION_HANDLE,
    op: DualOp,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract (input and output may overlap).
        let (input, mut o) = unsafe { OutBuf::with_input(data, len, o, o_len) }?;
        let n = r
            .engine
            .dual_update(from_ulong(s), op, input.get(), o.buf());
        o.finish(n)
    })
}

// ---- key management -----------------------------------------------------------

pub(crate) unsafe fn generate_key(
    s: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let (m, t, key) = unsafe { (mechanism(m)?, template(t, n)?, out(key)?) };
        *key = to_ulong(r.engine.generate_key(from_ulong(s), &m, &t)?)?;
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn generate_key_pair(
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
        // SAFETY: module contract.
        let (m, pt, st, public, private) = unsafe {
            (
                mechanism(m)?,
                template(pt, pn)?,
                template(st, sn)?,
                out(public)?,
                out(private)?,
            )
        };
        let (p, k) = r.engine.generate_key_pair(from_ulong(s), &m, &pt, &st)?;
        *public = to_ulong(p)?;
        *private = to_ulong(k)?;
        Ok(())
    })
}

pub(crate) unsafe fn wrap_key(
    s: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    o: *mut CK_BYTE,
    o_len: *mut CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let (m, mut o) = unsafe { (mechanism(m)?, OutBuf::new(o, o_len)?) };
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
pub(crate) unsafe fn unwrap_key(
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
        // SAFETY: module contract.
        let (m, wrapped, t, key) = unsafe {
            (
                mechanism(m)?,
                bytes(wrapped, wrapped_len)?,
                template(t, n)?,
                out(key)?,
            )
        };
        let k = r
            .engine
            .unwrap_key(from_ulong(s), &m, from_ulong(unwrapping), wrapped, &t)?;
        *key = to_ulong(k)?;
        Ok(())
    })
}

pub(crate) unsafe fn derive_key(
    s: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let (m, t, key) = unsafe { (mechanism(m)?, template(t, n)?, out(key)?) };
        *key = to_ulong(
            r.engine
                .derive_key(from_ulong(s), &m, from_ulong(base), &t)?,
        )?;
        Ok(())
    })
}

// ---- random numbers, legacy, events -------------------------------------------

pub(crate) unsafe fn seed_random(
    s: CK_SESSION_HANDLE,
    seed: *mut CK_BYTE,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: module contract.
        let seed = unsafe { bytes(seed, len) }?;
        r.engine.seed_random(from_ulong(s), seed)
    })
}

pub(crate) unsafe fn generate_random(
    s: CK_SESSION_HANDLE,
    o: *mut CK_BYTE,
    len: CK_ULONG,
) -> Result<()> {
    with(|r| {
        // SAFETY: NULL or len writable bytes (module contract).
        let buf = unsafe { args::bytes_mut(o, len) }?;
        r.engine.generate_random(from_ulong(s), buf)
    })
}

pub(crate) unsafe fn get_function_status(s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.function_status(from_ulong(s)))
}

pub(crate) unsafe fn cancel_function(s: CK_SESSION_HANDLE) -> Result<()> {
    with(|r| r.engine.cancel_function(from_ulong(s)))
}

pub(crate) unsafe fn wait_for_slot_event(
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
    runtime::wait_for_slot_event(from_ulong(event_flags)).map(|_| ())
}

// ---- p11ha extensions ---------------------------------------------------------

pub(crate) unsafe fn get_member_info(
    index: CK_ULONG,
    info: *mut crate::exports::P11HA_MEMBER_INFO,
) -> Result<()> {
    with(|r| {
        // SAFETY: NULL or writable (extension contract, as PKCS#11's).
        let info = unsafe { out(info) }?;
        let index = p11ha_adapters::sys::ulong_to_len(index).ok_or(BAD)?;
        let st = r.engine.member_status(index).ok_or(BAD)?;
        *info = crate::exports::P11HA_MEMBER_INFO {
            slotID: to_ulong(st.slot)?,
            memberSlotID: to_ulong(st.member_slot)?,
            ulSessionCount: CK_ULONG::from(st.sessions),
            up: CK_BBOOL::from(st.up),
        };
        Ok(())
    })
}

pub(crate) unsafe fn get_session_member(s: CK_SESSION_HANDLE, index: *mut CK_ULONG) -> Result<()> {
    with(|r| {
        // SAFETY: NULL or writable (extension contract).
        let index = unsafe { out(index) }?;
        *index = len_to_ulong(r.engine.session_member(from_ulong(s))?)?;
        Ok(())
    })
}

pub(crate) unsafe fn inject_fault(index: CK_ULONG, command: *const std::ffi::c_char) -> Result<()> {
    with(|r| {
        if !r.config.fault_injection {
            return Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED));
        }
        if command.is_null() {
            return Err(BAD);
        }
        // SAFETY: a non-NULL command is NUL-terminated (extension contract).
        let command = unsafe { std::ffi::CStr::from_ptr(command) }
            .to_str()
            .map_err(|_| BAD)?;
        let index = p11ha_adapters::sys::ulong_to_len(index).ok_or(BAD)?;
        r.engine
            .with_member(index, |m| m.plan().command(command))
            .ok_or(BAD)?
            .map_err(|_| BAD)
    })
}
