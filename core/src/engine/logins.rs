//! Logins: per virtual slot, whether the application is logged in, the PIN
//! kept to log in members that serve it later, and each member's *anchor*,
//! p11ha's own session that holds the member's login.
//!
//! Invariants:
//! - a PIN is kept only while the application is logged in on the slot; it
//!   is zeroised at logout, when the application's last session on the slot
//!   closes, and at `C_Finalize` ([`Login::forget`]); a failed `C_Login`
//!   keeps nothing;
//! - an anchor is valid only in the epoch of its member it was opened in:
//!   one from before the member's last failure died with it
//!   ([`Login::has_anchor`]); a new anchor is not logged in;
//! - anchors stay open as long as the member serves: a token with no session
//!   left may renumber its objects (SoftHSM does, as PKCS#11 allows), which
//!   would make p11ha's handle mappings wrong.
//!
//! Lock order: a slot's login lock is taken after a session's lock and
//! before the object table's, and is held while sessions are opened or
//! closed on the slot, while the application logs in or out, and while an
//! anchor is used: the members' login state hangs on which sessions exist.

use crate::ck::{Rv, flags};
use crate::error::{Error, Result};
use crate::journal::Lost;
use crate::port::{Member, Platform, RawLock};
use crate::secret::Pin;
use crate::sync::{Guard, Mutex, const_unless_loom};

use super::MAX_MEMBERS;
use super::pool::Pool;

/// Storage for one virtual slot's login state.
pub struct LoginCell<L> {
    login: Mutex<L, Login>,
}

impl<L: RawLock> LoginCell<L> {
    const_unless_loom! {
        /// The state of a slot no one is logged in on, guarded by `lock`.
        pub fn new(lock: L) -> Self {
            LoginCell {
                login: Mutex::new(lock, Login::new()),
            }
        }
    }
}

/// The application's login on a virtual slot (WLD and HA mode).
pub(super) struct Login {
    /// The user logged in (`CKU_USER`, `CKU_SO`), if any.
    pub(super) user: Option<u64>,
    pub(super) pin: Pin,
    /// The login used the protected authentication path (no PIN).
    pub(super) protected: bool,
    /// The PIN could not be kept (longer than p11ha keeps).
    pub(super) pin_lost: bool,
    /// Per member index: its anchor (0: none), and the member's epoch when
    /// it was opened.
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

    /// Member `m`'s anchor, if it has one that is still alive.
    pub(super) fn anchor_of<P: Platform>(&self, pool: &Pool<P>, m: usize) -> Option<u64> {
        self.has_anchor(pool, m).then_some(self.anchors[m])
    }

    /// Whether member `m` has an anchor that is still alive.
    pub(super) fn has_anchor<P: Platform>(&self, pool: &Pool<P>, m: usize) -> bool {
        self.anchors[m] != 0 && self.anchor_epochs[m] == pool.entry(m).epoch()
    }

    /// The anchor of member `m`, opened if needed (read/write, so that an
    /// SO login is not refused for a read-only session).
    pub(super) fn anchor<P: Platform>(&mut self, pool: &Pool<P>, m: usize) -> Result<u64> {
        if let Some(a) = self.anchor_of(pool, m) {
            return Ok(a);
        }
        let entry = pool.entry(m);
        let epoch = entry.epoch();
        self.anchors[m] = 0;
        // A new anchor is not logged in, whatever the old one was.
        self.logged_in &= !(1 << m);
        let rw = entry
            .member
            .open_session(flags::SERIAL_SESSION | flags::RW_SESSION);
        let a = match rw {
            Err(Error::Rv(Rv::TOKEN_WRITE_PROTECTED)) => {
                entry.member.open_session(flags::SERIAL_SESSION)?
            }
            r => r?,
        };
        self.anchors[m] = a;
        self.anchor_epochs[m] = epoch;
        Ok(a)
    }

    /// Closes member `m`'s anchor (at `C_Finalize`), if it has one alive.
    pub(super) fn close_anchor<P: Platform>(&mut self, pool: &Pool<P>, m: usize) {
        if let Some(a) = self.anchor_of(pool, m) {
            let _ = pool.member(m).close_session(a);
        }
        self.anchors[m] = 0;
        self.logged_in &= !(1 << m);
    }

    /// Whether member `m`'s anchor is logged in as the application is.
    pub(super) fn logged_in<P: Platform>(&self, pool: &Pool<P>, m: usize) -> bool {
        self.has_anchor(pool, m) && self.logged_in & (1 << m) != 0
    }

    /// Member `m`'s anchor is logged in now.
    pub(super) fn set_logged_in(&mut self, m: usize) {
        self.logged_in |= 1 << m;
    }

    /// The application logged in as `user` with `pin` (`None`: the protected
    /// authentication path). The PIN is kept for the members that serve the
    /// slot later; what makes that impossible is returned.
    pub(super) fn begin(&mut self, user: u64, pin: Option<&[u8]>) -> Option<Lost> {
        self.user = Some(user);
        self.protected = pin.is_none();
        self.pin_lost = !self.pin.set(pin.unwrap_or_default());
        if self.protected {
            Some(Lost::ProtectedLogin)
        } else if self.pin_lost {
            Some(Lost::PinTooLong)
        } else {
            None
        }
    }

    /// The PIN to log a member in with (`None`: the protected path).
    pub(super) fn kept_pin(&self) -> Option<&[u8]> {
        (!self.protected).then(|| self.pin.get())
    }

    /// The logged-in user's PIN changed to `new` (`C_SetPIN`).
    pub(super) fn pin_changed(&mut self, new: Option<&[u8]>) {
        if self.user.is_some() && !self.protected {
            self.pin_lost = !self.pin.set(new.unwrap_or_default());
        }
    }

    /// The application is logged out: nothing of its login is kept, the
    /// PIN zeroised. The anchors stay open, logged out.
    pub(super) fn forget(&mut self) {
        self.user = None;
        self.logged_in = 0;
        self.pin.clear();
        self.protected = false;
        self.pin_lost = false;
    }
}

/// See the module documentation.
pub(super) struct Logins<P: Platform> {
    cells: P::Store<LoginCell<P::Lock>>,
}

impl<P: Platform> Logins<P> {
    pub(super) fn new(cells: P::Store<LoginCell<P::Lock>>) -> Self {
        Logins { cells }
    }

    /// The login state of slot `slot`, locked.
    pub(super) fn lock(&self, slot: usize) -> Guard<'_, P::Lock, Login> {
        self.cells[slot].login.lock()
    }
}
