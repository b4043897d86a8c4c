//! Failover and replay (HA mode): a session whose member failed moves to
//! the member in service with the fewest sessions, where its journal is
//! replayed: session objects in the order they were made, then the
//! operation in progress with its Update data, then the search.
//!
//! Invariants:
//! - replay never produces a different result: what the journal could not
//!   keep (marked *lost* when it happened, and reported then as PTK's
//!   "Session potentially not recoverable") is not rebuilt; the call that
//!   needs it is answered `CKR_DEVICE_ERROR`, once, with "Session recovery
//!   incomplete" in the log (see `Engine::state_lost`);
//! - a generated key that was used is not re-generated (a new one would
//!   differ); its handle, and those of objects made from it, become
//!   invalid;
//! - output the application already received (multi-part encryption and
//!   decryption) is replayed into a scratch buffer and thrown away;
//! - an error during replay that means the new member failed too moves the
//!   session on again; any other error loses that part only.
//!
//! Replay runs under the session's lock, so the session sees nothing in
//! between; it takes the slot's login lock only to make sure of the login.

use crate::ck::Rv;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::journal::{Journal, OpRecord, Recipe, RecipeKind};
use crate::port::{Events, Member, Op, Platform};

use super::Engine;
use super::objects::At;
use super::sessions::{LostSearch, Session};

/// Update data is replayed in pieces of this size (the output of each is
/// discarded into a buffer twice as large: the application has it already).
const REPLAY_CHUNK: usize = 1024;

impl<P: Platform> Engine<P> {
    /// Moves session `s` to another member (HA mode): opens a session on
    /// the member in service with the fewest sessions, makes sure it is
    /// logged in, replays the journal. `CKR_DEVICE_ERROR` when no member
    /// can take it: the session stays without a member, and the next call
    /// tries again (a member may have come back).
    pub(super) fn failover(&self, s: &mut Session<P::Journal>) -> Result<()> {
        if !s.orphan {
            self.pool
                .entry(s.member)
                .sessions
                .fetch_sub(1, core::sync::atomic::Ordering::AcqRel);
            s.orphan = true;
            s.find_active = false;
        }
        // A session whose session objects (or whose operation's key) must
        // be re-created goes to their home, which it makes if need be.
        let to_home = s.owns_objects
            || s.journal
                .op
                .is_some_and(|o| o.key != 0 && self.objects.is_session_object(o.key));
        loop {
            // A member that cannot run the journalled operation is taken
            // only where none can (the operation is then lost, and said).
            let fits = |m: usize| self.can_take(s, m);
            let picked = if to_home {
                self.objects.home_for_failover(&self.pool, s.slot, fits)
            } else {
                self.pool
                    .pick_where(s.slot, fits)
                    .or_else(|_| self.pool.pick(s.slot))
            };
            let Ok(m) = picked else {
                return Err(Error::Rv(Rv::DEVICE_ERROR));
            };
            let entry = self.pool.entry(m);
            let _busy = entry.busy();
            // Before the open, and the member still in service after it, as
            // in `open_on`.
            let epoch = entry.epoch();
            if !entry.up() {
                continue;
            }
            let real = match entry.member.open_session(s.flags) {
                Ok(real) => real,
                Err(e) if self.pool.failed(m, None, &e) => {
                    self.take_out(m, e.rv());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let logged_in = {
                let mut login = self.logins.lock(s.slot);
                self.ensure_logged_in(&mut login, m)
            };
            match logged_in.and_then(|()| self.replay(s, m, real)) {
                Ok(()) => {
                    entry
                        .sessions
                        .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
                    s.member = m;
                    s.real = real;
                    s.epoch = epoch;
                    s.orphan = false;
                    self.failovers
                        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if !self.member_up(m) || self.pool.failed(m, Some(real), &e) => {
                    self.take_out(m, e.rv());
                }
                Err(e) => {
                    let _ = entry.member.close_session(real);
                    return Err(e);
                }
            }
        }
    }

    /// Moves session `s` to member `target`, the home of its slot's session
    /// objects, which a call needs: a session is opened there, logged in as
    /// the application is, the journal replayed (HA mode), and the old one
    /// closed. The session's state must move exactly, or it does not move:
    /// with an operation or search in progress that cannot be rebuilt there
    /// (WLD mode, which keeps no journal; HA mode when the journal lost it)
    /// the call is answered `CKR_OPERATION_ACTIVE`, with a log line. If
    /// `target` fails meanwhile it is taken out and the session stays: the
    /// call runs again and finds out what that means.
    pub(super) fn move_session(&self, s: &mut Session<P::Journal>, target: usize) -> Result<()> {
        if !self.movable(s) {
            let rv = Rv::OPERATION_ACTIVE;
            self.events.event(&Event::SessionNotMoved {
                hsm_idx: target,
                rv,
            });
            return Err(Error::Rv(rv));
        }
        if !self.can_take(s, target) {
            // Its operation's mechanism (or function) is not there.
            let rv = Rv::OPERATION_ACTIVE;
            self.events.event(&Event::SessionNotMoved {
                hsm_idx: target,
                rv,
            });
            return Err(Error::Rv(rv));
        }
        let entry = self.pool.entry(target);
        let _busy = entry.busy();
        // Before the open, as `open_on` reads it.
        let epoch = entry.epoch();
        if !entry.up() {
            return Ok(());
        }
        let real = match entry.member.open_session(s.flags) {
            Ok(real) => real,
            Err(e) if self.pool.failed(target, None, &e) => {
                self.take_out(target, e.rv());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let logged_in = {
            let mut login = self.logins.lock(s.slot);
            self.ensure_logged_in(&mut login, target)
        };
        let find_active = core::mem::replace(&mut s.find_active, false);
        let moved = logged_in.and_then(|()| {
            if self.ha {
                self.replay(s, target, real)
            } else {
                Ok(())
            }
        });
        if let Err(e) = moved {
            s.find_active = find_active;
            let _ = entry.member.close_session(real);
            if !self.member_up(target) || self.pool.failed(target, Some(real), &e) {
                self.take_out(target, e.rv());
                return Ok(());
            }
            return Err(e);
        }
        let old = self.pool.entry(s.member);
        // Counted busy across the close, as `close_locked` does.
        let old_busy = old.busy();
        if !self.stale(s) {
            let r = old.member.close_session(s.real);
            let _ = self.check(s.member, None, r);
        }
        drop(old_busy);
        old.sessions
            .fetch_sub(1, core::sync::atomic::Ordering::AcqRel);
        entry
            .sessions
            .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
        s.member = target;
        s.real = real;
        s.epoch = epoch;
        self.moves
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether member `m` can run session `s`'s journalled operation (HA
    /// mode): it has the operation's mechanism and function. True when
    /// there is none to replay.
    pub(super) fn can_take(&self, s: &Session<P::Journal>, m: usize) -> bool {
        s.journal.op.is_none_or(|o| {
            o.lost.is_some() || self.pool.entry(m).support.can_run(o.op, o.mechanism)
        })
    }

    /// Whether session `s` can move to another member with all its state:
    /// it owns no session object (those live where it is), and what it has
    /// in progress the journal can rebuild (HA mode) or it has nothing in
    /// progress (WLD mode).
    pub(super) fn movable(&self, s: &Session<P::Journal>) -> bool {
        if s.owns_objects && self.objects.owns_any(s.index) {
            return false;
        }
        if !self.ha {
            return s.ops == 0 && !s.find_active;
        }
        !s.state_restored
            && !s.lost_op
            && s.lost_find == LostSearch::No
            && s.journal.op.is_none_or(|o| o.lost.is_none())
            && s.journal.find.is_none_or(|f| f.lost.is_none())
    }

    /// HA mode: session table index `owner` made a session object that no
    /// member in service holds; if that session has not failed over yet,
    /// it fails over now, which re-creates its objects at their home.
    /// `index` is the caller's own session. Whether it did.
    ///
    /// The caller holds its own session's lock. Two session locks are held
    /// at once only here, and without a cycle: the caller waits for a
    /// session of a higher index, and only tries, for a while, one of a
    /// lower index (whose holder may be waiting for the caller's).
    pub(super) fn fail_over_owner(&self, owner: usize, index: usize) -> bool {
        let guard = if owner > index {
            Some(self.sessions.lock_index(owner))
        } else {
            (0..1 << 16).find_map(|_| {
                let g = self.sessions.try_lock_index(owner);
                if g.is_none() {
                    core::hint::spin_loop();
                }
                g
            })
        };
        let Some(mut o) = guard else {
            return false;
        };
        o.is_open() && self.stale(&o) && self.failover(&mut o).is_ok()
    }

    /// Rebuilds session state on member `m`'s session `real`: session
    /// objects in the order they were made, then the operation in progress
    /// with its Update data, then the search. An error here is a member
    /// failure; what cannot be rebuilt is marked lost instead.
    fn replay(&self, s: &mut Session<P::Journal>, m: usize, real: u64) -> Result<()> {
        let member = self.pool.member(m);
        let here = At {
            slot: s.slot,
            member: m,
            real,
            find_active: false,
        };
        let mut objects_lost = false;
        for recipe in s.journal.recipes() {
            match self.replay_recipe(here, s.index, &recipe) {
                Ok(()) => {}
                Err(e) if self.pool.failed(m, Some(real), &e) => return Err(e),
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
        // What the session made that its journal could not keep (it was
        // full): gone with the member, and said.
        if self.objects.write().remove_owned_unmapped(s.index, m) {
            objects_lost = true;
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
                // Never sent to a member that lacks its mechanism.
                None if !self.pool.entry(m).support.can_run(op.op, op.mechanism) => {
                    Err(Error::Rv(Rv::MECHANISM_INVALID))
                }
                None => self.replay_op(here, s.index, &s.journal, op),
            };
            match replayed {
                Ok(()) => {}
                Err(e) if self.pool.failed(m, Some(real), &e) => return Err(e),
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
                Err(e) if self.pool.failed(m, Some(real), &e) => return Err(e),
                Err(_) => {
                    s.journal.find_end();
                    s.lost_find = LostSearch::Untold;
                }
            }
        }
        Ok(())
    }

    fn replay_recipe(&self, here: At, index: usize, r: &Recipe<'_>) -> Result<()> {
        let member = self.pool.member(here.member);
        // A destroyed object is not re-created, nor one that is no longer
        // this session's (destroyed from another session, its entry used
        // again); of a pair, the key that is still there is.
        let mine = |h: u64| h != 0 && self.objects.read().owner(h) == Some(index);
        let (first, second) = match r.kind {
            // The object changed is found by resolve, whoever made it.
            RecipeKind::SetAttributes => (self.objects.read().kind(r.object).is_some(), false),
            _ => (mine(r.object), mine(r.object2)),
        };
        if !first && !second {
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
        let resolve = |handle: u64, invalid: Rv| self.resolve_at(here, index, handle, invalid);
        match r.kind {
            RecipeKind::Create => {
                let new = member.create_object(here.real, &r.template)?;
                remap(r.object, new);
            }
            RecipeKind::Copy => {
                let src = resolve(r.source, Rv::OBJECT_HANDLE_INVALID)?;
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
                for (keep, virt, real) in [(first, r.object, public), (second, r.object2, private)]
                {
                    if keep {
                        remap(virt, real);
                    } else {
                        // Destroyed before the failure: not made again.
                        let _ = member.destroy_object(here.real, real);
                    }
                }
            }
            RecipeKind::Derive => {
                let base = resolve(r.source, Rv::KEY_HANDLE_INVALID)?;
                let new = member.derive_key(here.real, &mech()?, base, &r.template)?;
                remap(r.object, new);
            }
            RecipeKind::Unwrap => {
                let key = resolve(r.source, Rv::UNWRAPPING_KEY_HANDLE_INVALID)?;
                let new = member.unwrap_key(here.real, &mech()?, key, r.wrapped, &r.template)?;
                remap(r.object, new);
            }
            RecipeKind::SetAttributes => {
                let target = resolve(r.object, Rv::OBJECT_HANDLE_INVALID)?;
                member.set_attributes(here.real, target, &r.template)?;
            }
        }
        Ok(())
    }

    fn replay_op(
        &self,
        here: At,
        index: usize,
        j: &Journal<P::Journal>,
        op: OpRecord,
    ) -> Result<()> {
        let member = self.pool.member(here.member);
        let mechanism = j
            .op_mechanism()
            .ok_or(Error::Rv(Rv::OPERATION_NOT_INITIALIZED))?;
        let mechanism = self.translate(here, &mechanism)?;
        let key = if op.op == Op::Digest {
            0
        } else {
            self.resolve_at(here, index, op.key, Rv::KEY_HANDLE_INVALID)?
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
}
