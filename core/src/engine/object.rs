//! Object management (PKCS#11 v2.40 §5.7): objects made, changed,
//! destroyed and searched for, with virtual handles; in HA mode each session
//! object's recipe is journalled, and a token object's change reaches every
//! member.

use crate::ck::Rv;
use crate::error::Result;
use crate::journal::{Lost, NewRecipe, RecipeKind};
use crate::port::{Attr, AttrOut, Member, Platform};

use super::objects::{find_unique, identity_with, token_attribute};
use super::replicate::{Remake, values_before};
use super::sessions::{LostSearch, Session};
use super::{Engine, Uses};
use crate::handles::ObjectKind;

/// Attributes whose value tells a key apart (reading one of a generated key
/// counts as using it: a re-generated key would show another value).
const VALUE_ATTRIBUTES: [u64; 6] = [0x11, 0x90, 0x120, 0x122, 0x129, 0x181];

impl<P: Platform> Engine<P> {
    /// The virtual handle for `real`, a handle the session's member returned
    /// in session `s`. `owner`: the session table index, when the session
    /// just made the object. `session`: the object is known to be a session
    /// object (its template said so): its identity is not read.
    pub(super) fn adopt(
        &self,
        s: &mut Session<P::Journal>,
        owner: Option<usize>,
        real: u64,
        session: bool,
    ) -> Result<u64> {
        let (h, owned) = self
            .objects
            .adopt(&self.pool, self.at(s), owner, real, session)?;
        s.owns_objects |= owned;
        Ok(h)
    }

    /// Adopts an object the session just made (`session`: as a session
    /// object, which its template said it is); if p11ha cannot keep it, the
    /// object is destroyed again so that nothing unreachable is left behind.
    pub(super) fn adopt_new(
        &self,
        s: &mut Session<P::Journal>,
        index: usize,
        real: u64,
        session: bool,
    ) -> Result<u64> {
        match self.adopt(s, Some(index), real, session) {
            Ok(h) => Ok(h),
            Err(e) => {
                let _ = self.pool.member(s.member).destroy_object(s.real, real);
                Err(e)
            }
        }
    }

    /// HA mode: journals how session object(s) were made.
    pub(super) fn journal_object(&self, s: &mut Session<P::Journal>, new: NewRecipe<'_>) {
        if !self.ha || !self.objects.is_session_object(new.object) {
            return;
        }
        if s.journal.recipe(&new) {
            return;
        }
        // Full: drop what is dead, and what no longer is this session's
        // (destroyed from another session), then try again.
        let index = s.index;
        let compacted = {
            let objects = self.objects.read();
            s.journal
                .compact_recipes(|o| objects.owner(o) == Some(index))
        };
        if !compacted || !s.journal.recipe(&new) {
            self.lose(Some(Lost::ObjectNotJournalled));
        }
    }

    /// HA mode: `handle` was used in a cryptographic operation (or its value
    /// read); if a generated key stands behind it, that key can no longer be
    /// re-generated in its place.
    pub(super) fn used(&self, handle: u64) {
        if self.ha && self.objects.write().mark_used(handle) {
            self.lose(Some(Lost::RandomKeyUsed));
        }
    }

    /// `C_CreateObject`.
    pub fn create_object(&self, handle: u64, template: &[Attr<'_>]) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let token = token_attribute(template) == Some(true);
                self.home_check(s, !token)?;
                let mut login = (token && self.is_virtual()).then(|| self.logins.lock(s.slot));
                let real = m.create_object(s.real, template)?;
                let h = self.adopt_new(s, index, real, !token)?;
                if let Some(login) = login.as_mut() {
                    let remake = Some(Remake::Create(template));
                    self.replicate_new(
                        login,
                        s.slot,
                        s.member,
                        s.real,
                        "C_CreateObject",
                        h,
                        real,
                        remake,
                    )?;
                }
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
                let source = self.objects.token_identity(object);
                let (session_object, token) = match token_attribute(template) {
                    Some(token) => (!token, token),
                    None => (self.objects.is_session_object(object), source.is_some()),
                };
                self.home_check(s, session_object)?;
                let mut login = (token && self.is_virtual()).then(|| self.logins.lock(s.slot));
                let real = m.copy_object(s.real, src, template)?;
                let h = self.adopt_new(s, index, real, session_object)?;
                if let Some(login) = login.as_mut() {
                    let remake = source.as_ref().map(|id| Remake::Copy(id, template));
                    self.replicate_new(
                        login,
                        s.slot,
                        s.member,
                        s.real,
                        "C_CopyObject",
                        h,
                        real,
                        remake,
                    )?;
                }
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
    /// every member that holds it, so that no member shows it again; the
    /// slot's login lock is held from the first member's call to the last,
    /// so that token writes reach every member in one order.
    pub fn destroy_object(&self, handle: u64, object: u64) -> Result<()> {
        let identity = self.objects.token_identity(object);
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let real = self.real_object(s, object, Rv::OBJECT_HANDLE_INVALID)?;
                let login = identity.is_some().then(|| self.logins.lock(s.slot));
                m.destroy_object(s.real, real)?;
                if self.ha {
                    s.journal.forget_object(object);
                }
                if let (Some(login), Some(identity)) = (&login, &identity) {
                    self.on_other_members(
                        login,
                        s.slot,
                        s.member,
                        "C_DestroyObject",
                        |member, session| match find_unique(member, session, identity)? {
                            Some(real) => member.destroy_object(session, real),
                            None => Ok(()),
                        },
                    );
                    self.write_done(s.slot);
                }
                self.objects.write().remove(object);
                Ok(())
            },
            |_, _| {},
        )
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
    /// on every member that holds it, in one order (as `C_DestroyObject`);
    /// a change of `CKA_ID` or `CKA_LABEL` changes its identity. A session
    /// object's change is journalled.
    pub fn set_attributes(&self, handle: u64, object: u64, template: &[Attr<'_>]) -> Result<()> {
        let identity = self.objects.token_identity(object);
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let real = self.real_object(s, object, Rv::OBJECT_HANDLE_INVALID)?;
                let login = identity.is_some().then(|| self.logins.lock(s.slot));
                // What a token object's change replaces, to undo it if
                // another member refuses it.
                let mut buf = [0u8; 1024];
                let before = match identity {
                    Some(_) => values_before(m, s.real, real, template, &mut buf),
                    None => None,
                };
                m.set_attributes(s.real, real, template)?;
                self.journal_object(
                    s,
                    NewRecipe::new(RecipeKind::SetAttributes, object, template),
                );
                let (Some(login), Some(identity)) = (&login, &identity) else {
                    return Ok(());
                };
                self.replicate_change(
                    login,
                    s.slot,
                    s.member,
                    s.real,
                    real,
                    identity,
                    template,
                    before.as_deref(),
                )?;
                let new_identity = identity_with(identity, template);
                if new_identity.as_ref() != Some(identity) {
                    let mut objects = self.objects.write();
                    // Only the mapping on the member that made the change is
                    // sure to be current; the rest are found again by the
                    // new identity.
                    objects.remove(object);
                    if let Some(identity) = new_identity {
                        // Best effort: a failure only means the next use
                        // finds it.
                        let _ = objects.insert(s.slot, ObjectKind::Token(identity), s.member, real);
                    }
                }
                Ok(())
            },
            |_, _| {},
        )
    }

    /// `C_FindObjectsInit`.
    pub fn find_init(&self, handle: u64, template: &[Attr<'_>]) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                // A search that may match session objects runs where they are.
                self.home_check(s, token_attribute(template) != Some(true))?;
                m.find_init(s.real, template)?;
                s.find_active = true;
                s.lost_find = LostSearch::No;
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
    ///
    /// The journal lists what the application received, nothing else: the
    /// handles of an attempt are journalled only once every member call of
    /// that attempt succeeded. A member that fails in the middle of one (at
    /// `C_FindObjects`, or while p11ha reads the identity of a result to
    /// adopt it) fails the attempt; the call then runs again on the next
    /// member, which must return those handles, so they must not be listed
    /// as returned.
    pub fn find(&self, handle: u64, out: &mut [u64]) -> Result<usize> {
        self.call(
            handle,
            Uses::Find,
            |m, s, _| {
                let resumed = self.ha && s.journal.find.is_some_and(|f| f.resumed);
                let n = if resumed {
                    self.find_resumed(m, s, out)?
                } else {
                    let n = m.find(s.real, out)?.min(out.len());
                    for h in out[..n].iter_mut() {
                        *h = self.adopt(s, None, *h, false)?;
                    }
                    n
                };
                if self.ha {
                    for &h in &out[..n] {
                        self.lose(s.journal.find_record(h));
                    }
                }
                Ok(n)
            },
            |_, _| {},
        )
    }

    /// One attempt of `C_FindObjects` on a search restarted by a failover:
    /// the member's results, less those the application already received,
    /// until `out` is full or the member has no more.
    fn find_resumed(
        &self,
        m: &P::Member,
        s: &mut Session<P::Journal>,
        out: &mut [u64],
    ) -> Result<usize> {
        let mut filled = 0;
        let mut batch = [0u64; 16];
        while filled < out.len() {
            let want = (out.len() - filled).min(batch.len());
            let n = m.find(s.real, &mut batch[..want])?.min(want);
            if n == 0 {
                break;
            }
            for &real in &batch[..n] {
                let h = self.adopt(s, None, real, false)?;
                // Not journalled yet, so also checked against this attempt.
                if !s.journal.find_returned(h) && !out[..filled].contains(&h) {
                    out[filled] = h;
                    filled += 1;
                }
            }
        }
        Ok(filled)
    }

    /// `C_FindObjectsFinal`.
    pub fn find_final(&self, handle: u64) -> Result<()> {
        self.call(
            handle,
            Uses::FindFinal,
            |m, s, _| {
                if s.lost_find != LostSearch::No {
                    // The search died with its member; it ends here.
                    s.lost_find = LostSearch::No;
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
}
