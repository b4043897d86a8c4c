//! p11ha-bench: how much does going through libp11ha.so cost compared with SoftHSM directly?
//!
//! ```text
//! cargo build --release -p p11ha-ffi
//! cargo build --release -p p11ha-tests --bin p11ha-bench && target/release/p11ha-bench
//! ```
//!
//! Three configurations are measured, each in its own child process (this program run again
//! with `--child`), because a PKCS#11 library is a per-process singleton:
//!
//! - `direct`: SoftHSM itself, on the first of three identical tokens (the baseline);
//! - `wld1`: libp11ha.so in WLD mode, virtual slot 0 made of one SoftHSM token;
//! - `wld3`: libp11ha.so in WLD mode, virtual slot 0 made of three SoftHSM tokens.
//!
//! Each configuration is measured with one and with two application threads (each thread its
//! own session) for: ECDSA P-256 sign (CKM_ECDSA over a 32-byte digest), RSA-2048 sign
//! (CKM_SHA256_RSA_PKCS, single-part), SHA-256 and AES-256-CBC over 1 MiB fed in chunks through
//! multi-part calls, and C_GetSessionInfo. The three children stay alive for the whole run and the
//! parent asks them for one measurement at a time, so that the three numbers of a table row are
//! taken next to each other in time; the whole set is repeated `--rounds` times with the order
//! of the configurations rotated, and the best round is reported (noise from other processes on
//! the machine can only slow a measurement down).
//!
//! Nothing about speed is asserted. Correctness is: every configuration signs and verifies
//! (and rejects a tampered signature) before it is measured, its SHA-256 digest, AES-CBC
//! ciphertext and (deterministic) RSA signature must agree with the other configurations, and
//! every timed operation checks its own result cheaply (digest, RSA signature, last AES block),
//! so that a broken forwarder cannot post a fast wrong number.
//!
//! The benchmark only uses the public PKCS#11 API, through the `cryptoki` crate's safe wrappers.
//! Those query output lengths before producing output: one signature is C_SignInit + 2 C_Sign,
//! one 1 MiB encryption is C_EncryptInit + 2 C_EncryptUpdate per chunk + 2 C_EncryptFinal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

const DEFAULT_SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN_LABEL: &str = "TokName";
const USER_PIN: &str = "1234";
/// Size of the input of the SHA-256 and AES-CBC measurements.
const INPUT_LEN: usize = 1 << 20;
/// The message signed by the RSA measurement (CKM_SHA256_RSA_PKCS hashes it).
const RSA_MESSAGE: &[u8] = b"p11ha-bench: RSA-2048 PKCS#1 v1.5 SHA-256 message";
/// The AES-CBC initialisation vector.
const AES_IV: [u8; 16] = *b"p11ha-bench IV!!";
/// Sessions used by the measurement threads (the most threads measured).
const MAX_THREADS: usize = 2;
const THREADS: [usize; 2] = [1, 2];
/// Duration of each operation in the unrecorded warm-up pass before the measurements.
const WARMUP_PASS_SECONDS: f64 = 0.2;
/// Warm-up before every slice but the first of a measurement.
const SLICE_WARMUP_SECONDS: f64 = 0.02;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child_main(&args[1..])
    } else {
        parent_main(&args)
    }
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Ecdsa,
    Rsa,
    Sha256,
    AesCbc,
    SessionInfo,
}

impl Op {
    const ALL: [Op; 5] = [Op::Ecdsa, Op::Rsa, Op::Sha256, Op::AesCbc, Op::SessionInfo];

    /// Name on the command line and in the child protocol.
    fn key(self) -> &'static str {
        match self {
            Op::Ecdsa => "ecdsa",
            Op::Rsa => "rsa",
            Op::Sha256 => "sha256",
            Op::AesCbc => "aes",
            Op::SessionInfo => "info",
        }
    }

    fn from_key(key: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.key() == key)
    }

    /// Row title in the table.
    fn title(self) -> &'static str {
        match self {
            Op::Ecdsa => "ECDSA P-256 sign/s",
            Op::Rsa => "RSA-2048 sign/s",
            Op::Sha256 => "SHA-256 MB/s",
            Op::AesCbc => "AES-256-CBC MB/s",
            Op::SessionInfo => "C_GetSessionInfo calls/s",
        }
    }

    /// Name in the key=value block.
    fn kv_name(self) -> &'static str {
        match self {
            Op::Ecdsa => "ecdsa_p256_sign_per_s",
            Op::Rsa => "rsa2048_sha256_sign_per_s",
            Op::Sha256 => "sha256_mb_per_s",
            Op::AesCbc => "aes256_cbc_encrypt_mb_per_s",
            Op::SessionInfo => "get_session_info_calls_per_s",
        }
    }

    /// Operations counted per call of [`run_once`].
    fn batch(self) -> u64 {
        match self {
            // Short enough that reading the clock after every call would show.
            Op::SessionInfo => 64,
            _ => 1,
        }
    }

    /// Units (signatures, MB = 10^6 bytes, calls) per counted operation.
    fn units(self) -> f64 {
        match self {
            Op::Sha256 | Op::AesCbc => INPUT_LEN as f64 / 1e6,
            _ => 1.0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child: one configuration, one PKCS#11 library, driven over stdin/stdout
// ---------------------------------------------------------------------------------------------
//
// Protocol (stdout lines that do not start with '@' are passed through by the parent):
//   child -> parent at start:  "@kv <key> <value>" lines, then "@ready" or "@fatal <message>"
//   parent -> child:           "run <op> <threads> <seconds> <warmup-seconds>"
//   child -> parent:           "@result <units/s> <ops> <elapsed-s>" or "@error <message>"
//   parent -> child:           "quit"   (child closes its sessions, C_Finalize, "@bye")

struct Keys {
    ec_priv: ObjectHandle,
    ec_pub: ObjectHandle,
    rsa_priv: ObjectHandle,
    rsa_pub: ObjectHandle,
    aes: ObjectHandle,
}

/// Everything a timed operation needs, shared read-only by the threads.
struct Work {
    keys: Keys,
    input: Vec<u8>,
    chunk: usize,
    /// SHA-256 of `input`; also the 32-byte "digest" that ECDSA signs.
    digest: Vec<u8>,
    /// The RSA signature of RSA_MESSAGE (PKCS#1 v1.5 is deterministic).
    rsa_sig: Vec<u8>,
    /// The last AES-CBC ciphertext block of `input` (it depends on every input block).
    aes_last: Vec<u8>,
}

fn child_main(args: &[String]) -> ExitCode {
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
    let name = args
        .first()
        .ok_or("--child needs a configuration name")?
        .clone();
    let mut lib = None;
    let mut slot = None;
    let mut chunk = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--lib" => lib = Some(val()?),
            "--slot" => slot = Some(val()?.parse::<u64>().map_err(|e| e.to_string())?),
            "--chunk" => chunk = Some(val()?.parse::<usize>().map_err(|e| e.to_string())?),
            _ => return Err(format!("child {name}: unknown argument {a}")),
        }
    }
    let lib = lib.ok_or("--lib missing")?;
    let slot = slot.ok_or("--slot missing")?;
    let chunk = chunk.ok_or("--chunk missing")?;
    let kv = |out: &mut dyn Write, k: &str, v: &str| {
        writeln!(out, "@kv {k} {}", one_line(v)).map_err(|e| e.to_string())
    };

    let ctx = Pkcs11::new(&lib).map_err(|e| format!("loading {lib}: {e}"))?;
    // SoftHSM turns its own locking off without CKF_OS_LOCKING_OK, and we are threaded.
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("C_Initialize: {e}"))?;
    let info = ctx.get_library_info().map_err(|e| e.to_string())?;
    kv(
        out,
        "library",
        &format!(
            "{} / {} {}",
            info.manufacturer_id().trim(),
            info.library_description().trim(),
            info.library_version()
        ),
    )?;
    let slot = Slot::try_from(slot).map_err(|e| e.to_string())?;
    let token = ctx
        .get_token_info(slot)
        .map_err(|e| format!("C_GetTokenInfo(slot {slot}): {e}"))?;
    kv(
        out,
        "token",
        &format!(
            "slot {slot}, label {}, serial {}",
            token.label().trim(),
            token.serial_number().trim()
        ),
    )?;
    if token.label().trim() != TOKEN_LABEL {
        return Err(format!(
            "slot {slot} holds token {:?}, not {TOKEN_LABEL}",
            token.label()
        ));
    }

    // Log in once, on a session that stays open for the whole run; the measurement sessions
    // are opened afterwards and share the login (PKCS#11 login is per token and application).
    let control = ctx
        .open_rw_session(slot)
        .map_err(|e| format!("C_OpenSession: {e}"))?;
    control
        .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
        .map_err(|e| format!("C_Login: {e}"))?;
    let keys = Keys {
        ec_priv: find_key(&control, ObjectClass::PRIVATE_KEY, "ec-key", 1)?,
        ec_pub: find_key(&control, ObjectClass::PUBLIC_KEY, "ec-key", 1)?,
        rsa_priv: find_key(&control, ObjectClass::PRIVATE_KEY, "rsa-key", 2)?,
        rsa_pub: find_key(&control, ObjectClass::PUBLIC_KEY, "rsa-key", 2)?,
        aes: find_key(&control, ObjectClass::SECRET_KEY, "aes-key", 3)?,
    };
    let mut work = Work {
        keys,
        input: test_input(),
        chunk,
        digest: Vec::new(),
        rsa_sig: Vec::new(),
        aes_last: Vec::new(),
    };

    // Validation on the control session: this sets the expected values.
    work.digest = digest_all(&control, &work).map_err(|e| format!("SHA-256: {e}"))?;
    if work.digest.len() != 32 {
        return Err(format!("SHA-256 digest has {} bytes", work.digest.len()));
    }
    kv(out, "sha256", &hex(&work.digest))?;
    let ciphertext = encrypt_all(&control, &work).map_err(|e| format!("AES-CBC: {e}"))?;
    if ciphertext.len() != INPUT_LEN {
        return Err(format!(
            "AES-CBC of {INPUT_LEN} bytes gave {} bytes",
            ciphertext.len()
        ));
    }
    work.aes_last = ciphertext[INPUT_LEN - 16..].to_vec();
    kv(
        out,
        "aes_cbc_fnv64",
        &format!("{:016x}", fnv64(&ciphertext)),
    )?;
    work.rsa_sig = control
        .sign(&Mechanism::Sha256RsaPkcs, work.keys.rsa_priv, RSA_MESSAGE)
        .map_err(|e| format!("RSA sign: {e}"))?;
    if work.rsa_sig.len() != 256 {
        return Err(format!(
            "RSA-2048 signature has {} bytes",
            work.rsa_sig.len()
        ));
    }
    kv(
        out,
        "rsa_sig_fnv64",
        &format!("{:016x}", fnv64(&work.rsa_sig)),
    )?;
    let mut warnings = Vec::new();
    check_signatures(&control, &work, &mut warnings)
        .map_err(|e| format!("control session: {e}"))?;

    // The measurement sessions, validated one by one (in WLD mode with several members they
    // may live on different members).
    let mut sessions = Vec::new();
    for i in 0..MAX_THREADS {
        let s = ctx
            .open_rw_session(slot)
            .map_err(|e| format!("C_OpenSession #{i}: {e}"))?;
        check_signatures(&s, &work, &mut warnings)
            .map_err(|e| format!("measurement session #{i}: {e}"))?;
        for op in Op::ALL {
            run_once(op, &s, &work).map_err(|e| format!("measurement session #{i}: {e}"))?;
        }
        sessions.push(s);
    }
    kv(out, "signatures", "verified")?;
    for w in &warnings {
        kv(out, "warning", w)?;
    }
    writeln!(out, "@ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;

    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["run", op, threads, secs, warm] => {
                let reply = parse_run(op, threads, secs, warm).and_then(|(op, n, secs, warm)| {
                    if n == 0 || n > sessions.len() {
                        return Err(format!("cannot run {n} threads"));
                    }
                    measure(op, &mut sessions[..n], secs, warm, &work)
                });
                match reply {
                    Ok((rate, ops, elapsed)) => writeln!(out, "@result {rate} {ops} {elapsed}"),
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
    op: &str,
    threads: &str,
    secs: &str,
    warm: &str,
) -> Result<(Op, usize, Duration, Duration), String> {
    let op = Op::from_key(op).ok_or_else(|| format!("unknown operation {op}"))?;
    let n = threads.parse::<usize>().map_err(|e| e.to_string())?;
    let secs = Duration::try_from_secs_f64(secs.parse::<f64>().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let warm = Duration::try_from_secs_f64(warm.parse::<f64>().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok((op, n, secs, warm))
}

fn find_key(s: &Session, class: ObjectClass, label: &str, id: u8) -> Result<ObjectHandle, String> {
    let found = s
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(vec![id]),
        ])
        .map_err(|e| format!("finding {class} {label}: {e}"))?;
    match found.as_slice() {
        [h] => Ok(*h),
        _ => Err(format!(
            "expected one {class} labelled {label} with id {id:02x}, found {}",
            found.len()
        )),
    }
}

/// ECDSA and RSA: sign, verify, and make sure a tampered signature is refused.
fn check_signatures(s: &Session, w: &Work, warnings: &mut Vec<String>) -> Result<(), String> {
    let k = &w.keys;
    let ec_sig = s
        .sign(&Mechanism::Ecdsa, k.ec_priv, &w.digest)
        .map_err(|e| format!("ECDSA sign: {e}"))?;
    if ec_sig.len() != 64 {
        return Err(format!("ECDSA P-256 signature has {} bytes", ec_sig.len()));
    }
    s.verify(&Mechanism::Ecdsa, k.ec_pub, &w.digest, &ec_sig)
        .map_err(|e| format!("ECDSA signature does not verify: {e}"))?;
    check_tampered(
        s,
        &Mechanism::Ecdsa,
        k.ec_pub,
        &w.digest,
        &ec_sig,
        "ECDSA",
        warnings,
    )?;

    let rsa_sig = s
        .sign(&Mechanism::Sha256RsaPkcs, k.rsa_priv, RSA_MESSAGE)
        .map_err(|e| format!("RSA sign: {e}"))?;
    if rsa_sig != w.rsa_sig {
        return Err("RSA signature differs from the control session's".into());
    }
    s.verify(&Mechanism::Sha256RsaPkcs, k.rsa_pub, RSA_MESSAGE, &rsa_sig)
        .map_err(|e| format!("RSA signature does not verify: {e}"))?;
    check_tampered(
        s,
        &Mechanism::Sha256RsaPkcs,
        k.rsa_pub,
        RSA_MESSAGE,
        &rsa_sig,
        "RSA",
        warnings,
    )
}

fn check_tampered(
    s: &Session,
    mech: &Mechanism,
    key: ObjectHandle,
    data: &[u8],
    sig: &[u8],
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let mut bad = sig.to_vec();
    bad[sig.len() / 2] ^= 0x01;
    match s.verify(mech, key, data, &bad) {
        Ok(()) => Err(format!("{what}: C_Verify accepted a tampered signature")),
        Err(CkError::Pkcs11(RvError::SignatureInvalid, _)) => Ok(()),
        Err(e) => {
            let w = format!(
                "{what}: C_Verify of a tampered signature answered {e}, not CKR_SIGNATURE_INVALID"
            );
            if !warnings.contains(&w) {
                warnings.push(w);
            }
            Ok(())
        }
    }
}

fn digest_all(s: &Session, w: &Work) -> cryptoki::error::Result<Vec<u8>> {
    s.digest_init(&Mechanism::Sha256)?;
    for c in w.input.chunks(w.chunk) {
        s.digest_update(c)?;
    }
    s.digest_final()
}

fn encrypt_all(s: &Session, w: &Work) -> cryptoki::error::Result<Vec<u8>> {
    s.encrypt_init(&Mechanism::AesCbc(AES_IV), w.keys.aes)?;
    let mut out = Vec::with_capacity(w.input.len());
    for c in w.input.chunks(w.chunk) {
        out.extend_from_slice(&s.encrypt_update(c)?);
    }
    out.extend_from_slice(&s.encrypt_final()?);
    Ok(out)
}

/// One counted unit of work ([`Op::batch`] operations), with a cheap check of its result.
fn run_once(op: Op, s: &Session, w: &Work) -> Result<(), String> {
    let k = &w.keys;
    match op {
        Op::Ecdsa => {
            let sig = s
                .sign(&Mechanism::Ecdsa, k.ec_priv, &w.digest)
                .map_err(|e| format!("ECDSA sign: {e}"))?;
            if sig.len() != 64 {
                return Err(format!("ECDSA signature has {} bytes", sig.len()));
            }
        }
        Op::Rsa => {
            let sig = s
                .sign(&Mechanism::Sha256RsaPkcs, k.rsa_priv, RSA_MESSAGE)
                .map_err(|e| format!("RSA sign: {e}"))?;
            if sig != w.rsa_sig {
                return Err("RSA signature differs from the expected one".into());
            }
        }
        Op::Sha256 => {
            let d = digest_all(s, w).map_err(|e| format!("SHA-256: {e}"))?;
            if d != w.digest {
                return Err("SHA-256 digest differs from the expected one".into());
            }
        }
        Op::AesCbc => {
            s.encrypt_init(&Mechanism::AesCbc(AES_IV), k.aes)
                .map_err(|e| format!("C_EncryptInit: {e}"))?;
            let mut total = 0;
            let mut last = Vec::new();
            for c in w.input.chunks(w.chunk) {
                let part = s
                    .encrypt_update(c)
                    .map_err(|e| format!("C_EncryptUpdate: {e}"))?;
                total += part.len();
                if part.len() >= 16 {
                    last = part;
                }
            }
            let fin = s
                .encrypt_final()
                .map_err(|e| format!("C_EncryptFinal: {e}"))?;
            total += fin.len();
            if fin.len() >= 16 {
                last = fin;
            }
            if total != w.input.len()
                || last.len() < 16
                || last[last.len() - 16..] != w.aes_last[..]
            {
                return Err("AES-CBC ciphertext differs from the expected one".into());
            }
        }
        Op::SessionInfo => {
            for _ in 0..Op::SessionInfo.batch() {
                let info = s
                    .get_session_info()
                    .map_err(|e| format!("C_GetSessionInfo: {e}"))?;
                if info.session_state() != SessionState::RwUser {
                    return Err(format!(
                        "session state is {:?}, not RwUser",
                        info.session_state()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Runs `op` on every session, one thread each: warm-up, then all threads start together and
/// run for `secs`. Returns (units per second summed over the threads, operations, longest
/// elapsed time in seconds).
fn measure(
    op: Op,
    sessions: &mut [Session],
    secs: Duration,
    warm: Duration,
    w: &Work,
) -> Result<(f64, u64, f64), String> {
    let barrier = Barrier::new(sessions.len());
    let results: Vec<Result<(u64, Duration), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter_mut()
            .map(|s| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let s: &Session = s;
                    let warm_end = Instant::now() + warm;
                    let mut warmed = Ok(());
                    loop {
                        if let Err(e) = run_once(op, s, w) {
                            warmed = Err(format!("during warm-up: {e}"));
                            break;
                        }
                        if Instant::now() >= warm_end {
                            break;
                        }
                    }
                    // Every thread reaches the barrier, even after an error.
                    barrier.wait();
                    warmed?;
                    let start = Instant::now();
                    let end = start + secs;
                    let mut n = 0u64;
                    loop {
                        let now = Instant::now();
                        if now >= end {
                            return Ok((n, now - start));
                        }
                        run_once(op, s, w).map_err(|e| format!("after {n} operations: {e}"))?;
                        n += op.batch();
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut rate = 0.0;
    let mut ops = 0;
    let mut longest = 0.0f64;
    for r in results {
        let (n, elapsed) = r?;
        rate += n as f64 * op.units() / elapsed.as_secs_f64();
        ops += n;
        longest = longest.max(elapsed.as_secs_f64());
    }
    Ok((rate, ops, longest))
}

/// 1 MiB of deterministic, incompressible-looking bytes (xorshift64*).
fn test_input() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(INPUT_LEN);
    while v.len() < INPUT_LEN {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(INPUT_LEN);
    v
}

fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn hex(data: &[u8]) -> String {
    data.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

// ---------------------------------------------------------------------------------------------
// Parent: token directories, children, schedule, report
// ---------------------------------------------------------------------------------------------

struct Options {
    seconds: f64,
    warmup: f64,
    rounds: usize,
    slices: usize,
    chunk: usize,
    lib: Option<PathBuf>,
    softhsm: PathBuf,
    ops: Vec<Op>,
    keep: bool,
}

const USAGE: &str = "\
usage: p11ha-bench [options]
  --seconds S    duration of each measurement, per configuration (default 2)
  --slices N     the measurement is cut into N slices, configurations taking turns (default 10)
  --warmup S     warm-up of each measurement, per thread (default 0.25)
  --rounds N     repetitions of the whole set; the best is reported (default 1)
  --chunk BYTES  C_DigestUpdate/C_EncryptUpdate chunk, multiple of 16 (default 16384)
  --lib PATH     libp11ha.so (default <repo>/target/release/libp11ha.so)
  --softhsm PATH SoftHSM module (default /usr/lib/softhsm/libsofthsm2.so)
  --ops LIST     comma-separated subset of ecdsa,rsa,sha256,aes,info (default all)
  --keep         keep the scratch token directories";

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        seconds: 2.0,
        warmup: 0.25,
        rounds: 1,
        slices: 10,
        chunk: 16 * 1024,
        lib: None,
        softhsm: PathBuf::from(DEFAULT_SOFTHSM),
        ops: Op::ALL.to_vec(),
        keep: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{a}: not a number: {v}"))
        };
        match a.as_str() {
            "--seconds" => o.seconds = num(val()?)?,
            "--warmup" => o.warmup = num(val()?)?,
            "--rounds" => o.rounds = num(val()?)? as usize,
            "--slices" => o.slices = num(val()?)? as usize,
            "--chunk" => o.chunk = num(val()?)? as usize,
            "--lib" => o.lib = Some(PathBuf::from(val()?)),
            "--softhsm" => o.softhsm = PathBuf::from(val()?),
            "--ops" => {
                o.ops = val()?
                    .split(',')
                    .map(|k| Op::from_key(k.trim()).ok_or(format!("--ops: unknown operation {k}")))
                    .collect::<Result<_, _>>()?;
            }
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a}\n{USAGE}")),
        }
    }
    let finite = o.seconds.is_finite() && o.warmup.is_finite();
    if !finite || o.seconds <= 0.0 || o.warmup < 0.0 {
        return Err("--seconds must be positive and --warmup not negative".into());
    }
    if o.rounds == 0 || o.slices == 0 || o.ops.is_empty() {
        return Err("--rounds, --slices and --ops must not be empty".into());
    }
    if o.chunk == 0 || !o.chunk.is_multiple_of(16) || o.chunk > INPUT_LEN {
        return Err(format!(
            "--chunk must be a multiple of 16 between 16 and {INPUT_LEN}"
        ));
    }
    Ok(o)
}

/// The repository: from the build (CARGO_MANIFEST_DIR is <repo>/tests), else from the path
/// of this executable (<repo>/target/<profile>/p11ha-bench).
fn repo_root() -> Result<PathBuf, String> {
    let mut candidates = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("..")];
    if let Ok(exe) = std::env::current_exe()
        && let Some(root) = exe.ancestors().nth(3)
    {
        candidates.push(root.to_path_buf());
    }
    candidates
        .into_iter()
        .find(|c| c.join("scripts/mktokens.sh").is_file())
        .map(|c| c.canonicalize().unwrap_or(c))
        .ok_or_else(|| "cannot find the repository (scripts/mktokens.sh)".to_string())
}

#[derive(Clone)]
struct Config {
    name: &'static str,
    lib: PathBuf,
    /// The directory holding softhsm2.conf.
    dir: PathBuf,
    slot: u64,
    wld: bool,
}

/// Removes the scratch directory on every exit path.
struct Scratch {
    dir: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("token directories kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_conf(dir: &Path) -> Result<(), String> {
    let conf = format!(
        "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
        dir.display()
    );
    std::fs::write(dir.join("softhsm2.conf"), conf).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Creates three identical tokens with scripts/mktokens.sh (the direct baseline uses the first
/// one), then two clones: all three tokens for wld3, and the first token alone for wld1. Cloning
/// rather than running mktokens.sh again keeps the key material identical in every
/// configuration (mktokens.sh generates new keys each time), so that outputs can be compared,
/// and gives each child process its own token files.
fn make_tokens(
    root: &Path,
    scratch: &Path,
    softhsm: &Path,
) -> Result<(PathBuf, u64, PathBuf, PathBuf), String> {
    let base = scratch.join("direct");
    run(Command::new("bash")
        .arg(root.join("scripts/mktokens.sh"))
        .arg(&base)
        .arg("3")
        .env("SOFTHSM_MODULE", softhsm))?;
    let list = std::fs::read_to_string(base.join("tokens.txt")).map_err(|e| e.to_string())?;
    let first: Vec<&str> = list
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let [_, slot, serial] = first.as_slice() else {
        return Err(format!(
            "cannot parse {}/tokens.txt: {list:?}",
            base.display()
        ));
    };
    let slot = slot
        .parse::<u64>()
        .map_err(|e| format!("tokens.txt slot: {e}"))?;
    // SoftHSM names a token directory after its serial: <...>-<4 hex>-<12 hex> ends with it.
    let mut first_dir = None;
    for entry in std::fs::read_dir(base.join("tokens")).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .replace('-', "");
        if name
            .to_ascii_lowercase()
            .ends_with(&serial.to_ascii_lowercase())
        {
            first_dir = Some(path);
        }
    }
    let first_dir = first_dir.ok_or(format!("no token directory for serial {serial}"))?;

    let wld3 = scratch.join("wld3");
    std::fs::create_dir_all(&wld3).map_err(|e| e.to_string())?;
    run(Command::new("cp")
        .arg("-a")
        .arg(base.join("tokens"))
        .arg(&wld3))?;
    write_conf(&wld3)?;
    let wld1 = scratch.join("wld1");
    std::fs::create_dir_all(wld1.join("tokens")).map_err(|e| e.to_string())?;
    run(Command::new("cp")
        .arg("-a")
        .arg(&first_dir)
        .arg(wld1.join("tokens")))?;
    write_conf(&wld1)?;
    Ok((base, slot, wld1, wld3))
}

struct ChildProc {
    cfg: Config,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    kv: BTreeMap<String, Vec<String>>,
    /// Why this configuration is not measured (any more).
    failed: Option<String>,
}

impl ChildProc {
    fn spawn(cfg: &Config, chunk: usize, softhsm: &Path) -> Result<ChildProc, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("--child")
            .arg(cfg.name)
            .arg("--lib")
            .arg(&cfg.lib)
            .arg("--slot")
            .arg(cfg.slot.to_string())
            .arg("--chunk")
            .arg(chunk.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Only this configuration's settings reach the libraries.
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
        cmd.env("SOFTHSM2_CONF", cfg.dir.join("softhsm2.conf"));
        if cfg.wld {
            cmd.env("P11HA_MODULES", softhsm)
                .env("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD")
                .env("ET_PTKC_WLD_SLOT_0", TOKEN_LABEL);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting child {}: {e}", cfg.name))?;
        let stdin = child.stdin.take().ok_or("no child stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
        Ok(ChildProc {
            cfg: cfg.clone(),
            child,
            stdin,
            stdout,
            kv: BTreeMap::new(),
            failed: None,
        })
    }

    /// The next protocol line; other output is passed through to stderr.
    fn reply(&mut self) -> Result<String, String> {
        loop {
            let mut line = String::new();
            let n = self
                .stdout
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                let status = self.child.wait().map_err(|e| e.to_string())?;
                return Err(format!("child process exited ({status})"));
            }
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix('@') {
                return Ok(rest.to_string());
            }
            eprintln!("[{}] {line}", self.cfg.name);
        }
    }

    /// Reads the start-up report, up to "@ready".
    fn wait_ready(&mut self) {
        let r = loop {
            match self.reply() {
                Ok(l) if l == "ready" => break Ok(()),
                Ok(l) => match l.split_once(' ') {
                    Some(("kv", rest)) => {
                        let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                        self.kv
                            .entry(k.to_string())
                            .or_default()
                            .push(v.to_string());
                    }
                    Some(("fatal", msg)) => break Err(msg.to_string()),
                    _ => break Err(format!("unexpected reply {l:?}")),
                },
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = r {
            self.failed = Some(format!("start-up failed: {e}"));
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.kv.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    fn measure(&mut self, op: Op, threads: usize, secs: f64, warm: f64) -> Result<f64, String> {
        writeln!(self.stdin, "run {} {threads} {secs} {warm}", op.key())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("child process gone: {e}"))?;
        let l = self.reply()?;
        let words: Vec<&str> = l.split_whitespace().collect();
        match words.as_slice() {
            ["result", rate, _ops, _elapsed] => rate.parse::<f64>().map_err(|e| e.to_string()),
            ["error", ..] => Err(l["error ".len()..].to_string()),
            _ => Err(format!("unexpected reply {l:?}")),
        }
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() && self.failed.is_none() {
                        eprintln!("child {} exited with {status}", self.cfg.name);
                    }
                    return;
                }
                Ok(None) if Instant::now() < end => {
                    // Drain (and show) what it still says, e.g. "@bye" or a C_Finalize error.
                    let mut line = String::new();
                    if self.stdout.read_line(&mut line).unwrap_or(0) > 0 {
                        if let Some(msg) = line.trim_end().strip_prefix("@fatal ") {
                            eprintln!("child {}: {msg}", self.cfg.name);
                        }
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    eprintln!("child {} did not exit; killing it", self.cfg.name);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

/// CPU time from /proc: the whole machine's busy time (steal included: on a VM that is
/// interference too) and the time used by this program's processes, in clock ticks.
#[derive(Clone, Copy)]
struct CpuProbe {
    at: Instant,
    busy: u64,
    ours: u64,
}

fn cpu_probe(pids: &[u32]) -> Option<CpuProbe> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is part of user)
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| v.get(i).copied().unwrap_or(0))
        .sum();
    let mut ours = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        // Fields 14 and 15 (utime, stime); fields[0] is field 3.
        ours += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(CpuProbe {
        at: Instant::now(),
        busy,
        ours,
    })
}

impl CpuProbe {
    /// The share of all CPUs that other processes used since `before`.
    fn foreign_since(self, before: CpuProbe) -> Option<f64> {
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let cpus = std::thread::available_parallelism().ok()?.get();
        let capacity = (self.at - before.at).as_secs_f64() * tck as f64 * cpus as f64;
        if tck <= 0 || capacity <= 0.0 {
            return None;
        }
        let foreign = self
            .busy
            .saturating_sub(before.busy)
            .saturating_sub(self.ours.saturating_sub(before.ours));
        Some((foreign as f64 / capacity).min(1.0))
    }
}

fn parent_main(args: &[String]) -> ExitCode {
    match parent_run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("p11ha-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Ok(false): the run finished but some configuration failed validation or a measurement.
fn parent_run(args: &[String]) -> Result<bool, String> {
    let o = parse_options(args)?;
    let started = Instant::now();
    let root = repo_root()?;
    let lib = o
        .lib
        .clone()
        .unwrap_or_else(|| root.join("target/release/libp11ha.so"));
    if !lib.is_file() {
        return Err(format!(
            "libp11ha.so not found at {}: build it with `cargo build --release -p p11ha-ffi` \
             or name it with --lib PATH",
            lib.display()
        ));
    }
    let lib = lib.canonicalize().unwrap_or(lib);
    if !o.softhsm.is_file() {
        return Err(format!(
            "SoftHSM module not found at {} (scripts/setup-debian.sh installs it; --softhsm PATH)",
            o.softhsm.display()
        ));
    }

    let scratch = Scratch {
        dir: std::env::temp_dir().join(format!("p11ha-bench-{}", std::process::id())),
        keep: o.keep,
    };
    std::fs::create_dir_all(&scratch.dir).map_err(|e| format!("{}: {e}", scratch.dir.display()))?;
    eprintln!("creating tokens in {} ...", scratch.dir.display());
    let (base, slot, wld1, wld3) = make_tokens(&root, &scratch.dir, &o.softhsm)?;
    let configs = [
        Config {
            name: "direct",
            lib: o.softhsm.clone(),
            dir: base,
            slot,
            wld: false,
        },
        Config {
            name: "wld1",
            lib: lib.clone(),
            dir: wld1,
            slot: 0,
            wld: true,
        },
        Config {
            name: "wld3",
            lib: lib.clone(),
            dir: wld3,
            slot: 0,
            wld: true,
        },
    ];

    // Start all children, then collect their validation reports.
    let mut children = Vec::new();
    for c in &configs {
        children.push(ChildProc::spawn(c, o.chunk, &o.softhsm)?);
    }
    for c in &mut children {
        c.wait_ready();
    }
    // Outputs must agree with the reference (the first configuration that started).
    let check_keys = ["sha256", "aes_cbc_fnv64", "rsa_sig_fnv64"];
    let reference: Option<Vec<String>> = children.iter().find(|c| c.failed.is_none()).map(|c| {
        check_keys
            .iter()
            .map(|k| c.get(k).unwrap_or("").to_string())
            .collect()
    });
    if let Some(reference) = &reference {
        for c in &mut children {
            if c.failed.is_some() {
                continue;
            }
            let bad: Vec<String> = check_keys
                .iter()
                .zip(reference)
                .filter(|(k, r)| c.get(k) != Some(r.as_str()))
                .map(|(k, r)| format!("{k} {} (expected {r})", c.get(k).unwrap_or("missing")))
                .collect();
            if !bad.is_empty() {
                c.failed = Some(format!(
                    "output differs from the other configurations: {}",
                    bad.join(", ")
                ));
            }
        }
    }
    for c in &children {
        match &c.failed {
            Some(why) => eprintln!("{}: NOT MEASURED: {why}", c.cfg.name),
            None => eprintln!("{}: validated, ready", c.cfg.name),
        }
    }

    // The schedule: rounds x operations x thread counts; within each, the configurations take
    // turns in short slices (order rotating), so that a slow spell of the machine hits all of
    // them alike instead of one whole measurement.
    let n_cfg = children.len();
    // results[op][threads index][config] = rates of the rounds; errors likewise.
    let mut results = vec![vec![vec![Vec::<f64>::new(); n_cfg]; THREADS.len()]; o.ops.len()];
    let mut errors: BTreeMap<(usize, usize, usize), String> = BTreeMap::new();
    let total = o.rounds * o.ops.len() * THREADS.len();
    let slice = o.seconds / o.slices as f64;
    // One unrecorded pass, so that the first configuration measured does not pay for a cold
    // machine; errors show up again in the measurements.
    eprintln!("warm-up pass ...");
    for c in children.iter_mut().filter(|c| c.failed.is_none()) {
        for &op in &o.ops {
            let _ = c.measure(op, MAX_THREADS, WARMUP_PASS_SECONDS, 0.0);
        }
    }
    let mut done = 0;
    let mut turn = 0;
    // Share of the machine's CPU time that other processes took during each measurement.
    let pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(children.iter().map(|c| c.child.id()))
        .collect();
    let mut foreign_cpu: Vec<f64> = Vec::new();
    for round in 0..o.rounds {
        for (oi, &op) in o.ops.iter().enumerate() {
            for (ti, &threads) in THREADS.iter().enumerate() {
                done += 1;
                // Per configuration: sum of rate x time, and time, over the slices.
                let mut acc = vec![(0.0f64, 0.0f64); n_cfg];
                let mut foreign = (0.0, 0.0);
                for s in 0..o.slices {
                    // The full warm-up before the first slice, a short one before the others.
                    let warm = if s == 0 {
                        o.warmup
                    } else {
                        o.warmup.min(SLICE_WARMUP_SECONDS)
                    };
                    for k in 0..n_cfg {
                        let ci = (k + turn) % n_cfg;
                        let c = &mut children[ci];
                        if c.failed.is_some() || errors.contains_key(&(oi, ti, ci)) {
                            continue;
                        }
                        let before = cpu_probe(&pids);
                        let t0 = Instant::now();
                        let r = c.measure(op, threads, slice, warm);
                        let dt = t0.elapsed().as_secs_f64();
                        if let Some(f) = cpu_probe(&pids).and_then(|a| a.foreign_since(before?)) {
                            foreign.0 += f * dt;
                            foreign.1 += dt;
                        }
                        match r {
                            Ok(rate) => {
                                acc[ci].0 += rate * slice;
                                acc[ci].1 += slice;
                            }
                            Err(e) => {
                                if e.starts_with("child process") {
                                    c.failed = Some(e.clone());
                                }
                                errors.insert((oi, ti, ci), e);
                            }
                        }
                    }
                    turn += 1;
                }
                let mut line = format!(
                    "[{done:>2}/{total}] round {} {:<6} {threads} thr",
                    round + 1,
                    op.key()
                );
                for (ci, c) in children.iter().enumerate() {
                    if let Some(e) = errors.get(&(oi, ti, ci)) {
                        let _ = write!(line, "   {} ERROR {e}", c.cfg.name);
                    } else if acc[ci].1 > 0.0 {
                        let rate = acc[ci].0 / acc[ci].1;
                        results[oi][ti][ci].push(rate);
                        let _ = write!(line, "   {} {rate:.0}", c.cfg.name);
                    }
                }
                if foreign.1 > 0.0 {
                    let f = foreign.0 / foreign.1;
                    foreign_cpu.push(f);
                    let _ = write!(line, "   (other processes: {:.0}% of the CPUs)", f * 100.0);
                }
                eprintln!("{line}");
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Report.
    let best = |v: &Vec<f64>| {
        v.iter()
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!("p11ha-bench: SoftHSM directly vs libp11ha.so in WLD mode ({cpus} CPUs)");
    for c in &children {
        println!(
            "  {:<6} {} | {} | {}",
            c.cfg.name,
            c.cfg.lib.display(),
            c.get("library").unwrap_or("?"),
            c.get("token").unwrap_or("?")
        );
    }
    println!(
        "method: one child process per configuration (SoftHSM or libp11ha.so loaded once per\n\
         \x20 process), all alive at once, measured one at a time. For every (operation, threads)\n\
         \x20 each configuration runs {} s in total, cut into {} slices of {:.2} s; the configurations\n\
         \x20 take turns slice by slice (order rotating), so that a slow spell of the machine hits all\n\
         \x20 of them alike. In a slice the threads warm up ({} s before the first slice, {} s before\n\
         \x20 the others), start together at a barrier and count completed operations; rate = sum over\n\
         \x20 threads of count / elapsed, averaged over the slices. {} round(s), best reported; one\n\
         \x20 unrecorded {WARMUP_PASS_SECONDS} s pass per operation and configuration before all that.\n\
         \x20 Each thread has its own session, opened after one C_Login on a control session; every\n\
         \x20 timed operation checks its result. ECDSA: CKM_ECDSA over a 32-byte digest; RSA:\n\
         \x20 CKM_SHA256_RSA_PKCS over {} bytes, single-part C_Sign; SHA-256 and AES-256-CBC: 1 MiB\n\
         \x20 ({INPUT_LEN} bytes) as {} C_DigestUpdate / C_EncryptUpdate chunks of {} bytes, MB = 10^6\n\
         \x20 bytes; C_GetSessionInfo in batches of {}. The cryptoki crate queries output lengths:\n\
         \x20 one signature = C_SignInit + 2 C_Sign, one chunk = 2 C_EncryptUpdate.",
        o.seconds,
        o.slices,
        o.seconds / o.slices as f64,
        o.warmup,
        o.warmup.min(SLICE_WARMUP_SECONDS),
        o.rounds,
        RSA_MESSAGE.len(),
        INPUT_LEN.div_ceil(o.chunk),
        o.chunk,
        Op::SessionInfo.batch()
    );
    println!();
    let cell = |oi: usize, ti: usize, ci: usize| -> String {
        if let Some(v) = best(&results[oi][ti][ci]) {
            format!("{v:.0}")
        } else if errors.contains_key(&(oi, ti, ci)) {
            "ERROR".into()
        } else {
            "n/a".into()
        }
    };
    let ratio = |oi: usize, ti: usize, ci: usize| -> Option<f64> {
        Some(best(&results[oi][ti][ci])? / best(&results[oi][ti][0])?)
    };
    for (oi, &op) in o.ops.iter().enumerate() {
        for (ti, &threads) in THREADS.iter().enumerate() {
            let mut row = format!(
                "{:<25} {threads} thr   {} {:>8}",
                op.title(),
                children[0].cfg.name,
                cell(oi, ti, 0)
            );
            for (ci, c) in children.iter().enumerate().skip(1) {
                let r = ratio(oi, ti, ci).map_or("  - ".into(), |r| format!("{r:.2}"));
                let _ = write!(row, "   {} {:>8} ({r})", c.cfg.name, cell(oi, ti, ci));
            }
            println!("{row}");
        }
    }
    println!();
    println!("validation:");
    for c in &children {
        let status = match &c.failed {
            Some(why) => format!("FAILED: {why}"),
            None => "ok (signatures verify, tampered ones rejected; outputs agree)".into(),
        };
        println!(
            "  {:<6} sha256(1 MiB) {}  aes-cbc fnv64 {}  rsa-sig fnv64 {}  {status}",
            c.cfg.name,
            c.get("sha256")
                .map_or("?".into(), |s| s.chars().take(16).collect::<String>()),
            c.get("aes_cbc_fnv64").unwrap_or("?"),
            c.get("rsa_sig_fnv64").unwrap_or("?"),
        );
        for w in c.kv.get("warning").into_iter().flatten() {
            println!("         warning: {w}");
        }
    }
    let mut all_ok = children.iter().all(|c| c.failed.is_none());
    if !errors.is_empty() {
        all_ok = false;
        println!("errors:");
        for ((oi, ti, ci), e) in &errors {
            println!(
                "  {} {} thr {}: {e}",
                o.ops[*oi].title(),
                THREADS[*ti],
                children[*ci].cfg.name
            );
        }
    }
    let foreign_mean = foreign_cpu.iter().sum::<f64>() / foreign_cpu.len().max(1) as f64;
    let foreign_max = foreign_cpu.iter().copied().fold(0.0, f64::max);
    let noisy = foreign_cpu.iter().filter(|&&f| f > 0.10).count();
    if !foreign_cpu.is_empty() {
        println!(
            "other processes took {:.0}% of the CPUs on average during the measurements \
             (at most {:.0}%; {noisy} of {} measurements above 10%)",
            foreign_mean * 100.0,
            foreign_max * 100.0,
            foreign_cpu.len()
        );
    }
    println!("run time: {elapsed:.0} s");

    println!();
    println!("# p11ha-bench results (key=value; rates are the best of the rounds)");
    println!("bench.cpus={cpus}");
    println!("bench.seconds={}", o.seconds);
    println!("bench.warmup_seconds={}", o.warmup);
    println!("bench.slices={}", o.slices);
    println!("bench.rounds={}", o.rounds);
    println!("bench.estimator=best_of_rounds");
    println!("bench.input_bytes={INPUT_LEN}");
    println!("bench.chunk_bytes={}", o.chunk);
    println!("bench.mb=1000000");
    println!("bench.run_seconds={elapsed:.0}");
    println!("bench.foreign_cpu_mean_pct={:.0}", foreign_mean * 100.0);
    println!("bench.foreign_cpu_max_pct={:.0}", foreign_max * 100.0);
    for c in &children {
        println!("lib.{}={}", c.cfg.name, c.cfg.lib.display());
    }
    for (oi, &op) in o.ops.iter().enumerate() {
        for (ti, &threads) in THREADS.iter().enumerate() {
            for (ci, c) in children.iter().enumerate() {
                let key = format!("{}.{threads}thr.{}", op.kv_name(), c.cfg.name);
                match best(&results[oi][ti][ci]) {
                    Some(v) => println!("{key}={v:.0}"),
                    None => println!("{key}=error"),
                }
                if let Some(r) = ratio(oi, ti, ci).filter(|_| ci > 0) {
                    println!("{key}_ratio={r:.3}");
                }
                let rounds: Vec<String> = results[oi][ti][ci]
                    .iter()
                    .map(|v| format!("{v:.0}"))
                    .collect();
                if o.rounds > 1 {
                    println!("{key}_rounds={}", rounds.join(","));
                }
            }
        }
    }
    for c in &children {
        println!(
            "check.{}.sha256={}",
            c.cfg.name,
            c.get("sha256").unwrap_or("?")
        );
        println!(
            "check.{}.aes_cbc_fnv64={}",
            c.cfg.name,
            c.get("aes_cbc_fnv64").unwrap_or("?")
        );
        println!(
            "check.{}.rsa_sig_fnv64={}",
            c.cfg.name,
            c.get("rsa_sig_fnv64").unwrap_or("?")
        );
        println!("check.{}.ok={}", c.cfg.name, c.failed.is_none());
    }

    for c in children {
        c.quit();
    }
    drop(scratch);
    Ok(all_ok)
}
