//! The dispatcher: one call in, routed to the session's member, with virtual
//! handles translated both ways, and, in HA mode, journalled so that the
//! session can be rebuilt on another member when its own fails.
//!
//! Locking, and why a call on one session never waits behind another:
//! - each session has its own [`Mutex`] over the platform's raw lock, held
//!   across the member call (and across a failover and its replay), so the
//!   session's state and journal change in the order the member saw the
//!   calls, and a session is never closed under a call in flight (SoftHSM
//!   crashes if it is);
//! - each virtual slot has a login lock, held while sessions are opened or
//!   closed on it and while the application logs in or out, because the
//!   members' login state hangs on which sessions exist (a token logs out
//!   when its last session closes); the anchor sessions that hold each
//!   member's login are only touched under it;
//! - the object table is behind a spin read-write lock that is never held
//!   across a member call;
//! - members and slots are append-only tables read without locks.
//!
//! Lock order: session, then slot login, then object table, then the
//! recovery schedule.
//!
//! A failover (HA mode): the failing member is marked failed ("HSM Failure
//! detected"), a session is opened on the member in service with the fewest
//! sessions, its login is made sure of, the journal is replayed (session
//! objects in order, then the operation with its Update data, then the
//! search), and the interrupted call runs there. State the journal could
//! not keep ends in a clear error for the call that needs it, with a log
//! line, never in a different result.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use heapless::Vec;

use crate::ck::{self, Rv, attr, flags, user};
use crate::config::{Config, Label, Mode};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::handles::{
    self, Identity, IndexSlot, MAX_IDENTITY_BYTES, ObjectEntry, ObjectKind, ObjectTable,
};
use crate::journal::{self, Journal, Lost, NewRecipe, OpRecord, Recipe, RecipeKind};
use crate::port::{
    Attr, AttrOut, Clock, DualOp, Events, Mechanism, MechanismInfo, Member, Op, Param, Platform,
    SessionInfo, SlotInfo, TokenInfo, Version,
};
use crate::secret::Pin;
use crate::sync::{Guard, Mutex};

/// The most members one engine can have (a virtual slot keeps its members
/// in a 32-bit mask: 32-bit targets have no 64-bit atomics).
pub const MAX_MEMBERS: usize = 32;

/// The most mechanisms p11ha intersects across the members of a virtual
/// slot; a member with more is answered for by the first member alone.
const MAX_MECHANISMS: usize = 256;

/// Update data is replayed in pieces of this size (the output of each is
/// discarded into a buffer twice as large: the application has it already).
const REPLAY_CHUNK: usize = 1024;

/// p11ha's version, reported in slot and token information.
pub const VERSION: Version = Version { major: 0, minor: 1 };

/// Why parts of a session become unrecoverable, beyond the journal's own
/// reasons (PTK's `<desc>`).
pub mod lost {
    /// A generated key was used, so a re-generated one would differ.
    pub const RANDOM_KEY_USED: &str =
        "a randomly generated key was used in a cryptographic operation";
    /// `C_DigestKey` digests a key's value, which the journal cannot keep.
    pub const DIGEST_KEY: &str = "C_DigestKey";
    /// The operation state came from the application.
    pub const SET_OPERATION_STATE: &str = "C_SetOperationState";
    /// The login went through a protected authentication path.
    pub const PROTECTED_LOGIN: &str = "protected-path login";
    /// The PIN is longer than p11ha keeps.
    pub const PIN_TOO_LONG: &str = "a PIN longer than p11ha keeps";
    /// An operation's key was authenticated with `CKU_CONTEXT_SPECIFIC`.
    pub const CONTEXT_LOGIN: &str = "context-specific login";
    /// A session object could not be journalled.
    pub const OBJECT_NOT_JOURNALLED: &str = "a session object p11ha could not journal";
}

/// A member as [`Engine::member_status`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// The virtual slot it serves.
    pub slot: u64,
    /// Its own slot id.
    pub member_slot: u64,
    /// Application sessions it serves.
    pub sessions: u32,
    /// In service.
    pub up: bool,
}

/// Storage for one member.
pub struct MemberSlot<M> {
    entry: spin::Once<MemberEntry<M>>,
}

impl<M> MemberSlot<M> {
    /// An empty slot.
    pub const fn new() -> Self {
        MemberSlot {
            entry: spin::Once::new(),
        }
    }
}

impl<M> Default for MemberSlot<M> {
    fn default() -> Self {
        Self::new()
    }
}

struct MemberEntry<M> {
    member: M,
    /// Index of the virtual slot it serves.
    slot: usize,
    up: AtomicBool,
    /// Application sessions placed on it.
    sessions: AtomicU32,
    /// Counts the member's failures: an anchor opened in an earlier epoch
    /// died with the member.
    epoch: AtomicU32,
    /// Session calls inside the member now. Recovery closes the sessions
    /// p11ha abandoned on a failed member only when this is zero, since a
    /// module may crash if a session closes under a call in flight.
    in_flight: AtomicU32,
}

/// Counts a call in flight on a member while it lives.
struct Busy<'a>(&'a AtomicU32);

impl<'a> Busy<'a> {
    fn new(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Busy(counter)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Storage for one virtual slot.
pub struct SlotSlot<L> {
    slot: spin::Once<VirtualSlot>,
    login: Mutex<L, Login>,
}

impl<L: crate::port::RawLock> SlotSlot<L> {
    /// An empty slot whose login state is guarded by `lock`.
    pub const fn new(lock: L) -> Self {
        SlotSlot {
            slot: spin::Once::new(),
            login: Mutex::new(lock, Login::new()),
        }
    }
}

struct VirtualSlot {
    id: u64,
    label: Label,
    /// Bit i set: member i serves this slot.
    members: AtomicU32,
    sessions: AtomicU32,
    rw_sessions: AtomicU32,
}

/// The application's login on a virtual slot (WLD and HA mode).
struct Login {
    user: Option<u64>,
    pin: Pin,
    /// The login used the protected authentication path (no PIN).
    protected: bool,
    /// The PIN could not be kept (longer than p11ha keeps).
    pin_lost: bool,
    /// Per member index: p11ha's own session on that member (0: none), and
    /// the member's epoch when it was opened. It is kept open for as long
    /// as the member serves: it holds the application's login, and a token
    /// with no session left may renumber its objects (SoftHSM does, as
    /// PKCS#11 allows), which would make p11ha's handle mappings wrong.
    anchors: [u64; MAX_MEMBERS],
    anchor_epochs: [u32; MAX_MEMBERS],
    /// Bit i set: member i's anchor is logged in as `user`.
    logged_in: u32,
}

impl Login {
    const fn new() -> Self {
        Login {
            user: None,
            pin: Pin::new(),
            protected: false,
            pin_lost: false,
            anchors: [0; MAX_MEMBERS],
            anchor_epochs: [0; MAX_MEMBERS],
            logged_in: 0,
        }
    }
}

/// Storage for one session.
pub struct SessionSlot<L, J> {
    in_use: AtomicBool,
    state: Mutex<L, Session<J>>,
}

impl<L: crate::port::RawLock, J: core::ops::DerefMut<Target = [u8]>> SessionSlot<L, J> {
    /// A free session slot whose state is guarded by `lock`, with its
    /// journal (an empty buffer outside HA mode).
    pub fn new(lock: L, journal: Journal<J>) -> Self {
        SessionSlot {
            in_use: AtomicBool::new(false),
            state: Mutex::new(
                lock,
                Session {
                    generation: 0,
                    open: false,
                    slot: 0,
                    member: 0,
                    real: 0,
                    flags: 0,
                    find_active: false,
                    owns_objects: false,
                    orphan: false,
                    lost_op: false,
                    lost_find: false,
                    state_restored: false,
                    epoch: 0,
                    journal,
                },
            ),
        }
    }
}

struct Session<J> {
    generation: u16,
    open: bool,
    slot: usize,
    member: usize,
    real: u64,
    flags: u64,
    find_active: bool,
    owns_objects: bool,
    /// Its member failed and no other took it yet (HA).
    orphan: bool,
    /// A failover could not rebuild the operation (or search) in progress:
    /// the next call that needs it is answered `CKR_DEVICE_ERROR`.
    lost_op: bool,
    lost_find: bool,
    /// `C_SetOperationState` restored state the journal does not know.
    state_restored: bool,
    /// The member's epoch when the session was placed on it: if the member
    /// failed since, the real session is gone (its handle may even have
    /// been reused) and must not be used again.
    epoch: u32,
    journal: Journal<J>,
}

/// The tables an engine works in, handed in by the platform. Each table's
/// capacity is the length of its slice.
pub struct Storage<P: Platform> {
    /// Members (at most [`MAX_MEMBERS`] are used).
    pub members: P::Store<MemberSlot<P::Member>>,
    /// Virtual slots.
    pub slots: P::Store<SlotSlot<P::Lock>>,
    /// Sessions, each with its journal.
    pub sessions: P::Store<SessionSlot<P::Lock, P::Journal>>,
    /// Virtual objects (WLD and HA mode).
    pub objects: P::Store<ObjectEntry>,
    /// The objects' reverse index; twice as long as `objects` is right.
    pub object_index: P::Store<IndexSlot>,
}

type SessionGuard<'a, P> = Guard<'a, <P as Platform>::Lock, Session<<P as Platform>::Journal>>;

type Objects<P> =
    ObjectTable<<P as Platform>::Store<ObjectEntry>, <P as Platform>::Store<IndexSlot>>;

/// When each failed member (HA mode) failed or was last tried.
struct Recovery {
    /// Milliseconds; `u64::MAX`: not failed (or never to be tried again).
    failed_at: [u64; MAX_MEMBERS],
}

/// What a call needs of the session's state, so that state a failover lost
/// is answered with an error instead of a different result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Uses {
    Nothing,
    Op,
    Find,
    FindFinal,
}

/// Where an object handle is resolved: a session on a member.
#[derive(Clone, Copy)]
struct At {
    slot: usize,
    member: usize,
    real: u64,
    find_active: bool,
}

fn at<J>(s: &Session<J>) -> At {
    At {
        slot: s.slot,
        member: s.member,
        real: s.real,
        find_active: s.find_active,
    }
}

/// The p11ha engine: every PKCS#11 call that reaches a member goes through
/// one of its methods.
pub struct Engine<P: Platform> {
    config: Config,
    ha: bool,
    members: P::Store<MemberSlot<P::Member>>,
    member_count: AtomicUsize,
    slots: P::Store<SlotSlot<P::Lock>>,
    slot_count: AtomicUsize,
    sessions: P::Store<SessionSlot<P::Lock, P::Journal>>,
    objects: spin::RwLock<Objects<P>>,
    events: P::Events,
    clock: P::Clock,
    rng: AtomicU32,
    adding: spin::Mutex<()>,
    /// "Session potentially not recoverable" was reported.
    reported_unrecoverable: AtomicBool,
    recovery: spin::Mutex<Recovery>,
    any_failed: AtomicBool,
}

/// Whether a member's answer means the member itself is gone, whatever
/// the request was. (`CKR_GENERAL_ERROR` is ambiguous: see
/// [`Engine`]'s probe.)
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
        Error::BufferTooSmall { .. } => false,
    }
}

/// The value of a `CK_ULONG` attribute in the platform's native layout.
pub fn ulong_bytes(value: u64) -> [u8; core::mem::size_of::<core::ffi::c_ulong>()] {
    // Values the core writes (classes, key types) fit every CK_ULONG.
    (value as core::ffi::c_ulong).to_ne_bytes()
}

/// Reads a `CK_ULONG` attribute value in the platform's native layout.
pub fn ulong_from_bytes(bytes: &[u8]) -> Option<u64> {
    let bytes = bytes.try_into().ok()?;
    #[allow(clippy::useless_conversion)] // c_ulong is u32 on 32-bit targets
    Some(u64::from(core::ffi::c_ulong::from_ne_bytes(bytes)))
}

const TRUE: [u8; 1] = [1];

/// Attributes whose value tells a key apart (reading one of a generated key
/// counts as using it: a re-generated key would show another value).
const VALUE_ATTRIBUTES: [u64; 6] = [0x11, 0x90, 0x120, 0x122, 0x129, 0x181];

impl<P: Platform> Engine<P> {
    /// An engine over `storage`. In WLD and HA mode the configured virtual
    /// slots are created now (they exist, without a token, until a member
    /// joins); `CKR_HOST_MEMORY` if `storage.slots` cannot hold them.
    /// `seed` seeds the tie-breaking between equally loaded members.
    pub fn new(
        config: Config,
        storage: Storage<P>,
        events: P::Events,
        clock: P::Clock,
        seed: u64,
    ) -> Result<Self> {
        let engine = Engine {
            ha: config.mode == Mode::Ha,
            members: storage.members,
            member_count: AtomicUsize::new(0),
            slots: storage.slots,
            slot_count: AtomicUsize::new(0),
            sessions: storage.sessions,
            objects: spin::RwLock::new(ObjectTable::new(storage.objects, storage.object_index)),
            events,
            clock,
            rng: AtomicU32::new((seed ^ (seed >> 32)) as u32 | 1),
            adding: spin::Mutex::new(()),
            reported_unrecoverable: AtomicBool::new(false),
            recovery: spin::Mutex::new(Recovery {
                failed_at: [u64::MAX; MAX_MEMBERS],
            }),
            any_failed: AtomicBool::new(false),
            config,
        };
        if engine.config.mode.is_virtual() {
            for s in engine.config.wld_slots.clone().iter() {
                engine.push_slot(s.id, s.label)?;
            }
        }
        Ok(engine)
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where events go.
    pub fn events(&self) -> &P::Events {
        &self.events
    }

    /// The engine's clock, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn push_slot(&self, id: u64, label: Label) -> Result<usize> {
        let i = self.slot_count.load(Ordering::Acquire);
        let slot = self.slots.get(i).ok_or(Error::Rv(Rv::HOST_MEMORY))?;
        slot.slot.call_once(|| VirtualSlot {
            id,
            label,
            members: AtomicU32::new(0),
            sessions: AtomicU32::new(0),
            rw_sessions: AtomicU32::new(0),
        });
        self.slot_count.store(i + 1, Ordering::Release);
        Ok(i)
    }

    /// Offers a member: one slot of one module or server. In NORMAL mode it
    /// becomes a slot of its own; in WLD and HA mode it joins the virtual
    /// slot whose configured label its token carries, or is not used.
    /// Returns its member index if it was taken.
    ///
    /// The platform offers each of its slots once (at `C_Initialize`, and
    /// again when `C_GetSlotList` finds new ones).
    pub fn add_member(&self, member: P::Member) -> Result<Option<usize>> {
        let _adding = self.adding.lock();
        let slot = if self.config.mode.is_virtual() {
            let info = match member.token_info() {
                Ok(info) => info,
                // No token (yet) in that slot: not a member.
                Err(_) => return Ok(None),
            };
            match self.slot_ids().position(|s| s.label == info.label) {
                Some(slot) => slot,
                None => return Ok(None),
            }
        } else {
            let next = self.slot_count.load(Ordering::Acquire);
            self.push_slot(next as u64, [b' '; 32])?
        };
        let index = self.member_count.load(Ordering::Acquire);
        if index >= MAX_MEMBERS.min(self.members.len()) {
            return Err(Error::Rv(Rv::HOST_MEMORY));
        }
        let hsm_slot_id = member.slot_id();
        self.members[index].entry.call_once(|| MemberEntry {
            member,
            slot,
            up: AtomicBool::new(true),
            sessions: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
        });
        self.member_count.store(index + 1, Ordering::Release);
        let vslot = self.vslot(slot);
        if self.config.mode.is_virtual() {
            let mut login = self.slots[slot].login.lock();
            // Best effort: a member that refuses now gets one when needed.
            let _ = self.anchor(&mut login, index);
        }
        vslot.members.fetch_or(1 << index, Ordering::AcqRel);
        self.events.event(&Event::MemberJoined {
            hsm_idx: index,
            hsm_slot_id,
            slot: vslot.id,
        });
        Ok(Some(index))
    }

    fn slot_ids(&self) -> impl Iterator<Item = &VirtualSlot> {
        let n = self.slot_count.load(Ordering::Acquire);
        self.slots[..n].iter().filter_map(|s| s.slot.get())
    }

    fn vslot(&self, index: usize) -> &VirtualSlot {
        // Indices come from slot_index() or entries written before
        // slot_count was raised, so the slot is initialised.
        self.slots[index].slot.get().expect("slot initialised")
    }

    fn member(&self, index: usize) -> &MemberEntry<P::Member> {
        // Member indices are only handed out after the entry is written.
        self.members[index].entry.get().expect("member initialised")
    }

    /// The number of members taken so far.
    pub fn member_count(&self) -> usize {
        self.member_count.load(Ordering::Acquire)
    }

    /// Calls `f` with member `index` (for the platform's own bookkeeping).
    pub fn with_member<T>(&self, index: usize, f: impl FnOnce(&P::Member) -> T) -> Option<T> {
        (index < self.member_count()).then(|| f(&self.member(index).member))
    }

    /// Whether member `index` is in service.
    pub fn member_up(&self, index: usize) -> bool {
        index < self.member_count() && self.member(index).up.load(Ordering::Acquire)
    }

    /// Whether session `s` can no longer use its real session: it has no
    /// member, or its member failed since it was placed there.
    fn stale(&self, s: &Session<P::Journal>) -> bool {
        let m = self.member(s.member);
        s.orphan || !m.up.load(Ordering::Acquire) || s.epoch != m.epoch.load(Ordering::Acquire)
    }

    /// What an operator (or a test) sees of member `index`.
    pub fn member_status(&self, index: usize) -> Option<MemberStatus> {
        if index >= self.member_count() {
            return None;
        }
        let m = self.member(index);
        Some(MemberStatus {
            slot: self.vslot(m.slot).id,
            member_slot: m.member.slot_id(),
            sessions: m.sessions.load(Ordering::Acquire),
            up: m.up.load(Ordering::Acquire),
        })
    }

    /// The member index that serves session `handle`.
    pub fn session_member(&self, handle: u64) -> Result<usize> {
        let (_, s) = self.session(handle)?;
        Ok(s.member)
    }

    fn slot_index(&self, id: u64) -> Result<usize> {
        let n = self.slot_count.load(Ordering::Acquire);
        if self.config.mode.is_virtual() {
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

    fn live_members(&self, slot: usize) -> impl Iterator<Item = usize> + '_ {
        let mask = self.vslot(slot).members.load(Ordering::Acquire);
        (0..MAX_MEMBERS)
            .filter(move |i| mask & (1 << i) != 0)
            .filter(|&i| self.member(i).up.load(Ordering::Acquire))
    }

    fn first_live(&self, slot: usize) -> Result<usize> {
        self.live_members(slot)
            .next()
            .ok_or(Error::Rv(Rv::TOKEN_NOT_PRESENT))
    }

    // ---- failures -------------------------------------------------------------

    /// Whether `error`, answered by member `m` (in its session `session`,
    /// if the call had one), means the member failed. `CKR_GENERAL_ERROR`
    /// is ambiguous (SoftHSM answers it for a key of the wrong type), so the
    /// member is asked once more, harmlessly: if it answers that, it is
    /// alive and the error was about the request. A session handle p11ha
    /// holds open that the member calls invalid means the member reset.
    fn failed(&self, m: usize, session: Option<u64>, error: &Error) -> bool {
        match error {
            Error::Rv(Rv::GENERAL_ERROR) => {
                let member = &self.member(m).member;
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

    /// Takes a member out of service once: in HA mode until its recovery,
    /// in WLD mode for the life of the application.
    fn member_failed(&self, index: usize, rv: Rv) {
        let m = self.member(index);
        if !m.up.swap(false, Ordering::AcqRel) {
            return;
        }
        m.epoch.fetch_add(1, Ordering::AcqRel);
        let hsm_slot_id = m.member.slot_id();
        if self.ha {
            self.events.event(&Event::HsmFailure {
                hsm_idx: index,
                hsm_slot_id,
            });
            if self.config.recover_delay().is_some() {
                self.recovery.lock().failed_at[index] = self.clock.now_ms();
                self.any_failed.store(true, Ordering::Release);
            }
        } else {
            self.events.event(&Event::MemberDropped {
                hsm_idx: index,
                hsm_slot_id,
                rv,
            });
        }
        self.objects.write().forget_member(index);
    }

    /// Passes a member's result on, taking the member out of service first
    /// if the result says it is gone (WLD and HA mode).
    fn check<T>(&self, m: usize, session: Option<u64>, result: Result<T>) -> Result<T> {
        if let Err(e) = &result
            && self.config.mode.is_virtual()
            && self.failed(m, session, e)
        {
            self.member_failed(m, e.rv());
        }
        result
    }

    fn inconsistent(&self, m: usize, function: &str, rv: Rv) {
        let entry = self.member(m);
        if entry.up.swap(false, Ordering::AcqRel) {
            entry.epoch.fetch_add(1, Ordering::AcqRel);
            self.events.event(&Event::MemberInconsistent {
                hsm_idx: m,
                hsm_slot_id: entry.member.slot_id(),
                function,
                rv,
            });
            self.objects.write().forget_member(m);
        }
    }

    /// Reports, once per engine (one `C_Initialize`), that the application
    /// did something that makes a session unrecoverable.
    fn lose(&self, why: Option<Lost>) {
        if let Some(desc) = why
            && !self.reported_unrecoverable.swap(true, Ordering::AcqRel)
        {
            self.events.event(&Event::NotRecoverable { desc });
        }
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

    // ---- recovery ---------------------------------------------------------------

    /// Whether a failed member's recovery is due at `now` (HA mode). Cheap
    /// when no member is failed: one atomic load.
    pub fn recovery_due(&self, now: u64) -> bool {
        if !self.any_failed.load(Ordering::Acquire) {
            return false;
        }
        let Some(delay) = self.config.recover_delay() else {
            return false;
        };
        self.recovery
            .lock()
            .failed_at
            .iter()
            .any(|&t| t != u64::MAX && now >= t.saturating_add(delay))
    }

    /// Tries to bring back every failed member whose delay has passed: it
    /// is reconnected (the adapter's business); if its token answers with
    /// the slot's label, the sessions p11ha abandoned there are closed and
    /// it takes new sessions again. A member with a call still in flight
    /// (one that hung when it failed) is left for the next try, as is one
    /// that does not come back. Returns how many came back.
    pub fn recover(&self, now: u64) -> usize {
        let Some(delay) = self.config.recover_delay() else {
            return 0;
        };
        let due: Vec<usize, MAX_MEMBERS> = {
            let mut r = self.recovery.lock();
            let mut due = Vec::new();
            for (m, t) in r.failed_at.iter_mut().enumerate() {
                if *t != u64::MAX && now >= t.saturating_add(delay) {
                    // The next try, if this one fails, is a delay later.
                    *t = now;
                    let _ = due.push(m);
                }
            }
            due
        };
        let mut back = 0;
        for m in due {
            let entry = self.member(m);
            if entry.in_flight.load(Ordering::Acquire) != 0 {
                continue;
            }
            let label = self.vslot(entry.slot).label;
            let answer = entry
                .member
                .reconnect()
                .and_then(|()| entry.member.token_info());
            if !matches!(answer, Ok(info) if info.label == label) {
                continue;
            }
            let cleaned = {
                // Anchors are only used under this lock: none is in use.
                let mut login = self.slots[entry.slot].login.lock();
                // The sessions p11ha abandoned go, and with them the handle
                // numbers the member gave its objects.
                entry.member.close_all_sessions().and_then(|()| {
                    self.objects.write().forget_member(m);
                    self.anchor(&mut login, m)?;
                    match login.user {
                        Some(_) => self.log_in_member(&mut login, m),
                        None => Ok(()),
                    }
                })
            };
            if cleaned.is_ok() {
                self.recovery.lock().failed_at[m] = u64::MAX;
                entry.up.store(true, Ordering::Release);
                self.events.event(&Event::MemberRecovered {
                    hsm_idx: m,
                    hsm_slot_id: entry.member.slot_id(),
                });
                back += 1;
            }
        }
        let any = self
            .recovery
            .lock()
            .failed_at
            .iter()
            .any(|&t| t != u64::MAX);
        self.any_failed.store(any, Ordering::Release);
        back
    }

    // ---- slots and tokens -------------------------------------------------

    /// `C_GetSlotList`: the ids of the virtual slots (with a token only, if
    /// `token_present`). `None` asks for the count.
    pub fn slot_list(&self, token_present: bool, out: Option<&mut [u64]>) -> Result<usize> {
        let n = self.slot_count.load(Ordering::Acquire);
        let mut count = 0;
        let mut out = out;
        let mut too_small = false;
        for i in 0..n {
            if token_present && !self.token_present(i) {
                continue;
            }
            if let Some(out) = out.as_deref_mut() {
                match out.get_mut(count) {
                    Some(o) => *o = self.vslot(i).id,
                    None => too_small = true,
                }
            }
            count += 1;
        }
        if too_small {
            return Err(Error::BufferTooSmall { needed: count });
        }
        Ok(count)
    }

    fn token_present(&self, slot: usize) -> bool {
        if self.config.mode.is_virtual() {
            self.live_members(slot).next().is_some()
        } else {
            let m = self.slot_member(slot);
            self.member(m)
                .member
                .slot_info()
                .is_ok_and(|i| i.flags & flags::TOKEN_PRESENT != 0)
        }
    }

    /// In NORMAL mode, the one member of a slot.
    fn slot_member(&self, slot: usize) -> usize {
        self.vslot(slot)
            .members
            .load(Ordering::Acquire)
            .trailing_zeros() as usize
    }

    /// `C_GetSlotInfo`.
    pub fn slot_info(&self, id: u64) -> Result<SlotInfo> {
        let slot = self.slot_index(id)?;
        if !self.config.mode.is_virtual() {
            let m = self.slot_member(slot);
            return self.member(m).member.slot_info();
        }
        let mut description = [b' '; 64];
        let text = b"p11ha virtual slot: ";
        description[..text.len()].copy_from_slice(text);
        description[text.len()..text.len() + 32].copy_from_slice(&self.vslot(slot).label);
        let mut manufacturer = [b' '; 32];
        manufacturer[..5].copy_from_slice(b"p11ha");
        Ok(SlotInfo {
            description,
            manufacturer,
            flags: if self.token_present(slot) {
                flags::TOKEN_PRESENT
            } else {
                0
            },
            hardware_version: VERSION,
            firmware_version: VERSION,
        })
    }

    /// `C_GetTokenInfo`. In WLD and HA mode: the token of a member in
    /// service, with the session counts of the virtual slot and a serial
    /// number of p11ha's (`P11HA-<slot id>`), which stays the same whichever
    /// member answers.
    pub fn token_info(&self, id: u64) -> Result<TokenInfo> {
        let slot = self.slot_index(id)?;
        if !self.config.mode.is_virtual() {
            let m = self.slot_member(slot);
            return self.member(m).member.token_info();
        }
        loop {
            let m = self.first_live(slot)?;
            let r = self.check(m, None, self.member(m).member.token_info());
            match r {
                Ok(mut info) => {
                    let v = self.vslot(slot);
                    info.serial = [b' '; 16];
                    let mut w = Cursor::new(&mut info.serial);
                    let _ = core::fmt::write(&mut w, format_args!("P11HA-{}", v.id));
                    info.session_count = u64::from(v.sessions.load(Ordering::Acquire));
                    info.rw_session_count = u64::from(v.rw_sessions.load(Ordering::Acquire));
                    let cap = self.sessions.len() as u64;
                    info.max_session_count = cap;
                    info.max_rw_session_count = cap;
                    return Ok(info);
                }
                Err(_) if !self.member_up(m) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// `C_GetMechanismList`. In WLD and HA mode: the mechanisms every member
    /// in service offers.
    pub fn mechanism_list(&self, id: u64, out: Option<&mut [u64]>) -> Result<usize> {
        let slot = self.slot_index(id)?;
        if !self.config.mode.is_virtual() {
            let m = self.slot_member(slot);
            return self.member(m).member.mechanism_list(out);
        }
        let mut common = [0u64; MAX_MECHANISMS];
        let mut n = None;
        let mut other = [0u64; MAX_MECHANISMS];
        for m in self.live_members(slot) {
            let member = &self.member(m).member;
            match n {
                None => match self.check(m, None, member.mechanism_list(Some(&mut common))) {
                    Ok(k) => n = Some(k),
                    // More mechanisms than p11ha intersects: this member
                    // answers alone.
                    Err(Error::BufferTooSmall { .. }) => return member.mechanism_list(out),
                    Err(_) if !self.member_up(m) => continue,
                    Err(e) => return Err(e),
                },
                Some(k) => match self.check(m, None, member.mechanism_list(Some(&mut other))) {
                    Ok(j) => {
                        let mut kept = 0;
                        for i in 0..k {
                            if other[..j].contains(&common[i]) {
                                common[kept] = common[i];
                                kept += 1;
                            }
                        }
                        n = Some(kept);
                    }
                    Err(Error::BufferTooSmall { .. }) => {}
                    Err(_) if !self.member_up(m) => continue,
                    Err(e) => return Err(e),
                },
            }
        }
        let n = n.ok_or(Error::Rv(Rv::TOKEN_NOT_PRESENT))?;
        copy_out(&common[..n], out)
    }

    /// `C_GetMechanismInfo`. In WLD and HA mode: what every member in
    /// service supports (the narrowest key sizes, the common flags).
    pub fn mechanism_info(&self, id: u64, mechanism: u64) -> Result<MechanismInfo> {
        let slot = self.slot_index(id)?;
        if !self.config.mode.is_virtual() {
            let m = self.slot_member(slot);
            return self.member(m).member.mechanism_info(mechanism);
        }
        let mut merged: Option<MechanismInfo> = None;
        for m in self.live_members(slot) {
            match self.check(m, None, self.member(m).member.mechanism_info(mechanism)) {
                Ok(i) => {
                    merged = Some(match merged {
                        None => i,
                        Some(a) => MechanismInfo {
                            min_key_size: a.min_key_size.max(i.min_key_size),
                            max_key_size: a.max_key_size.min(i.max_key_size),
                            flags: a.flags & i.flags,
                        },
                    })
                }
                Err(_) if !self.member_up(m) => continue,
                Err(e) => return Err(e),
            }
        }
        merged.ok_or(Error::Rv(Rv::TOKEN_NOT_PRESENT))
    }

    /// `C_InitToken`. In WLD and HA mode it is refused with
    /// `CKR_FUNCTION_NOT_SUPPORTED`: re-initialising every HSM behind a
    /// virtual slot is an operator's act, done on each HSM directly.
    pub fn init_token(&self, id: u64, so_pin: Option<&[u8]>, label: &[u8; 32]) -> Result<()> {
        let slot = self.slot_index(id)?;
        if self.config.mode.is_virtual() {
            return Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED));
        }
        let m = self.slot_member(slot);
        self.member(m).member.init_token(so_pin, label)
    }

    // ---- sessions -----------------------------------------------------------

    fn session(&self, handle: u64) -> Result<(usize, SessionGuard<'_, P>)> {
        let (index, generation) =
            handles::decode(handle).ok_or(Error::Rv(Rv::SESSION_HANDLE_INVALID))?;
        let slot = self
            .sessions
            .get(index)
            .ok_or(Error::Rv(Rv::SESSION_HANDLE_INVALID))?;
        let guard = slot.state.lock();
        if !guard.open || guard.generation != generation {
            return Err(Error::Rv(Rv::SESSION_HANDLE_INVALID));
        }
        Ok((index, guard))
    }

    /// Runs one call on session `handle`, with the session locked: `f` does
    /// the member call (and records what succeeded), `done` sees the final
    /// result. A member failure takes the member out of service; in HA mode
    /// the session then fails over and `f` runs again on the new member.
    fn call<T>(
        &self,
        handle: u64,
        uses: Uses,
        mut f: impl FnMut(&P::Member, &mut Session<P::Journal>, usize) -> Result<T>,
        done: impl FnOnce(&mut Session<P::Journal>, &Result<T>),
    ) -> Result<T> {
        let (index, mut s) = self.session(handle)?;
        let r = self.call_locked(index, &mut s, uses, &mut f);
        done(&mut s, &r);
        r
    }

    fn call_locked<T>(
        &self,
        index: usize,
        s: &mut Session<P::Journal>,
        uses: Uses,
        f: &mut impl FnMut(&P::Member, &mut Session<P::Journal>, usize) -> Result<T>,
    ) -> Result<T> {
        let mut failovers = 0;
        loop {
            // Counted before the member's state is read, so that recovery
            // (which waits for zero) never closes a session under this call.
            let busy = Busy::new(&self.member(s.member).in_flight);
            if self.stale(s) {
                drop(busy);
                if !self.ha || failovers > MAX_MEMBERS {
                    return Err(Error::Rv(Rv::DEVICE_ERROR));
                }
                failovers += 1;
                self.failover(index, s)?;
            }
            self.state_lost(s, uses)?;
            let m = s.member;
            let real = s.real;
            let _busy = Busy::new(&self.member(m).in_flight);
            let r = f(&self.member(m).member, s, index);
            if let Err(e) = &r
                && self.config.mode.is_virtual()
                && self.failed(m, Some(real), e)
            {
                self.member_failed(m, e.rv());
                if self.ha {
                    continue;
                }
            }
            return r;
        }
    }

    /// State a failover could not rebuild is answered `CKR_DEVICE_ERROR`
    /// (with a log line) by the first call that needs it.
    fn state_lost(&self, s: &mut Session<P::Journal>, uses: Uses) -> Result<()> {
        let what = match uses {
            Uses::Op if s.lost_op => {
                s.lost_op = false;
                "the operation in progress"
            }
            Uses::Find if s.lost_find => {
                s.lost_find = false;
                "the search in progress"
            }
            _ => return Ok(()),
        };
        self.events.event(&Event::RecoveryIncomplete {
            what,
            rv: Rv::DEVICE_ERROR,
        });
        Err(Error::Rv(Rv::DEVICE_ERROR))
    }

    /// `C_OpenSession`. In WLD and HA mode the session goes to the member in
    /// service with the fewest sessions, ties broken at random.
    pub fn open_session(&self, id: u64, session_flags: u64) -> Result<u64> {
        let slot = self.slot_index(id)?;
        let index = self
            .sessions
            .iter()
            .position(|s| {
                s.in_use
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or(Error::Rv(Rv::SESSION_COUNT))?;
        let r = self.open_on(slot, index, session_flags);
        if r.is_err() {
            self.sessions[index].in_use.store(false, Ordering::Release);
        }
        r
    }

    fn open_on(&self, slot: usize, index: usize, session_flags: u64) -> Result<u64> {
        let vslot = self.vslot(slot);
        let mut state = self.sessions[index].state.lock();
        if !self.config.mode.is_virtual() {
            let m = self.slot_member(slot);
            let real = self.member(m).member.open_session(session_flags)?;
            return Ok(self.fill(&mut state, index, slot, m, real, session_flags));
        }
        let mut login = self.slots[slot].login.lock();
        loop {
            let m = self.pick_member(slot)?;
            let entry = self.member(m);
            let opened = entry.member.open_session(session_flags);
            match self.check(m, None, opened) {
                Ok(real) => {
                    if let Err(e) = self.ensure_logged_in(&mut login, m) {
                        let _ = entry.member.close_session(real);
                        if !self.member_up(m) {
                            continue;
                        }
                        return Err(e);
                    }
                    vslot.sessions.fetch_add(1, Ordering::AcqRel);
                    if session_flags & flags::RW_SESSION != 0 {
                        vslot.rw_sessions.fetch_add(1, Ordering::AcqRel);
                    }
                    return Ok(self.fill(&mut state, index, slot, m, real, session_flags));
                }
                Err(_) if !self.member_up(m) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn fill(
        &self,
        state: &mut Session<P::Journal>,
        index: usize,
        slot: usize,
        member: usize,
        real: u64,
        session_flags: u64,
    ) -> u64 {
        state.generation = handles::next_generation(state.generation);
        state.open = true;
        state.slot = slot;
        state.member = member;
        state.real = real;
        state.flags = session_flags;
        state.find_active = false;
        state.owns_objects = false;
        state.orphan = false;
        state.lost_op = false;
        state.lost_find = false;
        state.state_restored = false;
        state.epoch = self.member(member).epoch.load(Ordering::Acquire);
        state.journal.clear();
        self.member(member).sessions.fetch_add(1, Ordering::AcqRel);
        handles::encode(index, state.generation)
    }

    fn pick_member(&self, slot: usize) -> Result<usize> {
        let mut best: Option<(u32, usize)> = None;
        let mut ties = 0u32;
        for m in self.live_members(slot) {
            let load = self.member(m).sessions.load(Ordering::Acquire);
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

    /// Moves session `s` to another member (HA mode): opens a session on
    /// the member in service with the fewest sessions, makes sure it is
    /// logged in, replays the journal. `CKR_DEVICE_ERROR` when no member
    /// can take it: the session stays without a member, and the next call
    /// tries again (a member may have come back).
    fn failover(&self, index: usize, s: &mut Session<P::Journal>) -> Result<()> {
        if !s.orphan {
            self.member(s.member)
                .sessions
                .fetch_sub(1, Ordering::AcqRel);
            s.orphan = true;
            s.find_active = false;
        }
        loop {
            let Ok(m) = self.pick_member(s.slot) else {
                return Err(Error::Rv(Rv::DEVICE_ERROR));
            };
            let _busy = Busy::new(&self.member(m).in_flight);
            let member = &self.member(m).member;
            let real = match member.open_session(s.flags) {
                Ok(real) => real,
                Err(e) if self.failed(m, None, &e) => {
                    self.member_failed(m, e.rv());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let logged_in = {
                let mut login = self.slots[s.slot].login.lock();
                self.ensure_logged_in(&mut login, m)
            };
            match logged_in.and_then(|()| self.replay(index, s, m, real)) {
                Ok(()) => {
                    self.member(m).sessions.fetch_add(1, Ordering::AcqRel);
                    s.member = m;
                    s.real = real;
                    s.epoch = self.member(m).epoch.load(Ordering::Acquire);
                    s.orphan = false;
                    return Ok(());
                }
                Err(e) if !self.member_up(m) || self.failed(m, Some(real), &e) => {
                    self.member_failed(m, e.rv());
                }
                Err(e) => {
                    let _ = member.close_session(real);
                    return Err(e);
                }
            }
        }
    }

    /// Rebuilds session state on member `m`'s session `real`: session
    /// objects in the order they were made, then the operation in progress
    /// with its Update data, then the search. An error here is a member
    /// failure; what cannot be rebuilt is marked lost instead.
    fn replay(&self, index: usize, s: &mut Session<P::Journal>, m: usize, real: u64) -> Result<()> {
        let member = &self.member(m).member;
        let here = At {
            slot: s.slot,
            member: m,
            real,
            find_active: false,
        };
        let _ = index;
        let mut objects_lost = false;
        for recipe in s.journal.recipes() {
            match self.replay_recipe(here, &recipe) {
                Ok(()) => {}
                Err(e) if self.failed(m, Some(real), &e) => return Err(e),
                Err(_) => {
                    objects_lost = true;
                    let mut objects = self.objects.write();
                    objects.remove(recipe.object);
                    if recipe.object2 != 0 {
                        objects.remove(recipe.object2);
                    }
                }
            }
        }
        if objects_lost {
            self.events.event(&Event::RecoveryIncomplete {
                what: "a session object",
                rv: Rv::OBJECT_HANDLE_INVALID,
            });
        }
        if let Some(op) = s.journal.op {
            let replayed = match op.lost {
                Some(_) => Err(Error::Rv(Rv::OPERATION_NOT_INITIALIZED)),
                None if s.state_restored => Err(Error::Rv(Rv::OPERATION_NOT_INITIALIZED)),
                None => self.replay_op(here, &s.journal, op),
            };
            match replayed {
                Ok(()) => {}
                Err(e) if self.failed(m, Some(real), &e) => return Err(e),
                Err(_) => {
                    s.journal.op_end();
                    s.lost_op = true;
                }
            }
        } else if s.state_restored {
            s.lost_op = true;
        }
        s.state_restored = false;
        if let Some(f) = s.journal.find {
            let restarted = match (f.lost, s.journal.find_template()) {
                (None, Some(template)) => member.find_init(real, &template),
                _ => Err(Error::Rv(Rv::OPERATION_NOT_INITIALIZED)),
            };
            match restarted {
                Ok(()) => {
                    if let Some(f) = &mut s.journal.find {
                        f.resumed = true;
                    }
                    s.find_active = true;
                }
                Err(e) if self.failed(m, Some(real), &e) => return Err(e),
                Err(_) => {
                    s.journal.find_end();
                    s.lost_find = true;
                }
            }
        }
        Ok(())
    }

    fn replay_recipe(&self, here: At, r: &Recipe<'_>) -> Result<()> {
        let member = &self.member(here.member).member;
        // A destroyed object is not re-created.
        if self.objects.read().kind(r.object).is_none() {
            return Ok(());
        }
        let mechanism = match &r.mechanism {
            Some(m) => Some(self.translate(here, m)?),
            None => None,
        };
        let mech = || mechanism.ok_or(Error::Rv(Rv::GENERAL_ERROR));
        let remap = |virt: u64, new: u64| {
            // The object may be gone meanwhile; then there is nothing to map.
            let _ = self.objects.write().add_real(virt, here.member, new);
        };
        match r.kind {
            RecipeKind::Create => {
                let new = member.create_object(here.real, &r.template)?;
                remap(r.object, new);
            }
            RecipeKind::Copy => {
                let src = self.resolve(here, r.source, Rv::OBJECT_HANDLE_INVALID)?;
                let new = member.copy_object(here.real, src, &r.template)?;
                remap(r.object, new);
            }
            RecipeKind::GenerateKey => {
                if self.objects.read().root_used(r.object) {
                    return Err(Error::Rv(Rv::KEY_HANDLE_INVALID));
                }
                let new = member.generate_key(here.real, &mech()?, &r.template)?;
                remap(r.object, new);
            }
            RecipeKind::GenerateKeyPair => {
                if self.objects.read().root_used(r.object2) {
                    return Err(Error::Rv(Rv::KEY_HANDLE_INVALID));
                }
                let (public, private) =
                    member.generate_key_pair(here.real, &mech()?, &r.template, &r.template2)?;
                remap(r.object, public);
                remap(r.object2, private);
            }
            RecipeKind::Derive => {
                let base = self.resolve(here, r.source, Rv::KEY_HANDLE_INVALID)?;
                let new = member.derive_key(here.real, &mech()?, base, &r.template)?;
                remap(r.object, new);
            }
            RecipeKind::Unwrap => {
                let key = self.resolve(here, r.source, Rv::UNWRAPPING_KEY_HANDLE_INVALID)?;
                let new = member.unwrap_key(here.real, &mech()?, key, r.wrapped, &r.template)?;
                remap(r.object, new);
            }
            RecipeKind::SetAttributes => {
                let target = self.resolve(here, r.object, Rv::OBJECT_HANDLE_INVALID)?;
                member.set_attributes(here.real, target, &r.template)?;
            }
        }
        Ok(())
    }

    fn replay_op(&self, here: At, j: &Journal<P::Journal>, op: OpRecord) -> Result<()> {
        let member = &self.member(here.member).member;
        let mechanism = j
            .op_mechanism()
            .ok_or(Error::Rv(Rv::OPERATION_NOT_INITIALIZED))?;
        let mechanism = self.translate(here, &mechanism)?;
        let key = if op.op == Op::Digest {
            0
        } else {
            self.resolve(here, op.key, Rv::KEY_HANDLE_INVALID)?
        };
        member.op_init(here.real, op.op, &mechanism, key)?;
        let mut discard = [0u8; 2 * REPLAY_CHUNK];
        for chunk in j.op_data().chunks(REPLAY_CHUNK) {
            // The application received this output before the failure.
            let out = matches!(op.op, Op::Encrypt | Op::Decrypt).then_some(&mut discard[..]);
            member.op_update(here.real, op.op, chunk, out)?;
        }
        Ok(())
    }

    /// `C_CloseSession`. The virtual session is closed whatever the member
    /// answers: a member that failed keeps its real session.
    pub fn close_session(&self, handle: u64) -> Result<()> {
        let (index, s) = self.session(handle)?;
        self.close_locked(index, s);
        Ok(())
    }

    fn close_locked(&self, index: usize, mut s: SessionGuard<'_, P>) {
        if !s.orphan {
            let entry = self.member(s.member);
            if !self.stale(&s) {
                let r = entry.member.close_session(s.real);
                let _ = self.check(s.member, None, r);
            }
            entry.sessions.fetch_sub(1, Ordering::AcqRel);
        }
        s.open = false;
        s.journal.clear();
        let (slot, rw, owned) = (s.slot, s.flags & flags::RW_SESSION != 0, s.owns_objects);
        drop(s);
        if owned {
            self.objects.write().remove_owned_by(index);
        }
        self.sessions[index].in_use.store(false, Ordering::Release);
        if self.config.mode.is_virtual() {
            let vslot = self.vslot(slot);
            let mut login = self.slots[slot].login.lock();
            if rw {
                vslot.rw_sessions.fetch_sub(1, Ordering::AcqRel);
            }
            if vslot.sessions.fetch_sub(1, Ordering::AcqRel) == 1 {
                // The application's last session on this token: PKCS#11 says
                // it is now logged out, so the members must be too.
                self.release_anchors(slot, &mut login);
            }
        }
    }

    /// `C_CloseAllSessions`.
    pub fn close_all_sessions(&self, id: u64) -> Result<()> {
        let slot = self.slot_index(id)?;
        self.close_where(|s| s.slot == slot);
        Ok(())
    }

    /// Closes every session (at `C_Finalize`), the anchors included: a
    /// module the application also uses itself stays initialised after
    /// p11ha's `C_Finalize`, and must keep no session p11ha opened.
    pub fn close_everything(&self) {
        self.close_where(|_| true);
        let n = self.slot_count.load(Ordering::Acquire);
        for slot in &self.slots[..n] {
            let mut login = slot.login.lock();
            for m in 0..self.member_count() {
                if self.has_anchor(&login, m) {
                    let _ = self.member(m).member.close_session(login.anchors[m]);
                }
                login.anchors[m] = 0;
            }
            login.logged_in = 0;
            // Closing the last session logged the application out and
            // zeroised the PIN; whatever happened, none outlives C_Finalize.
            login.user = None;
            login.pin.clear();
        }
    }

    fn close_where(&self, which: impl Fn(&Session<P::Journal>) -> bool) {
        for (index, slot) in self.sessions.iter().enumerate() {
            if !slot.in_use.load(Ordering::Acquire) {
                continue;
            }
            let s = slot.state.lock();
            if s.open && which(&s) {
                self.close_locked(index, s);
            }
        }
    }

    /// `C_GetSessionInfo`, with the virtual slot id.
    pub fn session_info(&self, handle: u64) -> Result<SessionInfo> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let mut info = m.session_info(s.real)?;
                info.slot = self.vslot(s.slot).id;
                Ok(info)
            },
            |_, _| {},
        )
    }

    /// `C_GetOperationState`.
    pub fn operation_state(&self, handle: u64, mut out: Option<&mut [u8]>) -> Result<usize> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| m.operation_state(s.real, out.as_deref_mut()),
            |_, _| {},
        )
    }

    /// `C_SetOperationState`. In HA mode the restored state is not known to
    /// the journal: the operation is lost in a failover.
    pub fn set_operation_state(
        &self,
        handle: u64,
        state: &[u8],
        encryption_key: u64,
        authentication_key: u64,
    ) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let enc = self.optional_key(s, encryption_key)?;
                let auth = self.optional_key(s, authentication_key)?;
                m.set_operation_state(s.real, state, enc, auth)?;
                if self.ha {
                    s.journal.op_end();
                    s.state_restored = true;
                    self.lose(Some(lost::SET_OPERATION_STATE));
                }
                Ok(())
            },
            |_, _| {},
        )
    }

    fn optional_key(&self, s: &Session<P::Journal>, key: u64) -> Result<u64> {
        if key == 0 {
            Ok(0)
        } else {
            self.real_object(s, key, Rv::KEY_HANDLE_INVALID)
        }
    }

    // ---- login ------------------------------------------------------------

    /// `C_Login`. In WLD and HA mode the application is logged in on every
    /// member of the slot, each through an anchor session that holds the
    /// login for as long as the application has a session on the slot; the
    /// PIN is kept (zeroised at logout) to log in members that take sessions
    /// later. A wrong PIN is the first member's answer; nothing is tried
    /// elsewhere, and a failed login is never repeated.
    pub fn login(&self, handle: u64, user_type: u64, pin: Option<&[u8]>) -> Result<()> {
        if !self.config.mode.is_virtual() || user_type == user::CONTEXT_SPECIFIC {
            return self.call(
                handle,
                Uses::Nothing,
                |m, s, _| m.login(s.real, user_type, pin),
                |s, r| {
                    if self.ha && r.is_ok() {
                        self.lose(s.journal.op_lose(lost::CONTEXT_LOGIN));
                    }
                },
            );
        }
        let (_, s) = self.session(handle)?;
        // Not a user at all (PKCS#11 v2.40 5.6, CKR_USER_TYPE_INVALID): say
        // so before the login state, which would call it "another user".
        if user_type != user::SO && user_type != user::USER {
            return Err(Error::Rv(Rv::USER_TYPE_INVALID));
        }
        let slot = s.slot;
        let own = s.member;
        if !self.ha && (s.orphan || !self.member_up(own)) {
            return Err(Error::Rv(Rv::DEVICE_ERROR));
        }
        let mut login = self.slots[slot].login.lock();
        match login.user {
            Some(u) if u == user_type => return Err(Error::Rv(Rv::USER_ALREADY_LOGGED_IN)),
            Some(_) => return Err(Error::Rv(Rv::USER_ANOTHER_ALREADY_LOGGED_IN)),
            None => {}
        }
        // The session's own member answers for the application (another
        // member in service if it failed): a wrong PIN is its answer.
        let mut order: Vec<usize, MAX_MEMBERS> = Vec::new();
        if self.member_up(own) {
            let _ = order.push(own);
        }
        for m in self.live_members(slot).filter(|&m| m != own) {
            let _ = order.push(m);
        }
        let mut answered = None;
        for &m in &order {
            let anchor = match self.anchor(&mut login, m) {
                Ok(a) => a,
                Err(e) if self.failed(m, None, &e) => {
                    self.member_failed(m, e.rv());
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.member(m).member.login(anchor, user_type, pin) {
                Ok(()) | Err(Error::Rv(Rv::USER_ALREADY_LOGGED_IN)) => {
                    answered = Some(m);
                    login.logged_in |= 1 << m;
                    break;
                }
                Err(e) if self.failed(m, Some(anchor), &e) => {
                    self.member_failed(m, e.rv());
                }
                Err(e) => return Err(e),
            }
        }
        let first = answered.ok_or(Error::Rv(Rv::DEVICE_ERROR))?;
        drop(s);
        login.user = Some(user_type);
        login.protected = pin.is_none();
        login.pin_lost = !login.pin.set(pin.unwrap_or_default());
        if self.ha {
            if login.protected {
                self.lose(Some(lost::PROTECTED_LOGIN));
            } else if login.pin_lost {
                self.lose(Some(lost::PIN_TOO_LONG));
            }
        }
        for &m in order.iter().filter(|&&m| m != first) {
            let _ = self.log_in_member(&mut login, m);
        }
        Ok(())
    }

    /// Logs member `m` in with the kept PIN, through its anchor. A member
    /// that refuses what another accepted is inconsistent and is dropped.
    fn log_in_member(&self, login: &mut Login, m: usize) -> Result<()> {
        let Some(user_type) = login.user else {
            return Ok(());
        };
        if login.pin_lost {
            // Nothing to log in with: the member cannot serve this login.
            return Err(Error::Rv(Rv::USER_NOT_LOGGED_IN));
        }
        let entry = self.member(m);
        let anchor = self.anchor(login, m);
        let anchor = self.check(m, None, anchor)?;
        let pin = if login.protected {
            None
        } else {
            Some(login.pin.get())
        };
        match self.check(m, Some(anchor), entry.member.login(anchor, user_type, pin)) {
            Ok(()) | Err(Error::Rv(Rv::USER_ALREADY_LOGGED_IN)) => {
                login.logged_in |= 1 << m;
                Ok(())
            }
            Err(e) => {
                if self.member_up(m) {
                    self.inconsistent(m, "C_Login", e.rv());
                }
                Err(e)
            }
        }
    }

    /// Opening a session on member `m`: if the application is logged in on
    /// the slot and `m` is not yet, log it in.
    fn ensure_logged_in(&self, login: &mut Login, m: usize) -> Result<()> {
        let logged = self.has_anchor(login, m) && login.logged_in & (1 << m) != 0;
        if login.user.is_some() && !logged {
            self.log_in_member(login, m)?;
        }
        Ok(())
    }

    fn has_anchor(&self, login: &Login, m: usize) -> bool {
        login.anchors[m] != 0
            && login.anchor_epochs[m] == self.member(m).epoch.load(Ordering::Acquire)
    }

    /// The anchor session of member `m`, opened if needed (read/write, so
    /// that an SO login is not refused for a read-only session). An anchor
    /// from before the member's last failure died with it.
    fn anchor(&self, login: &mut Login, m: usize) -> Result<u64> {
        if self.has_anchor(login, m) {
            return Ok(login.anchors[m]);
        }
        let entry = self.member(m);
        let epoch = entry.epoch.load(Ordering::Acquire);
        login.anchors[m] = 0;
        // A new anchor is not logged in, whatever the old one was.
        login.logged_in &= !(1 << m);
        let rw = entry
            .member
            .open_session(flags::SERIAL_SESSION | flags::RW_SESSION);
        let a = match rw {
            Err(Error::Rv(Rv::TOKEN_WRITE_PROTECTED)) => {
                entry.member.open_session(flags::SERIAL_SESSION)?
            }
            r => r?,
        };
        login.anchors[m] = a;
        login.anchor_epochs[m] = epoch;
        Ok(a)
    }

    /// The application is logged out of `slot` (`C_Logout`, or its last
    /// session closed): every member in service logs out too, through its
    /// anchor, which stays open.
    fn release_anchors(&self, slot: usize, login: &mut Login) {
        if login.user.is_some() {
            // A token may renumber its private objects at logout (SoftHSM
            // does): token objects are found again by identity.
            let mask = self.vslot(slot).members.load(Ordering::Acquire);
            let mut objects = self.objects.write();
            for m in (0..MAX_MEMBERS).filter(|i| mask & (1 << i) != 0) {
                objects.forget_token_objects(m);
            }
            drop(objects);
            let members: Vec<usize, MAX_MEMBERS> = self.live_members(slot).collect();
            for m in members {
                if self.has_anchor(login, m) {
                    let a = login.anchors[m];
                    let r = self.member(m).member.logout(a);
                    match r {
                        Ok(()) | Err(Error::Rv(Rv::USER_NOT_LOGGED_IN)) => {}
                        Err(e) => {
                            let _ = self.check(m, Some(a), Err::<(), _>(e));
                        }
                    }
                }
            }
        }
        login.user = None;
        login.logged_in = 0;
        login.pin.clear();
        login.protected = false;
        login.pin_lost = false;
    }

    /// `C_Logout`. In WLD and HA mode: on every member, and the kept PIN is
    /// zeroised.
    pub fn logout(&self, handle: u64) -> Result<()> {
        if !self.config.mode.is_virtual() {
            return self.call(handle, Uses::Nothing, |m, s, _| m.logout(s.real), |_, _| {});
        }
        let (_, s) = self.session(handle)?;
        let slot = s.slot;
        drop(s);
        let mut login = self.slots[slot].login.lock();
        if login.user.is_none() {
            return Err(Error::Rv(Rv::USER_NOT_LOGGED_IN));
        }
        self.release_anchors(slot, &mut login);
        Ok(())
    }

    /// `C_InitPIN`. In WLD and HA mode: on every member (the SO is logged in
    /// on all of them).
    pub fn init_pin(&self, handle: u64, pin: Option<&[u8]>) -> Result<()> {
        let (slot, own) = self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                m.init_pin(s.real, pin)?;
                Ok((s.slot, s.member))
            },
            |_, _| {},
        )?;
        if self.config.mode.is_virtual() {
            let login = self.slots[slot].login.lock();
            self.on_other_members(&login, slot, own, "C_InitPIN", |member, session| {
                member.init_pin(session, pin)
            });
        }
        Ok(())
    }

    /// `C_SetPIN`. In WLD and HA mode: on every member, and the kept PIN
    /// follows if it is the logged-in user's (PKCS#11: C_SetPIN changes the
    /// PIN of the user logged in, the normal user's if none is).
    pub fn set_pin(&self, handle: u64, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()> {
        let (slot, own) = self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                m.set_pin(s.real, old, new)?;
                Ok((s.slot, s.member))
            },
            |_, _| {},
        )?;
        if self.config.mode.is_virtual() {
            let mut login = self.slots[slot].login.lock();
            self.on_other_members(&login, slot, own, "C_SetPIN", |member, session| {
                member.set_pin(session, old, new)
            });
            // C_SetPIN changes the logged-in user's PIN, the SO's included.
            if login.user.is_some() && !login.protected {
                login.pin_lost = !login.pin.set(new.unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Repeats a token-wide change on every other member in service of
    /// `slot`, through its anchor session or a short-lived read/write one.
    /// A member that refuses what `own` accepted is dropped as inconsistent.
    /// The caller holds the slot's login lock (`login`), so no anchor is
    /// closed while it is in use here.
    fn on_other_members(
        &self,
        login: &Login,
        slot: usize,
        own: usize,
        function: &str,
        f: impl Fn(&P::Member, u64) -> Result<()>,
    ) {
        let members: Vec<usize, MAX_MEMBERS> = self.live_members(slot).collect();
        for m in members.into_iter().filter(|&m| m != own) {
            let entry = self.member(m);
            let r = if self.has_anchor(login, m) {
                f(&entry.member, login.anchors[m])
            } else {
                self.with_temp_session(m, |s| f(&entry.member, s))
            };
            match self.check(m, None, r) {
                Ok(()) => {}
                Err(_) if !self.member_up(m) => {}
                Err(e) => self.inconsistent(m, function, e.rv()),
            }
        }
    }

    fn with_temp_session<T>(&self, m: usize, f: impl FnOnce(u64) -> Result<T>) -> Result<T> {
        let member = &self.member(m).member;
        let s = member.open_session(flags::SERIAL_SESSION | flags::RW_SESSION)?;
        let r = f(s);
        let _ = member.close_session(s);
        r
    }

    // ---- objects ----------------------------------------------------------

    fn real_object(&self, s: &Session<P::Journal>, handle: u64, invalid: Rv) -> Result<u64> {
        self.resolve(at(s), handle, invalid)
    }

    /// The member's handle for virtual object `handle` at `here`, found by
    /// identity on that member if it has not served it before. `invalid` is
    /// the code for a handle that names nothing usable here.
    fn resolve(&self, here: At, handle: u64, invalid: Rv) -> Result<u64> {
        if !self.config.mode.is_virtual() {
            return Ok(handle);
        }
        let identity = {
            let objects = self.objects.read();
            let (kind, slot) = objects.kind(handle).ok_or(Error::Rv(invalid))?;
            if slot != here.slot {
                return Err(Error::Rv(invalid));
            }
            if let Some(real) = objects.real(handle, here.member) {
                return Ok(real);
            }
            match kind {
                ObjectKind::Token(identity) => identity.clone(),
                _ => return Err(Error::Rv(invalid)),
            }
        };
        let member = &self.member(here.member).member;
        let found = if here.find_active {
            self.with_temp_session(here.member, |t| find_unique(member, t, &identity))
        } else {
            find_unique(member, here.real, &identity)
        };
        let real = found?.ok_or(Error::Rv(invalid))?;
        let mut objects = self.objects.write();
        // The object may have been destroyed meanwhile.
        objects.kind(handle).ok_or(Error::Rv(invalid))?;
        objects.add_real(handle, here.member, real)?;
        Ok(real)
    }

    /// The virtual handle for `real`, a handle member `s.member` returned in
    /// session `s`; a new entry if p11ha has not seen it. `owner` is the
    /// session table index when the session just made the object.
    fn adopt(&self, s: &mut Session<P::Journal>, owner: Option<usize>, real: u64) -> Result<u64> {
        if !self.config.mode.is_virtual() {
            return Ok(real);
        }
        if let Some(h) = self.objects.read().lookup(s.member, real) {
            return Ok(h);
        }
        let member = &self.member(s.member).member;
        let (token, identity) = identity_of(member, s.real, real)?;
        let mut objects = self.objects.write();
        if let Some(h) = objects.lookup(s.member, real) {
            return Ok(h);
        }
        let kind = match (token, identity) {
            (true, Some(identity)) => {
                if let Some(h) = objects.find_identity(s.slot, &identity) {
                    if objects.real(h, s.member).is_none() {
                        objects.add_real(h, s.member, real)?;
                        return Ok(h);
                    }
                    // Two objects of one identity on this member: neither
                    // can be told apart elsewhere, so this one stays local.
                    ObjectKind::Local
                } else {
                    ObjectKind::Token(identity)
                }
            }
            (true, None) => ObjectKind::Local,
            (false, _) => match owner {
                Some(owner) => {
                    s.owns_objects = true;
                    ObjectKind::Session {
                        owner,
                        root: None,
                        used: false,
                    }
                }
                None => ObjectKind::Local,
            },
        };
        objects.insert(s.slot, kind, s.member, real)
    }

    /// Adopts an object the session just made; if p11ha cannot keep it, the
    /// object is destroyed again so that nothing unreachable is left behind.
    fn adopt_new(&self, s: &mut Session<P::Journal>, index: usize, real: u64) -> Result<u64> {
        match self.adopt(s, Some(index), real) {
            Ok(h) => Ok(h),
            Err(e) => {
                let _ = self.member(s.member).member.destroy_object(s.real, real);
                Err(e)
            }
        }
    }

    fn is_session_object(&self, handle: u64) -> bool {
        matches!(
            self.objects.read().kind(handle),
            Some((ObjectKind::Session { .. }, _))
        )
    }

    /// HA mode: journals how session object(s) were made.
    fn journal_object(&self, s: &mut Session<P::Journal>, new: NewRecipe<'_>) {
        if !self.ha || !self.is_session_object(new.object) {
            return;
        }
        if !s.journal.recipe(&new) {
            self.lose(Some(lost::OBJECT_NOT_JOURNALLED));
        }
    }

    /// HA mode: `handle` was used in a cryptographic operation (or its value
    /// read); if a generated key stands behind it, that key can no longer be
    /// re-generated in its place.
    fn used(&self, handle: u64) {
        if self.ha && self.objects.write().mark_used(handle) {
            self.lose(Some(lost::RANDOM_KEY_USED));
        }
    }

    /// `C_CreateObject`.
    pub fn create_object(&self, handle: u64, template: &[Attr<'_>]) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let real = m.create_object(s.real, template)?;
                let h = self.adopt_new(s, index, real)?;
                self.journal_object(s, NewRecipe::new(RecipeKind::Create, h, template));
                Ok(h)
            },
            |_, _| {},
        )
    }

    /// `C_CopyObject`.
    pub fn copy_object(&self, handle: u64, object: u64, template: &[Attr<'_>]) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let src = self.real_object(s, object, Rv::OBJECT_HANDLE_INVALID)?;
                let real = m.copy_object(s.real, src, template)?;
                let h = self.adopt_new(s, index, real)?;
                if self.ha {
                    // A copy carries its source's value: it shares its root.
                    let root = self.objects.read().root(object);
                    if let Some(root) = root {
                        self.objects.write().set_root(h, root);
                    }
                }
                self.journal_object(
                    s,
                    NewRecipe {
                        source: object,
                        ..NewRecipe::new(RecipeKind::Copy, h, template)
                    },
                );
                Ok(h)
            },
            |_, _| {},
        )
    }

    /// `C_DestroyObject`. In WLD and HA mode a token object is destroyed on
    /// every member that holds it, so that no member shows it again.
    pub fn destroy_object(&self, handle: u64, object: u64) -> Result<()> {
        let (slot, own, token) = self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let real = self.real_object(s, object, Rv::OBJECT_HANDLE_INVALID)?;
                m.destroy_object(s.real, real)?;
                if self.ha {
                    s.journal.forget_object(object);
                }
                Ok((s.slot, s.member, self.token_identity(object)))
            },
            |_, _| {},
        )?;
        if let Some(identity) = token {
            let login = self.slots[slot].login.lock();
            self.on_other_members(&login, slot, own, "C_DestroyObject", |member, session| {
                match find_unique(member, session, &identity)? {
                    Some(real) => member.destroy_object(session, real),
                    None => Ok(()),
                }
            });
        }
        self.objects.write().remove(object);
        Ok(())
    }

    fn token_identity(&self, object: u64) -> Option<Identity> {
        if !self.config.mode.is_virtual() {
            return None;
        }
        match self.objects.read().kind(object) {
            Some((ObjectKind::Token(identity), _)) => Some(identity.clone()),
            _ => None,
        }
    }

    /// `C_GetObjectSize`.
    pub fn object_size(&self, handle: u64, object: u64) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let real = self.real_object(s, object, Rv::OBJECT_HANDLE_INVALID)?;
                m.object_size(s.real, real)
            },
            |_, _| {},
        )
    }

    /// `C_GetAttributeValue`. Reading the value of a generated key counts as
    /// using it (HA mode).
    pub fn get_attributes(
        &self,
        handle: u64,
        object: u64,
        template: &mut [AttrOut<'_>],
    ) -> Result<()> {
        if template.iter().any(|a| VALUE_ATTRIBUTES.contains(&a.ty)) {
            self.used(object);
        }
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let real = self.real_object(s, object, Rv::OBJECT_HANDLE_INVALID)?;
                m.get_attributes(s.real, real, template)
            },
            |_, _| {},
        )
    }

    /// `C_SetAttributeValue`. In WLD and HA mode a token object is changed
    /// on every member that holds it (a change of `CKA_ID` or `CKA_LABEL`
    /// changes its identity); a session object's change is journalled.
    pub fn set_attributes(&self, handle: u64, object: u64, template: &[Attr<'_>]) -> Result<()> {
        let (slot, own, token) = self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let real = self.real_object(s, object, Rv::OBJECT_HANDLE_INVALID)?;
                m.set_attributes(s.real, real, template)?;
                self.journal_object(
                    s,
                    NewRecipe::new(RecipeKind::SetAttributes, object, template),
                );
                Ok((s.slot, s.member, self.token_identity(object)))
            },
            |_, _| {},
        )?;
        let Some(identity) = token else {
            return Ok(());
        };
        let login = self.slots[slot].login.lock();
        self.on_other_members(
            &login,
            slot,
            own,
            "C_SetAttributeValue",
            |member, session| match find_unique(member, session, &identity)? {
                Some(real) => member.set_attributes(session, real, template),
                None => Ok(()),
            },
        );
        let new_identity = identity_with(&identity, template);
        if new_identity.as_ref() != Some(&identity) {
            let mut objects = self.objects.write();
            // Only the mapping on the member that made the change is sure
            // to be current; the rest are found again by the new identity.
            let own_real = objects.real(object, own);
            objects.remove(object);
            if let (Some(real), Some(identity)) = (own_real, new_identity) {
                // Best effort: a failure only means the next use finds it.
                let _ = objects.insert(slot, ObjectKind::Token(identity), own, real);
            }
        }
        Ok(())
    }

    /// `C_FindObjectsInit`.
    pub fn find_init(&self, handle: u64, template: &[Attr<'_>]) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                m.find_init(s.real, template)?;
                s.find_active = true;
                s.lost_find = false;
                if self.ha {
                    self.lose(s.journal.find_begin(template));
                }
                Ok(())
            },
            |_, _| {},
        )
    }

    /// `C_FindObjects`: virtual handles, each object once, also across a
    /// failover (the search restarts on the new member and what was already
    /// returned is left out).
    pub fn find(&self, handle: u64, out: &mut [u64]) -> Result<usize> {
        self.call(
            handle,
            Uses::Find,
            |m, s, _| {
                let resumed = self.ha && s.journal.find.is_some_and(|f| f.resumed);
                if !resumed {
                    let n = m.find(s.real, out)?.min(out.len());
                    for h in out[..n].iter_mut() {
                        *h = self.adopt(s, None, *h)?;
                        if self.ha {
                            self.lose(s.journal.find_record(*h));
                        }
                    }
                    return Ok(n);
                }
                let mut filled = 0;
                let mut batch = [0u64; 16];
                while filled < out.len() {
                    let want = (out.len() - filled).min(batch.len());
                    let n = m.find(s.real, &mut batch[..want])?.min(want);
                    if n == 0 {
                        break;
                    }
                    for &real in &batch[..n] {
                        let h = self.adopt(s, None, real)?;
                        if !s.journal.find_returned(h) {
                            out[filled] = h;
                            filled += 1;
                            self.lose(s.journal.find_record(h));
                        }
                    }
                }
                Ok(filled)
            },
            |_, _| {},
        )
    }

    /// `C_FindObjectsFinal`.
    pub fn find_final(&self, handle: u64) -> Result<()> {
        self.call(
            handle,
            Uses::FindFinal,
            |m, s, _| {
                if s.lost_find {
                    // The search died with its member; it ends here.
                    s.lost_find = false;
                    return Ok(());
                }
                let r = m.find_final(s.real);
                if r.is_ok() {
                    s.find_active = false;
                    s.journal.find_end();
                }
                r
            },
            |s, r| {
                if !matches!(r, Err(e) if e.rv() == Rv::DEVICE_ERROR) {
                    s.find_active = false;
                    s.journal.find_end();
                }
            },
        )
    }

    // ---- cryptographic operations -------------------------------------------

    fn translate<'a>(&self, here: At, mechanism: &Mechanism<'a>) -> Result<Mechanism<'a>> {
        let mut out = *mechanism;
        if let Param::Handle(h) = mechanism.param {
            out.param = Param::Handle(self.resolve(here, h, Rv::MECHANISM_PARAM_INVALID)?);
        }
        Ok(out)
    }

    fn real_mechanism<'a>(
        &self,
        s: &Session<P::Journal>,
        mechanism: &Mechanism<'a>,
    ) -> Result<Mechanism<'a>> {
        self.translate(at(s), mechanism)
    }

    /// Ends the journalled operation as PKCS#11 ends operations: on success
    /// with output (not a length query), or on any error but
    /// `CKR_BUFFER_TOO_SMALL`.
    fn op_outcome<T>(&self, s: &mut Session<P::Journal>, r: &Result<T>, had_buffer: bool) {
        if !self.ha {
            return;
        }
        match r {
            Ok(_) if had_buffer => s.journal.op_end(),
            Ok(_) | Err(Error::BufferTooSmall { .. }) => {}
            Err(_) => s.journal.op_end(),
        }
    }

    /// `C_EncryptInit`, `C_DecryptInit`, `C_SignInit`, `C_VerifyInit`,
    /// `C_SignRecoverInit`, `C_VerifyRecoverInit` and `C_DigestInit` (whose
    /// `key` is ignored).
    pub fn op_init(&self, handle: u64, op: Op, mechanism: &Mechanism<'_>, key: u64) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let real_key = if op == Op::Digest {
                    0
                } else {
                    self.real_object(s, key, Rv::KEY_HANDLE_INVALID)?
                };
                m.op_init(s.real, op, &real_mech, real_key)?;
                if self.ha {
                    s.lost_op = false;
                    s.state_restored = false;
                    if op != Op::Digest {
                        self.used(key);
                    }
                    if let Param::Handle(h) = mechanism.param {
                        self.used(h);
                    }
                    let key = if op == Op::Digest { 0 } else { key };
                    self.lose(s.journal.op_begin(op, mechanism, key));
                }
                Ok(())
            },
            |_, _| {},
        )
    }

    /// The single-part calls (see [`Member::op_single`]).
    pub fn op_single(
        &self,
        handle: u64,
        op: Op,
        input: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let had_buffer = out.is_some();
        self.call(
            handle,
            Uses::Op,
            |m, s, _| m.op_single(s.real, op, input, out.as_deref_mut()),
            |s, r| self.op_outcome(s, r, had_buffer),
        )
    }

    /// `C_<op>Update`. The data is journalled (HA mode) once the member has
    /// taken it; a length query takes none.
    pub fn op_update(
        &self,
        handle: u64,
        op: Op,
        input: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let length_query = matches!(op, Op::Encrypt | Op::Decrypt) && out.is_none();
        self.call(
            handle,
            Uses::Op,
            |m, s, _| {
                let n = m.op_update(s.real, op, input, out.as_deref_mut())?;
                if self.ha && !length_query {
                    self.lose(s.journal.op_update(input));
                }
                Ok(n)
            },
            |s, r| {
                if r.is_err() {
                    self.op_outcome(s, r, false);
                }
            },
        )
    }

    /// `C_<op>Final`.
    pub fn op_final(&self, handle: u64, op: Op, mut out: Option<&mut [u8]>) -> Result<usize> {
        let had_buffer = out.is_some();
        self.call(
            handle,
            Uses::Op,
            |m, s, _| m.op_final(s.real, op, out.as_deref_mut()),
            |s, r| self.op_outcome(s, r, had_buffer),
        )
    }

    /// `C_Verify`.
    pub fn verify(&self, handle: u64, data: &[u8], signature: &[u8]) -> Result<()> {
        self.call(
            handle,
            Uses::Op,
            |m, s, _| m.verify(s.real, data, signature),
            |s, r| self.op_outcome(s, r, true),
        )
    }

    /// `C_VerifyFinal`.
    pub fn verify_final(&self, handle: u64, signature: &[u8]) -> Result<()> {
        self.call(
            handle,
            Uses::Op,
            |m, s, _| m.verify_final(s.real, signature),
            |s, r| self.op_outcome(s, r, true),
        )
    }

    /// Ends the member's `op` operation on a session after p11ha refused a
    /// call's arguments before the member saw them, where PKCS#11 says the
    /// call ends the operation whatever its result (v2.40 5.8-5.12: `C_Encrypt`,
    /// `C_EncryptUpdate`, `C_EncryptFinal` and their kin always terminate
    /// the operation unless they answer `CKR_BUFFER_TOO_SMALL` or a length
    /// query). The member is made to end it by a call of the same kind
    /// (`single`: the single-part function, else the final one) with no
    /// data and a scratch buffer, whose result is thrown away. Nothing
    /// happens where no such operation is active or the handle is invalid.
    pub fn op_abandon(&self, handle: u64, op: Op, single: bool) {
        let mut scratch = [0u8; 4096];
        let _ = self.call(
            handle,
            Uses::Op,
            |m, s, _| match (op, single) {
                (Op::Verify, true) => m.verify(s.real, &[], &[]).map(|_| 0),
                (Op::Verify, false) => m.verify_final(s.real, &[]).map(|_| 0),
                (_, true) | (Op::SignRecover | Op::VerifyRecover, _) => {
                    m.op_single(s.real, op, &[], Some(&mut scratch))
                }
                (_, false) => m.op_final(s.real, op, Some(&mut scratch)),
            },
            |s, r| self.op_outcome(s, r, true),
        );
    }

    /// `C_DigestKey` (the key's value cannot be journalled: the digest is
    /// lost in a failover).
    pub fn digest_key(&self, handle: u64, key: u64) -> Result<()> {
        self.call(
            handle,
            Uses::Op,
            |m, s, _| {
                let real = self.real_object(s, key, Rv::KEY_HANDLE_INVALID)?;
                m.digest_key(s.real, real)?;
                if self.ha {
                    self.used(key);
                    self.lose(s.journal.op_lose(lost::DIGEST_KEY));
                }
                Ok(())
            },
            |s, r| {
                if r.is_err() {
                    self.op_outcome(s, r, false);
                }
            },
        )
    }

    /// The dual-function updates (two operations at once: not replayable).
    pub fn dual_update(
        &self,
        handle: u64,
        op: DualOp,
        input: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.call(
            handle,
            Uses::Op,
            |m, s, _| {
                let n = m.dual_update(s.real, op, input, out.as_deref_mut())?;
                if self.ha {
                    self.lose(s.journal.op_lose(journal::TWO_OPERATIONS));
                }
                Ok(n)
            },
            |s, r| {
                if r.is_err() {
                    self.op_outcome(s, r, false);
                }
            },
        )
    }

    /// `C_GenerateKey`.
    pub fn generate_key(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let real = m.generate_key(s.real, &real_mech, template)?;
                let h = self.adopt_new(s, index, real)?;
                if self.ha {
                    self.objects.write().set_root(h, h);
                }
                self.journal_object(
                    s,
                    NewRecipe {
                        mechanism: Some(mechanism),
                        ..NewRecipe::new(RecipeKind::GenerateKey, h, template)
                    },
                );
                Ok(h)
            },
            |_, _| {},
        )
    }

    /// `C_GenerateKeyPair`.
    pub fn generate_key_pair(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        public_template: &[Attr<'_>],
        private_template: &[Attr<'_>],
    ) -> Result<(u64, u64)> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let (public, private) =
                    m.generate_key_pair(s.real, &real_mech, public_template, private_template)?;
                let public_v = match self.adopt_new(s, index, public) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = m.destroy_object(s.real, private);
                        return Err(e);
                    }
                };
                let private_v = match self.adopt_new(s, index, private) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = m.destroy_object(s.real, public);
                        self.objects.write().remove(public_v);
                        return Err(e);
                    }
                };
                if self.ha {
                    // Both halves come from one random key: using either
                    // uses it.
                    let mut objects = self.objects.write();
                    objects.set_root(private_v, private_v);
                    objects.set_root(public_v, private_v);
                }
                self.journal_object(
                    s,
                    NewRecipe {
                        object2: private_v,
                        mechanism: Some(mechanism),
                        template2: private_template,
                        ..NewRecipe::new(RecipeKind::GenerateKeyPair, public_v, public_template)
                    },
                );
                Ok((public_v, private_v))
            },
            |_, _| {},
        )
    }

    /// `C_WrapKey` (both keys count as used).
    pub fn wrap_key(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        wrapping_key: u64,
        key: u64,
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.used(wrapping_key);
        self.used(key);
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let mechanism = self.real_mechanism(s, mechanism)?;
                let wrapping =
                    self.real_object(s, wrapping_key, Rv::WRAPPING_KEY_HANDLE_INVALID)?;
                let key = self.real_object(s, key, Rv::KEY_HANDLE_INVALID)?;
                m.wrap_key(s.real, &mechanism, wrapping, key, out.as_deref_mut())
            },
            |_, _| {},
        )
    }

    /// `C_UnwrapKey`.
    pub fn unwrap_key(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        unwrapping_key: u64,
        wrapped: &[u8],
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let unwrapping =
                    self.real_object(s, unwrapping_key, Rv::UNWRAPPING_KEY_HANDLE_INVALID)?;
                let real = m.unwrap_key(s.real, &real_mech, unwrapping, wrapped, template)?;
                self.used(unwrapping_key);
                let h = self.adopt_new(s, index, real)?;
                self.journal_object(
                    s,
                    NewRecipe {
                        source: unwrapping_key,
                        mechanism: Some(mechanism),
                        wrapped,
                        ..NewRecipe::new(RecipeKind::Unwrap, h, template)
                    },
                );
                Ok(h)
            },
            |_, _| {},
        )
    }

    /// `C_DeriveKey`.
    pub fn derive_key(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        base_key: u64,
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let base = self.real_object(s, base_key, Rv::KEY_HANDLE_INVALID)?;
                let real = m.derive_key(s.real, &real_mech, base, template)?;
                self.used(base_key);
                let h = self.adopt_new(s, index, real)?;
                self.journal_object(
                    s,
                    NewRecipe {
                        source: base_key,
                        mechanism: Some(mechanism),
                        ..NewRecipe::new(RecipeKind::Derive, h, template)
                    },
                );
                Ok(h)
            },
            |_, _| {},
        )
    }

    /// `C_SeedRandom`.
    pub fn seed_random(&self, handle: u64, seed: &[u8]) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| m.seed_random(s.real, seed),
            |_, _| {},
        )
    }

    /// `C_GenerateRandom`.
    pub fn generate_random(&self, handle: u64, out: &mut [u8]) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| m.generate_random(s.real, out),
            |_, _| {},
        )
    }

    /// `C_GetFunctionStatus` (legacy: members answer
    /// `CKR_FUNCTION_NOT_PARALLEL`).
    pub fn function_status(&self, handle: u64) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| m.function_status(s.real),
            |_, _| {},
        )
    }

    /// `C_CancelFunction` (legacy, likewise).
    pub fn cancel_function(&self, handle: u64) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| m.cancel_function(s.real),
            |_, _| {},
        )
    }
}

/// Writes `items` to `out` as PKCS#11 length queries expect.
pub fn copy_out(items: &[u64], out: Option<&mut [u64]>) -> Result<usize> {
    match out {
        None => Ok(items.len()),
        Some(out) if out.len() < items.len() => Err(Error::BufferTooSmall {
            needed: items.len(),
        }),
        Some(out) => {
            out[..items.len()].copy_from_slice(items);
            Ok(items.len())
        }
    }
}

/// Reads whether `real` is a token object, and its identity if it has one
/// that fits.
fn identity_of<M: Member>(member: &M, session: u64, real: u64) -> Result<(bool, Option<Identity>)> {
    let mut class = [0u8; 8];
    let mut token = [0u8; 1];
    let mut key_type = [0u8; 8];
    let mut id = [0u8; MAX_IDENTITY_BYTES];
    let mut label = [0u8; MAX_IDENTITY_BYTES];
    let width = core::mem::size_of::<core::ffi::c_ulong>();
    let mut t = [
        AttrOut {
            ty: attr::CLASS,
            buf: Some(&mut class[..width]),
            len: None,
        },
        AttrOut {
            ty: attr::TOKEN,
            buf: Some(&mut token),
            len: None,
        },
        AttrOut {
            ty: attr::KEY_TYPE,
            buf: Some(&mut key_type[..width]),
            len: None,
        },
        AttrOut {
            ty: attr::ID,
            buf: Some(&mut id),
            len: None,
        },
        AttrOut {
            ty: attr::LABEL,
            buf: Some(&mut label),
            len: None,
        },
    ];
    let rv = match member.get_attributes(session, real, &mut t) {
        Ok(()) => Rv::OK,
        Err(Error::Rv(
            rv @ (Rv::ATTRIBUTE_TYPE_INVALID | Rv::ATTRIBUTE_SENSITIVE | Rv::BUFFER_TOO_SMALL),
        )) => rv,
        Err(e) => return Err(e),
    };
    let lens = [t[0].len, t[1].len, t[2].len, t[3].len, t[4].len];
    let is_token = lens[1] == Some(1) && token[0] != 0;
    let Some(class) = lens[0].and_then(|n| ulong_from_bytes(class.get(..n)?)) else {
        return Ok((is_token, None));
    };
    let key_type = lens[2].and_then(|n| ulong_from_bytes(key_type.get(..n)?));
    // An unavailable id or label is either absent (fine: the identity has
    // none) or longer than p11ha keeps (then the object cannot be found by
    // identity). When the call did not succeed outright, the module may have
    // reported either with one code, so ask for the lengths alone.
    if rv != Rv::OK && (lens[3].is_none() || lens[4].is_none()) {
        let mut probe = [
            AttrOut {
                ty: attr::ID,
                buf: None,
                len: None,
            },
            AttrOut {
                ty: attr::LABEL,
                buf: None,
                len: None,
            },
        ];
        match member.get_attributes(session, real, &mut probe) {
            Ok(()) | Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID)) => {}
            Err(Error::Rv(_)) => return Ok((is_token, None)),
            Err(e) => return Err(e),
        }
        if (lens[3].is_none() && probe[0].len.is_some())
            || (lens[4].is_none() && probe[1].len.is_some())
        {
            return Ok((is_token, None));
        }
    }
    let keep = |len: Option<usize>, buf: &[u8]| -> core::result::Result<_, ()> {
        match len {
            None => Ok(None),
            Some(n) => buf
                .get(..n)
                .and_then(|b| Vec::from_slice(b).ok())
                .map(Some)
                .ok_or(()),
        }
    };
    let (Ok(id), Ok(label)) = (keep(lens[3], &id), keep(lens[4], &label)) else {
        return Ok((is_token, None));
    };
    Ok((
        is_token,
        Some(Identity {
            class,
            key_type,
            id,
            label,
        }),
    ))
}

/// The identity an object has after `template` is applied to it; `None` if
/// the new id or label is too long to keep.
fn identity_with(identity: &Identity, template: &[Attr<'_>]) -> Option<Identity> {
    let mut out = identity.clone();
    for a in template {
        match a.ty {
            attr::ID => out.id = Some(Vec::from_slice(a.value).ok()?),
            attr::LABEL => out.label = Some(Vec::from_slice(a.value).ok()?),
            _ => {}
        }
    }
    Some(out)
}

/// Finds the one token object with `identity` on `member`; `None` if there
/// is none or more than one.
fn find_unique<M: Member>(member: &M, session: u64, identity: &Identity) -> Result<Option<u64>> {
    let class = ulong_bytes(identity.class);
    let key_type = identity.key_type.map(ulong_bytes);
    let mut template: Vec<Attr<'_>, 5> = Vec::new();
    // Capacity 5 holds all five.
    let _ = template.push(Attr {
        ty: attr::CLASS,
        value: &class,
    });
    let _ = template.push(Attr {
        ty: attr::TOKEN,
        value: &TRUE,
    });
    if let Some(k) = &key_type {
        let _ = template.push(Attr {
            ty: attr::KEY_TYPE,
            value: k,
        });
    }
    if let Some(id) = &identity.id {
        let _ = template.push(Attr {
            ty: attr::ID,
            value: id,
        });
    }
    if let Some(label) = &identity.label {
        let _ = template.push(Attr {
            ty: attr::LABEL,
            value: label,
        });
    }
    member.find_init(session, &template)?;
    let mut found = [0u64; 2];
    let r = member.find(session, &mut found);
    let f = member.find_final(session);
    let n = r?;
    f?;
    Ok((n == 1).then_some(found[0]))
}

/// A `core::fmt::Write` over a byte buffer that stops when it is full.
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Cursor { buf, at: 0 }
    }
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.at;
        let n = s.len().min(room);
        self.buf[self.at..self.at + n].copy_from_slice(&s.as_bytes()[..n]);
        self.at += n;
        Ok(())
    }
}

#[allow(dead_code)]
const _: () = {
    // The unavailable marker must not collide with a real length.
    assert!(ck::UNAVAILABLE == u64::MAX);
};

#[cfg(test)]
#[path = "engine_secret_tests.rs"]
mod secret_tests;
