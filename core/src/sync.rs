//! Locks over a [`RawLock`] supplied by the platform.
//!
//! The engine keeps one [`Mutex`] per session (held across member calls) and
//! short spin-locked tables (never held across a member call). The raw lock
//! of the session mutex is the platform's: OS locking on a host, the
//! application's `CK_C_INITIALIZE_ARGS` callbacks when it asks for them, or
//! [`SpinLock`] on a single-core board.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::port::RawLock;

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
    /// A mutex holding `data`, locked with `raw`.
    pub const fn new(raw: L, data: T) -> Self {
        Mutex {
            raw,
            data: UnsafeCell::new(data),
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
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
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
        unsafe { &*self.mutex.data.get() }
    }
}

impl<L: RawLock, T> DerefMut for Guard<'_, L, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the raw lock is held, and
        // `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.mutex.data.get() }
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
#[derive(Debug, Default)]
pub struct SpinLock {
    held: AtomicBool,
}

impl SpinLock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        SpinLock {
            held: AtomicBool::new(false),
        }
    }
}

// SAFETY: `held` goes false -> true only through a successful compare-exchange,
// so exactly one holder at a time; unlock stores false with Release ordering.
unsafe impl RawLock for SpinLock {
    fn lock(&self) {
        while !self.try_lock() {
            while self.held.load(Ordering::Relaxed) {
                core::hint::spin_loop();
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
