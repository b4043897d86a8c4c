//! The engine's shared tables under loom's model checker: every
//! interleaving of two threads' calls (up to a preemption bound), with the
//! core's atomics, locks and cells replaced by loom's (`--cfg loom`, see
//! `p11ha_core::sync`). Each model drives the engine through its public
//! calls, as a platform does, over scripted software tokens
//! (`p11ha_core::testing`), and checks an invariant of the tables after
//! (and, for a member's sessions, during) every interleaving. loom also
//! fails a model on a data race on a session's state, a deadlock, or a
//! panic such as reading a member entry before it is written.
//!
//! Run with scripts/loom.sh, which prints each model's explored executions
//! and time (the README's Reliability table):
//! `RUSTFLAGS="--cfg loom" cargo test -p p11ha-core --features testing
//! --release --test loom --target-dir target/loom -- --test-threads=1 --nocapture`
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
use std::time::Instant;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;

use p11ha_core::Engine;
use p11ha_core::ck::{Rv, flags};
use p11ha_core::config::{Config, Mode, WldSlots};
use p11ha_core::error::{Error, Result};
use p11ha_core::handles;
use p11ha_core::port::{
    Attr, AttrOut, DualOp, Mechanism, MechanismInfo, Member, Op, SessionInfo, SlotInfo, TokenInfo,
};
use p11ha_core::testing::{self, LABEL, Testbed, Token};

/// Executions of the model running now.
static EXECUTIONS: AtomicUsize = AtomicUsize::new(0);

/// Held while a model runs, so that the count and time are its own even
/// when the test harness runs tests in parallel.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Explores every interleaving of `model` with at most `preemptions`
/// preemptions (`None`: no bound), whatever LOOM_* variables say, so that
/// CI runs the same exhaustive search each time; prints the executions
/// explored and the time taken.
fn explore(name: &str, preemptions: Option<usize>, model: fn()) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = preemptions;
    builder.max_permutations = None;
    builder.max_duration = None;
    builder.checkpoint_file = None;
    // loom's default, set here like the rest so that no LOOM_* variable
    // changes the search.
    builder.max_branches = 1_000;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    EXECUTIONS.store(0, StdOrdering::SeqCst);
    let start = Instant::now();
    builder.check(move || {
        EXECUTIONS.fetch_add(1, StdOrdering::SeqCst);
        model();
    });
    let bound = preemptions.map_or("none".to_string(), |b| b.to_string());
    println!(
        "loom-model | {name} | {} | {bound} | {:.1}",
        EXECUTIONS.load(StdOrdering::SeqCst),
        start.elapsed().as_secs_f64()
    );
}

/// A token whose calls loom sees: each is counted in `inside` while it
/// runs (two loom operations, between which another thread may run), and
/// `C_CloseAllSessions` asserts that no other call is inside it, which
/// SoftHSM needs (DESIGN.md: closing sessions under a call in flight can
/// crash it).
struct Watched {
    token: Token,
    inside: AtomicU32,
}

impl Watched {
    fn new(slot: u64) -> Self {
        Watched {
            token: Token::new(slot, &testing::objects()),
            inside: AtomicU32::new(0),
        }
    }

    fn enter(&self, call: &str) {
        if call == "close_all_sessions" {
            assert_eq!(
                self.inside.load(Ordering::SeqCst),
                0,
                "C_CloseAllSessions with a call in flight on the member"
            );
        }
        self.inside.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

macro_rules! watched {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty = $call:ident; )*) => {
        $(
            fn $name(&self $(, $arg: $ty)*) -> $ret {
                self.enter(stringify!($name));
                let r = self.token.$name($($arg),*);
                self.leave();
                r
            }
        )*
    };
}

impl Member for Watched {
    fn slot_id(&self) -> u64 {
        self.token.slot_id()
    }
    fn reconnect(&self) -> Result<()> {
        self.token.reconnect()
    }
    p11ha_core::member_calls!(watched);
}

type E = Engine<Testbed<Watched>>;

/// An engine in `mode` over tokens in slots `1..=n`, virtual slot 0
/// showing them; failed members are due for recovery 100 ms after they
/// failed.
fn engine(mode: Mode, n: u64) -> Arc<E> {
    let config = Config {
        mode,
        wld_slots: WldSlots::new().with(0, LABEL),
        recover_delay_ms: Some(100),
        ..Config::new()
    };
    Arc::new(testing::engine(&config, (1..=n).map(Watched::new)))
}

/// Member `m`'s token.
fn token<T>(e: &E, m: usize, f: impl FnOnce(&Token) -> T) -> T {
    e.with_member(m, |w| f(&w.token)).expect("member")
}

const RW: u64 = flags::SERIAL_SESSION | flags::RW_SESSION;

/// Two threads opening sessions at once get two cells (the `in_use`
/// compare-exchange), and each handle names its own cell and session.
#[test]
fn open_sessions_claim_distinct_cells() {
    explore("two threads open a session each", None, || {
        let e = engine(Mode::Ha, 1);
        let spawn = || {
            let e = e.clone();
            thread::spawn(move || e.open_session(0, RW).expect("open"))
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let (ia, ib) = (handles::decode(a).unwrap().0, handles::decode(b).unwrap().0);
        assert_ne!(ia, ib, "two sessions in one cell");
        assert_eq!(
            token(&e, 0, Token::sessions),
            3,
            "two sessions and the anchor"
        );
        assert_eq!(e.member_status(0).unwrap().sessions, 2);
        // Closing one leaves the other.
        e.close_session(a).unwrap();
        assert_eq!(
            e.session_info(a),
            Err(Error::Rv(Rv::SESSION_HANDLE_INVALID))
        );
        assert!(e.session_info(b).is_ok());
        assert_eq!(token(&e, 0, Token::sessions), 2);
    });
}

/// A call on a handle whose session another thread closes, and whose cell
/// it reuses for a new session, either runs before the close or is
/// refused: it never reaches the new session (the handle's generation).
/// The call is a second `C_CloseSession` on the old handle, so that
/// reaching the new session would close it.
#[test]
fn closed_handle_never_reaches_the_reused_cell() {
    explore(
        "close and reopen vs a close on the old handle",
        None,
        || {
            let e = engine(Mode::Ha, 1);
            let old = e.open_session(0, RW).unwrap();
            let closer = {
                let e = e.clone();
                thread::spawn(move || {
                    let closed = e.close_session(old);
                    (closed, e.open_session(0, RW).unwrap())
                })
            };
            let caller = {
                let e = e.clone();
                thread::spawn(move || e.close_session(old))
            };
            let (closed, new) = closer.join().unwrap();
            let called = caller.join().unwrap();
            let invalid = Err(Error::Rv(Rv::SESSION_HANDLE_INVALID));
            assert!(
                (closed.is_ok() && called == invalid) || (closed == invalid && called.is_ok()),
                "the old session closed once: {closed:?}, {called:?}"
            );
            assert!(e.session_info(new).is_ok(), "the new session was closed");
            assert_eq!(
                token(&e, 0, Token::sessions),
                2,
                "the new session and the anchor"
            );
            assert_eq!(e.member_status(0).unwrap().sessions, 1);
            if handles::decode(new).unwrap().0 == handles::decode(old).unwrap().0 {
                REUSED.fetch_add(1, StdOrdering::SeqCst);
            }
        },
    );
    // (The caller's close frees the cell after it refuses the closer's
    // close, so the new session sometimes takes another cell.)
    assert!(
        REUSED.load(StdOrdering::SeqCst) > 0,
        "no execution reused the cell: the model shows nothing"
    );
}

/// Executions of [`closed_handle_never_reaches_the_reused_cell`] in which
/// the new session took the old one's cell.
static REUSED: AtomicUsize = AtomicUsize::new(0);

/// Whether each member's count of sessions is the number of sessions
/// placed on it.
fn counts_match(e: &E, sessions: &[u64]) {
    for m in 0..e.member_count() {
        let placed = sessions
            .iter()
            .filter(|&&s| e.session_member(s) == Ok(m))
            .count();
        assert_eq!(
            e.member_status(m).unwrap().sessions as usize,
            placed,
            "member {m}'s session count"
        );
    }
}

/// A member fails under two calls on two of its sessions: it is taken out
/// once (one "HSM Failure detected": `up` is swapped, not stored), each call
/// succeeds (before the failure, or after its session failed over), and
/// the members' session counts match where the sessions are.
#[test]
fn member_fails_under_two_calls() {
    explore(
        "a member fails under calls on two sessions",
        Some(4),
        || {
            // The second member joins after both sessions went to the first.
            let (e, s) = two_sessions_on_member_0();
            let killer = {
                let e = e.clone();
                thread::spawn(move || {
                    token(&e, 0, Token::kill);
                    e.session_info(s[0])
                })
            };
            let caller = {
                let e = e.clone();
                thread::spawn(move || e.session_info(s[1]))
            };
            assert!(killer.join().unwrap().is_ok());
            assert!(caller.join().unwrap().is_ok());
            assert!(!e.member_up(0));
            assert_eq!(e.events().count("HSM Failure detected"), 1);
            assert_eq!(e.session_member(s[0]), Ok(1));
            counts_match(&e, &s);
            let moved = s.iter().filter(|&&h| e.session_member(h) == Ok(1)).count();
            assert_eq!(e.counts().failovers as usize, moved);
        },
    );
}

/// Two sessions on member 0, then member 1 joins: the start of the models
/// of a failure (and its recovery) racing another call on member 0.
fn two_sessions_on_member_0() -> (Arc<E>, [u64; 2]) {
    let e = engine(Mode::Ha, 1);
    let s = [
        e.open_session(0, RW).unwrap(),
        e.open_session(0, RW).unwrap(),
    ];
    e.add_member(Watched::new(2)).unwrap().unwrap();
    (e, s)
}

/// A thread in which member 0 fails under a call on `s` (which fails over
/// to member 1), comes back, and is recovered; it returns how many members
/// the recovery brought back.
fn fail_and_recover_member_0(e: &Arc<E>, s: u64) -> thread::JoinHandle<usize> {
    let e = e.clone();
    thread::spawn(move || {
        token(&e, 0, Token::kill);
        assert!(e.session_info(s).is_ok());
        token(&e, 0, Token::restart);
        e.recover(1_000)
    })
}

/// A member fails under a call, and is recovered by the same thread, while
/// another thread calls on another of its sessions: recovery (which waits
/// until no call is in flight on the member) never closes the member's
/// sessions under that call (`Watched` asserts it), whether the call
/// counted itself in flight before or after the member went down.
#[test]
fn recovery_never_closes_under_a_call() {
    explore(
        "a failure and its recovery vs a call on the member",
        Some(4),
        || {
            let (e, s) = two_sessions_on_member_0();
            let recovery = fail_and_recover_member_0(&e, s[0]);
            let caller = {
                let e = e.clone();
                thread::spawn(move || e.session_info(s[1]))
            };
            let back = recovery.join().unwrap();
            assert!(caller.join().unwrap().is_ok());
            assert_eq!(back == 1, e.member_up(0));
            counts_match(&e, &s);
        },
    );
}

/// The start of the two models of sessions opened across a failure: `x`
/// and `z` open on member 0; member 1 joins and `y` opens on it (it has
/// fewer sessions); member 0 fails under `z`, which fails over to member
/// 1, and `x` is left stale on dead member 0. Returns the engine, `x`, `y`.
fn member_0_dead() -> (Arc<E>, u64, u64) {
    let e = engine(Mode::Ha, 1);
    let x = e.open_session(0, RW).unwrap();
    let z = e.open_session(0, RW).unwrap();
    e.add_member(Watched::new(2)).unwrap().unwrap();
    let y = e.open_session(0, RW).unwrap();
    assert_eq!(e.session_member(y), Ok(1));
    token(&e, 0, Token::kill);
    assert!(e.session_info(z).is_ok());
    assert_eq!(e.session_member(z), Ok(1));
    (e, x, y)
}

/// A thread that opens a session, then calls on `x`, which fails over to
/// member 1 (or finds no member); it returns the open's answer.
fn open_and_fail_over(e: &Arc<E>, x: u64) -> thread::JoinHandle<Result<u64>> {
    let e = e.clone();
    thread::spawn(move || {
        let a = e.open_session(0, RW);
        let _ = e.session_info(x);
        a
    })
}

/// After member 1's recovery: `x` and the session `opened` (if the open
/// made one) work, failing over on their next call; the sessions that did.
fn stale_sessions_work(e: &E, x: u64, opened: Result<u64>) -> Vec<u64> {
    let mut sessions = vec![x];
    // An open that found member 1 dead, or out, made no session.
    sessions.extend(opened.ok());
    for &h in &sessions {
        assert!(
            e.session_info(h).is_ok(),
            "a session opened across the failure is lost after recovery"
        );
    }
    sessions
}

/// A session opens on a member, and another fails over to it, while
/// another thread's call finds the member dead and takes it out (its epoch
/// moves on). Their real sessions died with the member, so both sessions
/// are stale: once the member is back (restarted, its sessions closed by
/// recovery), the next call of each fails over and succeeds, and the
/// healthy member stays in service. Were the member's epoch read after the
/// open (`open_on` before d6505ab), a take-out between the member's answer
/// and that read would leave the session current on the lost real
/// session: its next call would reach a handle the member no longer has
/// (or, after a reconnect that numbers handles from 1 again, another
/// session's), and take the member out again. (The same read in
/// `failover` shows only if the member is recovered before the failing-
/// over call looks at it again, which needs recovery to run in the
/// killing thread; recovery runs after both threads here. The next model
/// runs it in the killing thread, and catches it.)
#[test]
fn sessions_opened_across_a_failure_are_stale() {
    explore(
        "an open and a failover while a call takes their member out",
        Some(4),
        || {
            let (e, x, y) = member_0_dead();
            let opener = open_and_fail_over(&e, x);
            let killer = {
                let e = e.clone();
                thread::spawn(move || {
                    token(&e, 1, Token::kill);
                    // No other member to fail over to.
                    assert_eq!(e.session_info(y), Err(Error::Rv(Rv::DEVICE_ERROR)));
                })
            };
            let opened = opener.join().unwrap();
            killer.join().unwrap();
            assert!(!e.member_up(1));
            // It restarts (its sessions gone) and recovery brings it back
            // (member 0 stays dead).
            token(&e, 1, Token::restart);
            assert_eq!(e.recover(1_000), 1);
            assert!(e.member_up(1));
            let failovers = e.counts().failovers;
            let stale = stale_sessions_work(&e, x, opened);
            assert!(e.member_up(1), "a recovered member taken out again");
            assert_eq!(e.events().count("HSM Failure detected"), 2);
            assert_eq!(
                e.counts().failovers as usize,
                failovers as usize + stale.len(),
                "a session ran on a real session its member lost"
            );
        },
    );
}

/// As [`sessions_opened_across_a_failure_are_stale`], but the thread that
/// takes member 1 out also restarts it and runs its recovery, so that the
/// member can be back (at its new epoch, its sessions closed) while the
/// open and the failover still run. A member picked in service and taken
/// out before its epoch is read gives the new epoch: unless the member is
/// checked to be up after the read (`open_on` and `failover` before
/// 686a51c), recovery, which reconnects before it takes the slot's login
/// lock, lets the open (or the failover's open) succeed, closes all the
/// member's sessions and puts the member back at that epoch, and the
/// session looks current on a real session that is gone: its next call
/// is lost, or takes the member out again. The same goes for the
/// failover's epoch read after its open (before d6505ab): a failure
/// between the open and the read gives the new epoch, and recovery puts
/// the member back at it. Recovery runs again after both threads only if
/// the thread's round did not bring the member back (a call was in flight
/// on it).
#[test]
fn sessions_opened_across_a_failure_and_its_recovery_are_stale() {
    explore(
        "an open and a failover while a call takes their member out and recovers it",
        Some(4),
        || {
            let (e, x, y) = member_0_dead();
            let opener = open_and_fail_over(&e, x);
            let killer = {
                let e = e.clone();
                thread::spawn(move || {
                    token(&e, 1, Token::kill);
                    // No other member to fail over to.
                    assert_eq!(e.session_info(y), Err(Error::Rv(Rv::DEVICE_ERROR)));
                    token(&e, 1, Token::restart);
                    e.recover(1_000)
                })
            };
            let opened = opener.join().unwrap();
            let back = killer.join().unwrap();
            // Only recovery puts it back: back and out means taken out again.
            assert_eq!(
                back == 1,
                e.member_up(1),
                "a member recovered by the thread taken out again"
            );
            if !e.member_up(1) {
                // Its round made it due again 100 ms later.
                assert_eq!(e.recover(2_000), 1);
            }
            assert!(e.member_up(1));
            stale_sessions_work(&e, x, opened);
            assert!(e.member_up(1), "a recovered member taken out again");
            assert_eq!(e.events().count("HSM Failure detected"), 2);
        },
    );
}

/// A session is closed while its member fails under another thread's
/// call and that thread runs the member's recovery: the close counts
/// itself in flight before it reads the member's health, so recovery
/// never closes the member's sessions while the close is inside the
/// member (`Watched` asserts it). Uncounted (the code before d6505ab),
/// recovery saw no call in flight and ran `C_CloseAllSessions` under it.
#[test]
fn recovery_never_closes_under_a_close() {
    explore(
        "a failure and its recovery vs a close on the member",
        Some(4),
        || {
            let (e, s) = two_sessions_on_member_0();
            let recovery = fail_and_recover_member_0(&e, s[0]);
            let closer = {
                let e = e.clone();
                thread::spawn(move || e.close_session(s[1]))
            };
            let back = recovery.join().unwrap();
            assert_eq!(closer.join().unwrap(), Ok(()));
            assert_eq!(back == 1, e.member_up(0));
            assert_eq!(
                e.session_info(s[1]),
                Err(Error::Rv(Rv::SESSION_HANDLE_INVALID))
            );
            counts_match(&e, &s[..1]);
        },
    );
}

/// A member joins (its entry written, then the count raised, then its bit
/// in the slot's mask) while another thread reads the tables without a
/// lock: every member it counts, and every member it picks for a session,
/// has its entry written.
#[test]
fn member_joins_under_readers() {
    explore(
        "a member joins while another thread reads the tables",
        None,
        || {
            let e = engine(Mode::Ha, 1);
            let joiner = {
                let e = e.clone();
                thread::spawn(move || e.add_member(Watched::new(2)).unwrap())
            };
            let reader = {
                let e = e.clone();
                thread::spawn(move || {
                    let s = e.open_session(0, RW).unwrap();
                    for m in 0..e.member_count() {
                        assert!(e.member_status(m).is_some());
                    }
                    s
                })
            };
            assert_eq!(joiner.join().unwrap(), Some(1));
            let s = reader.join().unwrap();
            assert_eq!(e.member_count(), 2);
            counts_match(&e, &[s]);
        },
    );
}

/// A member fails while a round of recovery runs (which tries it, dead, if
/// it failed first): the failed member stays scheduled and `any_failed`
/// says so, so that its recovery comes due again.
#[test]
fn a_failure_during_recovery_stays_scheduled() {
    explore("a failure vs a round of recovery", None, || {
        let e = engine(Mode::Ha, 2);
        let s = e.open_session(0, RW).unwrap();
        let m = e.session_member(s).unwrap();
        let failing = {
            let e = e.clone();
            thread::spawn(move || {
                token(&e, m, Token::kill);
                e.session_info(s)
            })
        };
        let recovery = {
            let e = e.clone();
            thread::spawn(move || e.recover(1_000))
        };
        assert!(failing.join().unwrap().is_ok());
        assert_eq!(recovery.join().unwrap(), 0, "a dead member came back");
        assert!(!e.member_up(m));
        assert!(
            e.recovery_due(10_000),
            "the failed member's recovery is lost"
        );
    });
}

/// The virtual handle of the token object labelled `label`, found in
/// session `s`.
fn find(e: &E, s: u64, label: &str) -> u64 {
    let template = [Attr {
        ty: p11ha_core::ck::attr::LABEL,
        value: label.as_bytes(),
    }];
    e.find_init(s, &template).unwrap();
    let mut out = [0u64; 2];
    let n = e.find(s, &mut out).unwrap();
    e.find_final(s).unwrap();
    assert_eq!(n, 1, "one {label}");
    out[0]
}

/// Two threads find the same token object at once, each in its own
/// session, when the object table does not know it yet: the table (under
/// its read-write lock, looked up again under the write lock) gives it
/// one virtual handle, and its index maps the member's handle back to it.
#[test]
fn one_object_one_handle() {
    explore("two threads find one token object", Some(4), || {
        let e = engine(Mode::Ha, 1);
        let s = [
            e.open_session(0, RW).unwrap(),
            e.open_session(0, RW).unwrap(),
        ];
        let spawn = |s| {
            let e = e.clone();
            thread::spawn(move || find(&e, s, "note"))
        };
        let (a, b) = (spawn(s[0]), spawn(s[1]));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(a, b, "one object, two handles");
        // Destroyed through the handle, it is gone for both sessions.
        e.destroy_object(s[0], a).unwrap();
        let mut label = [0u8; 8];
        let mut out = [AttrOut {
            ty: p11ha_core::ck::attr::LABEL,
            buf: Some(&mut label),
            len: None,
        }];
        assert_eq!(
            e.get_attributes(s[1], b, &mut out),
            Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
        );
    });
}
