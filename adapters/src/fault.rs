//! The `fault` adapter: a member wrapper that fails on command, so that
//! failure paths can be tested deterministically with real members behind
//! it (smoltcp's fault injector, for PKCS#11).
//!
//! A plan is armed with [`FaultPlan::arm`] and fires once: after N calls, or
//! at the Nth call of one kind. From then on every call fails with the
//! chosen answer, as a dead HSM does, until [`FaultPlan::heal`]. An
//! unarmed plan costs one relaxed atomic load per call.
//!
//! `no_std`, no allocation: usable on a board too.

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

/// A member behind a fault plan.
#[derive(Debug)]
pub struct Faulty<M> {
    inner: M,
    plan: FaultPlan,
}

impl<M> Faulty<M> {
    /// `inner`, with an unarmed plan.
    pub const fn new(inner: M) -> Self {
        Faulty {
            inner,
            plan: FaultPlan::new(),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// The wrapped member.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

macro_rules! faulty {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty = $call:ident; )*) => {
        $(
            fn $name(&self $(, $arg: $ty)*) -> $ret {
                self.plan.check(Call::$call)?;
                self.inner.$name($($arg),*)
            }
        )*
    };
}

impl<M: Member> Member for Faulty<M> {
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
