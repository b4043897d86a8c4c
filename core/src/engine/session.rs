//! Session management and login (PKCS#11 v2.40 §5.6): sessions placed on
//! members, and in WLD and HA mode one login held on every member of the
//! slot through its anchor.

use core::sync::atomic::Ordering;

use heapless::Vec;

use crate::ck::{Rv, flags, user};
use crate::error::{Error, Result};
use crate::journal::Lost;
use crate::port::{Member, Platform, SessionInfo};

use super::logins::Login;
use super::sessions::{Session, SessionGuard};
use super::{Engine, Function, MAX_MEMBERS, Uses};

impl<P: Platform> Engine<P> {
    /// `C_OpenSession`. In WLD and HA mode the session goes to the member in
    /// service with the fewest sessions, ties broken at random.
    pub fn open_session(&self, id: u64, session_flags: u64) -> Result<u64> {
        let slot = self.pool.slot_index(id)?;
        let index = self.sessions.claim()?;
        let r = self.open_on(slot, index, session_flags);
        if r.is_err() {
            self.sessions.release(index);
        }
        r
    }

    fn open_on(&self, slot: usize, index: usize, session_flags: u64) -> Result<u64> {
        let mut state = self.sessions.lock_index(index);
        if !self.is_virtual() {
            let m = self.pool.only_member(slot);
            let epoch = self.pool.entry(m).epoch();
            let real = self.pool.member(m).open_session(session_flags)?;
            return Ok(self.place(&mut state, index, slot, (m, epoch), real, session_flags));
        }
        let mut login = self.logins.lock(slot);
        loop {
            let m = self.pool.pick(slot)?;
            let member = self.pool.member(m);
            // Read before the open: a member that fails while it opens the
            // session (and is taken out by another call) leaves this session
            // stale, to fail over, instead of current on a real session the
            // member may no longer have, or may give to another session
            // after it reconnects (the model of failover found this). And
            // the member must still be in service after the read: taken out
            // between the pick and the read, its new epoch would be read,
            // and recovery could close the session once opened, then put
            // the member back at that epoch (loom found this).
            let epoch = self.pool.entry(m).epoch();
            if !self.member_up(m) {
                continue;
            }
            let opened = member.open_session(session_flags);
            match self.check(m, None, opened) {
                Ok(real) => {
                    if let Err(e) = self.ensure_logged_in(&mut login, m) {
                        let _ = member.close_session(real);
                        if !self.member_up(m) {
                            continue;
                        }
                        return Err(e);
                    }
                    let vslot = self.pool.slot(slot);
                    vslot.sessions.fetch_add(1, Ordering::AcqRel);
                    if session_flags & flags::RW_SESSION != 0 {
                        vslot.rw_sessions.fetch_add(1, Ordering::AcqRel);
                    }
                    return Ok(self.place(
                        &mut state,
                        index,
                        slot,
                        (m, epoch),
                        real,
                        session_flags,
                    ));
                }
                Err(_) if !self.member_up(m) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens session `index` on member `member`'s session `real`, which was
    /// opened at the member's epoch `epoch` (read before the open).
    fn place(
        &self,
        state: &mut Session<P::Journal>,
        index: usize,
        slot: usize,
        (member, epoch): (usize, u32),
        real: u64,
        session_flags: u64,
    ) -> u64 {
        let entry = self.pool.entry(member);
        let handle = state.open(index, slot, member, real, session_flags, epoch);
        entry.sessions.fetch_add(1, Ordering::AcqRel);
        handle
    }

    /// `C_CloseSession`. The virtual session is closed whatever the member
    /// answers: a member that failed keeps its real session.
    pub fn close_session(&self, handle: u64) -> Result<()> {
        let (index, s) = self.sessions.lock(handle)?;
        self.close_locked(index, s);
        Ok(())
    }

    fn close_locked(&self, index: usize, mut s: SessionGuard<'_, P>) {
        if !s.orphan {
            let entry = self.pool.entry(s.member);
            // Counted before the staleness check, as every call is: recovery
            // must not close the member's sessions under this close (the
            // model of failover found it uncounted: `close_counted_busy`).
            let busy = entry.busy();
            if !self.stale(&s) {
                let r = entry.member.close_session(s.real);
                let _ = self.check(s.member, None, r);
            }
            drop(busy);
            entry.sessions.fetch_sub(1, Ordering::AcqRel);
        }
        s.close();
        let (slot, rw, owned) = (s.slot, s.flags & flags::RW_SESSION != 0, s.owns_objects);
        drop(s);
        if owned {
            self.objects.write().remove_owned_by(index);
        }
        self.sessions.release(index);
        if self.is_virtual() {
            let vslot = self.pool.slot(slot);
            let mut login = self.logins.lock(slot);
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
        let slot = self.pool.slot_index(id)?;
        self.close_where(|s| s.slot == slot);
        Ok(())
    }

    /// Closes every session (at `C_Finalize`), the anchors included: a
    /// module the application also uses itself stays initialised after
    /// p11ha's `C_Finalize`, and must keep no session p11ha opened.
    pub fn close_everything(&self) {
        self.close_where(|_| true);
        for slot in 0..self.pool.slot_count() {
            let mut login = self.logins.lock(slot);
            for m in 0..self.member_count() {
                login.close_anchor(&self.pool, m);
            }
            // Closing the last session logged the application out and
            // zeroised the PIN; whatever happened, none outlives C_Finalize.
            login.forget();
        }
    }

    fn close_where(&self, which: impl Fn(&Session<P::Journal>) -> bool) {
        for index in self.sessions.claimed() {
            let s = self.sessions.lock_index(index);
            if s.is_open() && which(&s) {
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
                info.slot = self.pool.slot(s.slot).id;
                Ok(info)
            },
            |_, _| {},
        )
    }

    /// `C_GetOperationState`.
    pub fn operation_state(&self, handle: u64, mut out: Option<&mut [u8]>) -> Result<usize> {
        self.call_needing(
            handle,
            Some(Function::GetOperationState),
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
        self.call_needing(
            handle,
            Some(Function::SetOperationState),
            Uses::Nothing,
            |m, s, _| {
                let enc = self.optional_key(s, encryption_key)?;
                let auth = self.optional_key(s, authentication_key)?;
                m.set_operation_state(s.real, state, enc, auth)?;
                if self.ha {
                    s.journal.op_end();
                    s.state_restored = true;
                    self.lose(Some(Lost::SetOperationState));
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

    // ---- login --------------------------------------------------------------

    /// `C_Login`. In WLD and HA mode the application is logged in on every
    /// member of the slot, each through an anchor session that holds the
    /// login for as long as the application has a session on the slot; the
    /// PIN is kept (zeroised at logout) to log in members that take sessions
    /// later. A wrong PIN is the first member's answer; nothing is tried
    /// elsewhere, and a failed login is never repeated.
    pub fn login(&self, handle: u64, user_type: u64, pin: Option<&[u8]>) -> Result<()> {
        if !self.is_virtual() || user_type == user::CONTEXT_SPECIFIC {
            return self.call(
                handle,
                Uses::Nothing,
                |m, s, _| m.login(s.real, user_type, pin),
                |s, r| {
                    if self.ha && r.is_ok() {
                        self.lose(s.journal.op_lose(Lost::ContextLogin));
                    }
                },
            );
        }
        let (_, s) = self.sessions.lock(handle)?;
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
        let mut login = self.logins.lock(slot);
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
        for m in self.pool.live(slot).filter(|&m| m != own) {
            let _ = order.push(m);
        }
        let mut answered = None;
        for &m in &order {
            let anchor = match login.anchor(&self.pool, m) {
                Ok(a) => a,
                Err(e) if self.pool.failed(m, None, &e) => {
                    self.take_out(m, e.rv());
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.pool.member(m).login(anchor, user_type, pin) {
                Ok(()) | Err(Error::Rv(Rv::USER_ALREADY_LOGGED_IN)) => {
                    answered = Some(m);
                    login.set_logged_in(m);
                    break;
                }
                Err(e) if self.pool.failed(m, Some(anchor), &e) => {
                    self.take_out(m, e.rv());
                }
                Err(e) => return Err(e),
            }
        }
        let first = answered.ok_or(Error::Rv(Rv::DEVICE_ERROR))?;
        drop(s);
        let lost = login.begin(user_type, pin);
        if self.ha {
            self.lose(lost);
        }
        for &m in order.iter().filter(|&&m| m != first) {
            let _ = self.log_in_member(&mut login, m);
        }
        Ok(())
    }

    /// Logs member `m` in with the kept PIN, through its anchor. A member
    /// that refuses what another accepted is inconsistent and is dropped.
    pub(super) fn log_in_member(&self, login: &mut Login, m: usize) -> Result<()> {
        let Some(user_type) = login.user else {
            return Ok(());
        };
        if login.pin_lost {
            // Nothing to log in with: the member cannot serve this login.
            return Err(Error::Rv(Rv::USER_NOT_LOGGED_IN));
        }
        let anchor = login.anchor(&self.pool, m);
        let anchor = self.check(m, None, anchor)?;
        let answer = self
            .pool
            .member(m)
            .login(anchor, user_type, login.kept_pin());
        match self.check(m, Some(anchor), answer) {
            Ok(()) | Err(Error::Rv(Rv::USER_ALREADY_LOGGED_IN)) => {
                login.set_logged_in(m);
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
    pub(super) fn ensure_logged_in(&self, login: &mut Login, m: usize) -> Result<()> {
        if login.user.is_some() && !login.logged_in(&self.pool, m) {
            self.log_in_member(login, m)?;
        }
        Ok(())
    }

    /// The application is logged out of `slot` (`C_Logout`, or its last
    /// session closed): every member in service logs out too, through its
    /// anchor, which stays open.
    fn release_anchors(&self, slot: usize, login: &mut Login) {
        if login.user.is_some() {
            // A token may renumber its private objects at logout (SoftHSM
            // does): token objects are found again by identity.
            let mask = self.pool.slot(slot).member_mask();
            let mut objects = self.objects.write();
            for m in (0..MAX_MEMBERS).filter(|i| mask & (1 << i) != 0) {
                objects.forget_token_objects(m);
            }
            drop(objects);
            let members: Vec<usize, MAX_MEMBERS> = self.pool.live(slot).collect();
            for m in members {
                if let Some(a) = login.anchor_of(&self.pool, m) {
                    match self.pool.member(m).logout(a) {
                        Ok(()) | Err(Error::Rv(Rv::USER_NOT_LOGGED_IN)) => {}
                        Err(e) => {
                            let _ = self.check(m, Some(a), Err::<(), _>(e));
                        }
                    }
                }
            }
        }
        login.forget();
    }

    /// `C_Logout`. In WLD and HA mode: on every member, and the kept PIN is
    /// zeroised.
    pub fn logout(&self, handle: u64) -> Result<()> {
        if !self.is_virtual() {
            return self.call(handle, Uses::Nothing, |m, s, _| m.logout(s.real), |_, _| {});
        }
        let (_, s) = self.sessions.lock(handle)?;
        let slot = s.slot;
        drop(s);
        let mut login = self.logins.lock(slot);
        if login.user.is_none() {
            return Err(Error::Rv(Rv::USER_NOT_LOGGED_IN));
        }
        self.release_anchors(slot, &mut login);
        Ok(())
    }

    /// Repeats a token-wide change on every other member in service of
    /// `slot`, through its anchor session or a short-lived read/write one.
    /// A member that refuses what `own` accepted is dropped as inconsistent.
    /// The caller holds the slot's login lock (`login`), so no anchor is
    /// closed while it is in use here.
    pub(super) fn on_other_members(
        &self,
        login: &Login,
        slot: usize,
        own: usize,
        function: &str,
        f: impl Fn(&P::Member, u64) -> Result<()>,
    ) {
        let members: Vec<usize, MAX_MEMBERS> = self.pool.live(slot).collect();
        for m in members.into_iter().filter(|&m| m != own) {
            let member = self.pool.member(m);
            let r = match login.anchor_of(&self.pool, m) {
                Some(a) => f(member, a),
                None => self.pool.with_temp_session(m, |s| f(member, s)),
            };
            match self.check(m, None, r) {
                Ok(()) => {}
                Err(_) if !self.member_up(m) => {}
                Err(e) => self.inconsistent(m, function, e.rv()),
            }
        }
    }
}
