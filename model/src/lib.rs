//! A model of p11ha's failover and recovery protocol, checked with
//! stateright's breadth-first checker: every interleaving of a few
//! application threads, two members that fail and come back, the recovery
//! thread, `C_Finalize` and `fork()` is explored, and two properties are
//! checked in every state reached: no lost operation (every call ends with
//! a result, or with the error the design gives it, never a wrong result)
//! and no deadlock. A session closed under a call in flight is a
//! violation of its own.
//!
//! # What is modelled, and from where
//! Each step below names the code it mirrors (file:function); a step is one
//! atomic transition, and the checker interleaves steps of different
//! threads in every order.
//! - The door of every call (`ffi/src/runtime/lifecycle.rs`:
//!   `InFlight::enter`, `with`, `leave`): `IN_FLIGHT` raised, `FORKING`
//!   looked at (and the call waits at the door while it is set), `RUNTIME`
//!   loaded (null: `CKR_CRYPTOKI_NOT_INITIALIZED`), `IN_FLIGHT` lowered when
//!   the call returns.
//! - `C_OpenSession` (`core/src/engine/session.rs`: `open_on`, `place`):
//!   the slot's login lock held across the pick, the member's epoch read,
//!   the check that the member is still up (or the pick again) and the
//!   member's `C_OpenSession` (which is *not* counted busy), each a step of
//!   its own; `place` records the epoch read before the open.
//! - A call on a session (`core/src/engine/mod.rs`: `call`, `call_locked`):
//!   the session's lock held across everything; the member counted busy
//!   (`pool.rs`: `MemberEntry::busy`) *before* the staleness check
//!   (`Engine::stale`: orphan, or member down, or epoch moved on); a member
//!   failure takes the member out (`health.rs`: `take_out`, `pool.rs`:
//!   `Pool::take_out`/`down`: up cleared, epoch raised) and the call runs
//!   again (HA mode).
//! - Failover (`core/src/engine/replay.rs`: `failover`): the session made an
//!   orphan, a member in service picked (`pool.rs`: `pick`) and counted
//!   busy, its epoch read, the check that it is still up (or busy dropped
//!   and the pick again), a session opened there, the login made sure of
//!   under the slot's login lock, the journal replayed (the operation
//!   re-initialised with its Update data), and the session placed with the
//!   epoch read before the open; no member in service: `CKR_DEVICE_ERROR`.
//! - `C_CloseSession` (`session.rs`: `close_locked`): under the session's
//!   lock, the member's `C_CloseSession` if the session is not stale (*not*
//!   counted busy), then the slot's counters under the login lock.
//! - The recovery thread (`ffi/src/runtime/recovery.rs`: `recovery_thread`;
//!   `core/src/engine/health.rs`: `recover`): through `with()` (counted in
//!   flight), for a due member: skipped while its in-flight count is not
//!   zero (`pool.rs`: `in_flight`), reconnected (`Member::reconnect`), then
//!   under the slot's login lock its sessions closed
//!   (`close_all_sessions`), its anchor opened, and it is put back
//!   (`pool.rs`: `put_back`).
//! - `C_Finalize` (`ffi/src/runtime/mod.rs`: `finalize`; `lifecycle.rs`:
//!   `unpublish`): `RUNTIME` unpublished, `IN_FLIGHT` drained to zero, the
//!   recovery thread stopped and joined (`Recovery::stop`), every session
//!   closed under its lock (`session.rs`: `close_everything`), the runtime
//!   freed.
//! - `fork()` (`lifecycle.rs`: `before_fork`, `after_fork_in_parent`,
//!   `after_fork_in_child`): `FORKING` set, `IN_FLIGHT` waited down to the
//!   forking thread's own depth (0: the forker is not in a call), the
//!   child made; in the child `RUNTIME` is set aside (`INHERITED`),
//!   `IN_FLIGHT` set to the thread's depth, `FORKING` cleared and the
//!   `LIFECYCLE` lock reset. The child then makes one call before
//!   `C_Initialize` (expects `CKR_CRYPTOKI_NOT_INITIALIZED`), calls
//!   `C_Initialize` (a fresh runtime: it calls into each member's module), a
//!   call on a member, and `C_Finalize`.
//! - A member (an RPC member: `adapters/src/rpc/conn.rs`: `reconnect`, or a
//!   loaded module: `Member::reconnect` does nothing) holds real sessions
//!   with handles it numbers itself; each real session belongs to one
//!   application session (or is an anchor) and holds its operation state
//!   (how many Update calls it has seen). A killed member answers
//!   `CKR_DEVICE_ERROR` and loses its sessions. An RPC member's reconnect
//!   is a new connection: the sessions of the old one are gone, the new
//!   one numbers its handles from 1 again (a new `p11-kit remote` process),
//!   and a call in flight on the old connection answers a transport error.
//!
//! # What it and loom found in p11ha (fixed; the breaks keep the old code)
//! - The member's epoch was read *after* its session was opened (`place` in
//!   `open_on`, `s.epoch = entry.epoch()` in `failover` and
//!   `move_session`). A failure taken out in between was missed: the
//!   session was recorded as current at the member's new epoch though its
//!   real session died with the failure. Once recovery brought the member
//!   back (a new RPC connection numbers its handles from 1 again), the
//!   session's next call ran on whatever real session then had that
//!   handle: another application session's (`Wrong::OtherSession`), or
//!   none (the healthy member was taken out again). The epoch is now read
//!   before the open; [`Breaks::epoch_after_open`] is the old code.
//! - `close_locked` sent the member's `C_CloseSession` without counting
//!   the member busy: if the member was taken out meanwhile, recovery
//!   (which waits only for busy calls) could close all its sessions while
//!   that call was inside the module (with a loaded module; over RPC the
//!   reconnect cuts the old connection first). It is counted now (and so
//!   is the old member's close in `move_session`);
//!   [`Breaks::close_not_busy`] is the old code.
//! - loom found a third (`core/tests/loom.rs`,
//!   `sessions_opened_across_a_failure_and_its_recovery_are_stale`), which
//!   this model could not see while it picked the member and read its
//!   epoch in one step: `open_on` and `failover` did not check that the
//!   member picked was still up after its epoch was read. Taken out
//!   between the pick and the read, the member gave its new epoch; recovery
//!   (which reconnects before it takes the slot's login lock) let the open
//!   succeed, then closed all the member's sessions and put it back at
//!   that epoch, so the session was current on a real session that was
//!   gone. Its next call took the healthy member out again, and after more
//!   reconnects (numbering handles from 1 again) a call ran on another
//!   session's real session (`Wrong::OtherSession`). Both now pick again
//!   when the member is down after the read (686a51c);
//!   [`Breaks::no_up_check_after_epoch`] is the old code.
//!
//! # What is assumed (abstracted)
//! - Time is abstract: a failed member's recovery is due at any moment
//!   after it failed, and call deadlines fire as a kill does. So a race
//!   that needs a thread to sleep through a whole recovery delay is
//!   reported as reachable.
//! - A member call is two steps: entering the member (the request sent)
//!   and its answer. A call is "inside" the member between them.
//! - The door (`IN_FLIGHT` raised, then `FORKING` read, both `SeqCst`) is
//!   one step, as is `before_fork`'s check of `IN_FLIGHT` and the fork
//!   itself: sequentially consistent, so no interleaving is lost that
//!   could let a call in after the fork's check saw none.
//! - `pick` chooses any member in service (the real one prefers the fewest
//!   sessions, ties at random): a superset of its choices. In `failover`
//!   the pick and the busy count are one step; in both opens the up check
//!   and the request sent are one step (a take-out after the check leaves
//!   the session at the old epoch: stale, as in the code).
//! - The journal always holds the operation (its data fits): the paths
//!   where replay loses state (`state_lost`) are not modelled, nor are
//!   session objects, searches, token writes, `move_session` and
//!   `fail_over_owner`, or the login itself (its lock is).
//! - HA mode only, with the recovery thread (`Recovery::Thread`): inline
//!   recovery (`ET_PTKC_HA_RECOVER_WAIT=YES`), WLD and NORMAL mode, the
//!   status thread, and the anchors closed with a slot's last session
//!   (`release_anchors`) are not modelled.
//! - One attempt of the recovery thread tries one due member (the real one
//!   tries each due member in turn); its polls while no member is down
//!   (one atomic load, `recovery_due`) are left out.
//! - The search is bounded: a member's epoch and connection generation go
//!   no higher than the kills allowed plus two (`within_boundary`), since
//!   a member wrongly taken out and brought back could otherwise go round
//!   for ever. Members handle numbers up to 8 (past that, the lowest
//!   free).
//! - `after_fork_in_child` setting `IN_FLIGHT` to the thread's depth only
//!   matters when the fork did not wait (a call hung past `FORK_WAIT`) or
//!   a module forks inside a call; neither is modelled.
//! - One virtual slot; each application thread has one session and makes
//!   `C_OpenSession`, a multi-part operation (Init, Update, Final) and
//!   `C_CloseSession`; an error ends its operation and a
//!   `CKR_CRYPTOKI_NOT_INITIALIZED` or a failed open ends the thread.
//! - `FORK_WAIT` (fork waits at most 10 s for calls in flight) is not
//!   modelled: the fork waits until the calls return. A call hung in a
//!   module for longer is a known limit, not checked here.
//! - Deadlock: a state where some thread (other than the recovery thread's
//!   idle loop) has not finished, none of them can take a step, and no
//!   sequence of the recovery thread's steps alone makes one able to.
//!   Livelock (cycles that never finish) is not checked; the only cycles
//!   are the recovery thread's idle polling.

use std::fmt;

use stateright::{Model, Property};

/// Members of the virtual slot.
pub const MEMBERS: usize = 2;
/// Handles a member numbers (anchor and application sessions).
const HANDLES: usize = 8;

/// Deliberate breaks of the protocol, each of which the checker must
/// catch (see the tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Breaks {
    /// `call_locked` counts the member busy after the staleness check.
    pub busy_after_stale: bool,
    /// `recover` does not wait for the member's in-flight count to be zero.
    pub recovery_ignores_in_flight: bool,
    /// `C_Finalize` does not wait for `IN_FLIGHT` to drain.
    pub finalize_no_drain: bool,
    /// `before_fork` does not wait for the calls in flight.
    pub fork_no_wait: bool,
    /// `after_fork_in_child` does not set the parent's runtime aside.
    pub child_keeps_runtime: bool,
    /// `after_fork_in_child` does not reset the `LIFECYCLE` lock.
    pub child_keeps_lifecycle: bool,
    /// `open_on` and `failover` read the member's epoch after its session
    /// was opened, not before (p11ha before the model found it).
    pub epoch_after_open: bool,
    /// `close_locked` sends `C_CloseSession` without counting the member
    /// busy (p11ha before the model found it).
    pub close_not_busy: bool,
    /// `open_on` and `failover` open the session on the member they picked
    /// without checking, after its epoch is read, that it is still in
    /// service (p11ha before 686a51c, which loom found).
    pub no_up_check_after_epoch: bool,
}

/// One configuration of the model.
#[derive(Clone, Debug)]
pub struct Config {
    /// How the configuration is named in the table.
    pub name: &'static str,
    /// Application threads (1 to 3).
    pub apps: usize,
    /// Member kills, in all.
    pub kills: u8,
    /// Members reached over RPC (reconnect is a new connection) rather than
    /// loaded modules (reconnect does nothing).
    pub rpc: bool,
    /// A `C_Finalize` thread races the calls.
    pub finalize: bool,
    /// A thread forks once, at any moment; the child runs.
    pub fork: bool,
    /// Deliberate breaks.
    pub breaks: Breaks,
}

/// The wrongs the checker looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wrong {
    /// A call ran on a real session of another application session (a
    /// member that reused the handle of one p11ha thought was its own).
    OtherSession,
    /// An operation answered over state that was lost or different.
    WrongResult,
    /// A call was answered an error the design does not give it.
    WrongError,
    /// Sessions closed (recovery, `C_Finalize`) under a call in flight.
    ClosedUnderCall,
    /// The runtime freed while a call still used it.
    UseAfterFree,
    /// A forked child saw the parent's runtime, or was refused its own.
    ChildWrong,
}

/// Who a real session belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Owner {
    Anchor,
    App(u8),
}

/// A real session on a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Real {
    owner: Owner,
    /// The operation in progress: how many Update calls it saw.
    op: Option<u8>,
}

/// A member and what p11ha's pool knows of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MemberState {
    // pool.rs: MemberEntry.
    up: bool,
    epoch: u8,
    in_flight: u8,
    // The member itself.
    alive: bool,
    /// Connection generation (RPC).
    conn: u8,
    next: u8,
    real: [Option<Real>; HANDLES],
}

impl MemberState {
    fn new() -> Self {
        let mut real = [None; HANDLES];
        // The anchor opened when the member joined (add_member).
        real[0] = Some(Real {
            owner: Owner::Anchor,
            op: None,
        });
        MemberState {
            up: true,
            epoch: 0,
            in_flight: 0,
            alive: true,
            conn: 0,
            next: 2,
            real,
        }
    }

    /// The member's `C_OpenSession`: the next handle it numbers (past the
    /// model's bound, the lowest free one).
    fn open(&mut self, owner: Owner, op: Option<u8>) -> u8 {
        let free = |h: &u8| self.real[*h as usize - 1].is_none();
        let h = (self.next..=HANDLES as u8)
            .find(free)
            .or_else(|| (1..self.next.min(HANDLES as u8 + 1)).find(free))
            .expect("model bound: a member has a free handle");
        self.real[h as usize - 1] = Some(Real { owner, op });
        self.next = h + 1;
        h
    }

    fn get(&self, h: u8) -> Option<Real> {
        self.real[h as usize - 1]
    }
}

/// An application session (`sessions.rs`: `Session`), with its journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Sess {
    open: bool,
    member: u8,
    real: u8,
    epoch: u8,
    orphan: bool,
    /// Journal: the operation in progress and its Update calls.
    op: Option<u8>,
    /// Who holds the session's lock.
    locked_by: Option<Tid>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tid {
    App(u8),
    Rec,
}

/// The calls an application thread makes, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Call {
    Open,
    Init,
    Update,
    Final,
    Close,
}

impl Call {
    fn next(self) -> Option<Call> {
        match self {
            Call::Open => Some(Call::Init),
            Call::Init => Some(Call::Update),
            Call::Update => Some(Call::Final),
            Call::Final => Some(Call::Close),
            Call::Close => None,
        }
    }
}

/// What a call answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Res {
    Ok,
    NotInitialized,
    /// No member in service (open: `CKR_TOKEN_NOT_PRESENT`; a call:
    /// `CKR_DEVICE_ERROR`), which the design gives such a call.
    NoMember,
    /// Any other error (the member's answer passed on).
    Other,
}

/// Where an application thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum App {
    /// lifecycle.rs InFlight::enter: IN_FLIGHT raised.
    Door(Call),
    /// Waiting at the door while FORKING.
    DoorWait(Call),
    /// lifecycle.rs with: RUNTIME loaded.
    Load(Call),
    /// session.rs open_on: the login lock.
    OpenLogin,
    /// pool.rs pick: a member in service.
    OpenPick,
    /// open_on: the picked member's epoch read.
    OpenEpoch {
        m: u8,
    },
    /// open_on: the member still up after the read (or pick again), then
    /// its C_OpenSession sent (not busy).
    OpenUp {
        m: u8,
        epoch: u8,
    },
    OpenIn {
        m: u8,
        conn_at: u8,
        epoch: u8,
    },
    /// open_on: check() and ensure_logged_in, then place().
    OpenPlace {
        m: u8,
        real: u8,
        epoch: u8,
    },
    /// sessions.rs lock: the session's lock.
    Lock(Call),
    /// mod.rs call_locked: busy, then stale (or the other way round).
    Busy(Call),
    Stale(Call),
    In {
        c: Call,
        m: u8,
        conn_at: u8,
        real: u8,
    },
    /// replay.rs failover: a member in service picked, counted busy.
    FoPick(Call),
    /// failover: the picked member's epoch read.
    FoEpoch {
        c: Call,
        m: u8,
    },
    /// failover: the member still up after the read (or busy dropped and
    /// pick again), then its C_OpenSession sent.
    FoUp {
        c: Call,
        m: u8,
        epoch: u8,
    },
    FoOpen {
        c: Call,
        m: u8,
        conn_at: u8,
        epoch: u8,
    },
    FoLogin {
        c: Call,
        m: u8,
        real: u8,
        epoch: u8,
    },
    FoReplay {
        c: Call,
        m: u8,
        conn_at: u8,
        real: u8,
        epoch: u8,
    },
    /// failover: the session placed on the member, busy dropped.
    FoPlace {
        c: Call,
        m: u8,
        real: u8,
        epoch: u8,
    },
    /// session.rs close_locked.
    CloseIn {
        m: u8,
        conn_at: u8,
        real: u8,
    },
    CloseLogin,
    /// The call returns: locks released, IN_FLIGHT lowered.
    Leave(Call, Res),
    Done,
}

/// Where the recovery thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Rec {
    Idle,
    DoorWait,
    Load,
    Pick,
    Reconnect(u8),
    Login(u8),
    CloseAll(u8),
    Leave,
    Exited,
}

/// Where `C_Finalize` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Fin {
    Start,
    Drain,
    Join,
    Close(u8),
    Free,
    Done,
}

/// Where the forking thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Forker {
    Start,
    Wait,
    Done,
}

/// Where the forked child is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ChildPc {
    Call,
    Init,
    Sign,
    Fin,
    Drain,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Child {
    pc: ChildPc,
    published: bool,
    /// The parent's runtime still reachable as the child's own.
    inherited: bool,
    in_flight: u8,
    lifecycle_locked: bool,
    /// A parent thread was inside this member's module at the fork: its
    /// locks are held for ever in the child.
    module_held: [bool; MEMBERS],
}

/// The runtime as `RUNTIME` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Rt {
    Published,
    Unpublished,
    Freed,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    rt: Rt,
    in_flight: u8,
    forking: bool,
    lifecycle_locked: bool,
    members: [MemberState; MEMBERS],
    login_by: Option<Tid>,
    sessions: Vec<Sess>,
    apps: Vec<App>,
    rec: Rec,
    rec_stop: bool,
    fin: Fin,
    forker: Forker,
    child: Option<Child>,
    kills_left: u8,
    /// Ghosts for the "sometimes" properties (the model is not vacuous).
    failed_over: bool,
    recovered: bool,
    finished_after_failure: bool,
    wrong: Option<Wrong>,
}

/// A step: who moves, and which of its choices it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    App(u8),
    Rec,
    Fin,
    Forker,
    Child,
    Kill(u8),
}

/// The model of one configuration.
pub struct FailoverModel {
    pub cfg: Config,
    /// Check this property only (the search stops at its first
    /// counterexample); `None`: all of them.
    pub only: Option<&'static str>,
}

impl fmt::Display for Wrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl State {
    /// The member `tid` is inside (a request sent, no answer yet), and on
    /// which connection.
    fn inside(&self, m: u8) -> bool {
        let conn = self.members[m as usize].conn;
        self.apps.iter().any(|a| match *a {
            App::OpenIn { m: x, conn_at, .. }
            | App::In { m: x, conn_at, .. }
            | App::FoOpen { m: x, conn_at, .. }
            | App::FoReplay { m: x, conn_at, .. }
            | App::CloseIn { m: x, conn_at, .. } => x == m && conn_at == conn,
            _ => false,
        })
    }

    /// Some thread is inside member `m`'s module, on any connection.
    fn inside_any(&self, m: u8) -> bool {
        self.apps.iter().any(|a| match *a {
            App::OpenIn { m: x, .. }
            | App::In { m: x, .. }
            | App::FoOpen { m: x, .. }
            | App::FoReplay { m: x, .. }
            | App::CloseIn { m: x, .. } => x == m,
            _ => false,
        })
    }

    /// A thread that loaded the runtime and has not returned.
    fn uses_runtime(&self) -> bool {
        self.apps.iter().any(|a| {
            !matches!(
                a,
                App::Door(_)
                    | App::DoorWait(_)
                    | App::Load(_)
                    | App::Leave(_, Res::NotInitialized)
                    | App::Done
            )
        }) || !matches!(
            self.rec,
            Rec::Idle | Rec::DoorWait | Rec::Load | Rec::Leave | Rec::Exited
        )
    }

    fn wrong(&mut self, w: Wrong) {
        if self.wrong.is_none() {
            self.wrong = Some(w);
        }
    }

    /// health.rs take_out / pool.rs down: out of service once, epoch moved
    /// on (the schedule makes it due for recovery).
    fn take_out(&mut self, m: u8) {
        let e = &mut self.members[m as usize];
        if e.up {
            e.up = false;
            e.epoch += 1;
        }
    }

    /// mod.rs Engine::stale.
    fn stale(&self, i: usize) -> bool {
        let s = &self.sessions[i];
        let e = &self.members[s.member as usize];
        s.orphan || !(e.up && e.epoch == s.epoch)
    }

    fn lock_login(&mut self, t: Tid) -> bool {
        if self.login_by.is_some() {
            return false;
        }
        self.login_by = Some(t);
        true
    }
}

/// A member's answer to a request sent on connection `conn_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    /// DEVICE_ERROR, a transport error: the member failed.
    Failed,
    /// SESSION_HANDLE_INVALID: p11ha's session is not there (pool.rs
    /// failed(): a member failure when p11ha holds it open).
    NoSession,
    /// CKR_OPERATION_NOT_INITIALIZED and the like: passed on.
    Refused,
}

impl FailoverModel {
    pub fn new(cfg: Config) -> Self {
        FailoverModel { cfg, only: None }
    }

    fn step(&self, s0: &State, actor: Actor, ch: u8) -> Option<State> {
        if s0.wrong.is_some() {
            return None;
        }
        let mut s = s0.clone();
        let ok = match actor {
            Actor::App(i) => self.app(&mut s, i, ch),
            Actor::Rec => self.rec(&mut s, ch),
            Actor::Fin => self.fin(&mut s),
            Actor::Forker => self.forker(&mut s),
            Actor::Child => self.child(&mut s),
            Actor::Kill(m) => {
                let e = &mut s.members[m as usize];
                if ch != 0 || s.kills_left == 0 || !e.alive {
                    false
                } else {
                    // A killed member answers DEVICE_ERROR and its
                    // sessions are gone.
                    s.kills_left -= 1;
                    e.alive = false;
                    e.real = [None; HANDLES];
                    true
                }
            }
        };
        ok.then_some(s)
    }

    /// The member's answer to a call `c` of application session `me` on
    /// its real session `real`, sent on connection `conn_at`; the member's
    /// state and the journal change as the call does.
    fn member_call(&self, s: &mut State, me: u8, m: u8, conn_at: u8, real: u8, c: Call) -> Answer {
        let i = me as usize;
        let e = &mut s.members[m as usize];
        if e.conn != conn_at || !e.alive {
            return Answer::Failed;
        }
        let Some(r) = e.get(real) else {
            return Answer::NoSession;
        };
        if r.owner != Owner::App(me) {
            s.wrong(Wrong::OtherSession);
            return Answer::Ok;
        }
        let journal = s.sessions[i].op;
        let slot = &mut e.real[real as usize - 1];
        match c {
            Call::Init => {
                *slot = Some(Real {
                    owner: r.owner,
                    op: Some(0),
                });
                s.sessions[i].op = Some(0);
                Answer::Ok
            }
            Call::Update | Call::Final => match (r.op, journal) {
                (None, _) => Answer::Refused,
                (Some(n), Some(j)) if n == j => {
                    if c == Call::Update {
                        *slot = Some(Real {
                            owner: r.owner,
                            op: Some(n + 1),
                        });
                        s.sessions[i].op = Some(n + 1);
                    } else {
                        *slot = Some(Real {
                            owner: r.owner,
                            op: None,
                        });
                        s.sessions[i].op = None;
                    }
                    Answer::Ok
                }
                _ => {
                    // The member computes over other data than the
                    // application gave.
                    s.wrong(Wrong::WrongResult);
                    Answer::Ok
                }
            },
            Call::Open | Call::Close => unreachable!("not a session call"),
        }
    }

    fn app(&self, s: &mut State, i: u8, ch: u8) -> bool {
        let me = Tid::App(i);
        let iu = i as usize;
        let pc = s.apps[iu];
        let single = |ch: u8| ch == 0;
        let next = match pc {
            App::Done => return false,
            App::Door(c) => {
                if !single(ch) {
                    return false;
                }
                // InFlight::enter: counted, then FORKING looked at.
                s.in_flight += 1;
                if s.forking {
                    s.in_flight -= 1;
                    App::DoorWait(c)
                } else {
                    App::Load(c)
                }
            }
            App::DoorWait(c) => {
                if !single(ch) || s.forking {
                    return false;
                }
                App::Door(c)
            }
            App::Load(c) => {
                if !single(ch) {
                    return false;
                }
                match s.rt {
                    Rt::Published => match c {
                        Call::Open => App::OpenLogin,
                        _ => App::Lock(c),
                    },
                    Rt::Unpublished => App::Leave(c, Res::NotInitialized),
                    Rt::Freed => {
                        // lifecycle.rs with: RUNTIME is null once freed.
                        App::Leave(c, Res::NotInitialized)
                    }
                }
            }
            App::OpenLogin => {
                if !single(ch) || !s.lock_login(me) {
                    return false;
                }
                App::OpenPick
            }
            App::OpenPick => {
                // session.rs open_on: `self.pool.pick(slot)?`, a member in
                // service.
                let live: Vec<u8> = (0..MEMBERS as u8)
                    .filter(|&m| s.members[m as usize].up)
                    .collect();
                if live.is_empty() {
                    if !single(ch) {
                        return false;
                    }
                    s.login_by = None;
                    App::Leave(Call::Open, Res::NoMember)
                } else {
                    let Some(&m) = live.get(ch as usize) else {
                        return false;
                    };
                    App::OpenEpoch { m }
                }
            }
            App::OpenEpoch { m } => {
                if !single(ch) {
                    return false;
                }
                // open_on: `let epoch = self.pool.entry(m).epoch();`, which
                // may be read after the member was taken out.
                let e = &s.members[m as usize];
                if self.cfg.breaks.no_up_check_after_epoch {
                    // The code before 686a51c: the open sent at once.
                    App::OpenIn {
                        m,
                        conn_at: e.conn,
                        epoch: e.epoch,
                    }
                } else {
                    App::OpenUp { m, epoch: e.epoch }
                }
            }
            App::OpenUp { m, epoch } => {
                if !single(ch) {
                    return false;
                }
                // open_on: `if !self.member_up(m) { continue; }`, then
                // `member.open_session(..)`, not counted busy.
                let e = &s.members[m as usize];
                if !e.up {
                    App::OpenPick
                } else {
                    App::OpenIn {
                        m,
                        conn_at: e.conn,
                        epoch,
                    }
                }
            }
            App::OpenIn { m, conn_at, epoch } => {
                if !single(ch) {
                    return false;
                }
                let e = &mut s.members[m as usize];
                if e.conn != conn_at || !e.alive {
                    // check(): a member failure takes it out; open_on goes
                    // on while it is not up.
                    s.take_out(m);
                    App::OpenPick
                } else {
                    let real = e.open(Owner::App(i), None);
                    App::OpenPlace { m, real, epoch }
                }
            }
            App::OpenPlace { m, real, epoch } => {
                if !single(ch) {
                    return false;
                }
                {
                    let e = &s.members[m as usize];
                    // place(): the epoch as it was when the open was sent
                    // (with the break epoch_after_open, read now).
                    let epoch = if self.cfg.breaks.epoch_after_open {
                        e.epoch
                    } else {
                        epoch
                    };
                    s.sessions[iu] = Sess {
                        open: true,
                        member: m,
                        real,
                        epoch,
                        orphan: false,
                        op: None,
                        locked_by: None,
                    };
                    s.login_by = None;
                    App::Leave(Call::Open, Res::Ok)
                }
            }
            App::Lock(c) => {
                if !single(ch) {
                    return false;
                }
                let sess = &mut s.sessions[iu];
                if sess.locked_by.is_some() {
                    return false;
                }
                if !sess.open {
                    App::Leave(c, Res::Other)
                } else {
                    sess.locked_by = Some(me);
                    if c == Call::Close {
                        // close_locked: the member's C_CloseSession if the
                        // session is not stale, counted busy (not with the
                        // break close_not_busy).
                        let sess = s.sessions[iu];
                        if sess.orphan || s.stale(iu) {
                            s.sessions[iu].open = false;
                            s.sessions[iu].locked_by = None;
                            App::CloseLogin
                        } else {
                            if !self.cfg.breaks.close_not_busy {
                                s.members[sess.member as usize].in_flight += 1;
                            }
                            App::CloseIn {
                                m: sess.member,
                                conn_at: s.members[sess.member as usize].conn,
                                real: sess.real,
                            }
                        }
                    } else if self.cfg.breaks.busy_after_stale {
                        App::Stale(c)
                    } else {
                        App::Busy(c)
                    }
                }
            }
            App::Busy(c) => {
                if !single(ch) {
                    return false;
                }
                // pool.rs MemberEntry::busy: counted before the member's
                // state is read.
                let m = s.sessions[iu].member;
                s.members[m as usize].in_flight += 1;
                if self.cfg.breaks.busy_after_stale {
                    self.enter_member(s, iu, c)
                } else {
                    App::Stale(c)
                }
            }
            App::Stale(c) => {
                if !single(ch) {
                    return false;
                }
                if s.stale(iu) {
                    if !self.cfg.breaks.busy_after_stale {
                        let m = s.sessions[iu].member;
                        s.members[m as usize].in_flight -= 1;
                    }
                    App::FoPick(c)
                } else if self.cfg.breaks.busy_after_stale {
                    App::Busy(c)
                } else {
                    self.enter_member(s, iu, c)
                }
            }
            App::In {
                c,
                m,
                conn_at,
                real,
            } => {
                if !single(ch) {
                    return false;
                }
                let answer = self.member_call(s, i, m, conn_at, real, c);
                s.members[m as usize].in_flight -= 1;
                match answer {
                    Answer::Ok => {
                        if s.failed_over {
                            s.finished_after_failure = true;
                        }
                        App::Leave(c, Res::Ok)
                    }
                    Answer::Failed | Answer::NoSession => {
                        // call_locked: not current, or pool.failed: taken
                        // out, and the call runs again (HA).
                        s.take_out(m);
                        App::Busy(c)
                    }
                    Answer::Refused => {
                        let epoch = s.sessions[iu].epoch;
                        let e = &s.members[m as usize];
                        if !(e.up && e.epoch == epoch) {
                            s.take_out(m);
                            App::Busy(c)
                        } else {
                            App::Leave(c, Res::Other)
                        }
                    }
                }
            }
            App::FoPick(c) => {
                // replay.rs failover: an orphan until placed.
                let sess = &mut s.sessions[iu];
                if !sess.orphan {
                    sess.orphan = true;
                }
                let live: Vec<u8> = (0..MEMBERS as u8)
                    .filter(|&m| s.members[m as usize].up)
                    .collect();
                if live.is_empty() {
                    if !single(ch) {
                        return false;
                    }
                    App::Leave(c, Res::NoMember)
                } else {
                    let Some(&m) = live.get(ch as usize) else {
                        return false;
                    };
                    // replay.rs failover: `pick_where`/`pick`, then
                    // `let _busy = entry.busy();`.
                    s.members[m as usize].in_flight += 1;
                    App::FoEpoch { c, m }
                }
            }
            App::FoEpoch { c, m } => {
                if !single(ch) {
                    return false;
                }
                // failover: `let epoch = entry.epoch();`, which may be read
                // after the member was taken out.
                let e = &s.members[m as usize];
                if self.cfg.breaks.no_up_check_after_epoch {
                    // The code before 686a51c: the open sent at once.
                    App::FoOpen {
                        c,
                        m,
                        conn_at: e.conn,
                        epoch: e.epoch,
                    }
                } else {
                    App::FoUp {
                        c,
                        m,
                        epoch: e.epoch,
                    }
                }
            }
            App::FoUp { c, m, epoch } => {
                if !single(ch) {
                    return false;
                }
                // failover: `if !entry.up() { continue; }` (busy dropped
                // with `_busy`), then `entry.member.open_session(..)`.
                let e = &mut s.members[m as usize];
                if !e.up {
                    e.in_flight -= 1;
                    App::FoPick(c)
                } else {
                    App::FoOpen {
                        c,
                        m,
                        conn_at: e.conn,
                        epoch,
                    }
                }
            }
            App::FoOpen {
                c,
                m,
                conn_at,
                epoch,
            } => {
                if !single(ch) {
                    return false;
                }
                let e = &mut s.members[m as usize];
                if e.conn != conn_at || !e.alive {
                    e.in_flight -= 1;
                    s.take_out(m);
                    App::FoPick(c)
                } else {
                    let real = e.open(Owner::App(i), None);
                    App::FoLogin { c, m, real, epoch }
                }
            }
            App::FoLogin { c, m, real, epoch } => {
                // ensure_logged_in under the slot's login lock (taken and
                // released: the member is counted busy meanwhile).
                if !single(ch) || s.login_by.is_some() {
                    return false;
                }
                App::FoReplay {
                    c,
                    m,
                    conn_at: s.members[m as usize].conn,
                    real,
                    epoch,
                }
            }
            App::FoReplay {
                c,
                m,
                conn_at,
                real,
                epoch,
            } => {
                if !single(ch) {
                    return false;
                }
                let op = s.sessions[iu].op;
                let e = &mut s.members[m as usize];
                e.in_flight -= 1;
                let replayed = e.conn == conn_at
                    && e.alive
                    && e.get(real).is_some_and(|r| r.owner == Owner::App(i));
                if !replayed {
                    if e.conn == conn_at && e.alive && e.get(real).is_some() {
                        s.wrong(Wrong::OtherSession);
                    }
                    s.take_out(m);
                    App::FoPick(c)
                } else {
                    // replay: the operation re-initialised, its Update data
                    // replayed.
                    e.real[real as usize - 1] = Some(Real {
                        owner: Owner::App(i),
                        op,
                    });
                    e.in_flight += 1;
                    App::FoPlace { c, m, real, epoch }
                }
            }
            App::FoPlace { c, m, real, epoch } => {
                if !single(ch) {
                    return false;
                }
                {
                    let e = &mut s.members[m as usize];
                    e.in_flight -= 1;
                    let epoch = if self.cfg.breaks.epoch_after_open {
                        e.epoch
                    } else {
                        epoch
                    };
                    let sess = &mut s.sessions[iu];
                    sess.member = m;
                    sess.real = real;
                    sess.epoch = epoch;
                    sess.orphan = false;
                    s.failed_over = true;
                    App::Busy(c)
                }
            }
            App::CloseIn { m, conn_at, real } => {
                if !single(ch) {
                    return false;
                }
                let e = &mut s.members[m as usize];
                if !self.cfg.breaks.close_not_busy {
                    e.in_flight -= 1;
                }
                if e.conn == conn_at && e.alive {
                    match e.get(real) {
                        Some(r) if r.owner == Owner::App(i) => e.real[real as usize - 1] = None,
                        Some(_) => s.wrong(Wrong::OtherSession),
                        None => s.take_out(m),
                    }
                } else {
                    s.take_out(m);
                }
                s.sessions[iu].open = false;
                // The session's lock is dropped, then the slot's counters
                // change under the login lock.
                s.sessions[iu].locked_by = None;
                App::CloseLogin
            }
            App::CloseLogin => {
                if !single(ch) || s.login_by.is_some() {
                    return false;
                }
                App::Leave(Call::Close, Res::Ok)
            }
            App::Leave(c, res) => {
                if !single(ch) {
                    return false;
                }
                if s.rt == Rt::Freed && res != Res::NotInitialized {
                    s.wrong(Wrong::UseAfterFree);
                }
                if s.sessions[iu].locked_by == Some(me) {
                    s.sessions[iu].locked_by = None;
                }
                s.in_flight -= 1;
                // What the design lets each call answer.
                let acceptable = match res {
                    Res::Ok | Res::NotInitialized | Res::NoMember => true,
                    Res::Other => false,
                };
                if !acceptable {
                    s.wrong(Wrong::WrongError);
                }
                match (res, c.next()) {
                    (Res::Ok, Some(n)) => App::Door(n),
                    (Res::NoMember, Some(_)) if c != Call::Open => App::Door(Call::Close),
                    _ => App::Done,
                }
            }
        };
        if let App::Lock(_) | App::Busy(_) | App::Stale(_) = next
            && s.rt == Rt::Freed
        {
            s.wrong(Wrong::UseAfterFree);
        }
        s.apps[iu] = next;
        true
    }

    /// The member call proper: the request sent, busy held.
    fn enter_member(&self, s: &mut State, iu: usize, c: Call) -> App {
        let sess = s.sessions[iu];
        App::In {
            c,
            m: sess.member,
            conn_at: s.members[sess.member as usize].conn,
            real: sess.real,
        }
    }

    fn rec(&self, s: &mut State, ch: u8) -> bool {
        let single = ch == 0;
        let next = match s.rec {
            Rec::Exited => return false,
            Rec::Idle => {
                if !single {
                    return false;
                }
                if s.rec_stop {
                    Rec::Exited
                } else if s.members.iter().all(|e| e.up) {
                    // Nothing failed: its polls find nothing due (one
                    // atomic load), so they are left out.
                    return false;
                } else {
                    // with(): counted in flight, FORKING looked at.
                    s.in_flight += 1;
                    if s.forking {
                        s.in_flight -= 1;
                        Rec::DoorWait
                    } else {
                        Rec::Load
                    }
                }
            }
            Rec::DoorWait => {
                if !single || s.forking {
                    return false;
                }
                Rec::Idle
            }
            Rec::Load => {
                if !single {
                    return false;
                }
                if s.rt == Rt::Published {
                    Rec::Pick
                } else {
                    Rec::Leave
                }
            }
            Rec::Pick => {
                // health.rs recover: the due members (time is abstract: any
                // member down), one per attempt.
                let due: Vec<u8> = (0..MEMBERS as u8)
                    .filter(|&m| !s.members[m as usize].up)
                    .collect();
                if due.is_empty() {
                    if !single {
                        return false;
                    }
                    Rec::Leave
                } else {
                    let Some(&m) = due.get(ch as usize) else {
                        return false;
                    };
                    if s.members[m as usize].in_flight != 0
                        && !self.cfg.breaks.recovery_ignores_in_flight
                    {
                        Rec::Leave
                    } else {
                        Rec::Reconnect(m)
                    }
                }
            }
            Rec::Reconnect(m) => {
                // Member::reconnect and token_info: the member comes back,
                // or not (ch 1: still dead, tried again later).
                let e = &mut s.members[m as usize];
                match ch {
                    0 => {
                        if self.cfg.rpc {
                            // conn.rs reconnect: a new connection, a new
                            // server process: its handles start again.
                            e.conn += 1;
                            e.next = 1;
                            e.real = [None; HANDLES];
                        }
                        e.alive = true;
                        Rec::Login(m)
                    }
                    1 if !e.alive => Rec::Leave,
                    _ => return false,
                }
            }
            Rec::Login(m) => {
                if !single || !s.lock_login(Tid::Rec) {
                    return false;
                }
                Rec::CloseAll(m)
            }
            Rec::CloseAll(m) => {
                if !single {
                    return false;
                }
                if s.inside(m) {
                    s.wrong(Wrong::ClosedUnderCall);
                }
                let e = &mut s.members[m as usize];
                e.real = [None; HANDLES];
                // login.anchor: the anchor opened again.
                e.open(Owner::Anchor, None);
                // pool.rs put_back.
                e.up = true;
                s.login_by = None;
                s.recovered = true;
                Rec::Leave
            }
            Rec::Leave => {
                if !single {
                    return false;
                }
                s.in_flight -= 1;
                Rec::Idle
            }
        };
        s.rec = next;
        true
    }

    fn fin(&self, s: &mut State) -> bool {
        let next = match s.fin {
            Fin::Done => return false,
            Fin::Start => {
                // finalize: LIFECYCLE, then unpublish.
                if s.lifecycle_locked {
                    return false;
                }
                s.lifecycle_locked = true;
                s.rt = Rt::Unpublished;
                Fin::Drain
            }
            Fin::Drain => {
                if s.in_flight != 0 && !self.cfg.breaks.finalize_no_drain {
                    return false;
                }
                // Recovery::stop: told to stop, then joined.
                s.rec_stop = true;
                Fin::Join
            }
            Fin::Join => {
                if s.rec != Rec::Exited && !self.cfg.breaks.finalize_no_drain {
                    return false;
                }
                Fin::Close(0)
            }
            Fin::Close(i) => {
                let iu = i as usize;
                if iu >= s.sessions.len() {
                    Fin::Free
                } else {
                    // close_everything: each session under its lock.
                    if s.sessions[iu].locked_by.is_some() {
                        return false;
                    }
                    let sess = s.sessions[iu];
                    if sess.open {
                        if !sess.orphan && !s.stale(iu) {
                            let m = sess.member;
                            if s.inside_any(m) {
                                s.wrong(Wrong::ClosedUnderCall);
                            }
                            let e = &mut s.members[m as usize];
                            if e.alive && e.get(sess.real).is_some() {
                                e.real[sess.real as usize - 1] = None;
                            }
                        }
                        s.sessions[iu].open = false;
                    }
                    Fin::Close(i + 1)
                }
            }
            Fin::Free => {
                if s.uses_runtime() {
                    s.wrong(Wrong::UseAfterFree);
                }
                s.rt = Rt::Freed;
                s.lifecycle_locked = false;
                Fin::Done
            }
        };
        s.fin = next;
        true
    }

    fn forker(&self, s: &mut State) -> bool {
        let next = match s.forker {
            Forker::Done => return false,
            Forker::Start => {
                // before_fork: calls held at the door.
                s.forking = true;
                Forker::Wait
            }
            Forker::Wait => {
                // ... until those in flight returned (own depth 0).
                if s.in_flight != 0 && !self.cfg.breaks.fork_no_wait {
                    return false;
                }
                let b = self.cfg.breaks;
                let mut module_held = [false; MEMBERS];
                for (m, held) in module_held.iter_mut().enumerate() {
                    *held = s.inside_any(m as u8)
                        || matches!(s.rec, Rec::Reconnect(x) | Rec::CloseAll(x) if x as usize == m);
                }
                // after_fork_in_child.
                s.child = Some(Child {
                    pc: ChildPc::Call,
                    published: b.child_keeps_runtime && s.rt == Rt::Published,
                    inherited: b.child_keeps_runtime && s.rt == Rt::Published,
                    in_flight: 0,
                    lifecycle_locked: b.child_keeps_lifecycle && s.lifecycle_locked,
                    module_held,
                });
                // after_fork_in_parent.
                s.forking = false;
                Forker::Done
            }
        };
        s.forker = next;
        true
    }

    fn child(&self, s: &mut State) -> bool {
        let mut wrong = None;
        let Some(c) = s.child.as_mut() else {
            return false;
        };
        c.pc = match c.pc {
            ChildPc::Done => return false,
            ChildPc::Call => {
                // A call before C_Initialize: CKR_CRYPTOKI_NOT_INITIALIZED
                // is what PKCS#11 asks of a new application.
                if c.published {
                    wrong = Some(Wrong::ChildWrong);
                }
                ChildPc::Init
            }
            ChildPc::Init => {
                // C_Initialize: LIFECYCLE, published()? (then
                // CKR_CRYPTOKI_ALREADY_INITIALIZED), a fresh runtime that
                // calls into each member's module.
                if c.lifecycle_locked || c.module_held.iter().any(|&h| h) {
                    return false;
                }
                if c.published {
                    wrong = Some(Wrong::ChildWrong);
                }
                c.published = true;
                c.inherited = false;
                ChildPc::Sign
            }
            ChildPc::Sign => {
                c.in_flight += 1;
                c.in_flight -= 1;
                ChildPc::Fin
            }
            ChildPc::Fin => {
                if c.lifecycle_locked {
                    return false;
                }
                c.published = false;
                ChildPc::Drain
            }
            ChildPc::Drain => {
                if c.in_flight != 0 {
                    return false;
                }
                ChildPc::Done
            }
        };
        if let Some(w) = wrong {
            s.wrong(w);
        }
        true
    }

    /// Every actor and choice that could move from a state.
    fn candidates(&self, s: &State, out: &mut Vec<Actor>) {
        for i in 0..s.apps.len() {
            out.push(Actor::App(i as u8));
        }
        out.push(Actor::Rec);
        if self.cfg.finalize {
            out.push(Actor::Fin);
        }
        if self.cfg.fork {
            out.push(Actor::Forker);
            out.push(Actor::Child);
        }
        for m in 0..MEMBERS {
            out.push(Actor::Kill(m as u8));
        }
    }

    fn can_move(&self, s: &State, a: Actor) -> bool {
        (0..3).any(|ch| self.step(s, a, ch).is_some())
    }

    fn is_worker(a: Actor) -> bool {
        matches!(a, Actor::App(_) | Actor::Fin | Actor::Forker | Actor::Child)
    }

    fn all_done(&self, s: &State) -> bool {
        s.apps.iter().all(|a| *a == App::Done)
            && (!self.cfg.finalize || s.fin == Fin::Done)
            && (!self.cfg.fork
                || (s.forker == Forker::Done
                    && s.child.as_ref().is_some_and(|c| c.pc == ChildPc::Done)))
    }

    fn worker_can_move(&self, s: &State) -> bool {
        let mut actors = Vec::new();
        self.candidates(s, &mut actors);
        actors
            .into_iter()
            .filter(|&a| Self::is_worker(a))
            .any(|a| self.can_move(s, a))
    }

    /// No deadlock: the workers are done, or one can move, or the recovery
    /// thread alone can bring the state to one where one can.
    fn live(&self, s: &State) -> bool {
        if s.wrong.is_some() || self.all_done(s) || self.worker_can_move(s) {
            return true;
        }
        let mut seen = vec![s.clone()];
        let mut frontier = vec![s.clone()];
        while let Some(x) = frontier.pop() {
            for ch in 0..3 {
                if let Some(y) = self.step(&x, Actor::Rec, ch) {
                    if self.worker_can_move(&y) {
                        return true;
                    }
                    if !seen.contains(&y) {
                        seen.push(y.clone());
                        frontier.push(y);
                    }
                }
            }
        }
        false
    }
}

/// The property names, as the table and the tests say them.
pub const NO_LOST_OPERATION: &str = "no lost operation";
pub const NO_CLOSE_UNDER_CALL: &str = "no session closed under a call in flight";
pub const NO_DEADLOCK: &str = "no deadlock";
/// A run where every thread finishes is reachable.
pub const EVERYTHING_FINISHES: &str = "everything finishes";
pub const SAFETY: [&str; 3] = [NO_LOST_OPERATION, NO_CLOSE_UNDER_CALL, NO_DEADLOCK];

impl Model for FailoverModel {
    type State = State;
    type Action = (Actor, u8);

    fn init_states(&self) -> Vec<State> {
        let apps = self.cfg.apps;
        vec![State {
            rt: Rt::Published,
            in_flight: 0,
            forking: false,
            lifecycle_locked: false,
            members: [MemberState::new(), MemberState::new()],
            login_by: None,
            sessions: vec![
                Sess {
                    open: false,
                    member: 0,
                    real: 0,
                    epoch: 0,
                    orphan: false,
                    op: None,
                    locked_by: None,
                };
                apps
            ],
            apps: vec![App::Door(Call::Open); apps],
            rec: Rec::Idle,
            rec_stop: false,
            fin: Fin::Start,
            forker: Forker::Start,
            child: None,
            kills_left: self.cfg.kills,
            failed_over: false,
            recovered: false,
            finished_after_failure: false,
            wrong: None,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<(Actor, u8)>) {
        let mut actors = Vec::new();
        self.candidates(s, &mut actors);
        for a in actors {
            for ch in 0..3 {
                actions.push((a, ch));
            }
        }
    }

    fn next_state(&self, s: &State, (a, ch): (Actor, u8)) -> Option<State> {
        self.step(s, a, ch)
    }

    /// The bound of the search: a member taken out (and brought back) more
    /// than `kills + 2` times is not followed further.
    fn within_boundary(&self, s: &State) -> bool {
        let bound = self.cfg.kills + 2;
        s.members
            .iter()
            .all(|e| e.epoch <= bound && e.conn <= bound)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut all = vec![
            Property::always(NO_LOST_OPERATION, |_, s: &State| {
                !matches!(
                    s.wrong,
                    Some(
                        Wrong::OtherSession
                            | Wrong::WrongResult
                            | Wrong::WrongError
                            | Wrong::UseAfterFree
                            | Wrong::ChildWrong
                    )
                )
            }),
            Property::always(NO_CLOSE_UNDER_CALL, |_, s: &State| {
                s.wrong != Some(Wrong::ClosedUnderCall)
            }),
            Property::always(NO_DEADLOCK, |m: &FailoverModel, s: &State| m.live(s)),
            Property::sometimes("a call completes after a failover", |_, s: &State| {
                s.finished_after_failure
            }),
            Property::sometimes("a member comes back", |_, s: &State| s.recovered),
            Property::sometimes(EVERYTHING_FINISHES, |m: &FailoverModel, s: &State| {
                s.wrong.is_none() && m.all_done(s)
            }),
        ];
        if let Some(only) = self.only {
            all.retain(|p| p.name == only);
        }
        all
    }
}

/// What one run of the checker found.
pub struct Report {
    /// Unique states the checker reached.
    pub states: usize,
    /// Wall time of the run.
    pub secs: f64,
    /// The safety properties violated, each with its counterexample.
    pub violated: Vec<(&'static str, Vec<(Actor, u8)>)>,
    /// The "sometimes" properties never reached (the model would be
    /// vacuous there).
    pub unreached: Vec<&'static str>,
}

/// Checks every reachable state of `cfg` (breadth first, `threads`
/// threads).
pub fn check(cfg: Config, threads: usize) -> Report {
    check_only(cfg, None, threads)
}

/// Like [`check`], for property `only` (if given) alone: the search stops
/// at its first counterexample.
pub fn check_only(cfg: Config, only: Option<&'static str>, threads: usize) -> Report {
    use stateright::Checker;
    let start = std::time::Instant::now();
    let mut model = FailoverModel::new(cfg.clone());
    model.only = only;
    let names: Vec<(&'static str, bool)> = model
        .properties()
        .iter()
        .map(|p| (p.name, SAFETY.contains(&p.name)))
        .collect();
    let checker = model.checker().threads(threads).spawn_bfs().join();
    let secs = start.elapsed().as_secs_f64();
    let mut violated = Vec::new();
    let mut unreached = Vec::new();
    for (name, safety) in names {
        match (checker.discovery(name), safety) {
            (Some(path), true) => {
                violated.push((name, path.into_actions()));
            }
            // Without a kill nothing fails over or comes back.
            (None, false) if cfg.kills > 0 || name == EVERYTHING_FINISHES => unreached.push(name),
            _ => {}
        }
    }
    Report {
        states: checker.unique_state_count(),
        secs,
        violated,
        unreached,
    }
}

/// The steps of a counterexample, one line each: who moved, where it is
/// now, and what the members and sessions look like.
pub fn explain(cfg: &Config, actions: &[(Actor, u8)]) -> Vec<String> {
    let model = FailoverModel::new(cfg.clone());
    let mut s = model.init_states().remove(0);
    let mut lines = Vec::new();
    for &(a, ch) in actions {
        let Some(n) = model.step(&s, a, ch) else {
            lines.push(format!("{a:?}/{ch}: not enabled"));
            break;
        };
        s = n;
        let who = match a {
            Actor::App(i) => format!("app{i} -> {:?}", s.apps[i as usize]),
            Actor::Rec => format!("recovery -> {:?}", s.rec),
            Actor::Fin => format!("C_Finalize -> {:?}", s.fin),
            Actor::Forker => format!("fork -> {:?}", s.forker),
            Actor::Child => format!("child -> {:?}", s.child.as_ref().map(|c| c.pc)),
            Actor::Kill(m) => format!("member{m} killed"),
        };
        let members = s
            .members
            .iter()
            .enumerate()
            .map(|(m, e)| {
                let real: Vec<String> = e
                    .real
                    .iter()
                    .enumerate()
                    .filter_map(|(h, r)| r.map(|r| format!("{}:{:?}", h + 1, r.owner)))
                    .collect();
                format!(
                    "m{m}[{} ep{} conn{} busy{} {}]",
                    if e.up { "up" } else { "down" },
                    e.epoch,
                    e.conn,
                    e.in_flight,
                    real.join(",")
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let sessions = s
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, x)| x.open)
            .map(|(i, x)| {
                format!(
                    "s{i}(m{} h{} ep{}{})",
                    x.member,
                    x.real,
                    x.epoch,
                    if x.orphan { " orphan" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let wrong = s.wrong.map(|w| format!("  WRONG: {w}")).unwrap_or_default();
        lines.push(format!("{who:<58} {members} {sessions}{wrong}"));
    }
    lines.push(format!(
        "threads: {:?}, recovery {:?}, C_Finalize {:?}, fork {:?}, child {:?}",
        s.apps, s.rec, s.fin, s.forker, s.child
    ));
    lines
}

/// What every configuration starts from: p11ha as it is, RPC members,
/// two application threads, one member kill.
pub fn base(name: &'static str) -> Config {
    Config {
        name,
        apps: 2,
        kills: 1,
        rpc: true,
        finalize: false,
        fork: false,
        breaks: Breaks::default(),
    }
}

/// The configurations CI checks: every property must hold in each.
pub fn cases() -> Vec<Config> {
    vec![
        base("RPC members, 2 threads, 1 kill"),
        Config {
            rpc: false,
            ..base("module members, 2 threads, 1 kill")
        },
        Config {
            finalize: true,
            ..base("C_Finalize racing, RPC, 2 threads, 1 kill")
        },
        Config {
            fork: true,
            apps: 1,
            ..base("fork, RPC, 1 thread, 1 kill")
        },
        Config {
            fork: true,
            kills: 0,
            ..base("fork, RPC, 2 threads, no kill")
        },
        Config {
            fork: true,
            finalize: true,
            kills: 0,
            ..base("fork and C_Finalize, RPC, 2 threads, no kill")
        },
        Config {
            fork: true,
            finalize: true,
            apps: 1,
            ..base("fork and C_Finalize, RPC, 1 thread, 1 kill")
        },
    ]
}

/// What went wrong at the end of a counterexample.
pub fn wrong_at_end(cfg: &Config, actions: &[(Actor, u8)]) -> Option<Wrong> {
    let model = FailoverModel::new(cfg.clone());
    let mut s = model.init_states().remove(0);
    for &(a, ch) in actions {
        s = model.step(&s, a, ch)?;
    }
    s.wrong
}

#[cfg(test)]
mod tests {
    //! Each deliberate break must be caught (the checker looks), the old
    //! code of the two races the model found among them, and the model
    //! with nothing broken must hold.
    use super::*;

    fn broken(c: Config, breaks: Breaks) -> Config {
        Config { breaks, ..c }
    }

    /// The checker finds a counterexample to `property` in `cfg`; what
    /// went wrong at its end.
    fn finds(cfg: Config, property: &'static str) -> Option<Wrong> {
        let r = check_only(cfg.clone(), Some(property), 2);
        let Some((_, path)) = r.violated.iter().find(|(p, _)| *p == property) else {
            panic!("no counterexample to {property:?} in {}", cfg.name);
        };
        wrong_at_end(&cfg, path)
    }

    fn holds(cfg: Config) {
        let r = check(cfg.clone(), 2);
        assert!(
            r.violated.is_empty() && r.unreached.is_empty(),
            "{}: violated {:?}, unreached {:?}",
            cfg.name,
            r.violated.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            r.unreached
        );
        assert!(r.states > 1000, "{}: only {} states", cfg.name, r.states);
    }

    #[test]
    fn one_thread_with_fork_and_finalize_holds() {
        holds(Config {
            apps: 1,
            fork: true,
            finalize: true,
            ..base("one thread")
        });
    }

    #[test]
    fn one_thread_as_p11ha_is_holds() {
        holds(Config {
            apps: 1,
            kills: 2,
            ..base("one thread, both members killed")
        });
    }

    #[test]
    fn epoch_read_after_the_open_runs_a_call_on_another_session() {
        // What p11ha did before the model found it.
        let cfg = broken(
            base("epoch after open"),
            Breaks {
                epoch_after_open: true,
                ..Breaks::default()
            },
        );
        assert_eq!(finds(cfg, NO_LOST_OPERATION), Some(Wrong::OtherSession));
    }

    #[test]
    fn no_up_check_after_the_epoch_read_runs_a_call_on_another_session() {
        // What p11ha did before 686a51c (loom found it): the open goes to a
        // member taken out between the pick and the epoch read, and
        // recovery puts the member back at the epoch the session holds.
        let cfg = broken(
            base("no up check after the epoch read"),
            Breaks {
                no_up_check_after_epoch: true,
                ..Breaks::default()
            },
        );
        assert_eq!(finds(cfg, NO_LOST_OPERATION), Some(Wrong::OtherSession));
    }

    #[test]
    fn close_session_not_counted_busy_is_closed_under_recovery() {
        // What p11ha did before the model found it.
        let cfg = broken(
            Config {
                rpc: false,
                ..base("close not busy")
            },
            Breaks {
                close_not_busy: true,
                ..Breaks::default()
            },
        );
        assert_eq!(
            finds(cfg, NO_CLOSE_UNDER_CALL),
            Some(Wrong::ClosedUnderCall)
        );
    }

    #[test]
    fn busy_counted_after_the_staleness_check_is_caught() {
        let cfg = broken(
            Config {
                rpc: false,
                ..base("busy after stale")
            },
            Breaks {
                busy_after_stale: true,
                ..Breaks::default()
            },
        );
        assert_eq!(
            finds(cfg, NO_CLOSE_UNDER_CALL),
            Some(Wrong::ClosedUnderCall)
        );
    }

    #[test]
    fn recovery_not_waiting_for_calls_in_flight_is_caught() {
        let cfg = broken(
            Config {
                rpc: false,
                ..base("recovery ignores in_flight")
            },
            Breaks {
                recovery_ignores_in_flight: true,
                ..Breaks::default()
            },
        );
        assert_eq!(
            finds(cfg, NO_CLOSE_UNDER_CALL),
            Some(Wrong::ClosedUnderCall)
        );
    }

    #[test]
    fn finalize_not_draining_is_caught() {
        let cfg = broken(
            Config {
                apps: 1,
                finalize: true,
                ..base("finalize does not drain")
            },
            Breaks {
                finalize_no_drain: true,
                ..Breaks::default()
            },
        );
        assert_eq!(finds(cfg, NO_LOST_OPERATION), Some(Wrong::UseAfterFree));
    }

    #[test]
    fn fork_not_waiting_for_calls_is_caught_as_a_deadlock_in_the_child() {
        let cfg = broken(
            Config {
                apps: 1,
                fork: true,
                ..base("fork does not wait")
            },
            Breaks {
                fork_no_wait: true,
                ..Breaks::default()
            },
        );
        assert_eq!(finds(cfg, NO_DEADLOCK), None);
    }

    #[test]
    fn child_keeping_the_parents_runtime_is_caught() {
        let cfg = broken(
            Config {
                apps: 1,
                fork: true,
                ..base("child keeps the runtime")
            },
            Breaks {
                child_keeps_runtime: true,
                ..Breaks::default()
            },
        );
        assert_eq!(finds(cfg, NO_LOST_OPERATION), Some(Wrong::ChildWrong));
    }

    #[test]
    fn child_keeping_the_lifecycle_lock_is_caught_as_a_deadlock() {
        let cfg = broken(
            Config {
                apps: 1,
                fork: true,
                finalize: true,
                ..base("child keeps LIFECYCLE")
            },
            Breaks {
                child_keeps_lifecycle: true,
                ..Breaks::default()
            },
        );
        assert_eq!(finds(cfg, NO_DEADLOCK), None);
    }
}
