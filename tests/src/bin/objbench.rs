//! p11ha-objbench: what session objects shared across sessions and members, and token objects
//! written on every member, cost through libp11ha.so compared with SoftHSM directly.
//!
//! ```text
//! cargo build --release -p p11ha-ffi
//! cargo build --release -p p11ha-tests --bin p11ha-objbench && target/release/p11ha-objbench
//! target/release/p11ha-objbench --only session     # part (a) alone; --only token: part (b)
//! ```
//!
//! Each configuration runs in its own child process (this program run again with `--child`),
//! because a PKCS#11 library is a per-process singleton. Each child makes its own copy of the
//! test tokens (`p11ha_tests::tokens`, made by `scripts/mktokens.sh`), logs in once on a control
//! session that stays open, and waits for the parent to ask for one slice of a measurement at a
//! time: the configurations of a table row take turns, slice by slice (`--slices`, 0.1 s each by
//! default for part (a), 0.25 s for part (b)), and each pools the samples of its slices. This
//! machine's speed changes by up to half for seconds at a time (the same call, alone, takes 21
//! or 35 us depending on when); taking turns in short slices makes those changes hit every
//! configuration alike.
//!
//! - `direct`: SoftHSM itself, on one token (the baseline);
//! - `wld1`, `wld2`, `wld3`: libp11ha.so in WLD mode, virtual slot 0 made of 1, 2 or 3 SoftHSM
//!   tokens (one module, `P11HA_MODULES`), `P11HA_REPLICATION_KEY=aes-key`;
//! - `ha3`: libp11ha.so in HA mode over 3 SoftHSM tokens, the same replication key.
//!
//! **Part (a), session objects across sessions and members** (`direct`, `wld3`, `ha3`). Two
//! sessions of the application, A and B. In WLD and HA mode they are placed on DIFFERENT members
//! (read with p11ha's extension `P11HA_GetSessionMember`; a session that lands on A's member is
//! kept aside and another opened, outside the timing). All of a slot's session objects live on
//! the slot's home, the member of the first one made: here A's. So B's first use of A's key moves
//! B there (p11ha opens a session on the home, logs it in if need be, closes B's old one), which
//! is what these measurements price. A key is AES-256 and a use is one encryption of one 64-byte
//! block with CKM_AES_CBC (fixed IV), made by the cryptoki crate as C_EncryptInit + C_Encrypt
//! (length query) + C_Encrypt. Timed, each call on its own (`Instant` around it):
//!
//! - `cold-create`: per iteration, A makes a session key with C_CreateObject (CKA_VALUE fixed), B
//!   uses it once, A destroys it (C_DestroyObject). B is a fresh session on a member other than
//!   A's in every iteration (the old B is closed and a new one opened, untimed), so every
//!   iteration's use pays a move. In `direct` B is a fresh session too.
//! - `cold-generate`: the same with C_GenerateKey (CKM_AES_KEY_GEN, CKA_SENSITIVE false,
//!   CKA_EXTRACTABLE true); CKA_VALUE is read from A after the use, untimed, for the check.
//! - `warm-create`, `warm-generate`: the same, but B stays open for the whole slice: it starts
//!   on another member, moves at the slice's first iteration and is at home afterwards (what a
//!   long-lived application sees: no move after the first). A and B are new in every slice.
//! - `steady`: cycles of: a fresh B on another member, A makes one session key (C_CreateObject,
//!   untimed), B's first use (timed: the move), then 100 more uses by B (each timed), A destroys
//!   the key (untimed). Reported: B's encryptions per second after the first use (100 uses /
//!   their summed time), the median and p90 latency of the first use and of the later ones, and
//!   the extra cost of the first use (median first - median later).
//!
//! Rates in part (a) are iterations (or uses) per second of the timed calls only: the untimed
//! session juggling and checks between them are left out.
//!
//! In HA mode a session's journal keeps the recipe of every session object the session made,
//! destroyed ones included (they are marked dead, their room is not reclaimed), so after about
//! 60 of these keys A's 8 KiB of recipes is full: p11ha logs "Session potentially not
//! recoverable: a session object p11ha could not journal" once (shown under validation) and no
//! longer journals A's new keys. The `ha3` figures of part (a) are mostly those of such a
//! session.
//!
//! **Part (b), token object latency** (`direct`, `wld1`, `wld2`, `wld3`). On the control session,
//! per iteration, timed: C_CreateObject of a token data object (CKA_TOKEN true, a unique
//! CKA_LABEL, a 16-byte CKA_VALUE), then C_DestroyObject of it (`token-data`); or C_GenerateKey
//! of a token AES-256 key (CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_EXTRACTABLE true, so that
//! p11ha can carry it wrapped under the replication key), then C_DestroyObject (`token-key`).
//! Through p11ha each call returns once every member holds (or no longer holds) the object, so
//! its latency grows with the members. Reported: median and p90 of each call.
//!
//! **Checks**, so that a broken forwarder cannot post a fast wrong number (none about speed):
//! every use of the fixed-value key must give the ciphertext openssl computes for that key (the
//! parent computes it; every child checks each ciphertext against it, and reports the one its
//! start-up validation made, which must agree across configurations); for generated session keys
//! the ciphertext of the first, the last and two random iterations of each measurement (per
//! round) is checked against openssl with the key's CKA_VALUE, and every ciphertext must be 64 bytes and differ
//! from the fixed key's. In WLD and HA mode, every iteration checks that B started on another
//! member than A and is on A's member after its use (the move happened), and that A never moved.
//! In part (b) after every create, a session on each member (direct: one session) must find the
//! object by label exactly once, under the handle the create returned; a data object's CKA_VALUE
//! must read back from each; a key must give the same ciphertext on each member (and in the
//! creating session); after every destroy, no member may find it. After each measurement every
//! member must still be in service (`P11HA_GetMemberInfo`), so no number is taken on fewer
//! members than its column says.
//!
//! The whole set is repeated `--rounds` times with the order of the configurations rotated; for
//! each measurement and configuration the best round is reported (part (a): the highest rate;
//! part (b): the lowest median create latency), with the rest of that round's figures, since
//! noise from the rest of the machine only slows a measurement down. The time of a slice is
//! wall time and includes the untimed work (session juggling, checks): the timed calls are a
//! part of it. With the defaults (5 rounds of 4 slices; 0.4 s per session-object measurement,
//! 1.0 s per token measurement, per configuration and round) the run takes about 75 s on a
//! 2-core VM.
//!
//! Protocol between parent and child, one line each:
//!   child -> parent at start:  "@kv <key> <value>" lines, then "@ready" or "@fatal <message>"
//!   parent -> child:  "run <test> <seconds>"  (one slice)  -> "@ok" | "@error <message>"
//!   parent -> child:  "report <test>"  (the slices since the last report, then forgotten)
//!                                               -> "@result <k>=<v> ..." | "@error <message>"
//!   parent -> child:  "quit"                    -> "@kv ..." lines (the HA log), "@bye"

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::{CK_RV, CK_SESSION_HANDLE, CK_ULONG};
use p11ha_tests::pipe::ChildPipe;
use p11ha_tests::{LABEL, SOFTHSM, USER_PIN, configure, lib_path, member_info, openssl, tokens};

/// The fixed session key of the C_CreateObject measurements.
const FIXED_KEY: [u8; 32] = *b"p11ha-objbench fixed AES-256 key";
/// The CBC initialisation vector.
const IV: [u8; 16] = *b"objbench CBC IV!";
/// The block encrypted by each use: 64 bytes.
const BLOCK: [u8; 64] = *b"p11ha-objbench: one 64-byte block, four AES blocks, encrypted...";
/// The value of the token data objects.
const DATA_VALUE: [u8; 16] = *b"objbench token!!";
/// Uses of the key by B after its first, per steady-state cycle.
const STEADY_USES: usize = 100;
/// Generated keys checked against openssl per measurement.
const GENERATED_CHECKS: usize = 4;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child_main(&args[1..])
    } else {
        parent_main(&args)
    }
}

// ---------------------------------------------------------------------------------------------
// Configurations and measurements
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Config {
    name: &'static str,
    title: &'static str,
    /// `None`: SoftHSM directly; else libp11ha.so's mode.
    mode: Option<&'static str>,
    members: usize,
    session_part: bool,
    token_part: bool,
}

const CONFIGS: [Config; 5] = [
    Config {
        name: "direct",
        title: "direct",
        mode: None,
        members: 1,
        session_part: true,
        token_part: true,
    },
    Config {
        name: "wld1",
        title: "WLD, 1 member",
        mode: Some("WLD"),
        members: 1,
        session_part: false,
        token_part: true,
    },
    Config {
        name: "wld2",
        title: "WLD, 2 members",
        mode: Some("WLD"),
        members: 2,
        session_part: false,
        token_part: true,
    },
    Config {
        name: "wld3",
        title: "WLD, 3 members",
        mode: Some("WLD"),
        members: 3,
        session_part: true,
        token_part: true,
    },
    Config {
        name: "ha3",
        title: "HA, 3 members",
        mode: Some("HA"),
        members: 3,
        session_part: true,
        token_part: false,
    },
];

fn config(name: &str) -> Option<Config> {
    CONFIGS.into_iter().find(|c| c.name == name)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Test {
    ColdCreate,
    ColdGenerate,
    WarmCreate,
    WarmGenerate,
    Steady,
    TokenData,
    TokenKey,
}

impl Test {
    const ALL: [Test; 7] = [
        Test::ColdCreate,
        Test::ColdGenerate,
        Test::WarmCreate,
        Test::WarmGenerate,
        Test::Steady,
        Test::TokenData,
        Test::TokenKey,
    ];

    fn key(self) -> &'static str {
        match self {
            Test::ColdCreate => "cold-create",
            Test::ColdGenerate => "cold-generate",
            Test::WarmCreate => "warm-create",
            Test::WarmGenerate => "warm-generate",
            Test::Steady => "steady",
            Test::TokenData => "token-data",
            Test::TokenKey => "token-key",
        }
    }

    fn kv_name(self) -> String {
        self.key().replace('-', "_")
    }

    fn token(self) -> bool {
        matches!(self, Test::TokenData | Test::TokenKey)
    }

    fn runs_on(self, c: &Config) -> bool {
        if self.token() {
            c.token_part
        } else {
            c.session_part
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// Median and p90 of `v` (microseconds); zeros when empty.
fn median_p90(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
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
    (median, p90)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The ciphertext openssl computes for BLOCK under `key` (AES-256-CBC, IV, no padding).
fn reference_cbc(key: &[u8]) -> Vec<u8> {
    openssl(
        &[
            "enc",
            "-aes-256-cbc",
            "-K",
            &hex(key),
            "-iv",
            &hex(&IV),
            "-nopad",
        ],
        &BLOCK,
    )
}

// ---------------------------------------------------------------------------------------------
// Child
// ---------------------------------------------------------------------------------------------

type MemberFn = unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_ULONG) -> CK_RV;

struct Bench {
    ctx: Pkcs11,
    slot: Slot,
    /// Logged in; open for the whole run (it holds the login), and the writer of part (b).
    control: Session,
    /// p11ha's `P11HA_GetSessionMember` (WLD and HA mode).
    member_fn: Option<MemberFn>,
    members: usize,
    /// The ciphertext of BLOCK under FIXED_KEY (openssl's, from the parent).
    expected: Vec<u8>,
    /// Makes the labels of token objects unique.
    serial: u64,
    /// xorshift state for picking the generated keys to check.
    rng: u64,
}

fn ck(what: &str) -> impl FnOnce(cryptoki::error::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Bench {
    /// The member serving `s` (WLD and HA mode); `None` directly on SoftHSM.
    fn member(&self, s: &Session) -> Result<Option<usize>, String> {
        let Some(f) = self.member_fn else {
            return Ok(None);
        };
        let mut index: CK_ULONG = 0;
        // SAFETY: f is libp11ha.so's P11HA_GetSessionMember, which takes a session handle and
        // writes one CK_ULONG through its out pointer; `index` is a valid CK_ULONG.
        let rv = unsafe { f(s.handle(), &mut index) };
        if rv != 0 {
            return Err(format!("P11HA_GetSessionMember answered {rv:#x}"));
        }
        Ok(Some(index as usize))
    }

    fn open(&self) -> Result<Session, String> {
        self.ctx
            .open_rw_session(self.slot)
            .map_err(ck("C_OpenSession"))
    }

    /// A new session on a member other than `avoid` (any session directly on SoftHSM). The
    /// sessions that land on `avoid` on the way are closed afterwards.
    fn session_elsewhere(&self, avoid: Option<usize>) -> Result<Session, String> {
        let mut aside = Vec::new();
        loop {
            let s = self.open()?;
            if avoid.is_none() || self.member(&s)? != avoid {
                return Ok(s);
            }
            aside.push(s);
            if aside.len() > 16 {
                return Err("16 sessions in a row opened on A's member".into());
            }
        }
    }

    /// One session on each member (directly: one session).
    fn one_per_member(&self) -> Result<Vec<Session>, String> {
        if self.member_fn.is_none() {
            return Ok(vec![self.open()?]);
        }
        let mut out: Vec<Option<Session>> = (0..self.members).map(|_| None).collect();
        let mut aside = Vec::new();
        while out.iter().any(Option::is_none) {
            let s = self.open()?;
            let m = self.member(&s)?.unwrap_or(0);
            match out.get_mut(m) {
                Some(slot @ None) => *slot = Some(s),
                _ => aside.push(s),
            }
            if aside.len() > 30 {
                return Err("sessions never reach every member".into());
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Every member still in service.
    fn members_up(&self) -> Result<(), String> {
        if self.member_fn.is_none() {
            return Ok(());
        }
        for i in 0..self.members {
            match member_info(i) {
                Some(m) if m.up == 1 => {}
                Some(_) => return Err(format!("member {i} is out of service")),
                None => return Err(format!("member {i} is gone")),
            }
        }
        Ok(())
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn use_key(s: &Session, key: ObjectHandle) -> Result<Vec<u8>, String> {
        s.encrypt(&Mechanism::AesCbc(IV), key, &BLOCK)
            .map_err(ck("C_Encrypt (AES-CBC) in B"))
    }

    fn make_session_key(&self, s: &Session, generate: bool) -> Result<ObjectHandle, String> {
        if generate {
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(b"objbench-session".to_vec()),
                ],
            )
            .map_err(ck("C_GenerateKey (session AES key) in A"))
        } else {
            s.create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Value(FIXED_KEY.to_vec()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"objbench-session".to_vec()),
            ])
            .map_err(ck("C_CreateObject (session AES key) in A"))
        }
    }

    /// Checks a use of the fixed key.
    fn check_fixed(&self, ct: &[u8]) -> Result<(), String> {
        if ct != self.expected {
            return Err(format!(
                "wrong ciphertext under the fixed key: {} (openssl: {})",
                hex(ct),
                hex(&self.expected)
            ));
        }
        Ok(())
    }

    /// Checks some of the generated keys' ciphertexts against openssl: the first, the last and
    /// random ones.
    fn check_generated(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<usize, String> {
        if pairs.is_empty() {
            return Ok(0);
        }
        let mut picks = vec![0, pairs.len() - 1];
        while picks.len() < GENERATED_CHECKS.min(pairs.len()) {
            picks.push((self.next_random() % pairs.len() as u64) as usize);
        }
        for &i in &picks {
            let (value, ct) = &pairs[i];
            if value.len() != 32 {
                return Err(format!(
                    "generated key {i}: CKA_VALUE of {} bytes",
                    value.len()
                ));
            }
            let want = reference_cbc(value);
            if *ct != want {
                return Err(format!(
                    "generated key {i}: ciphertext {} but openssl says {}",
                    hex(ct),
                    hex(&want)
                ));
            }
        }
        Ok(picks.len())
    }

    /// Part (a), cold and warm, one slice: create (or generate) in A, use in B, destroy in A.
    fn session_slice(&mut self, test: Test, secs: f64, acc: &mut Acc) -> Result<(), String> {
        let generate = matches!(test, Test::ColdGenerate | Test::WarmGenerate);
        let cold = matches!(test, Test::ColdCreate | Test::ColdGenerate);
        let a = self.open()?;
        let ma = self.member(&a)?;
        let mut b = Some(self.session_elsewhere(ma)?);
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut first = true;
        while first || Instant::now() < end {
            if cold && !first {
                // Closed before the new one is opened: it then lands on another member.
                drop(b.take());
                b = Some(self.session_elsewhere(ma)?);
            }
            first = false;
            let bs = b.as_ref().ok_or("no session B")?;
            let before = self.member(bs)?;
            let t0 = Instant::now();
            let key = self.make_session_key(&a, generate)?;
            let t1 = Instant::now();
            let ct = Self::use_key(bs, key)?;
            let t2 = Instant::now();
            let value = if generate {
                let attrs = a
                    .get_attributes(key, &[AttributeType::Value])
                    .map_err(ck("C_GetAttributeValue(CKA_VALUE) in A"))?;
                match attrs.into_iter().next() {
                    Some(Attribute::Value(v)) => Some(v),
                    _ => return Err("no CKA_VALUE for the generated key".into()),
                }
            } else {
                None
            };
            let t3 = Instant::now();
            a.destroy_object(key)
                .map_err(ck("C_DestroyObject (session key) in A"))?;
            let t4 = Instant::now();
            acc.create.push(us(t1 - t0));
            acc.use_.push(us(t2 - t1));
            acc.destroy.push(us(t4 - t3));
            match value {
                Some(v) => {
                    if ct.len() != BLOCK.len() || ct == self.expected {
                        return Err(format!("implausible ciphertext {}", hex(&ct)));
                    }
                    acc.pairs.push((v, ct));
                }
                None => {
                    self.check_fixed(&ct)?;
                    acc.checked += 1;
                }
            }
            if ma.is_some() {
                let (after, a_now) = (self.member(bs)?, self.member(&a)?);
                if a_now != ma {
                    return Err(format!("A moved from member {ma:?} to {a_now:?}"));
                }
                if after != ma {
                    return Err(format!(
                        "B is on member {after:?} after using A's key, not on A's {ma:?}"
                    ));
                }
                if before != ma {
                    acc.moves += 1;
                }
            }
        }
        Ok(())
    }

    /// Part (a), steady state, one slice: B's first use of a key A made, then many more.
    fn steady_slice(&mut self, secs: f64, acc: &mut Acc) -> Result<(), String> {
        let a = self.open()?;
        let ma = self.member(&a)?;
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut first = true;
        while first || Instant::now() < end {
            first = false;
            let b = self.session_elsewhere(ma)?;
            let before = self.member(&b)?;
            let key = self.make_session_key(&a, false)?;
            let t0 = Instant::now();
            let ct = Self::use_key(&b, key)?;
            acc.first.push(us(t0.elapsed()));
            self.check_fixed(&ct)?;
            if ma.is_some() {
                if self.member(&b)? != ma {
                    return Err("B is not on A's member after its first use".into());
                }
                if before != ma {
                    acc.moves += 1;
                }
            }
            for _ in 0..STEADY_USES {
                let t = Instant::now();
                let ct = Self::use_key(&b, key)?;
                acc.later.push(us(t.elapsed()));
                self.check_fixed(&ct)?;
            }
            acc.checked += 1 + STEADY_USES;
            a.destroy_object(key)
                .map_err(ck("C_DestroyObject (session key) in A"))?;
        }
        Ok(())
    }

    /// Part (b), one slice: token objects made and destroyed on the control session.
    fn token_slice(&mut self, test: Test, secs: f64, acc: &mut Acc) -> Result<(), String> {
        let key = test == Test::TokenKey;
        let verifiers = self.one_per_member()?;
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut first = true;
        while first || Instant::now() < end {
            first = false;
            self.serial += 1;
            let label = format!(
                "objbench-{}-{}-{}",
                test.key(),
                std::process::id(),
                self.serial
            );
            let class = if key {
                ObjectClass::SECRET_KEY
            } else {
                ObjectClass::DATA
            };
            let w = &self.control;
            let t0 = Instant::now();
            let h = if key {
                w.generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::ValueLen(32.into()),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(true),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Label(label.clone().into_bytes()),
                    ],
                )
                .map_err(ck("C_GenerateKey (token AES key)"))?
            } else {
                w.create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Label(label.clone().into_bytes()),
                    Attribute::Value(DATA_VALUE.to_vec()),
                ])
                .map_err(ck("C_CreateObject (token data object)"))?
            };
            acc.create.push(us(t0.elapsed()));
            // On every member, once, under the one handle; the same value or key everywhere.
            let find = [
                Attribute::Class(class),
                Attribute::Token(true),
                Attribute::Label(label.clone().into_bytes()),
            ];
            let own_ct = if key {
                Some(Self::use_key(w, h)?)
            } else {
                None
            };
            for (i, v) in verifiers.iter().enumerate() {
                let found = v.find_objects(&find).map_err(ck("C_FindObjects"))?;
                if found != [h] {
                    return Err(format!(
                        "{label} on member session {i}: found {found:?}, made {h:?}"
                    ));
                }
                if let Some(own) = &own_ct {
                    if Self::use_key(v, h)? != *own {
                        return Err(format!("{label}: another ciphertext on member session {i}"));
                    }
                } else {
                    let attrs = v
                        .get_attributes(h, &[AttributeType::Value])
                        .map_err(ck("C_GetAttributeValue(CKA_VALUE)"))?;
                    if !matches!(attrs.first(), Some(Attribute::Value(x)) if *x == DATA_VALUE) {
                        return Err(format!("{label}: wrong CKA_VALUE on member session {i}"));
                    }
                }
            }
            let t1 = Instant::now();
            w.destroy_object(h)
                .map_err(ck("C_DestroyObject (token object)"))?;
            acc.destroy.push(us(t1.elapsed()));
            for (i, v) in verifiers.iter().enumerate() {
                let found = v.find_objects(&find).map_err(ck("C_FindObjects"))?;
                if !found.is_empty() {
                    return Err(format!(
                        "{label}: still on member session {i} after destroy"
                    ));
                }
            }
            acc.checked += 1;
        }
        Ok(())
    }

    /// One slice of `test`, its samples added to `acc`; every member must still serve.
    fn run(&mut self, test: Test, secs: f64, acc: &mut Acc) -> Result<(), String> {
        match test {
            Test::Steady => self.steady_slice(secs, acc),
            Test::TokenData | Test::TokenKey => self.token_slice(test, secs, acc),
            _ => self.session_slice(test, secs, acc),
        }?;
        acc.slices += 1;
        self.members_up()
    }

    /// The figures of the slices of `test` since the last report, which `acc` forgets.
    fn report(&mut self, test: Test, acc: &mut Acc) -> Result<String, String> {
        let acc = std::mem::take(acc);
        let checked = acc.checked + self.check_generated(&acc.pairs)?;
        let (cm, cp) = median_p90(&acc.create);
        let (um, up) = median_p90(&acc.use_);
        let (dm, dp) = median_p90(&acc.destroy);
        let common = format!(
            "slices={} moves={} checked={checked}",
            acc.slices, acc.moves
        );
        Ok(match test {
            Test::Steady => {
                let (fm, fp) = median_p90(&acc.first);
                let (lm, lp) = median_p90(&acc.later);
                format!(
                    "n={} uses={} rate={:.1} first_med={fm:.2} first_p90={fp:.2} \
                     later_med={lm:.2} later_p90={lp:.2} {common}",
                    acc.first.len(),
                    acc.later.len(),
                    acc.later.len() as f64 / (acc.later.iter().sum::<f64>() / 1e6)
                )
            }
            Test::TokenData | Test::TokenKey => format!(
                "n={} create_med={cm:.2} create_p90={cp:.2} destroy_med={dm:.2} \
                 destroy_p90={dp:.2} {common}",
                acc.create.len()
            ),
            _ => {
                let timed: f64 = acc
                    .create
                    .iter()
                    .chain(&acc.use_)
                    .chain(&acc.destroy)
                    .sum::<f64>()
                    / 1e6;
                format!(
                    "n={} rate={:.1} create_med={cm:.2} create_p90={cp:.2} use_med={um:.2} \
                     use_p90={up:.2} destroy_med={dm:.2} destroy_p90={dp:.2} {common}",
                    acc.create.len(),
                    acc.create.len() as f64 / timed
                )
            }
        })
    }
}

/// The samples of one measurement, over its slices (microseconds).
#[derive(Default)]
struct Acc {
    create: Vec<f64>,
    use_: Vec<f64>,
    destroy: Vec<f64>,
    first: Vec<f64>,
    later: Vec<f64>,
    /// Generated session keys: (CKA_VALUE, ciphertext), checked at the report.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Iterations whose B started on another member and moved to A's.
    moves: usize,
    /// Ciphertexts (or objects) checked.
    checked: usize,
    slices: usize,
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
    let name = args.first().ok_or("--child needs a configuration name")?;
    let cfg = config(name).ok_or(format!("unknown configuration {name}"))?;
    let mut expected = None;
    let mut warmup = 0.05;
    let mut keep = false;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--expect" => expected = Some(val()?),
            "--warmup" => warmup = val()?.parse::<f64>().map_err(|e| e.to_string())?,
            "--keep" => keep = true,
            _ => return Err(format!("child {name}: unknown argument {a}")),
        }
    }
    let expected = expected.ok_or("--expect missing")?;
    let kv = |out: &mut dyn Write, k: &str, v: &str| {
        writeln!(out, "@kv {k} {}", one_line(v))
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())
    };

    let t = tokens(cfg.members);
    let ha_log = t.dir.join("ha.log");
    let ha_log_s = ha_log.display().to_string();
    let lib = match cfg.mode {
        None => {
            // SOFTHSM2_CONF for the tokens (P11HA_MODULES, which configure also sets, is
            // not read by SoftHSM).
            configure(&t, &[]);
            PathBuf::from(SOFTHSM)
        }
        Some(mode) => {
            let mut items = vec![
                ("ET_PTKC_GENERAL_LIBRARY_MODE", mode),
                ("ET_PTKC_WLD_SLOT_0", LABEL),
                ("P11HA_REPLICATION_KEY", "aes-key"),
            ];
            if mode == "HA" {
                items.push(("ET_PTKC_HA_LOG_FILE", ha_log_s.as_str()));
                items.push(("ET_PTKC_HA_LOG_NAME", "p11ha-objbench"));
            }
            configure(&t, &items);
            lib_path()
        }
    };
    kv(out, "lib", &lib.display().to_string())?;
    let ctx = Pkcs11::new(&lib).map_err(|e| format!("loading {}: {e}", lib.display()))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(ck("C_Initialize"))?;
    let slot = ctx
        .get_slots_with_token()
        .map_err(ck("C_GetSlotList"))?
        .into_iter()
        .find(|&s| {
            ctx.get_token_info(s)
                .is_ok_and(|i| i.label().trim() == LABEL)
        })
        .ok_or(format!("no slot holds a token labelled {LABEL}"))?;
    let control = ctx.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    control
        .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .map_err(ck("C_Login"))?;
    let member_fn = cfg
        .mode
        .map(|_| p11ha_tests::symbol::<MemberFn>("P11HA_GetSessionMember"));
    let mut bench = Bench {
        ctx,
        slot,
        control,
        member_fn,
        members: cfg.members,
        expected: Vec::new(),
        serial: 0,
        rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()),
    };
    let members = if cfg.mode.is_some() {
        (0..).take_while(|&i| member_info(i).is_some()).count()
    } else {
        1
    };
    if members != cfg.members {
        return Err(format!("{members} member(s), {} expected", cfg.members));
    }
    bench.members_up()?;
    kv(out, "members", &members.to_string())?;

    // Validation: the fixed key's ciphertext, made on the control session, against openssl.
    let key = bench.make_session_key(&bench.control, false)?;
    let ct = Bench::use_key(&bench.control, key)?;
    bench
        .control
        .destroy_object(key)
        .map_err(ck("C_DestroyObject"))?;
    kv(out, "cbc", &hex(&ct))?;
    if hex(&ct) != expected {
        return Err(format!(
            "AES-256-CBC under the fixed key gives {} here, openssl {expected}",
            hex(&ct)
        ));
    }
    bench.expected = ct;
    // Warm-up (and a first check) of every measurement this configuration takes.
    let mut accs: Vec<Acc> = Test::ALL.iter().map(|_| Acc::default()).collect();
    for (i, test) in Test::ALL.into_iter().enumerate() {
        if test.runs_on(&cfg) {
            bench
                .run(test, warmup, &mut accs[i])
                .and_then(|()| bench.report(test, &mut accs[i]))
                .map_err(|e| format!("warm-up {}: {e}", test.key()))?;
        }
    }
    writeln!(out, "@ready")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;

    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let test = |key: &str| {
            Test::ALL
                .iter()
                .position(|t| t.key() == key)
                .ok_or(format!("unknown test {key}"))
        };
        let reply = match words.as_slice() {
            ["run", key, secs] => {
                let i = test(key)?;
                let secs = secs.parse::<f64>().map_err(|e| e.to_string())?;
                match bench.run(Test::ALL[i], secs, &mut accs[i]) {
                    Ok(()) => "@ok".to_string(),
                    Err(e) => format!("@error {}", one_line(&e)),
                }
            }
            ["report", key] => {
                let i = test(key)?;
                match bench.report(Test::ALL[i], &mut accs[i]) {
                    Ok(r) => format!("@result {r}"),
                    Err(e) => format!("@error {}", one_line(&e)),
                }
            }
            ["quit"] => break,
            _ => format!("@error unknown request {line:?}"),
        };
        writeln!(out, "{reply}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
    }
    let Bench { ctx, control, .. } = bench;
    drop(control);
    ctx.finalize().map_err(ck("C_Finalize"))?;
    if cfg.mode == Some("HA") {
        let text = std::fs::read_to_string(&ha_log).unwrap_or_default();
        kv(out, "halog.lines", &text.lines().count().to_string())?;
        for l in text.lines().take(10) {
            kv(out, "halog", l)?;
        }
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&t.dir);
    }
    writeln!(out, "@bye")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------------------------

struct Options {
    rounds: usize,
    slices: usize,
    session_seconds: f64,
    token_seconds: f64,
    warmup: f64,
    session: bool,
    token: bool,
    lib: Option<PathBuf>,
    keep: bool,
}

const USAGE: &str = "\
usage: p11ha-objbench [options]
  --rounds N          repetitions of the whole set; the best is reported (default 5)
  --slices N          each measurement is cut into N slices, the configurations taking turns
                      (default 4)
  --seconds S         duration of each session-object measurement, per configuration and round
                      (default 0.4)
  --token-seconds S   duration of each token-object measurement (default 1.0)
  --warmup S          warm-up of each measurement in each child, at start (default 0.05)
  --only PART         session (part a: direct, wld3, ha3) or token (part b: direct, wld1,
                      wld2, wld3); default both
  --lib PATH          libp11ha.so (default $TEST_P11HA_LIB or <repo>/target/release/libp11ha.so)
  --keep              keep the children's token copies";

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        rounds: 5,
        slices: 4,
        session_seconds: 0.4,
        token_seconds: 1.0,
        warmup: 0.05,
        session: true,
        token: true,
        lib: None,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--rounds" => {
                o.rounds = val()?.parse().map_err(|e| format!("{a}: {e}"))?;
                if o.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--slices" => {
                o.slices = val()?.parse().map_err(|e| format!("{a}: {e}"))?;
                if o.slices == 0 {
                    return Err("--slices must be at least 1".into());
                }
            }
            "--seconds" => o.session_seconds = num(val()?)?,
            "--token-seconds" => o.token_seconds = num(val()?)?,
            "--warmup" => o.warmup = num(val()?)?,
            "--only" => match val()?.as_str() {
                "session" => o.token = false,
                "token" => o.session = false,
                v => return Err(format!("--only takes session or token, not {v}")),
            },
            "--lib" => o.lib = Some(PathBuf::from(val()?)),
            "--keep" => o.keep = true,
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown option {a}\n{USAGE}")),
        }
    }
    Ok(o)
}

struct ChildProc {
    cfg: Config,
    pipe: ChildPipe,
    kv: BTreeMap<String, Vec<String>>,
    failed: Option<String>,
}

impl ChildProc {
    fn spawn(cfg: Config, o: &Options, expected: &str) -> Result<ChildProc, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("--child")
            .arg(cfg.name)
            .arg("--expect")
            .arg(expected)
            .arg("--warmup")
            .arg(o.warmup.to_string())
            .stderr(Stdio::inherit());
        if o.keep {
            cmd.arg("--keep");
        }
        // Only this configuration's settings reach the library (the child sets them).
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
        if let Some(lib) = &o.lib {
            cmd.env("TEST_P11HA_LIB", lib);
        }
        Ok(ChildProc {
            pipe: ChildPipe::spawn(&mut cmd, cfg.name)?,
            cfg,
            kv: BTreeMap::new(),
            failed: None,
        })
    }

    /// Reads "@kv" lines up to `end` ("ready" or "bye").
    fn read_until(&mut self, end: &str) -> Result<(), String> {
        loop {
            let l = self.pipe.reply()?;
            if l == end {
                return Ok(());
            }
            match l.split_once(' ') {
                Some(("kv", rest)) => {
                    let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                    self.kv
                        .entry(k.to_string())
                        .or_default()
                        .push(v.to_string());
                }
                Some(("fatal", msg)) => return Err(msg.to_string()),
                _ => return Err(format!("unexpected reply {l:?}")),
            }
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.kv.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    fn request(&mut self, line: &str) -> Result<String, String> {
        self.pipe
            .send(line)
            .map_err(|e| format!("child process gone: {e}"))?;
        let l = self.pipe.reply()?;
        match l.strip_prefix("error ") {
            Some(e) => Err(e.to_string()),
            None => Ok(l),
        }
    }

    /// One slice of `test`.
    fn slice(&mut self, test: Test, secs: f64) -> Result<(), String> {
        match self
            .request(&format!("run {} {secs}", test.key()))?
            .as_str()
        {
            "ok" => Ok(()),
            l => Err(format!("unexpected reply {l:?}")),
        }
    }

    /// The figures of `test` over the slices since the last report.
    fn report(&mut self, test: Test) -> Result<BTreeMap<String, f64>, String> {
        let l = self.request(&format!("report {}", test.key()))?;
        let Some(rest) = l.strip_prefix("result ") else {
            return Err(format!("unexpected reply {l:?}"));
        };
        rest.split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').ok_or(format!("bad result {kv:?}"))?;
                let v = v.parse::<f64>().map_err(|e| format!("{kv}: {e}"))?;
                Ok((k.to_string(), v))
            })
            .collect()
    }

    fn quit(&mut self) {
        if self.failed.is_none() {
            let r = self
                .pipe
                .send("quit")
                .map_err(|e| e.to_string())
                .and_then(|()| self.read_until("bye"));
            if let Err(e) = r {
                self.failed = Some(format!("at exit: {e}"));
            }
        }
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match self.pipe.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.pipe.child.kill();
                    let _ = self.pipe.child.wait();
                    return;
                }
            }
        }
    }
}

fn parent_main(args: &[String]) -> ExitCode {
    match parent_run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("p11ha-objbench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Results of one test on one configuration, per round.
type Rounds = Vec<BTreeMap<String, f64>>;

/// The best round: part (a) the highest rate, part (b) the lowest median create latency.
fn best(test: Test, rounds: &Rounds) -> Option<&BTreeMap<String, f64>> {
    let score = |r: &BTreeMap<String, f64>| {
        if test.token() {
            -r.get("create_med").copied().unwrap_or(f64::INFINITY)
        } else {
            r.get("rate").copied().unwrap_or(0.0)
        }
    };
    rounds.iter().max_by(|a, b| score(a).total_cmp(&score(b)))
}

fn fmt_rate(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn parent_run(args: &[String]) -> Result<bool, String> {
    let o = parse_options(args)?;
    let started = Instant::now();
    let expected = hex(&reference_cbc(&FIXED_KEY));
    let cfgs: Vec<Config> = CONFIGS
        .into_iter()
        .filter(|c| (o.session && c.session_part) || (o.token && c.token_part))
        .collect();
    let tests: Vec<Test> = Test::ALL
        .into_iter()
        .filter(|t| if t.token() { o.token } else { o.session })
        .collect();
    // Started one after the other: each makes its tokens and warms up alone.
    let mut children = Vec::new();
    for &cfg in &cfgs {
        let mut c = ChildProc::spawn(cfg, &o, &expected)?;
        if let Err(e) = c.read_until("ready") {
            eprintln!("child {}: start-up failed: {e}", cfg.name);
            c.failed = Some(format!("start-up failed: {e}"));
        }
        children.push(c);
    }
    let setup_seconds = started.elapsed().as_secs_f64();

    // results[test][child] = rounds
    let mut results: Vec<Vec<Rounds>> = vec![vec![Vec::new(); children.len()]; tests.len()];
    let mut errors: Vec<String> = Vec::new();
    for round in 0..o.rounds {
        for (ti, &test) in tests.iter().enumerate() {
            let secs = if test.token() {
                o.token_seconds
            } else {
                o.session_seconds
            } / o.slices as f64;
            let mut order: Vec<usize> = (0..children.len())
                .filter(|&ci| test.runs_on(&children[ci].cfg))
                .collect();
            let k = round % order.len().max(1);
            order.rotate_left(k);
            // The configurations take turns, slice by slice, so that the machine's moods hit
            // them alike; each pools its slices.
            let mut failed = vec![false; children.len()];
            for _ in 0..o.slices {
                for &ci in &order {
                    let c = &mut children[ci];
                    if c.failed.is_some() || failed[ci] {
                        continue;
                    }
                    if let Err(e) = c.slice(test, secs) {
                        errors.push(format!("{} {}: {e}", test.key(), c.cfg.name));
                        failed[ci] = true;
                        if e.starts_with("child process") {
                            c.failed = Some(e);
                        }
                    }
                }
            }
            for &ci in &order {
                let c = &mut children[ci];
                if c.failed.is_some() {
                    continue;
                }
                match c.report(test) {
                    Ok(r) if !failed[ci] => results[ti][ci].push(r),
                    Ok(_) => {}
                    Err(e) => {
                        errors.push(format!("{} {}: {e}", test.key(), c.cfg.name));
                        if e.starts_with("child process") {
                            c.failed = Some(e);
                        }
                    }
                }
            }
        }
    }
    let measure_seconds = started.elapsed().as_secs_f64() - setup_seconds;
    for c in &mut children {
        c.quit();
    }
    let elapsed = started.elapsed().as_secs_f64();

    let direct = children.iter().position(|c| c.cfg.name == "direct");
    let get = |ti: usize, ci: usize, k: &str| -> Option<f64> {
        best(tests[ti], &results[ti][ci]).and_then(|r| r.get(k).copied())
    };
    // A figure and its ratio to direct's (for latencies too: value / direct's value).
    let cell = |ti: usize, ci: usize, k: &str, rate: bool| -> String {
        let Some(v) = get(ti, ci, k) else {
            return "error".into();
        };
        let s = if rate { fmt_rate(v) } else { fmt_us(v) };
        match direct.filter(|&d| d != ci).and_then(|d| get(ti, d, k)) {
            Some(d) if d > 0.0 => format!("{s} ({:.2})", v / d),
            _ => s,
        }
    };
    let ti_of = |t: Test| tests.iter().position(|&x| x == t);

    println!(
        "p11ha-objbench: {} round(s), best reported; {} s per session-object measurement, {} s \
         per token measurement, each in {} slices taken in turns",
        o.rounds, o.session_seconds, o.token_seconds, o.slices
    );
    for c in &children {
        println!(
            "  {:<7} {}{}",
            c.cfg.name,
            c.get("lib").unwrap_or("?"),
            match c.cfg.mode {
                Some(m) => format!(" ({m}, {} member(s))", c.cfg.members),
                None => String::new(),
            }
        );
    }

    if o.session {
        let cols: Vec<usize> = (0..children.len())
            .filter(|&ci| children[ci].cfg.session_part)
            .collect();
        println!();
        println!(
            "(a) session objects: key made in session A, used in session B (B starts on another \
             member than A); ratio to direct in brackets; latencies in us (median)"
        );
        let head: Vec<&str> = cols.iter().map(|&ci| children[ci].cfg.title).collect();
        println!("| measurement | {} |", head.join(" | "));
        println!("| --- |{}", " --- |".repeat(cols.len()));
        let row = |title: &str, f: &dyn Fn(usize) -> String| {
            let cells: Vec<String> = cols.iter().map(|&ci| f(ci)).collect();
            println!("| {title} | {} |", cells.join(" | "));
        };
        for (t, what) in [
            (
                Test::ColdCreate,
                "C_CreateObject in A, 1st use in B, destroy; B new on another member each time",
            ),
            (
                Test::ColdGenerate,
                "C_GenerateKey in A, 1st use in B, destroy; B new on another member each time",
            ),
            (
                Test::WarmCreate,
                "C_CreateObject in A, use in B, destroy; B stays (moved once)",
            ),
            (
                Test::WarmGenerate,
                "C_GenerateKey in A, use in B, destroy; B stays (moved once)",
            ),
        ] {
            let Some(ti) = ti_of(t) else { continue };
            row(&format!("{what}: iterations/s"), &|ci| {
                cell(ti, ci, "rate", true)
            });
            row("  make / use in B / destroy, median us", &|ci| {
                format!(
                    "{} / {} / {}",
                    get(ti, ci, "create_med").map_or("?".into(), fmt_us),
                    get(ti, ci, "use_med").map_or("?".into(), fmt_us),
                    get(ti, ci, "destroy_med").map_or("?".into(), fmt_us)
                )
            });
        }
        if let Some(ti) = ti_of(Test::Steady) {
            row(
                "steady: B's encryptions/s with A's key (after the first use)",
                &|ci| cell(ti, ci, "rate", true),
            );
            for (title, k) in [
                (
                    "steady: B's first use (the move in WLD/HA), median us",
                    "first_med",
                ),
                ("steady: B's first use, p90 us", "first_p90"),
                ("steady: B's later uses, median us", "later_med"),
                ("steady: B's later uses, p90 us", "later_p90"),
            ] {
                row(title, &|ci| cell(ti, ci, k, false));
            }
            row(
                "steady: extra cost of the first use (median first - median later), us",
                &|ci| match (get(ti, ci, "first_med"), get(ti, ci, "later_med")) {
                    (Some(f), Some(l)) => fmt_us(f - l),
                    _ => "?".into(),
                },
            );
        }
    }

    if o.token {
        let cols: Vec<usize> = (0..children.len())
            .filter(|&ci| children[ci].cfg.token_part)
            .collect();
        println!();
        println!(
            "(b) token objects: latency in us, ratio to direct in brackets (WLD with \
             P11HA_REPLICATION_KEY=aes-key)"
        );
        let head: Vec<&str> = cols.iter().map(|&ci| children[ci].cfg.title).collect();
        println!("| call | statistic | {} |", head.join(" | "));
        println!("| --- | --- |{}", " --- |".repeat(cols.len()));
        for (t, make) in [
            (
                Test::TokenData,
                "C_CreateObject, token data object (16-byte value)",
            ),
            (
                Test::TokenKey,
                "C_GenerateKey, token AES-256 key (extractable)",
            ),
        ] {
            let Some(ti) = ti_of(t) else { continue };
            for (call, prefix) in [(make, "create"), ("C_DestroyObject of it", "destroy")] {
                for stat in ["med", "p90"] {
                    let cells: Vec<String> = cols
                        .iter()
                        .map(|&ci| cell(ti, ci, &format!("{prefix}_{stat}"), false))
                        .collect();
                    let stat = if stat == "med" { "median" } else { "p90" };
                    println!("| {call} | {stat} | {} |", cells.join(" | "));
                }
            }
        }
    }

    println!();
    println!("validation:");
    let mut all_ok = true;
    for (ci, c) in children.iter().enumerate() {
        let status = match &c.failed {
            Some(why) => {
                all_ok = false;
                format!("FAILED: {why}")
            }
            None => "ok".into(),
        };
        let cbc = c.get("cbc").unwrap_or("?");
        let agrees = if cbc == expected {
            "= openssl"
        } else {
            all_ok = false;
            "DIFFERS from openssl"
        };
        println!(
            "  {:<7} AES-CBC of the fixed key {}... {agrees}; {status}",
            c.cfg.name,
            &cbc[..cbc.len().min(16)]
        );
        let mut checked = 0.0;
        let mut moved = String::new();
        for (ti, &t) in tests.iter().enumerate() {
            for r in &results[ti][ci] {
                checked += r.get("checked").copied().unwrap_or(0.0);
            }
            if c.cfg.mode.is_some()
                && !t.token()
                && let Some(r) = best(t, &results[ti][ci])
            {
                let n = r.get("n").or(r.get("cycles")).copied().unwrap_or(0.0);
                moved.push_str(&format!(
                    " {} {:.0}/{:.0};",
                    t.key(),
                    r.get("moves").copied().unwrap_or(0.0),
                    n
                ));
            }
        }
        println!(
            "          {checked:.0} results checked over the rounds (ciphertexts, or token \
             objects on every member)"
        );
        if !moved.is_empty() {
            println!("          B moved to A's member (best round, moves/iterations):{moved}");
        }
        if let Some(n) = c.get("halog.lines") {
            println!("          HA log: {n} line(s)");
            for l in c.kv.get("halog").into_iter().flatten() {
                println!("            {l}");
            }
        }
    }
    if !errors.is_empty() {
        all_ok = false;
        println!("errors:");
        for e in &errors {
            println!("  {e}");
        }
    }
    println!(
        "run time: {elapsed:.0} s (start-up and warm-up {setup_seconds:.0} s, measurements \
         {measure_seconds:.0} s)"
    );

    println!();
    println!("# p11ha-objbench results (key=value; the best of the rounds; latencies in us)");
    println!("objbench.rounds={}", o.rounds);
    println!("objbench.slices={}", o.slices);
    println!("objbench.session_seconds={}", o.session_seconds);
    println!("objbench.token_seconds={}", o.token_seconds);
    println!("objbench.steady_uses_per_cycle={STEADY_USES}");
    println!("objbench.run_seconds={elapsed:.0}");
    for c in &children {
        println!("lib.{}={}", c.cfg.name, c.get("lib").unwrap_or("?"));
    }
    for (ti, &t) in tests.iter().enumerate() {
        for (ci, c) in children.iter().enumerate() {
            if !t.runs_on(&c.cfg) {
                continue;
            }
            let prefix = format!("{}.{}", t.kv_name(), c.cfg.name);
            let Some(r) = best(t, &results[ti][ci]) else {
                println!("{prefix}=error");
                continue;
            };
            for (k, v) in r {
                println!(
                    "{prefix}.{k}={}",
                    if v.fract() == 0.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.2}")
                    }
                );
                let is_stat = k == "rate" || k.ends_with("_med") || k.ends_with("_p90");
                if is_stat
                    && let Some(d) = direct.filter(|&d| d != ci)
                    && let Some(dv) = get(ti, d, k)
                    && dv > 0.0
                {
                    println!("{prefix}.{k}_ratio={:.3}", v / dv);
                }
            }
            if o.rounds > 1 {
                let key = if t.token() { "create_med" } else { "rate" };
                let rs: Vec<String> = results[ti][ci]
                    .iter()
                    .map(|r| format!("{:.1}", r.get(key).copied().unwrap_or(0.0)))
                    .collect();
                println!("{prefix}.{key}_rounds={}", rs.join(","));
            }
        }
    }
    for c in &children {
        println!("check.{}.cbc={}", c.cfg.name, c.get("cbc").unwrap_or("?"));
        println!("check.{}.ok={}", c.cfg.name, c.failed.is_none());
    }
    println!("check.openssl.cbc={expected}");
    println!("check.ok={all_ok}");
    Ok(all_ok)
}
