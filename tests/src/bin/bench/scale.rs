//! The scale part of p11ha-bench (`--only scale`): does spreading sessions over N members give N
//! times the throughput, when the members and not this machine's cores are the limit?
//!
//! Local SoftHSM members share the machine's cores, so adding one adds no capacity. Here every
//! member has a capacity of its own: the test build of libp11ha.so (the fault adapter) serves
//! each member's operations in turns of a fixed service time T (`P11HA_FAULT_SERVICE_US`), one
//! after the other, so that a member completes at most 1/T signatures per second however many
//! threads wait on it, as an HSM of fixed capacity does. T is chosen so that the cores are far
//! from busy (at 2 ms, four members sign 2,000 times a second, about a fifth of one core). It is
//! a stand-in for an HSM's capacity, not a model of one.
//!
//! Configurations, each a child process (this program with `--scale-child`) over its own copies
//! of N identical SoftHSM tokens: N = 1, 2, 3, 4 members at full speed (every member T), and
//! N = 2, 3, 4 with the last member at half speed (2T). Each has `--scale-threads` application
//! threads per member (default 8) signing with ECDSA P-256, in two workloads:
//!
//! - `pinned`: each thread opens its own session once and signs on it in a loop; placement
//!   happens once, at C_OpenSession, and the session stays where it was put;
//! - `request`: each thread opens a session, signs once and closes it, in a loop (a session per
//!   request, as a server that takes a session from the library per job does); every operation
//!   is placed anew.
//!
//! A member loses capacity only when no thread has an operation queued on it: eight threads per
//! member keep seven turns (14 ms at 2 ms) queued behind the one served, so that a thread the
//! scheduler wakes late, on a machine busy with other work, costs nothing. With four, the
//! medians fell to 0.81-0.95 of the capacity while builds took 86% of the CPUs.
//!
//! The configurations take turns in slices (order rotating), as the throughput part's do, and the
//! whole is repeated `--scale-rounds` times. Each configuration's rate in a round is compared
//! with the one-member rate of the same round (measured side by side with it): the goal is at
//! least 0.9 N at full speed, and with one member at half speed at least 0.9 (N - 0.5), which is
//! what the members can give when the slow one does not hold the others back. Rates and ratios
//! are reported as min/median/max over the rounds. Per member, the share of the signatures it
//! made and their mean latency (call to return, the wait in its queue included) show how the
//! work was spread.

use p11ha_tests::pipe::ChildPipe;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::{HaApi, TOKEN_LABEL, USER_PIN, cpu_probe, find_key, one_line, run, write_conf};

/// The most members measured.
const MAX_MEMBERS: usize = 4;
/// The 32 bytes signed (CKM_ECDSA signs a digest as given).
const DIGEST: [u8; 32] = *b"p11ha-bench scale: the digest..!";
/// Warm-up before every slice but the first of a measurement.
const SLICE_WARMUP_SECONDS: f64 = 0.02;

/// What the scale part is asked to do (`--scale-*` options).
#[derive(Clone, Debug)]
pub(super) struct ScaleOptions {
    /// The service time of a full-speed member, microseconds.
    pub service_us: u32,
    /// Application threads per member.
    pub threads: usize,
    pub rounds: usize,
    /// Time per configuration, workload and round, seconds.
    pub seconds: f64,
    pub slices: usize,
    /// `HA` or `WLD`.
    pub mode: &'static str,
}

impl Default for ScaleOptions {
    fn default() -> Self {
        ScaleOptions {
            service_us: 2000,
            threads: 8,
            rounds: 5,
            seconds: 1.5,
            slices: 5,
            mode: "HA",
        }
    }
}

pub(super) const USAGE: &str =
    "  --scale-us US  the scale part: a member's service time per signature (default 2000)
  --scale-threads N  application threads per member (default 8)
  --scale-rounds N  repetitions; min/median/max reported (default 5)
  --scale-seconds S  time per configuration, workload and round (default 1.5)
  --scale-slices N  slices that time is cut into (default 5)
  --scale-mode M  HA or WLD (default HA)";

impl ScaleOptions {
    /// Applies `--scale-<name> value`.
    pub(super) fn set(&mut self, arg: &str, value: &str) -> Result<(), String> {
        let num = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or(format!("{arg}: not a positive number: {value}"))
        };
        match arg {
            "--scale-us" => self.service_us = num()? as u32,
            "--scale-threads" => self.threads = num()? as usize,
            "--scale-rounds" => self.rounds = num()? as usize,
            "--scale-seconds" => self.seconds = num()?,
            "--scale-slices" => self.slices = num()? as usize,
            "--scale-mode" => {
                self.mode = match value.to_ascii_uppercase().as_str() {
                    "HA" => "HA",
                    "WLD" => "WLD",
                    _ => return Err(format!("{arg}: HA or WLD, not {value}")),
                }
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
        if self.service_us == 0 || self.service_us > 500_000 {
            return Err("--scale-us must be from 1 to 500000".into());
        }
        if self.threads == 0 || self.threads > 16 || self.rounds == 0 || self.slices == 0 {
            return Err(
                "--scale-threads (1 to 16), --scale-rounds and --scale-slices must be \
                        at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Pinned,
    Request,
}

impl Workload {
    const ALL: [Workload; 2] = [Workload::Pinned, Workload::Request];

    fn key(self) -> &'static str {
        match self {
            Workload::Pinned => "pinned",
            Workload::Request => "request",
        }
    }

    fn from_key(k: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.key() == k)
    }

    fn title(self) -> &'static str {
        match self {
            Workload::Pinned => "a session per thread",
            Workload::Request => "a session per signature",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child: one configuration, driven over stdin/stdout
// ---------------------------------------------------------------------------------------------
//
// Protocol (as the throughput children's):
//   child -> parent at start:  "@kv <key> <value>" lines, then "@ready" or "@fatal <message>"
//   parent -> child:           "run <pinned|request> <seconds> <warm-up seconds>"
//   child -> parent:           "@result <signatures/s> <signatures> <elapsed-s> <per member>"
//                              where <per member> is "<signatures>:<total latency us>,..."
//                              or "@error <message>"
//   parent -> child:           "quit"   (child closes its sessions, C_Finalize, "@bye")

/// Per member: signatures made, and the sum of their latencies in microseconds.
type PerMember = Vec<(u64, u64)>;

/// `--scale-child NAME --lib PATH --threads N`.
pub(super) fn child_main(args: &[String]) -> ExitCode {
    let out = std::io::stdout();
    let mut out = out.lock();
    match child_run(args, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(out, "@fatal {}", one_line(&e));
            let _ = out.flush();
            ExitCode::FAILURE
        }
    }
}

fn child_run(args: &[String], out: &mut impl Write) -> Result<(), String> {
    let mut lib = None;
    let mut threads = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--lib" => lib = Some(val()?),
            "--threads" => threads = Some(val()?.parse::<usize>().map_err(|e| e.to_string())?),
            _ => return Err(format!("scale child: unknown argument {a}")),
        }
    }
    let lib = lib.ok_or("--lib missing")?;
    let threads = threads.ok_or("--threads missing")?;
    let kv = |out: &mut dyn Write, k: &str, v: &str| {
        writeln!(out, "@kv {k} {}", one_line(v)).map_err(|e| e.to_string())
    };

    let ctx = Pkcs11::new(&lib).map_err(|e| format!("loading {lib}: {e}"))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("C_Initialize: {e}"))?;
    let api = HaApi::load(&lib)?;
    let members = api.member_count();
    kv(out, "members", &members.to_string())?;
    let slot = Slot::try_from(0u64).map_err(|e| e.to_string())?;
    let control = ctx
        .open_rw_session(slot)
        .map_err(|e| format!("C_OpenSession: {e}"))?;
    control
        .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
        .map_err(|e| format!("C_Login: {e}"))?;
    let key = find_key(&control, ObjectClass::PRIVATE_KEY, "ec-key", 1)?;
    let public = find_key(&control, ObjectClass::PUBLIC_KEY, "ec-key", 1)?;

    // The pinned sessions, each checked: its signature verifies (on the control session).
    let mut sessions = Vec::new();
    let mut placed = vec![0usize; members];
    for i in 0..threads {
        let s = ctx
            .open_ro_session(slot)
            .map_err(|e| format!("C_OpenSession #{i}: {e}"))?;
        let sig = sign(&s, key)?;
        control
            .verify(&Mechanism::Ecdsa, public, &DIGEST, &sig)
            .map_err(|e| format!("session #{i}: the signature does not verify: {e}"))?;
        let m = api.session_member(&s)?;
        *placed.get_mut(m).ok_or("a session on an unknown member")? += 1;
        sessions.push((s, m));
    }
    let placed: Vec<String> = placed.iter().map(usize::to_string).collect();
    kv(out, "placement", &placed.join(","))?;
    kv(out, "signatures", "verified")?;
    writeln!(out, "@ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;

    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["run", workload, secs, warm] => {
                let reply = parse_run(workload, secs, warm).and_then(|(w, secs, warm)| {
                    measure(w, &ctx, slot, &api, &mut sessions, key, members, secs, warm)
                });
                match reply {
                    Ok((rate, n, elapsed, per)) => {
                        let per: Vec<String> =
                            per.iter().map(|(n, us)| format!("{n}:{us}")).collect();
                        writeln!(out, "@result {rate} {n} {elapsed} {}", per.join(","))
                    }
                    Err(e) => writeln!(out, "@error {}", one_line(&e)),
                }
                .map_err(|e| e.to_string())?;
            }
            ["quit"] => break,
            _ => writeln!(out, "@error unknown command {line:?}").map_err(|e| e.to_string())?,
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    drop(sessions);
    let _ = control.logout();
    drop(control);
    ctx.finalize().map_err(|e| format!("C_Finalize: {e}"))?;
    writeln!(out, "@bye").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

fn parse_run(
    workload: &str,
    secs: &str,
    warm: &str,
) -> Result<(Workload, Duration, Duration), String> {
    let w = Workload::from_key(workload).ok_or(format!("unknown workload {workload}"))?;
    let d = |s: &str| {
        s.parse::<f64>()
            .map_err(|e| e.to_string())
            .and_then(|v| Duration::try_from_secs_f64(v).map_err(|e| e.to_string()))
    };
    Ok((w, d(secs)?, d(warm)?))
}

/// One ECDSA signature (C_SignInit, the length query, C_Sign), checked for its length.
fn sign(s: &Session, key: ObjectHandle) -> Result<Vec<u8>, String> {
    let sig = s
        .sign(&Mechanism::Ecdsa, key, &DIGEST)
        .map_err(|e| format!("ECDSA sign: {e}"))?;
    if sig.len() != 64 {
        return Err(format!("ECDSA signature has {} bytes", sig.len()));
    }
    Ok(sig)
}

/// One signature of `workload` by one thread: on its own session, or on a session of its own
/// opened and closed for it. Which member made it.
fn one(
    workload: Workload,
    ctx: &Pkcs11,
    slot: Slot,
    api: &HaApi,
    pinned: &(Session, usize),
    key: ObjectHandle,
) -> Result<usize, String> {
    match workload {
        Workload::Pinned => sign(&pinned.0, key).map(|_| pinned.1),
        Workload::Request => {
            let s = ctx
                .open_ro_session(slot)
                .map_err(|e| format!("C_OpenSession: {e}"))?;
            let m = api.session_member(&s)?;
            sign(&s, key)?;
            s.close().map_err(|e| format!("C_CloseSession: {e}"))?;
            Ok(m)
        }
    }
}

/// Runs `workload` on one thread per pinned session: warm-up, then all start together and run
/// for `secs`. (signatures per second completed within the window, signatures, the window's
/// length, per member).
#[allow(clippy::too_many_arguments)]
fn measure(
    workload: Workload,
    ctx: &Pkcs11,
    slot: Slot,
    api: &HaApi,
    sessions: &mut [(Session, usize)],
    key: ObjectHandle,
    members: usize,
    secs: Duration,
    warm: Duration,
) -> Result<(f64, u64, f64, PerMember), String> {
    let barrier = Barrier::new(sessions.len());
    // One window for all the threads, from the first one past the barrier: a thread the
    // scheduler wakes late does not stretch it.
    let window_start = std::sync::OnceLock::new();
    type Counted = Result<(u64, PerMember), String>;
    let results: Vec<Counted> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter_mut()
            .map(|pinned| {
                let barrier = &barrier;
                let window_start = &window_start;
                scope.spawn(move || -> Counted {
                    let pinned: &(Session, usize) = pinned;
                    let warm_end = Instant::now() + warm;
                    let mut warmed = Ok(());
                    loop {
                        if let Err(e) = one(workload, ctx, slot, api, pinned, key) {
                            warmed = Err(format!("during warm-up: {e}"));
                            break;
                        }
                        if Instant::now() >= warm_end {
                            break;
                        }
                    }
                    barrier.wait();
                    warmed?;
                    // Signatures count when they complete within the window: the members
                    // start it idle (everyone waited at the barrier), and what is still in
                    // their queues at its end is not counted.
                    let mut per = vec![(0u64, 0u64); members];
                    let end = *window_start.get_or_init(Instant::now) + secs;
                    let mut n = 0u64;
                    loop {
                        let t = Instant::now();
                        if t >= end {
                            return Ok((n, per));
                        }
                        let m = one(workload, ctx, slot, api, pinned, key)
                            .map_err(|e| format!("after {n} signatures: {e}"))?;
                        let done = Instant::now();
                        if done > end {
                            return Ok((n, per));
                        }
                        let slot = per.get_mut(m).ok_or("a session on an unknown member")?;
                        slot.0 += 1;
                        slot.1 += (done - t).as_micros() as u64;
                        n += 1;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut total = 0;
    let mut per = vec![(0u64, 0u64); members];
    for r in results {
        let (n, p) = r?;
        total += n;
        for (a, b) in per.iter_mut().zip(p) {
            a.0 += b.0;
            a.1 += b.1;
        }
    }
    let rate = total as f64 / secs.as_secs_f64();
    Ok((rate, total, secs.as_secs_f64(), per))
}

// ---------------------------------------------------------------------------------------------
// Parent: configurations, schedule, report
// ---------------------------------------------------------------------------------------------

/// One configuration: N members, the last one at half speed or not.
struct Config {
    name: String,
    members: usize,
    half: bool,
    /// `P11HA_FAULT_SERVICE_US`.
    service: Vec<u32>,
    dir: PathBuf,
}

impl Config {
    /// Its capacity, signatures per second, in units of one full-speed member.
    fn ideal(&self) -> f64 {
        self.members as f64 - if self.half { 0.5 } else { 0.0 }
    }
}

/// A running scale child.
struct ScaleChild {
    cfg: Config,
    pipe: ChildPipe,
    kv: BTreeMap<String, String>,
    failed: Option<String>,
}

impl ScaleChild {
    fn spawn(cfg: Config, o: &ScaleOptions, lib: &Path, softhsm: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("--scale-child")
            .arg(&cfg.name)
            .arg("--lib")
            .arg(lib)
            .arg("--threads")
            .arg((o.threads * cfg.members).to_string())
            .stderr(Stdio::inherit());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("ET_PTKC_")
                || k.starts_with("ET_HSM_")
                || k.starts_with("P11HA_")
                || k == "SOFTHSM2_CONF"
            {
                cmd.env_remove(&*k);
            }
        }
        let service: Vec<String> = cfg.service.iter().map(u32::to_string).collect();
        cmd.env("SOFTHSM2_CONF", cfg.dir.join("softhsm2.conf"))
            .env("P11HA_MODULES", softhsm)
            .env("ET_PTKC_GENERAL_LIBRARY_MODE", o.mode)
            .env("ET_PTKC_WLD_SLOT_0", TOKEN_LABEL)
            .env("ET_PTKC_HA_LOG_FILE", cfg.dir.join("ha.log"))
            .env("ET_PTKC_HA_LOG_NAME", "p11ha-bench")
            .env("P11HA_FAULT_SERVICE_US", service.join(","));
        Ok(ScaleChild {
            pipe: ChildPipe::spawn(&mut cmd, &format!("scale {}", cfg.name))?,
            cfg,
            kv: BTreeMap::new(),
            failed: None,
        })
    }

    fn wait_ready(&mut self) {
        let r = loop {
            match self.pipe.reply() {
                Ok(l) if l == "ready" => break Ok(()),
                Ok(l) => match l.split_once(' ') {
                    Some(("kv", rest)) => {
                        let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                        self.kv.insert(k.to_string(), v.to_string());
                    }
                    Some(("fatal", msg)) => break Err(msg.to_string()),
                    _ => break Err(format!("unexpected reply {l:?}")),
                },
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = r {
            self.failed = Some(format!("start-up failed: {e}"));
        } else if self.kv.get("members").map(String::as_str) != Some(&self.cfg.members.to_string())
        {
            self.failed = Some(format!(
                "{} members joined, not {}",
                self.kv.get("members").map_or("?", String::as_str),
                self.cfg.members
            ));
        }
    }

    fn measure(&mut self, w: Workload, secs: f64, warm: f64) -> Result<(f64, PerMember), String> {
        self.pipe
            .send(&format!("run {} {secs} {warm}", w.key()))
            .map_err(|e| format!("child process gone: {e}"))?;
        let l = self.pipe.reply()?;
        let words: Vec<&str> = l.split_whitespace().collect();
        match words.as_slice() {
            ["result", rate, _n, _elapsed, per] => {
                let rate = rate.parse::<f64>().map_err(|e| e.to_string())?;
                let per = per
                    .split(',')
                    .map(|p| {
                        let (n, us) = p.split_once(':')?;
                        Some((n.parse().ok()?, us.parse().ok()?))
                    })
                    .collect::<Option<PerMember>>()
                    .ok_or(format!("bad reply {l:?}"))?;
                Ok((rate, per))
            }
            ["error", ..] => Err(l["error ".len()..].to_string()),
            _ => Err(format!("unexpected reply {l:?}")),
        }
    }

    fn quit(&mut self) {
        self.pipe.quit(self.failed.is_none());
    }
}

/// What the scale part measured, for the report.
pub(super) struct Outcome {
    opts: ScaleOptions,
    lib: PathBuf,
    children: Vec<ScaleChild>,
    /// rates[workload][config] = the rates of the rounds (NaN: failed in that round).
    rates: Vec<Vec<Vec<f64>>>,
    /// per[workload][config] = per member, summed over the rounds.
    per: Vec<Vec<PerMember>>,
    errors: Vec<String>,
    /// cpu[config] = (CPU seconds its process used while measured, seconds measured).
    cpu: Vec<(f64, f64)>,
    /// The share of the CPUs that other processes took, per slice.
    foreign: Vec<f64>,
    seconds: f64,
}

/// Makes the tokens, starts the configurations, measures. `scratch` is the bench's scratch
/// directory; `lib` the test build of libp11ha.so.
pub(super) fn measure_all(
    o: &ScaleOptions,
    root: &Path,
    scratch: &Path,
    softhsm: &Path,
    lib: &Path,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let base = scratch.join("scale-tokens");
    eprintln!("scale: creating {MAX_MEMBERS} tokens ...");
    run(Command::new("bash")
        .arg(root.join("scripts/mktokens.sh"))
        .arg(&base)
        .arg(MAX_MEMBERS.to_string())
        .env("SOFTHSM_MODULE", softhsm))?;
    let mut tokens: Vec<PathBuf> = std::fs::read_dir(base.join("tokens"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    tokens.sort();
    if tokens.len() != MAX_MEMBERS {
        return Err(format!("mktokens.sh made {} tokens", tokens.len()));
    }
    let t = o.service_us;
    let mut configs = Vec::new();
    for half in [false, true] {
        for n in 1..=MAX_MEMBERS {
            if half && n == 1 {
                continue;
            }
            let name = format!("{n}{}", if half { "-half" } else { "" });
            let dir = scratch.join(format!("scale-{name}"));
            std::fs::create_dir_all(dir.join("tokens")).map_err(|e| e.to_string())?;
            for token in &tokens[..n] {
                run(Command::new("cp")
                    .arg("-a")
                    .arg(token)
                    .arg(dir.join("tokens")))?;
            }
            write_conf(&dir)?;
            let mut service = vec![t; n];
            if half {
                service[n - 1] = 2 * t;
            }
            configs.push(Config {
                name,
                members: n,
                half,
                service,
                dir,
            });
        }
    }
    let mut children = Vec::new();
    for cfg in configs {
        children.push(ScaleChild::spawn(cfg, o, lib, softhsm)?);
    }
    for c in &mut children {
        c.wait_ready();
        match &c.failed {
            Some(why) => eprintln!("scale {}: NOT MEASURED: {why}", c.cfg.name),
            None => eprintln!(
                "scale {}: validated, ready (sessions per member: {})",
                c.cfg.name,
                c.kv.get("placement").map_or("?", String::as_str)
            ),
        }
    }

    let n_cfg = children.len();
    let workloads = Workload::ALL;
    let mut rates = vec![vec![Vec::new(); n_cfg]; workloads.len()];
    // per[workload][config]: per member, summed over the rounds.
    let mut per: Vec<Vec<PerMember>> = workloads
        .iter()
        .map(|_| {
            children
                .iter()
                .map(|c| vec![(0, 0); c.cfg.members])
                .collect()
        })
        .collect();
    let mut errors = Vec::new();
    let mut cpu = vec![(0.0, 0.0); n_cfg];
    let mut foreign = Vec::new();
    // SAFETY: sysconf has no preconditions.
    let tick = 1.0 / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64);
    let slice = o.seconds / o.slices as f64;
    let mut turn = 0;
    for round in 0..o.rounds {
        for (wi, &w) in workloads.iter().enumerate() {
            let mut acc = vec![(0.0f64, 0.0f64); n_cfg];
            for s in 0..o.slices {
                let warm = if s == 0 { 0.25 } else { SLICE_WARMUP_SECONDS };
                for k in 0..n_cfg {
                    let ci = (k + turn) % n_cfg;
                    let c = &mut children[ci];
                    if c.failed.is_some() {
                        continue;
                    }
                    let pids = [std::process::id(), c.pipe.child.id()];
                    let before = cpu_probe(&pids[1..]);
                    let all_before = cpu_probe(&pids);
                    let t0 = Instant::now();
                    let r = c.measure(w, slice, warm);
                    let dt = t0.elapsed().as_secs_f64();
                    if let (Some(b), Some(a)) = (before, cpu_probe(&pids[1..])) {
                        cpu[ci].0 += a.ours.saturating_sub(b.ours) as f64 * tick;
                        cpu[ci].1 += dt;
                    }
                    if let Some(f) = cpu_probe(&pids).and_then(|a| a.foreign_since(all_before?)) {
                        foreign.push(f);
                    }
                    match r {
                        Ok((rate, p)) => {
                            acc[ci].0 += rate * slice;
                            acc[ci].1 += slice;
                            for (a, b) in per[wi][ci].iter_mut().zip(p) {
                                a.0 += b.0;
                                a.1 += b.1;
                            }
                        }
                        Err(e) => {
                            errors.push(format!("{} {}: {e}", c.cfg.name, w.key()));
                            c.failed = Some(e);
                        }
                    }
                }
                turn += 1;
            }
            let mut line = format!("[scale round {}/{}] {:<8}", round + 1, o.rounds, w.key());
            for (ci, c) in children.iter().enumerate() {
                let rate = if acc[ci].1 > 0.0 && c.failed.is_none() {
                    acc[ci].0 / acc[ci].1
                } else {
                    f64::NAN
                };
                rates[wi][ci].push(rate);
                let _ = write!(line, "  {} {rate:.0}", c.cfg.name);
            }
            eprintln!("{line}");
        }
    }
    for c in &mut children {
        c.quit();
    }
    Ok(Outcome {
        opts: o.clone(),
        lib: lib.to_path_buf(),
        children,
        rates,
        per,
        errors,
        cpu,
        foreign,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// (min, median, max) of the finite values.
fn min_med_max(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    let median = if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    };
    Some((s[0], median, s[s.len() - 1]))
}

/// Prints the scale table and its key=value lines. Whether every configuration was measured.
pub(super) fn report(out: &Outcome) -> bool {
    let o = &out.opts;
    let t = o.service_us;
    let full = 1e6 / f64::from(t);
    let base = out
        .children
        .iter()
        .position(|c| c.cfg.members == 1 && !c.cfg.half);
    println!();
    println!(
        "scale: {} mode over 1 to {MAX_MEMBERS} SoftHSM members, each of fixed capacity: the \
         test build ({})\n\
         \x20 serves each member's signatures in turns of {t} us ({full:.0}/s; the half-speed \
         member {} us), P11HA_FAULT_SERVICE_US.\n\
         \x20 {} threads per member sign with ECDSA P-256 (C_SignInit, length query, C_Sign), \
         either on a session of\n\
         \x20 their own for the whole run (pinned) or on a session opened and closed for each \
         signature (request).\n\
         \x20 Configurations take turns in {} slices of {:.2} s, {} round(s); ratios are against \
         1 member in the same round.\n\
         \x20 Goal: ratio >= 0.9 x ideal, ideal = N at full speed, N - 0.5 with the last member \
         at half speed.",
        o.mode,
        out.lib.display(),
        2 * t,
        o.threads,
        o.slices,
        o.seconds / o.slices as f64,
        o.rounds,
    );
    println!();
    println!(
        "{:<9}{:<10}{:>8}  {:>22}  {:>6}  {:>20}  {:>5}  {:>5}  {:>4}  per member: share of signatures, mean latency",
        "workload",
        "members",
        "ideal/s",
        "sign/s min/median/max",
        "of id.",
        "ratio min/med/max",
        "ideal",
        "goal",
        "cpu"
    );
    for (wi, w) in Workload::ALL.into_iter().enumerate() {
        for (ci, c) in out.children.iter().enumerate() {
            let rates = &out.rates[wi][ci];
            let cell = min_med_max(rates)
                .map_or("-".into(), |(a, m, b)| format!("{a:.0} / {m:.0} / {b:.0}"));
            let ratios: Vec<f64> = match base {
                Some(b) => rates
                    .iter()
                    .zip(&out.rates[wi][b])
                    .map(|(r, b1)| r / b1)
                    .collect(),
                None => Vec::new(),
            };
            let ratio = min_med_max(&ratios)
                .map_or("-".into(), |(a, m, b)| format!("{a:.2} / {m:.2} / {b:.2}"));
            let per = &out.per[wi][ci];
            let total: u64 = per.iter().map(|p| p.0).sum();
            let shares: Vec<String> = per
                .iter()
                .map(|&(n, us)| {
                    format!(
                        "{:.0}% {:.1} ms",
                        100.0 * n as f64 / total.max(1) as f64,
                        us as f64 / n.max(1) as f64 / 1000.0
                    )
                })
                .collect();
            let members = format!(
                "{}{}",
                c.cfg.members,
                if c.cfg.half { " (half)" } else { "" }
            );
            let of_ideal = min_med_max(rates).map_or("-".into(), |(_, m, _)| {
                format!("{:.2}", m / (c.cfg.ideal() * full))
            });
            let (cpu_s, measured) = out.cpu[ci];
            let cpu = if measured > 0.0 {
                format!("{:.0}%", 100.0 * cpu_s / measured)
            } else {
                "-".into()
            };
            println!(
                "{:<9}{:<10}{:>8.0}  {cell:>22}  {of_ideal:>6}  {ratio:>20}  {:>5.2}  {:>5.2}  {cpu:>4}  {}",
                w.key(),
                members,
                c.cfg.ideal() * full,
                c.cfg.ideal(),
                0.9 * c.cfg.ideal(),
                shares.join(" | ")
            );
        }
    }
    println!(
        "(workloads: pinned = {}, request = {})",
        Workload::Pinned.title(),
        Workload::Request.title()
    );
    println!(
        "(of id.: the median against ideal/s, the members' nominal capacity; ratio: against 1 \
         member in the same round, goal 0.9 x ideal; cpu: one core's time used by the \
         configuration's process while measured, both workloads)"
    );
    let foreign_mean = out.foreign.iter().sum::<f64>() / out.foreign.len().max(1) as f64;
    let foreign_max = out.foreign.iter().copied().fold(0.0, f64::max);
    println!(
        "other processes took {:.0}% of the CPUs on average during the scale measurements (at most \
         {:.0}%)",
        100.0 * foreign_mean,
        100.0 * foreign_max
    );
    println!("scale run time: {:.0} s", out.seconds);
    let mut ok = out.errors.is_empty();
    for c in &out.children {
        if let Some(why) = &c.failed {
            ok = false;
            println!("  scale {}: FAILED: {why}", c.cfg.name);
        }
    }
    for e in &out.errors {
        println!("  scale error: {e}");
    }
    println!();
    println!(
        "# p11ha-bench scale results (key=value; rates are signatures/s, median of the rounds)"
    );
    println!("scale.mode={}", o.mode);
    println!("scale.service_us={t}");
    println!("scale.threads_per_member={}", o.threads);
    println!("scale.rounds={}", o.rounds);
    println!("scale.seconds={}", o.seconds);
    println!("scale.run_seconds={:.0}", out.seconds);
    println!("scale.foreign_cpu_mean_pct={:.0}", 100.0 * foreign_mean);
    println!("scale.foreign_cpu_max_pct={:.0}", 100.0 * foreign_max);
    for (wi, w) in Workload::ALL.into_iter().enumerate() {
        for (ci, c) in out.children.iter().enumerate() {
            let key = format!("scale.{}.{}", w.key(), c.cfg.name);
            let rates = &out.rates[wi][ci];
            if let Some((a, m, b)) = min_med_max(rates) {
                println!("{key}={m:.0}");
                println!("{key}_min={a:.0}");
                println!("{key}_max={b:.0}");
            } else {
                println!("{key}=error");
            }
            if let Some(b) = base {
                let ratios: Vec<f64> = rates
                    .iter()
                    .zip(&out.rates[wi][b])
                    .map(|(r, b1)| r / b1)
                    .collect();
                if let Some((a, m, b)) = min_med_max(&ratios) {
                    println!("{key}_ratio={m:.3}");
                    println!("{key}_ratio_min={a:.3}");
                    println!("{key}_ratio_max={b:.3}");
                }
            }
            println!("{key}_ideal={:.1}", c.cfg.ideal());
            let rounds: Vec<String> = rates.iter().map(|v| format!("{v:.0}")).collect();
            println!("{key}_rounds={}", rounds.join(","));
            let per: Vec<String> = out.per[wi][ci]
                .iter()
                .map(|(n, us)| format!("{n}:{:.0}", *us as f64 / (*n).max(1) as f64))
                .collect();
            println!("{key}_per_member={}", per.join(","));
        }
    }
    for (ci, c) in out.children.iter().enumerate() {
        let (cpu_s, measured) = out.cpu[ci];
        if measured > 0.0 {
            println!(
                "scale.cpu_pct.{}={:.0}",
                c.cfg.name,
                100.0 * cpu_s / measured
            );
        }
        if let Some(p) = c.kv.get("placement") {
            println!("scale.placement.{}={p}", c.cfg.name);
        }
        println!("scale.check.{}.ok={}", c.cfg.name, c.failed.is_none());
    }
    ok
}
