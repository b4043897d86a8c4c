//! SignRecover and VerifyRecover replayed across a failover, at the engine
//! level, against a *software member*: SoftHSM 2.6.1 answers
//! `CKR_FUNCTION_NOT_SUPPORTED` to `C_SignRecoverInit` and
//! `C_VerifyRecoverInit`, so no real member here can show these two
//! operation kinds. The software member is a minimal token with one secret
//! key and a toy recoverable signature (each byte XORed with the key's
//! byte); it numbers objects and sessions differently from the other
//! member, as two real HSMs do, so the handle mapping is exercised too.
//! Everything else about failover is tested through libp11ha.so against
//! SoftHSM (tests/tests/ha*.rs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use p11ha_adapters::fault::Faulty;
use p11ha_core::ck::{Rv, attr, class};
use p11ha_core::ck::{copy_out, ulong_bytes};
use p11ha_core::config::{Config, Mode, WldSlots};
use p11ha_core::engine::Capacity;
use p11ha_core::journal::Layout;
use p11ha_core::port::{
    Attr, AttrOut, DualOp, Mechanism, MechanismInfo, Member, Op, Param, SessionInfo, SlotInfo,
    TokenInfo,
};
use p11ha_core::testing::{self, ManualClock, Recorder, Testbed};
use p11ha_core::{Engine, Error, Result};

/// A vendor mechanism: the toy recoverable signature.
const TOY: u64 = 0x8000_1234;
const KEY_BYTE: u8 = 0x5A;
const NOT_SUPPORTED: Error = Error::Rv(Rv::FUNCTION_NOT_SUPPORTED);

#[derive(Default)]
struct SoftSession {
    op: Option<Op>,
    find: Option<bool>,
}

/// A software token: one secret key, labelled "toy", id 01.
struct SoftMember {
    slot: u64,
    key: u64,
    next: AtomicU64,
    sessions: Mutex<HashMap<u64, SoftSession>>,
}

impl SoftMember {
    fn new(slot: u64, key: u64) -> Self {
        SoftMember {
            slot,
            key,
            next: AtomicU64::new(slot * 100),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, s: u64, f: impl FnOnce(&mut SoftSession) -> Result<T>) -> Result<T> {
        let mut sessions = self.sessions.lock().unwrap();
        let s = sessions
            .get_mut(&s)
            .ok_or(Error::Rv(Rv::SESSION_HANDLE_INVALID))?;
        f(s)
    }
}

impl Member for SoftMember {
    fn slot_id(&self) -> u64 {
        self.slot
    }
    fn slot_info(&self) -> Result<SlotInfo> {
        Ok(testing::slot_info())
    }
    fn token_info(&self) -> Result<TokenInfo> {
        Ok(testing::token_info("TokName", 8))
    }
    fn mechanism_list(&self, out: Option<&mut [u64]>) -> Result<usize> {
        copy_out(&[TOY], out)
    }
    fn mechanism_info(&self, _: u64) -> Result<MechanismInfo> {
        Ok(MechanismInfo::default())
    }
    fn init_token(&self, _: Option<&[u8]>, _: &[u8; 32]) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn open_session(&self, _: u64) -> Result<u64> {
        let h = self.next.fetch_add(1, Ordering::SeqCst);
        self.sessions
            .lock()
            .unwrap()
            .insert(h, SoftSession::default());
        Ok(h)
    }
    fn close_session(&self, s: u64) -> Result<()> {
        self.sessions
            .lock()
            .unwrap()
            .remove(&s)
            .map(|_| ())
            .ok_or(Error::Rv(Rv::SESSION_HANDLE_INVALID))
    }
    fn session_info(&self, s: u64) -> Result<SessionInfo> {
        self.with(s, |_| {
            Ok(SessionInfo {
                slot: self.slot,
                state: 2,
                flags: 6,
                device_error: 0,
            })
        })
    }
    fn init_pin(&self, _: u64, _: Option<&[u8]>) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn set_pin(&self, _: u64, _: Option<&[u8]>, _: Option<&[u8]>) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn operation_state(&self, _: u64, _: Option<&mut [u8]>) -> Result<usize> {
        Err(NOT_SUPPORTED)
    }
    fn set_operation_state(&self, _: u64, _: &[u8], _: u64, _: u64) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn login(&self, s: u64, _: u64, pin: Option<&[u8]>) -> Result<()> {
        self.with(s, |_| match pin {
            Some(b"1234") => Ok(()),
            _ => Err(Error::Rv(Rv::PIN_INCORRECT)),
        })
    }
    fn logout(&self, _: u64) -> Result<()> {
        Ok(())
    }
    fn create_object(&self, _: u64, _: &[Attr<'_>]) -> Result<u64> {
        Err(NOT_SUPPORTED)
    }
    fn copy_object(&self, _: u64, _: u64, _: &[Attr<'_>]) -> Result<u64> {
        Err(NOT_SUPPORTED)
    }
    fn destroy_object(&self, _: u64, _: u64) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn object_size(&self, _: u64, _: u64) -> Result<u64> {
        Err(NOT_SUPPORTED)
    }
    fn get_attributes(&self, s: u64, o: u64, t: &mut [AttrOut<'_>]) -> Result<()> {
        self.with(s, |_| Ok(()))?;
        if o != self.key {
            return Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID));
        }
        let class = ulong_bytes(class::SECRET_KEY);
        let key_type = ulong_bytes(0x10);
        let mut rv = Ok(());
        for a in t.iter_mut() {
            let value: &[u8] = match a.ty {
                attr::CLASS => &class,
                attr::KEY_TYPE => &key_type,
                attr::TOKEN => &[1],
                attr::ID => &[1],
                attr::LABEL => b"toy",
                _ => {
                    a.len = None;
                    rv = Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID));
                    continue;
                }
            };
            a.len = Some(value.len());
            if let Some(buf) = a.buf.as_deref_mut() {
                buf[..value.len()].copy_from_slice(value);
            }
        }
        rv
    }
    fn set_attributes(&self, _: u64, _: u64, _: &[Attr<'_>]) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn find_init(&self, s: u64, t: &[Attr<'_>]) -> Result<()> {
        let matches = t.iter().all(|a| match a.ty {
            attr::LABEL => a.value == b"toy",
            attr::ID => a.value == [1],
            attr::CLASS => a.value == ulong_bytes(class::SECRET_KEY),
            _ => true,
        });
        self.with(s, |st| {
            st.find = Some(matches);
            Ok(())
        })
    }
    fn find(&self, s: u64, out: &mut [u64]) -> Result<usize> {
        self.with(s, |st| match st.find.take() {
            Some(true) if !out.is_empty() => {
                out[0] = self.key;
                st.find = Some(false);
                Ok(1)
            }
            Some(_) => {
                st.find = Some(false);
                Ok(0)
            }
            None => Err(Error::Rv(Rv::OPERATION_NOT_INITIALIZED)),
        })
    }
    fn find_final(&self, s: u64) -> Result<()> {
        self.with(s, |st| {
            st.find = None;
            Ok(())
        })
    }
    fn op_init(&self, s: u64, op: Op, m: &Mechanism<'_>, key: u64) -> Result<()> {
        if m.ty != TOY || m.param != Param::None {
            return Err(Error::Rv(Rv::MECHANISM_INVALID));
        }
        if key != self.key {
            return Err(Error::Rv(Rv::KEY_HANDLE_INVALID));
        }
        self.with(s, |st| {
            if st.op.is_some() {
                return Err(Error::Rv(Rv::OPERATION_ACTIVE));
            }
            match op {
                Op::SignRecover | Op::VerifyRecover => {
                    st.op = Some(op);
                    Ok(())
                }
                _ => Err(Error::Rv(Rv::MECHANISM_INVALID)),
            }
        })
    }
    fn op_single(&self, s: u64, op: Op, input: &[u8], out: Option<&mut [u8]>) -> Result<usize> {
        self.with(s, |st| {
            if st.op != Some(op) {
                return Err(Error::Rv(Rv::OPERATION_NOT_INITIALIZED));
            }
            let Some(out) = out else {
                return Ok(input.len());
            };
            if out.len() < input.len() {
                return Err(Error::BufferTooSmall {
                    needed: input.len(),
                });
            }
            for (o, i) in out.iter_mut().zip(input) {
                *o = i ^ KEY_BYTE;
            }
            st.op = None;
            Ok(input.len())
        })
    }
    fn op_update(&self, _: u64, _: Op, _: &[u8], _: Option<&mut [u8]>) -> Result<usize> {
        Err(NOT_SUPPORTED)
    }
    fn op_final(&self, _: u64, _: Op, _: Option<&mut [u8]>) -> Result<usize> {
        Err(NOT_SUPPORTED)
    }
    fn verify(&self, _: u64, _: &[u8], _: &[u8]) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn verify_final(&self, _: u64, _: &[u8]) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn digest_key(&self, _: u64, _: u64) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn dual_update(&self, _: u64, _: DualOp, _: &[u8], _: Option<&mut [u8]>) -> Result<usize> {
        Err(NOT_SUPPORTED)
    }
    fn generate_key(&self, _: u64, _: &Mechanism<'_>, _: &[Attr<'_>]) -> Result<u64> {
        Err(NOT_SUPPORTED)
    }
    fn generate_key_pair(
        &self,
        _: u64,
        _: &Mechanism<'_>,
        _: &[Attr<'_>],
        _: &[Attr<'_>],
    ) -> Result<(u64, u64)> {
        Err(NOT_SUPPORTED)
    }
    fn wrap_key(
        &self,
        _: u64,
        _: &Mechanism<'_>,
        _: u64,
        _: u64,
        _: Option<&mut [u8]>,
    ) -> Result<usize> {
        Err(NOT_SUPPORTED)
    }
    fn unwrap_key(
        &self,
        _: u64,
        _: &Mechanism<'_>,
        _: u64,
        _: &[u8],
        _: &[Attr<'_>],
    ) -> Result<u64> {
        Err(NOT_SUPPORTED)
    }
    fn derive_key(&self, _: u64, _: &Mechanism<'_>, _: u64, _: &[Attr<'_>]) -> Result<u64> {
        Err(NOT_SUPPORTED)
    }
    fn seed_random(&self, _: u64, _: &[u8]) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn generate_random(&self, _: u64, _: &mut [u8]) -> Result<()> {
        Err(NOT_SUPPORTED)
    }
    fn function_status(&self, _: u64) -> Result<()> {
        Err(Error::Rv(Rv::FUNCTION_NOT_PARALLEL))
    }
    fn cancel_function(&self, _: u64) -> Result<()> {
        Err(Error::Rv(Rv::FUNCTION_NOT_PARALLEL))
    }
}

type Test = Testbed<Faulty<SoftMember>>;

fn engine() -> Engine<Test> {
    let config = Config {
        mode: Mode::Ha,
        wld_slots: WldSlots::new().with(0, "TokName"),
        recover_delay_ms: Some(10),
        ..Config::new()
    };
    let capacity = Capacity {
        members: 4,
        slots: 2,
        sessions: 8,
        objects: 16,
    };
    let storage = testing::storage(&capacity, Layout::HOST, 4096);
    let e = Engine::new(
        &config,
        storage,
        Recorder::default(),
        ManualClock::default(),
        7,
    )
    .unwrap();
    // Two software members that number their key 10 and 20.
    assert_eq!(
        e.add_member(Faulty::new(SoftMember::new(1, 10))).unwrap(),
        Some(0)
    );
    assert_eq!(
        e.add_member(Faulty::new(SoftMember::new(2, 20))).unwrap(),
        Some(1)
    );
    e
}

fn session_on(e: &Engine<Test>) -> (u64, u64) {
    let s = e.open_session(0, 6).unwrap();
    e.login(s, 1, Some(b"1234")).unwrap();
    let mut found = [0u64; 2];
    let toy_label = [Attr {
        ty: attr::LABEL,
        value: b"toy",
    }];
    e.find_init(s, &toy_label).unwrap();
    assert_eq!(e.find(s, &mut found).unwrap(), 1);
    e.find_final(s).unwrap();
    (s, found[0])
}

fn fail(e: &Engine<Test>, s: u64, command: &str) -> usize {
    let m = e.session_member(s).unwrap();
    e.with_member(m, |member| member.plan().command(command).unwrap())
        .unwrap();
    m
}

const TOY_MECH: Mechanism<'static> = Mechanism {
    ty: TOY,
    param: Param::None,
};

#[test]
fn sign_recover_and_verify_recover_are_replayed_after_failover() {
    for op in [Op::SignRecover, Op::VerifyRecover] {
        let e = engine();
        let (s, key) = session_on(&e);
        let data = b"recoverable";
        let expected: Vec<u8> = data.iter().map(|b| b ^ KEY_BYTE).collect();

        // Without a failure.
        e.op_init(s, op, &TOY_MECH, key).unwrap();
        let mut out = [0u8; 32];
        let n = e.op_single(s, op, data, Some(&mut out)).unwrap();
        assert_eq!(&out[..n], &expected[..]);

        // The member fails right after Init: the call is made on the other
        // member, where the operation was re-initialised with its key.
        e.op_init(s, op, &TOY_MECH, key).unwrap();
        let before = fail(&e, s, "on:op_single:1");
        let n = e.op_single(s, op, data, Some(&mut out)).unwrap();
        assert_eq!(&out[..n], &expected[..], "{op:?}: same output");
        let after = e.session_member(s).unwrap();
        assert_ne!(before, after, "{op:?}: failed over");

        // The first member is healed and, once its delay has passed,
        // recovered.
        e.with_member(before, |m| m.plan().heal());
        assert_eq!(e.recover(5), 0, "not before the delay");
        assert_eq!(e.recover(20), 1);
        assert!(e.member_up(before));

        // A length query and a too-small buffer, then the failure: still
        // the same output, and the operation ends once, where it is done.
        e.op_init(s, op, &TOY_MECH, key).unwrap();
        assert_eq!(e.op_single(s, op, data, None), Ok(data.len()));
        assert_eq!(
            e.op_single(s, op, data, Some(&mut out[..2])),
            Err(Error::BufferTooSmall { needed: data.len() })
        );
        fail(&e, s, "down");
        let n = e.op_single(s, op, data, Some(&mut out)).unwrap();
        assert_eq!(&out[..n], &expected[..], "{op:?} after a length query");
        assert_eq!(
            e.op_single(s, op, data, Some(&mut out)),
            Err(Error::Rv(Rv::OPERATION_NOT_INITIALIZED)),
            "the operation ended"
        );
        let log = e.events().lines();
        let failures = log
            .iter()
            .filter(|l| l.starts_with("HSM Failure detected hsmIdx="))
            .count();
        assert_eq!(failures, 2, "{op:?}: {log:?}");
        assert!(log.iter().any(|l| l.starts_with("HSM recovered hsmIdx=")));
    }
}

#[test]
fn with_no_member_left_the_answer_is_device_error_at_once() {
    let e = engine();
    let (s, key) = session_on(&e);
    e.op_init(s, Op::SignRecover, &TOY_MECH, key).unwrap();
    for m in 0..2 {
        e.with_member(m, |member| member.plan().command("down").unwrap());
    }
    let mut out = [0u8; 16];
    assert_eq!(
        e.op_single(s, Op::SignRecover, b"x", Some(&mut out)),
        Err(Error::Rv(Rv::DEVICE_ERROR))
    );
    assert_eq!(e.open_session(0, 6), Err(Error::Rv(Rv::TOKEN_NOT_PRESENT)));
}
