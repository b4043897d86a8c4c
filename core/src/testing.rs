//! Test helpers (the `testing` feature, and the core's own tests): a
//! platform over boxed tables ([`Testbed`]), its storage ([`storage`]), an
//! event recorder, a clock the test moves, and a scripted software token
//! ([`Token`]) that numbers its sessions and objects like an HSM does, so
//! that the engine can be driven in-process as a platform drives it.
//!
//! The token's cryptography is a toy, chosen so that a test can tell
//! results apart and predict them: its "digest" is FNV-1a, its "signature"
//! the digest of the key's value and the data, its "cipher" a XOR with the
//! key's value. Generated keys take fresh values, so a key generated again
//! differs, as on an HSM. It is not a PKCS#11 implementation: calls it does
//! not script answer `CKR_FUNCTION_NOT_SUPPORTED`.

extern crate std;

use std::boxed::Box;
use std::collections::BTreeMap;
use std::string::String;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::vec::Vec;

use core::marker::PhantomData;

use crate::ck::{Rv, attr, class, copy_out, mech, ulong_bytes};
use crate::config::{Config, label};
use crate::engine::{Capacity, Engine, Storage, Tables};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::journal::{Journal, Layout};
use crate::port::{
    Attr, AttrOut, Clock, DualOp, Events, Mechanism, MechanismInfo, Member, Op, Platform,
    SessionInfo, SlotInfo, TokenInfo, Version,
};
use crate::sync::SpinLock;

/// A platform whose members are `M`, over boxed tables.
pub struct Testbed<M>(PhantomData<M>);

impl<M: Member> Platform for Testbed<M> {
    type Member = M;
    type Lock = SpinLock;
    type Events = Recorder;
    type Clock = ManualClock;
    type Journal = Box<[u8]>;
    type Store<T: Send + Sync + 'static> = Box<[T]>;
}

/// Tables as boxed slices, made once.
pub struct Boxed;

impl<M: Member> Tables<Testbed<M>> for Boxed {
    fn table<T: Send + Sync + 'static>(
        &mut self,
        len: usize,
        init: impl FnMut(usize) -> Result<T>,
    ) -> Result<Box<[T]>> {
        (0..len).map(init).collect()
    }
}

/// Small tables: 4 members, 2 slots, 8 sessions, 32 objects.
pub const CAPACITY: Capacity = Capacity {
    members: 4,
    slots: 2,
    sessions: 8,
    objects: 32,
};

/// The storage of `capacity`, each session with a journal of `layout` and
/// `limit` bytes of Update data.
pub fn storage<M: Member>(
    capacity: &Capacity,
    layout: Layout,
    limit: usize,
) -> Storage<Testbed<M>> {
    let journal = |_| Journal::new(std::vec![0u8; layout.fixed() + limit].into(), layout, limit);
    match Storage::build(capacity, &mut Boxed, || Some(SpinLock::new()), journal) {
        Ok(s) => s,
        Err(e) => panic!("test storage: {e:?}"),
    }
}

/// An engine over [`CAPACITY`] with 1 KiB journals (limit 1024 bytes), with
/// `members` offered in order.
pub fn engine<M: Member>(
    config: &Config,
    members: impl IntoIterator<Item = M>,
) -> Engine<Testbed<M>> {
    let layout = Layout {
        recipes: 1024,
        find_template: 256,
        op_param: 128,
        found: 256,
    };
    let e = Engine::new(
        config,
        storage(&CAPACITY, layout, 1024),
        Recorder::default(),
        ManualClock::default(),
        7,
    )
    .expect("engine");
    for m in members {
        assert!(
            e.add_member(m).expect("add_member").is_some(),
            "member taken"
        );
    }
    e
}

/// Records every event, as its text.
#[derive(Default)]
pub struct Recorder {
    lines: Mutex<Vec<String>>,
}

impl Recorder {
    /// The events so far, as the HA log words them.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("recorder").clone()
    }

    /// How many events so far contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(text)).count()
    }
}

impl Events for Recorder {
    fn event(&self, event: &Event<'_>) {
        use std::string::ToString;
        self.lines.lock().expect("recorder").push(event.to_string());
    }
}

/// A clock the test moves.
#[derive(Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Moves the clock `ms` forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The user PIN of every [`Token`].
pub const PIN: &[u8] = b"p11ha-test-PIN-41c7";

/// The label of every [`Token`]'s token.
pub const LABEL: &str = "TokName";

/// The mechanisms a [`Token`] offers: a digest, a key generator, a cipher
/// and a signature.
pub const MECHANISMS: [u64; 4] = [
    mech::SHA256,
    mech::AES_KEY_GEN,
    mech::AES_ECB,
    mech::AES_MAC,
];

struct TokenSession {
    /// The operation in progress: its kind, key value and data so far.
    op: Option<(Op, Vec<u8>, Vec<u8>)>,
    /// The search in progress: the handles still to return.
    found: Option<Vec<u64>>,
}

struct Object {
    /// The session that made it, for session objects.
    session: Option<u64>,
    attrs: BTreeMap<u64, Vec<u8>>,
}

struct State {
    sessions: BTreeMap<u64, TokenSession>,
    objects: BTreeMap<u64, Object>,
    user: Option<u64>,
    /// The user's PIN (the SO's is the same).
    pin: Vec<u8>,
    /// Every PIN a `C_Login` brought, in order.
    attempts: Vec<Vec<u8>>,
    /// Every call, by name, in order.
    calls: Vec<&'static str>,
    /// [`Token::kill_at`]: the call that kills the token, and how many
    /// more of it until then (1: the next one).
    kill_at: Option<(&'static str, usize)>,
}

impl State {
    /// Session `s`, which [`Token::session`] found open under the same lock.
    fn session(&mut self, s: u64) -> Result<&mut TokenSession> {
        self.sessions
            .get_mut(&s)
            .ok_or(Error::Rv(Rv::GENERAL_ERROR))
    }
}

/// A scripted software token labelled [`LABEL`], with a user PIN [`PIN`]
/// (until `C_SetPIN` changes it).
///
/// Its handles start at `slot * 1000`, so that two tokens number their
/// sessions and objects differently, as two HSMs do. [`Token::kill`] makes
/// it answer `CKR_DEVICE_ERROR` to everything, as a dead HSM.
pub struct Token {
    slot: u64,
    next: AtomicU64,
    dead: AtomicBool,
    state: Mutex<State>,
}

impl Token {
    /// A token in slot `slot` holding `objects`: token objects, each a list
    /// of attributes.
    pub fn new(slot: u64, objects: &[&[(u64, &[u8])]]) -> Self {
        let t = Token {
            slot,
            next: AtomicU64::new(slot * 1000 + 1),
            dead: AtomicBool::new(false),
            state: Mutex::new(State {
                sessions: BTreeMap::new(),
                objects: BTreeMap::new(),
                user: None,
                pin: PIN.to_vec(),
                attempts: Vec::new(),
                calls: Vec::new(),
                kill_at: None,
            }),
        };
        for o in objects {
            let attrs = o.iter().map(|(t, v)| (*t, v.to_vec())).collect();
            let h = t.handle();
            t.state().objects.insert(
                h,
                Object {
                    session: None,
                    attrs,
                },
            );
        }
        t
    }

    fn handle(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("token state")
    }

    /// From now on, every call answers `CKR_DEVICE_ERROR`.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    /// Dies at the `n`th (1-based) call named `call` (a [`Member`] method's
    /// name) from now: that call answers `CKR_DEVICE_ERROR`, as does every
    /// call after it, as with [`Token::kill`]. Lets a test fail a member in
    /// the middle of an engine call, after some of its member calls
    /// succeeded.
    pub fn kill_at(&self, call: &'static str, n: usize) {
        self.state().kill_at = Some((call, n.max(1)));
    }

    /// It answers again, having lost every session (an HSM that restarted).
    pub fn restart(&self) {
        let mut s = self.state();
        s.kill_at = None;
        s.sessions.clear();
        s.objects.retain(|_, o| o.session.is_none());
        s.user = None;
        self.dead.store(false, Ordering::SeqCst);
    }

    /// Every PIN a `C_Login` brought, in order.
    pub fn attempts(&self) -> Vec<Vec<u8>> {
        self.state().attempts.clone()
    }

    /// How many times `call` (a [`Member`] method's name) was made.
    pub fn calls(&self, call: &str) -> usize {
        self.state().calls.iter().filter(|c| **c == call).count()
    }

    /// Whether the token is logged in.
    pub fn logged_in(&self) -> bool {
        self.state().user.is_some()
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.state().sessions.len()
    }

    /// Objects (token and session).
    pub fn objects(&self) -> usize {
        self.state().objects.len()
    }

    /// Changes the PIN behind p11ha's back.
    pub fn change_pin(&self, pin: &[u8]) {
        self.state().pin = pin.to_vec();
    }

    /// Removes token object `label` behind p11ha's back.
    pub fn remove_token_object(&self, label: &str) {
        self.state()
            .objects
            .retain(|_, o| o.attrs.get(&attr::LABEL).map(Vec::as_slice) != Some(label.as_bytes()));
    }

    /// Notes `call`, and fails if the token is dead.
    fn enter(&self, call: &'static str) -> Result<()> {
        let mut st = self.state();
        st.calls.push(call);
        if let Some((at, left)) = &mut st.kill_at
            && *at == call
        {
            *left -= 1;
            if *left == 0 {
                st.kill_at = None;
                self.dead.store(true, Ordering::SeqCst);
            }
        }
        drop(st);
        match self.dead.load(Ordering::SeqCst) {
            true => Err(Error::Rv(Rv::DEVICE_ERROR)),
            false => Ok(()),
        }
    }

    fn session<T>(
        &self,
        call: &'static str,
        s: u64,
        f: impl FnOnce(&mut State, u64) -> Result<T>,
    ) -> Result<T> {
        self.enter(call)?;
        let mut st = self.state();
        if !st.sessions.contains_key(&s) {
            return Err(Error::Rv(Rv::SESSION_HANDLE_INVALID));
        }
        f(&mut st, s)
    }

    fn add_object(&self, st: &mut State, s: u64, template: &[Attr<'_>]) -> u64 {
        let attrs: BTreeMap<u64, Vec<u8>> =
            template.iter().map(|a| (a.ty, a.value.to_vec())).collect();
        let token = attrs
            .get(&attr::TOKEN)
            .is_some_and(|v| v.first() == Some(&1));
        let h = self.handle();
        st.objects.insert(
            h,
            Object {
                session: (!token).then_some(s),
                attrs,
            },
        );
        h
    }
}

/// FNV-1a, the token's toy digest.
pub fn fnv(parts: &[&[u8]]) -> [u8; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h.to_be_bytes()
}

fn value_of(st: &State, key: u64) -> Result<Vec<u8>> {
    let o = st
        .objects
        .get(&key)
        .ok_or(Error::Rv(Rv::KEY_HANDLE_INVALID))?;
    Ok(o.attrs.get(&attr::VALUE).cloned().unwrap_or_default())
}

fn output(bytes: &[u8], out: Option<&mut [u8]>) -> Result<usize> {
    match out {
        None => Ok(bytes.len()),
        Some(o) if o.len() < bytes.len() => Err(Error::BufferTooSmall {
            needed: bytes.len(),
        }),
        Some(o) => {
            o[..bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len())
        }
    }
}

/// A slot with a token in it, as a scripted member reports it.
pub fn slot_info() -> SlotInfo {
    SlotInfo {
        description: [b' '; 64],
        manufacturer: [b' '; 32],
        flags: crate::ck::flags::TOKEN_PRESENT,
        hardware_version: Version::default(),
        firmware_version: Version::default(),
    }
}

/// A token labelled `text` (blank if longer than 32 bytes) whose PINs are
/// 4 to `max_pin_len` bytes, the rest unset, as a scripted member reports it.
pub fn token_info(text: &str, max_pin_len: u64) -> TokenInfo {
    TokenInfo {
        label: label(text).unwrap_or([b' '; 32]),
        manufacturer: [b' '; 32],
        model: [b' '; 16],
        serial: [b' '; 16],
        flags: 0,
        max_session_count: 0,
        session_count: 0,
        max_rw_session_count: 0,
        rw_session_count: 0,
        max_pin_len,
        min_pin_len: 4,
        total_public_memory: 0,
        free_public_memory: 0,
        total_private_memory: 0,
        free_private_memory: 0,
        hardware_version: Version::default(),
        firmware_version: Version::default(),
        utc_time: [b' '; 16],
    }
}

fn not_supported<T>() -> Result<T> {
    Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))
}

impl Member for Token {
    fn slot_id(&self) -> u64 {
        self.slot
    }
    fn slot_info(&self) -> Result<SlotInfo> {
        self.enter("slot_info")?;
        Ok(slot_info())
    }
    fn token_info(&self) -> Result<TokenInfo> {
        self.enter("token_info")?;
        Ok(token_info(LABEL, 64))
    }
    fn mechanism_list(&self, out: Option<&mut [u64]>) -> Result<usize> {
        self.enter("mechanism_list")?;
        copy_out(&MECHANISMS, out)
    }
    fn mechanism_info(&self, _: u64) -> Result<MechanismInfo> {
        self.enter("mechanism_info")?;
        Ok(MechanismInfo::default())
    }
    /// As a token does: refused while the application has a session on
    /// it; every object goes.
    fn init_token(&self, _: Option<&[u8]>, _: &[u8; 32]) -> Result<()> {
        self.enter("init_token")?;
        let mut st = self.state();
        if !st.sessions.is_empty() {
            return Err(Error::Rv(Rv::SESSION_EXISTS));
        }
        st.objects.clear();
        st.user = None;
        Ok(())
    }
    fn open_session(&self, _: u64) -> Result<u64> {
        self.enter("open_session")?;
        let h = self.handle();
        self.state().sessions.insert(
            h,
            TokenSession {
                op: None,
                found: None,
            },
        );
        Ok(h)
    }
    fn close_session(&self, s: u64) -> Result<()> {
        self.session("close_session", s, |st, s| {
            st.sessions.remove(&s);
            st.objects.retain(|_, o| o.session != Some(s));
            if st.sessions.is_empty() {
                st.user = None;
            }
            Ok(())
        })
    }
    fn close_all_sessions(&self) -> Result<()> {
        self.enter("close_all_sessions")?;
        let mut st = self.state();
        st.sessions.clear();
        st.objects.retain(|_, o| o.session.is_none());
        st.user = None;
        Ok(())
    }
    fn session_info(&self, s: u64) -> Result<SessionInfo> {
        self.session("session_info", s, |st, _| {
            Ok(SessionInfo {
                slot: self.slot,
                state: if st.user.is_some() { 3 } else { 2 },
                flags: 6,
                device_error: 0,
            })
        })
    }
    fn init_pin(&self, s: u64, _: Option<&[u8]>) -> Result<()> {
        self.session("init_pin", s, |_, _| Ok(()))
    }
    fn set_pin(&self, s: u64, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()> {
        self.session("set_pin", s, |st, _| {
            if old.unwrap_or_default() != st.pin {
                return Err(Error::Rv(Rv::PIN_INCORRECT));
            }
            st.pin = new.unwrap_or_default().to_vec();
            Ok(())
        })
    }
    fn operation_state(&self, _: u64, _: Option<&mut [u8]>) -> Result<usize> {
        not_supported()
    }
    fn set_operation_state(&self, _: u64, _: &[u8], _: u64, _: u64) -> Result<()> {
        not_supported()
    }
    fn login(&self, s: u64, user: u64, pin: Option<&[u8]>) -> Result<()> {
        self.session("login", s, |st, _| {
            let pin = pin.unwrap_or_default();
            st.attempts.push(pin.to_vec());
            if st.user.is_some() {
                return Err(Error::Rv(Rv::USER_ALREADY_LOGGED_IN));
            }
            if pin != st.pin {
                return Err(Error::Rv(Rv::PIN_INCORRECT));
            }
            st.user = Some(user);
            Ok(())
        })
    }
    fn logout(&self, s: u64) -> Result<()> {
        self.session("logout", s, |st, _| match st.user.take() {
            Some(_) => Ok(()),
            None => Err(Error::Rv(Rv::USER_NOT_LOGGED_IN)),
        })
    }
    fn create_object(&self, s: u64, template: &[Attr<'_>]) -> Result<u64> {
        self.session("create_object", s, |st, s| {
            Ok(self.add_object(st, s, template))
        })
    }
    fn copy_object(&self, s: u64, object: u64, template: &[Attr<'_>]) -> Result<u64> {
        self.session("copy_object", s, |st, s| {
            let mut attrs = st
                .objects
                .get(&object)
                .ok_or(Error::Rv(Rv::OBJECT_HANDLE_INVALID))?
                .attrs
                .clone();
            for a in template {
                attrs.insert(a.ty, a.value.to_vec());
            }
            let all: Vec<Attr<'_>> = attrs
                .iter()
                .map(|(ty, value)| Attr { ty: *ty, value })
                .collect();
            Ok(self.add_object(st, s, &all))
        })
    }
    fn destroy_object(&self, s: u64, object: u64) -> Result<()> {
        self.session("destroy_object", s, |st, _| {
            st.objects
                .remove(&object)
                .map(|_| ())
                .ok_or(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
        })
    }
    fn object_size(&self, _: u64, _: u64) -> Result<u64> {
        not_supported()
    }
    fn get_attributes(&self, s: u64, object: u64, template: &mut [AttrOut<'_>]) -> Result<()> {
        self.session("get_attributes", s, |st, _| {
            let o = st
                .objects
                .get(&object)
                .ok_or(Error::Rv(Rv::OBJECT_HANDLE_INVALID))?;
            let mut rv = Rv::OK;
            for a in template.iter_mut() {
                a.len = None;
                let Some(v) = o.attrs.get(&a.ty) else {
                    rv = Rv::ATTRIBUTE_TYPE_INVALID;
                    continue;
                };
                match a.buf.as_deref_mut() {
                    None => a.len = Some(v.len()),
                    Some(b) if b.len() >= v.len() => {
                        b[..v.len()].copy_from_slice(v);
                        a.len = Some(v.len());
                    }
                    Some(_) => rv = Rv::BUFFER_TOO_SMALL,
                }
            }
            crate::error::check(rv)
        })
    }
    fn set_attributes(&self, s: u64, object: u64, template: &[Attr<'_>]) -> Result<()> {
        self.session("set_attributes", s, |st, _| {
            let o = st
                .objects
                .get_mut(&object)
                .ok_or(Error::Rv(Rv::OBJECT_HANDLE_INVALID))?;
            for a in template {
                o.attrs.insert(a.ty, a.value.to_vec());
            }
            Ok(())
        })
    }
    fn find_init(&self, s: u64, template: &[Attr<'_>]) -> Result<()> {
        self.session("find_init", s, |st, s| {
            // Session objects too: every session of the application sees
            // them, as PKCS#11 says.
            let found = st
                .objects
                .iter()
                .filter(|(_, o)| {
                    template
                        .iter()
                        .all(|a| o.attrs.get(&a.ty).map(Vec::as_slice) == Some(a.value))
                })
                .map(|(h, _)| *h)
                .collect();
            let session = st.session(s)?;
            if session.found.is_some() {
                return Err(Error::Rv(Rv::OPERATION_ACTIVE));
            }
            session.found = Some(found);
            Ok(())
        })
    }
    fn find(&self, s: u64, out: &mut [u64]) -> Result<usize> {
        self.session("find", s, |st, s| {
            let session = st.session(s)?;
            let found = session
                .found
                .as_mut()
                .ok_or(Error::Rv(Rv::OPERATION_NOT_INITIALIZED))?;
            let n = found.len().min(out.len());
            for (o, h) in out.iter_mut().zip(found.drain(..n)) {
                *o = h;
            }
            Ok(n)
        })
    }
    fn find_final(&self, s: u64) -> Result<()> {
        self.session("find_final", s, |st, s| {
            let session = st.session(s)?;
            session
                .found
                .take()
                .map(|_| ())
                .ok_or(Error::Rv(Rv::OPERATION_NOT_INITIALIZED))
        })
    }
    fn op_init(&self, s: u64, op: Op, mechanism: &Mechanism<'_>, key: u64) -> Result<()> {
        self.session("op_init", s, |st, s| {
            let wanted = match op {
                Op::Digest => mech::SHA256,
                Op::Encrypt | Op::Decrypt => mech::AES_ECB,
                Op::Sign | Op::Verify => mech::AES_MAC,
                _ => return Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED)),
            };
            if mechanism.ty != wanted {
                return Err(Error::Rv(Rv::MECHANISM_INVALID));
            }
            let key = if op == Op::Digest {
                Vec::new()
            } else {
                value_of(st, key)?
            };
            let session = st.session(s)?;
            if session.op.is_some() {
                return Err(Error::Rv(Rv::OPERATION_ACTIVE));
            }
            session.op = Some((op, key, Vec::new()));
            Ok(())
        })
    }
    fn op_single(&self, s: u64, op: Op, input: &[u8], out: Option<&mut [u8]>) -> Result<usize> {
        self.op_update(s, op, input, None)?;
        self.op_final(s, op, out)
    }
    fn op_update(&self, s: u64, op: Op, input: &[u8], out: Option<&mut [u8]>) -> Result<usize> {
        self.session("op_update", s, |st, s| {
            let session = st.session(s)?;
            let (kind, key, data) = session
                .op
                .as_mut()
                .filter(|(k, _, _)| *k == op)
                .ok_or(Error::Rv(Rv::OPERATION_NOT_INITIALIZED))?;
            if matches!(kind, Op::Encrypt | Op::Decrypt) {
                // A stream cipher: each part's output at once, keyed by the
                // position in the stream.
                let at = data.len();
                let stream: Vec<u8> = (0..input.len())
                    .map(|i| key.get((at + i) % key.len().max(1)).copied().unwrap_or(0))
                    .collect();
                let cipher: Vec<u8> = input.iter().zip(&stream).map(|(a, b)| a ^ b).collect();
                let n = output(&cipher, out)?;
                data.extend_from_slice(input);
                return Ok(n);
            }
            data.extend_from_slice(input);
            Ok(0)
        })
    }
    fn op_final(&self, s: u64, op: Op, out: Option<&mut [u8]>) -> Result<usize> {
        self.session("op_final", s, |st, s| {
            let session = st.session(s)?;
            let (kind, key, data) = session
                .op
                .as_ref()
                .filter(|(k, _, _)| *k == op)
                .ok_or(Error::Rv(Rv::OPERATION_NOT_INITIALIZED))?;
            let result = match kind {
                Op::Digest => fnv(&[data]).to_vec(),
                Op::Sign => fnv(&[key, data]).to_vec(),
                _ => Vec::new(),
            };
            // A length query, or a buffer too small, keeps the operation.
            let query = out.is_none();
            let n = output(&result, out)?;
            if !query {
                session.op = None;
            }
            Ok(n)
        })
    }
    fn verify(&self, s: u64, data: &[u8], signature: &[u8]) -> Result<()> {
        self.op_update(s, Op::Verify, data, None)?;
        self.verify_final(s, signature)
    }
    fn verify_final(&self, s: u64, signature: &[u8]) -> Result<()> {
        self.session("verify_final", s, |st, s| {
            let session = st.session(s)?;
            let (_, key, data) = session
                .op
                .take()
                .filter(|(k, _, _)| *k == Op::Verify)
                .ok_or(Error::Rv(Rv::OPERATION_NOT_INITIALIZED))?;
            match fnv(&[&key, &data]) == signature {
                true => Ok(()),
                false => Err(Error::Rv(Rv::SIGNATURE_INVALID)),
            }
        })
    }
    fn digest_key(&self, _: u64, _: u64) -> Result<()> {
        not_supported()
    }
    fn dual_update(&self, _: u64, _: DualOp, _: &[u8], _: Option<&mut [u8]>) -> Result<usize> {
        not_supported()
    }
    fn generate_key(
        &self,
        s: u64,
        mechanism: &Mechanism<'_>,
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.session("generate_key", s, |st, s| {
            if mechanism.ty != mech::AES_KEY_GEN {
                return Err(Error::Rv(Rv::MECHANISM_INVALID));
            }
            // A fresh value every time: a key generated again differs.
            let value = fnv(&[&self.handle().to_be_bytes(), &self.slot.to_be_bytes()]);
            let class = ulong_bytes(class::SECRET_KEY);
            let mut all: Vec<Attr<'_>> = std::vec![
                Attr {
                    ty: attr::CLASS,
                    value: &class,
                },
                Attr {
                    ty: attr::VALUE,
                    value: &value,
                },
            ];
            all.extend_from_slice(template);
            Ok(self.add_object(st, s, &all))
        })
    }
    fn generate_key_pair(
        &self,
        _: u64,
        _: &Mechanism<'_>,
        _: &[Attr<'_>],
        _: &[Attr<'_>],
    ) -> Result<(u64, u64)> {
        not_supported()
    }
    fn wrap_key(
        &self,
        _: u64,
        _: &Mechanism<'_>,
        _: u64,
        _: u64,
        _: Option<&mut [u8]>,
    ) -> Result<usize> {
        not_supported()
    }
    fn unwrap_key(
        &self,
        _: u64,
        _: &Mechanism<'_>,
        _: u64,
        _: &[u8],
        _: &[Attr<'_>],
    ) -> Result<u64> {
        not_supported()
    }
    fn derive_key(&self, _: u64, _: &Mechanism<'_>, _: u64, _: &[Attr<'_>]) -> Result<u64> {
        not_supported()
    }
    fn seed_random(&self, _: u64, _: &[u8]) -> Result<()> {
        not_supported()
    }
    fn generate_random(&self, s: u64, out: &mut [u8]) -> Result<()> {
        self.session("generate_random", s, |_, _| {
            out.fill(7);
            Ok(())
        })
    }
    fn function_status(&self, _: u64) -> Result<()> {
        Err(Error::Rv(Rv::FUNCTION_NOT_PARALLEL))
    }
    fn cancel_function(&self, _: u64) -> Result<()> {
        Err(Error::Rv(Rv::FUNCTION_NOT_PARALLEL))
    }
}

macro_rules! delegate_to_token {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty = $call:ident; )*) => {
        $(
            fn $name(&self $(, $arg: $ty)*) -> $ret {
                Token::$name(self $(, $arg)*)
            }
        )*
    };
}

/// A shared token is a member too, so that a test keeps a handle on it.
impl Member for std::sync::Arc<Token> {
    fn slot_id(&self) -> u64 {
        self.slot
    }
    crate::member_calls!(delegate_to_token);
}

/// A token's objects for the tests: an AES key (label `aes-key`, id 03)
/// whose value is 16 bytes of 0x5a, and a data object (label `note`).
pub fn objects() -> [&'static [(u64, &'static [u8])]; 2] {
    // CK_ULONG values in the platform's native layout, as tokens give them.
    const N: usize = core::mem::size_of::<core::ffi::c_ulong>();
    const SECRET: [u8; N] = (class::SECRET_KEY as core::ffi::c_ulong).to_ne_bytes();
    const DATA: [u8; N] = (class::DATA as core::ffi::c_ulong).to_ne_bytes();
    const AES: [u8; N] = (0x1f as core::ffi::c_ulong).to_ne_bytes();
    [
        &[
            (attr::CLASS, &SECRET),
            (attr::TOKEN, &[1]),
            (attr::KEY_TYPE, &AES),
            (attr::ID, &[3]),
            (attr::LABEL, b"aes-key"),
            (attr::VALUE, &[0x5a; 16]),
        ],
        &[
            (attr::CLASS, &DATA),
            (attr::TOKEN, &[1]),
            (attr::LABEL, b"note"),
        ],
    ]
}
