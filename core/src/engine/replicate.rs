//! Token writes on every member (WLD and HA mode): a token object made,
//! changed or destroyed through p11ha is so on every member in service of
//! its slot before the call returns, so that the members stay one token.
//!
//! Invariants:
//! - one order: a token write holds its slot's login lock from the first
//!   member's call to the last, so two writes reach every member in the
//!   same order;
//! - the same write: a new object is made again on each member by the same
//!   call with the same template ([`Remake`]); its sources (the object
//!   copied, the unwrapping key, the base key) are the same token objects,
//!   found there by identity. What cannot be repeated exactly (a generated
//!   key, a source that is a session object) travels wrapped under the
//!   replication key the operator provisioned on every member
//!   ([`Engine::remake_wrapped`]), or is refused, or (`P11HA_TOKEN_KEYS=LOCAL`)
//!   stays on one member with a log line;
//! - all or nothing among the members that answer: a member that refuses
//!   what the first accepted has the others undone and the application gets
//!   its answer; a member that lacks a source the first had, or that cannot
//!   be undone, no longer holds what the others hold and is taken out as
//!   inconsistent;
//! - a member that fails during a write, or was out of service when it
//!   happened, missed it: it is marked as needing a sync and does not come
//!   back into service until it has one ([`Engine::write_done`]).

use heapless::Vec;

use crate::ck::{Rv, attr, class};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::handles::Identity;
use crate::port::{Attr, AttrOut, Events, Mechanism, Member, Param, Platform};

use super::logins::Login;
use super::objects::find_unique;
use super::{Engine, MAX_MEMBERS};

/// How a new token object is made again on another member.
#[derive(Clone, Copy)]
pub(super) enum Remake<'a> {
    /// `C_CreateObject` with the template.
    Create(&'a [Attr<'a>]),
    /// `C_CopyObject` of the token object with this identity.
    Copy(&'a Identity, &'a [Attr<'a>]),
    /// `C_UnwrapKey` of the same bytes with the unwrapping key of this
    /// identity.
    Unwrap(&'a Mechanism<'a>, &'a Identity, &'a [u8], &'a [Attr<'a>]),
    /// `C_DeriveKey` from the base key of this identity.
    Derive(&'a Mechanism<'a>, &'a Identity, &'a [Attr<'a>]),
}

/// A key pair's half: its (virtual, real) handles, `None` when that half
/// is a session object.
type Half = Option<(u64, u64)>;

/// The real handles one member made for a write (a key pair makes two).
pub(super) type Made = Vec<u64, 2>;

/// A member's answer to a remake: made, or it lacks the source.
enum Answer {
    Made(Made),
    NoSource,
}

impl<P: Platform> Engine<P> {
    /// Makes `remake` on member `member`'s session `session`.
    fn remake_on(member: &P::Member, session: u64, remake: &Remake<'_>) -> Result<Answer> {
        let one = |real: u64| {
            let mut made = Made::new();
            // Capacity 2.
            let _ = made.push(real);
            Answer::Made(made)
        };
        let source = |identity: &Identity| find_unique(member, session, identity);
        Ok(match *remake {
            Remake::Create(template) => one(member.create_object(session, template)?),
            Remake::Copy(identity, template) => match source(identity)? {
                Some(src) => one(member.copy_object(session, src, template)?),
                None => Answer::NoSource,
            },
            Remake::Unwrap(mechanism, identity, wrapped, template) => match source(identity)? {
                Some(key) => one(member.unwrap_key(session, mechanism, key, wrapped, template)?),
                None => Answer::NoSource,
            },
            Remake::Derive(mechanism, identity, template) => match source(identity)? {
                Some(base) => one(member.derive_key(session, mechanism, base, template)?),
                None => Answer::NoSource,
            },
        })
    }

    /// Makes the new token object(s) `virt` (virtual handles, made on
    /// member `own` already) on every other member in service of `slot`,
    /// through their anchors: `make` makes them on one member's session and
    /// says which real handles it made, in the order of `virt`. The caller
    /// holds the slot's login lock (`login`) since before `own` made them.
    ///
    /// A member that refuses: the others are undone and its error returned
    /// (the caller undoes `own`). A member that lacks the source: taken out
    /// as inconsistent. A member that fails: taken out, and marked as
    /// having missed the write.
    pub(super) fn replicate(
        &self,
        login: &mut Login,
        slot: usize,
        own: usize,
        function: &str,
        virt: &[u64],
        make: impl Fn(&P::Member, u64) -> Result<Option<Made>>,
    ) -> Result<()> {
        let others: Vec<usize, MAX_MEMBERS> = self.pool.live(slot).filter(|&m| m != own).collect();
        let mut done: Vec<(usize, Made), MAX_MEMBERS> = Vec::new();
        let mut skipped = false;
        for m in others {
            let entry = self.pool.entry(m);
            let _busy = entry.busy();
            if self.ensure_logged_in(login, m).is_err() {
                // Taken out, as failed or inconsistent, by the login.
                continue;
            }
            let anchor = login.anchor(&self.pool, m);
            let Ok(anchor) = self.check(m, None, anchor) else {
                continue;
            };
            let answer = make(&entry.member, anchor);
            match self.check(m, Some(anchor), answer) {
                Ok(Some(made)) => {
                    let mut objects = self.objects.write();
                    for (&v, &real) in virt.iter().zip(made.iter()) {
                        // Best effort: without the mapping, the object is
                        // found by identity when it is used there.
                        let _ = objects.add_real(v, m, real);
                    }
                    drop(objects);
                    // Capacity MAX_MEMBERS: one entry per member.
                    let _ = done.push((m, made));
                }
                // With P11HA_TOKEN_KEYS=LOCAL a source may be on one member
                // by choice: the new object stays where its source is.
                Ok(None) if self.config.token_keys_local => {
                    if !skipped {
                        skipped = true;
                        let _ = self.not_replicable(own, function, "its source is on one HSM only");
                    }
                }
                Ok(None) => self.inconsistent(m, function, Rv::OBJECT_HANDLE_INVALID),
                Err(_) if !self.member_up(m) => {}
                Err(e) => {
                    for (m, made) in &done {
                        self.undo_made(login, *m, made, function);
                    }
                    return Err(e);
                }
            }
        }
        self.write_done(slot);
        Ok(())
    }

    /// Destroys what member `m` made for a write the others refused; a
    /// member that cannot be undone is inconsistent.
    fn undo_made(&self, login: &Login, m: usize, made: &Made, function: &str) {
        let Some(anchor) = login.anchor_of(&self.pool, m) else {
            return;
        };
        let member = self.pool.member(m);
        for &real in made {
            let r = member.destroy_object(anchor, real);
            match self.check(m, Some(anchor), r) {
                Ok(()) => {}
                Err(_) if !self.member_up(m) => return,
                Err(e) => {
                    self.inconsistent(m, function, e.rv());
                    return;
                }
            }
        }
        let mut objects = self.objects.write();
        for &real in made {
            if let Some(h) = objects.lookup(m, real) {
                objects.remove(h);
            }
        }
    }

    /// A token object that cannot be made again exactly (`what`): with
    /// `P11HA_TOKEN_KEYS=LOCAL` it stays on member `own` alone, said in the
    /// log; otherwise the call is refused with `CKR_FUNCTION_FAILED`, and
    /// the log says why and what to configure. `Ok` means keep it local.
    pub(super) fn not_replicable(&self, own: usize, function: &str, why: &str) -> Result<()> {
        let local = self.config.token_keys_local;
        self.events.event(&Event::NotReplicated {
            function,
            why,
            hsm_idx: own,
            refused: !local,
        });
        if local {
            Ok(())
        } else {
            Err(Error::Rv(Rv::FUNCTION_FAILED))
        }
    }
}

/// Whether `mechanism` means the same on every member (a parameter that
/// names an object does not).
pub(super) fn portable(mechanism: &Mechanism<'_>) -> bool {
    !matches!(mechanism.param, Param::Handle(_))
}

/// The attributes a replicated key keeps from the original: everything an
/// application may have asked for. (`CKA_LOCAL`, `CKA_ALWAYS_SENSITIVE` and
/// `CKA_NEVER_EXTRACTABLE` are the token's to say: on a copy made by
/// unwrapping they are false.)
pub(super) const KEPT_ATTRIBUTES: [u64; 20] = [
    attr::LABEL,
    attr::ID,
    attr::PRIVATE,
    attr::MODIFIABLE,
    attr::SUBJECT,
    attr::SENSITIVE,
    attr::EXTRACTABLE,
    attr::ENCRYPT,
    attr::DECRYPT,
    attr::SIGN,
    attr::SIGN_RECOVER,
    attr::VERIFY,
    attr::VERIFY_RECOVER,
    attr::WRAP,
    attr::UNWRAP,
    attr::DERIVE,
    attr::START_DATE,
    attr::END_DATE,
    attr::WRAP_WITH_TRUSTED,
    attr::COPYABLE,
];

/// A public key's own values, beside [`KEPT_ATTRIBUTES`].
pub(super) const PUBLIC_VALUES: [u64; 8] = [
    attr::MODULUS,
    attr::PUBLIC_EXPONENT,
    attr::EC_PARAMS,
    attr::EC_POINT,
    attr::PRIME,
    attr::SUBPRIME,
    attr::BASE,
    attr::VALUE,
];

/// Reads the attributes `types` of `object` that it has (and that may be
/// read) into `buf`, as a template that begins with `first` (copied into
/// `buf` too); `None` if they do not fit.
pub(super) fn read_template<'b, M: Member>(
    member: &M,
    session: u64,
    object: u64,
    types: &[u64],
    first: &[Attr<'_>],
    buf: &'b mut [u8],
) -> Result<Option<Vec<Attr<'b>, 32>>> {
    // The lengths first.
    let mut lens: Vec<AttrOut<'_>, 32> = Vec::new();
    for &ty in types {
        let _ = lens.push(AttrOut {
            ty,
            buf: None,
            len: None,
        });
    }
    match member.get_attributes(session, object, &mut lens) {
        Ok(()) | Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID | Rv::ATTRIBUTE_SENSITIVE)) => {}
        Err(e) => return Err(e),
    }
    let mut rest: &'b mut [u8] = buf;
    let mut template: Vec<Attr<'b>, 32> = Vec::new();
    for a in first {
        if a.value.len() > rest.len() {
            return Ok(None);
        }
        let (here, tail) = core::mem::take(&mut rest).split_at_mut(a.value.len());
        rest = tail;
        here.copy_from_slice(a.value);
        let _ = template.push(Attr {
            ty: a.ty,
            value: here,
        });
    }
    let mut out: Vec<AttrOut<'b>, 32> = Vec::new();
    for a in &lens {
        if let Some(n) = a.len {
            if n > rest.len() {
                return Ok(None);
            }
            let (here, tail) = core::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            let _ = out.push(AttrOut {
                ty: a.ty,
                buf: Some(here),
                len: None,
            });
        }
    }
    match member.get_attributes(session, object, &mut out) {
        Ok(()) | Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID | Rv::ATTRIBUTE_SENSITIVE)) => {}
        Err(e) => return Err(e),
    }
    for a in out {
        if let (Some(n), Some(b)) = (a.len, a.buf) {
            let b: &'b [u8] = b;
            let value = b.get(..n).ok_or(Error::Rv(Rv::GENERAL_ERROR))?;
            if template.push(Attr { ty: a.ty, value }).is_err() {
                return Ok(None);
            }
        }
    }
    Ok(Some(template))
}

/// `CKO_PRIVATE_KEY` and `CKO_SECRET_KEY`: the classes a wrap carries.
pub(super) fn wrappable(object_class: u64) -> bool {
    object_class == class::PRIVATE_KEY || object_class == class::SECRET_KEY
}

/// The mechanism that carries a key to another member under the
/// replication key (RFC 5649: any key length, private keys included).
const CARRY: Mechanism<'static> = Mechanism {
    ty: crate::ck::mech::AES_KEY_WRAP_PAD,
    param: Param::None,
};

/// The largest wrapped key carried (an RSA-8192 private key in PKCS#8 fits).
const MAX_CARRIED: usize = 6144;

const TRUE: [u8; 1] = [1];

/// A new token key carried to the other members.
struct Carried<'a> {
    /// The replication key, found on each member by its label.
    key: Identity,
    wrapped: &'a [u8],
    template: Vec<Attr<'a>, 32>,
}

impl Carried<'_> {
    /// Unwraps the key on `member`'s session `session`; `None` if the
    /// member has no replication key (it is not provisioned as the others).
    fn unwrap_on<M: Member>(&self, member: &M, session: u64) -> Result<Option<Made>> {
        let Some(key) = find_unique(member, session, &self.key)? else {
            return Ok(None);
        };
        let real = member.unwrap_key(session, &CARRY, key, self.wrapped, &self.template)?;
        let mut made = Made::new();
        // Capacity 2.
        let _ = made.push(real);
        Ok(Some(made))
    }
}

impl<P: Platform> Engine<P> {
    /// After member `s_member` made token object(s) `virt` (its real handles
    /// `reals`, in the application's session `s_real`): makes them on the
    /// other members. On a refusal the own ones are destroyed too, and the
    /// error returned.
    #[allow(clippy::too_many_arguments)]
    fn replicate_or_undo(
        &self,
        login: &mut Login,
        slot: usize,
        s_member: usize,
        s_real: u64,
        function: &str,
        virt: &[u64],
        reals: &[u64],
        make: impl Fn(&P::Member, u64) -> Result<Option<Made>>,
    ) -> Result<()> {
        let r = self.replicate(login, slot, s_member, function, virt, make);
        if r.is_err() {
            self.undo_own(s_member, s_real, virt, reals);
        }
        r
    }

    /// Destroys what the session's own member made, and forgets it.
    fn undo_own(&self, member: usize, session: u64, virt: &[u64], reals: &[u64]) {
        let m = self.pool.member(member);
        for &real in reals {
            let _ = m.destroy_object(session, real);
        }
        let mut objects = self.objects.write();
        for &v in virt {
            objects.remove(v);
        }
    }

    /// Whether `slot` has other members than `own` (in service or not): a
    /// token object made there must reach them.
    fn has_others(&self, slot: usize, own: usize) -> bool {
        self.pool.slot(slot).member_mask() & !(1 << own) != 0
    }

    /// The new token object `virt` (member `own`'s `real`, made in session
    /// `s_real` of slot `slot`) reaches the other members: made again by
    /// `remake` when it can be (`Some`), else carried wrapped under the
    /// replication key. Refused when neither can be done (the own object
    /// destroyed), unless `P11HA_TOKEN_KEYS=LOCAL`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn replicate_new(
        &self,
        login: &mut Login,
        slot: usize,
        own: usize,
        s_real: u64,
        function: &str,
        virt: u64,
        real: u64,
        remake: Option<Remake<'_>>,
    ) -> Result<()> {
        if !self.has_others(slot, own) {
            self.write_done(slot);
            return Ok(());
        }
        if let Some(remake) = remake {
            return self.replicate_or_undo(
                login,
                slot,
                own,
                s_real,
                function,
                &[virt],
                &[real],
                |member, session| {
                    Ok(match Self::remake_on(member, session, &remake)? {
                        Answer::Made(made) => Some(made),
                        Answer::NoSource => None,
                    })
                },
            );
        }
        let mut wrapped = [0u8; MAX_CARRIED];
        let mut values = [0u8; 2048];
        let r = self
            .carry(login, own, real, &mut wrapped, &mut values)
            .and_then(|carried| match carried {
                Ok(c) => self.replicate_or_undo(
                    login,
                    slot,
                    own,
                    s_real,
                    function,
                    &[virt],
                    &[real],
                    |member, session| c.unwrap_on(member, session),
                ),
                Err(why) => self.not_replicable(own, function, why).inspect_err(|_| {
                    self.undo_own(own, s_real, &[virt], &[real]);
                }),
            });
        wrapped.fill(0);
        r
    }

    /// A key pair made on member `own`: its token halves reach the other
    /// members, the private key carried wrapped, the public key made again
    /// from its values. `public` and `private`: (virtual, real) handles,
    /// `None` for a half that is a session object.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn replicate_pair(
        &self,
        login: &mut Login,
        slot: usize,
        own: usize,
        s_real: u64,
        public: Half,
        private: Half,
        both: [(u64, u64); 2],
    ) -> Result<()> {
        if !self.has_others(slot, own) {
            self.write_done(slot);
            return Ok(());
        }
        let mut wrapped = [0u8; MAX_CARRIED];
        let mut values = [0u8; 2048];
        let mut public_values = [0u8; 2048];
        let r = self.replicate_pair_in(
            login,
            slot,
            own,
            (public, private),
            (&mut wrapped, &mut values, &mut public_values),
        );
        // One place undoes the pair made on `own`, whatever failed.
        if r.is_err() {
            self.undo_own(
                own,
                s_real,
                &[both[0].0, both[1].0],
                &[both[0].1, both[1].1],
            );
        }
        wrapped.fill(0);
        r
    }

    /// [`Engine::replicate_pair`] in the buffers given: the private key
    /// wrapped into the first, its template into the second, the public
    /// key's template into the third. An error leaves the undoing to the
    /// caller; `Ok` with nothing replicated is `P11HA_TOKEN_KEYS=LOCAL`.
    fn replicate_pair_in(
        &self,
        login: &mut Login,
        slot: usize,
        own: usize,
        (public, private): (Half, Half),
        (wrapped, values, public_values): (&mut [u8], &mut [u8], &mut [u8]),
    ) -> Result<()> {
        const FUNCTION: &str = "C_GenerateKeyPair";
        let carried = match private {
            Some((_, real)) => match self.carry(login, own, real, wrapped, values)? {
                Ok(c) => Some(c),
                Err(why) => return self.not_replicable(own, FUNCTION, why),
            },
            None => None,
        };
        let public_template = match public {
            Some((_, real)) => {
                let anchor = login
                    .anchor_of(&self.pool, own)
                    .ok_or(Error::Rv(Rv::DEVICE_ERROR))?;
                let member = self.pool.member(own);
                let class = crate::ck::ulong_bytes(class::PUBLIC_KEY);
                let key_type = self.key_type(member, anchor, real);
                let kt;
                let mut first: Vec<Attr<'_>, 3> = Vec::new();
                let _ = first.push(Attr {
                    ty: attr::CLASS,
                    value: &class,
                });
                let _ = first.push(Attr {
                    ty: attr::TOKEN,
                    value: &TRUE,
                });
                if let Ok(Some(k)) = key_type {
                    kt = crate::ck::ulong_bytes(k);
                    let _ = first.push(Attr {
                        ty: attr::KEY_TYPE,
                        value: &kt,
                    });
                }
                let mut types: Vec<u64, 32> = Vec::new();
                for &t in KEPT_ATTRIBUTES.iter().chain(PUBLIC_VALUES.iter()) {
                    let _ = types.push(t);
                }
                match read_template(member, anchor, real, &types, &first, public_values)? {
                    Some(t) => Some(t),
                    None => {
                        return self.not_replicable(
                            own,
                            FUNCTION,
                            "the public key's values are too large to carry",
                        );
                    }
                }
            }
            None => None,
        };
        let mut virt: Vec<u64, 2> = Vec::new();
        for (v, _) in public.into_iter().chain(private) {
            let _ = virt.push(v);
        }
        self.replicate(login, slot, own, FUNCTION, &virt, |member, session| {
            let mut made = Made::new();
            if let Some(t) = &public_template {
                let _ = made.push(member.create_object(session, t)?);
            }
            if let Some(c) = &carried {
                match c.unwrap_on(member, session) {
                    Ok(Some(m)) => {
                        let _ = made.push(m[0]);
                    }
                    other => {
                        for &real in &made {
                            let _ = member.destroy_object(session, real);
                        }
                        return other;
                    }
                }
            }
            Ok(Some(made))
        })
    }

    /// `CKA_KEY_TYPE` of `object`.
    fn key_type(&self, member: &P::Member, session: u64, object: u64) -> Result<Option<u64>> {
        let mut kt = [0u8; 8];
        let width = core::mem::size_of::<core::ffi::c_ulong>();
        let mut t = [AttrOut {
            ty: attr::KEY_TYPE,
            buf: Some(&mut kt[..width]),
            len: None,
        }];
        member.get_attributes(session, object, &mut t)?;
        Ok(t[0]
            .len
            .and_then(|n| crate::ck::ulong_from_bytes(kt.get(..n)?)))
    }

    /// Wraps key `real` of member `own` under the replication key, with the
    /// template that makes it again elsewhere. `Ok(Err(why))`: it cannot be
    /// carried.
    fn carry<'b>(
        &self,
        login: &mut Login,
        own: usize,
        real: u64,
        wrapped: &'b mut [u8],
        values: &'b mut [u8],
    ) -> Result<core::result::Result<Carried<'b>, &'static str>> {
        let Some(label) = self.config.replication_key else {
            return Ok(Err(
                "the key was made on one HSM and no replication key is configured",
            ));
        };
        let anchor = login.anchor(&self.pool, own);
        let anchor = self.check(own, None, anchor)?;
        let member = self.pool.member(own);
        // Class, key type and whether it may leave the HSM.
        let mut class_b = [0u8; 8];
        let mut type_b = [0u8; 8];
        let mut extractable = [0u8; 1];
        let width = core::mem::size_of::<core::ffi::c_ulong>();
        let mut t = [
            AttrOut {
                ty: attr::CLASS,
                buf: Some(&mut class_b[..width]),
                len: None,
            },
            AttrOut {
                ty: attr::KEY_TYPE,
                buf: Some(&mut type_b[..width]),
                len: None,
            },
            AttrOut {
                ty: attr::EXTRACTABLE,
                buf: Some(&mut extractable),
                len: None,
            },
        ];
        match member.get_attributes(anchor, real, &mut t) {
            Ok(()) | Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID)) => {}
            Err(e) => return Err(e),
        }
        let lens = [t[0].len, t[1].len, t[2].len];
        let object_class = lens[0].and_then(|n| crate::ck::ulong_from_bytes(class_b.get(..n)?));
        if !object_class.is_some_and(wrappable) {
            return Ok(Err(
                "the object is made from a session object, and only keys can be carried",
            ));
        }
        if lens[2] != Some(1) || extractable[0] == 0 {
            return Ok(Err(
                "the key is not extractable (CKA_EXTRACTABLE false), so it cannot be carried",
            ));
        }
        let key = Identity {
            class: class::SECRET_KEY,
            key_type: None,
            id: None,
            label: Vec::from_slice(label.as_bytes()).ok(),
        };
        let Some(carrier) = find_unique(member, anchor, &key)? else {
            return Ok(Err(
                "the replication key (P11HA_REPLICATION_KEY) is not on the HSM that made the key, or not once",
            ));
        };
        let n = match member.wrap_key(anchor, &CARRY, carrier, real, Some(wrapped)) {
            Ok(n) => n,
            Err(Error::BufferTooSmall { .. }) => {
                return Ok(Err("the wrapped key is too large to carry"));
            }
            Err(Error::Rv(Rv::KEY_UNEXTRACTABLE | Rv::KEY_NOT_WRAPPABLE)) => {
                return Ok(Err("the HSM does not let the key be wrapped"));
            }
            Err(e) => return Err(e),
        };
        let class_v = lens[0].map(|n| &class_b[..n]).unwrap_or(&[]);
        // The template: class, key type, token, and what the key has of
        // the attributes an application may ask for.
        let mut first: Vec<Attr<'_>, 3> = Vec::new();
        let _ = first.push(Attr {
            ty: attr::CLASS,
            value: class_v,
        });
        if let Some(n) = lens[1] {
            let _ = first.push(Attr {
                ty: attr::KEY_TYPE,
                value: &type_b[..n],
            });
        }
        let _ = first.push(Attr {
            ty: attr::TOKEN,
            value: &TRUE,
        });
        let Some(template) = read_template(member, anchor, real, &KEPT_ATTRIBUTES, &first, values)?
        else {
            return Ok(Err("the key's attributes are too large to carry"));
        };
        let wrapped: &'b [u8] = &wrapped[..n];
        Ok(Ok(Carried {
            key,
            wrapped,
            template,
        }))
    }
}

impl<P: Platform> Engine<P> {
    /// `C_SetAttributeValue` of token object `identity` repeated on every
    /// other member in service of `slot` (member `own` changed it already,
    /// from the values `before`, if they could be read). A member that
    /// refuses what `own` accepted: the members that took the change, `own`
    /// included (its `real` in session `s_real`), get `before` back and the
    /// refusal is returned; without `before` (a value that cannot be read)
    /// the refusing member is dropped as inconsistent instead.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn replicate_change(
        &self,
        login: &Login,
        slot: usize,
        own: usize,
        s_real: u64,
        real: u64,
        identity: &Identity,
        template: &[Attr<'_>],
        before: Option<&[Attr<'_>]>,
    ) -> Result<()> {
        const FUNCTION: &str = "C_SetAttributeValue";
        let others: Vec<usize, MAX_MEMBERS> = self.pool.live(slot).filter(|&m| m != own).collect();
        let mut done: Vec<(usize, u64, u64), MAX_MEMBERS> = Vec::new();
        for m in others {
            let entry = self.pool.entry(m);
            let _busy = entry.busy();
            let Some(anchor) = login.anchor_of(&self.pool, m) else {
                continue;
            };
            let member = &entry.member;
            let r = find_unique(member, anchor, identity).and_then(|found| match found {
                Some(there) => member
                    .set_attributes(anchor, there, template)
                    .map(|()| Some(there)),
                None => Ok(None),
            });
            match self.check(m, Some(anchor), r) {
                Ok(Some(there)) => {
                    let _ = done.push((m, anchor, there));
                }
                // Kept on one member by choice (P11HA_TOKEN_KEYS=LOCAL).
                Ok(None) if self.config.token_keys_local => {}
                Ok(None) => self.inconsistent(m, FUNCTION, Rv::OBJECT_HANDLE_INVALID),
                Err(_) if !self.member_up(m) => {}
                Err(e) => match before {
                    Some(before) => {
                        let _ = self.pool.member(own).set_attributes(s_real, real, before);
                        for &(m, anchor, there) in &done {
                            let r = self.pool.member(m).set_attributes(anchor, there, before);
                            if let Err(e) = self.check(m, Some(anchor), r)
                                && self.member_up(m)
                            {
                                self.inconsistent(m, FUNCTION, e.rv());
                            }
                        }
                        return Err(e);
                    }
                    None => self.inconsistent(m, FUNCTION, e.rv()),
                },
            }
        }
        self.write_done(slot);
        Ok(())
    }
}

/// The current values of the attributes `template` changes, read from
/// `object` into `buf`, as a template that puts them back; `None` if one
/// cannot be read (sensitive) or they do not fit.
pub(super) fn values_before<'b, M: Member>(
    member: &M,
    session: u64,
    object: u64,
    template: &[Attr<'_>],
    buf: &'b mut [u8],
) -> Option<Vec<Attr<'b>, 32>> {
    let mut types: Vec<u64, 32> = Vec::new();
    for a in template {
        types.push(a.ty).ok()?;
    }
    let before = read_template(member, session, object, &types, &[], buf).ok()??;
    // Every attribute read back, or the change could not be undone.
    (before.len() == types.len()).then_some(before)
}
