//! The `module` adapter: a vendor PKCS#11 module loaded with `dlopen`, each
//! of its slots a member.
//!
//! Loading follows PKCS#11 3.0: `C_GetInterface("PKCS 11")` first, then
//! `C_GetFunctionList`. A 3.x function list starts with the 2.40 one, which
//! is all p11ha calls. A missing (NULL) entry answers
//! `CKR_FUNCTION_NOT_SUPPORTED` instead of crashing.
//!
//! The module is initialised with `CKF_OS_LOCKING_OK`, always: p11ha calls it
//! from many threads, and SoftHSM turns its own locking off (and then
//! corrupts its token files under threads) when given NULL.

use std::ffi::{CStr, CString, c_void};
use std::fmt;
use std::ptr;
use std::sync::Arc;

use cryptoki_sys::*;
use p11ha_core::ck::Rv;
use p11ha_core::port::{
    Attr, AttrOut, DualOp, Mechanism, MechanismInfo, Member, Op, Param, SessionInfo, SlotInfo,
    TokenInfo,
};
use p11ha_core::{Error, Result};

use crate::sys::{self, check, from_ulong, len_to_ulong, to_ulong, ulong_to_len};

/// Why a module could not be loaded.
#[derive(Debug)]
pub struct LoadError {
    /// The module's path.
    pub path: String,
    /// What went wrong, in words (dlerror's text, or the failing call).
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot load PKCS#11 module {}: {}",
            self.path, self.reason
        )
    }
}

impl std::error::Error for LoadError {}

/// A loaded PKCS#11 module.
pub struct Module {
    path: String,
    library: *mut c_void,
    functions: *const CK_FUNCTION_LIST,
    /// Whether p11ha's `C_Initialize` initialised it (and so finalises it).
    /// A module that someone else in the process already initialised is
    /// shared, and left initialised.
    owned: std::sync::atomic::AtomicBool,
}

// SAFETY: the library handle and function list are immutable after load and
// stay valid until Drop; the module itself is initialised with OS locking,
// which PKCS#11 defines as safe to call from many threads at once.
unsafe impl Send for Module {}
// SAFETY: as above; no method mutates through a shared reference except the
// atomic `owned` flag.
unsafe impl Sync for Module {}

fn dlerror_text() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string that stays
    // valid until the next dl* call on this thread; it is copied at once.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown dlopen error".to_owned()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

impl Module {
    /// Loads the module at `path` and finds its function list. It is not
    /// initialised yet: see [`Module::initialize`].
    pub fn load(path: &str) -> std::result::Result<Arc<Module>, LoadError> {
        let fail = |reason: String| LoadError {
            path: path.to_owned(),
            reason,
        };
        let cpath = CString::new(path).map_err(|_| fail("the path holds a NUL byte".into()))?;
        // SAFETY: cpath is a valid NUL-terminated string. Loading a module
        // runs its initialisers; that is what loading a PKCS#11 module means.
        let library = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if library.is_null() {
            return Err(fail(dlerror_text()));
        }
        let mut module = Module {
            path: path.to_owned(),
            library,
            functions: ptr::null(),
            owned: false.into(),
        };
        // On error, dropping `module` closes the library again (finalize is
        // skipped: nothing was initialised).
        module.functions = module
            .function_list()
            .map_err(|reason| fail(reason.to_owned()))?;
        Ok(Arc::new(module))
    }

    fn symbol(&self, name: &CStr) -> *mut c_void {
        // SAFETY: library is a live handle from dlopen, name is NUL-terminated.
        unsafe { libc::dlsym(self.library, name.as_ptr()) }
    }

    fn function_list(&self) -> std::result::Result<*const CK_FUNCTION_LIST, &'static str> {
        let get_interface = self.symbol(c"C_GetInterface");
        if !get_interface.is_null() {
            // SAFETY: C_GetInterface has this signature in PKCS#11 3.0.
            let f: CK_C_GetInterface = unsafe { std::mem::transmute(get_interface) };
            if let Some(f) = f {
                let mut iface: *mut CK_INTERFACE = ptr::null_mut();
                // SAFETY: the name is NUL-terminated and outlives the call;
                // a NULL version asks for the default; iface is a valid out
                // pointer.
                let rv = unsafe {
                    f(
                        c"PKCS 11".as_ptr() as *mut CK_UTF8CHAR,
                        ptr::null_mut(),
                        &mut iface,
                        0,
                    )
                };
                if rv == CKR_OK && !iface.is_null() {
                    // SAFETY: on success iface points at a CK_INTERFACE owned
                    // by the module for as long as it is loaded.
                    let list = unsafe { (*iface).pFunctionList } as *const CK_FUNCTION_LIST;
                    if !list.is_null() {
                        return Ok(list);
                    }
                }
            }
        }
        let get_list = self.symbol(c"C_GetFunctionList");
        if get_list.is_null() {
            return Err("it exports neither C_GetInterface nor C_GetFunctionList");
        }
        // SAFETY: C_GetFunctionList has this signature in every PKCS#11.
        let f: CK_C_GetFunctionList = unsafe { std::mem::transmute(get_list) };
        let f = f.ok_or("C_GetFunctionList is NULL")?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: list is a valid out pointer.
        let rv = unsafe { f(&mut list) };
        if rv != CKR_OK || list.is_null() {
            return Err("C_GetFunctionList failed");
        }
        Ok(list)
    }

    fn list(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: functions was set from the module's own list at load and
        // stays valid while the library is loaded, which self guarantees.
        unsafe { &*self.functions }
    }

    /// The module's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `C_Initialize` with `CKF_OS_LOCKING_OK`. A module already initialised
    /// by someone else in this process is used as it is.
    pub fn initialize(&self) -> Result<()> {
        let f = self
            .list()
            .C_Initialize
            .ok_or(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))?;
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        // SAFETY: args is a valid CK_C_INITIALIZE_ARGS for the call.
        let rv = unsafe { f(&mut args as *mut _ as *mut c_void) };
        match rv {
            CKR_OK => {
                self.owned.store(true, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            CKR_CRYPTOKI_ALREADY_INITIALIZED => Ok(()),
            rv => check(rv),
        }
    }

    /// `C_Finalize`, if p11ha initialised the module.
    pub fn finalize(&self) {
        if !self.owned.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        if let Some(f) = self.list().C_Finalize {
            // SAFETY: NULL is the only valid argument of C_Finalize.
            unsafe { f(ptr::null_mut()) };
        }
    }

    /// `C_GetSlotList`.
    pub fn slots(&self, token_present: bool) -> Result<Vec<u64>> {
        let f = self
            .list()
            .C_GetSlotList
            .ok_or(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))?;
        let present = CK_BBOOL::from(token_present);
        loop {
            let mut n: CK_ULONG = 0;
            // SAFETY: a NULL list asks for the count into n.
            check(unsafe { f(present, ptr::null_mut(), &mut n) })?;
            let mut slots = vec![0; ulong_to_len(n).ok_or(Error::Rv(Rv::GENERAL_ERROR))?];
            // SAFETY: slots has room for n entries, n says so.
            match check(unsafe { f(present, slots.as_mut_ptr(), &mut n) }) {
                // Slots appeared between the two calls: ask again.
                Err(Error::Rv(Rv::BUFFER_TOO_SMALL)) => continue,
                r => r?,
            }
            slots.truncate(ulong_to_len(n).unwrap_or(0));
            return Ok(slots.into_iter().map(from_ulong).collect());
        }
    }

    /// The member for one of this module's slots.
    pub fn member(self: &Arc<Self>, slot: u64) -> Result<ModuleMember> {
        Ok(ModuleMember {
            module: Arc::clone(self),
            slot: to_ulong(slot)?,
        })
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        self.finalize();
        // SAFETY: library came from dlopen and is closed once, here, after
        // the last use of its functions (every member holds an Arc).
        unsafe { libc::dlclose(self.library) };
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module").field("path", &self.path).finish()
    }
}

/// One slot of a loaded module.
#[derive(Clone, Debug)]
pub struct ModuleMember {
    module: Arc<Module>,
    slot: CK_SLOT_ID,
}

impl ModuleMember {
    /// The module this slot belongs to.
    pub fn module(&self) -> &Arc<Module> {
        &self.module
    }
}

/// Calls a function of the module's list, or answers
/// `CKR_FUNCTION_NOT_SUPPORTED` if the module left it NULL.
macro_rules! call {
    ($self:ident, $f:ident ( $($arg:expr),* $(,)? )) => {{
        let f = $self
            .module
            .list()
            .$f
            .ok_or(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))?;
        // SAFETY: f comes from the module's function list, valid while the
        // module is loaded (self holds it). Every pointer argument is built
        // from a live Rust borrow (or is NULL where PKCS#11 allows it) with
        // the matching length, and outlives the call.
        check(unsafe { f($($arg),*) })
    }};
}

fn h(x: u64) -> Result<CK_ULONG> {
    to_ulong(x)
}

/// An input buffer as PKCS#11 takes it.
fn inp(data: &[u8]) -> Result<(*mut CK_BYTE, CK_ULONG)> {
    Ok((data.as_ptr() as *mut CK_BYTE, len_to_ulong(data.len())?))
}

/// An optional input buffer (a PIN; NULL for the protected path).
fn opt(data: Option<&[u8]>) -> Result<(*mut CK_BYTE, CK_ULONG)> {
    match data {
        Some(d) => inp(d),
        None => Ok((ptr::null_mut(), 0)),
    }
}

/// An output buffer: NULL asks for the length.
fn outp(out: &mut Option<&mut [u8]>) -> Result<(*mut CK_BYTE, CK_ULONG)> {
    match out {
        Some(b) => Ok((b.as_mut_ptr(), len_to_ulong(b.len())?)),
        None => Ok((ptr::null_mut(), 0)),
    }
}

/// The length a length-returning call reported, or the length that would
/// have fitted when the buffer was too small.
fn out_len(r: Result<()>, len: CK_ULONG) -> Result<usize> {
    let n = ulong_to_len(len);
    match r {
        Ok(()) => n.ok_or(Error::Rv(Rv::GENERAL_ERROR)),
        Err(Error::Rv(Rv::BUFFER_TOO_SMALL)) => Err(Error::BufferTooSmall {
            needed: n.ok_or(Error::Rv(Rv::BUFFER_TOO_SMALL))?,
        }),
        Err(e) => Err(e),
    }
}

fn template(t: &[Attr<'_>]) -> Result<Vec<CK_ATTRIBUTE>> {
    t.iter()
        .map(|a| {
            Ok(CK_ATTRIBUTE {
                type_: to_ulong(a.ty)?,
                pValue: if a.value.is_empty() {
                    ptr::null_mut()
                } else {
                    a.value.as_ptr() as *mut c_void
                },
                ulValueLen: len_to_ulong(a.value.len())?,
            })
        })
        .collect()
}

/// Storage for a mechanism parameter rebuilt in C layout for one call.
pub enum ParamBuf {
    /// Nothing rebuilt: the parameter is passed as the caller's bytes.
    None,
    /// `CKM_CONCATENATE_BASE_AND_KEY` and the like.
    Handle(CK_OBJECT_HANDLE),
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep(CK_RSA_PKCS_OAEP_PARAMS),
    /// `CK_ECDH1_DERIVE_PARAMS`.
    Ecdh1(CK_ECDH1_DERIVE_PARAMS),
    /// `CK_GCM_PARAMS`.
    Gcm(CK_GCM_PARAMS),
}

/// The mechanism as a `CK_MECHANISM` whose parameter points into `m`'s
/// borrowed bytes or into `buf`; valid while both live.
pub fn sys_mechanism(m: &Mechanism<'_>, buf: &mut ParamBuf) -> Result<CK_MECHANISM> {
    fn bytes(b: &[u8]) -> *mut CK_BYTE {
        if b.is_empty() {
            ptr::null_mut()
        } else {
            b.as_ptr() as *mut CK_BYTE
        }
    }
    *buf = match m.param {
        Param::None | Param::Flat(_) | Param::Opaque(_) => ParamBuf::None,
        Param::Handle(x) => ParamBuf::Handle(to_ulong(x)?),
        Param::Oaep {
            hash,
            mgf,
            source,
            source_data,
        } => ParamBuf::Oaep(CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: to_ulong(hash)?,
            mgf: to_ulong(mgf)?,
            source: to_ulong(source)?,
            pSourceData: bytes(source_data) as *mut c_void,
            ulSourceDataLen: len_to_ulong(source_data.len())?,
        }),
        Param::Ecdh1 {
            kdf,
            shared_data,
            public_data,
        } => ParamBuf::Ecdh1(CK_ECDH1_DERIVE_PARAMS {
            kdf: to_ulong(kdf)?,
            ulSharedDataLen: len_to_ulong(shared_data.len())?,
            pSharedData: bytes(shared_data),
            ulPublicDataLen: len_to_ulong(public_data.len())?,
            pPublicData: bytes(public_data),
        }),
        Param::Gcm {
            iv,
            iv_bits,
            aad,
            tag_bits,
        } => ParamBuf::Gcm(CK_GCM_PARAMS {
            pIv: bytes(iv),
            ulIvLen: len_to_ulong(iv.len())?,
            ulIvBits: to_ulong(iv_bits)?,
            pAAD: bytes(aad),
            ulAADLen: len_to_ulong(aad.len())?,
            ulTagBits: to_ulong(tag_bits)?,
        }),
    };
    fn of<T>(x: &mut T) -> (*mut c_void, usize) {
        (x as *mut T as *mut c_void, std::mem::size_of::<T>())
    }
    let (p, n) = match (&m.param, buf) {
        (Param::Flat(b) | Param::Opaque(b), _) => (bytes(b) as *mut c_void, b.len()),
        (_, ParamBuf::Handle(x)) => of(x),
        (_, ParamBuf::Oaep(x)) => of(x),
        (_, ParamBuf::Ecdh1(x)) => of(x),
        (_, ParamBuf::Gcm(x)) => of(x),
        (_, ParamBuf::None) => (ptr::null_mut(), 0),
    };
    Ok(CK_MECHANISM {
        mechanism: to_ulong(m.ty)?,
        pParameter: p,
        ulParameterLen: len_to_ulong(n)?,
    })
}

impl Member for ModuleMember {
    fn slot_id(&self) -> u64 {
        from_ulong(self.slot)
    }

    fn slot_info(&self) -> Result<SlotInfo> {
        // SAFETY: CK_SLOT_INFO is plain data; all-zero is a valid value.
        let mut i: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
        call!(self, C_GetSlotInfo(self.slot, &mut i))?;
        Ok(sys::slot_info(&i))
    }

    fn token_info(&self) -> Result<TokenInfo> {
        // SAFETY: CK_TOKEN_INFO is plain data; all-zero is a valid value.
        let mut i: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
        call!(self, C_GetTokenInfo(self.slot, &mut i))?;
        Ok(sys::token_info(&i))
    }

    fn mechanism_list(&self, out: Option<&mut [u64]>) -> Result<usize> {
        let mut n: CK_ULONG = 0;
        call!(self, C_GetMechanismList(self.slot, ptr::null_mut(), &mut n))?;
        let Some(out) = out else {
            return ulong_to_len(n).ok_or(Error::Rv(Rv::GENERAL_ERROR));
        };
        let mut list: Vec<CK_MECHANISM_TYPE> = vec![0; ulong_to_len(n).unwrap_or(0)];
        let r = call!(
            self,
            C_GetMechanismList(self.slot, list.as_mut_ptr(), &mut n)
        );
        let n = out_len(r, n)?;
        if n > out.len() {
            return Err(Error::BufferTooSmall { needed: n });
        }
        for (o, m) in out.iter_mut().zip(&list[..n]) {
            *o = from_ulong(*m);
        }
        Ok(n)
    }

    fn mechanism_info(&self, mechanism: u64) -> Result<MechanismInfo> {
        let mut i = CK_MECHANISM_INFO {
            ulMinKeySize: 0,
            ulMaxKeySize: 0,
            flags: 0,
        };
        call!(self, C_GetMechanismInfo(self.slot, h(mechanism)?, &mut i))?;
        Ok(sys::mechanism_info(&i))
    }

    fn init_token(&self, so_pin: Option<&[u8]>, label: &[u8; 32]) -> Result<()> {
        let (p, n) = opt(so_pin)?;
        call!(
            self,
            C_InitToken(self.slot, p, n, label.as_ptr() as *mut CK_UTF8CHAR)
        )
    }

    fn open_session(&self, flags: u64) -> Result<u64> {
        let mut s: CK_SESSION_HANDLE = 0;
        call!(
            self,
            C_OpenSession(self.slot, h(flags)?, ptr::null_mut(), None, &mut s)
        )?;
        Ok(from_ulong(s))
    }

    fn close_session(&self, session: u64) -> Result<()> {
        call!(self, C_CloseSession(h(session)?))
    }

    fn close_all_sessions(&self) -> Result<()> {
        call!(self, C_CloseAllSessions(self.slot))
    }

    fn session_info(&self, session: u64) -> Result<SessionInfo> {
        let mut i = CK_SESSION_INFO {
            slotID: 0,
            state: 0,
            flags: 0,
            ulDeviceError: 0,
        };
        call!(self, C_GetSessionInfo(h(session)?, &mut i))?;
        Ok(sys::session_info(&i))
    }

    fn init_pin(&self, session: u64, pin: Option<&[u8]>) -> Result<()> {
        let (p, n) = opt(pin)?;
        call!(self, C_InitPIN(h(session)?, p, n))
    }

    fn set_pin(&self, session: u64, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()> {
        let (o, on) = opt(old)?;
        let (p, n) = opt(new)?;
        call!(self, C_SetPIN(h(session)?, o, on, p, n))
    }

    fn operation_state(&self, session: u64, mut out: Option<&mut [u8]>) -> Result<usize> {
        let (p, mut n) = outp(&mut out)?;
        let r = call!(self, C_GetOperationState(h(session)?, p, &mut n));
        out_len(r, n)
    }

    fn set_operation_state(
        &self,
        session: u64,
        state: &[u8],
        encryption_key: u64,
        authentication_key: u64,
    ) -> Result<()> {
        let (p, n) = inp(state)?;
        call!(
            self,
            C_SetOperationState(
                h(session)?,
                p,
                n,
                h(encryption_key)?,
                h(authentication_key)?
            )
        )
    }

    fn login(&self, session: u64, user: u64, pin: Option<&[u8]>) -> Result<()> {
        let (p, n) = opt(pin)?;
        call!(self, C_Login(h(session)?, h(user)?, p, n))
    }

    fn logout(&self, session: u64) -> Result<()> {
        call!(self, C_Logout(h(session)?))
    }

    fn create_object(&self, session: u64, t: &[Attr<'_>]) -> Result<u64> {
        let mut t = template(t)?;
        let mut o: CK_OBJECT_HANDLE = 0;
        let n = len_to_ulong(t.len())?;
        call!(self, C_CreateObject(h(session)?, t.as_mut_ptr(), n, &mut o))?;
        Ok(from_ulong(o))
    }

    fn copy_object(&self, session: u64, object: u64, t: &[Attr<'_>]) -> Result<u64> {
        let mut t = template(t)?;
        let mut o: CK_OBJECT_HANDLE = 0;
        let n = len_to_ulong(t.len())?;
        call!(
            self,
            C_CopyObject(h(session)?, h(object)?, t.as_mut_ptr(), n, &mut o)
        )?;
        Ok(from_ulong(o))
    }

    fn destroy_object(&self, session: u64, object: u64) -> Result<()> {
        call!(self, C_DestroyObject(h(session)?, h(object)?))
    }

    fn object_size(&self, session: u64, object: u64) -> Result<u64> {
        let mut n: CK_ULONG = 0;
        call!(self, C_GetObjectSize(h(session)?, h(object)?, &mut n))?;
        Ok(from_ulong(n))
    }

    fn get_attributes(&self, session: u64, object: u64, t: &mut [AttrOut<'_>]) -> Result<()> {
        let mut raw: Vec<CK_ATTRIBUTE> = t
            .iter_mut()
            .map(|a| {
                let (p, n) = outp(&mut a.buf)?;
                Ok(CK_ATTRIBUTE {
                    type_: to_ulong(a.ty)?,
                    pValue: p as *mut c_void,
                    ulValueLen: n,
                })
            })
            .collect::<Result<_>>()?;
        let n = len_to_ulong(raw.len())?;
        let r = call!(
            self,
            C_GetAttributeValue(h(session)?, h(object)?, raw.as_mut_ptr(), n)
        );
        for (a, r) in t.iter_mut().zip(&raw) {
            a.len = ulong_to_len(r.ulValueLen);
        }
        r
    }

    fn set_attributes(&self, session: u64, object: u64, t: &[Attr<'_>]) -> Result<()> {
        let mut t = template(t)?;
        let n = len_to_ulong(t.len())?;
        call!(
            self,
            C_SetAttributeValue(h(session)?, h(object)?, t.as_mut_ptr(), n)
        )
    }

    fn find_init(&self, session: u64, t: &[Attr<'_>]) -> Result<()> {
        let mut t = template(t)?;
        let n = len_to_ulong(t.len())?;
        let p = if t.is_empty() {
            ptr::null_mut()
        } else {
            t.as_mut_ptr()
        };
        call!(self, C_FindObjectsInit(h(session)?, p, n))
    }

    fn find(&self, session: u64, out: &mut [u64]) -> Result<usize> {
        let mut raw: Vec<CK_OBJECT_HANDLE> = vec![0; out.len()];
        let mut n: CK_ULONG = 0;
        let max = len_to_ulong(raw.len())?;
        call!(
            self,
            C_FindObjects(h(session)?, raw.as_mut_ptr(), max, &mut n)
        )?;
        let n = ulong_to_len(n).unwrap_or(0).min(out.len());
        for (o, r) in out.iter_mut().zip(&raw[..n]) {
            *o = from_ulong(*r);
        }
        Ok(n)
    }

    fn find_final(&self, session: u64) -> Result<()> {
        call!(self, C_FindObjectsFinal(h(session)?))
    }

    fn op_init(&self, session: u64, op: Op, mechanism: &Mechanism<'_>, key: u64) -> Result<()> {
        let mut buf = ParamBuf::None;
        let mut m = sys_mechanism(mechanism, &mut buf)?;
        let (s, k) = (h(session)?, h(key)?);
        match op {
            Op::Encrypt => call!(self, C_EncryptInit(s, &mut m, k)),
            Op::Decrypt => call!(self, C_DecryptInit(s, &mut m, k)),
            Op::Sign => call!(self, C_SignInit(s, &mut m, k)),
            Op::Verify => call!(self, C_VerifyInit(s, &mut m, k)),
            Op::SignRecover => call!(self, C_SignRecoverInit(s, &mut m, k)),
            Op::VerifyRecover => call!(self, C_VerifyRecoverInit(s, &mut m, k)),
            Op::Digest => call!(self, C_DigestInit(s, &mut m)),
        }
    }

    fn op_single(
        &self,
        session: u64,
        op: Op,
        input: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let s = h(session)?;
        let (i, il) = inp(input)?;
        let (o, mut ol) = outp(&mut out)?;
        let r = match op {
            Op::Encrypt => call!(self, C_Encrypt(s, i, il, o, &mut ol)),
            Op::Decrypt => call!(self, C_Decrypt(s, i, il, o, &mut ol)),
            Op::Sign => call!(self, C_Sign(s, i, il, o, &mut ol)),
            Op::SignRecover => call!(self, C_SignRecover(s, i, il, o, &mut ol)),
            Op::VerifyRecover => call!(self, C_VerifyRecover(s, i, il, o, &mut ol)),
            Op::Digest => call!(self, C_Digest(s, i, il, o, &mut ol)),
            Op::Verify => return Err(Error::Rv(Rv::FUNCTION_FAILED)),
        };
        out_len(r, ol)
    }

    fn op_update(
        &self,
        session: u64,
        op: Op,
        input: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let s = h(session)?;
        let (i, il) = inp(input)?;
        match op {
            Op::Encrypt | Op::Decrypt => {
                let (o, mut ol) = outp(&mut out)?;
                let r = if op == Op::Encrypt {
                    call!(self, C_EncryptUpdate(s, i, il, o, &mut ol))
                } else {
                    call!(self, C_DecryptUpdate(s, i, il, o, &mut ol))
                };
                out_len(r, ol)
            }
            Op::Sign => call!(self, C_SignUpdate(s, i, il)).map(|()| 0),
            Op::Verify => call!(self, C_VerifyUpdate(s, i, il)).map(|()| 0),
            Op::Digest => call!(self, C_DigestUpdate(s, i, il)).map(|()| 0),
            Op::SignRecover | Op::VerifyRecover => Err(Error::Rv(Rv::FUNCTION_FAILED)),
        }
    }

    fn op_final(&self, session: u64, op: Op, mut out: Option<&mut [u8]>) -> Result<usize> {
        let s = h(session)?;
        let (o, mut ol) = outp(&mut out)?;
        let r = match op {
            Op::Encrypt => call!(self, C_EncryptFinal(s, o, &mut ol)),
            Op::Decrypt => call!(self, C_DecryptFinal(s, o, &mut ol)),
            Op::Sign => call!(self, C_SignFinal(s, o, &mut ol)),
            Op::Digest => call!(self, C_DigestFinal(s, o, &mut ol)),
            Op::Verify | Op::SignRecover | Op::VerifyRecover => {
                return Err(Error::Rv(Rv::FUNCTION_FAILED));
            }
        };
        out_len(r, ol)
    }

    fn verify(&self, session: u64, data: &[u8], signature: &[u8]) -> Result<()> {
        let (d, dl) = inp(data)?;
        let (g, gl) = inp(signature)?;
        call!(self, C_Verify(h(session)?, d, dl, g, gl))
    }

    fn verify_final(&self, session: u64, signature: &[u8]) -> Result<()> {
        let (g, gl) = inp(signature)?;
        call!(self, C_VerifyFinal(h(session)?, g, gl))
    }

    fn digest_key(&self, session: u64, key: u64) -> Result<()> {
        call!(self, C_DigestKey(h(session)?, h(key)?))
    }

    fn dual_update(
        &self,
        session: u64,
        op: DualOp,
        input: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let s = h(session)?;
        let (i, il) = inp(input)?;
        let (o, mut ol) = outp(&mut out)?;
        let r = match op {
            DualOp::DigestEncrypt => call!(self, C_DigestEncryptUpdate(s, i, il, o, &mut ol)),
            DualOp::DecryptDigest => call!(self, C_DecryptDigestUpdate(s, i, il, o, &mut ol)),
            DualOp::SignEncrypt => call!(self, C_SignEncryptUpdate(s, i, il, o, &mut ol)),
            DualOp::DecryptVerify => call!(self, C_DecryptVerifyUpdate(s, i, il, o, &mut ol)),
        };
        out_len(r, ol)
    }

    fn generate_key(&self, session: u64, mechanism: &Mechanism<'_>, t: &[Attr<'_>]) -> Result<u64> {
        let mut buf = ParamBuf::None;
        let mut m = sys_mechanism(mechanism, &mut buf)?;
        let mut t = template(t)?;
        let n = len_to_ulong(t.len())?;
        let mut k: CK_OBJECT_HANDLE = 0;
        call!(
            self,
            C_GenerateKey(h(session)?, &mut m, t.as_mut_ptr(), n, &mut k)
        )?;
        Ok(from_ulong(k))
    }

    fn generate_key_pair(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        public_template: &[Attr<'_>],
        private_template: &[Attr<'_>],
    ) -> Result<(u64, u64)> {
        let mut buf = ParamBuf::None;
        let mut m = sys_mechanism(mechanism, &mut buf)?;
        let mut pt = template(public_template)?;
        let mut st = template(private_template)?;
        let (pn, sn) = (len_to_ulong(pt.len())?, len_to_ulong(st.len())?);
        let (mut pk, mut sk): (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) = (0, 0);
        call!(
            self,
            C_GenerateKeyPair(
                h(session)?,
                &mut m,
                pt.as_mut_ptr(),
                pn,
                st.as_mut_ptr(),
                sn,
                &mut pk,
                &mut sk,
            )
        )?;
        Ok((from_ulong(pk), from_ulong(sk)))
    }

    fn wrap_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        wrapping_key: u64,
        key: u64,
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let mut buf = ParamBuf::None;
        let mut m = sys_mechanism(mechanism, &mut buf)?;
        let (o, mut ol) = outp(&mut out)?;
        let r = call!(
            self,
            C_WrapKey(h(session)?, &mut m, h(wrapping_key)?, h(key)?, o, &mut ol)
        );
        out_len(r, ol)
    }

    fn unwrap_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        unwrapping_key: u64,
        wrapped: &[u8],
        t: &[Attr<'_>],
    ) -> Result<u64> {
        let mut buf = ParamBuf::None;
        let mut m = sys_mechanism(mechanism, &mut buf)?;
        let (w, wl) = inp(wrapped)?;
        let mut t = template(t)?;
        let n = len_to_ulong(t.len())?;
        let mut k: CK_OBJECT_HANDLE = 0;
        call!(
            self,
            C_UnwrapKey(
                h(session)?,
                &mut m,
                h(unwrapping_key)?,
                w,
                wl,
                t.as_mut_ptr(),
                n,
                &mut k,
            )
        )?;
        Ok(from_ulong(k))
    }

    fn derive_key(
        &self,
        session: u64,
        mechanism: &Mechanism<'_>,
        base_key: u64,
        t: &[Attr<'_>],
    ) -> Result<u64> {
        let mut buf = ParamBuf::None;
        let mut m = sys_mechanism(mechanism, &mut buf)?;
        let mut t = template(t)?;
        let n = len_to_ulong(t.len())?;
        let mut k: CK_OBJECT_HANDLE = 0;
        call!(
            self,
            C_DeriveKey(h(session)?, &mut m, h(base_key)?, t.as_mut_ptr(), n, &mut k)
        )?;
        Ok(from_ulong(k))
    }

    fn seed_random(&self, session: u64, seed: &[u8]) -> Result<()> {
        let (p, n) = inp(seed)?;
        call!(self, C_SeedRandom(h(session)?, p, n))
    }

    fn generate_random(&self, session: u64, out: &mut [u8]) -> Result<()> {
        let n = len_to_ulong(out.len())?;
        call!(self, C_GenerateRandom(h(session)?, out.as_mut_ptr(), n))
    }

    fn function_status(&self, session: u64) -> Result<()> {
        call!(self, C_GetFunctionStatus(h(session)?))
    }

    fn cancel_function(&self, session: u64) -> Result<()> {
        call!(self, C_CancelFunction(h(session)?))
    }
}
