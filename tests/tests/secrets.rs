//! PINs stay secret (issue 6, "Hardening"): a run with a distinctive PIN,
//! through `libp11ha.so` in HA mode, never shows it (nor its hex) in the HA
//! log or on stderr, the HA log is created 0600 whatever the umask, and a
//! failed `C_Login` is never repeated on another member, not even after a
//! failover.
//!
//! Each scenario runs in a child process of this test binary (this file's
//! `child` test, told what to do by `SECRETS_TEST_CHILD`), so that its
//! whole stderr can be searched and `C_Finalize` really ends the library.
//! The tokens get the PIN first (`C_SetPIN` through SoftHSM itself, in a
//! child too); the `1234` of `scripts/mktokens.sh` is too common a string
//! to search for.
//!
//! Whether a member saw a wrong PIN is SoftHSM's own record: a failed login
//! sets `CKF_USER_PIN_COUNT_LOW` in the token's flags (kept in the token's
//! files) and a successful one clears it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{SessionState, UserType};
use cryptoki::types::AuthPin;
use p11ha_tests::ha::{FAULT_INJECTION, configure_ha, inject, members, wait_for};
use p11ha_tests::{SOFTHSM, Tokens, USER_PIN, lib_path, member_info, session_member, tokens};

/// The PIN set on every token: distinctive enough to search for.
const PIN: &str = "p11ha-secret-PIN-7f3a";
/// A wrong PIN, as distinctive.
const WRONG: &str = "p11ha-wrong-PIN-0b9e";
const MODE: &str = "SECRETS_TEST_CHILD";
const DIR: &str = "SECRETS_TEST_DIR";
const LOG: &str = "SECRETS_TEST_LOG";

fn pin(p: &str) -> AuthPin {
    AuthPin::new(p.into())
}

/// Runs this binary's `child` test as `mode`, over the tokens in `dir`;
/// panics with its output if it fails.
fn run_child(mode: &str, dir: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .env(DIR, dir)
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child");
    assert!(
        out.status.success(),
        "child {mode} failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `FACT name=value` lines a child printed.
fn facts(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // libtest may have begun the line with the test's name.
        .filter_map(|l| l.find("FACT ").map(|at| &l[at + 5..]))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn fact(out: &Output, name: &str) -> String {
    facts(out)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("the child reported no {name}"))
        .1
}

/// Asserts that a child's stderr is the library's (its configuration
/// warnings are there) and shows neither PIN.
fn check_stderr(what: &str, out: &Output) {
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("p11ha: Warning: Configuration P11HA_USER_PIN: not an item"),
        "{what}'s stderr is not the library's:\n{text}"
    );
    assert_no_pin(&format!("{what}'s stderr"), &out.stderr);
    assert_no_pin(&format!("{what}'s stdout"), &out.stdout);
}

/// Asserts that neither PIN shows in `bytes`, as text or hex.
fn assert_no_pin(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for p in [PIN, WRONG] {
        let hex: String = p.bytes().map(|b| format!("{b:02x}")).collect();
        for form in [p.to_owned(), hex.clone(), hex.to_uppercase()] {
            assert!(
                !text.contains(&form),
                "{what} shows a PIN ({form}):\n{text}"
            );
        }
        // Cut short, or with its bytes apart, it is still a leak.
        assert!(
            !text.contains(&p[..12]),
            "{what} shows part of a PIN:\n{text}"
        );
    }
}

/// Fresh tokens whose user PIN is [`PIN`], and a configuration file that
/// holds it where p11ha must not echo it: a line that is not an item, and
/// the value of an unknown item.
fn prepare(n: usize) -> (Tokens, PathBuf, PathBuf) {
    let t = tokens(n);
    let out = run_child("setpin", &t.dir, &[]);
    assert_eq!(fact(&out, "pins_set"), n.to_string());
    let conf = t.dir.join("p11ha.conf");
    std::fs::write(
        &conf,
        format!("# a PIN where it should not be\n{PIN}\nP11HA_USER_PIN={PIN}\n"),
    )
    .expect("write the configuration file");
    let log = t.dir.join("halog.log");
    (t, conf, log)
}

/// Member tokens over the module: the wrong PIN stays on the member that
/// answered it, then a login with failover, recovery, logout and finalize
/// leak nothing.
#[test]
fn module_members_keep_the_pin_secret() {
    let (t, conf, log) = prepare(2);
    let env = [(LOG, log.as_path()), ("P11HA_CONF", conf.as_path())];

    let wrong = run_child("wrong", &t.dir, &env);
    let flags = run_child("flags", &t.dir, &[]);
    // SoftHSM marks the member that answered the wrong PIN, and only it.
    let answered = fact(&wrong, "wrong_pin_slot");
    let mut seen = 0;
    for (slot, count_low) in facts(&flags) {
        let Some(slot) = slot.strip_prefix("count_low_") else {
            continue;
        };
        seen += 1;
        let expected = if slot == answered { "true" } else { "false" };
        assert_eq!(
            count_low, expected,
            "slot {slot}: a wrong PIN reached it? (it answered: {answered})"
        );
    }
    assert_eq!(seen, 2);

    let replay = run_child("replay", &t.dir, &env);
    for (name, out) in [("wrong", &wrong), ("replay", &replay)] {
        check_stderr(name, out);
    }
    check_log(&log);
}

/// The same over remote members (`p11-kit server`s): nothing leaks, and
/// the member in service never sees the wrong PIN.
#[test]
fn remote_members_keep_the_pin_secret() {
    let (t, conf, log) = prepare(2);
    let env = [(LOG, log.as_path()), ("P11HA_CONF", conf.as_path())];
    let out = run_child("remote", &t.dir, &env);
    check_stderr("the remote run", &out);
    for server in 0..2 {
        let server_log = t.dir.join(format!("server-{server}/p11-kit.log"));
        assert_no_pin(
            "a server's log",
            &std::fs::read(server_log).unwrap_or_default(),
        );
    }
    check_log(&log);
}

/// The HA log: written (failures and configuration problems are in it),
/// without a PIN, and 0600 though the child's umask was 0.
fn check_log(log: &Path) {
    let text = std::fs::read(log).expect("the HA log");
    let lines = String::from_utf8_lossy(&text);
    assert!(lines.contains("HSM Failure detected"), "{lines}");
    assert!(lines.contains("HSM recovered"), "{lines}");
    assert!(
        lines.contains("Configuration P11HA_CONF: line 2 is not KEY=VALUE"),
        "{lines}"
    );
    assert!(
        lines.contains("Configuration P11HA_USER_PIN: not an item"),
        "{lines}"
    );
    assert_no_pin("the HA log", &text);
    let mode = std::fs::metadata(log)
        .expect("the HA log")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the HA log's mode is {:o}",
        mode & 0o777
    );
}

// ---- the children -----------------------------------------------------------

/// What a child process does; nothing in a normal test run.
#[test]
fn child() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(DIR).expect("the tokens"));
    let t = Tokens {
        keys: dir.clone(),
        dir,
    };
    match mode.as_str() {
        "setpin" => set_pin(),
        "flags" => print_flags(),
        "wrong" => wrong_pin(&start(&t, &[])),
        "replay" => replay(start(&t, &[])),
        "remote" => remote(&t),
        m => panic!("no child mode {m}"),
    }
}

/// SoftHSM itself, over the tokens (`SOFTHSM2_CONF`, which the parent set
/// for this process).
fn softhsm() -> Pkcs11 {
    let p = Pkcs11::new(SOFTHSM).expect("load SoftHSM");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    p
}

/// Every token's user PIN becomes [`PIN`].
fn set_pin() {
    let p = softhsm();
    let slots = p.get_slots_with_initialized_token().expect("slots");
    for &slot in &slots {
        let s = p.open_rw_session(slot).expect("session");
        s.set_pin(&pin(USER_PIN), &pin(PIN)).expect("C_SetPIN");
        s.login(UserType::User, Some(&pin(PIN)))
            .expect("login with the new PIN");
        s.logout().expect("logout");
    }
    println!("FACT pins_set={}", slots.len());
    p.finalize().expect("C_Finalize");
}

/// Each token's `CKF_USER_PIN_COUNT_LOW`, by slot id.
fn print_flags() {
    let p = softhsm();
    for slot in p.get_slots_with_initialized_token().expect("slots") {
        let info = p.get_token_info(slot).expect("token info");
        println!("FACT count_low_{}={}", slot.id(), info.user_pin_count_low());
    }
    p.finalize().expect("C_Finalize");
}

/// `libp11ha.so` in HA mode over `t`, with the log where the parent reads
/// it and the umask 0 (the log's 0600 must be p11ha's own doing).
fn start(t: &Tokens, extra: &[(&str, &str)]) -> Pkcs11 {
    let log = std::env::var(LOG).expect("the log path");
    let mut config = vec![("ET_PTKC_HA_LOG_FILE", log.as_str()), FAULT_INJECTION];
    config.extend_from_slice(extra);
    configure_ha(t, 200, &config);
    // SAFETY: umask(2) cannot fail; only this thread creates files now.
    unsafe { libc::umask(0) };
    let p = Pkcs11::new(lib_path()).expect("load libp11ha.so");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    assert_eq!(members(), 2);
    p
}

fn state(s: &cryptoki::session::Session) -> SessionState {
    s.get_session_info()
        .expect("C_GetSessionInfo")
        .session_state()
}

/// A wrong PIN, then its member fails: the session moves, not logged in,
/// and the member in service has seen no login at all.
fn wrong_pin(p: &Pkcs11) {
    let slot = p.get_slots_with_token().expect("slots")[0];
    let s = p.open_rw_session(slot).expect("session");
    let first = session_member(&s);
    match s.login(UserType::User, Some(&pin(WRONG))) {
        Err(Error::Pkcs11(RvError::PinIncorrect, _)) => {}
        r => panic!("a wrong PIN gave {r:?}"),
    }
    let first_slot = member_info(first).expect("member").member_slot;
    println!("FACT wrong_pin_slot={first_slot}");

    inject(first, "down");
    assert_eq!(state(&s), SessionState::RwPublic);
    assert_ne!(session_member(&s), first);
    // The virtual token is now the member in service's alone: its flags
    // show no failed login.
    let info = p.get_token_info(slot).expect("token info");
    assert!(
        !info.user_pin_count_low(),
        "the member in service saw a wrong PIN"
    );
    // Still not logged in, and a new session is not either.
    let other = p.open_rw_session(slot).expect("session");
    assert_eq!(state(&other), SessionState::RwPublic);
    drop((s, other));
    p.clone().finalize().expect("C_Finalize");
}

/// Logged in, the session's member fails (the login is held on the other),
/// the member comes back (logged in with the kept PIN), logout, login
/// again and C_Finalize with the sessions open.
fn replay(p: Pkcs11) {
    let slot = p.get_slots_with_token().expect("slots")[0];
    let s = p.open_rw_session(slot).expect("session");
    s.login(UserType::User, Some(&pin(PIN))).expect("login");
    // Logged in: a second login, even a wrong one, reaches no member.
    match s.login(UserType::User, Some(&pin(WRONG))) {
        Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        r => panic!("a second login gave {r:?}"),
    }
    let first = session_member(&s);
    inject(first, "down");
    assert_eq!(state(&s), SessionState::RwUser);
    assert_ne!(session_member(&s), first);

    inject(first, "heal");
    wait_for("the member back", || {
        member_info(first).is_some_and(|m| m.up == 1)
    });
    // It has no session: the next one goes there, logged in.
    let back = p.open_rw_session(slot).expect("session");
    assert_eq!(session_member(&back), first);
    assert_eq!(state(&back), SessionState::RwUser);

    s.logout().expect("logout");
    assert_eq!(state(&s), SessionState::RwPublic);
    assert_eq!(state(&back), SessionState::RwPublic);
    s.login(UserType::User, Some(&pin(PIN)))
        .expect("login again");
    // C_Finalize closes them, logged in. Dropped after it, the sessions
    // only free the crate's side (their C_CloseSession answers
    // CKR_CRYPTOKI_NOT_INITIALIZED); forgetting them would leak the
    // crate's context, which LeakSanitizer reports.
    p.finalize().expect("C_Finalize");
    drop(s);
    drop(back);
}

/// Both scenarios over two `p11-kit server`s.
fn remote(t: &Tokens) {
    let servers = p11ha_tests::remote::serve(t, 2);
    let list = servers
        .iter()
        .map(|s| s.address())
        .collect::<Vec<_>>()
        .join(" ");
    let p = start(
        t,
        &[
            ("P11HA_MODULES", ""),
            ("ET_HSM_NETCLIENT_SERVERLIST", &list),
        ],
    );
    wrong_pin(&p);
    // A second C_Initialize in the same process: the members come back.
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize again");
    replay(p);
    drop(servers);
}
