//! The `fault` adapter: a member wrapper that fails on command, so that
//! failure paths can be tested deterministically with real members behind
//! it (smoltcp's fault injector, for PKCS#11).
//!
//! A plan is armed with [`FaultPlan::arm`] and fires once: after N calls, or
//! at the Nth call of one kind. From then on every call fails with the
//! chosen answer, as a dead HSM does, until [`FaultPlan::heal`]. An
//! unarmed plan costs one relaxed atomic load per call.
//!
//! A wrapper may also give its member a fixed capacity: a [`Service`] that
//! the call producing an operation's result goes through (see
//! [`Service`] for which calls those are). With [`Paced`] (std) the member
//! completes at most one operation per service time, in turn, as an HSM
//! that serves K operations per second does; benchmarks use it to
//! measure how throughput grows with members when the members, not the
//! machine's cores, are the limit. A stand-in for an HSM's capacity, not a
//! model of any HSM.
//!
//! `no_std`, no allocation: usable on a board too ([`Paced`] aside).

use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use p11ha_core::ck::Rv;
use p11ha_core::error::TransportError;
use p11ha_core::port::{
    Attr, AttrOut, DualOp, Mechanism, MechanismInfo, Member, Op, SessionInfo, SlotInfo, TokenInfo,
};
use p11ha_core::{Error, Result};

/// The kinds of member call a plan can name: one per [`Member`] method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Call {
    Any = 0,
    SlotInfo,
    TokenInfo,
    MechanismList,
    MechanismInfo,
    InitToken,
    OpenSession,
    CloseSession,
    SessionInfo,
    InitPin,
    SetPin,
    OperationState,
    SetOperationState,
    Login,
    Logout,
    CreateObject,
    CopyObject,
    DestroyObject,
    ObjectSize,
    GetAttributes,
    SetAttributes,
    FindInit,
    Find,
    FindFinal,
    OpInit,
    OpSingle,
    OpUpdate,
    OpFinal,
    Verify,
    VerifyFinal,
    DigestKey,
    DualUpdate,
    GenerateKey,
    GenerateKeyPair,
    WrapKey,
    UnwrapKey,
    DeriveKey,
    SeedRandom,
    GenerateRandom,
    FunctionStatus,
    CancelFunction,
    CloseAllSessions,
}

const CALLS: [(&str, Call); 42] = [
    ("any", Call::Any),
    ("slot_info", Call::SlotInfo),
    ("token_info", Call::TokenInfo),
    ("mechanism_list", Call::MechanismList),
    ("mechanism_info", Call::MechanismInfo),
    ("init_token", Call::InitToken),
    ("open_session", Call::OpenSession),
    ("close_session", Call::CloseSession),
    ("session_info", Call::SessionInfo),
    ("init_pin", Call::InitPin),
    ("set_pin", Call::SetPin),
    ("operation_state", Call::OperationState),
    ("set_operation_state", Call::SetOperationState),
    ("login", Call::Login),
    ("logout", Call::Logout),
    ("create_object", Call::CreateObject),
    ("copy_object", Call::CopyObject),
    ("destroy_object", Call::DestroyObject),
    ("object_size", Call::ObjectSize),
    ("get_attributes", Call::GetAttributes),
    ("set_attributes", Call::SetAttributes),
    ("find_init", Call::FindInit),
    ("find", Call::Find),
    ("find_final", Call::FindFinal),
    ("op_init", Call::OpInit),
    ("op_single", Call::OpSingle),
    ("op_update", Call::OpUpdate),
    ("op_final", Call::OpFinal),
    ("verify", Call::Verify),
    ("verify_final", Call::VerifyFinal),
    ("digest_key", Call::DigestKey),
    ("dual_update", Call::DualUpdate),
    ("generate_key", Call::GenerateKey),
    ("generate_key_pair", Call::GenerateKeyPair),
    ("wrap_key", Call::WrapKey),
    ("unwrap_key", Call::UnwrapKey),
    ("derive_key", Call::DeriveKey),
    ("seed_random", Call::SeedRandom),
    ("generate_random", Call::GenerateRandom),
    ("function_status", Call::FunctionStatus),
    ("cancel_function", Call::CancelFunction),
    ("close_all_sessions", Call::CloseAllSessions),
];

impl Call {
    /// The call named `name` (the [`Member`] method's name), or `any`.
    pub fn from_name(name: &str) -> Option<Call> {
        CALLS.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
    }
}

/// What a failing member answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A return value (`CKR_DEVICE_ERROR`, ...).
    Rv(Rv),
    /// The transport broke.
    Transport(TransportError),
}

impl Fault {
    /// As (kind, return value): kind 0 is a return value, 1..=3 a transport
    /// error. Two 32-bit words, since 32-bit boards have no 64-bit atomics.
    fn encode(self) -> (u8, u32) {
        match self {
            // Return values that matter fit 32 bits (CKR_VENDOR_DEFINED
            // included); command() refuses larger ones.
            Fault::Rv(rv) => (0, rv.0 as u32),
            Fault::Transport(TransportError::Disconnected) => (1, 0),
            Fault::Transport(TransportError::TimedOut) => (2, 0),
            Fault::Transport(TransportError::Protocol) => (3, 0),
        }
    }

    fn decode(kind: u8, rv: u32) -> Error {
        match kind {
            0 => Error::Rv(Rv(u64::from(rv))),
            1 => Error::Transport(TransportError::Disconnected),
            2 => Error::Transport(TransportError::TimedOut),
            _ => Error::Transport(TransportError::Protocol),
        }
    }
}

/// When a plan fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// At once: the member is down.
    Now,
    /// At the call after `n` more calls of any kind.
    AfterCalls(u32),
    /// At the `n`th (1-based) call of this kind from now.
    OnCall(Call, u32),
}

const OFF: u8 = 0;
const DOWN: u8 = 1;
const COUNTING: u8 = 2;

/// A member's fault plan. All atomics: armed from a test's thread while the
/// member serves others.
#[derive(Debug, Default)]
pub struct FaultPlan {
    state: AtomicU8,
    call: AtomicU8,
    countdown: AtomicU32,
    kind: AtomicU8,
    rv: AtomicU32,
    /// Calls failed since the plan fired.
    failed: AtomicU32,
}

impl FaultPlan {
    /// An unarmed plan.
    pub const fn new() -> Self {
        FaultPlan {
            state: AtomicU8::new(OFF),
            call: AtomicU8::new(0),
            countdown: AtomicU32::new(0),
            kind: AtomicU8::new(0),
            rv: AtomicU32::new(0),
            failed: AtomicU32::new(0),
        }
    }

    /// Arms the plan.
    pub fn arm(&self, trigger: Trigger, fault: Fault) {
        self.state.store(OFF, Ordering::SeqCst);
        let (kind, rv) = fault.encode();
        self.kind.store(kind, Ordering::SeqCst);
        self.rv.store(rv, Ordering::SeqCst);
        self.failed.store(0, Ordering::SeqCst);
        match trigger {
            Trigger::Now => self.state.store(DOWN, Ordering::SeqCst),
            Trigger::AfterCalls(n) => {
                self.call.store(Call::Any as u8, Ordering::SeqCst);
                self.countdown.store(n.saturating_add(1), Ordering::SeqCst);
                self.state.store(COUNTING, Ordering::SeqCst);
            }
            Trigger::OnCall(call, n) => {
                self.call.store(call as u8, Ordering::SeqCst);
                self.countdown.store(n.max(1), Ordering::SeqCst);
                self.state.store(COUNTING, Ordering::SeqCst);
            }
        }
    }

    /// Disarms the plan: the member answers normally again.
    pub fn heal(&self) {
        self.state.store(OFF, Ordering::SeqCst);
    }

    /// Whether the plan has fired (and not been healed).
    pub fn is_down(&self) -> bool {
        self.state.load(Ordering::SeqCst) == DOWN
    }

    /// Calls failed since the plan fired.
    pub fn failed_calls(&self) -> u32 {
        self.failed.load(Ordering::SeqCst)
    }

    fn check(&self, call: Call) -> Result<()> {
        match self.state.load(Ordering::Relaxed) {
            OFF => return Ok(()),
            COUNTING => {
                let named = self.call.load(Ordering::SeqCst);
                if named != Call::Any as u8 && named != call as u8 {
                    return Ok(());
                }
                if self.countdown.fetch_sub(1, Ordering::SeqCst) != 1 {
                    return Ok(());
                }
                self.state.store(DOWN, Ordering::SeqCst);
            }
            _ => {}
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        Err(Fault::decode(
            self.kind.load(Ordering::SeqCst),
            self.rv.load(Ordering::SeqCst),
        ))
    }

    /// Arms the plan from a text command, for test harnesses that reach the
    /// library only through its C ABI:
    /// `heal` | `down[:FAULT]` | `after:N[:FAULT]` | `on:CALL[:N[:FAULT]]`,
    /// where FAULT is a `CKR_*` value (decimal or `0x` hex) or `transport`
    /// or `timeout` (default `CKR_DEVICE_ERROR`), CALL a [`Member`] method
    /// name. [`BadCommand`] for anything else, with the plan unchanged.
    pub fn command(&self, text: &str) -> core::result::Result<(), BadCommand> {
        let mut parts = text.trim().split(':');
        let verb = parts.next().ok_or(BadCommand)?;
        let mut args: [&str; 3] = [""; 3];
        let mut n = 0;
        for p in parts {
            *args.get_mut(n).ok_or(BadCommand)? = p;
            n += 1;
        }
        let fault = |s: &str| -> core::result::Result<Fault, BadCommand> {
            match s {
                "" => Ok(Fault::Rv(Rv::DEVICE_ERROR)),
                "transport" => Ok(Fault::Transport(TransportError::Disconnected)),
                "timeout" => Ok(Fault::Transport(TransportError::TimedOut)),
                s => parse_number(s).map(|v| Fault::Rv(Rv(u64::from(v)))),
            }
        };
        match (verb, n) {
            ("heal", 0) => self.heal(),
            ("down", 0 | 1) => self.arm(Trigger::Now, fault(args[0])?),
            ("after", 1 | 2) => {
                self.arm(Trigger::AfterCalls(parse_number(args[0])?), fault(args[1])?)
            }
            ("on", 1..=3) => {
                let call = Call::from_name(args[0]).ok_or(BadCommand)?;
                let count = if n >= 2 { parse_number(args[1])? } else { 1 };
                let f = fault(if n == 3 { args[2] } else { "" })?;
                self.arm(Trigger::OnCall(call, count), f)
            }
            _ => return Err(BadCommand),
        }
        Ok(())
    }
}

/// A fault command that is not in the grammar of [`FaultPlan::command`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadCommand;

fn parse_number(s: &str) -> core::result::Result<u32, BadCommand> {
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).map_err(|_| BadCommand),
        None => s.parse().map_err(|_| BadCommand),
    }
}

/// How a member serves the work of its operations.
///
/// The work of an operation is counted once, in the call that produces its
/// result: `op_single` and `op_final` with an output buffer (a length query
/// is no work), `verify` and `verify_final`. Init and Update calls, session
/// and object management pass straight through.
pub trait Service {
    /// Runs `work`, one operation's call into the member.
    fn serve<T>(&self, work: impl FnOnce() -> T) -> T;
}

/// Serves every operation at once: no capacity of its own beyond the
/// member's (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct AtOnce;

impl Service for AtOnce {
    fn serve<T>(&self, work: impl FnOnce() -> T) -> T {
        work()
    }
}

/// A member of fixed capacity: it serves one operation per service time,
/// in the order they come. Each operation is given the next turn free on
/// the member's timeline (now, if it is idle) and its call returns no
/// sooner than the end of that turn, so that the member completes at most
/// one operation per service time however many threads wait and however
/// late the scheduler wakes them (a thread woken late does not delay the
/// next turn). The call into the wrapped member is made at once; its time
/// is part of the turn. A service time of 0, the default, serves at once.
#[cfg(feature = "std")]
#[derive(Debug, Default)]
pub struct Paced {
    service_us: AtomicU32,
    /// When the last turn given out ends.
    free_at: std::sync::Mutex<Option<std::time::Instant>>,
}

#[cfg(feature = "std")]
impl Paced {
    /// No service time.
    pub const fn new() -> Self {
        Paced {
            service_us: AtomicU32::new(0),
            free_at: std::sync::Mutex::new(None),
        }
    }

    /// Sets the service time of each operation, in microseconds (0: none).
    pub fn set_service_us(&self, us: u32) {
        self.service_us.store(us, Ordering::Relaxed);
    }

    /// The service time of each operation, in microseconds.
    pub fn service_us(&self) -> u32 {
        self.service_us.load(Ordering::Relaxed)
    }

    /// The end of the turn of an operation that arrives at `now`: a
    /// service time after the later of `now` and the end of the last turn.
    fn turn(
        free_at: &mut Option<std::time::Instant>,
        now: std::time::Instant,
        service: std::time::Duration,
    ) -> std::time::Instant {
        let start = free_at.map_or(now, |f| f.max(now));
        let end = start + service;
        *free_at = Some(end);
        end
    }
}

#[cfg(feature = "std")]
impl Service for Paced {
    fn serve<T>(&self, work: impl FnOnce() -> T) -> T {
        let us = self.service_us();
        if us == 0 {
            return work();
        }
        let service = std::time::Duration::from_micros(u64::from(us));
        let end = {
            // A poisoned lock only means a caller panicked while taking a
            // turn: the timeline is still whole.
            let mut free_at = self
                .free_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Self::turn(&mut free_at, std::time::Instant::now(), service)
        };
        let r = work();
        let left = end.saturating_duration_since(std::time::Instant::now());
        if !left.is_zero() {
            std::thread::sleep(left);
        }
        r
    }
}

/// A member behind a fault plan, served through `S`.
#[derive(Debug)]
pub struct Faulty<M, S = AtOnce> {
    inner: M,
    plan: FaultPlan,
    service: S,
    /// A mechanism the member pretends not to have, plus one (0: none).
    hidden: AtomicU32,
}

impl<M> Faulty<M> {
    /// `inner`, with an unarmed plan, serving at once.
    pub const fn new(inner: M) -> Self {
        Faulty {
            inner,
            plan: FaultPlan::new(),
            service: AtOnce,
            hidden: AtomicU32::new(0),
        }
    }
}

impl<M, S> Faulty<M, S> {
    /// `inner`, with an unarmed plan, serving its operations through
    /// `service`.
    pub const fn with_service(inner: M, service: S) -> Self {
        Faulty {
            inner,
            plan: FaultPlan::new(),
            service,
            hidden: AtomicU32::new(0),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// How it serves its operations.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The wrapped member.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// Makes the member pretend it lacks `mechanism` (`None`: lack
    /// nothing): it leaves it out of its mechanism list, and answers
    /// `CKR_MECHANISM_INVALID` to its `C_GetMechanismInfo` and to every
    /// call that would use it. A mock, for tests of members that differ
    /// (the members of one slot are usually the same HSM model). Set it
    /// before the member joins: p11ha learns a member's mechanisms then.
    /// Mechanisms of 32 bits or more cannot be hidden.
    pub fn hide_mechanism(&self, mechanism: Option<u32>) {
        let v = mechanism.and_then(|m| m.checked_add(1)).unwrap_or(0);
        self.hidden.store(v, Ordering::SeqCst);
    }

    fn hidden(&self) -> Option<u64> {
        match self.hidden.load(Ordering::Relaxed) {
            0 => None,
            v => Some(u64::from(v - 1)),
        }
    }

    /// `CKR_MECHANISM_INVALID` for the hidden mechanism.
    fn refuse_hidden(&self, mechanism: u64) -> Result<()> {
        if self.hidden() == Some(mechanism) {
            return Err(Error::Rv(Rv::MECHANISM_INVALID));
        }
        Ok(())
    }
}

impl<M: Member, S> Faulty<M, S> {
    /// The member's mechanism list without the hidden one. A length query
    /// answers the member's own count, one more than the list then holds,
    /// which PKCS#11 allows of a length query.
    fn listed(&self, out: Option<&mut [u64]>) -> Result<usize> {
        let Some(hidden) = self.hidden() else {
            return self.inner.mechanism_list(out);
        };
        let Some(out) = out else {
            return self.inner.mechanism_list(None);
        };
        let n = self.inner.mechanism_list(Some(&mut *out))?;
        let mut kept = 0;
        for i in 0..n {
            if out[i] != hidden {
                out[kept] = out[i];
                kept += 1;
            }
        }
        Ok(kept)
    }
}

macro_rules! faulty {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty = $call:ident; )*) => {
        $(
            fn $name(&self $(, $arg: $ty)*) -> $ret {
                self.plan.check(Call::$call)?;
                faulty!(@call self, $name, $($arg),*)
            }
        )*
    };
    // The calls that produce an operation's result (see `Service`).
    (@call $s:ident, op_single, $session:ident, $op:ident, $input:ident, $out:ident) => {
        match $out {
            Some(out) => $s.service.serve(|| $s.inner.op_single($session, $op, $input, Some(out))),
            None => $s.inner.op_single($session, $op, $input, None),
        }
    };
    (@call $s:ident, op_final, $session:ident, $op:ident, $out:ident) => {
        match $out {
            Some(out) => $s.service.serve(|| $s.inner.op_final($session, $op, Some(out))),
            None => $s.inner.op_final($session, $op, None),
        }
    };
    (@call $s:ident, verify, $($arg:ident),*) => {
        $s.service.serve(|| $s.inner.verify($($arg),*))
    };
    (@call $s:ident, verify_final, $($arg:ident),*) => {
        $s.service.serve(|| $s.inner.verify_final($($arg),*))
    };
    // A hidden mechanism (see `Faulty::hide_mechanism`).
    (@call $s:ident, mechanism_list, $out:ident) => {
        $s.listed($out)
    };
    (@call $s:ident, mechanism_info, $mechanism:ident) => {{
        $s.refuse_hidden($mechanism)?;
        $s.inner.mechanism_info($mechanism)
    }};
    (@call $s:ident, op_init, $session:ident, $op:ident, $mechanism:ident, $key:ident) => {{
        $s.refuse_hidden($mechanism.ty)?;
        $s.inner.op_init($session, $op, $mechanism, $key)
    }};
    (@call $s:ident, generate_key, $session:ident, $mechanism:ident, $($arg:ident),*) => {{
        $s.refuse_hidden($mechanism.ty)?;
        $s.inner.generate_key($session, $mechanism, $($arg),*)
    }};
    (@call $s:ident, generate_key_pair, $session:ident, $mechanism:ident, $($arg:ident),*) => {{
        $s.refuse_hidden($mechanism.ty)?;
        $s.inner.generate_key_pair($session, $mechanism, $($arg),*)
    }};
    (@call $s:ident, wrap_key, $session:ident, $mechanism:ident, $($arg:ident),*) => {{
        $s.refuse_hidden($mechanism.ty)?;
        $s.inner.wrap_key($session, $mechanism, $($arg),*)
    }};
    (@call $s:ident, unwrap_key, $session:ident, $mechanism:ident, $($arg:ident),*) => {{
        $s.refuse_hidden($mechanism.ty)?;
        $s.inner.unwrap_key($session, $mechanism, $($arg),*)
    }};
    (@call $s:ident, derive_key, $session:ident, $mechanism:ident, $($arg:ident),*) => {{
        $s.refuse_hidden($mechanism.ty)?;
        $s.inner.derive_key($session, $mechanism, $($arg),*)
    }};
    (@call $s:ident, $name:ident, $($arg:ident),*) => {
        $s.inner.$name($($arg),*)
    };
}

impl<M: Member, S: Service + Send + Sync + 'static> Member for Faulty<M, S> {
    fn slot_id(&self) -> u64 {
        self.inner.slot_id()
    }

    p11ha_core::member_calls!(faulty);

    fn reconnect(&self) -> Result<()> {
        self.inner.reconnect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;
    use p11ha_core::ck::mech;
    use p11ha_core::port::Param;
    use p11ha_core::testing::Token;

    /// Counts the operations served.
    #[derive(Default)]
    struct Counting {
        served: AtomicUsize,
    }

    impl Service for Counting {
        fn serve<T>(&self, work: impl FnOnce() -> T) -> T {
            self.served.fetch_add(1, Ordering::SeqCst);
            work()
        }
    }

    #[test]
    fn an_operation_is_served_once_in_the_call_that_gives_its_result() {
        let m = Faulty::with_service(Token::new(1, &[]), Counting::default());
        let served = || m.service().served.load(Ordering::SeqCst);
        let s = m.open_session(0x6).unwrap();
        let sha = Mechanism {
            ty: mech::SHA256,
            param: Param::None,
        };
        m.op_init(s, Op::Digest, &sha, 0).unwrap();
        let n = m.op_single(s, Op::Digest, b"abc", None).unwrap();
        assert_eq!(served(), 0, "a length query is no work");
        let mut out = [0u8; 64];
        m.op_single(s, Op::Digest, b"abc", Some(&mut out[..n]))
            .unwrap();
        assert_eq!(served(), 1);
        m.op_init(s, Op::Digest, &sha, 0).unwrap();
        m.op_update(s, Op::Digest, b"ab", None).unwrap();
        m.op_update(s, Op::Digest, b"c", None).unwrap();
        assert_eq!(m.op_final(s, Op::Digest, None), Ok(n));
        assert_eq!(served(), 1, "Init, Update and length queries pass through");
        m.op_final(s, Op::Digest, Some(&mut out[..n])).unwrap();
        assert_eq!(served(), 2);
        // A failing plan answers before the member is served.
        m.plan().arm(Trigger::Now, Fault::Rv(Rv::DEVICE_ERROR));
        assert!(m.op_final(s, Op::Digest, Some(&mut out[..n])).is_err());
        assert_eq!(served(), 2);
    }

    #[cfg(feature = "std")]
    #[test]
    fn a_paced_member_gives_one_turn_per_service_time() {
        use std::time::{Duration, Instant};
        let paced = Paced::new();
        assert_eq!(paced.serve(|| 7), 7, "no service time: served at once");
        paced.set_service_us(2000);
        assert_eq!(paced.service_us(), 2000);
        assert_eq!(paced.serve(|| 8), 8);
        // The timeline, without a clock: three arrive together and take
        // consecutive turns; one that comes when the member is idle starts
        // at once.
        let t = Duration::from_millis(2);
        let now = Instant::now();
        let mut free_at = None;
        assert_eq!(Paced::turn(&mut free_at, now, t), now + t);
        assert_eq!(Paced::turn(&mut free_at, now, t), now + 2 * t);
        let soon = now + Duration::from_millis(1);
        assert_eq!(Paced::turn(&mut free_at, soon, t), now + 3 * t);
        let later = now + Duration::from_secs(1);
        assert_eq!(Paced::turn(&mut free_at, later, t), later + t);
    }

    #[test]
    fn plans_fire_once_and_stay_down_until_healed() {
        let p = FaultPlan::new();
        assert!(p.check(Call::Login).is_ok());
        p.arm(Trigger::AfterCalls(2), Fault::Rv(Rv::DEVICE_ERROR));
        assert!(p.check(Call::Login).is_ok());
        assert!(p.check(Call::Find).is_ok());
        assert_eq!(p.check(Call::Find), Err(Error::Rv(Rv::DEVICE_ERROR)));
        assert_eq!(p.check(Call::Login), Err(Error::Rv(Rv::DEVICE_ERROR)));
        assert_eq!(p.failed_calls(), 2);
        p.heal();
        assert!(p.check(Call::Login).is_ok());
        p.arm(
            Trigger::OnCall(Call::OpFinal, 2),
            Fault::Transport(TransportError::TimedOut),
        );
        assert!(p.check(Call::OpFinal).is_ok());
        assert!(p.check(Call::OpUpdate).is_ok());
        assert_eq!(
            p.check(Call::OpFinal),
            Err(Error::Transport(TransportError::TimedOut))
        );
        assert!(p.is_down());
    }

    #[test]
    fn commands_parse_or_are_refused() {
        let p = FaultPlan::new();
        assert_eq!(p.command("down"), Ok(()));
        assert_eq!(p.check(Call::Any), Err(Error::Rv(Rv::DEVICE_ERROR)));
        assert_eq!(p.command("heal"), Ok(()));
        assert_eq!(p.command("on:op_final:1:0x5"), Ok(()));
        assert!(p.check(Call::OpUpdate).is_ok());
        assert_eq!(p.check(Call::OpFinal), Err(Error::Rv(Rv::GENERAL_ERROR)));
        assert_eq!(p.command("on:op_update:3:transport"), Ok(()));
        assert!(p.check(Call::OpUpdate).is_ok() && p.check(Call::OpUpdate).is_ok());
        assert_eq!(
            p.check(Call::OpUpdate),
            Err(Error::Transport(TransportError::Disconnected))
        );
        assert_eq!(p.command("after:0"), Ok(()));
        assert!(p.check(Call::Any).is_err());
        for bad in [
            "",
            "up",
            "on:nonsense",
            "after:x",
            "down:1:2",
            "on:find:1:2:3",
        ] {
            assert_eq!(p.command(bad), Err(BadCommand), "{bad}");
        }
    }
}
