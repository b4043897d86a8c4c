//! Slot and token management (PKCS#11 v2.40 §5.5): in WLD and HA mode a
//! virtual slot answers for its members, as one token.

use core::sync::atomic::Ordering;

use crate::bytes::Writer;
use crate::ck::{Rv, copy_out, flags};
use crate::error::{Error, Result};
use crate::port::{Events, MechanismInfo, Member, Platform, SlotInfo, TokenInfo};

use heapless::Vec;

use crate::event::Event;

use super::{Engine, MAX_MEMBERS, Uses, VERSION};

/// The most mechanisms p11ha intersects across the members of a virtual
/// slot; a member with more is answered for by the first member alone.
const MAX_MECHANISMS: usize = 256;

impl<P: Platform> Engine<P> {
    /// `C_GetSlotList`: the ids of the virtual slots (with a token only, if
    /// `token_present`). `None` asks for the count.
    pub fn slot_list(&self, token_present: bool, out: Option<&mut [u64]>) -> Result<usize> {
        let n = self.pool.slot_count();
        let mut count = 0;
        let mut out = out;
        let mut too_small = false;
        for i in 0..n {
            if token_present && !self.token_present(i) {
                continue;
            }
            if let Some(out) = out.as_deref_mut() {
                match out.get_mut(count) {
                    Some(o) => *o = self.pool.slot(i).id,
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
        if self.is_virtual() {
            self.pool.live(slot).next().is_some()
        } else {
            let m = self.pool.only_member(slot);
            self.pool
                .member(m)
                .slot_info()
                .is_ok_and(|i| i.flags & flags::TOKEN_PRESENT != 0)
        }
    }

    /// `C_GetSlotInfo`.
    pub fn slot_info(&self, id: u64) -> Result<SlotInfo> {
        let slot = self.pool.slot_index(id)?;
        if !self.is_virtual() {
            return self.pool.member(self.pool.only_member(slot)).slot_info();
        }
        let mut description = [b' '; 64];
        let text = b"p11ha virtual slot: ";
        description[..text.len()].copy_from_slice(text);
        description[text.len()..text.len() + 32].copy_from_slice(&self.pool.slot(slot).label);
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
        let slot = self.pool.slot_index(id)?;
        if !self.is_virtual() {
            return self.pool.member(self.pool.only_member(slot)).token_info();
        }
        loop {
            let m = self
                .pool
                .live(slot)
                .next()
                .ok_or(Error::Rv(Rv::TOKEN_NOT_PRESENT))?;
            match self.check(m, None, self.pool.member(m).token_info()) {
                Ok(mut info) => {
                    let v = self.pool.slot(slot);
                    info.serial = [b' '; 16];
                    // Slot ids are below 16: the serial fits.
                    let _ = core::fmt::write(
                        &mut Writer::new(&mut info.serial),
                        format_args!("P11HA-{}", v.id),
                    );
                    info.session_count = u64::from(v.sessions.load(Ordering::Acquire));
                    info.rw_session_count = u64::from(v.rw_sessions.load(Ordering::Acquire));
                    let cap = self.sessions.capacity() as u64;
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
        let slot = self.pool.slot_index(id)?;
        if !self.is_virtual() {
            return self
                .pool
                .member(self.pool.only_member(slot))
                .mechanism_list(out);
        }
        let mut common = [0u64; MAX_MECHANISMS];
        let mut n = None;
        let mut other = [0u64; MAX_MECHANISMS];
        for m in self.pool.live(slot) {
            let member = self.pool.member(m);
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
        let slot = self.pool.slot_index(id)?;
        if !self.is_virtual() {
            return self
                .pool
                .member(self.pool.only_member(slot))
                .mechanism_info(mechanism);
        }
        let mut merged: Option<MechanismInfo> = None;
        for m in self.pool.live(slot) {
            match self.check(m, None, self.pool.member(m).mechanism_info(mechanism)) {
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

    /// `C_InitToken`. In WLD and HA mode every member in service is
    /// initialised, with the same SO PIN and label, when the application
    /// has no session on the slot (`CKR_SESSION_EXISTS` otherwise, as on one
    /// token): p11ha's anchors are closed first (a token refuses while any
    /// session of the application is open) and opened again after. The
    /// first member's refusal (a wrong SO PIN) is the answer and nothing
    /// else is touched; a member that refuses what the first accepted is
    /// dropped as inconsistent. The label must stay the slot's: the virtual
    /// slot is the tokens that carry it. A member out of service missed the
    /// initialisation, and needs a sync.
    pub fn init_token(&self, id: u64, so_pin: Option<&[u8]>, label: &[u8; 32]) -> Result<()> {
        const FUNCTION: &str = "C_InitToken";
        let slot = self.pool.slot_index(id)?;
        if !self.is_virtual() {
            return self
                .pool
                .member(self.pool.only_member(slot))
                .init_token(so_pin, label);
        }
        let vslot = self.pool.slot(slot);
        let mut login = self.logins.lock(slot);
        if vslot.sessions.load(Ordering::Acquire) != 0 {
            return Err(Error::Rv(Rv::SESSION_EXISTS));
        }
        if label != &vslot.label {
            let rv = Rv::ARGUMENTS_BAD;
            self.events.event(&Event::Refused {
                function: FUNCTION,
                why: "the label is not the virtual slot's (ET_PTKC_WLD_SLOT_<n>), which \
                      its HSMs must keep",
                rv,
            });
            return Err(Error::Rv(rv));
        }
        let members: Vec<usize, MAX_MEMBERS> = self.pool.live(slot).collect();
        if members.is_empty() {
            return Err(Error::Rv(Rv::TOKEN_NOT_PRESENT));
        }
        for &m in &members {
            login.close_anchor(&self.pool, m);
        }
        login.forget();
        let mut answer = Err(Error::Rv(Rv::DEVICE_ERROR));
        for &m in &members {
            let entry = self.pool.entry(m);
            let _busy = entry.busy();
            let r = entry.member.init_token(so_pin, label);

            match self.check(m, None, r) {
                Ok(()) => answer = Ok(()),
                Err(_) if !self.member_up(m) => {}
                Err(e) if answer.is_err() => {
                    // The first answer is the application's: nothing else
                    // was touched.
                    answer = Err(e);
                    break;
                }
                Err(e) => self.inconsistent(m, FUNCTION, e.rv()),
            }
        }
        if answer.is_ok() {
            // Every object of the token is gone, on every member.
            self.objects.write().remove_slot(slot);
        }
        for m in self.pool.live(slot).collect::<Vec<usize, MAX_MEMBERS>>() {
            // Best effort: a member that refuses gets one when needed.
            let _ = login.anchor(&self.pool, m);
        }
        if answer.is_ok() {
            drop(login);
            self.write_done(slot);
        }
        answer
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
        if self.is_virtual() {
            let login = self.logins.lock(slot);
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
        if self.is_virtual() {
            let mut login = self.logins.lock(slot);
            self.on_other_members(&login, slot, own, "C_SetPIN", |member, session| {
                member.set_pin(session, old, new)
            });
            // C_SetPIN changes the logged-in user's PIN, the SO's included.
            login.pin_changed(new);
        }
        Ok(())
    }
}
