//! Locks over a [`RawLock`] supplied by the platform, and the primitives of
//! the engine's shared tables.
//!
//! The engine keeps one [`Mutex`] per session (held across member calls) and
//! short spin-locked tables (never held across a member call). The raw lock
//! of the session mutex is the platform's: OS locking on a host, the
//! application's `CK_C_INITIALIZE_ARGS` callbacks when it asks for them, or
//! [`SpinLock`] on a single-core board.
//!
//! Under `--cfg loom` (scripts/loom.sh) every atomic, lock and cell of the
//! shared tables is loom's, so that its model checker sees them and explores
//! their interleavings (core/tests/loom.rs); otherwise `atomic` and
//! `spin` are plain re-exports of `core::sync::atomic` and the `spin`
//! crate, so the shim costs nothing.

use core::ops::{Deref, DerefMut};

use crate::port::RawLock;

use self::atomic::{AtomicBool, Ordering};

#[cfg(not(loom))]
use core::{cell::UnsafeCell, hint::spin_loop};
// Loom's spin_loop yields: it explores a spin forever otherwise.
#[cfg(loom)]
use loom::{cell::UnsafeCell, hint::spin_loop};

/// Defines a `const fn`, or under loom, whose primitives are made at run
/// time inside a model, a plain `fn`.
macro_rules! const_unless_loom {
    ($(#[$attr:meta])* $vis:vis fn $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$attr])* $vis const fn $($rest)*
        #[cfg(loom)]
        $(#[$attr])* $vis fn $($rest)*
    };
}
pub(crate) use const_unless_loom;

/// The atomics of the shared tables: `core::sync::atomic`'s, or loom's.
pub(crate) mod atomic {
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
}

/// The `spin` crate's `Once`, `Mutex` and `RwLock`, or under loom the same
/// API over loom's primitives. Modules that use them import this module as
/// `spin`, so that `spin::Once` names the right one either way.
#[cfg(not(loom))]
pub(crate) mod spin {
    pub(crate) use ::spin::{Mutex, MutexGuard, Once, RwLock, RwLockReadGuard, RwLockWriteGuard};
}

/// See the non-loom `spin` module: the same API over loom's primitives.
#[cfg(loom)]
pub(crate) mod spin {
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicU8, Ordering};

    pub(crate) use loom::sync::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

    const EMPTY: u8 = 0;
    const RUNNING: u8 = 1;
    const DONE: u8 = 2;

    /// `spin::Once`: written once, read without a lock after.
    pub(crate) struct Once<T> {
        state: AtomicU8,
        value: UnsafeCell<Option<T>>,
    }

    // SAFETY: the value is written once, by the thread that moved `state`
    // from EMPTY to RUNNING, before it stores DONE (Release); it is read only
    // after a load of DONE (Acquire), and never written again. T: Send + Sync
    // because it is made on one thread and shared with every other.
    unsafe impl<T: Send + Sync> Sync for Once<T> {}
    // SAFETY: moving the Once moves its T.
    unsafe impl<T: Send> Send for Once<T> {}

    impl<T> Once<T> {
        pub(crate) fn new() -> Self {
            Once {
                state: AtomicU8::new(EMPTY),
                value: UnsafeCell::new(None),
            }
        }

        pub(crate) fn call_once(&self, f: impl FnOnce() -> T) -> &T {
            if self
                .state
                .compare_exchange(EMPTY, RUNNING, Ordering::Acquire, Ordering::Acquire)
                .is_ok()
            {
                let v = f();
                // SAFETY: this thread won EMPTY -> RUNNING: no one else
                // writes, and no one reads before DONE.
                self.value.with_mut(|p| unsafe { *p = Some(v) });
                self.state.store(DONE, Ordering::Release);
            }
            loop {
                if let Some(v) = self.get() {
                    return v;
                }
                loom::thread::yield_now();
            }
        }

        pub(crate) fn get(&self) -> Option<&T> {
            if self.state.load(Ordering::Acquire) != DONE {
                return None;
            }
            // SAFETY: DONE was loaded with Acquire, after the one write
            // (Release); the value never changes again, so the reference
            // lives as long as `self`.
            self.value.with(|p| unsafe { (*p).as_ref() })
        }
    }

    /// `spin::Mutex`, over loom's.
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // spin's locks do not poison.
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// `spin::RwLock`, over loom's.
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            RwLock(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// A mutex over data, locked with the platform's raw lock.
pub struct Mutex<L, T> {
    raw: L,
    data: UnsafeCell<T>,
}

// SAFETY: the raw lock gives mutual exclusion (RawLock's contract), so at most
// one thread reaches `data` at a time; T: Send lets it move between threads.
unsafe impl<L: RawLock, T: Send> Sync for Mutex<L, T> {}
// SAFETY: moving the mutex moves the raw lock (Send by RawLock's bound) and T.
unsafe impl<L: RawLock, T: Send> Send for Mutex<L, T> {}

impl<L: RawLock, T> Mutex<L, T> {
    const_unless_loom! {
        /// A mutex holding `data`, locked with `raw`.
        pub fn new(raw: L, data: T) -> Self {
            Mutex {
                raw,
                data: UnsafeCell::new(data),
            }
        }
    }

    /// Blocks until the lock is held.
    pub fn lock(&self) -> Guard<'_, L, T> {
        self.raw.lock();
        Guard { mutex: self }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<Guard<'_, L, T>> {
        self.raw.try_lock().then_some(Guard { mutex: self })
    }

    /// The data, through exclusive access to the mutex itself.
    #[cfg(not(loom))]
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// The data, through exclusive access to the mutex itself.
    #[cfg(loom)]
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self`: no one else reaches the data.
        self.data.with_mut(|p| unsafe { &mut *p })
    }

    /// The data's address.
    #[cfg(not(loom))]
    #[inline(always)]
    fn data(&self) -> *mut T {
        self.data.get()
    }

    /// The data's address; each call is an access the model checks: one
    /// not ordered after the last holder's is a data race.
    #[cfg(loom)]
    fn data(&self) -> *mut T {
        self.data.with_mut(|p| p)
    }
}

/// Exclusive access to a [`Mutex`]'s data; unlocks on drop.
pub struct Guard<'a, L: RawLock, T> {
    mutex: &'a Mutex<L, T>,
}

impl<L: RawLock, T> Deref for Guard<'_, L, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the raw lock is held.
        unsafe { &*self.mutex.data() }
    }
}

impl<L: RawLock, T> DerefMut for Guard<'_, L, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the raw lock is held, and
        // `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.mutex.data() }
    }
}

impl<L: RawLock, T> Drop for Guard<'_, L, T> {
    fn drop(&mut self) {
        // SAFETY: the guard was created by taking the lock and is dropped once.
        unsafe { self.mutex.raw.unlock() }
    }
}

/// A test-and-set spin lock: the raw lock for a single-core board, where a
/// waiter is only ever an interrupt handler or nothing at all.
#[derive(Debug)]
pub struct SpinLock {
    held: AtomicBool,
}

impl SpinLock {
    const_unless_loom! {
        /// An unlocked lock.
        pub fn new() -> Self {
            SpinLock {
                held: AtomicBool::new(false),
            }
        }
    }
}

impl Default for SpinLock {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `held` goes false -> true only through a successful compare-exchange,
// so exactly one holder at a time; unlock stores false with Release ordering.
unsafe impl RawLock for SpinLock {
    fn lock(&self) {
        while !self.try_lock() {
            while self.held.load(Ordering::Relaxed) {
                spin_loop();
            }
        }
    }

    fn try_lock(&self) -> bool {
        self.held
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    unsafe fn unlock(&self) {
        self.held.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_unlocks_on_drop() {
        let m = Mutex::new(SpinLock::new(), 1u32);
        {
            let mut g = m.lock();
            *g += 1;
            assert!(m.try_lock().is_none());
        }
        assert_eq!(*m.try_lock().unwrap(), 2);
    }
}
