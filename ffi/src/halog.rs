//! The HA log, as ProtectToolkit-C writes it: one line per event, with a
//! timestamp, the application name (`ET_PTKC_HA_LOG_NAME`), the process id
//! and the severity, in the file `ET_PTKC_HA_LOG_FILE`:
//!
//! ```text
//! 2026-11-27 23:41:07.312 UTC ptk_cryptoki[4242] Error: HSM Failure detected hsmIdx=1, hsmSlotId=7
//! ```
//!
//! The file is created with mode 0600 and appended to with one `write` per
//! line (`O_APPEND`), so lines of several threads or processes never mix.
//! With `ET_PTKC_HA_LOG_FORMAT=json` each line is a JSON object instead:
//!
//! ```text
//! {"time":"2026-11-27T23:41:07.312Z","app":"ptk_cryptoki","pid":4242,"severity":"Error","event":"hsm_failure","message":"HSM Failure detected hsmIdx=1, hsmSlotId=7","hsm_idx":1,"hsm_slot_id":7}
//! ```
//!
//! (`event` is [`Event::name`], `message` the text line's message, then the
//! event's own fields). Strings are escaped, control characters as
//! `\u00XX`, so no value can end a line or forge one.
//! If it cannot be opened, lines go to syslog instead (as text). Writing never fails
//! and never panics: an error is dropped. No event carries a PIN or key
//! material, so none can reach the log.

use std::ffi::CString;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use p11ha_core::event::{Event, Severity};

/// How the lines of the HA log file are written (`ET_PTKC_HA_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// PTK's text lines (the default).
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the HA log goes.
pub enum HaLog {
    /// The configured file.
    File {
        file: File,
        name: String,
        format: LogFormat,
    },
    /// syslog, when the file could not be opened.
    Syslog {
        /// Keeps openlog's ident string alive while syslog may use it.
        _ident: CString,
    },
}

impl HaLog {
    /// Opens (creating, mode 0600) the log file `path`; falls back to
    /// syslog under `name` if that fails. The second value says why the
    /// file could not be used, for the caller to report.
    pub fn open(path: &str, name: &str, format: LogFormat) -> (HaLog, Option<String>) {
        match OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => (
                HaLog::File {
                    file,
                    name: name.to_owned(),
                    format,
                },
                None,
            ),
            Err(e) => {
                let ident = CString::new(name).unwrap_or_else(|_| c"ptk_cryptoki".to_owned());
                // SAFETY: ident is NUL-terminated and kept alive in the
                // returned HaLog for as long as syslog may read it.
                unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_USER) };
                (
                    HaLog::Syslog { _ident: ident },
                    Some(format!("cannot open {path} ({e})")),
                )
            }
        }
    }

    /// Writes one event.
    pub fn write(&self, event: &Event<'_>) {
        let severity = event.severity();
        let text = event.to_string();
        match self {
            HaLog::File { file, name, format } => {
                let now = SystemTime::now();
                let pid = std::process::id();
                let line = match format {
                    LogFormat::Text => format!(
                        "{} {name}[{pid}] {}: {text}\n",
                        timestamp(now),
                        severity.as_str()
                    ),
                    LogFormat::Json => json_line(now, name, pid, &text, event),
                };
                // One write with O_APPEND: the line lands whole. Errors are
                // dropped: logging must never fail the application.
                let _ = (&*file).write_all(line.as_bytes());
            }
            HaLog::Syslog { .. } => {
                let priority = match severity {
                    Severity::Info => libc::LOG_INFO,
                    Severity::Warning => libc::LOG_WARNING,
                    Severity::Error => libc::LOG_ERR,
                };
                let Ok(text) = CString::new(format!("{}: {text}", severity.as_str())) else {
                    return;
                };
                // SAFETY: a constant "%s" format with one NUL-terminated
                // string argument.
                unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
            }
        }
    }
}

impl Drop for HaLog {
    fn drop(&mut self) {
        if let HaLog::Syslog { .. } = self {
            // SAFETY: closes the connection openlog made.
            unsafe { libc::closelog() };
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC` for `t`.
pub fn timestamp(t: SystemTime) -> String {
    let ((y, m, day), (h, min, s), ms) = parts(t);
    format!("{y:04}-{m:02}-{day:02} {h:02}:{min:02}:{s:02}.{ms:03} UTC")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds) for `t`.
pub fn rfc3339(t: SystemTime) -> String {
    let ((y, m, day), (h, min, s), ms) = parts(t);
    format!("{y:04}-{m:02}-{day:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
}

type Parts = ((i64, u32, u32), (u64, u64, u64), u32);

/// The UTC date, time of day and milliseconds of `t`.
fn parts(t: SystemTime) -> Parts {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let s = secs % 86_400;
    (
        civil_from_days((secs / 86_400) as i64),
        (s / 3600, s / 60 % 60, s % 60),
        d.subsec_millis(),
    )
}

/// One JSON line (with its `\n`): the common members, then `event`'s own
/// fields if given.
fn json_line(time: SystemTime, app: &str, pid: u32, message: &str, event: &Event<'_>) -> String {
    let mut j = Json(String::with_capacity(256));
    j.0.push('{');
    j.str("time", &rfc3339(time));
    j.str("app", app);
    j.num("pid", u64::from(pid));
    j.str("severity", event.severity().as_str());
    j.str("event", event.name());
    j.str("message", message);
    match *event {
        Event::HsmFailure {
            hsm_idx,
            hsm_slot_id,
        }
        | Event::MemberRecovered {
            hsm_idx,
            hsm_slot_id,
        }
        | Event::NeedsSync {
            hsm_idx,
            hsm_slot_id,
        } => {
            j.num("hsm_idx", hsm_idx as u64);
            j.num("hsm_slot_id", hsm_slot_id);
        }
        Event::MemberDropped {
            hsm_idx,
            hsm_slot_id,
            rv,
        } => {
            j.num("hsm_idx", hsm_idx as u64);
            j.num("hsm_slot_id", hsm_slot_id);
            j.str("rv", &rv.to_string());
        }
        Event::MemberJoined {
            hsm_idx,
            hsm_slot_id,
            slot,
        } => {
            j.num("hsm_idx", hsm_idx as u64);
            j.num("hsm_slot_id", hsm_slot_id);
            j.num("slot", slot);
        }
        Event::MemberInconsistent {
            hsm_idx,
            hsm_slot_id,
            function,
            rv,
        } => {
            j.num("hsm_idx", hsm_idx as u64);
            j.num("hsm_slot_id", hsm_slot_id);
            j.str("function", function);
            j.str("rv", &rv.to_string());
        }
        Event::NotRecoverable { lost } => j.str("lost", &lost.to_string()),
        Event::RecoveryIncomplete { what, rv } => {
            j.str("what", what);
            j.str("rv", &rv.to_string());
        }
        Event::SessionNotMoved { hsm_idx, rv } => {
            j.num("hsm_idx", hsm_idx as u64);
            j.str("rv", &rv.to_string());
        }
        Event::NotReplicated {
            function,
            why,
            hsm_idx,
            refused,
        } => {
            j.str("function", function);
            j.str("why", why);
            j.num("hsm_idx", hsm_idx as u64);
            let _ = write!(j.0, ",\"refused\":{refused}");
        }
        Event::TokenWritten { slot, members } => {
            j.num("slot", slot);
            j.0.push_str(",\"members\":[");
            let mut sep = "";
            for i in (0..32).filter(|i| members & (1 << i) != 0) {
                let _ = write!(j.0, "{sep}{i}");
                sep = ",";
            }
            j.0.push(']');
        }
        Event::Refused { function, why, rv } => {
            j.str("function", function);
            j.str("why", why);
            j.str("rv", &rv.to_string());
        }
        Event::BadConfig {
            key,
            problem,
            fallback,
        } => {
            j.str("key", key);
            j.str("problem", problem);
            j.str("fallback", fallback);
        }
        Event::HsmDead => {}
    }
    j.0.push_str("}\n");
    j.0
}

/// A JSON object being written (after its `{`).
struct Json(String);

impl Json {
    fn key(&mut self, key: &str) {
        if !self.0.ends_with('{') {
            self.0.push(',');
        }
        self.quoted(key);
        self.0.push(':');
    }

    fn num(&mut self, key: &str, n: u64) {
        self.key(key);
        let _ = write!(self.0, "{n}");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.quoted(value);
    }

    /// `s` as a JSON string: `"` and `\\` escaped, every control character
    /// (C0, DEL, C1) and the line and paragraph separators as `\uXXXX`.
    fn quoted(&mut self, s: &str) {
        self.0.push('"');
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    let _ = write!(self.0, "\\u{:04x}", u32::from(c));
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_822_867_312);
        assert_eq!(timestamp(t), "2026-11-27 23:41:07.312 UTC");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000 UTC");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(t), "2000-02-29 00:00:00.000 UTC");
    }

    #[test]
    fn the_file_is_private_and_lines_are_whole() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("p11ha-halog-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (log, problem) = HaLog::open(path.to_str().unwrap(), "myapp", LogFormat::Text);
        assert!(problem.is_none());
        log.write(&Event::HsmFailure {
            hsm_idx: 1,
            hsm_slot_id: 7,
        });
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().next().unwrap();
        let suffix = format!(
            " UTC myapp[{}] Error: HSM Failure detected hsmIdx=1, hsmSlotId=7",
            std::process::id()
        );
        assert!(line.ends_with(&suffix), "{line}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn json_lines_carry_the_fields_and_cannot_be_forged() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_822_867_312);
        let e = Event::HsmFailure {
            hsm_idx: 1,
            hsm_slot_id: 7,
        };
        assert_eq!(
            json_line(t, "app", 42, &e.to_string(), &e),
            "{\"time\":\"2026-11-27T23:41:07.312Z\",\"app\":\"app\",\"pid\":42,\
             \"severity\":\"Error\",\"event\":\"hsm_failure\",\
             \"message\":\"HSM Failure detected hsmIdx=1, hsmSlotId=7\",\
             \"hsm_idx\":1,\"hsm_slot_id\":7}\n"
        );
        let e = Event::BadConfig {
            key: "P11HA_X\n{\"event\":\"hsm_failure\"}\u{85}\u{2028}\\",
            problem: "p",
            fallback: "f",
        };
        let line = json_line(t, "app", 42, &e.to_string(), &e);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with("}\n"));
        assert!(
            !line
                .trim_end()
                .contains(|c: char| c.is_control() || c == '\u{2028}')
        );
        assert!(line.contains(r#""key":"P11HA_X\u000a{\"event\":\"hsm_failure\"}\u0085\u2028\\""#));
        let e = Event::TokenWritten {
            slot: 0,
            members: 0b101,
        };
        let line = json_line(t, "app", 1, "m", &e);
        assert!(line.ends_with("\"slot\":0,\"members\":[0,2]}\n"), "{line}");
    }

    #[test]
    fn an_unwritable_file_falls_back_to_syslog() {
        let (log, problem) = HaLog::open("/nonexistent-dir/ha.log", "myapp", LogFormat::Json);
        assert!(matches!(log, HaLog::Syslog { .. }));
        assert!(problem.unwrap().contains("/nonexistent-dir/ha.log"));
        // Writing to syslog must not fail or panic, with or without a daemon.
        log.write(&Event::HsmDead);
    }
}
