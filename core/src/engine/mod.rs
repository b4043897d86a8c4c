//! The engine: one PKCS#11 call in, routed to the session's member, with
//! virtual handles translated both ways, and, in HA mode, journalled so that
//! the session can be rebuilt on another member when its own fails.
//!
//! It is made of parts that own their state, each documented where it
//! lives:
//! - [`pool`]: the members, the virtual slots they serve, their health
//!   (up, epochs, calls in flight) and the recovery schedule;
//! - [`logins`]: per slot, the application's login, the kept PIN and the
//!   anchor sessions that hold each member's login;
//! - [`sessions`]: the session table, each session with its journal;
//! - [`objects`]: the virtual object table and identity lookup;
//! - [`replay`]: failover, and the journal's use in it; a session's move
//!   to the member that holds its slot's session objects;
//! - [`replicate`]: token writes on every member, or refused;
//! - [`storage`]: the tables, in the platform's storage.
//!
//! The [`Engine`] composes them. Its methods are the PKCS#11 calls, one
//! file per chapter of the specification (v2.40 §5): [`slot`] (slot and
//! token management), [`session`] (session management, login), [`object`]
//! (object management), [`crypto`] (encryption, decryption, digests,
//! signatures, dual-function), [`keys`] (key management), [`random`]
//! (random numbers, parallel functions); [`health`] takes failed members out
//! and brings them back.
//!
//! Lock order, outermost first: a session's lock (held across the member
//! call, a failover and its replay), a slot's login lock, the object table,
//! the pool's schedule. Two session locks are held at once only where a
//! session makes another's maker fail over (`fail_over_owner`, ordered by
//! index). Members and slots are append-only tables read without locks.
//! Why a call on one session never waits behind another: each session has
//! its own lock, and nothing else is held across a member call but the
//! login lock of a slot while its logins change or a token object is
//! written (token writes on a slot are serialised, so that every member
//! sees them in one order).
//!
//! A failover (HA mode): the failing member is taken out ("HSM Failure
//! detected"), a session is opened on the member in service with the
//! fewest sessions, its login is made sure of, the journal is replayed
//! (session objects in order, then the operation with its Update data, then
//! the search), and the interrupted call runs there. State the journal could
//! not keep ends in a clear error for the call that needs it, with a log
//! line, never in a different result.

use crate::ck::Rv;
use crate::config::{Config, Mode};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::journal::Lost;
use crate::port::{Clock, Events, Member, Platform, Version};
use crate::sync::atomic::{AtomicBool, AtomicU32, Ordering};

mod crypto;
mod health;
mod keys;
mod logins;
mod object;
mod objects;
mod pool;
mod random;
mod replay;
mod replicate;
mod session;
mod sessions;
mod slot;
mod storage;
mod support;
#[cfg(test)]
mod tests;

pub use logins::LoginCell;
pub use pool::{MemberCell, SlotCell, is_member_failure};
pub use sessions::SessionCell;
pub use storage::{Capacity, Storage, Tables};
pub use support::{Function, MAX_MEMBER_MECHANISMS, Support};

use logins::Logins;
use objects::{At, Objects};
use pool::Pool;
use sessions::{LostSearch, Session, Sessions};

/// The most members one engine can have (a virtual slot keeps its members
/// in a 32-bit mask: 32-bit targets have no 64-bit atomics).
pub const MAX_MEMBERS: usize = 32;

/// p11ha's version, reported in slot and token information.
pub const VERSION: Version = Version { major: 0, minor: 1 };

/// A member as [`Engine::member_status`] shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// What a call needs of the session's state, so that state a failover lost
/// is answered with an error instead of a different result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Uses {
    Nothing,
    Op,
    Find,
    FindFinal,
}

/// The p11ha engine: every PKCS#11 call that reaches a member goes through
/// one of its methods.
pub struct Engine<P: Platform> {
    config: Config,
    ha: bool,
    pool: Pool<P>,
    logins: Logins<P>,
    sessions: Sessions<P>,
    objects: Objects<P>,
    events: P::Events,
    clock: P::Clock,
    /// "Session potentially not recoverable" was reported.
    reported_unrecoverable: AtomicBool,
    /// Sessions failed over to another member, their state rebuilt.
    failovers: AtomicU32,
    /// Sessions moved to their slot's home of session objects.
    moves: AtomicU32,
}

/// What the engine counted since it was made (for an operator's live
/// view): each count wraps at 2^32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sessions failed over to another member with their state replayed
    /// (what could not be rebuilt is said by `RecoveryIncomplete`).
    pub failovers: u32,
    /// Sessions moved to the member that holds their slot's session
    /// objects.
    pub moves: u32,
}

impl<P: Platform> Engine<P> {
    /// An engine over `storage`. In WLD and HA mode the configured virtual
    /// slots are created now (they exist, without a token, until a member
    /// joins); `CKR_HOST_MEMORY` if `storage.slots` cannot hold them.
    /// `seed` seeds the tie-breaking between equally loaded members.
    pub fn new(
        config: &Config,
        storage: Storage<P>,
        events: P::Events,
        clock: P::Clock,
        seed: u64,
    ) -> Result<Self> {
        let engine = Engine {
            config: *config,
            ha: config.mode == Mode::Ha,
            pool: Pool::new(storage.members, storage.slots, config, seed),
            logins: Logins::new(storage.logins),
            sessions: Sessions::new(storage.sessions),
            objects: Objects::new(storage.objects, storage.object_index, config.mode),
            events,
            clock,
            reported_unrecoverable: AtomicBool::new(false),
            failovers: AtomicU32::new(0),
            moves: AtomicU32::new(0),
        };
        if config.mode.is_virtual() {
            for s in config.wld_slots.as_slice() {
                engine.pool.push_slot(s.id, s.label)?;
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

    fn is_virtual(&self) -> bool {
        self.config.mode.is_virtual()
    }

    /// Offers a member: one slot of one module or server. In NORMAL mode it
    /// becomes a slot of its own; in WLD and HA mode it joins the virtual
    /// slot whose configured label its token carries, or is not used.
    /// Returns its member index if it was taken.
    ///
    /// The platform offers each of its slots once (at `C_Initialize`, and
    /// again when `C_GetSlotList` finds new ones).
    pub fn add_member(&self, member: P::Member) -> Result<Option<usize>> {
        let _adding = self.pool.adding();
        let slot = if self.is_virtual() {
            let info = match member.token_info() {
                Ok(info) => info,
                // No token (yet) in that slot: not a member.
                Err(_) => return Ok(None),
            };
            match self.pool.slot_of_label(&info.label) {
                Some(slot) => slot,
                None => return Ok(None),
            }
        } else {
            let next = self.pool.slot_count();
            self.pool.push_slot(next as u64, [b' '; 32])?
        };
        let hsm_slot_id = member.slot_id();
        // Before it serves anything, so that the probe's session is the
        // only one p11ha has there.
        let support = Support::probe(&member);
        let index = self.pool.push_member(member, slot, support)?;
        if self.is_virtual() {
            let mut login = self.logins.lock(slot);
            // Best effort: a member that refuses now gets one when needed.
            let _ = login.anchor(&self.pool, index);
        }
        self.pool.enlist(index);
        self.events.event(&Event::MemberJoined {
            hsm_idx: index,
            hsm_slot_id,
            slot: self.pool.slot(slot).id,
        });
        Ok(Some(index))
    }

    /// The number of members taken so far.
    pub fn member_count(&self) -> usize {
        self.pool.member_count()
    }

    /// Calls `f` with member `index` (for the platform's own bookkeeping).
    pub fn with_member<T>(&self, index: usize, f: impl FnOnce(&P::Member) -> T) -> Option<T> {
        (index < self.member_count()).then(|| f(self.pool.member(index)))
    }

    /// Whether member `index` is in service.
    pub fn member_up(&self, index: usize) -> bool {
        self.pool.up(index)
    }

    /// Calls inside member `index` now (0 for an index past the members).
    pub fn member_calls_in_flight(&self, index: usize) -> u32 {
        if index >= self.member_count() {
            return 0;
        }
        self.pool.calls_in_flight(index)
    }

    /// What the engine counted (see [`Counts`]).
    pub fn counts(&self) -> Counts {
        Counts {
            failovers: self.failovers.load(Ordering::Relaxed),
            moves: self.moves.load(Ordering::Relaxed),
        }
    }

    /// What an operator (or a test) sees of member `index`.
    pub fn member_status(&self, index: usize) -> Option<MemberStatus> {
        if index >= self.member_count() {
            return None;
        }
        let m = self.pool.entry(index);
        Some(MemberStatus {
            slot: self.pool.slot(m.slot).id,
            member_slot: m.member.slot_id(),
            sessions: m.sessions.load(Ordering::Acquire),
            up: m.up(),
        })
    }

    /// What member `index` supports, as learnt when it joined.
    pub fn member_support(&self, index: usize) -> Option<Support> {
        (index < self.member_count()).then(|| self.pool.entry(index).support)
    }

    /// `CKR_FUNCTION_NOT_SUPPORTED` if no member in service of session
    /// `handle`'s slot implements `function`; the session handle is checked
    /// first, as modules do. Every call of such a function checks this
    /// before it resolves any other handle or argument (the C ABI calls it
    /// before it reads the call's pointers), so that an application that
    /// probes for the function is answered as the member would answer it.
    pub fn function_supported(&self, handle: u64, function: Function) -> Result<()> {
        let (_, s) = self.sessions.lock(handle)?;
        self.slot_supports(s.slot, function)
    }

    /// See [`Engine::function_supported`]. With no member in service the
    /// call goes on, to fail (or fail over) as any call does.
    fn slot_supports(&self, slot: usize, function: Function) -> Result<()> {
        let mut live = self.pool.live(slot).peekable();
        if live.peek().is_none() || live.any(|m| self.pool.entry(m).support.has_function(function))
        {
            return Ok(());
        }
        Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))
    }

    /// The member index that serves session `handle`.
    pub fn session_member(&self, handle: u64) -> Result<usize> {
        let (_, s) = self.sessions.lock(handle)?;
        Ok(s.member)
    }

    // ---- dispatch -----------------------------------------------------------

    /// Whether session `s` can no longer use its real session: it has no
    /// member, or its member failed since it was placed there.
    fn stale(&self, s: &Session<P::Journal>) -> bool {
        s.orphan || !self.pool.current(s.member, s.epoch)
    }

    /// Runs one call on session `handle`, with the session locked: `f` does
    /// the member call (and records what succeeded), `done` sees the final
    /// result. A member failure takes the member out of service; in HA mode
    /// the session then fails over and `f` runs again on the new member.
    fn call<T>(
        &self,
        handle: u64,
        uses: Uses,
        f: impl FnMut(&P::Member, &mut Session<P::Journal>, usize) -> Result<T>,
        done: impl FnOnce(&mut Session<P::Journal>, &Result<T>),
    ) -> Result<T> {
        self.call_needing(handle, None, uses, f, done)
    }

    /// As [`Engine::call`], for a call of an optional function (`needs`),
    /// which is answered `CKR_FUNCTION_NOT_SUPPORTED` before anything else
    /// but the session handle where no member in service has it.
    fn call_needing<T>(
        &self,
        handle: u64,
        needs: Option<Function>,
        uses: Uses,
        mut f: impl FnMut(&P::Member, &mut Session<P::Journal>, usize) -> Result<T>,
        done: impl FnOnce(&mut Session<P::Journal>, &Result<T>),
    ) -> Result<T> {
        let (index, mut s) = self.sessions.lock(handle)?;
        if let Some(function) = needs {
            self.slot_supports(s.slot, function)?;
        }
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
        let mut moves = 0;
        loop {
            // Counted before the member's state is read, so that recovery
            // (which waits for zero) never closes a session under this
            // call; held until the member answered. Once per attempt: the
            // member's count is shared by every thread that calls it.
            let m = s.member;
            let entry = self.pool.entry(m);
            let busy = entry.busy();
            if self.stale(s) {
                drop(busy);
                if !self.ha || failovers > MAX_MEMBERS {
                    return Err(Error::Rv(Rv::DEVICE_ERROR));
                }
                failovers += 1;
                self.failover(s)?;
                // Counted on the new member and checked again.
                continue;
            }
            self.state_lost(s, uses)?;
            let real = s.real;
            let t0 = self.events.times_calls().then(|| self.clock.now_us());
            let r = f(&entry.member, s, index);
            if let Some(t0) = t0 {
                self.events
                    .member_call(m, self.clock.now_us().saturating_sub(t0));
            }
            if let Err(Error::Elsewhere { member }) = r {
                // A session object the call needs is on its slot's home.
                drop(busy);
                moves += 1;
                if moves > MAX_MEMBERS {
                    return Err(Error::Rv(Rv::DEVICE_ERROR));
                }
                self.move_session(s, member)?;
                continue;
            }
            if let Err(e) = &r
                && self.is_virtual()
                && (!self.pool.current(m, s.epoch) || self.pool.failed(m, Some(real), e))
            {
                self.take_out(m, e.rv());
                if self.ha {
                    continue;
                }
            }
            return r;
        }
    }

    /// State a failover could not rebuild is answered `CKR_DEVICE_ERROR`
    /// by the calls that need it, the first with a log line: the operation
    /// once (the error ends it), the search until its `C_FindObjectsFinal`.
    fn state_lost(&self, s: &mut Session<P::Journal>, uses: Uses) -> Result<()> {
        let what = match uses {
            Uses::Op if s.lost_op => {
                s.lost_op = false;
                "the operation in progress"
            }
            Uses::Find if s.lost_find == LostSearch::Told => {
                return Err(Error::Rv(Rv::DEVICE_ERROR));
            }
            Uses::Find if s.lost_find == LostSearch::Untold => {
                s.lost_find = LostSearch::Told;
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

    /// Reports, once per engine (one `C_Initialize`), that the application
    /// did something that makes a session unrecoverable.
    fn lose(&self, why: Option<Lost>) {
        if let Some(lost) = why
            && !self.reported_unrecoverable.swap(true, Ordering::AcqRel)
        {
            self.events.event(&Event::NotRecoverable { lost });
        }
    }

    /// Where session `s` resolves object handles.
    fn at(&self, s: &Session<P::Journal>) -> At {
        At {
            slot: s.slot,
            member: s.member,
            real: s.real,
            find_active: s.find_active,
        }
    }

    /// The member's handle for virtual object `handle` in session `s`.
    fn real_object(&self, s: &Session<P::Journal>, handle: u64, invalid: Rv) -> Result<u64> {
        self.resolve_at(self.at(s), s.index, handle, invalid)
    }

    /// The member's handle for virtual object `handle` at `here`, for
    /// session table index `index`. HA mode: a session object no member in
    /// service holds is re-created first by its owner's failover, if the
    /// owner has not failed over yet.
    fn resolve_at(&self, here: At, index: usize, handle: u64, invalid: Rv) -> Result<u64> {
        let r = self.objects.resolve(&self.pool, here, handle, invalid);
        // (With P11HA_TOKEN_KEYS=LOCAL a token object may be on one member
        // by choice.)
        if r == Err(Error::Rv(invalid))
            && !self.config.token_keys_local
            && let Some(other) = self.objects.held_elsewhere(&self.pool, handle, here.member)
            && let Some(identity) = self.objects.token_identity(handle)
        {
            // A token object another member held is not on this one. If
            // that member still holds it, this one was changed behind
            // p11ha's back: it no longer holds what the others hold (in HA
            // mode the call fails over). If not, the object is gone (another
            // application destroyed it on every member).
            let there = {
                let login = self.logins.lock(here.slot);
                match login.anchor_of(&self.pool, other) {
                    Some(a) => {
                        let _busy = self.pool.entry(other).busy();
                        let found = objects::find_unique(self.pool.member(other), a, &identity);
                        self.check(other, Some(a), found)
                    }
                    None => Ok(None),
                }
            };
            if let Ok(Some(_)) = there {
                self.inconsistent(here.member, "C_FindObjects", Rv::OBJECT_HANDLE_INVALID);
                return Err(Error::Rv(Rv::DEVICE_ERROR));
            }
            if let Ok(None) = there {
                self.objects.write().remove(handle);
            }
            return r;
        }
        if self.ha
            && r == Err(Error::Rv(invalid))
            && let Some(owner) = self.objects.owner_to_rebuild(&self.pool, handle)
            && owner != index
            && self.fail_over_owner(owner, index)
        {
            return self.objects.resolve(&self.pool, here, handle, invalid);
        }
        r
    }

    /// Making a session object (`session_object`) in session `s`: it must
    /// be made on its slot's home. [`Error::Elsewhere`] if the session is
    /// not there.
    fn home_check(&self, s: &Session<P::Journal>, session_object: bool) -> Result<()> {
        match self.objects.home_elsewhere(&self.pool, s.slot, s.member) {
            Some(member) if session_object => Err(Error::Elsewhere { member }),
            _ => Ok(()),
        }
    }
}
