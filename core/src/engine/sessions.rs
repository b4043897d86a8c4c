//! The session table: the application's sessions, each on one member, with
//! its journal (HA mode).
//!
//! Invariants:
//! - each session has its own lock ([`SessionCell`]), held across every
//!   member call on the session (and across a failover and its replay), so
//!   that the session's state and journal change in the order the member
//!   saw the calls, and so that a session is never closed under a call in
//!   flight (SoftHSM crashes if it is). A call on one session therefore
//!   never waits behind another session;
//! - a session handle carries the cell's generation: a handle of a closed
//!   session is refused even after its cell is reused;
//! - `in_use` claims a free cell without its lock, so that opening a
//!   session never waits behind a call on another one.
//!
//! Lock order: a session's lock is the outermost lock of the engine.

use crate::ck::Rv;
use crate::error::{Error, Result};
use crate::handles;
use crate::journal::Journal;
use crate::port::{Platform, RawLock};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Guard, Mutex};

/// Storage for one session.
pub struct SessionCell<L, J> {
    in_use: AtomicBool,
    state: Mutex<L, Session<J>>,
}

impl<L: RawLock, J: core::ops::DerefMut<Target = [u8]>> SessionCell<L, J> {
    /// A free session cell whose state is guarded by `lock`, with its
    /// journal (one that keeps nothing outside HA mode).
    pub fn new(lock: L, journal: Journal<J>) -> Self {
        SessionCell {
            in_use: AtomicBool::new(false),
            state: Mutex::new(
                lock,
                Session {
                    generation: 0,
                    open: false,
                    index: 0,
                    slot: 0,
                    member: 0,
                    real: 0,
                    flags: 0,
                    find_active: false,
                    ops: 0,
                    owns_objects: false,
                    orphan: false,
                    lost_op: false,
                    lost_find: LostSearch::No,
                    state_restored: false,
                    epoch: 0,
                    journal,
                },
            ),
        }
    }
}

/// A search a failover could not restart. Its `C_FindObjects` are
/// answered `CKR_DEVICE_ERROR` (the first with a log line) until the
/// application ends it, and its `C_FindObjectsFinal` then succeeds, as it
/// would have: the search is over on p11ha's side, not on the
/// application's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LostSearch {
    /// The search (if any) is whole.
    No,
    /// Lost, not said yet.
    Untold,
    /// Lost, and said.
    Told,
}

/// One session of the application.
pub(super) struct Session<J> {
    generation: u16,
    open: bool,
    /// Its index in the session table.
    pub(super) index: usize,
    /// Index of its (virtual) slot.
    pub(super) slot: usize,
    /// Index of the member it is on, and the member's session.
    pub(super) member: usize,
    pub(super) real: u64,
    /// `CKF_RW_SESSION` and friends, as the application opened it.
    pub(super) flags: u64,
    pub(super) find_active: bool,
    /// The operations the member may have in progress on it, one bit per
    /// [`Op`](crate::port::Op) ([`op_bit`]): a session with one cannot move
    /// to another member without its journal (WLD mode).
    pub(super) ops: u8,
    /// It made session objects (which die with it).
    pub(super) owns_objects: bool,
    /// Its member failed and no other took it yet (HA).
    pub(super) orphan: bool,
    /// A failover could not rebuild the operation (or search) in progress:
    /// the next call that needs it is answered `CKR_DEVICE_ERROR`.
    pub(super) lost_op: bool,
    pub(super) lost_find: LostSearch,
    /// `C_SetOperationState` restored state the journal does not know.
    pub(super) state_restored: bool,
    /// The member's epoch when the session was placed on it: if the member
    /// failed since, the real session is gone (its handle may even have
    /// been reused) and must not be used again.
    pub(super) epoch: u32,
    pub(super) journal: Journal<J>,
}

impl<J: core::ops::DerefMut<Target = [u8]>> Session<J> {
    /// Opens it as a new session on `member`'s session `real` (whose epoch
    /// is `epoch`); its handle.
    pub(super) fn open(
        &mut self,
        index: usize,
        slot: usize,
        member: usize,
        real: u64,
        flags: u64,
        epoch: u32,
    ) -> u64 {
        self.generation = handles::next_generation(self.generation);
        self.open = true;
        self.index = index;
        self.slot = slot;
        self.member = member;
        self.real = real;
        self.flags = flags;
        self.find_active = false;
        self.ops = 0;
        self.owns_objects = false;
        self.orphan = false;
        self.lost_op = false;
        self.lost_find = LostSearch::No;
        self.state_restored = false;
        self.epoch = epoch;
        self.journal.clear();
        handles::encode(index, self.generation)
    }

    /// Closes it; its journal is forgotten.
    pub(super) fn close(&mut self) {
        self.open = false;
        self.journal.clear();
    }

    pub(super) fn is_open(&self) -> bool {
        self.open
    }
}

/// The bit of `op` in [`Session::ops`].
pub(super) fn op_bit(op: crate::port::Op) -> u8 {
    use crate::port::Op;
    match op {
        Op::Encrypt => 1,
        Op::Decrypt => 2,
        Op::Digest => 4,
        Op::Sign => 8,
        Op::Verify => 16,
        Op::SignRecover => 32,
        Op::VerifyRecover => 64,
    }
}

/// A locked session.
pub(super) type SessionGuard<'a, P> =
    Guard<'a, <P as Platform>::Lock, Session<<P as Platform>::Journal>>;

/// See the module documentation.
pub(super) struct Sessions<P: Platform> {
    cells: P::Store<SessionCell<P::Lock, P::Journal>>,
}

impl<P: Platform> Sessions<P> {
    pub(super) fn new(cells: P::Store<SessionCell<P::Lock, P::Journal>>) -> Self {
        Sessions { cells }
    }

    /// How many sessions the table holds.
    pub(super) fn capacity(&self) -> usize {
        self.cells.len()
    }

    /// Session `handle`, locked, and its table index;
    /// `CKR_SESSION_HANDLE_INVALID` if no open session has that handle.
    pub(super) fn lock(&self, handle: u64) -> Result<(usize, SessionGuard<'_, P>)> {
        let (index, generation) =
            handles::decode(handle).ok_or(Error::Rv(Rv::SESSION_HANDLE_INVALID))?;
        let cell = self
            .cells
            .get(index)
            .ok_or(Error::Rv(Rv::SESSION_HANDLE_INVALID))?;
        let guard = cell.state.lock();
        if !guard.open || guard.generation != generation {
            return Err(Error::Rv(Rv::SESSION_HANDLE_INVALID));
        }
        Ok((index, guard))
    }

    /// The session at table index `index`, locked, if no one holds it.
    pub(super) fn try_lock_index(&self, index: usize) -> Option<SessionGuard<'_, P>> {
        self.cells.get(index)?.state.try_lock()
    }

    /// The session at table index `index`, locked, open or not.
    pub(super) fn lock_index(&self, index: usize) -> SessionGuard<'_, P> {
        self.cells[index].state.lock()
    }

    /// Claims a free cell; its index. `CKR_SESSION_COUNT` if none is free.
    pub(super) fn claim(&self) -> Result<usize> {
        self.cells
            .iter()
            .position(|s| {
                s.in_use
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or(Error::Rv(Rv::SESSION_COUNT))
    }

    /// Frees a claimed cell.
    pub(super) fn release(&self, index: usize) {
        self.cells[index].in_use.store(false, Ordering::Release);
    }

    /// The indices of the claimed cells.
    pub(super) fn claimed(&self) -> impl Iterator<Item = usize> + '_ {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.in_use.load(Ordering::Acquire))
            .map(|(i, _)| i)
    }
}
