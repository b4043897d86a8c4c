//! The `config` fuzz target: the configuration parser of `libp11ha.so`
//! (`p11ha::config::HostConfig`, which hands the core's items to
//! `p11ha_core::config`) fed as the library feeds it at `C_Initialize`
//! (`HostConfig::load`): the text of the `P11HA_CONF` file first, then the
//! environment's `KEY=VALUE` pairs.
//!
//! Configuration comes from whoever starts the application, and a bad value
//! must only ever be reported and replaced by its fallback: whatever the
//! input, the parser must not panic, must leave every item within its
//! documented range, must report a bad line of the file by its number alone
//! (never its text, which could hold a secret), and must give the same
//! result every time (and again when the same items are applied once more,
//! since every item overrides the one before).
//!
//! # Input
//!
//! ```text
//! input = file [0x00 env]
//! file    the configuration file's text (lossily made UTF-8, as a file
//!         that is not UTF-8 is refused whole by the library)
//! env     0x00-separated entries KEY=VALUE, split at the first '=' as the
//!         environment is; only keys the parser claims (`HostConfig::is_item`)
//!         are applied, as the library does; a value that is not UTF-8 is
//!         reported by the library, not the parser, and skipped here
//! ```

use std::borrow::Cow;

use p11ha::config::{HostConfig as Config, MAX_MODULES, MAX_SERVERS, MAX_TIMEOUT_MS};
use p11ha_core::config::{self, MAX_RECOVER_DELAY_MINUTES, MAX_WLD_SLOTS, Mode};
use p11ha_core::event::Event;

/// The data length limit of a host build (`ffi/src/runtime.rs`,
/// `capacity::UPDATE_LIMIT`), to which the library clamps
/// `P11HA_HA_UPDATE_LIMIT`.
const UPDATE_LIMIT: usize = 64 * 1024;

/// What one input did (for the seeds' own test).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Problems reported through the callback.
    pub reports: usize,
    /// Of them, lines of the file that are not `KEY=VALUE`.
    pub bad_lines: usize,
    /// Environment entries applied.
    pub env_items: usize,
}

/// Splits an input into the file text and the environment entries.
fn split(data: &[u8]) -> (Cow<'_, str>, Vec<(&str, &str)>) {
    let (file, env) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut pairs = Vec::new();
    for entry in env.split(|&b| b == 0) {
        // The environment splits at the first '=' after the first byte.
        let Some(eq) = entry.iter().skip(1).position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&entry[..eq + 1], &entry[eq + 2..]);
        let (Ok(key), Ok(value)) = (std::str::from_utf8(key), std::str::from_utf8(value)) else {
            continue;
        };
        if Config::is_item(key) {
            pairs.push((key, value));
        }
    }
    (String::from_utf8_lossy(file), pairs)
}

/// Applies the file and the environment onto `cfg` as the library does,
/// checking each report; returns what was reported.
fn apply(cfg: &mut Config, file: &str, env: &[(&str, &str)]) -> (Outcome, Vec<String>) {
    let mut out = Outcome::default();
    let mut seen = Vec::new();
    let mut sink = |e: &Event<'_>| {
        let Event::BadConfig {
            key,
            problem,
            fallback,
        } = *e
        else {
            panic!("the parser reported something else than a configuration problem: {e}");
        };
        assert!(
            Config::is_item(key),
            "a report names a key the parser does not claim: {key:?}"
        );
        assert!(
            !problem.is_empty() && !fallback.is_empty(),
            "an empty report for {key}"
        );
        let text = e.to_string();
        // One line, whatever the input: a key from the environment may hold
        // a newline, which must not start a line of its own in the HA log.
        assert!(
            !text.contains(char::is_control),
            "a report that is not one line: {text:?}"
        );
        if key == "P11HA_CONF" {
            out.bad_lines += 1;
            // Only the line number: the text could hold a secret.
            let n = problem
                .strip_prefix("line ")
                .and_then(|p| p.strip_suffix(" is not KEY=VALUE"))
                .unwrap_or_else(|| panic!("a bad line reported as {problem:?}"));
            assert!(
                n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'),
                "{problem:?}"
            );
        }
        seen.push(text);
    };
    cfg.apply_file(file, &mut sink);
    for (key, value) in env {
        cfg.apply(key, value, &mut sink);
    }
    out.reports = seen.len();
    out.env_items = env.len();
    (out, seen)
}

/// The lines of `file` the library must report as not `KEY=VALUE`.
fn bad_lines(file: &str) -> usize {
    file.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| match l.split_once('=') {
            Some((key, _)) => key.trim().is_empty(),
            None => true,
        })
        .count()
}

/// Every item within its documented range.
fn check_ranges(cfg: &Config) {
    let core = &cfg.core;
    assert!(matches!(core.mode, Mode::Normal | Mode::Wld | Mode::Ha));
    for ms in [cfg.connect_timeout_ms, cfg.call_timeout_ms] {
        assert!((1..=MAX_TIMEOUT_MS).contains(&ms), "a deadline of {ms} ms");
    }
    assert!(core.recover_delay_minutes <= MAX_RECOVER_DELAY_MINUTES);
    // Its computation must not overflow, and 0 means never.
    if let Some(ms) = core.recover_delay() {
        assert_ne!(ms, 0);
    }
    let limit = core
        .update_limit
        .map_or(UPDATE_LIMIT, |n| n.min(UPDATE_LIMIT));
    assert!(limit <= UPDATE_LIMIT);

    let slots = core.wld_slots.as_slice();
    assert!(slots.len() <= MAX_WLD_SLOTS);
    for pair in slots.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "virtual slots not sorted or repeated"
        );
    }
    for s in slots {
        assert!(s.id < MAX_WLD_SLOTS as u64);
        // A label is the trimmed, non-empty value, blank-padded.
        assert!(!s.label[0].is_ascii_whitespace(), "a blank label");
        assert!(std::str::from_utf8(&s.label).is_ok());
        let text = std::str::from_utf8(&s.label)
            .unwrap_or_default()
            .trim_end_matches(' ');
        assert_eq!(config::label(text), Some(s.label));
    }

    assert!(cfg.modules.len() <= MAX_MODULES);
    for m in &cfg.modules {
        assert!(!m.is_empty() && !m.contains(';'));
        assert_eq!(m.trim(), m.as_str());
    }
    assert!(cfg.servers.len() <= MAX_SERVERS);
    for s in &cfg.servers {
        assert!(!s.is_empty());
        assert!(!s.bytes().any(|b| b.is_ascii_whitespace()));
    }
    assert!(!cfg.log_file.is_empty());
    assert_eq!(cfg.log_file.trim(), cfg.log_file);
    assert!((1..=64).contains(&cfg.log_name.len()));
    assert!(cfg.log_name.bytes().all(|b| b.is_ascii_graphic()));
}

/// Runs one input, panicking on a broken invariant.
pub fn run(data: &[u8]) -> Outcome {
    let (file, env) = split(data);
    let mut first = Config::default();
    let (out, reports) = apply(&mut first, &file, &env);
    check_ranges(&first);
    assert_eq!(
        out.bad_lines,
        bad_lines(&file),
        "bad lines of the file not reported one each"
    );

    // Determinism: the same input gives the same configuration and reports.
    let mut second = Config::default();
    let (again, reports_again) = apply(&mut second, &file, &env);
    assert_eq!(first, second);
    assert_eq!((out.clone(), reports), (again, reports_again));

    // Every item overrides the one before: applying it all once more
    // changes nothing.
    let mut twice = first.clone();
    apply(&mut twice, &file, &env);
    assert_eq!(
        first, twice,
        "applying the same items again changed the configuration"
    );
    out
}

/// A few inputs that use every item, well and badly: a file alone, the
/// environment alone, both, and lines that are not items.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let good_file = "\
# p11ha
ET_PTKC_GENERAL_LIBRARY_MODE=HA
ET_PTKC_WLD_SLOT_0=TokName
ET_PTKC_WLD_SLOT_15 = Other token
P11HA_MODULES=/usr/lib/softhsm/libsofthsm2.so; /usr/lib/other.so
ET_HSM_NETCLIENT_SERVERLIST=unix:path=/run/hsm1.sock tcp:host=hsm3.example,port=2345
P11HA_CONNECT_TIMEOUT_MS=3000
P11HA_CALL_TIMEOUT_MS=1000
ET_PTKC_HA_RECOVER_DELAY=2
P11HA_HA_RECOVER_DELAY_MS=250
ET_PTKC_HA_RECOVER_WAIT=yes
ET_PTKC_HA_LOG_FILE=/tmp/halog.log
ET_PTKC_HA_LOG_NAME=app
P11HA_HA_UPDATE_LIMIT=4096
P11HA_CONF=/etc/p11ha.conf
";
    let bad_file = "\
ET_PTKC_GENERAL_LIBRARY_MODE=fast
ET_PTKC_WLD_SLOT_16=TokName
ET_PTKC_WLD_SLOT_x=TokName
ET_PTKC_WLD_SLOT_1=a label that is longer than thirty-two bytes
ET_PTKC_WLD_SLOT_2=
P11HA_CALL_TIMEOUT_MS=0
P11HA_CONNECT_TIMEOUT_MS=3600001
ET_PTKC_HA_RECOVER_DELAY=-1
P11HA_HA_RECOVER_DELAY_MS=99999999999999999999
ET_PTKC_HA_RECOVER_WAIT=maybe
ET_PTKC_HA_LOG_NAME=two words
ET_PTKC_HA_LOG_FILE=
P11HA_HA_UPDATE_LIMIT=1e3
P11HA_FAULT_INJECTION=1
ET_PTKC_TYPO=1
a PIN on its own line: 1234
=no key
P11HA_MODULES=a;b;c;d;e;f;g;h;i
";
    let env = |items: &[&str]| -> Vec<u8> {
        let mut v = vec![0u8];
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                v.push(0);
            }
            v.extend_from_slice(item.as_bytes());
        }
        v
    };
    let good_env = env(&[
        "ET_PTKC_GENERAL_LIBRARY_MODE=wld",
        "ET_PTKC_WLD_SLOT_3=TokName",
        "P11HA_MODULES=/usr/lib/softhsm/libsofthsm2.so",
        "P11HA_CALL_TIMEOUT_MS=3600000",
        "HOME=/root",
    ]);
    let bad_env = env(&[
        "ET_PTKC_GENERAL_LIBRARY_MODE=",
        "P11HA_HA_UPDATE_LIMIT=100000",
        "ET_HSM_NETCLIENT_SERVERLIST=a b c d e f g h i j k l m n o p q",
        "P11HA_UNKNOWN=x",
        "=P11HA_MODULES",
    ]);
    let mut both = good_file.as_bytes().to_vec();
    both.extend_from_slice(&bad_env);
    vec![
        ("good-file".into(), good_file.as_bytes().to_vec()),
        ("bad-file".into(), bad_file.as_bytes().to_vec()),
        ("good-env".into(), good_env),
        ("bad-env".into(), bad_env),
        ("both".into(), both),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_run_and_report_what_they_should() {
        let seeds = seeds();
        let by_name = |n: &str| &seeds.iter().find(|(name, _)| name == n).unwrap().1;
        let good = run(by_name("good-file"));
        assert_eq!((good.reports, good.bad_lines), (0, 0));
        let good = run(by_name("good-env"));
        assert_eq!((good.reports, good.env_items), (0, 4));
        let bad = run(by_name("bad-file"));
        assert_eq!(bad.bad_lines, 2);
        assert_eq!(bad.reports, 17, "{bad:?}");
        for (_, input) in &seeds {
            run(input);
        }
    }

    #[test]
    fn the_environment_splits_at_the_first_equals_sign() {
        let (file, env) = split(b"A=1\0P11HA_MODULES=/a=b\0x\0P11HA_CONF=\0=P11HA_X=1");
        assert_eq!(file, "A=1");
        assert_eq!(env, [("P11HA_MODULES", "/a=b"), ("P11HA_CONF", "")]);
    }

    /// `regressions/config/crash-b2975f99`: the environment entry
    /// `P11HA_CONF: line O\n\n\nMS=360...` is an unknown item whose report
    /// began, as text, like a bad line of the file; the harness counted
    /// bad lines by that text. Reports are classified by their key now, and
    /// the key's newlines are escaped, so the report stays one line.
    #[test]
    fn an_unknown_item_named_like_a_bad_line_is_not_one() {
        let input = b"A=1\0P11HA_CONF: line 1\nis not=x";
        let (file, env) = split(input);
        assert_eq!(env.len(), 1);
        let mut cfg = Config::default();
        let (out, reports) = apply(&mut cfg, &file, &env);
        assert_eq!((out.reports, out.bad_lines), (1, 0), "{reports:?}");
        assert_eq!(
            reports[0],
            "Configuration P11HA_CONF: line 1\\x0ais not: not an item p11ha knows; ignored"
        );
        run(input);
    }

    #[test]
    fn odd_inputs_run() {
        for input in [
            &b""[..],
            b"\0",
            b"\xff\xfe=\n",
            b"=\n=\n\r\n",
            b"\0P11HA_MODULES=\xff",
        ] {
            run(input);
        }
    }
}
