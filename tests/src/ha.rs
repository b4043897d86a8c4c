//! Helpers for the HA tests: a library in HA mode over SoftHSM members
//! behind the fault adapter (the test build), and the HA log it writes.

use std::ffi::{CString, c_char};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryptoki::session::Session;
use cryptoki_sys::{CK_RV, CK_ULONG};

use crate::{LABEL, Library, Tokens, configure, member_info, session_member, symbol, tokens};

/// The HA log of this process's library.
pub fn log_path() -> PathBuf {
    std::env::temp_dir().join(format!("p11ha-ha-{}.log", std::process::id()))
}

/// `libp11ha.so` in HA mode over `n` members that tests can make fail (the
/// test build, with fault injection: see [`crate::lib_path`]), recovering
/// failed members `recover_ms` after their failure, with `extra`
/// configuration on top. The log goes to [`log_path`], named `p11ha-test`.
pub fn start(n: usize, recover_ms: u64, extra: &[(&str, &str)]) -> &'static Library {
    Library::start_with(|| {
        let tokens = tokens(n);
        let mut config = vec![FAULT_INJECTION];
        config.extend_from_slice(extra);
        configure_ha(&tokens, recover_ms, &config);
        tokens
    })
}

/// The item that makes members fail on command ([`inject`]), which only the
/// test build of `libp11ha.so` takes: a test configured with it loads that
/// build.
pub const FAULT_INJECTION: (&str, &str) = ("P11HA_FAULT_INJECTION", "YES");

/// The configuration of [`start`], put in the environment for `tokens`.
pub fn configure_ha(tokens: &Tokens, recover_ms: u64, extra: &[(&str, &str)]) {
    let log = log_path();
    let _ = std::fs::remove_file(&log);
    let log = log.display().to_string();
    let recover = recover_ms.to_string();
    let mut config = vec![
        ("ET_PTKC_GENERAL_LIBRARY_MODE", "HA"),
        ("ET_PTKC_WLD_SLOT_0", LABEL),
        ("ET_PTKC_HA_LOG_FILE", log.as_str()),
        ("ET_PTKC_HA_LOG_NAME", "p11ha-test"),
        ("P11HA_HA_RECOVER_DELAY_MS", recover.as_str()),
    ];
    config.extend_from_slice(extra);
    configure(tokens, &config);
}

/// Arms member `index`'s fault plan (see `P11HA_InjectFault`; the library
/// must be configured with [`FAULT_INJECTION`]).
pub fn inject(index: usize, command: &str) {
    let f: unsafe extern "C" fn(CK_ULONG, *const c_char) -> CK_RV = symbol("P11HA_InjectFault");
    let c = CString::new(command).expect("command");
    // SAFETY: a NUL-terminated command.
    let rv = unsafe { f(index as CK_ULONG, c.as_ptr()) };
    assert_eq!(rv, 0, "P11HA_InjectFault({index}, {command})");
}

/// The number of members.
pub fn members() -> usize {
    (0..).take_while(|&i| member_info(i).is_some()).count()
}

/// Waits (at most 10 s) until `cond` holds.
pub fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Heals every member and waits until all are back in service.
pub fn heal_all() {
    for i in 0..members() {
        inject(i, "heal");
    }
    wait_for("every member back", || {
        (0..members()).all(|i| member_info(i).is_some_and(|m| m.up == 1))
    });
}

/// Makes `session`'s member fail at the given point (a fault command); the
/// member it was on.
pub fn fail_member_of(session: &Session, command: &str) -> usize {
    let m = session_member(session);
    inject(m, command);
    m
}

/// The HA log's lines, timestamps cut off (everything up to and including
/// `UTC `).
pub fn log_lines() -> Vec<String> {
    std::fs::read_to_string(log_path())
        .unwrap_or_default()
        .lines()
        .map(|l| match l.find(" UTC ") {
            Some(i) => l[i + 5..].to_owned(),
            None => l.to_owned(),
        })
        .collect()
}

/// The log line PTK writes when member `index` fails.
pub fn failure_line(index: usize) -> String {
    let slot = member_info(index).expect("member").member_slot;
    format!(
        "p11ha-test[{}] Error: HSM Failure detected hsmIdx={index}, hsmSlotId={slot}",
        std::process::id()
    )
}

/// The log line p11ha writes when member `index` comes back.
pub fn recovered_line(index: usize) -> String {
    let slot = member_info(index).expect("member").member_slot;
    format!(
        "p11ha-test[{}] Info: HSM recovered hsmIdx={index}, hsmSlotId={slot}: takes new sessions again",
        std::process::id()
    )
}

/// The names of this process's threads.
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Makes a member fail and has a session notice it: opens a session, arms
/// `down` on its member and calls once (the session fails over). Returns
/// the member.
pub fn fail_one(l: &Library) -> usize {
    let s = l.session();
    let m = fail_member_of(&s, "down");
    s.get_session_info().expect("the session fails over");
    assert_ne!(session_member(&s), m);
    assert_eq!(member_info(m).expect("member").up, 0);
    m
}
