//! The life cycle of the one runtime of the process: published by
//! `C_Initialize`, entered by every call through [`with`], unpublished by
//! `C_Finalize`, and set aside in a child made by `fork()`.
//!
//! Every call counts itself in flight before it reads the runtime, so that
//! `C_Finalize` frees nothing a call still uses: it unpublishes the runtime
//! first (later calls see `CKR_CRYPTOKI_NOT_INITIALIZED`), then waits for the
//! calls in flight to return.
//!
//! A child made by `fork()` is a new application, which PKCS#11 says must
//! call `C_Initialize` itself (v2.40 §6.6.1 "Applications and processes").
//! `pthread_atfork` handlers make a fork wait until no call is inside a
//! module (see [`before_fork`]) and set the copy of the parent's runtime
//! aside in the child, so the child's `C_Initialize` builds a fresh one and
//! answers `CKR_OK`, and its calls before that answer
//! `CKR_CRYPTOKI_NOT_INITIALIZED` (see [`after_fork_in_child`]).

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::time::Duration;

use p11ha_core::ck::Rv;
use p11ha_core::port::RawLock;
use p11ha_core::{Error, Result};

use crate::host::{Futex, HostLock};

use super::Runtime;
use super::recovery::Recovery;

static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Serialises C_Initialize and C_Finalize against each other. A futex of
/// p11ha's own rather than a std `Mutex`, so that a forked child can reset
/// it: a parent thread that held it at the fork does not exist in the child.
static LIFECYCLE: HostLock = HostLock::Os(Futex::new());
/// In a forked child, the runtime copied from the parent: never used and
/// never freed (its locks may be held by threads that do not exist here,
/// its connections and member sessions are the parent's), only kept
/// reachable.
static INHERITED: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());
/// Registers [`after_fork_in_child`] once per load of the library.
static ATFORK: Once = Once::new();

/// Holds [`LIFECYCLE`] until dropped.
pub(super) struct Lifecycle;

impl Lifecycle {
    pub(super) fn lock() -> Self {
        LIFECYCLE.lock();
        Lifecycle
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        // SAFETY: taken by Lifecycle::lock, released once, by its holder.
        unsafe { LIFECYCLE.unlock() };
    }
}

/// The `pthread_atfork` child handler: the child is a new application,
/// not initialised until it calls `C_Initialize` (which then answers
/// `CKR_OK` with a runtime of its own). The parent's copy is set aside:
/// using it could wait forever on a lock a parent thread held at the fork,
/// or write into the parent's connections to remote members. Only atomic
/// stores and a read of a `const` thread-local, so it is async-signal-safe
/// as a fork handler must be.
extern "C" fn after_fork_in_child() {
    let inherited = RUNTIME.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !inherited.is_null() {
        INHERITED.store(inherited, Ordering::SeqCst);
    }
    // Calls in flight in the parent's other threads never return here.
    IN_FLIGHT.store(DEPTH.with(|d| d.get()), Ordering::SeqCst);
    FORKING.store(false, Ordering::SeqCst);
    if let HostLock::Os(f) = &LIFECYCLE {
        f.reset_after_fork();
    }
}

/// Set while a thread of the process forks (see [`before_fork`]): calls
/// wait at the door instead of entering.
static FORKING: AtomicBool = AtomicBool::new(false);
/// How long a fork waits for the calls in flight to return.
const FORK_WAIT: Duration = Duration::from_secs(10);

thread_local! {
    /// Calls of this thread in flight (a call may nest another). `const`
    /// and without `Drop`: it registers no thread-local destructor, which
    /// would keep the library mapped after `dlclose`.
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        let nested = DEPTH.with(|d| d.replace(d.get() + 1)) > 0;
        loop {
            IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
            // A nested call goes on: its thread is counted already.
            if nested || !FORKING.load(Ordering::SeqCst) {
                return InFlight;
            }
            leave();
            while FORKING.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
}

/// Uncounts one call. Saturating: a thread that forked while in flight (a
/// module that forks in a call) comes back in a child whose count was
/// reset to 0.
fn leave() {
    let _ = IN_FLIGHT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
}

impl Drop for InFlight {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        leave();
    }
}

/// The `pthread_atfork` prepare handler: holds new calls at the door and
/// waits (at most [`FORK_WAIT`]) for those in flight, the recovery
/// thread's included, to return, so that no p11ha call is inside a module
/// when the process forks. A module's own locks are copied into the child
/// as they are, and one held by a parent thread in a call (SoftHSM's, in
/// a signature) would deadlock the child's first call that needs it.
extern "C" fn before_fork() {
    FORKING.store(true, Ordering::SeqCst);
    // The forking thread's own calls (a module forking in a call) stay.
    let own = DEPTH.with(|d| d.get());
    let start = std::time::Instant::now();
    while IN_FLIGHT.load(Ordering::SeqCst) > own && start.elapsed() < FORK_WAIT {
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The `pthread_atfork` parent handler: lets calls in again.
extern "C" fn after_fork_in_parent() {
    FORKING.store(false, Ordering::SeqCst);
}

/// Runs `f` with the runtime, or answers `CKR_CRYPTOKI_NOT_INITIALIZED`.
pub fn with<T>(f: impl FnOnce(&Runtime) -> Result<T>) -> Result<T> {
    let _in = InFlight::enter();
    let p = RUNTIME.load(Ordering::SeqCst);
    if p.is_null() {
        return Err(Error::Rv(Rv::CRYPTOKI_NOT_INITIALIZED));
    }
    // SAFETY: p was published by initialize() from a Box and is freed only
    // by finalize(), after it unpublished p and saw IN_FLIGHT reach zero;
    // this call was counted in flight before it loaded p.
    let rt = unsafe { &*p };
    if let Recovery::Inline { hold, gate } = &rt.recovery {
        rt.recover_inline(*hold, gate);
    }
    f(rt)
}

/// Calls `f` with the runtime like [`with`], without inline recovery: for
/// p11ha's own readers (the status thread), which must never do the
/// application's work. `None` if the library is not initialised.
pub(super) fn peek<T>(f: impl FnOnce(&Runtime) -> T) -> Option<T> {
    let _in = InFlight::enter();
    let p = RUNTIME.load(Ordering::SeqCst);
    if p.is_null() {
        return None;
    }
    // SAFETY: as in with(): p stays valid while this call is counted in
    // flight.
    Some(f(unsafe { &*p }))
}

/// Registers the fork handlers, once per load of the library.
pub(super) fn register_fork_handlers() {
    ATFORK.call_once(|| {
        // SAFETY: the handlers use only atomics and a thread-local of this
        // library (and sleep, before the fork). pthread_atfork is glibc's
        // libc_nonshared.a wrapper, which registers them with this
        // library's __dso_handle, so dlclose unregisters them before the
        // code is unmapped. If registration fails (ENOMEM), a forked child's
        // C_Initialize answers CKR_CRYPTOKI_ALREADY_INITIALIZED.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
    });
}

/// This library's own reference to itself while it is initialised (a
/// `dlopen` handle), or null.
static HOLD: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());

/// Keeps this library loaded while it is initialised: from `C_Initialize`
/// to `C_Finalize` it holds a reference to itself.
///
/// An application may unload a PKCS#11 module without `C_Finalize` (the
/// `cryptoki` crate does when a `Pkcs11` is dropped unfinalised, as a test
/// that fails early does). Unloaded while initialised, this library would
/// leave its recovery thread running in unmapped code, and its members'
/// sessions and logins open in modules that stay loaded (SoftHSM then
/// answers `CKR_SESSION_EXISTS` to the next `C_InitToken`). Held, it stays:
/// the next load finds it initialised (`CKR_CRYPTOKI_ALREADY_INITIALIZED`),
/// its state whole. After `C_Finalize` the reference is dropped, and a
/// `dlclose` unloads it.
pub(super) fn hold_loaded() {
    if !HOLD.load(Ordering::SeqCst).is_null() {
        return;
    }
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr reads the address of a function of this library and
    // writes `info`, whose strings point into the loader's data.
    let found = unsafe { libc::dladdr(hold_loaded as *const libc::c_void, info.as_mut_ptr()) };
    if found == 0 {
        return;
    }
    // SAFETY: dladdr succeeded, so `info` is written.
    let path = unsafe { info.assume_init() }.dli_fname;
    if path.is_null() {
        return;
    }
    // SAFETY: `path` is the loader's NUL-terminated name of this library,
    // which is loaded: RTLD_NOLOAD takes one more reference to it, and loads
    // nothing.
    let handle = unsafe { libc::dlopen(path, libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if !handle.is_null()
        && HOLD
            .compare_exchange(
                std::ptr::null_mut(),
                handle,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
    {
        // SAFETY: the reference just taken, not kept.
        unsafe { libc::dlclose(handle) };
    }
}

/// Drops the reference of [`hold_loaded`] (at `C_Finalize`): the
/// application's own keeps the library loaded until it closes it.
pub(super) fn release_loaded() {
    let handle = HOLD.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !handle.is_null() {
        // SAFETY: a handle of hold_loaded's, closed once (swapped out).
        unsafe { libc::dlclose(handle) };
    }
}

/// Whether a runtime is published (the library is initialised).
pub(super) fn published() -> bool {
    !RUNTIME.load(Ordering::SeqCst).is_null()
}

/// Publishes `runtime`: calls reach it from now on.
pub(super) fn publish(runtime: Box<Runtime>) {
    RUNTIME.store(Box::into_raw(runtime), Ordering::SeqCst);
}

/// Unpublishes the runtime and waits until no call uses it; `None` if none
/// was published.
pub(super) fn unpublish() -> Option<Box<Runtime>> {
    let p = RUNTIME.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if p.is_null() {
        return None;
    }
    while IN_FLIGHT.load(Ordering::SeqCst) != 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: p came from Box::into_raw in publish(); it is unpublished and
    // no call is in flight, so this is the only reference.
    Some(unsafe { Box::from_raw(p) })
}
