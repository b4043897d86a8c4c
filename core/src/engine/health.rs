//! Members taken out of service and brought back: the engine's side of the
//! pool's health, where a change of a member's health reaches the object
//! table (a member's real handles die with it) and the logins (a recovered
//! member is logged in again before it takes sessions).

use crate::ck::Rv;
use crate::error::Result;
use crate::event::Event;
use crate::port::{Clock, Events, Member, Platform};

use super::{Engine, MAX_MEMBERS};

impl<P: Platform> Engine<P> {
    /// Passes a member's result on, taking the member out of service first
    /// if the result says it is gone (WLD and HA mode).
    pub(super) fn check<T>(&self, m: usize, session: Option<u64>, result: Result<T>) -> Result<T> {
        if let Err(e) = &result
            && self.is_virtual()
            && self.pool.failed(m, session, e)
        {
            self.take_out(m, e.rv());
        }
        result
    }

    /// Takes member `m`, which failed answering `rv`, out of service (once):
    /// in HA mode until its recovery, in WLD mode for good. Its real handles
    /// are forgotten.
    pub(super) fn take_out(&self, m: usize, rv: Rv) {
        if self
            .pool
            .take_out(m, rv, &self.events, || self.clock.now_ms())
        {
            self.objects.write().forget_member(m);
        }
    }

    /// Takes member `m` out for good: `function` answered `rv` where the
    /// other members succeeded, so it no longer holds what they hold.
    pub(super) fn inconsistent(&self, m: usize, function: &str, rv: Rv) {
        if self
            .pool
            .take_out_inconsistent(m, function, rv, &self.events)
        {
            self.objects.write().forget_member(m);
        }
    }

    /// A token write on `slot` is done: the members out of service missed
    /// it, and are said to need a sync (once each).
    pub(super) fn write_done(&self, slot: usize) {
        let members = self.pool.live(slot).fold(0u32, |a, m| a | 1 << m);
        self.events.event(&Event::TokenWritten {
            slot: self.pool.slot(slot).id,
            members,
        });
        let marked = self.pool.missed(slot);
        for m in (0..MAX_MEMBERS).filter(|i| marked & (1 << i) != 0) {
            self.events.event(&Event::NeedsSync {
                hsm_idx: m,
                hsm_slot_id: self.pool.member(m).slot_id(),
            });
        }
    }

    /// Holds member `index` out of service until it is synced: the platform
    /// knows that it missed token writes (its durable state says so).
    pub fn hold_out_for_sync(&self, index: usize) {
        if index >= self.member_count() {
            return;
        }
        if self.pool.hold_out(index) {
            self.objects.write().forget_member(index);
        }
        self.events.event(&Event::NeedsSync {
            hsm_idx: index,
            hsm_slot_id: self.pool.member(index).slot_id(),
        });
    }

    /// Whether member `index` missed token writes and waits for a sync.
    pub fn member_needs_sync(&self, index: usize) -> bool {
        index < self.member_count() && self.pool.needs_sync(index)
    }

    /// Whether a failed member's recovery is due at `now` (HA mode). Cheap
    /// when no member is failed: one atomic load.
    pub fn recovery_due(&self, now: u64) -> bool {
        self.pool.recovery_due(now)
    }

    /// Tries to bring back every failed member whose delay has passed: it
    /// is reconnected (the adapter's business); if its token answers with
    /// the slot's label, the sessions p11ha abandoned there are closed and
    /// it takes new sessions again. A member with a call still in flight
    /// (one that hung when it failed) is left for the next try, as is one
    /// that does not come back. Returns how many came back.
    pub fn recover(&self, now: u64) -> usize {
        let mut back = 0;
        for m in self.pool.due(now) {
            if self.pool.in_flight(m) {
                continue;
            }
            if self.pool.needs_sync(m) {
                // Said when it missed the write; it waits for a sync.
                self.pool.unschedule(m);
                continue;
            }
            let entry = self.pool.entry(m);
            let label = self.pool.slot(entry.slot).label;
            let answer = entry
                .member
                .reconnect()
                .and_then(|()| entry.member.token_info());
            if !matches!(answer, Ok(info) if info.label == label) {
                continue;
            }
            // Anchors are only used under this lock: none is in use. Token
            // writes hold it too: none is missed between the check above
            // and the member's return.
            let mut login = self.logins.lock(entry.slot);
            if self.pool.needs_sync(m) {
                continue;
            }
            // The sessions p11ha abandoned go, and with them the handle
            // numbers the member gave its objects.
            let cleaned = entry.member.close_all_sessions().and_then(|()| {
                self.objects.write().forget_member(m);
                login.anchor(&self.pool, m)?;
                match login.user {
                    Some(_) => self.log_in_member(&mut login, m),
                    None => Ok(()),
                }
            });
            if cleaned.is_ok() {
                // Said before the member is back in service: whoever sees
                // it in service finds the line written, and its next
                // failure's line comes after this one.
                self.events.event(&Event::MemberRecovered {
                    hsm_idx: m,
                    hsm_slot_id: entry.member.slot_id(),
                });
                self.pool.put_back(m);
                back += 1;
            }
        }
        self.pool.settle();
        back
    }
}
