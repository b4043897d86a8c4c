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
//! If it cannot be opened, lines go to syslog instead. Writing never fails
//! and never panics: an error is dropped. No event carries a PIN or key
//! material, so none can reach the log.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use p11ha_core::event::{Event, Severity};

/// Where the HA log goes.
pub enum HaLog {
    /// The configured file.
    File { file: File, name: String },
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
    pub fn open(path: &str, name: &str) -> (HaLog, Option<String>) {
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
        self.write_line(event.severity(), &event.to_string());
    }

    /// Writes one line of `severity`.
    pub fn write_line(&self, severity: Severity, text: &str) {
        match self {
            HaLog::File { file, name } => {
                let line = format!(
                    "{} {name}[{}] {}: {text}\n",
                    timestamp(SystemTime::now()),
                    std::process::id(),
                    severity.as_str()
                );
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
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
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
        let (log, problem) = HaLog::open(path.to_str().unwrap(), "myapp");
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
    fn an_unwritable_file_falls_back_to_syslog() {
        let (log, problem) = HaLog::open("/nonexistent-dir/ha.log", "myapp");
        assert!(matches!(log, HaLog::Syslog { .. }));
        assert!(problem.unwrap().contains("/nonexistent-dir/ha.log"));
        // Writing to syslog must not fail or panic, with or without a daemon.
        log.write(&Event::HsmDead);
    }
}
