//! The kept PIN at the engine level: it is kept only while the application
//! is logged in on the slot, zeroised at each way the login ends (C_Logout,
//! the last session closed, C_CloseAllSessions, C_Finalize), and a failed
//! C_Login is never tried on another member, then or at a failover.
//!
//! The members are scripted tokens that record every login attempt, so the
//! tests see what reached each member; the PIN buffer itself is read
//! through the test-only [`Pin::is_zeroised`].

extern crate std;

use std::boxed::Box;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::vec;
use std::vec::Vec;

use super::*;
use crate::ck::user;
use crate::config::{Config, Mode, WldSlot, label};
use crate::event::Event;
use crate::handles::{IndexSlot, ObjectEntry};
use crate::journal::{Journal, Layout};
use crate::port::{
    Attr, AttrOut, Clock, DualOp, Events, Mechanism, MechanismInfo, Op, SessionInfo, SlotInfo,
    TokenInfo,
};
use crate::sync::SpinLock;

const PIN: &[u8] = b"p11ha-secret-PIN-7f3a";
const WRONG: &[u8] = b"p11ha-wrong-PIN-0b9e";
const NOT_SUPPORTED: Error = Error::Rv(Rv::FUNCTION_NOT_SUPPORTED);

/// What a scripted token does: the calls the engine needs here, and
/// `CKR_FUNCTION_NOT_SUPPORTED` for the rest (the defaults below).
macro_rules! stub {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty = $call:ident; )*) => {
        trait Stub {
            $(
                #[allow(unused_variables)]
                fn $name(&self $(, $arg: $ty)*) -> $ret {
                    Err(NOT_SUPPORTED)
                }
            )*
        }
    };
}
crate::member_calls!(stub);

macro_rules! delegate {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty = $call:ident; )*) => {
        $(
            fn $name(&self $(, $arg: $ty)*) -> $ret {
                <Token as Stub>::$name(&**self $(, $arg)*)
            }
        )*
    };
}

/// A token labelled "TokName" whose user PIN is [`PIN`].
struct Token {
    slot: u64,
    next: AtomicU64,
    /// Open sessions.
    sessions: StdMutex<Vec<u64>>,
    /// Every PIN a C_Login brought, in order.
    attempts: StdMutex<Vec<Vec<u8>>>,
    /// Logged in (a token's login is shared by all its sessions).
    logged_in: AtomicBool,
    /// Answers `CKR_DEVICE_ERROR` to everything.
    dead: AtomicBool,
}

impl Token {
    fn new(slot: u64) -> Self {
        Token {
            slot,
            next: AtomicU64::new(slot * 100 + 1),
            sessions: StdMutex::new(Vec::new()),
            attempts: StdMutex::new(Vec::new()),
            logged_in: AtomicBool::new(false),
            dead: AtomicBool::new(false),
        }
    }

    fn alive(&self) -> Result<()> {
        match self.dead.load(Ordering::SeqCst) {
            true => Err(Error::Rv(Rv::DEVICE_ERROR)),
            false => Ok(()),
        }
    }

    fn has(&self, s: u64) -> Result<()> {
        self.alive()?;
        match self.sessions.lock().unwrap().contains(&s) {
            true => Ok(()),
            false => Err(Error::Rv(Rv::SESSION_HANDLE_INVALID)),
        }
    }

    fn attempts(&self) -> Vec<Vec<u8>> {
        self.attempts.lock().unwrap().clone()
    }
}

impl Stub for Token {
    fn slot_info(&self) -> Result<SlotInfo> {
        Ok(SlotInfo {
            description: [b' '; 64],
            manufacturer: [b' '; 32],
            flags: 1,
            hardware_version: Default::default(),
            firmware_version: Default::default(),
        })
    }
    fn token_info(&self) -> Result<TokenInfo> {
        self.alive()?;
        Ok(TokenInfo {
            label: label("TokName").unwrap(),
            manufacturer: [b' '; 32],
            model: [b' '; 16],
            serial: [b' '; 16],
            flags: 0,
            max_session_count: 0,
            session_count: 0,
            max_rw_session_count: 0,
            rw_session_count: 0,
            max_pin_len: 64,
            min_pin_len: 4,
            total_public_memory: 0,
            free_public_memory: 0,
            total_private_memory: 0,
            free_private_memory: 0,
            hardware_version: Default::default(),
            firmware_version: Default::default(),
            utc_time: [b' '; 16],
        })
    }
    fn mechanism_list(&self, out: Option<&mut [u64]>) -> Result<usize> {
        copy_out(&[], out)
    }
    fn mechanism_info(&self, _: u64) -> Result<MechanismInfo> {
        Ok(MechanismInfo::default())
    }
    fn open_session(&self, _: u64) -> Result<u64> {
        self.alive()?;
        let h = self.next.fetch_add(1, Ordering::SeqCst);
        self.sessions.lock().unwrap().push(h);
        Ok(h)
    }
    fn close_session(&self, s: u64) -> Result<()> {
        self.has(s)?;
        let mut sessions = self.sessions.lock().unwrap();
        sessions.retain(|&x| x != s);
        if sessions.is_empty() {
            self.logged_in.store(false, Ordering::SeqCst);
        }
        Ok(())
    }
    fn session_info(&self, s: u64) -> Result<SessionInfo> {
        self.has(s)?;
        let user = self.logged_in.load(Ordering::SeqCst);
        Ok(SessionInfo {
            slot: self.slot,
            state: if user { 3 } else { 2 },
            flags: 6,
            device_error: 0,
        })
    }
    fn set_pin(&self, s: u64, _: Option<&[u8]>, _: Option<&[u8]>) -> Result<()> {
        self.has(s)
    }
    fn login(&self, s: u64, _: u64, pin: Option<&[u8]>) -> Result<()> {
        self.has(s)?;
        let pin = pin.unwrap_or_default();
        self.attempts.lock().unwrap().push(pin.to_vec());
        if self.logged_in.load(Ordering::SeqCst) {
            return Err(Error::Rv(Rv::USER_ALREADY_LOGGED_IN));
        }
        if pin != PIN {
            return Err(Error::Rv(Rv::PIN_INCORRECT));
        }
        self.logged_in.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn logout(&self, s: u64) -> Result<()> {
        self.has(s)?;
        match self.logged_in.swap(false, Ordering::SeqCst) {
            true => Ok(()),
            false => Err(Error::Rv(Rv::USER_NOT_LOGGED_IN)),
        }
    }
    fn generate_random(&self, s: u64, out: &mut [u8]) -> Result<()> {
        self.has(s)?;
        out.fill(7);
        Ok(())
    }
}

impl Member for Arc<Token> {
    fn slot_id(&self) -> u64 {
        self.slot
    }
    crate::member_calls!(delegate);
}

struct Nothing;
impl Events for Nothing {
    fn event(&self, _: &Event<'_>) {}
}
impl Clock for Nothing {
    fn now_ms(&self) -> u64 {
        0
    }
}

struct Test;
impl Platform for Test {
    type Member = Arc<Token>;
    type Lock = SpinLock;
    type Events = Nothing;
    type Clock = Nothing;
    type Journal = Box<[u8]>;
    type Store<T: Send + Sync + 'static> = Box<[T]>;
}

/// An HA engine with two tokens in virtual slot 0.
fn engine() -> (Engine<Test>, [Arc<Token>; 2]) {
    let mut config = Config {
        mode: Mode::Ha,
        ..Config::default()
    };
    config.recover_delay_ms = Some(0);
    let _ = config.wld_slots.push(WldSlot {
        id: 0,
        label: label("TokName").unwrap(),
    });
    let layout = Layout::HOST;
    let storage = Storage::<Test> {
        members: (0..2).map(|_| MemberSlot::new()).collect(),
        slots: (0..1).map(|_| SlotSlot::new(SpinLock::new())).collect(),
        sessions: (0..4)
            .map(|_| {
                let buf = vec![0u8; layout.fixed() + 1024].into_boxed_slice();
                SessionSlot::new(SpinLock::new(), Journal::new(buf, layout, 1024))
            })
            .collect(),
        objects: (0..4).map(|_| ObjectEntry::default()).collect(),
        object_index: (0..8).map(|_| IndexSlot::default()).collect(),
    };
    let e = Engine::new(config, storage, Nothing, Nothing, 1).unwrap();
    // Shared with the engine, so that the tests see what reached each
    // member (and freed with the last of the two, which miri checks).
    let tokens = [Arc::new(Token::new(1)), Arc::new(Token::new(2))];
    for t in &tokens {
        assert!(e.add_member(Arc::clone(t)).unwrap().is_some());
    }
    (e, tokens)
}

/// The PIN the engine keeps for slot 0: `Some` while it holds one, `None`
/// once its buffer is all zeros and empty.
fn kept(e: &Engine<Test>) -> Option<Vec<u8>> {
    let login = e.slots[0].login.lock();
    if login.pin.is_zeroised() {
        assert!(login.user.is_none(), "logged in with no PIN kept");
        None
    } else {
        Some(login.pin.get().to_vec())
    }
}

fn logged_in_session(e: &Engine<Test>) -> u64 {
    let s = e.open_session(0, 6).unwrap();
    e.login(s, user::USER, Some(PIN)).unwrap();
    assert_eq!(kept(e).as_deref(), Some(PIN));
    s
}

#[test]
fn the_pin_is_zeroised_at_logout() {
    let (e, tokens) = engine();
    let s = logged_in_session(&e);
    e.logout(s).unwrap();
    assert_eq!(kept(&e), None);
    // The members are logged out too.
    assert!(tokens.iter().all(|t| !t.logged_in.load(Ordering::SeqCst)));
    assert_eq!(e.session_info(s).unwrap().state, 2);
}

#[test]
fn the_pin_is_zeroised_when_the_last_session_closes() {
    let (e, _) = engine();
    let s = logged_in_session(&e);
    let other = e.open_session(0, 6).unwrap();
    e.close_session(s).unwrap();
    // Another session is open: the application is still logged in.
    assert_eq!(kept(&e).as_deref(), Some(PIN));
    e.close_session(other).unwrap();
    assert_eq!(kept(&e), None);
}

#[test]
fn the_pin_is_zeroised_at_close_all_sessions() {
    let (e, _) = engine();
    logged_in_session(&e);
    e.open_session(0, 6).unwrap();
    e.close_all_sessions(0).unwrap();
    assert_eq!(kept(&e), None);
}

#[test]
fn the_pin_is_zeroised_at_finalize() {
    let (e, _) = engine();
    logged_in_session(&e);
    e.close_everything();
    assert_eq!(kept(&e), None);
    // Even a login that no session holds (none should be) ends there.
    {
        let mut login = e.slots[0].login.lock();
        login.user = Some(user::USER);
        assert!(login.pin.set(PIN));
    }
    e.close_everything();
    assert_eq!(kept(&e), None);
}

#[test]
fn the_pin_follows_set_pin_and_dies_with_the_login() {
    let (e, _) = engine();
    let s = logged_in_session(&e);
    e.set_pin(s, Some(PIN), Some(b"another-PIN")).unwrap();
    assert_eq!(kept(&e).as_deref(), Some(&b"another-PIN"[..]));
    e.logout(s).unwrap();
    assert_eq!(kept(&e), None);
    // Not logged in: a C_SetPIN keeps nothing.
    e.set_pin(s, Some(b"another-PIN"), Some(PIN)).unwrap();
    assert_eq!(kept(&e), None);
}

#[test]
fn the_so_pin_follows_set_pin_too() {
    let (e, _) = engine();
    let s = e.open_session(0, 6).unwrap();
    e.login(s, user::SO, Some(PIN)).unwrap();
    e.set_pin(s, Some(PIN), Some(b"a-new-SO-PIN")).unwrap();
    assert_eq!(kept(&e).as_deref(), Some(&b"a-new-SO-PIN"[..]));
    e.close_session(s).unwrap();
    assert_eq!(kept(&e), None);
}

#[test]
fn a_failed_login_is_kept_nowhere_and_never_replayed() {
    let (e, tokens) = engine();
    let s = e.open_session(0, 6).unwrap();
    let own = e.session(s).map(|(_, g)| g.member).unwrap();
    let other = 1 - own;
    assert_eq!(
        e.login(s, user::USER, Some(WRONG)),
        Err(Error::Rv(Rv::PIN_INCORRECT))
    );
    assert_eq!(kept(&e), None);
    assert_eq!(tokens[own].attempts(), [WRONG]);
    assert!(tokens[other].attempts().is_empty());

    // The session's member fails: the session moves, not logged in, and
    // the other member has still seen no login at all.
    tokens[own].dead.store(true, Ordering::SeqCst);
    let mut random = [0u8; 4];
    e.generate_random(s, &mut random).unwrap();
    assert_eq!(e.session(s).map(|(_, g)| g.member).unwrap(), other);
    assert_eq!(e.session_info(s).unwrap().state, 2);
    assert!(tokens[other].attempts().is_empty());
    assert_eq!(kept(&e), None);

    // The right PIN goes to the member in service only.
    e.login(s, user::USER, Some(PIN)).unwrap();
    assert_eq!(tokens[other].attempts(), [PIN]);
    assert_eq!(tokens[own].attempts(), [WRONG]);
}
