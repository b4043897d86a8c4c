//! Bringing failed members back (HA mode): by a thread of p11ha's
//! (`p11ha-recovery`), or inline by the application's own calls when it
//! asks for that (`ET_PTKC_HA_RECOVER_WAIT=YES`, PTK's hold-off) or forbids
//! p11ha threads of its own.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use p11ha_core::event::Event;
use p11ha_core::port::Events;

use super::Runtime;
use super::lifecycle::with;

/// How failed members are brought back (HA mode).
pub(super) enum Recovery {
    /// Never (not HA mode, or `ET_PTKC_HA_RECOVER_DELAY=0`).
    Off,
    /// A background thread tries after the delay.
    Thread {
        stop: Arc<(Mutex<bool>, Condvar)>,
        thread: Option<libc::pthread_t>,
    },
    /// Application threads try when they enter the library after the delay
    /// (`ET_PTKC_HA_RECOVER_WAIT=YES`, which also holds the others off; or
    /// an application that forbids p11ha its own threads).
    Inline { hold: bool, gate: Gate },
}

/// Holds application threads off while one of them tries to recover a
/// member.
#[derive(Default)]
pub(super) struct Gate {
    holding: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Recovery {
    /// How an application with this configuration gets its members back:
    /// `ha` mode, a recovery `delay` (`None`: never), PTK's `hold`
    /// (`ET_PTKC_HA_RECOVER_WAIT`), and whether p11ha may start `threads`.
    pub(super) fn choose(ha: bool, delay: Option<u64>, hold: bool, threads: bool) -> Self {
        match (ha, delay, hold, threads) {
            (true, Some(_), false, true) => Recovery::Thread {
                stop: Arc::new((Mutex::new(false), Condvar::new())),
                thread: None,
            },
            (true, Some(_), hold, _) => Recovery::Inline {
                hold,
                gate: Gate::default(),
            },
            _ => Recovery::Off,
        }
    }

    /// Starts the recovery thread, if this is the thread kind: it checks
    /// every quarter of the `delay` (at most every second, at least every
    /// 10 ms).
    pub(super) fn start(&mut self, delay: Option<u64>) {
        if let Recovery::Thread { stop, thread } = self {
            let period = delay.map_or(1000, |d| (d / 4).clamp(10, 1000));
            *thread = spawn_recovery(stop.clone(), Duration::from_millis(period));
        }
    }

    /// Stops the recovery thread and waits for it to end.
    pub(super) fn stop(&mut self) {
        if let Recovery::Thread { stop, thread } = self {
            *stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            stop.1.notify_all();
            if let Some(t) = thread.take() {
                // SAFETY: the thread spawn_recovery made, joined once; it
                // returns now that it was told to stop.
                unsafe { libc::pthread_join(t, std::ptr::null_mut()) };
            }
        }
    }
}

/// Starts [`recovery_thread`], named `p11ha-recovery`; `None` if no thread
/// can be made (members are then not recovered).
///
/// With `pthread_create`, not `std::thread`: std's spawn registers
/// thread-local destructors in the calling thread, an application thread,
/// and glibc keeps a library with pending thread-local destructors mapped
/// until that thread exits, so a `dlclose` after `C_Finalize` would not
/// unload p11ha. The recovery thread's own thread-locals go when it is
/// joined.
fn spawn_recovery(stop: Arc<(Mutex<bool>, Condvar)>, period: Duration) -> Option<libc::pthread_t> {
    struct Start {
        stop: Arc<(Mutex<bool>, Condvar)>,
        period: Duration,
    }
    extern "C" fn run(arg: *mut c_void) -> *mut c_void {
        // SAFETY: arg is the Box<Start> spawn_recovery leaked for this
        // thread, taken back once, here.
        let start = unsafe { Box::from_raw(arg as *mut Start) };
        // No unwinding out of an extern "C" function.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            recovery_thread(start.stop, start.period)
        }));
        std::ptr::null_mut()
    }
    let arg = Box::into_raw(Box::new(Start { stop, period })) as *mut c_void;
    let mut thread: libc::pthread_t = 0;
    // SAFETY: default attributes; `run` takes ownership of arg.
    if unsafe { libc::pthread_create(&mut thread, std::ptr::null(), run, arg) } != 0 {
        // SAFETY: no thread was made, so arg is still this function's.
        drop(unsafe { Box::from_raw(arg as *mut Start) });
        return None;
    }
    // SAFETY: a live thread of ours; a NUL-terminated name of 14 bytes (at
    // most 15 are allowed).
    unsafe { libc::pthread_setname_np(thread, c"p11ha-recovery".as_ptr()) };
    Some(thread)
}

/// Tries to bring failed members back, every `period`, until told to stop.
fn recovery_thread(stop: Arc<(Mutex<bool>, Condvar)>, period: Duration) {
    let (lock, cv) = &*stop;
    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    while !*stopped {
        drop(stopped);
        // Through with(): counted in flight, so C_Finalize waits for an
        // attempt in progress; after C_Finalize it answers not initialised.
        let _ = with(|rt| {
            let now = rt.engine.now_ms();
            if rt.engine.recovery_due(now) {
                rt.engine.recover(now);
            }
            Ok(())
        });
        stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
        if !*stopped {
            stopped = cv
                .wait_timeout(stopped, period)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Runtime {
    /// Inline recovery (see [`Recovery::Inline`]): the first thread to see
    /// a recovery due makes the attempt; with `hold`, it logs PTK's "Found
    /// HSM Dead:HSM Failed" and every other thread entering the library
    /// waits until the attempt is over.
    pub(super) fn recover_inline(&self, hold: bool, gate: &Gate) {
        if gate.holding.load(Ordering::Acquire) {
            if hold {
                let mut g = gate.lock.lock().unwrap_or_else(|e| e.into_inner());
                while gate.holding.load(Ordering::Acquire) {
                    g = gate.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
            }
            return;
        }
        let now = self.engine.now_ms();
        if !self.engine.recovery_due(now)
            || gate
                .holding
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        if hold {
            self.engine.events().event(&Event::HsmDead);
        }
        self.engine.recover(now);
        let _g = gate.lock.lock().unwrap_or_else(|e| e.into_inner());
        gate.holding.store(false, Ordering::Release);
        gate.cv.notify_all();
    }
}
