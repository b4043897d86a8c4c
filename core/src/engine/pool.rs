//! The pool: the members, the virtual slots they serve, each member's
//! health, and the recovery schedule of the failed ones.
//!
//! Invariants:
//! - both tables are append-only: an entry is written once (a
//!   `spin::Once`) before its count is raised, and never changes after, so
//!   indices below a count are read without a lock;
//! - a member is *up* or *down*; each time it goes down its *epoch* grows,
//!   so that whatever was opened on it before (a session, an anchor) is
//!   known dead even if the member reuses the handle numbers after it comes
//!   back;
//! - `in_flight` counts the calls inside a member now: recovery closes the
//!   sessions p11ha abandoned on a member only when it is zero, since a
//!   module may crash if a session closes under a call in flight;
//! - a down member is in the schedule (HA mode, recovery configured) with
//!   the time it failed or was last tried; `any_failed` makes the check
//!   that nothing is due one atomic load.
//!
//! Lock order: the pool's own locks (`adding`, the schedule) are innermost
//! and never held across a member call, except `adding`, which serialises
//! [`Engine::add_member`](super::Engine::add_member) (a platform's join,
//! never an application call).

use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use crate::sync::{const_unless_loom, spin};

use heapless::Vec;

use crate::ck::{Rv, flags};
use crate::config::{Config, Label, Mode};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::port::{Events, Member, Platform};

use super::MAX_MEMBERS;
use super::support::Support;

/// Storage for one member.
pub struct MemberCell<M> {
    entry: spin::Once<MemberEntry<M>>,
}

impl<M> MemberCell<M> {
    const_unless_loom! {
        /// An empty cell.
        pub fn new() -> Self {
            MemberCell {
                entry: spin::Once::new(),
            }
        }
    }
}

impl<M> Default for MemberCell<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// A member and its health.
pub(super) struct MemberEntry<M> {
    pub(super) member: M,
    /// Index of the virtual slot it serves.
    pub(super) slot: usize,
    up: AtomicBool,
    /// Application sessions placed on it.
    pub(super) sessions: AtomicU32,
    /// Counts the member's failures.
    epoch: AtomicU32,
    /// Calls inside the member now.
    in_flight: AtomicU32,
    /// What it supports, learnt when it joined.
    pub(super) support: Support,
}

impl<M> MemberEntry<M> {
    /// Whether it is in service.
    pub(super) fn up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Its failures so far.
    pub(super) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Counts a call in flight on it while the guard lives.
    ///
    /// `SeqCst`, as are the reads of `up` and `epoch`, their writes in
    /// `Pool::take_out` and recovery's read of the count
    /// (`Pool::in_flight`): a call writes the count and then reads the
    /// health, recovery (after the take-out) the other way round. With
    /// acquire and release alone both could read the value from before the
    /// other's write (the store-buffer pattern), and recovery could close
    /// the member's sessions under a call that saw it in service. In one
    /// total order one of the two sees the other. (On x86-64 these are the
    /// same instructions as before.)
    pub(super) fn busy(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(&self.in_flight)
    }
}

/// A call in flight on a member, counted while it lives.
pub(super) struct Busy<'a>(&'a AtomicU32);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Storage for one virtual slot (in NORMAL mode, one slot of one member).
pub struct SlotCell {
    slot: spin::Once<VirtualSlot>,
}

impl SlotCell {
    const_unless_loom! {
        /// An empty cell.
        pub fn new() -> Self {
            SlotCell {
                slot: spin::Once::new(),
            }
        }
    }
}

impl Default for SlotCell {
    fn default() -> Self {
        Self::new()
    }
}

/// A slot as the application sees it.
pub(super) struct VirtualSlot {
    pub(super) id: u64,
    pub(super) label: Label,
    /// Bit i set: member i serves this slot.
    members: AtomicU32,
    /// The application's sessions on it, and how many are read/write.
    pub(super) sessions: AtomicU32,
    pub(super) rw_sessions: AtomicU32,
}

impl VirtualSlot {
    /// The members that serve it, as a mask.
    pub(super) fn member_mask(&self) -> u32 {
        self.members.load(Ordering::Acquire)
    }
}

/// When each failed member failed or was last tried, in milliseconds;
/// `u64::MAX`: not failed (or never to be tried again).
struct Schedule {
    failed_at: [u64; MAX_MEMBERS],
}

/// See the module documentation.
pub(super) struct Pool<P: Platform> {
    members: P::Store<MemberCell<P::Member>>,
    member_count: AtomicUsize,
    slots: P::Store<SlotCell>,
    slot_count: AtomicUsize,
    /// Serialises joins.
    adding: spin::Mutex<()>,
    /// Tie-breaking between equally loaded members.
    rng: AtomicU32,
    mode: Mode,
    recover_delay: Option<u64>,
    schedule: spin::Mutex<Schedule>,
    any_failed: AtomicBool,
    /// Bit i set: member i missed a token write, and stays out of service
    /// until it is synced.
    needs_sync: AtomicU32,
}

impl<P: Platform> Pool<P> {
    pub(super) fn new(
        members: P::Store<MemberCell<P::Member>>,
        slots: P::Store<SlotCell>,
        config: &Config,
        seed: u64,
    ) -> Self {
        Pool {
            members,
            member_count: AtomicUsize::new(0),
            slots,
            slot_count: AtomicUsize::new(0),
            adding: spin::Mutex::new(()),
            rng: AtomicU32::new((seed ^ (seed >> 32)) as u32 | 1),
            mode: config.mode,
            recover_delay: config.recover_delay(),
            schedule: spin::Mutex::new(Schedule {
                failed_at: [u64::MAX; MAX_MEMBERS],
            }),
            any_failed: AtomicBool::new(false),
            needs_sync: AtomicU32::new(0),
        }
    }

    // ---- token writes missed ------------------------------------------------

    /// A token write on `slot` is done: its members out of service missed
    /// it. Returns the members marked now (they were not before).
    pub(super) fn missed(&self, slot: usize) -> u32 {
        let mask = self.slot(slot).member_mask();
        let down = (0..MAX_MEMBERS)
            .filter(|&i| mask & (1 << i) != 0 && !self.entry(i).up())
            .fold(0u32, |a, i| a | 1 << i);
        down & !self.needs_sync.fetch_or(down, Ordering::AcqRel)
    }

    /// Whether member `m` missed a token write.
    pub(super) fn needs_sync(&self, m: usize) -> bool {
        self.needs_sync.load(Ordering::Acquire) & (1 << m) != 0
    }

    /// Member `m` is held out until it is synced (the platform knows it
    /// missed writes before this engine started). Whether it was in service.
    pub(super) fn hold_out(&self, m: usize) -> bool {
        self.needs_sync.fetch_or(1 << m, Ordering::AcqRel);
        self.down(m).is_some()
    }

    /// Member `m` is no longer tried for recovery.
    pub(super) fn unschedule(&self, m: usize) {
        self.schedule.lock().failed_at[m] = u64::MAX;
    }

    // ---- slots --------------------------------------------------------------

    /// Adds a slot; its index. `CKR_HOST_MEMORY` when the table is full.
    pub(super) fn push_slot(&self, id: u64, label: Label) -> Result<usize> {
        let i = self.slot_count.load(Ordering::Acquire);
        let cell = self.slots.get(i).ok_or(Error::Rv(Rv::HOST_MEMORY))?;
        cell.slot.call_once(|| VirtualSlot {
            id,
            label,
            members: AtomicU32::new(0),
            sessions: AtomicU32::new(0),
            rw_sessions: AtomicU32::new(0),
        });
        self.slot_count.store(i + 1, Ordering::Release);
        Ok(i)
    }

    /// The number of slots.
    pub(super) fn slot_count(&self) -> usize {
        self.slot_count.load(Ordering::Acquire)
    }

    /// Slot `index`.
    pub(super) fn slot(&self, index: usize) -> &VirtualSlot {
        // Indices come from slot_index() or entries written before
        // slot_count was raised, so the slot is initialised.
        self.slots[index].slot.get().expect("slot initialised")
    }

    /// The index of the slot the application calls `id`.
    pub(super) fn slot_index(&self, id: u64) -> Result<usize> {
        let n = self.slot_count();
        if self.mode.is_virtual() {
            self.slots[..n]
                .iter()
                .position(|s| s.slot.get().is_some_and(|v| v.id == id))
                .ok_or(Error::Rv(Rv::SLOT_ID_INVALID))
        } else {
            usize::try_from(id)
                .ok()
                .filter(|&i| i < n)
                .ok_or(Error::Rv(Rv::SLOT_ID_INVALID))
        }
    }

    /// The index of the virtual slot that shows tokens labelled `label`.
    pub(super) fn slot_of_label(&self, label: &Label) -> Option<usize> {
        (0..self.slot_count()).find(|&i| self.slot(i).label == *label)
    }

    // ---- members ------------------------------------------------------------

    /// Serialises joins while the guard lives.
    pub(super) fn adding(&self) -> spin::MutexGuard<'_, ()> {
        self.adding.lock()
    }

    /// Writes member `member` into the table, serving slot `slot`, in
    /// service, supporting what `support` says; its index. It serves the
    /// slot once [`Pool::enlist`] says so. `CKR_HOST_MEMORY` when the table
    /// is full.
    pub(super) fn push_member(
        &self,
        member: P::Member,
        slot: usize,
        support: Support,
    ) -> Result<usize> {
        let index = self.member_count();
        if index >= MAX_MEMBERS.min(self.members.len()) {
            return Err(Error::Rv(Rv::HOST_MEMORY));
        }
        self.members[index].entry.call_once(|| MemberEntry {
            member,
            slot,
            up: AtomicBool::new(true),
            sessions: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            support,
        });
        self.member_count.store(index + 1, Ordering::Release);
        Ok(index)
    }

    /// Member `index` serves its slot from now on.
    pub(super) fn enlist(&self, index: usize) {
        let slot = self.entry(index).slot;
        self.slot(slot)
            .members
            .fetch_or(1 << index, Ordering::AcqRel);
    }

    /// The number of members.
    pub(super) fn member_count(&self) -> usize {
        self.member_count.load(Ordering::Acquire)
    }

    /// Member `index` and its health.
    pub(super) fn entry(&self, index: usize) -> &MemberEntry<P::Member> {
        // Member indices are only handed out after the entry is written.
        self.members[index].entry.get().expect("member initialised")
    }

    /// Member `index`.
    pub(super) fn member(&self, index: usize) -> &P::Member {
        &self.entry(index).member
    }

    /// Whether member `index` is in service.
    pub(super) fn up(&self, index: usize) -> bool {
        index < self.member_count() && self.entry(index).up()
    }

    /// Whether something opened on member `m` in epoch `epoch` is still
    /// there: the member is up and has not failed since.
    pub(super) fn current(&self, m: usize, epoch: u32) -> bool {
        let e = self.entry(m);
        e.up() && e.epoch() == epoch
    }

    /// The members in service of slot `slot`.
    pub(super) fn live(&self, slot: usize) -> impl Iterator<Item = usize> + '_ {
        let mask = self.slot(slot).member_mask();
        (0..MAX_MEMBERS)
            .filter(move |i| mask & (1 << i) != 0)
            .filter(|&i| self.entry(i).up())
    }

    /// In NORMAL mode, the one member of a slot.
    pub(super) fn only_member(&self, slot: usize) -> usize {
        self.slot(slot).member_mask().trailing_zeros() as usize
    }

    /// The member in service of `slot` with the fewest sessions, ties
    /// broken at random; `CKR_TOKEN_NOT_PRESENT` if none is.
    pub(super) fn pick(&self, slot: usize) -> Result<usize> {
        self.pick_where(slot, |_| true)
    }

    /// As [`Pool::pick`], among the members for which `fits` holds.
    pub(super) fn pick_where(&self, slot: usize, fits: impl Fn(usize) -> bool) -> Result<usize> {
        let mut best: Option<(u32, usize)> = None;
        let mut ties = 0u32;
        for m in self.live(slot).filter(|&m| fits(m)) {
            let load = self.entry(m).sessions.load(Ordering::Acquire);
            match best {
                Some((b, _)) if load > b => {}
                Some((b, _)) if load == b => {
                    // Reservoir sampling: each of the equally loaded members
                    // is kept with equal probability.
                    ties += 1;
                    if self.random().is_multiple_of(ties) {
                        best = Some((load, m));
                    }
                }
                _ => {
                    best = Some((load, m));
                    ties = 1;
                }
            }
        }
        best.map(|(_, m)| m).ok_or(Error::Rv(Rv::TOKEN_NOT_PRESENT))
    }

    fn random(&self) -> u32 {
        // xorshift32: tie-breaking only, not for anything secret.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.store(x, Ordering::Relaxed);
        x
    }

    /// Opens a short-lived read/write session on member `m` for `f`.
    pub(super) fn with_temp_session<T>(
        &self,
        m: usize,
        f: impl FnOnce(u64) -> Result<T>,
    ) -> Result<T> {
        let member = self.member(m);
        let s = member.open_session(flags::SERIAL_SESSION | flags::RW_SESSION)?;
        let r = f(s);
        let _ = member.close_session(s);
        r
    }

    // ---- failures -----------------------------------------------------------

    /// Whether `error`, answered by member `m` (in its session `session`,
    /// if the call had one), means the member failed. `CKR_GENERAL_ERROR`
    /// is ambiguous (SoftHSM answers it for a key of the wrong type), so the
    /// member is asked once more, harmlessly: if it answers that, it is
    /// alive and the error was about the request. A session handle p11ha
    /// holds open that the member calls invalid means the member reset.
    pub(super) fn failed(&self, m: usize, session: Option<u64>, error: &Error) -> bool {
        match error {
            Error::Rv(Rv::GENERAL_ERROR) => {
                let member = self.member(m);
                let probe = match session {
                    Some(s) => member.session_info(s).map(|_| ()),
                    None => member.token_info().map(|_| ()),
                };
                match probe {
                    Ok(()) => false,
                    Err(e) => {
                        e == Error::Rv(Rv::GENERAL_ERROR)
                            || is_member_failure(&e)
                            || (session.is_some()
                                && matches!(
                                    e,
                                    Error::Rv(Rv::SESSION_HANDLE_INVALID | Rv::SESSION_CLOSED)
                                ))
                    }
                }
            }
            Error::Rv(Rv::SESSION_HANDLE_INVALID | Rv::SESSION_CLOSED) => session.is_some(),
            e => is_member_failure(e),
        }
    }

    /// Takes member `index` out of service, once: in HA mode until its
    /// recovery (scheduled here, from `now`), in WLD mode for the life of
    /// the application. Says so through `events` (PTK's "HSM Failure
    /// detected" in HA mode). `false` if it was out already.
    pub(super) fn take_out(
        &self,
        index: usize,
        rv: Rv,
        events: &impl Events,
        now: impl FnOnce() -> u64,
    ) -> bool {
        let Some(m) = self.down(index) else {
            return false;
        };
        let hsm_slot_id = m.member.slot_id();
        if self.mode == Mode::Ha {
            events.event(&Event::HsmFailure {
                hsm_idx: index,
                hsm_slot_id,
            });
            if self.recover_delay.is_some() {
                let mut schedule = self.schedule.lock();
                schedule.failed_at[index] = now();
                // Under the lock, as in settle(): else a round of recovery
                // that read the schedule before this failure could store
                // its `false` after this `true`, and lose this member.
                self.any_failed.store(true, Ordering::Release);
            }
        } else {
            events.event(&Event::MemberDropped {
                hsm_idx: index,
                hsm_slot_id,
                rv,
            });
        }
        true
    }

    /// Takes member `index` out of service for good: it refused what the
    /// others accepted (`function` answered `rv`), so it no longer holds
    /// what they hold. `false` if it was out already.
    pub(super) fn take_out_inconsistent(
        &self,
        index: usize,
        function: &str,
        rv: Rv,
        events: &impl Events,
    ) -> bool {
        let Some(m) = self.down(index) else {
            return false;
        };
        events.event(&Event::MemberInconsistent {
            hsm_idx: index,
            hsm_slot_id: m.member.slot_id(),
            function,
            rv,
        });
        true
    }

    /// Member `index` out of service, its epoch moved on; `None` if it was
    /// out already (another thread took it out first).
    fn down(&self, index: usize) -> Option<&MemberEntry<P::Member>> {
        let m = self.entry(index);
        // SeqCst: see MemberEntry::busy.
        if !m.up.swap(false, Ordering::SeqCst) {
            return None;
        }
        m.epoch.fetch_add(1, Ordering::SeqCst);
        Some(m)
    }

    // ---- recovery schedule --------------------------------------------------

    /// Whether a failed member's recovery is due at `now`. Cheap when no
    /// member is failed: one atomic load.
    pub(super) fn recovery_due(&self, now: u64) -> bool {
        if !self.any_failed.load(Ordering::Acquire) {
            return false;
        }
        let Some(delay) = self.recover_delay else {
            return false;
        };
        self.schedule
            .lock()
            .failed_at
            .iter()
            .any(|&t| t != u64::MAX && now >= t.saturating_add(delay))
    }

    /// The failed members whose recovery is due at `now`; each is scheduled
    /// again a delay from `now`, in case this attempt does not bring it
    /// back.
    pub(super) fn due(&self, now: u64) -> Vec<usize, MAX_MEMBERS> {
        let mut due = Vec::new();
        let Some(delay) = self.recover_delay else {
            return due;
        };
        let mut schedule = self.schedule.lock();
        for (m, t) in schedule.failed_at.iter_mut().enumerate() {
            if *t != u64::MAX && now >= t.saturating_add(delay) {
                *t = now;
                // Capacity MAX_MEMBERS: every member fits.
                let _ = due.push(m);
            }
        }
        due
    }

    /// How many calls are inside member `m` now.
    pub(super) fn calls_in_flight(&self, m: usize) -> u32 {
        self.entry(m).in_flight.load(Ordering::Relaxed)
    }

    /// Whether a call is inside member `m` now (SeqCst: see
    /// `MemberEntry::busy`).
    pub(super) fn in_flight(&self, m: usize) -> bool {
        self.entry(m).in_flight.load(Ordering::SeqCst) != 0
    }

    /// Member `m` is back in service.
    pub(super) fn put_back(&self, m: usize) {
        self.schedule.lock().failed_at[m] = u64::MAX;
        self.entry(m).up.store(true, Ordering::Release);
    }

    /// Brings `any_failed` up to date after a round of recovery.
    pub(super) fn settle(&self) {
        // Stored under the lock: see take_out.
        let schedule = self.schedule.lock();
        let any = schedule.failed_at.iter().any(|&t| t != u64::MAX);
        self.any_failed.store(any, Ordering::Release);
    }
}

/// Whether a member's answer means the member itself is gone, whatever
/// the request was. (`CKR_GENERAL_ERROR` is ambiguous: see
/// [`Pool::failed`]'s probe.)
pub fn is_member_failure(error: &Error) -> bool {
    match error {
        Error::Transport(_) => true,
        Error::Rv(rv) => matches!(
            *rv,
            Rv::DEVICE_ERROR
                | Rv::DEVICE_REMOVED
                | Rv::TOKEN_NOT_PRESENT
                | Rv::CRYPTOKI_NOT_INITIALIZED
        ),
        Error::BufferTooSmall { .. } | Error::Elsewhere { .. } => false,
    }
}
