//! Objects: the virtual object table (WLD and HA mode), and how a virtual
//! handle becomes a member's real handle and back.
//!
//! Invariants:
//! - one object has one virtual handle, whichever members serve it: a token
//!   object found on two members gets one handle, matched by its identity
//!   (class, `CKA_ID`, `CKA_LABEL`, key type);
//! - a member's real handles are remembered only while they are valid: all
//!   of a member's mappings are forgotten when it fails or comes back, and
//!   its token objects' at a logout (a token may renumber its private
//!   objects then); a token object is found again by identity when it is
//!   next used there;
//! - a session object belongs to the session that made it and dies with it,
//!   and every session of the application can use it (PKCS#11 v2.40 §4.4):
//!   all of a slot's session objects live on one member, the slot's *home*
//!   (the table records it); a session that needs one moves there first
//!   ([`Error::Elsewhere`] asks the engine to), and a session object made on
//!   another member while the home is in service is destroyed and made
//!   again at home;
//! - in HA mode a generated key's *root* records whether the key was used,
//!   which decides whether a failover may re-generate it.
//!
//! Lock order: the table's read-write lock is taken after session and login
//! locks, and never held across a member call.

use heapless::Vec;

use crate::ck::{Rv, attr, ulong_bytes, ulong_from_bytes};
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::handles::{
    Identity, IndexCell, MAX_IDENTITY_BYTES, ObjectEntry, ObjectKind, ObjectTable,
};
use crate::port::{Attr, AttrOut, Member, Platform};
use crate::sync::spin;

use super::pool::Pool;

/// The table, over the platform's storage.
pub(super) type Table<P> =
    ObjectTable<<P as Platform>::Store<ObjectEntry>, <P as Platform>::Store<IndexCell>>;

/// Where an object handle is resolved: a session on a member.
#[derive(Clone, Copy)]
pub(super) struct At {
    /// The session's (virtual) slot index.
    pub(super) slot: usize,
    /// The member and its session.
    pub(super) member: usize,
    pub(super) real: u64,
    /// A search is active in that session: a lookup by identity needs a
    /// session of its own.
    pub(super) find_active: bool,
}

/// See the module documentation.
pub(super) struct Objects<P: Platform> {
    table: spin::RwLock<Table<P>>,
    /// WLD and HA mode: handles are virtual. In NORMAL mode they are the
    /// member's own and the table stays empty.
    virtual_handles: bool,
}

impl<P: Platform> Objects<P> {
    pub(super) fn new(
        entries: P::Store<ObjectEntry>,
        index: P::Store<IndexCell>,
        mode: Mode,
    ) -> Self {
        Objects {
            table: spin::RwLock::new(ObjectTable::new(entries, index)),
            virtual_handles: mode.is_virtual(),
        }
    }

    pub(super) fn read(&self) -> spin::RwLockReadGuard<'_, Table<P>> {
        self.table.read()
    }

    pub(super) fn write(&self) -> spin::RwLockWriteGuard<'_, Table<P>> {
        self.table.write()
    }

    /// The member's handle for virtual object `handle` at `here`, found by
    /// identity on that member if it has not served it before. `invalid` is
    /// the code for a handle that names nothing usable here.
    pub(super) fn resolve(
        &self,
        pool: &Pool<P>,
        here: At,
        handle: u64,
        invalid: Rv,
    ) -> Result<u64> {
        if !self.virtual_handles {
            return Ok(handle);
        }
        let identity = {
            let objects = self.read();
            let (kind, slot) = objects.kind(handle).ok_or(Error::Rv(invalid))?;
            if slot != here.slot {
                return Err(Error::Rv(invalid));
            }
            if let Some(real) = objects.real(handle, here.member) {
                return Ok(real);
            }
            match kind {
                ObjectKind::Token(identity) => identity.clone(),
                // A session object lives on its slot's home only.
                ObjectKind::Session { .. } => {
                    return Err(match live_member(pool, objects.reals(handle)) {
                        Some(member) => Error::Elsewhere { member },
                        None => Error::Rv(invalid),
                    });
                }
                _ => return Err(Error::Rv(invalid)),
            }
        };
        let member = pool.member(here.member);
        let found = if here.find_active {
            pool.with_temp_session(here.member, |t| find_unique(member, t, &identity))
        } else {
            find_unique(member, here.real, &identity)
        };
        let real = found?.ok_or(Error::Rv(invalid))?;
        let mut objects = self.write();
        // The object may have been destroyed meanwhile.
        objects.kind(handle).ok_or(Error::Rv(invalid))?;
        objects.add_real(handle, here.member, real)?;
        Ok(real)
    }

    /// The virtual handle for `real`, a handle member `here.member` returned
    /// in its session `here.real`; a new entry if p11ha has not seen it.
    /// `owner` is the session table index when that session just made the
    /// object (`session`: as a session object, so its identity is not read);
    /// the flag says whether the session now owns a session object.
    pub(super) fn adopt(
        &self,
        pool: &Pool<P>,
        here: At,
        owner: Option<usize>,
        real: u64,
        session: bool,
    ) -> Result<(u64, bool)> {
        if !self.virtual_handles {
            return Ok((real, false));
        }
        if let Some(h) = self.read().lookup(here.member, real) {
            return Ok((h, false));
        }
        // A session object has no identity to find it by elsewhere.
        let (token, identity) = match session {
            true => (false, None),
            false => identity_of(pool.member(here.member), here.real, real)?,
        };
        let mut objects = self.write();
        if let Some(h) = objects.lookup(here.member, real) {
            return Ok((h, false));
        }
        let mut owned = false;
        let kind = match (token, identity) {
            (true, Some(identity)) => {
                if let Some(h) = objects.find_identity(here.slot, &identity) {
                    if objects.real(h, here.member).is_none() {
                        objects.add_real(h, here.member, real)?;
                        return Ok((h, false));
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
                    // The slot's session objects live on one member.
                    if let Some(home) = objects.home(here.slot)
                        && home != here.member
                    {
                        if pool.up(home) {
                            return Err(Error::Elsewhere { member: home });
                        }
                        // The old home is out: this member is the new one.
                        objects.set_home(here.slot, here.member);
                    }
                    owned = true;
                    ObjectKind::Session {
                        owner,
                        root: None,
                        used: false,
                    }
                }
                None => ObjectKind::Local,
            },
        };
        let h = objects.insert(here.slot, kind, here.member, real)?;
        Ok((h, owned))
    }

    /// The home of `slot`'s session objects, if it is in service and is not
    /// `member`: a session on `member` must move there to reach them.
    pub(super) fn home_elsewhere(
        &self,
        pool: &Pool<P>,
        slot: usize,
        member: usize,
    ) -> Option<usize> {
        if !self.virtual_handles {
            return None;
        }
        self.read()
            .home(slot)
            .filter(|&h| h != member && pool.up(h))
    }

    /// Where a session that owns session objects of `slot` goes in a
    /// failover: their home if it is in service, else the member in service
    /// with the fewest sessions among those that `fit` (any, if none
    /// does), which becomes their home.
    pub(super) fn home_for_failover(
        &self,
        pool: &Pool<P>,
        slot: usize,
        fits: impl Fn(usize) -> bool,
    ) -> Result<usize> {
        let mut objects = self.write();
        let pick = || pool.pick_where(slot, fits).or_else(|_| pool.pick(slot));
        match objects.home(slot) {
            Some(h) if pool.up(h) => Ok(h),
            Some(_) => {
                let m = pick()?;
                objects.set_home(slot, m);
                Ok(m)
            }
            None => pick(),
        }
    }

    /// The session that made session object `handle`, when no member in
    /// service holds the object (its home failed, and that session has not
    /// failed over yet: its failover re-creates it).
    pub(super) fn owner_to_rebuild(&self, pool: &Pool<P>, handle: u64) -> Option<usize> {
        let objects = self.read();
        let owner = objects.owner(handle)?;
        live_member(pool, objects.reals(handle))
            .is_none()
            .then_some(owner)
    }

    /// A member in service other than `member` that holds token object
    /// `handle` (it has a mapping there).
    pub(super) fn held_elsewhere(
        &self,
        pool: &Pool<P>,
        handle: u64,
        member: usize,
    ) -> Option<usize> {
        if !self.virtual_handles {
            return None;
        }
        let objects = self.read();
        match objects.kind(handle) {
            Some((ObjectKind::Token(_), _)) => live_member(
                pool,
                objects
                    .reals(handle)
                    .iter()
                    .filter(|&&(m, _)| usize::from(m) != member)
                    .copied()
                    .collect::<Vec<_, { crate::handles::REAL_HANDLES_PER_OBJECT }>>()
                    .as_slice(),
            ),
            _ => None,
        }
    }

    /// Whether session table index `owner` owns a session object now.
    pub(super) fn owns_any(&self, owner: usize) -> bool {
        self.read().owns_any(owner)
    }

    /// Whether `handle` is a session object p11ha made.
    pub(super) fn is_session_object(&self, handle: u64) -> bool {
        matches!(
            self.read().kind(handle),
            Some((ObjectKind::Session { .. }, _))
        )
    }

    /// The identity of token object `handle` (WLD and HA mode).
    pub(super) fn token_identity(&self, handle: u64) -> Option<Identity> {
        if !self.virtual_handles {
            return None;
        }
        match self.read().kind(handle) {
            Some((ObjectKind::Token(identity), _)) => Some(identity.clone()),
            _ => None,
        }
    }
}

const TRUE: [u8; 1] = [1];

/// The first member in service among an object's mappings.
fn live_member<P: Platform>(pool: &Pool<P>, reals: &[(u16, u64)]) -> Option<usize> {
    reals
        .iter()
        .map(|&(m, _)| usize::from(m))
        .find(|&m| pool.up(m))
}

/// What `template` says of `CKA_TOKEN`: `Some(true)` for a token object,
/// `Some(false)` for a session object, `None` if it does not say.
pub(super) fn token_attribute(template: &[Attr<'_>]) -> Option<bool> {
    template
        .iter()
        .rev()
        .find(|a| a.ty == attr::TOKEN)
        .map(|a| a.value.iter().any(|&b| b != 0))
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
pub(super) fn identity_with(identity: &Identity, template: &[Attr<'_>]) -> Option<Identity> {
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
pub(super) fn find_unique<M: Member>(
    member: &M,
    session: u64,
    identity: &Identity,
) -> Result<Option<u64>> {
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
