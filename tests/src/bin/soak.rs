//! The chaos soak (`scripts/soak.sh [seconds]`): `libp11ha.so` in HA mode
//! over three real `p11-kit server`s, four application threads doing mixed
//! work, and a driver that every one to three seconds kills -9 (and later
//! restarts) or SIGSTOPs (and later resumes) a random server, never all at
//! once.
//!
//! Every result is checked: multi-part SHA-256 against openssl's digest,
//! multi-part AES-CBC-PAD against openssl's ciphertext, RSA PKCS#1 v1.5
//! (deterministic) against a reference signature, ECDSA by `C_Verify` on the
//! same library (and every 16th by openssl), searches against the token's
//! objects, a generated session AES key by a round trip, and a derived one
//! (`CKM_DH_PKCS_DERIVE` from a session DH key made by `C_CreateObject`) by
//! its ciphertext, which must be the same on every member and after every
//! failover (the derivation is deterministic, so the journal rebuilds it).
//!
//! Why DH: it is the one derivation SoftHSM 2.6.1 offers whose parameter
//! holds no pointer (the other party's public value, a byte string), so it
//! travels to p11-kit 0.24.1; ECDH1 and the `*_ENCRYPT_DATA` derivations
//! carry pointers, which 0.24.1 cannot take (README, "Remote members").
//!
//! Before the chaos begins (the warm-up) and at the end, the program makes
//! the library calm (every server back, every member in service, every
//! thread idle) and measures its resident memory and open descriptors; the
//! two must agree within [`RSS_BOUND_KB`] and [`FD_BOUND`].
//!
//! Throughout, a scraper reads the live state (`P11HA_STATUS_SOCKET`) every
//! 100 ms; every scrape must be whole, and at the end each member's failure
//! and recovery counters and the incomplete replays must equal the HA log's
//! lines, and the socket must be gone after `C_Finalize`.
//!
//! Exit status 0 only if there was no wrong result and no unexpected error,
//! the drift is within bounds, the HA log shows at least one failover, the
//! live state agrees with the log, and no `p11-kit` process of this run is
//! left.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use p11ha_tests::ha::{log_lines, log_path};
use p11ha_tests::remote::{self, with_server};
use p11ha_tests::status::{try_member_value, try_scrape, try_value};
use p11ha_tests::*;

/// Resident memory may grow by at most this much (KiB) between the calm
/// after warm-up and the calm at the end. Everything of the library's is
/// allocated at `C_Initialize`, except the HA journals, whose pages are
/// committed as sessions first write them: sessions take the lowest free
/// slot, and at most about 12 are open at once here (4 workers with at most
/// 2 each, the probes), so at most ~12 x 78 KiB (< 1 MiB) may first be
/// touched after warm-up. The rest is the allocator's high-water mark
/// moving in five threads' arenas (glibc grows them in steps of 128 KiB and
/// more) and the program's own buffers. Measured: +28 KiB over 60 s, +88
/// KiB over 300 s. 8 MiB leaves room for that and still catches a leak of
/// ~110 bytes per operation over a 60 s run (about 75,000 operations after
/// the warm-up here), and of far less over longer runs.
const RSS_BOUND_KB: i64 = 8 * 1024;

/// Open descriptors may differ by at most this many. Both measurements are
/// taken calm (every member in service over one socket each, no thread
/// inside the library, no openssl child): the count should be equal. The
/// slack is for a recovery connection the library may hold for a moment
/// while it replaces a member's socket (one per member, three members) and
/// one descriptor of the runtime (a log file being reopened).
const FD_BOUND: i64 = 4;

const WORKERS: usize = 4;
const SERVERS: usize = 3;
const IV: [u8; 16] = [7; 16];

/// The operations, as counted.
const KINDS: [&str; 7] = [
    "digest", "encrypt", "ecdsa", "rsa", "find", "keygen", "derive",
];

/// Every thread holds this shared while it works; the main thread takes it
/// exclusively to measure a calm process.
static GATE: RwLock<()> = RwLock::new(());
/// Tells the workers and the driver to end.
static STOP: AtomicBool = AtomicBool::new(false);
/// Tells the driver to bring every server back and disturb nothing.
static HOLD: AtomicBool = AtomicBool::new(false);
/// Set by the driver while every server runs, nothing is pending, and
/// every member is in service.
static CALM: AtomicBool = AtomicBool::new(false);
/// Increases with every disturbance the driver causes.
static DISTURBANCES: AtomicU64 = AtomicU64::new(0);

static OPS: [AtomicUsize; 7] = [const { AtomicUsize::new(0) }; 7];
static WRONG: AtomicUsize = AtomicUsize::new(0);
static UNEXPECTED: AtomicUsize = AtomicUsize::new(0);
static EXPECTED: AtomicUsize = AtomicUsize::new(0);

/// What every operation must produce, computed before the chaos.
struct Refs {
    data: Vec<Vec<u8>>,
    digests: Vec<Vec<u8>>,
    ciphertexts: Vec<Vec<u8>>,
    signatures: Vec<Vec<u8>>,
    objects: BTreeSet<u64>,
    aes: ObjectHandle,
    rsa: ObjectHandle,
    ec: ObjectHandle,
    ec_pub: ObjectHandle,
    dh_peer: Vec<u8>,
    derived_ct: Vec<u8>,
    block: Vec<u8>,
}

/// How an operation ended.
enum Outcome {
    Correct,
    Wrong(String),
    /// An error the library documents for this situation (see `run_keygen`).
    Expected(String),
    Unexpected(String),
}

type R<T> = Result<T, Error>;

/// A small xorshift generator; the seed is printed so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn open(l: &Library, slot: Slot) -> R<Session> {
    l.pkcs11.open_rw_session(slot)
}

fn digest(s: &Session, data: &[u8]) -> R<Vec<u8>> {
    s.digest_init(&Mechanism::Sha256)?;
    for part in data.chunks(700) {
        s.digest_update(part)?;
    }
    s.digest_final()
}

fn encrypt(s: &Session, key: ObjectHandle, data: &[u8]) -> R<Vec<u8>> {
    s.encrypt_init(&Mechanism::AesCbcPad(IV), key)?;
    let mut out = Vec::new();
    for part in data.chunks(500) {
        out.extend(s.encrypt_update(part)?);
    }
    out.extend(s.encrypt_final()?);
    Ok(out)
}

fn rsa_sign(s: &Session, key: ObjectHandle, data: &[u8]) -> R<Vec<u8>> {
    s.sign_init(&Mechanism::Sha256RsaPkcs, key)?;
    for part in data.chunks(900) {
        s.sign_update(part)?;
    }
    s.sign_final()
}

fn token_objects(s: &Session) -> R<BTreeSet<u64>> {
    Ok(s.find_objects(&[Attribute::Token(true)])?
        .iter()
        .map(|h| h.handle())
        .collect())
}

/// The derive operation: its key, and the key's AES-CBC ciphertext of
/// `block`.
fn derive_and_encrypt(s: &Session, refs: &Refs) -> R<Vec<u8>> {
    let base = dh::private_key(s)?;
    let key = dh::derive_aes(s, base, &refs.dh_peer)?;
    let ct = s.encrypt(&Mechanism::AesCbc(IV), key, &refs.block)?;
    s.destroy_object(key)?;
    s.destroy_object(base)?;
    Ok(ct)
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Outcome {
    if ok {
        Outcome::Correct
    } else {
        Outcome::Wrong(what())
    }
}

fn err(e: Error) -> Outcome {
    Outcome::Unexpected(e.to_string())
}

fn handle_invalid(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _)
    )
}

/// The other face of the same loss: a failover in the middle of the
/// encryption or decryption with the generated key cannot re-initialise
/// that operation (its key is gone), so the interrupted call answers
/// `CKR_DEVICE_ERROR` (README, "Failover and replay": the operation in
/// progress is lost, with a "Session recovery incomplete" line).
fn operation_lost(e: &Error) -> bool {
    matches!(e, Error::Pkcs11(RvError::DeviceError, _))
}

/// A generated AES session key, used, then used again. The one error
/// allowed: README, "Failover and replay", session objects: a generated key
/// that was used in a cryptographic operation before a failover cannot be
/// made again (a new random key would differ, and PKCS#11 gives no way to
/// reproduce it), so its handle then answers `CKR_KEY_HANDLE_INVALID` /
/// `CKR_OBJECT_HANDLE_INVALID`, and an operation in progress with it
/// `CKR_DEVICE_ERROR` ([`operation_lost`]). Those errors count as expected
/// only if the session did move (its member changed) or the driver
/// disturbed a server since the key was made; anywhere else they are
/// unexpected. At the end, every expected error must be matched by a
/// "Session recovery incomplete" line in the HA log.
fn run_keygen(l: &Library, slot: Slot, refs: &Refs) -> Outcome {
    let s = match open(l, slot) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let m0 = session_member(&s);
    let d0 = DISTURBANCES.load(Ordering::SeqCst);
    let r = (|| {
        let key = s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )?;
        let ct = s.encrypt(&Mechanism::AesCbc(IV), key, &refs.block)?;
        let pt = s.decrypt(&Mechanism::AesCbc(IV), key, &ct)?;
        s.destroy_object(key)?;
        Ok::<_, Error>((ct, pt))
    })();
    match r {
        Ok((ct, pt)) => check(
            pt == refs.block && ct.len() == refs.block.len() && ct != refs.block,
            || "generated key: decryption differs".into(),
        ),
        Err(e)
            if (handle_invalid(&e) || operation_lost(&e))
                && (session_member(&s) != m0 || DISTURBANCES.load(Ordering::SeqCst) != d0) =>
        {
            Outcome::Expected(format!(
                "used generated key lost in a failover (its session: member {m0} -> {}): {e}",
                session_member(&s)
            ))
        }
        Err(e) => Outcome::Unexpected(format!(
            "{e} (its session: member {m0} -> {})",
            session_member(&s)
        )),
    }
}

fn run_op(kind: usize, s: &Session, l: &Library, slot: Slot, refs: &Refs, n: usize) -> Outcome {
    let k = n % refs.data.len();
    let d = &refs.data[k];
    match kind {
        0 => match digest(s, d) {
            Ok(x) => check(x == refs.digests[k], || format!("digest of data {k}")),
            Err(e) => err(e),
        },
        1 => match encrypt(s, refs.aes, d) {
            Ok(x) => check(x == refs.ciphertexts[k], || {
                format!("ciphertext of data {k}")
            }),
            Err(e) => err(e),
        },
        2 => {
            let h = &refs.digests[k];
            match s.sign(&Mechanism::Ecdsa, refs.ec, h) {
                Ok(sig) => match s.verify(&Mechanism::Ecdsa, refs.ec_pub, h, &sig) {
                    Ok(()) if n.is_multiple_of(16) => check(
                        openssl_verifies(&l.tokens.keys.join("ec-pub.pem"), d, &ecdsa_der(&sig)),
                        || format!("ECDSA signature of data {k} (openssl)"),
                    ),
                    Ok(()) => Outcome::Correct,
                    Err(Error::Pkcs11(RvError::SignatureInvalid, _)) => {
                        Outcome::Wrong(format!("ECDSA signature of data {k} (C_Verify)"))
                    }
                    Err(e) => err(e),
                },
                Err(e) => err(e),
            }
        }
        3 => match rsa_sign(s, refs.rsa, d) {
            Ok(x) => check(x == refs.signatures[k], || {
                format!("RSA signature of data {k}")
            }),
            Err(e) => err(e),
        },
        4 => {
            if n.is_multiple_of(2) {
                match token_objects(s) {
                    Ok(o) => check(o == refs.objects, || format!("token objects {o:?}")),
                    Err(e) => err(e),
                }
            } else {
                match s.find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label("rsa-key".into()),
                ]) {
                    Ok(o) => check(o == [refs.rsa], || format!("rsa-key found as {o:?}")),
                    Err(e) => err(e),
                }
            }
        }
        5 => run_keygen(l, slot, refs),
        _ => match open(l, slot).and_then(|s| derive_and_encrypt(&s, refs)) {
            Ok(ct) => check(ct == refs.derived_ct, || "derived key's ciphertext".into()),
            Err(e) => err(e),
        },
    }
}

fn worker(w: usize, l: &'static Library, slot: Slot, refs: Arc<Refs>, seed: u64) {
    let mut rng = Rng(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(w as u64 + 1)));
    let mut s: Option<Session> = None;
    let mut n = 0usize;
    while !STOP.load(Ordering::SeqCst) {
        let _g = GATE.read().unwrap_or_else(|e| e.into_inner());
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        // Now and then a new session: it goes to the least loaded member,
        // so recovered members get work again.
        if s.is_none() || n % 25 == 24 {
            s = None;
            match open(l, slot) {
                Ok(x) => s = Some(x),
                Err(e) => {
                    UNEXPECTED.fetch_add(1, Ordering::SeqCst);
                    eprintln!("UNEXPECTED worker {w}: C_OpenSession: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        let sess = s.as_ref().expect("a session");
        let kind = rng.below(KINDS.len() as u64) as usize;
        let before = session_member(sess);
        let t = Instant::now();
        let outcome = run_op(kind, sess, l, slot, &refs, n);
        OPS[kind].fetch_add(1, Ordering::SeqCst);
        n += 1;
        let ctx = || {
            format!(
                "worker {w} op {n} {} (the worker's session: member {before} -> {}, {:.0?})",
                KINDS[kind],
                session_member(sess),
                t.elapsed()
            )
        };
        match outcome {
            Outcome::Correct => {}
            Outcome::Wrong(what) => {
                WRONG.fetch_add(1, Ordering::SeqCst);
                eprintln!("WRONG {}: {what}", ctx());
            }
            Outcome::Expected(what) => {
                EXPECTED.fetch_add(1, Ordering::SeqCst);
                eprintln!("expected error {}: {what}", ctx());
            }
            Outcome::Unexpected(what) => {
                UNEXPECTED.fetch_add(1, Ordering::SeqCst);
                eprintln!("UNEXPECTED {}: {what}", ctx());
            }
        }
    }
}

/// Failure and recovery lines per member in the HA log.
fn log_counts() -> ([usize; SERVERS], [usize; SERVERS]) {
    let (mut failed, mut back) = ([0; SERVERS], [0; SERVERS]);
    for line in log_lines() {
        let idx = |marker: &str| {
            line.split_once(marker)
                .and_then(|(_, r)| r.split(',').next())
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|&i| i < SERVERS)
        };
        if let Some(i) = idx("HSM Failure detected hsmIdx=") {
            failed[i] += 1;
        }
        if let Some(i) = idx("HSM recovered hsmIdx=") {
            back[i] += 1;
        }
    }
    (failed, back)
}

#[derive(Clone, Copy, PartialEq)]
enum Disturbed {
    Killed,
    Frozen,
}

/// The driver's view of one server.
#[derive(Clone, Copy)]
struct State {
    /// Killed or frozen, and when to restart or resume it.
    disturbed: Option<(Disturbed, Instant)>,
    /// Back, but not yet seen answering through the library: how it was
    /// disturbed, the failure lines of its member then, and when it came
    /// back.
    pending: Option<(Disturbed, usize, Instant)>,
    /// The member's failure lines when it was disturbed.
    failed_then: usize,
}

#[derive(Default)]
struct DriverCounts {
    kills: usize,
    freezes: usize,
}

fn driver(seed: u64) -> DriverCounts {
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut states = [State {
        disturbed: None,
        pending: None,
        failed_then: 0,
    }; SERVERS];
    let mut counts = DriverCounts::default();
    let mut next = Instant::now() + rng.millis(1000, 3000);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let _g = GATE.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let hold = HOLD.load(Ordering::SeqCst) || STOP.load(Ordering::SeqCst);
        let (failed, back) = log_counts();
        for (i, st) in states.iter_mut().enumerate() {
            if let Some((how, at)) = st.disturbed
                && (hold || now >= at)
            {
                match how {
                    Disturbed::Killed => with_server(i, |s| s.start()),
                    Disturbed::Frozen => with_server(i, |s| s.thaw()),
                }
                st.disturbed = None;
                st.pending = Some((how, st.failed_then, Instant::now()));
            }
            // Back in service through the library: a killed server once its
            // member was seen failing and was recovered; a frozen one also
            // if the library never noticed the freeze.
            if let Some((how, f0, since)) = st.pending {
                let recovered = failed[i] > f0 && back[i] >= failed[i];
                let unnoticed = how == Disturbed::Frozen && failed[i] == f0;
                if since.elapsed() > Duration::from_millis(300) && (recovered || unnoticed) {
                    st.pending = None;
                }
            }
        }
        let healthy = |states: &[State; SERVERS], j: usize| {
            states[j].disturbed.is_none()
                && states[j].pending.is_none()
                && member_info(j).is_some_and(|m| m.up == 1)
        };
        let all_healthy = (0..SERVERS).all(|j| healthy(&states, j));
        CALM.store(all_healthy, Ordering::SeqCst);
        if STOP.load(Ordering::SeqCst) && all_healthy {
            return counts;
        }
        if hold || now < next {
            continue;
        }
        next = now + rng.millis(1000, 3000);
        let disturbed = states.iter().filter(|s| s.disturbed.is_some()).count();
        let i = rng.below(SERVERS as u64) as usize;
        // Never the last server seen answering; at most two at once.
        let others_healthy = (0..SERVERS)
            .filter(|&j| j != i && healthy(&states, j))
            .count();
        if states[i].disturbed.is_some() || disturbed >= 2 || others_healthy == 0 {
            continue;
        }
        states[i].failed_then = failed[i];
        states[i].pending = None;
        DISTURBANCES.fetch_add(1, Ordering::SeqCst);
        if rng.below(2) == 0 {
            with_server(i, |s| s.kill());
            states[i].disturbed = Some((Disturbed::Killed, now + rng.millis(500, 2000)));
            counts.kills += 1;
        } else {
            with_server(i, |s| s.freeze());
            states[i].disturbed = Some((Disturbed::Frozen, now + rng.millis(500, 3000)));
            counts.freezes += 1;
        }
    }
}

fn rss_kb() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(-1)
}

fn fds() -> i64 {
    std::fs::read_dir("/proc/self/fd").map_or(-1, |d| d.count() as i64)
}

/// Brings every server back (the driver does), waits until every member is
/// in service, then stops every thread and measures (RSS KiB, descriptors).
/// A probe session now and then makes the library notice a server that was
/// killed while no session called it.
fn calm_and_measure(l: &Library, slot: Slot, what: &str) -> Option<(i64, i64)> {
    HOLD.store(true, Ordering::SeqCst);
    CALM.store(false, Ordering::SeqCst);
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    while !CALM.load(Ordering::SeqCst) {
        if t.elapsed() > Duration::from_secs(60) {
            eprintln!("{what}: the members did not all come back within 60 s");
            return None;
        }
        for _ in 0..SERVERS {
            if let Ok(s) = open(l, slot) {
                let _ = s.get_session_info();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let g = GATE.write().unwrap_or_else(|e| e.into_inner());
    std::thread::sleep(Duration::from_millis(300));
    let up = (0..SERVERS).all(|j| member_info(j).is_some_and(|m| m.up == 1));
    let m = (rss_kb(), fds());
    drop(g);
    eprintln!(
        "{what}: calm after {:.1?} (all members up: {up}): VmRSS {} KiB, {} descriptors",
        t.elapsed(),
        m.0,
        m.1
    );
    HOLD.store(false, Ordering::SeqCst);
    up.then_some(m)
}

/// Processes whose command line names this run's token directory.
fn leftover_processes(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n != me && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .filter_map(|e| {
                    let c = std::fs::read(e.path().join("cmdline")).ok()?;
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains(&needle)
                        .then(|| format!("{}: {c}", e.file_name().to_string_lossy()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn references(l: &Library, control: &Session) -> Refs {
    let aes = find_one(control, ObjectClass::SECRET_KEY, "aes-key");
    let rsa = find_one(control, ObjectClass::PRIVATE_KEY, "rsa-key");
    let ec = find_one(control, ObjectClass::PRIVATE_KEY, "ec-key");
    let ec_pub = find_one(control, ObjectClass::PUBLIC_KEY, "ec-key");
    let data: Vec<Vec<u8>> = (0..4)
        .map(|k| {
            (0..1500 + 1997 * k)
                .map(|i| (i * (k + 3) + k) as u8)
                .collect()
        })
        .collect();
    let keys = &l.tokens.keys;
    let signatures: Vec<Vec<u8>> = data
        .iter()
        .map(|d| rsa_sign(control, rsa, d).expect("reference RSA signature"))
        .collect();
    for (d, sig) in data.iter().zip(&signatures) {
        assert!(
            openssl_verifies(&keys.join("rsa-pub.pem"), d, sig),
            "the RSA reference verifies"
        );
    }
    let ciphertexts: Vec<Vec<u8>> = data
        .iter()
        .map(|d| openssl_aes_256_cbc(keys, &IV, true, d))
        .collect();
    let mut refs = Refs {
        digests: data.iter().map(|d| sha256(d)).collect(),
        ciphertexts,
        signatures,
        objects: token_objects(control).expect("token objects"),
        data,
        aes,
        rsa,
        ec,
        ec_pub,
        dh_peer: dh::peer(),
        derived_ct: Vec::new(),
        block: (0..64u8).collect(),
    };
    refs.derived_ct = derive_and_encrypt(control, &refs).expect("reference DH derivation");
    // The same on every member, which the soak relies on.
    for _ in 0..SERVERS * 2 {
        let s = l.session();
        assert_eq!(
            derive_and_encrypt(&s, &refs).expect("DH derivation"),
            refs.derived_ct,
            "member {} derives the same key",
            session_member(&s)
        );
    }
    assert_eq!(
        refs.objects.len(),
        5,
        "the five token objects of mktokens.sh"
    );
    assert!(
        encrypt(control, aes, &refs.data[0]).expect("AES") == refs.ciphertexts[0],
        "AES through p11ha = openssl"
    );
    refs
}

/// Scrapes the live state every 100 ms until the end (not while the
/// program measures calm: a scrape's descriptor would count); the scrapes
/// made and those that were not whole.
fn scraper(status: &std::path::Path) -> (usize, usize) {
    let (mut n, mut bad) = (0, 0);
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        let _g = GATE.read().unwrap_or_else(|e| e.into_inner());
        n += 1;
        if try_scrape(status).is_none() {
            bad += 1;
        }
    }
    (n, bad)
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("usage: p11ha-soak [seconds]"))
        .unwrap_or(60);
    let given = std::env::var("P11HA_SOAK_SEED").ok();
    let seed: u64 = given
        .as_deref()
        .map(|s| {
            s.parse().unwrap_or_else(|_| {
                eprintln!("p11ha-soak: P11HA_SOAK_SEED must be a number below 2^64, got '{s}'");
                std::process::exit(2)
            })
        })
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let warmup = Duration::from_secs((seconds / 10).max(10));
    println!("soak: {seconds} s, warm-up {warmup:?}, seed {seed} (P11HA_SOAK_SEED repeats it)");
    let status = std::env::temp_dir().join(format!("p11ha-soak-{}.sock", std::process::id()));
    let status_setting = status.display().to_string();
    let l = remote::start(
        SERVERS,
        300,
        &[
            ("P11HA_STATUS_SOCKET", status_setting.as_str()),
            ("ET_PTKC_HA_LOG_NAME", "p11ha-soak"),
            ("P11HA_CALL_TIMEOUT_MS", "1000"),
            ("P11HA_CONNECT_TIMEOUT_MS", "1000"),
        ],
    );
    let slot = l.slot();
    let control = l.user_session();
    let refs = Arc::new(references(l, &control));
    println!("references computed; HA log: {}", log_path().display());

    let started = Instant::now();
    let driver = std::thread::Builder::new()
        .name("soak-driver".into())
        .spawn(move || driver(seed))
        .expect("driver thread");
    let scraper = {
        let status = status.clone();
        std::thread::Builder::new()
            .name("soak-scraper".into())
            .spawn(move || scraper(&status))
            .expect("scraper thread")
    };
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let refs = refs.clone();
            std::thread::Builder::new()
                .name(format!("soak-worker-{w}"))
                .spawn(move || worker(w, l, slot, refs, seed))
                .expect("worker thread")
        })
        .collect();

    std::thread::sleep(warmup);
    let warm = calm_and_measure(l, slot, "after warm-up");
    let end_at = started + Duration::from_secs(seconds);
    while Instant::now() < end_at {
        std::thread::sleep(Duration::from_millis(200));
    }
    let end = calm_and_measure(l, slot, "at the end");
    STOP.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("worker");
    }
    let counts = driver.join().expect("driver");
    let (scrapes, bad_scrapes) = scraper.join().expect("scraper");
    let duration = started.elapsed();
    drop(control);

    let (failed, back) = log_counts();
    let failovers: usize = failed.iter().sum();
    let recoveries: usize = back.iter().sum();
    let incomplete = log_lines()
        .iter()
        .filter(|l| l.contains("Session recovery incomplete"))
        .count();
    let last = try_scrape(&status).unwrap_or_default();
    let mut live_disagrees = Vec::new();
    for i in 0..SERVERS {
        let f = try_member_value(&last, "p11ha_member_failures_total", i);
        let r = try_member_value(&last, "p11ha_member_recoveries_total", i);
        if f != Some(failed[i] as u64) || r != Some(back[i] as u64) {
            live_disagrees.push(format!(
                "member {i}: failures {f:?} recoveries {r:?}, the log {} and {}",
                failed[i], back[i]
            ));
        }
    }
    let live_incomplete = try_value(&last, "p11ha_replays_incomplete_total");
    if live_incomplete != Some(incomplete as u64) {
        live_disagrees.push(format!(
            "replays incomplete {live_incomplete:?}, the log {incomplete}"
        ));
    }
    let live_failovers = try_value(&last, "p11ha_failovers_total");
    // SAFETY: no thread uses the library any more; the Pkcs11 value lives
    // in a static that is never dropped, so it will not finalize again.
    let rv = unsafe { raw().C_Finalize.expect("C_Finalize")(std::ptr::null_mut()) };
    let socket_left = status.exists();
    {
        let mut servers = remote::servers().lock().unwrap_or_else(|e| e.into_inner());
        for s in servers.iter_mut() {
            s.kill();
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let leftovers = leftover_processes(&l.tokens.dir);
    // openssl_verifies's scratch directory for this process.
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("p11ha-verify-{}", std::process::id())),
    );

    let ops: Vec<usize> = OPS.iter().map(|o| o.load(Ordering::SeqCst)).collect();
    let total: usize = ops.iter().sum();
    let wrong = WRONG.load(Ordering::SeqCst);
    let unexpected = UNEXPECTED.load(Ordering::SeqCst);
    let expected = EXPECTED.load(Ordering::SeqCst);
    let (rss_warm, fds_warm) = warm.unwrap_or((-1, -1));
    let (rss_end, fds_end) = end.unwrap_or((-1, -1));
    let rss_drift = rss_end - rss_warm;
    let fds_drift = fds_end - fds_warm;
    let drift_ok =
        warm.is_some() && end.is_some() && rss_drift <= RSS_BOUND_KB && fds_drift.abs() <= FD_BOUND;

    println!("--- soak summary ---");
    println!("duration_s={:.1}", duration.as_secs_f64());
    println!("seed={seed}");
    for (k, n) in KINDS.iter().zip(&ops) {
        println!("ops_{k}={n}");
    }
    println!("ops_total={total}");
    println!("kills={}", counts.kills);
    println!("freezes={}", counts.freezes);
    println!("failovers={failovers}");
    println!("failovers_per_member={failed:?}");
    println!("recoveries={recoveries}");
    println!("recovery_incomplete_lines={incomplete}");
    println!("expected_errors={expected}");
    println!("wrong={wrong}");
    println!("unexpected={unexpected}");
    println!("rss_warm_kb={rss_warm}");
    println!("rss_end_kb={rss_end}");
    println!("rss_drift_kb={rss_drift} (bound {RSS_BOUND_KB})");
    println!("fds_warm={fds_warm}");
    println!("fds_end={fds_end}");
    println!("fds_drift={fds_drift} (bound {FD_BOUND})");
    println!("scrapes={scrapes}");
    println!("bad_scrapes={bad_scrapes}");
    println!("live_session_failovers={live_failovers:?}");
    println!("live_state_agrees_with_log={}", live_disagrees.is_empty());
    for d in &live_disagrees {
        println!("  disagrees: {d}");
    }
    println!("status_socket_left={socket_left}");
    println!("c_finalize_rv={rv:#x}");
    println!("leftover_processes={}", leftovers.len());
    for p in &leftovers {
        println!("  leftover: {p}");
    }
    // Each expected error is a loss the library logged.
    let logged = expected <= incomplete;
    if !logged {
        println!(
            "{expected} expected errors but {incomplete} \"Session recovery incomplete\" lines"
        );
    }
    let pass = wrong == 0
        && unexpected == 0
        && logged
        && drift_ok
        && failovers > 0
        && leftovers.is_empty()
        && scrapes > 0
        && bad_scrapes == 0
        && live_disagrees.is_empty()
        && !socket_left
        && rv == 0;
    println!(
        "soak {} (seed {seed}): {total} operations in {:.0} s by {WORKERS} threads over {SERVERS} p11-kit servers, \
         {} kills and {} freezes, {failovers} failovers and {recoveries} recoveries; \
         {wrong} wrong results, {unexpected} unexpected errors ({expected} expected); \
         memory {rss_drift:+} KiB and descriptors {fds_drift:+} since warm-up.",
        if pass { "PASSED" } else { "FAILED" },
        duration.as_secs_f64(),
        counts.kills,
        counts.freezes,
    );
    std::process::exit(if pass { 0 } else { 1 });
}
