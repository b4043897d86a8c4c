//! CK_C_INITIALIZE_ARGS with the application's mutex callbacks and no
//! CKF_OS_LOCKING_OK: PKCS#11 says the library must then use them. This
//! test's callbacks count their calls (and really lock, with std mutexes).

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};

use cryptoki_sys::*;
use p11ha_tests::*;

static CREATED: AtomicUsize = AtomicUsize::new(0);
static DESTROYED: AtomicUsize = AtomicUsize::new(0);
static LOCKED: AtomicUsize = AtomicUsize::new(0);
static UNLOCKED: AtomicUsize = AtomicUsize::new(0);

/// A lock the callbacks hand out: a mutex whose guard is kept in a box
/// while held (PKCS#11 mutexes are lock/unlock pairs, not guards).
struct AppMutex {
    held: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

unsafe extern "C" fn create(out: *mut *mut c_void) -> CK_RV {
    CREATED.fetch_add(1, Ordering::SeqCst);
    let m = Box::new(AppMutex {
        held: std::sync::Mutex::new(false),
        cv: std::sync::Condvar::new(),
    });
    // SAFETY: out is the library's valid out pointer.
    unsafe { *out = Box::into_raw(m) as *mut c_void };
    CKR_OK
}

unsafe extern "C" fn destroy(m: *mut c_void) -> CK_RV {
    DESTROYED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: m came from create().
    drop(unsafe { Box::from_raw(m as *mut AppMutex) });
    CKR_OK
}

unsafe extern "C" fn lock(m: *mut c_void) -> CK_RV {
    LOCKED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: m came from create() and is alive until destroy().
    let m = unsafe { &*(m as *const AppMutex) };
    let mut held = m.held.lock().unwrap();
    while *held {
        held = m.cv.wait(held).unwrap();
    }
    *held = true;
    CKR_OK
}

unsafe extern "C" fn unlock(m: *mut c_void) -> CK_RV {
    UNLOCKED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: as above.
    let m = unsafe { &*(m as *const AppMutex) };
    *m.held.lock().unwrap() = false;
    m.cv.notify_one();
    CKR_OK
}

#[test]
fn application_mutex_callbacks_are_used_and_released() {
    let t = tokens(2);
    // The only test of this process, before any thread: configure is safe here.
    configure(
        &t,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
    );
    let f = raw();
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: Some(create),
        DestroyMutex: Some(destroy),
        LockMutex: Some(lock),
        UnlockMutex: Some(unlock),
        flags: 0,
        pReserved: null_mut(),
    };
    // SAFETY: (all calls below) valid arguments as PKCS#11 defines them.
    unsafe {
        assert_eq!(
            f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_OK
        );
        assert!(CREATED.load(Ordering::SeqCst) > 0, "mutexes were created");
        let before = LOCKED.load(Ordering::SeqCst);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let f = raw();
                    let mut s = 0;
                    assert_eq!(
                        f.C_OpenSession.unwrap()(0, CKF_SERIAL_SESSION, null_mut(), None, &mut s),
                        CKR_OK
                    );
                    let mut info: CK_SESSION_INFO = std::mem::zeroed();
                    for _ in 0..100 {
                        assert_eq!(f.C_GetSessionInfo.unwrap()(s, &mut info), CKR_OK);
                    }
                    assert_eq!(f.C_CloseSession.unwrap()(s), CKR_OK);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let locked = LOCKED.load(Ordering::SeqCst) - before;
        assert!(
            locked >= 400,
            "every session call took the application's lock ({locked})"
        );
        assert_eq!(
            LOCKED.load(Ordering::SeqCst),
            UNLOCKED.load(Ordering::SeqCst)
        );
        assert_eq!(f.C_Finalize.unwrap()(null_mut()), CKR_OK);
    }
    assert_eq!(
        CREATED.load(Ordering::SeqCst),
        DESTROYED.load(Ordering::SeqCst),
        "every mutex the library created it destroyed at C_Finalize"
    );
}
