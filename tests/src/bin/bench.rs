//! p11ha-bench: how much does going through libp11ha.so cost compared with SoftHSM directly, and
//! p11ha's own RPC client compared with p11-kit's, and how long does an HA failover take?
//!
//! ```text
//! cargo build --release -p p11ha-ffi
//! cargo build --release -p p11ha-tests --bin p11ha-bench && target/release/p11ha-bench
//! target/release/p11ha-bench --only remote      # the remote part alone (with direct)
//! target/release/p11ha-bench --only scale       # 1 to 4 members of fixed capacity
//! ```
//!
//! The scale part (`--only scale`, in bench/scale.rs, whose header says how) needs the test build
//! (`--features fault-injection`, target/fault/), whose service time gives each member a capacity
//! of its own; it runs last, alone on the machine.
//!
//! Throughput: up to eight configurations are measured, each in its own child process (this
//! program run again with `--child`), because a PKCS#11 library is a per-process singleton. Local
//! ones (`--only local`):
//!
//! - `direct`: SoftHSM itself, on the first of three identical tokens (the baseline);
//! - `wld1`: libp11ha.so in WLD mode, virtual slot 0 made of one SoftHSM token;
//! - `wld3`: libp11ha.so in WLD mode, virtual slot 0 made of three SoftHSM tokens;
//! - `ha1`: libp11ha.so in HA mode (every session journalled), one SoftHSM token;
//! - `ha3`: libp11ha.so in HA mode, three SoftHSM tokens.
//!
//! Remote ones (`--only remote`; `direct` is measured with them, for their ratios to it): three
//! `p11-kit server` processes, A, B and C, each serve a copy of one of the three tokens (A of
//! direct's) on a Unix socket, forking a `p11-kit-remote` that loads SoftHSM per connection:
//!
//! - `kit`: p11-kit's own client, p11-kit-client.so, against server A (the remote baseline);
//! - `rpc1`: libp11ha.so in WLD mode, virtual slot 0 made of server A's token, through p11ha's RPC
//!   client (`P11HA_MODULES` empty, `ET_HSM_NETCLIENT_SERVERLIST` naming A);
//! - `rpc-ha3`: libp11ha.so in HA mode over servers A, B and C.
//!
//! Each server runs in a process group of its own under a shell that kills the group when a pipe
//! from this program says so or closes, and this program is the subreaper that reaps what is
//! killed: whether the bench ends well or not, no p11-kit process outlives it.
//!
//! Each configuration is measured with several application threads (each thread its own
//! session) for: ECDSA P-256 sign (CKM_ECDSA over a 32-byte digest), RSA-2048 sign
//! (CKM_SHA256_RSA_PKCS, single-part), SHA-256 and AES-256-CBC over 1 MiB and over 64 KiB fed in
//! chunks through multi-part calls, and C_GetSessionInfo. The thread counts are per part: the
//! local configurations 1 and 2 (they share this machine's two cores with SoftHSM); the remote
//! ones 1, 2, 4 and 8, all on server A for `kit` and `rpc1`, but 1 and 2 for AES-CBC (no `kit`
//! to compare with). HA mode journals the Update data of an operation up to a limit (64 KiB by
//! default): the 64 KiB inputs are copied into the journal in full, the 1 MiB ones pass the
//! limit (the operation goes on, marked not recoverable), so the two sizes show the cost of
//! journalling and of not journalling. p11-kit-client.so 0.24.1 carries no mechanism parameter
//! and answers CKR_MECHANISM_INVALID to AES-CBC: `kit` reports that at its validation and its
//! AES-CBC cells read "n/a (CKR_MECHANISM_INVALID)".
//!
//! Schedule and statistics: the children stay alive for the whole run and the parent asks them
//! for one measurement at a time. Each part (local, remote) is measured on its own, with `direct`
//! in both; a table row, one (operation, threads), is measured in `--rounds` rounds (5), and in
//! each round every configuration of the part runs `--slices` slices (2 of 0.12 s), the
//! configurations taking turns slice by slice, order rotating, so that a slow spell of the
//! machine hits them alike. Each round thus gives every configuration a rate and a ratio to its
//! baseline measured side by side: the local configurations and `kit` against `direct`, `rpc1`
//! and `rpc-ha3` against `kit` (and against `direct`). A cell of the tables reads
//! `8,686 (1.27, 1.20-1.31)`: the median of the rounds' rates, then the median, lowest and
//! highest of the per-round ratios (the ratio of medians would mix rounds); `rpc1` and `rpc-ha3`
//! add `; direct 0.60`, their median ratio against direct. The tables are printed in Markdown,
//! as the README takes them, followed by every round's rate in key=value form.
//!
//! Over the RPC both clients make each PKCS#11 call one round trip, but p11ha answers the length
//! queries it can be sure of itself (adapters/src/rpc/lengths.rs). Counted with strace (the
//! cryptoki crate asks a length before each output): an ECDSA signature is 3 round trips through
//! p11-kit-client.so and 2 through p11ha (SignInit, Sign; the signature length is learned from
//! the first), a SHA-256 of 1 MiB in 16 KiB chunks 67 and 66 (DigestFinal's length query), a
//! C_GetSessionInfo 1 and 1. p11-kit-client.so writes a request in three write(2)s (header,
//! options, body) and reads its reply in two read(2)s, p11ha in two sends (header, then the rest) and two receives. Each
//! client holds one connection per server and a p11-kit-remote answers its connection's calls
//! one at a time, so the threads of `kit` and `rpc1` (up to eight) share one connection to server
//! A: how well a client lets a thread send its request while others await their replies is what
//! the rows with 2 to 8 threads show (cheap calls such as C_GetSessionInfo most).
//!
//! Failover latency: then one more child, `ha3-failover` (HA mode over three local tokens, with
//! fault injection), measures alone how long the call that meets a member failure takes to return
//! successfully from another member: (a) one session whose member fails at its ECDSA C_Sign,
//! `--failovers` times; (b) 100 sessions on one member that goes down, the first call on each
//! afterwards, `--mass-rounds` times, once with an ECDSA signature pending and a session object
//! to re-create, once with a digest in progress over 4 KiB. Each time the same call without a
//! failure is timed too, on the same sessions, for comparison.
//!
//! With the defaults, on a 2-core VM, the whole run takes about 4.8 minutes: throughput 4.5
//! minutes (38 rows: the local part's 14 with five configurations, the remote part's 24 with
//! four, each configuration about 1.6 s a row: 5 rounds x 2 slices x 0.12 s, 0.2 s of warm-up
//! before the first slice and 0.02 s before the others), a 0.15 s warm-up pass per operation and
//! configuration, failover 7 s, the rest making tokens, starting servers and validating.
//! `--only remote` takes about 2.7 minutes, `--only local` about 2, `--only failover` about 7 s.
//! The time is set by the schedule, not by speed (but for the remote 1 MiB rows with 8 threads,
//! where one operation takes a thread tens of milliseconds). Fewer `--rounds` or a shorter
//! `--seconds` (a round's time per configuration) cut it in proportion.
//!
//! Nothing about speed is asserted. Correctness is: every configuration signs and verifies
//! (and rejects a tampered signature) before it is measured, its SHA-256 digests, AES-CBC
//! ciphertexts and (deterministic) RSA signature must agree with the other configurations (an
//! output is missing only where its operation is refused as a whole), and every timed operation
//! checks its own result cheaply (digest, RSA signature, last AES block), so that a broken
//! forwarder cannot post a fast wrong number. Every signature made across a failover is verified
//! (C_Verify on another session), every digest compared, and every session must have moved to
//! another member.
//!
//! The throughput measurements only use the public PKCS#11 API, through the `cryptoki` crate's
//! safe wrappers. Those query output lengths before producing output: one signature is
//! C_SignInit + 2 C_Sign, one 1 MiB encryption is C_EncryptInit + 2 C_EncryptUpdate per chunk +
//! 2 C_EncryptFinal. The failover measurements time single calls through the raw function list
//! (one C_Sign or C_DigestFinal with an output buffer) and use p11ha's extension functions
//! (P11HA_InjectFault, P11HA_GetSessionMember, P11HA_GetMemberInfo).

use std::collections::BTreeMap;
use std::ffi::{CString, c_char};
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::{CK_FUNCTION_LIST, CK_MECHANISM, CK_RV, CK_SESSION_HANDLE, CK_ULONG, CKM_ECDSA};
use p11ha_tests::MemberInfo;
use p11ha_tests::pipe::ChildPipe;

/// The scale part (`--only scale`): throughput over 1 to 4 members of fixed capacity.
#[path = "bench/scale.rs"]
mod scale;

const DEFAULT_SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// p11-kit's own RPC client module, the remote baseline.
const DEFAULT_KIT_CLIENT: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";
/// The names of the remote servers, in `ET_HSM_NETCLIENT_SERVERLIST` order.
const SERVER_NAMES: [&str; 3] = ["A", "B", "C"];
const TOKEN_LABEL: &str = "TokName";
const USER_PIN: &str = "1234";
/// Size of the large input of the SHA-256 and AES-CBC measurements (past HA's journal limit).
const INPUT_LEN: usize = 1 << 20;
/// Size of the small input: HA's default journal limit, so HA copies every byte of it.
const SMALL_LEN: usize = 64 * 1024;
/// The message signed by the RSA measurement (CKM_SHA256_RSA_PKCS hashes it).
const RSA_MESSAGE: &[u8] = b"p11ha-bench: RSA-2048 PKCS#1 v1.5 SHA-256 message";
/// The AES-CBC initialisation vector.
const AES_IV: [u8; 16] = *b"p11ha-bench IV!!";
/// Application threads of the local part: the configurations share the machine's cores.
const LOCAL_THREADS: [usize; 2] = [1, 2];
/// Application threads of the remote part, all on one server for `kit` and `rpc1`.
const REMOTE_THREADS: [usize; 4] = [1, 2, 4, 8];
/// The most threads (each with its own session) any part measures.
const MAX_THREADS: usize = 8;
/// Duration of each operation in the unrecorded warm-up pass before the measurements.
const WARMUP_PASS_SECONDS: f64 = 0.15;
/// Warm-up before every slice but the first of a measurement.
const SLICE_WARMUP_SECONDS: f64 = 0.02;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child_main(&args[1..])
    } else if args.first().map(String::as_str) == Some("--scale-child") {
        scale::child_main(&args[1..])
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
    Sha256Small,
    AesCbcSmall,
    SessionInfo,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::Ecdsa,
        Op::Rsa,
        Op::Sha256,
        Op::AesCbc,
        Op::Sha256Small,
        Op::AesCbcSmall,
        Op::SessionInfo,
    ];

    /// Name on the command line and in the child protocol.
    fn key(self) -> &'static str {
        match self {
            Op::Ecdsa => "ecdsa",
            Op::Rsa => "rsa",
            Op::Sha256 => "sha256",
            Op::AesCbc => "aes",
            Op::Sha256Small => "sha256-64k",
            Op::AesCbcSmall => "aes-64k",
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
            Op::Sha256 => "SHA-256 MB/s, 1 MiB",
            Op::AesCbc => "AES-256-CBC MB/s, 1 MiB",
            Op::Sha256Small => "SHA-256 MB/s, 64 KiB",
            Op::AesCbcSmall => "AES-256-CBC MB/s, 64 KiB",
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
            Op::Sha256Small => "sha256_64k_mb_per_s",
            Op::AesCbcSmall => "aes256_cbc_encrypt_64k_mb_per_s",
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
            Op::Sha256Small | Op::AesCbcSmall => SMALL_LEN as f64 / 1e6,
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
    /// The same two for the first SMALL_LEN bytes of `input`.
    small_digest: Vec<u8>,
    small_aes_last: Vec<u8>,
}

impl Work {
    fn small(&self) -> &[u8] {
        &self.input[..SMALL_LEN]
    }
}

/// What the failover child measures (`--latency`).
#[derive(Clone, Copy, Debug)]
struct LatencyOptions {
    failovers: usize,
    mass_rounds: usize,
    mass_sessions: usize,
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
    let mut sessions_wanted = 1;
    let mut latency = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--lib" => lib = Some(val()?),
            "--slot" => slot = Some(val()?),
            "--chunk" => chunk = Some(val()?.parse::<usize>().map_err(|e| e.to_string())?),
            "--sessions" => {
                sessions_wanted = val()?.parse::<usize>().map_err(|e| e.to_string())?;
            }
            "--latency" => {
                let v: Vec<usize> = val()?
                    .split(',')
                    .map(|x| x.parse::<usize>().map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?;
                let [failovers, mass_rounds, mass_sessions] = v[..] else {
                    return Err("--latency takes FAILOVERS,ROUNDS,SESSIONS".into());
                };
                latency = Some(LatencyOptions {
                    failovers,
                    mass_rounds,
                    mass_sessions,
                });
            }
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
    let slot = if slot == "label" {
        // p11-kit-client numbers the server's slots itself: the first slot with our token.
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| format!("C_GetSlotList: {e}"))?;
        slots
            .into_iter()
            .find(|&s| {
                ctx.get_token_info(s)
                    .is_ok_and(|t| t.label().trim() == TOKEN_LABEL)
            })
            .ok_or(format!("no slot holds a token labelled {TOKEN_LABEL}"))?
    } else {
        let id = slot.parse::<u64>().map_err(|e| format!("--slot: {e}"))?;
        Slot::try_from(id).map_err(|e| e.to_string())?
    };
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
        small_digest: Vec::new(),
        small_aes_last: Vec::new(),
    };
    // In HA mode the journal's fate shows in the HA log: nothing for the 64 KiB operations
    // (journalled in full), one "not recoverable" line once the 1 MiB ones pass the limit.
    let ha_log = std::env::var_os("ET_PTKC_HA_LOG_FILE").map(PathBuf::from);
    let not_recoverable = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("not recoverable"))
            .count()
    };

    // Validation on the control session: this sets the expected values.
    work.small_digest =
        digest_all(&control, work.small(), chunk).map_err(|e| format!("SHA-256 of 64 KiB: {e}"))?;
    kv(out, "sha256_64k", &hex(&work.small_digest))?;
    // Operations the library refuses as a whole are reported ("@kv unsupported.<op>") and never
    // run: p11-kit-client.so 0.24.1 carries no mechanism parameter, so no AES-CBC (its IV).
    let mut unsupported: Vec<Op> = Vec::new();
    match encrypt_all(&control, &work, work.small()) {
        Ok(small_ct) => {
            if small_ct.len() != SMALL_LEN {
                return Err(format!(
                    "AES-CBC of {SMALL_LEN} bytes gave {} bytes",
                    small_ct.len()
                ));
            }
            work.small_aes_last = small_ct[SMALL_LEN - 16..].to_vec();
            kv(
                out,
                "aes_cbc_64k_fnv64",
                &format!("{:016x}", fnv64(&small_ct)),
            )?;
        }
        Err(CkError::Pkcs11(RvError::MechanismInvalid, function)) => {
            for op in [Op::AesCbc, Op::AesCbcSmall] {
                unsupported.push(op);
                kv(
                    out,
                    &format!("unsupported.{}", op.key()),
                    &format!("CKR_MECHANISM_INVALID from {function} (CKM_AES_CBC)"),
                )?;
            }
        }
        Err(e) => return Err(format!("AES-CBC of 64 KiB: {e}")),
    }
    let small_lines = ha_log.as_deref().map(not_recoverable);
    work.digest = digest_all(&control, &work.input, chunk).map_err(|e| format!("SHA-256: {e}"))?;
    if work.digest.len() != 32 {
        return Err(format!("SHA-256 digest has {} bytes", work.digest.len()));
    }
    kv(out, "sha256", &hex(&work.digest))?;
    if !unsupported.contains(&Op::AesCbc) {
        let ciphertext =
            encrypt_all(&control, &work, &work.input).map_err(|e| format!("AES-CBC: {e}"))?;
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
    }
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
    if let (Some(log), Some(small_lines)) = (&ha_log, small_lines) {
        let large_lines = not_recoverable(log);
        let j = format!(
            "64 KiB operations: {}; 1 MiB operations: {}",
            if small_lines == 0 {
                "journalled in full (no 'not recoverable' line in the HA log)".to_string()
            } else {
                format!("{small_lines} 'not recoverable' line(s) in the HA log (UNEXPECTED)")
            },
            if large_lines > small_lines {
                "past the journal limit ('Session potentially not recoverable' logged)".to_string()
            } else {
                "no 'not recoverable' line in the HA log (UNEXPECTED)".to_string()
            }
        );
        if small_lines != 0 || large_lines == small_lines {
            warnings.push(format!("HA journal: {j}"));
        }
        kv(out, "journal", &j)?;
    }
    check_signatures(&control, &work, &mut warnings)
        .map_err(|e| format!("control session: {e}"))?;
    if let Some(lat) = latency {
        let mut results = Vec::new();
        let r = failover_child(&ctx, slot, &work, &lib, lat, &mut results);
        for (k, v) in results {
            kv(out, &k, &v)?;
        }
        for w in &warnings {
            kv(out, "warning", w)?;
        }
        r?;
        writeln!(out, "@ready").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        // Wait for "quit".
        for line in std::io::stdin().lock().lines() {
            if line.map_err(|e| e.to_string())?.trim() == "quit" {
                break;
            }
        }
        let _ = control.logout();
        drop(control);
        ctx.finalize().map_err(|e| format!("C_Finalize: {e}"))?;
        writeln!(out, "@bye").map_err(|e| e.to_string())?;
        return out.flush().map_err(|e| e.to_string());
    }

    // The measurement sessions, as many as the most threads asked of this configuration (more
    // would change where a multi-member configuration places the ones measured), validated one
    // by one (in WLD mode with several members they may live on different members).
    let mut sessions = Vec::new();
    for i in 0..sessions_wanted.clamp(1, MAX_THREADS) {
        let s = ctx
            .open_rw_session(slot)
            .map_err(|e| format!("C_OpenSession #{i}: {e}"))?;
        check_signatures(&s, &work, &mut warnings)
            .map_err(|e| format!("measurement session #{i}: {e}"))?;
        for op in Op::ALL.into_iter().filter(|op| !unsupported.contains(op)) {
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
                    if unsupported.contains(&op) {
                        return Err(format!("{} is not supported here", op.key()));
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

fn digest_all(s: &Session, data: &[u8], chunk: usize) -> cryptoki::error::Result<Vec<u8>> {
    s.digest_init(&Mechanism::Sha256)?;
    for c in data.chunks(chunk) {
        s.digest_update(c)?;
    }
    s.digest_final()
}

fn encrypt_all(s: &Session, w: &Work, data: &[u8]) -> cryptoki::error::Result<Vec<u8>> {
    s.encrypt_init(&Mechanism::AesCbc(AES_IV), w.keys.aes)?;
    let mut out = Vec::with_capacity(data.len());
    for c in data.chunks(w.chunk) {
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
        Op::Sha256 | Op::Sha256Small => {
            let (data, expected) = match op {
                Op::Sha256 => (&w.input[..], &w.digest),
                _ => (w.small(), &w.small_digest),
            };
            let d = digest_all(s, data, w.chunk).map_err(|e| format!("SHA-256: {e}"))?;
            if d != *expected {
                return Err("SHA-256 digest differs from the expected one".into());
            }
        }
        Op::AesCbc | Op::AesCbcSmall => {
            let (data, expected) = match op {
                Op::AesCbc => (&w.input[..], &w.aes_last),
                _ => (w.small(), &w.small_aes_last),
            };
            s.encrypt_init(&Mechanism::AesCbc(AES_IV), k.aes)
                .map_err(|e| format!("C_EncryptInit: {e}"))?;
            let mut total = 0;
            let mut last = Vec::new();
            for c in data.chunks(w.chunk) {
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
            if total != data.len() || last.len() < 16 || last[last.len() - 16..] != expected[..] {
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

// ---------------------------------------------------------------------------------------------
// Failover latency: HA mode over three members with fault injection (child with `--latency`)
// ---------------------------------------------------------------------------------------------

/// The 4 KiB digested by the sessions of the digest variant of setup (b).
const MASS_DIGEST_LEN: usize = 4096;
/// The value of the session object each session of the sign variant of setup (b) makes.
const MASS_OBJECT_LEN: usize = 2048;

/// Untimed signatures before each round of setup (a).
const WARM_SIGNATURES: usize = 3;

/// A raw call's return value as a result.
fn ck(rv: CK_RV, what: &str) -> Result<(), String> {
    match cryptoki::error::Rv::from(rv) {
        cryptoki::error::Rv::Ok => Ok(()),
        cryptoki::error::Rv::Error(e) => Err(format!("{what}: {e} (0x{rv:x})")),
    }
}

type GetFunctionList = unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV;
type InjectFault = unsafe extern "C" fn(CK_ULONG, *const c_char) -> CK_RV;
type GetMemberInfo = unsafe extern "C" fn(CK_ULONG, *mut MemberInfo) -> CK_RV;
type GetSessionMember = unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_ULONG) -> CK_RV;

/// libp11ha.so's raw function list (to time single calls) and its extension functions.
struct HaApi {
    f: &'static CK_FUNCTION_LIST,
    inject: InjectFault,
    member_info: GetMemberInfo,
    session_member: GetSessionMember,
}

impl HaApi {
    fn load(lib: &str) -> Result<HaApi, String> {
        let path = CString::new(lib).map_err(|e| e.to_string())?;
        // SAFETY: dlopen of the library the cryptoki context has loaded already (the same,
        // reference-counted handle). It is never dlclosed, so it stays loaded for the life of
        // the process and the function list is 'static.
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return Err(format!("dlopen {lib} failed"));
        }
        let sym = |name: &str| -> Result<*mut libc::c_void, String> {
            let n = CString::new(name).map_err(|e| e.to_string())?;
            // SAFETY: h is a live handle and n is NUL-terminated.
            let p = unsafe { libc::dlsym(h, n.as_ptr()) };
            if p.is_null() {
                Err(format!("{lib} does not export {name}"))
            } else {
                Ok(p)
            }
        };
        // SAFETY: each symbol is a function of the C signature it is given here, as PKCS#11
        // and p11ha's README define them.
        let get_list = unsafe {
            std::mem::transmute::<*mut libc::c_void, GetFunctionList>(sym("C_GetFunctionList")?)
        };
        // SAFETY: as for C_GetFunctionList above.
        let inject = unsafe {
            std::mem::transmute::<*mut libc::c_void, InjectFault>(sym("P11HA_InjectFault")?)
        };
        // SAFETY: as for C_GetFunctionList above.
        let member_info = unsafe {
            std::mem::transmute::<*mut libc::c_void, GetMemberInfo>(sym("P11HA_GetMemberInfo")?)
        };
        // SAFETY: as for C_GetFunctionList above.
        let session_member = unsafe {
            std::mem::transmute::<*mut libc::c_void, GetSessionMember>(sym(
                "P11HA_GetSessionMember",
            )?)
        };
        let mut list = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes a pointer to the library's static list.
        ck(unsafe { get_list(&mut list) }, "C_GetFunctionList")?;
        // SAFETY: the list is static in the library, which stays loaded (see above).
        let f = unsafe { list.as_ref() }.ok_or("C_GetFunctionList gave NULL")?;
        Ok(HaApi {
            f,
            inject,
            member_info,
            session_member,
        })
    }

    fn inject(&self, member: usize, command: &str) -> Result<(), String> {
        let c = CString::new(command).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated command.
        let rv = unsafe { (self.inject)(member as CK_ULONG, c.as_ptr()) };
        ck(rv, &format!("P11HA_InjectFault({member}, {command:?})"))
    }

    fn member(&self, index: usize) -> Result<MemberInfo, String> {
        let mut info = MemberInfo::default();
        // SAFETY: info is a valid out pointer of P11HA_MEMBER_INFO's layout.
        let rv = unsafe { (self.member_info)(index as CK_ULONG, &mut info) };
        ck(rv, &format!("P11HA_GetMemberInfo({index})")).map(|()| info)
    }

    fn member_count(&self) -> usize {
        (0..64).take_while(|&i| self.member(i).is_ok()).count()
    }

    fn session_member(&self, s: &Session) -> Result<usize, String> {
        let mut index: CK_ULONG = 0;
        // SAFETY: index is a valid out pointer.
        let rv = unsafe { (self.session_member)(s.handle(), &mut index) };
        ck(rv, "P11HA_GetSessionMember").map(|()| index as usize)
    }

    /// Every one of `n` members in service.
    fn require_all_up(&self, n: usize) -> Result<(), String> {
        for i in 0..n {
            if self.member(i)?.up == 0 {
                return Err(format!(
                    "member {i} is not in service at the start of a round"
                ));
            }
        }
        Ok(())
    }

    /// Waits (at most 10 s) until member `m` is in service again; how long that took.
    fn wait_up(&self, m: usize) -> Result<Duration, String> {
        let t = Instant::now();
        loop {
            if self.member(m)?.up != 0 {
                return Ok(t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(10) {
                return Err(format!("member {m} not back in service 10 s after heal"));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// C_SignInit(CKM_ECDSA, key).
    fn sign_init(&self, s: &Session, key: ObjectHandle) -> Result<(), String> {
        let f = self.f.C_SignInit.ok_or("no C_SignInit")?;
        let mut mech = CK_MECHANISM {
            mechanism: CKM_ECDSA,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: a valid mechanism; handles are checked by the library.
        ck(
            unsafe { f(s.handle(), &mut mech, key.handle()) },
            "C_SignInit",
        )
    }

    /// One C_Sign with an output buffer (no length query), timed.
    fn sign(&self, s: &Session, data: &[u8]) -> (Result<Vec<u8>, String>, Duration) {
        let Some(f) = self.f.C_Sign else {
            return (Err("no C_Sign".into()), Duration::ZERO);
        };
        let mut out = [0u8; 128];
        let mut len = out.len() as CK_ULONG;
        let t = Instant::now();
        // SAFETY: data and out are valid for the lengths given; C_Sign does not write data.
        let rv = unsafe {
            f(
                s.handle(),
                data.as_ptr() as *mut u8,
                data.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len,
            )
        };
        let dt = t.elapsed();
        let r = ck(rv, "C_Sign").map(|()| out[..(len as usize).min(out.len())].to_vec());
        (r, dt)
    }

    /// One C_DigestFinal with an output buffer, timed.
    fn digest_final(&self, s: &Session) -> (Result<Vec<u8>, String>, Duration) {
        let Some(f) = self.f.C_DigestFinal else {
            return (Err("no C_DigestFinal".into()), Duration::ZERO);
        };
        let mut out = [0u8; 64];
        let mut len = out.len() as CK_ULONG;
        let t = Instant::now();
        // SAFETY: out is valid for len bytes.
        let rv = unsafe { f(s.handle(), out.as_mut_ptr(), &mut len) };
        let dt = t.elapsed();
        let r = ck(rv, "C_DigestFinal").map(|()| out[..(len as usize).min(out.len())].to_vec());
        (r, dt)
    }
}

/// Median, 90th percentile (nearest rank), worst and the worst's position (from 1) of `v`.
fn stats(v: &[f64]) -> Option<(f64, f64, f64, usize)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let p90 = s[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1];
    let (at, max) =
        v.iter().copied().enumerate().fold(
            (0, f64::MIN),
            |(ai, am), (i, x)| if x > am { (i, x) } else { (ai, am) },
        );
    Some((median, p90, max, at + 1))
}

/// Key=value results of the failover child.
type Kv = Vec<(String, String)>;

fn push_stats(kv: &mut Kv, prefix: &str, unit: &str, v: &[f64]) {
    kv.push((format!("{prefix}.n"), v.len().to_string()));
    if let Some((median, p90, max, at)) = stats(v) {
        let d = if unit == "us" { 0 } else { 1 };
        kv.push((format!("{prefix}.median_{unit}"), format!("{median:.d$}")));
        kv.push((format!("{prefix}.p90_{unit}"), format!("{p90:.d$}")));
        kv.push((format!("{prefix}.max_{unit}"), format!("{max:.d$}")));
        kv.push((format!("{prefix}.max_at"), at.to_string()));
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn verify_ecdsa(verifier: &Session, w: &Work, sig: &[u8]) -> Result<(), String> {
    if sig.len() != 64 {
        return Err(format!("ECDSA P-256 signature has {} bytes", sig.len()));
    }
    verifier
        .verify(&Mechanism::Ecdsa, w.keys.ec_pub, &w.digest, sig)
        .map_err(|e| format!("the signature does not verify: {e}"))
}

/// The failover measurements; results go to `kv` as they come, so that an error keeps what was
/// measured before it.
fn failover_child(
    ctx: &Pkcs11,
    slot: Slot,
    w: &Work,
    lib: &str,
    o: LatencyOptions,
    kv: &mut Kv,
) -> Result<(), String> {
    let ha = HaApi::load(lib)?;
    let members = ha.member_count();
    kv.push(("members".into(), members.to_string()));
    if members != 3 {
        return Err(format!("{members} members, expected 3"));
    }
    // Signatures are verified on a session of their own (whichever member serves it).
    let verifier = ctx
        .open_rw_session(slot)
        .map_err(|e| format!("C_OpenSession: {e}"))?;
    let started = Instant::now();
    single_failovers(ctx, slot, &ha, &verifier, w, o.failovers, kv)
        .map_err(|e| format!("setup (a): {e}"))?;
    kv.push((
        "single.seconds".into(),
        format!("{:.1}", started.elapsed().as_secs_f64()),
    ));
    for kind in [Mass::Sign, Mass::Digest] {
        let started = Instant::now();
        mass_failovers(ctx, slot, &ha, &verifier, w, o, kind, kv)
            .map_err(|e| format!("setup (b), {}: {e}", kind.key()))?;
        kv.push((
            format!("{}.seconds", kind.key()),
            format!("{:.1}", started.elapsed().as_secs_f64()),
        ));
    }
    drop(verifier);

    // The HA log: one failure and one recovery line per failover round, nothing else expected.
    if let Some(log) = std::env::var_os("ET_PTKC_HA_LOG_FILE") {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let expected = o.failovers + 2 * o.mass_rounds;
        let failures = text
            .lines()
            .filter(|l| l.contains("HSM Failure detected"))
            .count();
        let recovered = text.lines().filter(|l| l.contains("HSM recovered")).count();
        kv.push(("halog.expected".into(), expected.to_string()));
        kv.push(("halog.failures".into(), failures.to_string()));
        kv.push(("halog.recovered".into(), recovered.to_string()));
        for line in halog_other_lines(&text) {
            kv.push(("halog.other".into(), line));
        }
        if failures != expected || recovered != expected {
            return Err(format!(
                "the HA log has {failures} failure and {recovered} recovery lines, \
                 expected {expected} of each"
            ));
        }
    }
    Ok(())
}

/// The HA log's lines other than failures and recoveries, without timestamp and process,
/// counted: "N x <severity>: <text>".
fn halog_other_lines(text: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        if line.contains("HSM Failure detected") || line.contains("HSM recovered") {
            continue;
        }
        let msg = line.find("] ").map_or(line, |i| &line[i + 2..]);
        *seen.entry(msg.to_string()).or_default() += 1;
    }
    seen.into_iter()
        .map(|(m, n)| format!("{n} x {m}"))
        .collect()
}

/// Setup (a): one session; its member fails at the ECDSA C_Sign (after C_SignInit, so the
/// journal holds the sign operation). Each round also times the same call without a failure.
fn single_failovers(
    ctx: &Pkcs11,
    slot: Slot,
    ha: &HaApi,
    verifier: &Session,
    w: &Work,
    n: usize,
    kv: &mut Kv,
) -> Result<(), String> {
    let s = ctx
        .open_rw_session(slot)
        .map_err(|e| format!("C_OpenSession: {e}"))?;
    let key = w.keys.ec_priv;
    let (mut base, mut fail, mut back) = (Vec::new(), Vec::new(), Vec::new());
    let mut used = [false; 64];
    for i in 1..=n {
        let round = |e: String| format!("failover {i}: {e}");
        ha.require_all_up(3).map_err(round)?;
        // After the wait for the member's return the caches are cold: a few untimed signatures
        // first, so that the call without failure and the failover start alike.
        for _ in 0..WARM_SIGNATURES {
            ha.sign_init(&s, key).map_err(round)?;
            ha.sign(&s, &w.digest).0.map_err(round)?;
        }
        ha.sign_init(&s, key).map_err(round)?;
        let (sig, dt) = ha.sign(&s, &w.digest);
        let sig = sig.map_err(|e| round(format!("without failure: {e}")))?;
        verify_ecdsa(verifier, w, &sig).map_err(|e| round(format!("without failure: {e}")))?;
        base.push(us(dt));

        let m = ha.session_member(&s).map_err(round)?;
        used[m] = true;
        ha.sign_init(&s, key).map_err(round)?;
        ha.inject(m, "on:op_single:1").map_err(round)?;
        let (sig, dt) = ha.sign(&s, &w.digest);
        let sig = sig.map_err(|e| round(format!("the call that met member {m}'s failure: {e}")))?;
        fail.push(us(dt));
        let after = ha.session_member(&s).map_err(round)?;
        if after == m {
            return Err(round(format!("the session is still on member {m}")));
        }
        if ha.member(m).map_err(round)?.up != 0 {
            return Err(round(format!("member {m} is still in service")));
        }
        verify_ecdsa(verifier, w, &sig)
            .map_err(|e| round(format!("signature made across the failover: {e}")))?;
        ha.inject(m, "heal").map_err(round)?;
        back.push(ms(ha.wait_up(m).map_err(round)?));
    }
    kv.push((
        "single.members_failed".into(),
        used.iter().filter(|&&u| u).count().to_string(),
    ));
    push_stats(kv, "single.base", "us", &base);
    push_stats(kv, "single.failover", "us", &fail);
    push_stats(kv, "single.back_after_heal", "ms", &back);
    Ok(())
}

/// Setup (b)'s two variants: what the sessions hold when their member goes down, and the call
/// timed afterwards.
#[derive(Clone, Copy)]
enum Mass {
    /// An ECDSA key used, a 2 KiB session object made, C_SignInit(CKM_ECDSA) done; then C_Sign.
    Sign,
    /// C_DigestInit(SHA-256) and 4 KiB of C_DigestUpdate done; then C_DigestFinal.
    Digest,
}

impl Mass {
    fn key(self) -> &'static str {
        match self {
            Mass::Sign => "mass_sign",
            Mass::Digest => "mass_digest",
        }
    }
}

/// Setup (b): sessions are opened until `mass_sessions` of them are on one member; each does
/// some work, then that member goes down, and the first call on each of them is timed.
#[allow(clippy::too_many_arguments)]
fn mass_failovers(
    ctx: &Pkcs11,
    slot: Slot,
    ha: &HaApi,
    verifier: &Session,
    w: &Work,
    o: LatencyOptions,
    kind: Mass,
    kv: &mut Kv,
) -> Result<(), String> {
    let n = o.mass_sessions;
    let key = w.keys.ec_priv;
    let data = &w.input[..MASS_DIGEST_LEN];
    let expected_digest = digest_all(verifier, data, MASS_DIGEST_LEN)
        .map_err(|e| format!("SHA-256 of the 4 KiB: {e}"))?;
    let object_value = w.input[..MASS_OBJECT_LEN].to_vec();
    let (mut base, mut fail, mut first, mut total, mut back) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut opened = Vec::new();
    for round in 1..=o.mass_rounds {
        let at = |e: String| format!("round {round}: {e}");
        ha.require_all_up(3).map_err(at)?;
        // Open sessions until n of them are on one member (new sessions go to the member with
        // the fewest, so about 3n are opened).
        let mut sessions: Vec<(Session, usize)> = Vec::new();
        let mut per_member = [0usize; 64];
        let target = loop {
            if sessions.len() > 4 * n + 16 {
                return Err(at(format!(
                    "no member got {n} of {} sessions",
                    sessions.len()
                )));
            }
            let s = ctx
                .open_rw_session(slot)
                .map_err(|e| at(format!("C_OpenSession #{}: {e}", sessions.len() + 1)))?;
            let m = ha.session_member(&s).map_err(at)?;
            per_member[m] += 1;
            sessions.push((s, m));
            if per_member[m] == n {
                break m;
            }
        };
        opened.push(sessions.len() as f64);
        let group: Vec<&Session> = sessions
            .iter()
            .filter(|(_, m)| *m == target)
            .map(|(s, _)| s)
            .collect();
        // The work before the failure, and the same call without a failure.
        let mut objects = Vec::new();
        for (i, s) in group.iter().enumerate() {
            let at = |e: String| at(format!("session {}: {e}", i + 1));
            match kind {
                Mass::Sign => {
                    let sig = s
                        .sign(&Mechanism::Ecdsa, key, &w.digest)
                        .map_err(|e| at(format!("ECDSA sign: {e}")))?;
                    verify_ecdsa(verifier, w, &sig).map_err(at)?;
                    let obj = s
                        .create_object(&[
                            Attribute::Class(ObjectClass::DATA),
                            Attribute::Token(false),
                            Attribute::Label(b"p11ha-bench".to_vec()),
                            Attribute::Value(object_value.clone()),
                        ])
                        .map_err(|e| at(format!("C_CreateObject: {e}")))?;
                    objects.push(obj);
                    ha.sign_init(s, key).map_err(at)?;
                    let (sig, dt) = ha.sign(s, &w.digest);
                    let sig = sig.map_err(at)?;
                    verify_ecdsa(verifier, w, &sig).map_err(at)?;
                    base.push(us(dt));
                    ha.sign_init(s, key).map_err(at)?;
                }
                Mass::Digest => {
                    let start = |s: &Session| {
                        s.digest_init(&Mechanism::Sha256)
                            .and_then(|()| s.digest_update(data))
                            .map_err(|e| at(format!("C_DigestInit/C_DigestUpdate: {e}")))
                    };
                    start(s)?;
                    let (d, dt) = ha.digest_final(s);
                    if d.map_err(at)? != expected_digest {
                        return Err(at("wrong digest without a failure".into()));
                    }
                    base.push(us(dt));
                    start(s)?;
                }
            }
        }
        // The member goes down; the first call on each session meets it.
        ha.inject(target, "down").map_err(at)?;
        let t0 = Instant::now();
        let mut outs = Vec::with_capacity(n);
        for (i, s) in group.iter().enumerate() {
            let (r, dt) = match kind {
                Mass::Sign => ha.sign(s, &w.digest),
                Mass::Digest => ha.digest_final(s),
            };
            let out = r.map_err(|e| {
                at(format!(
                    "session {}, first call after the failure: {e}",
                    i + 1
                ))
            })?;
            outs.push(out);
            fail.push(us(dt));
            if i == 0 {
                first.push(us(dt));
            }
        }
        total.push(ms(t0.elapsed()));
        // Validation (not timed).
        for (i, (s, out)) in group.iter().zip(&outs).enumerate() {
            let at = |e: String| at(format!("session {}: {e}", i + 1));
            if ha.session_member(s).map_err(at)? == target {
                return Err(at(format!("still on member {target}")));
            }
            match kind {
                Mass::Sign => {
                    verify_ecdsa(verifier, w, out)
                        .map_err(|e| at(format!("signature made across the failover: {e}")))?;
                    let value = s
                        .get_attributes(objects[i], &[cryptoki::object::AttributeType::Value])
                        .map_err(|e| at(format!("session object after the failover: {e}")))?;
                    if !matches!(value.as_slice(), [Attribute::Value(v)] if *v == object_value) {
                        return Err(at("the session object's value changed".into()));
                    }
                }
                Mass::Digest => {
                    if *out != expected_digest {
                        return Err(at("wrong digest across the failover".into()));
                    }
                }
            }
        }
        if ha.member(target).map_err(at)?.up != 0 {
            return Err(at(format!("member {target} is still in service")));
        }
        ha.inject(target, "heal").map_err(at)?;
        back.push(ms(ha.wait_up(target).map_err(at)?));
        drop(group);
        drop(sessions);
    }
    let k = kind.key();
    push_stats(kv, &format!("{k}.base"), "us", &base);
    push_stats(kv, &format!("{k}.failover"), "us", &fail);
    push_stats(kv, &format!("{k}.first_call"), "us", &first);
    push_stats(kv, &format!("{k}.total"), "ms", &total);
    push_stats(kv, &format!("{k}.back_after_heal"), "ms", &back);
    if let Some((median, ..)) = stats(&opened) {
        kv.push((format!("{k}.sessions_opened"), format!("{median:.0}")));
    }
    Ok(())
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
    fault_lib: Option<PathBuf>,
    softhsm: PathBuf,
    kit_client: PathBuf,
    ops: Vec<Op>,
    keep: bool,
    /// The throughput of the local configurations (wld1, wld3, ha1, ha3).
    local: bool,
    /// The throughput of the remote configurations (kit, rpc1, rpc-ha3).
    remote: bool,
    latency: bool,
    /// The scale part, and how.
    scale: bool,
    scale_opts: scale::ScaleOptions,
    failovers: usize,
    mass_rounds: usize,
    mass_sessions: usize,
    recover_ms: u64,
}

const USAGE: &str = "\
usage: p11ha-bench [options]
  --seconds S    measured time of one round, per configuration (default 0.24)
  --slices N     a round is cut into N slices, the configurations taking turns (default 2)
  --warmup S     warm-up before a measurement's first slice, per thread (default 0.2)
  --rounds N     rounds of each measurement: the median rate is reported, and the median,
                 lowest and highest of the per-round ratios (default 5)
  --chunk BYTES  C_DigestUpdate/C_EncryptUpdate chunk, multiple of 16 (default 16384)
  --lib PATH     libp11ha.so (default <repo>/target/release/libp11ha.so)
  --fault-lib PATH  the test build with fault injection, for the failover measurements
                 (default <repo>/target/fault/release/libp11ha.so)
  --softhsm PATH SoftHSM module (default /usr/lib/softhsm/libsofthsm2.so)
  --kit-client PATH  p11-kit's RPC client module, the remote baseline
                 (default /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so)
  --ops LIST     comma-separated subset of ecdsa,rsa,sha256,aes,sha256-64k,aes-64k,info
                 (default all)
  --failovers N  failovers of one session, setup (a) (default 200)
  --mass-rounds N  failovers of a member holding many sessions, setup (b), per variant (default 3)
  --mass-sessions N  sessions on that member (default 100)
  --recover-ms MS  P11HA_HA_RECOVER_DELAY_MS of the failover configuration (default 20)
  --only LIST    comma-separated subset of local,remote,failover,scale: the parts to run
                 (default all; direct, the baseline, is measured with local and with remote)
  --no-throughput  only the failover measurements (= --only failover)
  --no-remote    no remote configurations (kit, rpc1, rpc-ha3, and their p11-kit servers)
  --no-failover  no failover measurements
  --keep         keep the scratch token directories";

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        seconds: 0.24,
        warmup: 0.2,
        rounds: 5,
        slices: 2,
        chunk: 16 * 1024,
        lib: None,
        fault_lib: None,
        softhsm: PathBuf::from(DEFAULT_SOFTHSM),
        kit_client: PathBuf::from(DEFAULT_KIT_CLIENT),
        ops: Op::ALL.to_vec(),
        keep: false,
        local: true,
        remote: true,
        latency: true,
        scale: true,
        scale_opts: scale::ScaleOptions::default(),
        failovers: 200,
        mass_rounds: 3,
        mass_sessions: 100,
        recover_ms: 20,
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
            "--fault-lib" => o.fault_lib = Some(PathBuf::from(val()?)),
            "--softhsm" => o.softhsm = PathBuf::from(val()?),
            "--kit-client" => o.kit_client = PathBuf::from(val()?),
            "--ops" => {
                o.ops = val()?
                    .split(',')
                    .map(|k| Op::from_key(k.trim()).ok_or(format!("--ops: unknown operation {k}")))
                    .collect::<Result<_, _>>()?;
            }
            "--keep" => o.keep = true,
            "--failovers" => o.failovers = num(val()?)? as usize,
            "--mass-rounds" => o.mass_rounds = num(val()?)? as usize,
            "--mass-sessions" => o.mass_sessions = num(val()?)? as usize,
            "--recover-ms" => o.recover_ms = num(val()?)? as u64,
            "--only" => {
                (o.local, o.remote, o.latency, o.scale) = (false, false, false, false);
                for part in val()?.split(',') {
                    match part.trim() {
                        "local" => o.local = true,
                        "remote" => o.remote = true,
                        "failover" => o.latency = true,
                        "scale" => o.scale = true,
                        p => return Err(format!("--only: unknown part {p}")),
                    }
                }
            }
            "--no-throughput" => (o.local, o.remote) = (false, false),
            "--no-remote" => o.remote = false,
            "--no-failover" => o.latency = false,
            a if a.starts_with("--scale-") => o.scale_opts.set(a, &val()?)?,
            "-h" | "--help" => {
                println!("{USAGE}\n{}", scale::USAGE);
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
    if o.mass_sessions == 0 || o.mass_sessions > 500 {
        return Err("--mass-sessions must be between 1 and 500".into());
    }
    if o.recover_ms == 0 {
        return Err("--recover-ms must be at least 1 (0 turns recovery off)".into());
    }
    if !o.local && !o.remote && !o.latency && !o.scale {
        return Err("nothing left to measure".into());
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// SoftHSM itself.
    Direct,
    /// libp11ha.so in WLD mode.
    Wld,
    /// libp11ha.so in HA mode.
    Ha,
    /// libp11ha.so in HA mode with fault injection: the failover measurements.
    Failover,
    /// p11-kit-client.so against one p11-kit server: the remote baseline.
    Kit,
    /// libp11ha.so in WLD mode over p11-kit servers (no module).
    RpcWld,
    /// libp11ha.so in HA mode over p11-kit servers (no module).
    RpcHa,
}

impl Kind {
    fn is_remote(self) -> bool {
        matches!(self, Kind::Kit | Kind::RpcWld | Kind::RpcHa)
    }
}

/// A part of the throughput measurements: its configurations take turns with each other, and
/// its rows are ratios against its own baseline, measured alongside.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    /// direct, wld1, wld3, ha1, ha3; the baseline is direct.
    Local,
    /// direct, kit, rpc1, rpc-ha3; the baseline is kit (and direct for kit itself).
    Remote,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Local => "local",
            Part::Remote => "remote",
        }
    }

    /// Whether configurations of `kind` are measured in this part (direct is in every part).
    fn has(self, kind: Kind) -> bool {
        match self {
            Part::Local => matches!(kind, Kind::Direct | Kind::Wld | Kind::Ha),
            Part::Remote => kind == Kind::Direct || kind.is_remote(),
        }
    }

    /// The application thread counts `op` is measured with.
    fn threads(self, op: Op) -> &'static [usize] {
        match (self, op) {
            (Part::Local, _) => &LOCAL_THREADS,
            // p11-kit-client.so cannot do AES-CBC: no baseline to scale against.
            (Part::Remote, Op::AesCbc | Op::AesCbcSmall) => &[1, 2],
            (Part::Remote, _) => &REMOTE_THREADS,
        }
    }
}

impl Options {
    /// The throughput parts to run, in report order.
    fn parts(&self) -> Vec<Part> {
        [(Part::Local, self.local), (Part::Remote, self.remote)]
            .into_iter()
            .filter_map(|(p, on)| on.then_some(p))
            .collect()
    }

    /// The most threads a configuration of `kind` runs: the sessions its child opens.
    fn max_threads(&self, kind: Kind) -> usize {
        self.parts()
            .into_iter()
            .filter(|p| p.has(kind))
            .flat_map(|p| self.ops.iter().flat_map(move |&op| p.threads(op)))
            .copied()
            .max()
            .unwrap_or(1)
    }
}

#[derive(Clone)]
struct Config {
    name: &'static str,
    lib: PathBuf,
    /// The directory holding softhsm2.conf (local kinds) and the HA log.
    dir: PathBuf,
    /// The slot id; `None`: the first slot whose token is labelled TOKEN_LABEL.
    slot: Option<u64>,
    kind: Kind,
    /// The addresses of the p11-kit servers (`unix:path=...`), remote kinds only.
    servers: Vec<String>,
}

impl Config {
    /// A configuration of libp11ha.so or SoftHSM over the token(s) in `dir`.
    fn local(name: &'static str, lib: &Path, dir: PathBuf, slot: u64, kind: Kind) -> Config {
        Config {
            name,
            lib: lib.to_path_buf(),
            dir,
            slot: Some(slot),
            kind,
            servers: Vec::new(),
        }
    }

    /// The HA log of an HA-mode configuration (in its directory).
    fn ha_log(&self) -> Option<PathBuf> {
        matches!(self.kind, Kind::Ha | Kind::Failover | Kind::RpcHa)
            .then(|| self.dir.join("ha.log"))
    }
}

/// The outputs every configuration must agree on, with the operation that makes each.
const CHECK_KEYS: [(&str, Op); 5] = [
    ("sha256", Op::Sha256),
    ("aes_cbc_fnv64", Op::AesCbc),
    ("sha256_64k", Op::Sha256Small),
    ("aes_cbc_64k_fnv64", Op::AesCbcSmall),
    ("rsa_sig_fnv64", Op::Rsa),
];

/// The operation whose output `key` of [`CHECK_KEYS`] is.
fn check_op(key: &str) -> Op {
    CHECK_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(Op::Sha256, |(_, op)| *op)
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
/// one); [`Tokens::clone_for`] then copies them for the other configurations (all three tokens,
/// or the first alone). Cloning rather than running mktokens.sh again keeps the key material
/// identical in every configuration (mktokens.sh generates new keys each time), so that outputs
/// can be compared, and gives each child process its own token files.
fn make_tokens(root: &Path, scratch: &Path, softhsm: &Path) -> Result<Tokens, String> {
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
    let first = first_dir.ok_or(format!("no token directory for serial {serial}"))?;
    Ok(Tokens {
        scratch: scratch.to_path_buf(),
        base,
        slot,
        first,
    })
}

/// The tokens made by [`make_tokens`].
struct Tokens {
    scratch: PathBuf,
    /// The directory of the three tokens (the direct baseline uses the first).
    base: PathBuf,
    /// SoftHSM's slot id of the first token.
    slot: u64,
    /// The first token's own directory.
    first: PathBuf,
}

impl Tokens {
    /// A copy, in `<scratch>/<name>`, of all three tokens or of the first one alone.
    fn clone_for(&self, name: &str, all: bool) -> Result<PathBuf, String> {
        if all {
            let dir = self.scratch.join(name);
            std::fs::create_dir_all(dir.join("tokens")).map_err(|e| e.to_string())?;
            run(Command::new("cp")
                .arg("-a")
                .arg(self.base.join("tokens"))
                .arg(&dir))?;
            write_conf(&dir)?;
            Ok(dir)
        } else {
            self.clone_one(name, &self.first)
        }
    }

    /// A copy, in `<scratch>/<name>`, of the one token in directory `token`.
    fn clone_one(&self, name: &str, token: &Path) -> Result<PathBuf, String> {
        let dir = self.scratch.join(name);
        std::fs::create_dir_all(dir.join("tokens")).map_err(|e| e.to_string())?;
        run(Command::new("cp")
            .arg("-a")
            .arg(token)
            .arg(dir.join("tokens")))?;
        write_conf(&dir)?;
        Ok(dir)
    }

    /// The tokens' own directories: the first token's, then the others' in name order.
    fn token_dirs(&self) -> Result<Vec<PathBuf>, String> {
        let mut others = Vec::new();
        for entry in std::fs::read_dir(self.base.join("tokens")).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() && path != self.first {
                others.push(path);
            }
        }
        others.sort();
        Ok(std::iter::once(self.first.clone()).chain(others).collect())
    }
}

/// Runs `p11-kit server` in the background and kills its whole process group (the server and
/// the `p11-kit-remote` it forks for each client connection) when stdin, a pipe from this
/// program, says so or closes: however the bench ends, no server outlives it (the technique of
/// tests/src/remote.rs).
const SERVER_WRAPPER: &str = r#"
p11-kit server -f --provider "$1" -n "$2" "$3" </dev/null >/dev/null 2>>"$4" &
read -r _
kill -KILL 0
"#;

/// One `p11-kit server` serving the one token of a directory on a Unix socket; stopped (with
/// everything it forked) when dropped.
struct KitServer {
    name: &'static str,
    socket: PathBuf,
    /// The wrapper shell, leader of the server's process group.
    wrapper: Child,
}

impl KitServer {
    /// Starts the server over the token of `dir` (which holds softhsm2.conf) and waits until it
    /// listens.
    fn start(name: &'static str, dir: &Path, softhsm: &Path) -> Result<KitServer, String> {
        let socket = dir.join("p11-kit.sock");
        // sockaddr_un.sun_path holds 108 bytes with the NUL.
        if socket.as_os_str().len() > 100 {
            return Err(format!(
                "socket path too long for a Unix socket: {} (set TMPDIR to a shorter directory)",
                socket.display()
            ));
        }
        let log = dir.join("server.log");
        // The server and its connection children outlive the wrapper by a moment when the group
        // is killed; as a subreaper this process inherits them and reaps them in drop(), so that
        // not even a zombie is left (if this process dies, init inherits and reaps them).
        // SAFETY: prctl(2) with an option that takes one integer argument; no memory is passed.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
        let wrapper = Command::new("sh")
            .arg("-c")
            .arg(SERVER_WRAPPER)
            .arg("p11ha-bench-server")
            .arg(softhsm)
            .arg(&socket)
            .arg(format!("pkcs11:token={TOKEN_LABEL}"))
            .arg(&log)
            .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting p11-kit server {name}: {e}"))?;
        // From here on, dropping the server stops it.
        let mut server = KitServer {
            name,
            socket,
            wrapper,
        };
        let t = Instant::now();
        while UnixStream::connect(&server.socket).is_err() {
            let exited = matches!(server.wrapper.try_wait(), Ok(Some(_)));
            if exited || t.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "p11-kit server {name} on {} did not start (is p11-kit installed? \
                     scripts/setup-debian.sh): {}",
                    server.socket.display(),
                    std::fs::read_to_string(&log).unwrap_or_default().trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    /// `unix:path=...`, as P11_KIT_SERVER_ADDRESS and ET_HSM_NETCLIENT_SERVERLIST take it.
    fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// The id of its process group.
    fn group(&self) -> u32 {
        self.wrapper.id()
    }
}

impl Drop for KitServer {
    fn drop(&mut self) {
        if let Some(stdin) = self.wrapper.stdin.as_mut() {
            let _ = stdin.write_all(b"stop\n");
        }
        let group = libc::pid_t::try_from(self.wrapper.id())
            .ok()
            .filter(|&g| g > 0);
        if let Some(group) = group {
            // SAFETY: kill(2) of the process group the wrapper leads (process_group(0) made its
            // pid the group id; it is not reaped yet, so the id is not reused).
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.wrapper.wait();
        // The rest of the group, reparented to this process (see start()): a process is handed
        // to its new parent before it can be reaped itself, so when no child of the group is
        // left (ECHILD), none is.
        if let Some(group) = group {
            loop {
                let mut status = 0;
                // SAFETY: waitpid(2) for any child in the group, with a valid status pointer.
                let pid = unsafe { libc::waitpid(-group, &mut status, 0) };
                let interrupted =
                    std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
                if pid < 0 && !interrupted {
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The processes in the given process groups (the servers and what they forked), so that their
/// CPU time counts as ours.
fn group_processes(groups: &[u32]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            // fields[0] is field 3 (state); field 5 is the process group.
            let group = fields.get(2)?.parse::<u32>().ok()?;
            groups.contains(&group).then_some(pid)
        })
        .collect()
}

struct ChildProc {
    cfg: Config,
    pipe: ChildPipe,
    kv: BTreeMap<String, Vec<String>>,
    /// Why this configuration is not measured (any more).
    failed: Option<String>,
}

impl ChildProc {
    fn spawn(cfg: &Config, o: &Options) -> Result<ChildProc, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("--child")
            .arg(cfg.name)
            .arg("--lib")
            .arg(&cfg.lib)
            .arg("--slot")
            .arg(cfg.slot.map_or("label".into(), |s| s.to_string()))
            .arg("--chunk")
            .arg(o.chunk.to_string())
            .arg("--sessions")
            .arg(o.max_threads(cfg.kind).to_string())
            .stderr(Stdio::inherit());
        // Only this configuration's settings reach the libraries.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("ET_PTKC_")
                || k.starts_with("ET_HSM_")
                || k.starts_with("P11HA_")
                || k == "SOFTHSM2_CONF"
                || k == "P11_KIT_SERVER_ADDRESS"
            {
                cmd.env_remove(&*k);
            }
        }
        if !cfg.kind.is_remote() {
            cmd.env("SOFTHSM2_CONF", cfg.dir.join("softhsm2.conf"));
        }
        let mode = match cfg.kind {
            Kind::Direct | Kind::Kit => None,
            Kind::Wld | Kind::RpcWld => Some("WLD"),
            Kind::Ha | Kind::Failover | Kind::RpcHa => Some("HA"),
        };
        if let Some(mode) = mode {
            // Remote members only: no module at all.
            let modules = if cfg.kind.is_remote() {
                std::ffi::OsStr::new("")
            } else {
                o.softhsm.as_os_str()
            };
            cmd.env("P11HA_MODULES", modules)
                .env("ET_PTKC_GENERAL_LIBRARY_MODE", mode)
                .env("ET_PTKC_WLD_SLOT_0", TOKEN_LABEL);
        }
        match cfg.kind {
            Kind::Kit => {
                cmd.env("P11_KIT_SERVER_ADDRESS", cfg.servers.join(" "));
            }
            Kind::RpcWld | Kind::RpcHa => {
                cmd.env("ET_HSM_NETCLIENT_SERVERLIST", cfg.servers.join(" "));
            }
            _ => {}
        }
        if let Some(log) = cfg.ha_log() {
            cmd.env("ET_PTKC_HA_LOG_FILE", log)
                .env("ET_PTKC_HA_LOG_NAME", "p11ha-bench");
        }
        if cfg.kind == Kind::Failover {
            cmd.env("P11HA_FAULT_INJECTION", "YES")
                .env("P11HA_HA_RECOVER_DELAY_MS", o.recover_ms.to_string())
                .arg("--latency")
                .arg(format!(
                    "{},{},{}",
                    o.failovers, o.mass_rounds, o.mass_sessions
                ));
        }
        Ok(ChildProc {
            pipe: ChildPipe::spawn(&mut cmd, cfg.name)?,
            cfg: cfg.clone(),
            kv: BTreeMap::new(),
            failed: None,
        })
    }

    /// Reads the start-up report, up to "@ready".
    fn wait_ready(&mut self) {
        let r = loop {
            match self.pipe.reply() {
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
            // The failover child measures during its start-up.
            self.failed = Some(match self.cfg.kind {
                Kind::Failover => e,
                _ => format!("start-up failed: {e}"),
            });
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.kv.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    /// Why the library refuses `op` as a whole (it is then not measured).
    fn unsupported(&self, op: Op) -> Option<&str> {
        self.get(&format!("unsupported.{}", op.key()))
    }

    fn measure(&mut self, op: Op, threads: usize, secs: f64, warm: f64) -> Result<f64, String> {
        self.pipe
            .send(&format!("run {} {threads} {secs} {warm}", op.key()))
            .map_err(|e| format!("child process gone: {e}"))?;
        let l = self.pipe.reply()?;
        let words: Vec<&str> = l.split_whitespace().collect();
        match words.as_slice() {
            ["result", rate, _ops, _elapsed] => rate.parse::<f64>().map_err(|e| e.to_string()),
            ["error", ..] => Err(l["error ".len()..].to_string()),
            _ => Err(format!("unexpected reply {l:?}")),
        }
    }

    fn quit(&mut self) {
        self.pipe.quit(self.failed.is_none());
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
        // A process that is gone (a server's connection child, say) no longer counts.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
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
    let tokens = make_tokens(&root, &scratch.dir, &o.softhsm)?;
    let mut configs = Vec::new();
    if o.local || o.remote {
        configs.push(Config::local(
            "direct",
            &o.softhsm,
            tokens.base.clone(),
            tokens.slot,
            Kind::Direct,
        ));
    }
    if o.local {
        for (name, kind, all) in [
            ("wld1", Kind::Wld, false),
            ("wld3", Kind::Wld, true),
            ("ha1", Kind::Ha, false),
            ("ha3", Kind::Ha, true),
        ] {
            configs.push(Config::local(
                name,
                &lib,
                tokens.clone_for(name, all)?,
                0,
                kind,
            ));
        }
    }
    // Declared after `scratch`, so dropped (stopped) before it is removed, on every path.
    let mut servers: Vec<KitServer> = Vec::new();
    if o.remote {
        if !o.kit_client.is_file() {
            return Err(format!(
                "p11-kit-client.so not found at {} (scripts/setup-debian.sh installs p11-kit; \
                 --kit-client PATH, or --no-remote)",
                o.kit_client.display()
            ));
        }
        // Server A serves a copy of the first token (direct's), B and C copies of the others.
        for (name, token) in SERVER_NAMES.into_iter().zip(tokens.token_dirs()?) {
            let dir = tokens.clone_one(&format!("server-{name}"), &token)?;
            servers.push(KitServer::start(name, &dir, &o.softhsm)?);
        }
        if servers.len() != SERVER_NAMES.len() {
            return Err(format!("{} tokens for 3 servers", servers.len()));
        }
        let addresses: Vec<String> = servers.iter().map(KitServer::address).collect();
        for (name, lib, slot, kind, n) in [
            ("kit", &o.kit_client, None, Kind::Kit, 1),
            ("rpc1", &lib, Some(0), Kind::RpcWld, 1),
            ("rpc-ha3", &lib, Some(0), Kind::RpcHa, 3),
        ] {
            let dir = scratch.dir.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            configs.push(Config {
                name,
                lib: lib.clone(),
                dir,
                slot,
                kind,
                servers: addresses[..n].to_vec(),
            });
        }
    }
    let server_list: Vec<(&str, String)> = servers.iter().map(|s| (s.name, s.address())).collect();
    // The failover is made by the fault adapter, and the scale part's members are paced by it,
    // which only the test build has (the `fault-injection` feature).
    let fault_lib = || {
        let fault_lib = o
            .fault_lib
            .clone()
            .unwrap_or_else(|| root.join("target/fault/release/libp11ha.so"));
        if !fault_lib.is_file() {
            return Err(format!(
                "the test build of libp11ha.so not found at {}: build it with `cargo build \
                 --release -p p11ha-ffi --features fault-injection --target-dir target/fault` \
                 or name it with --fault-lib PATH",
                fault_lib.display()
            ));
        }
        Ok(fault_lib.canonicalize().unwrap_or(fault_lib))
    };
    let failover_cfg = if o.latency {
        let fault_lib = fault_lib()?;
        Some(Config::local(
            "ha3-failover",
            &fault_lib,
            tokens.clone_for("ha3-failover", true)?,
            0,
            Kind::Failover,
        ))
    } else {
        None
    };

    // Start all children, then collect their validation reports.
    let mut children = Vec::new();
    for c in &configs {
        children.push(ChildProc::spawn(c, &o)?);
    }
    for c in &mut children {
        c.wait_ready();
    }
    // Outputs must agree with the reference: for each output, the first configuration that
    // started and produced it (a configuration may lack one only if it refuses its operation).
    let check_keys = CHECK_KEYS.map(|(k, _)| k);
    let references: Vec<Option<String>> = CHECK_KEYS
        .iter()
        .map(|(k, _)| {
            children
                .iter()
                .filter(|c| c.failed.is_none())
                .find_map(|c| c.get(k).map(str::to_string))
        })
        .collect();
    for c in &mut children {
        if c.failed.is_some() {
            continue;
        }
        let bad: Vec<String> = CHECK_KEYS
            .iter()
            .zip(&references)
            .filter_map(|((k, op), r)| match (c.get(k), r) {
                (None, _) if c.unsupported(*op).is_some() => None,
                (Some(v), Some(r)) if v == r => None,
                (v, r) => Some(format!(
                    "{k} {} (expected {})",
                    v.unwrap_or("missing"),
                    r.as_deref().unwrap_or("?")
                )),
            })
            .collect();
        if !bad.is_empty() {
            c.failed = Some(format!(
                "output differs from the other configurations: {}",
                bad.join(", ")
            ));
        }
    }
    for c in &children {
        match &c.failed {
            Some(why) => eprintln!("{}: NOT MEASURED: {why}", c.cfg.name),
            None => eprintln!("{}: validated, ready", c.cfg.name),
        }
    }
    // The servers' processes, and the connection children they forked for ours: their CPU time
    // is ours too.
    let groups: Vec<u32> = servers.iter().map(KitServer::group).collect();
    let server_pids = group_processes(&groups);

    // The schedule: per part, operation and thread count a cell, measured in rounds; within a
    // round the configurations of the part take turns in short slices (order rotating), so that
    // a slow spell of the machine hits all of them alike, and each round gives each
    // configuration's ratio to the baseline.
    let n_cfg = children.len();
    let mut cells = plan_cells(&o, &children);
    // One unrecorded pass, so that the first configuration measured does not pay for a cold
    // machine; errors show up again in the measurements.
    if n_cfg > 0 {
        eprintln!("warm-up pass ...");
    }
    for c in children.iter_mut().filter(|c| c.failed.is_none()) {
        let threads = o.max_threads(c.cfg.kind);
        for &op in &o.ops {
            if c.unsupported(op).is_none() {
                let _ = c.measure(op, threads, WARMUP_PASS_SECONDS, 0.0);
            }
        }
    }
    // Share of the machine's CPU time that other processes took during each measurement.
    let pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(children.iter().map(|c| c.pipe.child.id()))
        .chain(server_pids)
        .collect();
    let throughput_started = Instant::now();
    let foreign_cpu = run_cells(&mut cells, &mut children, &o, &pids);
    let throughput_seconds = throughput_started.elapsed().as_secs_f64();
    // The throughput children are done: they leave the machine to the failover child, and so
    // do the servers.
    for c in &mut children {
        c.quit();
    }
    drop(servers);

    // Failover latency, alone on the machine.
    let failover_started = Instant::now();
    let failover = match &failover_cfg {
        Some(cfg) => {
            eprintln!(
                "failover measurements ({} single failovers, {} x 2 rounds of {} sessions) ...",
                o.failovers, o.mass_rounds, o.mass_sessions
            );
            let mut c = ChildProc::spawn(cfg, &o)?;
            c.wait_ready();
            c.quit();
            match &c.failed {
                Some(why) => eprintln!("{}: FAILED: {why}", c.cfg.name),
                None => eprintln!("{}: done", c.cfg.name),
            }
            Some(c)
        }
        None => None,
    };
    let failover_seconds = failover_started.elapsed().as_secs_f64();
    // Scale, alone on the machine too.
    let scale = match o.scale {
        true => Some(scale::measure_all(
            &o.scale_opts,
            &root,
            &scratch.dir,
            &o.softhsm,
            &fault_lib()?,
        )?),
        false => None,
    };
    let elapsed = started.elapsed().as_secs_f64();

    // Report.
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "p11ha-bench: SoftHSM directly vs libp11ha.so in WLD and HA mode{} ({cpus} CPUs)",
        if o.remote {
            ", and over p11-kit's RPC"
        } else {
            ""
        }
    );
    for c in children.iter().chain(&failover) {
        println!(
            "  {:<12} {} | {} | {}",
            c.cfg.name,
            c.cfg.lib.display(),
            c.get("library").unwrap_or("?"),
            c.get("token").unwrap_or("?")
        );
        if !c.cfg.servers.is_empty() {
            let names: Vec<&str> = server_list
                .iter()
                .filter(|(_, a)| c.cfg.servers.contains(a))
                .map(|(n, _)| *n)
                .collect();
            println!("  {:<12} over p11-kit server(s) {}", "", names.join(", "));
        }
    }
    for (name, address) in &server_list {
        println!("  server {name}     p11-kit server {address}");
    }
    if n_cfg > 0 {
        println!(
            "method (throughput): one child process per configuration (SoftHSM or libp11ha.so\n\
             \x20 loaded once per process), all alive at once, measured one at a time. Each part\n\
             \x20 (local: direct and libp11ha.so over SoftHSM, threads {}; remote: direct and the\n\
             \x20 p11-kit RPC clients, threads {}, AES-CBC {}) is measured on its own, direct in each.\n\
             \x20 For every (operation, threads) the configurations of the part run {} rounds; in a\n\
             \x20 round each runs {} s, cut into {} slices of {:.2} s, the configurations taking turns\n\
             \x20 slice by slice (order rotating), so that a slow spell of the machine hits all of them\n\
             \x20 alike. In a slice the threads warm up ({} s before the first slice of the first\n\
             \x20 round, {} s before the others), start together at a barrier and count completed\n\
             \x20 operations; rate = sum over threads of count / elapsed; a round's rate is the mean\n\
             \x20 of its slices'. A ratio is taken per round, against the baseline's rate of the same\n\
             \x20 round; the tables give the median rate and the median, lowest and highest of the\n\
             \x20 per-round ratios. One unrecorded {WARMUP_PASS_SECONDS} s pass per operation and\n\
             \x20 configuration before all that. Each thread has its own session, opened after one\n\
             \x20 C_Login on a control session; every timed operation checks its result.\n\
             \x20 ECDSA: CKM_ECDSA over a 32-byte digest; RSA: CKM_SHA256_RSA_PKCS over {} bytes,\n\
             \x20 single-part C_Sign; SHA-256 and AES-256-CBC: 1 MiB ({INPUT_LEN} bytes) as {}\n\
             \x20 C_DigestUpdate / C_EncryptUpdate chunks of {} bytes, and 64 KiB ({SMALL_LEN} bytes) as\n\
             \x20 {} chunks, MB = 10^6 bytes; C_GetSessionInfo in batches of {}. The cryptoki crate\n\
             \x20 queries output lengths: one signature = C_SignInit + 2 C_Sign, one chunk = 2\n\
             \x20 C_EncryptUpdate.\n\
             \x20 {}: HA mode (no fault injection), which journals every session: mechanism and key\n\
             \x20 at Init, and a copy of the Update data up to {SMALL_LEN} bytes per operation (the\n\
             \x20 default limit). The 64 KiB inputs stay within it, so every byte is copied into the\n\
             \x20 journal; the 1 MiB inputs pass it at chunk {}, after which nothing more is copied\n\
             \x20 and the operation is marked not recoverable (it goes on; HA logs it once).",
            thread_list(Part::Local.threads(Op::Ecdsa)),
            thread_list(Part::Remote.threads(Op::Ecdsa)),
            thread_list(Part::Remote.threads(Op::AesCbc)),
            o.rounds,
            o.seconds,
            o.slices,
            o.seconds / o.slices as f64,
            o.warmup,
            o.warmup.min(SLICE_WARMUP_SECONDS),
            RSA_MESSAGE.len(),
            INPUT_LEN.div_ceil(o.chunk),
            o.chunk,
            SMALL_LEN.div_ceil(o.chunk),
            Op::SessionInfo.batch(),
            match (o.local, o.remote) {
                (true, true) => "ha1/ha3/rpc-ha3",
                (false, true) => "rpc-ha3",
                _ => "ha1/ha3",
            },
            SMALL_LEN / o.chunk + 1
        );
    }
    for part in o.parts() {
        if n_cfg == 0 {
            break;
        }
        println!();
        if part == Part::Remote {
            print_remote_method(&o, &server_list);
            println!();
        }
        print_part_table(part, &cells, &children, &o);
    }
    if let Some(f) = &failover {
        println!();
        print_failover(f, &o);
    }
    println!();
    println!("validation:");
    for c in &children {
        let status = match &c.failed {
            Some(why) => format!("FAILED: {why}"),
            None => "ok (signatures verify, tampered ones rejected; outputs agree)".into(),
        };
        let short = |k: &str| match c.get(k) {
            Some(v) => v.chars().take(16).collect::<String>(),
            None if c.unsupported(check_op(k)).is_some() => "n/a".into(),
            None => "?".into(),
        };
        println!(
            "  {:<7} sha256 {} / {} (1 MiB / 64 KiB)  aes-cbc fnv64 {} / {}  rsa-sig fnv64 {}  {status}",
            c.cfg.name,
            short("sha256"),
            short("sha256_64k"),
            short("aes_cbc_fnv64"),
            short("aes_cbc_64k_fnv64"),
            short("rsa_sig_fnv64"),
        );
        if let Some(j) = c.get("journal") {
            println!("         HA journal: {j}");
        }
        for op in Op::ALL {
            if let Some(why) = c.unsupported(op) {
                println!("         not measured: {}: {why}", op.title());
            }
        }
        for w in c.kv.get("warning").into_iter().flatten() {
            println!("         warning: {w}");
        }
        if let Some(log) = c.cfg.ha_log() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines = halog_other_lines(&text);
            println!(
                "         HA log ({} line(s)){}",
                text.lines().count(),
                if lines.is_empty() { "" } else { ":" }
            );
            for l in lines {
                println!("           {l}");
            }
        }
    }
    if let Some(f) = &failover {
        let status = match &f.failed {
            Some(why) => format!("FAILED: {why}"),
            None => "ok (every signature made across a failover verifies, every digest and \
                     session object is intact, every session moved to another member)"
                .into(),
        };
        println!("  {} {status}", f.cfg.name);
        println!(
            "         HA log: {} failure and {} recovery line(s), {} expected",
            f.get("halog.failures").unwrap_or("?"),
            f.get("halog.recovered").unwrap_or("?"),
            f.get("halog.expected").unwrap_or("?")
        );
        for l in f.kv.get("halog.other").into_iter().flatten() {
            println!("           other: {l}");
        }
        for w in f.kv.get("warning").into_iter().flatten() {
            println!("         warning: {w}");
        }
    }
    let mut all_ok = children.iter().chain(&failover).all(|c| c.failed.is_none());
    let errors: Vec<(&Cell, usize, &String)> = cells
        .iter()
        .flat_map(|cell| cell.errors.iter().map(move |(&ci, e)| (cell, ci, e)))
        .collect();
    if !errors.is_empty() {
        all_ok = false;
        println!("errors:");
        for (cell, ci, e) in errors {
            println!(
                "  {} {} {} thr {}: {e}",
                cell.part.name(),
                cell.op.title(),
                cell.threads,
                children[ci].cfg.name
            );
        }
    }
    let foreign_mean = foreign_cpu.iter().sum::<f64>() / foreign_cpu.len().max(1) as f64;
    let foreign_max = foreign_cpu.iter().copied().fold(0.0, f64::max);
    let noisy = foreign_cpu.iter().filter(|&&f| f > 0.10).count();
    if !foreign_cpu.is_empty() {
        println!(
            "other processes took {:.0}% of the CPUs on average during the throughput measurements \
             (at most {:.0}%; {noisy} of {} measurements above 10%)",
            foreign_mean * 100.0,
            foreign_max * 100.0,
            foreign_cpu.len()
        );
    }
    println!(
        "run time: {elapsed:.0} s (throughput {throughput_seconds:.0} s, failover \
         {failover_seconds:.0} s, the rest setup and validation)"
    );

    println!();
    println!(
        "# p11ha-bench results (key=value; rates are the median of the rounds, ratios the median, \
         min and max of the per-round ratios)"
    );
    println!("bench.cpus={cpus}");
    println!("bench.seconds={}", o.seconds);
    println!("bench.warmup_seconds={}", o.warmup);
    println!("bench.slices={}", o.slices);
    println!("bench.rounds={}", o.rounds);
    println!("bench.estimator=median_of_rounds");
    println!("bench.input_bytes={INPUT_LEN}");
    println!("bench.small_input_bytes={SMALL_LEN}");
    println!("bench.chunk_bytes={}", o.chunk);
    println!("bench.mb=1000000");
    println!("bench.run_seconds={elapsed:.0}");
    println!("bench.throughput_seconds={throughput_seconds:.0}");
    println!("bench.failover_seconds={failover_seconds:.0}");
    if !foreign_cpu.is_empty() {
        println!("bench.foreign_cpu_mean_pct={:.0}", foreign_mean * 100.0);
        println!("bench.foreign_cpu_max_pct={:.0}", foreign_max * 100.0);
    }
    for c in children.iter().chain(&failover) {
        println!("lib.{}={}", c.cfg.name, c.cfg.lib.display());
        if !c.cfg.servers.is_empty() {
            println!("servers.{}={}", c.cfg.name, c.cfg.servers.join(" "));
        }
    }
    for cell in &cells {
        print_cell_kv(cell, &children);
    }
    if let Some(f) = &failover {
        println!("failover.recover_delay_ms={}", o.recover_ms);
        println!("failover.mass_sessions={}", o.mass_sessions);
        for (k, vs) in &f.kv {
            let failover_key = ["single.", "mass_sign.", "mass_digest.", "halog.", "members"]
                .iter()
                .any(|p| k.starts_with(p));
            if failover_key && k != "halog.other" {
                for v in vs {
                    println!("failover.{k}={v}");
                }
            }
        }
        println!("failover.ok={}", f.failed.is_none());
    }
    for c in &children {
        for k in check_keys {
            let missing = if c.unsupported(check_op(k)).is_some() {
                "n/a"
            } else {
                "?"
            };
            println!("check.{}.{k}={}", c.cfg.name, c.get(k).unwrap_or(missing));
        }
        println!("check.{}.ok={}", c.cfg.name, c.failed.is_none());
    }
    if let Some(s) = &scale {
        all_ok &= scale::report(s);
    }

    drop(scratch);
    Ok(all_ok)
}

// ---------------------------------------------------------------------------------------------
// Throughput: the cells of the schedule, measured in rounds, and their tables
// ---------------------------------------------------------------------------------------------

/// One row of a part's table: an operation at a thread count, measured in rounds on the part's
/// configurations.
struct Cell {
    part: Part,
    op: Op,
    threads: usize,
    /// The children measured, in table order (direct first).
    cfgs: Vec<usize>,
    /// `rates[ci]`: child `ci`'s rate in each round (empty for the children not in the part).
    rates: Vec<Vec<f64>>,
    /// Why a child's measurement failed; it is not measured again in this cell.
    errors: BTreeMap<usize, String>,
}

/// The median, lowest and highest of a set of values.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(v: &[f64]) -> Option<Spread> {
    let (median, _, _, _) = stats(v)?;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Spread { median, min, max })
}

impl Cell {
    /// Child `ci`'s median rate over the rounds.
    fn median(&self, ci: usize) -> Option<f64> {
        spread(&self.rates[ci]).map(|s| s.median)
    }

    /// Child `ci`'s ratios to child `base`, one per round (both measured side by side in it).
    fn ratio(&self, ci: usize, base: usize) -> Option<Spread> {
        let (a, b) = (&self.rates[ci], &self.rates[base]);
        if a.len() != b.len() || self.errors.contains_key(&ci) || self.errors.contains_key(&base) {
            return None;
        }
        spread(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<f64>>())
    }

    /// The child of the given kind that this cell measures.
    fn find(&self, children: &[ChildProc], kind: Kind) -> Option<usize> {
        self.cfgs
            .iter()
            .copied()
            .find(|&ci| children[ci].cfg.kind == kind)
    }

    /// Child `ci`'s baseline: direct for the local configurations and for kit; kit for the other
    /// remote ones where kit can do the operation, else direct. None for direct itself.
    fn baseline(&self, children: &[ChildProc], ci: usize) -> Option<usize> {
        let direct = self.find(children, Kind::Direct)?;
        let kind = children[ci].cfg.kind;
        if ci == direct {
            return None;
        }
        let kit = self
            .find(children, Kind::Kit)
            .filter(|&k| children[k].unsupported(self.op).is_none());
        match kit {
            Some(k) if kind.is_remote() && kind != Kind::Kit => Some(k),
            _ => Some(direct),
        }
    }
}

/// The cells of the parts to run, in report order.
fn plan_cells(o: &Options, children: &[ChildProc]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for part in o.parts() {
        let cfgs: Vec<usize> = (0..children.len())
            .filter(|&ci| part.has(children[ci].cfg.kind))
            .collect();
        if cfgs.is_empty() {
            continue;
        }
        for &op in &o.ops {
            for &threads in part.threads(op) {
                cells.push(Cell {
                    part,
                    op,
                    threads,
                    cfgs: cfgs.clone(),
                    rates: vec![Vec::new(); children.len()],
                    errors: BTreeMap::new(),
                });
            }
        }
    }
    cells
}

/// Measures every cell, `o.rounds` rounds of `o.slices` slices each. Returns, per cell, the
/// share of the CPUs that other processes took meanwhile.
fn run_cells(
    cells: &mut [Cell],
    children: &mut [ChildProc],
    o: &Options,
    pids: &[u32],
) -> Vec<f64> {
    let slice = o.seconds / o.slices as f64;
    let total = cells.len();
    let mut foreign_cpu = Vec::new();
    let mut turn = 0;
    for (done, cell) in cells.iter_mut().enumerate() {
        let mut foreign = (0.0, 0.0);
        for round in 0..o.rounds {
            // Per child: the sum of its slices' rates, and their number.
            let mut acc = vec![(0.0f64, 0usize); children.len()];
            for s in 0..o.slices {
                // The full warm-up before the first slice, a short one before the others.
                let warm = if round == 0 && s == 0 {
                    o.warmup
                } else {
                    o.warmup.min(SLICE_WARMUP_SECONDS)
                };
                for k in 0..cell.cfgs.len() {
                    let ci = cell.cfgs[(k + turn) % cell.cfgs.len()];
                    let c = &mut children[ci];
                    if c.failed.is_some()
                        || c.unsupported(cell.op).is_some()
                        || cell.errors.contains_key(&ci)
                    {
                        continue;
                    }
                    let before = cpu_probe(pids);
                    let t0 = Instant::now();
                    let r = c.measure(cell.op, cell.threads, slice, warm);
                    let dt = t0.elapsed().as_secs_f64();
                    if let Some(f) = cpu_probe(pids).and_then(|a| a.foreign_since(before?)) {
                        foreign.0 += f * dt;
                        foreign.1 += dt;
                    }
                    match r {
                        Ok(rate) => {
                            acc[ci].0 += rate;
                            acc[ci].1 += 1;
                        }
                        Err(e) => {
                            if e.starts_with("child process") {
                                c.failed = Some(e.clone());
                            }
                            cell.errors.insert(ci, e);
                        }
                    }
                }
                turn += 1;
            }
            for &ci in &cell.cfgs {
                if acc[ci].1 == o.slices && !cell.errors.contains_key(&ci) {
                    cell.rates[ci].push(acc[ci].0 / acc[ci].1 as f64);
                }
            }
        }
        let mut line = format!(
            "[{:>2}/{total}] {:<6} {:<10} {} thr",
            done + 1,
            cell.part.name(),
            cell.op.key(),
            cell.threads
        );
        for &ci in &cell.cfgs {
            let c = &children[ci];
            if let Some(e) = cell.errors.get(&ci) {
                let _ = write!(line, "   {} ERROR {e}", c.cfg.name);
            } else if c.unsupported(cell.op).is_some() {
                let _ = write!(line, "   {} n/a", c.cfg.name);
            } else if let Some(rate) = cell.median(ci) {
                let _ = write!(line, "   {} {rate:.0}", c.cfg.name);
                if let Some(r) = cell.baseline(children, ci).and_then(|b| cell.ratio(ci, b)) {
                    let _ = write!(line, " ({:.2})", r.median);
                }
            }
        }
        if foreign.1 > 0.0 {
            let f = foreign.0 / foreign.1;
            foreign_cpu.push(f);
            let _ = write!(line, "   (other processes: {:.0}% of the CPUs)", f * 100.0);
        }
        eprintln!("{line}");
    }
    foreign_cpu
}

/// "1, 2, 4"
fn thread_list(threads: &[usize]) -> String {
    threads
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A rate rounded to an integer, with thousands separated by commas.
fn grouped(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// A ratio: two decimals, three below 0.1 (a remote C_GetSessionInfo against direct).
fn fmt_ratio(r: f64) -> String {
    if r < 0.095 {
        format!("{r:.3}")
    } else {
        format!("{r:.2}")
    }
}

/// "1.27, 1.20-1.31": the median ratio, then the lowest and highest (the median alone after a
/// single round).
fn fmt_spread(s: Spread, rounds: usize) -> String {
    if rounds > 1 {
        format!(
            "{}, {}-{}",
            fmt_ratio(s.median),
            fmt_ratio(s.min),
            fmt_ratio(s.max)
        )
    } else {
        fmt_ratio(s.median)
    }
}

/// The column title of a configuration in the tables.
fn column_title(name: &str) -> &str {
    match name {
        "wld1" => "WLD, 1 member",
        "wld3" => "WLD, 3 members",
        "ha1" => "HA, 1 member",
        "ha3" => "HA, 3 members",
        other => other,
    }
}

/// Prints a Markdown table, its columns padded to line up.
fn print_markdown(header: &[String], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header);
    line(
        &width
            .iter()
            .map(|&w| "-".repeat(w.max(3)))
            .collect::<Vec<_>>(),
    );
    for row in rows {
        line(row);
    }
}

/// A part's table, in Markdown: each cell the median rate of the rounds and, but for the
/// baseline, the median and the range of its per-round ratios to its baseline.
fn print_part_table(part: Part, cells: &[Cell], children: &[ChildProc], o: &Options) {
    let cells: Vec<&Cell> = cells.iter().filter(|c| c.part == part).collect();
    let Some(first) = cells.first() else {
        return;
    };
    let rounds = o.rounds;
    let ratios = if rounds > 1 {
        format!("the median, then the lowest-highest, of the {rounds} per-round ratios")
    } else {
        "the ratio".into()
    };
    let against = match part {
        Part::Local => "against direct",
        Part::Remote => {
            "(kit) against direct, (rpc1, rpc-ha3) against kit and then, median only, against \
             direct (AES-CBC, which kit cannot do: against direct)"
        }
    };
    println!(
        "{} part: each cell the median rate of {rounds} round(s), and in parentheses {ratios} \
         {against}; a ratio compares two measurements taken in the same round.",
        part.name()
    );
    println!();
    let mut header = vec!["operation".to_string(), "threads".to_string()];
    header.extend(
        first
            .cfgs
            .iter()
            .map(|&ci| column_title(children[ci].cfg.name).to_string()),
    );
    let mut rows = Vec::new();
    for cell in cells {
        let mut row = vec![cell.op.title().to_string(), cell.threads.to_string()];
        let direct = cell.find(children, Kind::Direct);
        for &ci in &cell.cfgs {
            let c = &children[ci];
            let Some(rate) = cell.median(ci) else {
                row.push(if cell.errors.contains_key(&ci) {
                    "ERROR".into()
                } else if let Some(why) = c.unsupported(cell.op) {
                    format!("n/a ({})", why.split_whitespace().next().unwrap_or(why))
                } else {
                    "n/a".into()
                });
                continue;
            };
            let base = cell.baseline(children, ci);
            let text = match (base, base.and_then(|b| cell.ratio(ci, b))) {
                (None, _) => grouped(rate),
                (Some(_), None) => format!("{} (-)", grouped(rate)),
                (Some(b), Some(r)) if Some(b) == direct && c.cfg.kind.is_remote() => {
                    if c.cfg.kind == Kind::Kit {
                        format!("{} ({})", grouped(rate), fmt_spread(r, rounds))
                    } else {
                        format!("{} (direct {})", grouped(rate), fmt_spread(r, rounds))
                    }
                }
                (Some(_), Some(r)) if c.cfg.kind.is_remote() => {
                    let d = direct
                        .and_then(|d| cell.ratio(ci, d))
                        .map_or("-".into(), |d| fmt_ratio(d.median));
                    format!("{} ({}; direct {d})", grouped(rate), fmt_spread(r, rounds))
                }
                (Some(_), Some(r)) => format!("{} ({})", grouped(rate), fmt_spread(r, rounds)),
            };
            row.push(text);
        }
        rows.push(row);
    }
    print_markdown(&header, &rows);
}

/// A cell's key=value lines: `<part>.<op>.<threads>thr.<config>` with the median rate, then
/// `_rounds` (each round's rate), `_ratio[_min|_max]` against direct and, for rpc1 and rpc-ha3,
/// `_ratio_kit[_min|_max]` against kit.
fn print_cell_kv(cell: &Cell, children: &[ChildProc]) {
    let direct = cell.find(children, Kind::Direct);
    let kit = cell.find(children, Kind::Kit);
    for &ci in &cell.cfgs {
        let c = &children[ci];
        let key = format!(
            "{}.{}.{}thr.{}",
            cell.part.name(),
            cell.op.kv_name(),
            cell.threads,
            c.cfg.name
        );
        match cell.median(ci) {
            Some(v) => println!("{key}={v:.0}"),
            None if c.unsupported(cell.op).is_some() => println!("{key}=n/a"),
            None => println!("{key}=error"),
        }
        if !cell.rates[ci].is_empty() {
            let rounds: Vec<String> = cell.rates[ci].iter().map(|v| format!("{v:.0}")).collect();
            println!("{key}_rounds={}", rounds.join(","));
        }
        for (suffix, base) in [("ratio", direct), ("ratio_kit", kit)] {
            let Some(base) = base.filter(|&b| b != ci) else {
                continue;
            };
            if suffix == "ratio_kit" && !c.cfg.kind.is_remote() {
                continue;
            }
            if let Some(r) = cell.ratio(ci, base) {
                println!("{key}_{suffix}={:.3}", r.median);
                println!("{key}_{suffix}_min={:.3}", r.min);
                println!("{key}_{suffix}_max={:.3}", r.max);
            }
        }
    }
}

/// How the remote configurations are set up, and what one operation costs in round trips.
fn print_remote_method(o: &Options, servers: &[(&str, String)]) {
    let chunks = INPUT_LEN.div_ceil(o.chunk);
    let small_chunks = SMALL_LEN.div_ceil(o.chunk);
    let names: Vec<&str> = servers.iter().map(|(n, _)| *n).collect();
    println!(
        "method (remote): {} `p11-kit server` processes ({}) on Unix sockets, each serving one token\n\
         \x20 (`pkcs11:token={TOKEN_LABEL}`): A a copy of direct's token, B and C copies of the other\n\
         \x20 two; each server forks a p11-kit-remote process (which loads SoftHSM) per client\n\
         \x20 connection. kit: p11-kit-client.so with P11_KIT_SERVER_ADDRESS=A, the remote baseline;\n\
         \x20 rpc1: libp11ha.so in WLD mode, virtual slot 0 made of A's token, through p11ha's own RPC\n\
         \x20 client (P11HA_MODULES empty, ET_HSM_NETCLIENT_SERVERLIST=A); rpc-ha3: libp11ha.so in HA\n\
         \x20 mode over A, B and C. Both clients forward each PKCS#11 call as one round trip; p11ha\n\
         \x20 answers the length queries it can be sure of itself. Round trips, kit / p11ha: a\n\
         \x20 signature 3 / 2 (C_SignInit, C_Sign for the length (p11ha: learned from the first\n\
         \x20 signature), C_Sign), a SHA-256 of 1 MiB {} / {} (Init, {chunks} Updates, Final for the\n\
         \x20 length, Final) and of 64 KiB {} / {}, an AES-CBC encryption of 1 MiB - / {} (kit would ask\n\
         \x20 each Update's length: {}) and of 64 KiB - / {}, a C_GetSessionInfo 1 / 1. Each client holds\n\
         \x20 one connection per server and a p11-kit-remote answers its connection's calls one at a\n\
         \x20 time, so the threads of kit and rpc1 (up to {}, all on server A) take turns on one\n\
         \x20 connection, while rpc-ha3 spreads its sessions over the three servers.\n\
         \x20 p11-kit-client.so 0.24.1 carries no mechanism parameter, hence no AES-CBC\n\
         \x20 (CKR_MECHANISM_INVALID); p11ha's client carries the IV.",
        servers.len(),
        names.join(", "),
        chunks + 3,
        chunks + 2,
        small_chunks + 3,
        small_chunks + 2,
        chunks + 2,
        2 * chunks + 3,
        small_chunks + 2,
        REMOTE_THREADS[REMOTE_THREADS.len() - 1],
    );
}

/// The failover section of the report, from the failover child's key=value lines.
fn print_failover(f: &ChildProc, o: &Options) {
    let line = |prefix: &str, unit: &str| -> String {
        let g = |k: &str| f.get(&format!("{prefix}.{k}")).map(str::to_string);
        match (
            g(&format!("median_{unit}")),
            g(&format!("p90_{unit}")),
            g(&format!("max_{unit}")),
            g("max_at"),
            g("n"),
        ) {
            (Some(m), Some(p), Some(x), Some(at), Some(n)) => {
                format!("median {m} {unit}, p90 {p} {unit}, worst {x} {unit} (#{at} of {n})")
            }
            _ => "not measured".into(),
        }
    };
    let diff = |a: &str, b: &str| -> String {
        let g = |p: &str| {
            f.get(&format!("{p}.median_us"))
                .and_then(|v| v.parse::<f64>().ok())
        };
        match (g(a), g(b)) {
            (Some(x), Some(y)) => format!("{:.0} us", x - y),
            _ => "?".into(),
        }
    };
    println!(
        "failover latency: libp11ha.so in HA mode over 3 SoftHSM members (fault injection on,\n\
         \x20 P11HA_HA_RECOVER_DELAY_MS={}), in its own process after the throughput measurements.\n\
         \x20 Time of one raw call, from its start to its successful return; the call that meets the\n\
         \x20 failure fails over inside: a session opened on the member in service with the fewest\n\
         \x20 sessions, login (held there by p11ha's anchor session), the journal replayed, the call\n\
         \x20 made again. After each failover the failed member is healed and its return to service\n\
         \x20 awaited (P11HA_GetMemberInfo), so every round starts with 3 members. Validated: each\n\
         \x20 session moved (P11HA_GetSessionMember), each signature verifies (C_Verify on another\n\
         \x20 session), each digest and session object is intact, the member is out of service.",
        o.recover_ms
    );
    if o.failovers == 0 {
        println!("  (a) not run (--failovers 0)");
    } else {
        print_single(f, &line, &diff);
    }
    if o.mass_rounds == 0 {
        println!("  (b) not run (--mass-rounds 0)");
    } else {
        print_mass(f, o, &line, &diff);
    }
}

fn print_single(
    f: &ChildProc,
    line: &dyn Fn(&str, &str) -> String,
    diff: &dyn Fn(&str, &str) -> String,
) {
    println!(
        "  (a) one session, its member fails at the ECDSA C_Sign (CKM_ECDSA, 32-byte digest) after\n\
         \x20     C_SignInit (P11HA_InjectFault(member, \"on:op_single:1\")). The session usually moves to\n\
         \x20     the member that came back last (it has the fewest sessions), where p11ha has forgotten\n\
         \x20     the key's handle: the failover includes finding the key again by its identity."
    );
    println!(
        "      without failure (same session, same call) {}",
        line("single.base", "us")
    );
    println!(
        "      failover                                   {}",
        line("single.failover", "us")
    );
    println!(
        "      failover cost (difference of the medians) {}; members failed in turn: {}",
        diff("single.failover", "single.base"),
        f.get("single.members_failed").unwrap_or("?")
    );
    println!(
        "      member back in service after heal           {}",
        line("single.back_after_heal", "ms")
    );
}

fn print_mass(
    f: &ChildProc,
    o: &Options,
    line: &dyn Fn(&str, &str) -> String,
    diff: &dyn Fn(&str, &str) -> String,
) {
    println!(
        "  (b) {} sessions on one member (about {} opened so that {} land on it), which goes down\n\
         \x20     (\"down\"): the first call on each of them afterwards, one after another, {} round(s)",
        o.mass_sessions,
        f.get("mass_sign.sessions_opened").unwrap_or("?"),
        o.mass_sessions,
        o.mass_rounds
    );
    for (k, what) in [
        (
            "mass_sign",
            "ECDSA C_Sign; each session had signed once, made a 2 KiB session object\n\
             \x20     (re-created by the replay) and called C_SignInit (CKM_ECDSA)",
        ),
        (
            "mass_digest",
            "C_DigestFinal; each session had C_DigestInit (SHA-256) and 4 KiB of\n\
             \x20     C_DigestUpdate in progress (replayed)",
        ),
    ] {
        println!("    {what}:");
        println!(
            "      without failure (same sessions, same call) {}",
            line(&format!("{k}.base"), "us")
        );
        println!(
            "      failover, per call                          {}",
            line(&format!("{k}.failover"), "us")
        );
        println!(
            "      of which the first call (meets the failure) {}",
            line(&format!("{k}.first_call"), "us")
        );
        println!(
            "      failover cost (difference of the medians) {}",
            diff(&format!("{k}.failover"), &format!("{k}.base"))
        );
        println!(
            "      all {} served again (first call start to last return) {}",
            o.mass_sessions,
            line(&format!("{k}.total"), "ms")
        );
    }
}
