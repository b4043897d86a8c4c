//! The configuration of `libp11ha.so`: the core's items
//! ([`p11ha_core::config`]: mode, virtual slots, recovery, data length
//! limit) and the host's own (modules, servers, deadlines, the HA log, fault
//! injection), read at `C_Initialize` from the file named by `P11HA_CONF`
//! and then from the environment, which wins.
//!
//! Only variables with an `ET_PTKC_`, `ET_HSM_` or `P11HA_` prefix are read:
//! an application's unrelated environment is never looked at or echoed. An
//! unknown item with such a prefix is reported (a typo shows), and so is a
//! bad value, with the fallback used instead; nothing stops the library from
//! loading. A bad line of the file is named by its number, never echoed: it
//! could hold a secret.

use std::ffi::OsStr;

use p11ha_core::config::{Config, Report, flag, parse_decimal};
use p11ha_core::event::Event;

pub use crate::halog::LogFormat;
use crate::host::report;

/// How many `P11HA_MODULES` paths are kept.
pub const MAX_MODULES: usize = 8;
/// How many `ET_HSM_NETCLIENT_SERVERLIST` addresses are kept.
pub const MAX_SERVERS: usize = 16;
/// The default `P11HA_CONNECT_TIMEOUT_MS`.
pub const CONNECT_TIMEOUT_MS: u32 = 3_000;
/// The default `P11HA_CALL_TIMEOUT_MS`.
pub const CALL_TIMEOUT_MS: u32 = 20_000;
/// The longest deadline accepted (one hour).
pub const MAX_TIMEOUT_MS: u32 = 3_600_000;
/// The largest configuration file read, in bytes.
pub const MAX_FILE: u64 = 1 << 20;

const MODULES: &str = "P11HA_MODULES";
const SERVERS: &str = "ET_HSM_NETCLIENT_SERVERLIST";
const CONNECT_TIMEOUT: &str = "P11HA_CONNECT_TIMEOUT_MS";
const CALL_TIMEOUT: &str = "P11HA_CALL_TIMEOUT_MS";
const FAULT_INJECTION: &str = "P11HA_FAULT_INJECTION";
const FAULT_SERVICE: &str = "P11HA_FAULT_SERVICE_US";
const FAULT_HIDE: &str = "P11HA_FAULT_HIDE_MECHANISM";
/// The longest `P11HA_FAULT_SERVICE_US` accepted (one second).
pub const MAX_SERVICE_US: u32 = 1_000_000;
const STATE_DIR: &str = "P11HA_STATE_DIR";
const LOG_FILE: &str = "ET_PTKC_HA_LOG_FILE";
const LOG_NAME: &str = "ET_PTKC_HA_LOG_NAME";
const LOG_FORMAT: &str = "ET_PTKC_HA_LOG_FORMAT";
const STATUS_SOCKET: &str = "P11HA_STATUS_SOCKET";
/// The item that names the file the others come from.
pub const CONF: &str = "P11HA_CONF";

/// Everything `libp11ha.so` is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// What the core runs with.
    pub core: Config,
    /// `P11HA_MODULES`: PKCS#11 modules whose slots are members, as given.
    pub modules: Vec<String>,
    /// `ET_HSM_NETCLIENT_SERVERLIST`: remote members, in p11-kit's address
    /// form (`unix:path=...`, `tcp:host=...,port=...`); parsed when the
    /// servers are set up.
    pub servers: Vec<String>,
    /// `P11HA_CONNECT_TIMEOUT_MS`: how long connecting to a remote member
    /// (and setting the connection up) may take.
    pub connect_timeout_ms: u32,
    /// `P11HA_CALL_TIMEOUT_MS`: how long one call to a remote member
    /// (request and reply) may take before the member is declared failed.
    pub call_timeout_ms: u32,
    /// `ET_PTKC_HA_LOG_FILE`. Default `/ptk_halog.log`, as PTK on Linux.
    pub log_file: String,
    /// `ET_PTKC_HA_LOG_NAME`: the application name in each log line.
    /// Default `ptk_cryptoki`, as PTK.
    pub log_name: String,
    /// `ET_PTKC_HA_LOG_FORMAT`: `text` (PTK's lines, the default) or
    /// `json` (one JSON object per line).
    pub log_format: LogFormat,
    /// `P11HA_STATUS_SOCKET`: the Unix socket that serves the live state
    /// (a path, or a directory ending in `/` for `<dir>/<pid>.sock`); none
    /// by default.
    pub status_socket: Option<String>,
    /// `P11HA_FAULT_INJECTION=YES`: tests may make members fail on command.
    /// Only the test build (the `fault-injection` feature) takes it; the
    /// release build reports it and ignores it.
    pub fault_injection: bool,
    /// `P11HA_FAULT_SERVICE_US`: the service time of each operation of
    /// member 0, 1, 2... in microseconds (members past the list take its
    /// last value): each member then completes at most one operation per
    /// service time, in turn, a stand-in for an HSM of fixed capacity in
    /// benchmarks. The test build only, like `fault_injection`; empty by
    /// default (members serve at once).
    pub fault_service_us: Vec<u32>,
    /// `P11HA_FAULT_HIDE_MECHANISM=<member index>:<CKM_* value>`: that
    /// member pretends it lacks that mechanism (a mock of members that
    /// differ; see `Faulty::hide_mechanism`). The test build only.
    pub fault_hide_mechanism: Option<(usize, u32)>,
    /// `P11HA_STATE_DIR`: where the members that missed token writes are
    /// kept across processes (see `syncstate`); none by default.
    pub state_dir: Option<String>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            core: Config::new(),
            modules: Vec::new(),
            servers: Vec::new(),
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            call_timeout_ms: CALL_TIMEOUT_MS,
            log_file: "/ptk_halog.log".into(),
            log_name: "ptk_cryptoki".into(),
            log_format: LogFormat::Text,
            status_socket: None,
            fault_injection: false,
            fault_service_us: Vec::new(),
            fault_hide_mechanism: None,
            state_dir: None,
        }
    }
}

impl HostConfig {
    /// Whether `key` is an item the library looks at (or reports): the
    /// environment is scanned for these prefixes only.
    pub fn is_item(key: &str) -> bool {
        key.starts_with("ET_PTKC_") || key.starts_with("ET_HSM_") || key.starts_with("P11HA_")
    }

    /// Applies one `key=value` item. Later items override earlier ones.
    pub fn apply(&mut self, key: &str, value: &str, report: Report<'_>) {
        if self.core.apply(key, value, report) {
            return;
        }
        let value = value.trim();
        if key == MODULES {
            self.apply_modules(key, value, report);
        } else if key == SERVERS {
            self.apply_servers(key, value, report);
        } else if key == CONNECT_TIMEOUT || key == CALL_TIMEOUT {
            let (field, default) = if key == CONNECT_TIMEOUT {
                (&mut self.connect_timeout_ms, "3000 ms")
            } else {
                (&mut self.call_timeout_ms, "20000 ms")
            };
            match parse_decimal(value)
                .and_then(|ms| u32::try_from(ms).ok())
                .filter(|&ms| (1..=MAX_TIMEOUT_MS).contains(&ms))
            {
                Some(ms) => *field = ms,
                None => report(&Event::BadConfig {
                    key,
                    problem: "not a number of milliseconds from 1 to 3600000",
                    fallback: default,
                }),
            }
        } else if (key == FAULT_INJECTION || key == FAULT_SERVICE || key == FAULT_HIDE)
            && !cfg!(feature = "fault-injection")
        {
            report(&Event::BadConfig {
                key,
                problem: "this build of libp11ha.so has no fault injection (a test build has)",
                fallback: "ignored",
            });
        } else if key == FAULT_INJECTION {
            self.fault_injection = flag(key, value, report);
        } else if key == FAULT_SERVICE {
            self.apply_service(key, value, report);
        } else if key == FAULT_HIDE {
            let parsed = value.split_once(':').and_then(|(i, m)| {
                let i = usize::try_from(parse_decimal(i.trim())?).ok()?;
                let m = m.trim();
                let m = match m.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => u32::try_from(parse_decimal(m)?).ok()?,
                };
                Some((i, m))
            });
            if parsed.is_none() {
                report(&Event::BadConfig {
                    key,
                    problem: "not <member index>:<mechanism number>",
                    fallback: "no mechanism is hidden",
                });
            }
            self.fault_hide_mechanism = parsed;
        } else if key == STATE_DIR {
            self.state_dir = (!value.is_empty()).then(|| value.into());
        } else if key == LOG_FILE {
            if value.is_empty() {
                report(&Event::BadConfig {
                    key,
                    problem: "empty",
                    fallback: "the log goes to /ptk_halog.log",
                });
            } else {
                self.log_file = value.into();
            }
        } else if key == LOG_NAME {
            if (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()) {
                self.log_name = value.into();
            } else {
                report(&Event::BadConfig {
                    key,
                    problem: "not 1 to 64 printable characters without spaces",
                    fallback: "ptk_cryptoki is used",
                });
            }
        } else if key == LOG_FORMAT {
            match value.to_ascii_lowercase().as_str() {
                "text" => self.log_format = LogFormat::Text,
                "json" => self.log_format = LogFormat::Json,
                _ => {
                    self.log_format = LogFormat::Text;
                    report(&Event::BadConfig {
                        key,
                        problem: "neither text nor json",
                        fallback: "the HA log is text",
                    })
                }
            }
        } else if key == STATUS_SOCKET {
            self.status_socket = (!value.is_empty()).then(|| value.into());
        } else if key == CONF {
            // It names the file these items come from (see `load`).
        } else if Self::is_item(key) {
            report(&Event::BadConfig {
                key,
                problem: "not an item p11ha knows",
                fallback: "ignored",
            });
        }
    }

    fn apply_modules(&mut self, key: &str, value: &str, report: Report<'_>) {
        self.modules.clear();
        for path in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if self.modules.len() == MAX_MODULES {
                report(&Event::BadConfig {
                    key,
                    problem: "more than 8 modules",
                    fallback: "the modules after the eighth are not loaded",
                });
                return;
            }
            self.modules.push(path.into());
        }
    }

    fn apply_service(&mut self, key: &str, value: &str, report: Report<'_>) {
        let times: Option<Vec<u32>> = value
            .split(',')
            .map(|t| {
                parse_decimal(t.trim())
                    .and_then(|us| u32::try_from(us).ok())
                    .filter(|&us| us <= MAX_SERVICE_US)
            })
            .collect();
        match times {
            Some(times) if times.len() <= p11ha_core::engine::MAX_MEMBERS => {
                self.fault_service_us = times
            }
            _ => {
                self.fault_service_us.clear();
                report(&Event::BadConfig {
                    key,
                    problem: "not a comma-separated list of microseconds from 0 to 1000000, \
                              one per member at most",
                    fallback: "members serve at once",
                });
            }
        }
    }

    /// The service time of member `index`'s operations (see
    /// [`HostConfig::fault_service_us`]).
    pub fn service_us(&self, index: usize) -> u32 {
        let times = &self.fault_service_us;
        times.get(index).or(times.last()).copied().unwrap_or(0)
    }

    fn apply_servers(&mut self, key: &str, value: &str, report: Report<'_>) {
        self.servers.clear();
        for address in value.split_ascii_whitespace() {
            if self.servers.len() == MAX_SERVERS {
                report(&Event::BadConfig {
                    key,
                    problem: "more than 16 servers",
                    fallback: "the servers after the sixteenth are not members",
                });
                return;
            }
            self.servers.push(address.into());
        }
    }

    /// Applies the items of a configuration file's text: `KEY=VALUE` lines,
    /// `#` starts a comment line, blank lines are ignored. A line that is
    /// not an item is reported by its number only: its text could hold
    /// anything, a secret included.
    pub fn apply_file(&mut self, text: &str, report: Report<'_>) {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    self.apply(key.trim(), value, report)
                }
                _ => report(&Event::BadConfig {
                    key: CONF,
                    problem: &format!("line {} is not KEY=VALUE", number + 1),
                    fallback: "the line is ignored",
                }),
            }
        }
    }

    /// Reads the configuration: the file named by `P11HA_CONF` first, then
    /// the environment, which wins. Problems go to stderr, and are returned
    /// for the HA log.
    pub fn load() -> (HostConfig, Vec<Problem>) {
        let mut cfg = HostConfig::default();
        let mut problems = Vec::new();
        let mut sink = |e: &Event<'_>| {
            report(e);
            problems.push(Problem::of(e));
        };
        if let Some(path) = std::env::var_os(CONF) {
            match read_limited(&path) {
                Ok(text) => cfg.apply_file(&text, &mut sink),
                Err(problem) => sink(&Event::BadConfig {
                    key: CONF,
                    problem,
                    fallback: "only the environment is used",
                }),
            }
        }
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if !Self::is_item(key) {
                continue;
            }
            match value.to_str() {
                Some(value) => cfg.apply(key, value, &mut sink),
                None => sink(&Event::BadConfig {
                    key,
                    problem: "the value is not UTF-8",
                    fallback: "ignored",
                }),
            }
        }
        (cfg, problems)
    }
}

/// A configuration report kept until the HA log is open (the event
/// borrows what the configuration no longer holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    key: String,
    problem: String,
    fallback: String,
}

impl Problem {
    fn of(e: &Event<'_>) -> Problem {
        match *e {
            Event::BadConfig {
                key,
                problem,
                fallback,
            } => Problem {
                key: key.into(),
                problem: problem.into(),
                fallback: fallback.into(),
            },
            // Configuration reports are BadConfig; anything else keeps its
            // text.
            _ => Problem {
                key: String::new(),
                problem: e.to_string(),
                fallback: String::new(),
            },
        }
    }

    /// The report again, as an event.
    pub fn event(&self) -> Event<'_> {
        Event::BadConfig {
            key: &self.key,
            problem: &self.problem,
            fallback: &self.fallback,
        }
    }
}

fn read_limited(path: &OsStr) -> Result<String, &'static str> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|_| "cannot open the file")?;
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|_| "cannot read the file as UTF-8 text")?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p11ha_core::config::Mode;

    fn parse(items: &[(&str, &str)]) -> (HostConfig, usize) {
        let mut cfg = HostConfig::default();
        let mut reports = 0;
        for (k, v) in items {
            cfg.apply(k, v, &mut |_| reports += 1);
        }
        (cfg, reports)
    }

    #[test]
    fn modules_split_on_semicolons_and_are_not_capped_in_length() {
        let (cfg, reports) = parse(&[(MODULES, " /a.so ;; /b.so;")]);
        assert_eq!(reports, 0);
        assert_eq!(cfg.modules, ["/a.so", "/b.so"]);
        let long = format!("/{}/libvendor.so", "d".repeat(1000));
        let (cfg, reports) = parse(&[(MODULES, &long)]);
        assert_eq!((cfg.modules.len(), reports), (1, 0));
        assert_eq!(cfg.modules[0], long);
        let (cfg, reports) = parse(&[(MODULES, "a;b;c;d;e;f;g;h;i")]);
        assert_eq!((cfg.modules.len(), reports), (8, 1));
    }

    #[test]
    fn servers_and_deadlines() {
        let (cfg, reports) = parse(&[]);
        assert_eq!(reports, 0);
        assert!(cfg.servers.is_empty());
        assert_eq!(
            (cfg.connect_timeout_ms, cfg.call_timeout_ms),
            (3_000, 20_000)
        );
        let (cfg, reports) = parse(&[
            (
                SERVERS,
                " unix:path=/run/a.sock\ttcp:host=hsm2,port=2345  unix:path=/run/c.sock ",
            ),
            (CONNECT_TIMEOUT, "500"),
            (CALL_TIMEOUT, "2500"),
        ]);
        assert_eq!(reports, 0);
        assert_eq!(cfg.servers.len(), 3);
        assert_eq!(cfg.servers[1], "tcp:host=hsm2,port=2345");
        assert_eq!((cfg.connect_timeout_ms, cfg.call_timeout_ms), (500, 2_500));
        let (cfg, reports) = parse(&[
            (CONNECT_TIMEOUT, "0"),
            (CALL_TIMEOUT, "3600001"),
            (CALL_TIMEOUT, "soon"),
        ]);
        assert_eq!(reports, 3);
        assert_eq!(
            (cfg.connect_timeout_ms, cfg.call_timeout_ms),
            (3_000, 20_000)
        );
    }

    #[test]
    fn service_times_only_in_the_test_build() {
        let (cfg, reports) = parse(&[(FAULT_SERVICE, "2000, 2000,4000")]);
        if cfg!(feature = "fault-injection") {
            assert_eq!(reports, 0);
            assert_eq!(cfg.fault_service_us, [2000, 2000, 4000]);
            assert_eq!((cfg.service_us(1), cfg.service_us(2)), (2000, 4000));
            assert_eq!(cfg.service_us(7), 4000, "past the list: its last value");
            let (cfg, reports) = parse(&[(FAULT_SERVICE, "2000,1000001")]);
            assert_eq!(reports, 1);
            assert_eq!(cfg.service_us(0), 0);
            let (cfg, reports) = parse(&[(FAULT_SERVICE, "500"), (FAULT_SERVICE, "fast")]);
            assert_eq!((reports, cfg.service_us(3)), (1, 0));
        } else {
            assert_eq!(reports, 1);
            assert_eq!(cfg, HostConfig::default());
        }
        assert_eq!(HostConfig::default().service_us(0), 0);
    }

    #[test]
    fn the_ha_log_items_and_their_defaults() {
        let (cfg, _) = parse(&[]);
        assert_eq!(
            (cfg.log_file.as_str(), cfg.log_name.as_str()),
            ("/ptk_halog.log", "ptk_cryptoki")
        );
        let (cfg, reports) = parse(&[
            (LOG_FILE, "/tmp/hsm_log.log"),
            (LOG_NAME, "myapp"),
            ("ET_PTKC_HA_RECOVER_DELAY", "120"),
        ]);
        assert_eq!(reports, 0);
        assert_eq!(cfg.log_file, "/tmp/hsm_log.log");
        assert_eq!(cfg.log_name, "myapp");
        assert_eq!(cfg.core.recover_delay(), Some(7_200_000));
        let (cfg, reports) = parse(&[(LOG_NAME, "two words"), (LOG_FILE, "")]);
        assert_eq!(reports, 2);
        assert_eq!(cfg, HostConfig::default());
    }

    #[test]
    fn the_log_format_and_the_status_socket() {
        let (cfg, _) = parse(&[]);
        assert_eq!((cfg.log_format, cfg.status_socket), (LogFormat::Text, None));
        let (cfg, reports) = parse(&[(LOG_FORMAT, " JSON "), (STATUS_SOCKET, "/run/p11ha/")]);
        assert_eq!(reports, 0);
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.status_socket.as_deref(), Some("/run/p11ha/"));
        let (cfg, reports) = parse(&[(LOG_FORMAT, "json"), (LOG_FORMAT, "xml")]);
        assert_eq!((reports, cfg.log_format), (1, LogFormat::Text));
    }

    #[test]
    fn file_lines_comments_and_precedence() {
        let mut cfg = HostConfig::default();
        let mut reports = 0;
        let mut bad_line = false;
        cfg.apply_file(
            "# comment\n\nET_PTKC_GENERAL_LIBRARY_MODE = WLD\nsecret 1234\nP11HA_TYPO=1\n",
            &mut |e| {
                reports += 1;
                if let Event::BadConfig { key, problem, .. } = e {
                    // The bad line is named by number, never echoed.
                    bad_line |= *key == CONF && *problem == "line 4 is not KEY=VALUE";
                }
            },
        );
        assert_eq!((cfg.core.mode, reports, bad_line), (Mode::Wld, 2, true));
        // The environment is applied after the file and wins.
        cfg.apply("ET_PTKC_GENERAL_LIBRARY_MODE", "HA", &mut |_| reports += 1);
        assert_eq!(cfg.core.mode, Mode::Ha);
        // Unrelated variables are not items and are never reported.
        assert!(!HostConfig::is_item("HOME"));
    }
}
