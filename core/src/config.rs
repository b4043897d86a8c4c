//! Configuration: PTK's item names, so that a ProtectToolkit-C setup carries
//! over, plus p11ha's own `P11HA_*` items.
//!
//! This module only parses; where the items come from (the environment, a
//! file named by `P11HA_CONF`, a firmware's constants) is the platform's
//! business. A bad value is reported through the `report` callback with the
//! fallback that is used instead, and never stops the library: PTK itself
//! falls back to NORMAL mode on an undefined or invalid mode.

use heapless::{String, Vec};

use crate::event::Event;

/// How many `ET_PTKC_WLD_SLOT_<n>` items are kept, and the largest `n + 1`.
pub const MAX_WLD_SLOTS: usize = 16;
/// How many `P11HA_MODULES` paths are kept.
pub const MAX_MODULES: usize = 8;
/// The longest module path or server address, in bytes.
pub const MAX_PATH: usize = 256;
/// How many `ET_HSM_NETCLIENT_SERVERLIST` addresses are kept.
pub const MAX_SERVERS: usize = 16;
/// The default `P11HA_CONNECT_TIMEOUT_MS`.
pub const CONNECT_TIMEOUT_MS: u32 = 3_000;
/// The default `P11HA_CALL_TIMEOUT_MS`.
pub const CALL_TIMEOUT_MS: u32 = 20_000;
/// The longest deadline accepted (one hour).
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// `ET_PTKC_GENERAL_LIBRARY_MODE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// Every slot of every member appears as it is.
    #[default]
    Normal,
    /// Work load distribution: one virtual slot per configured token label,
    /// sessions spread over the members that carry it.
    Wld,
    /// WLD plus journalled sessions that fail over.
    Ha,
}

impl Mode {
    /// Whether slots are virtual, backed by members grouped by label.
    pub fn is_virtual(self) -> bool {
        matches!(self, Mode::Wld | Mode::Ha)
    }
}

/// A token label as PKCS#11 stores it: 32 bytes, blank-padded.
pub type Label = [u8; 32];

/// Pads `text` to a token label. `None` if it is longer than 32 bytes.
pub fn label(text: &str) -> Option<Label> {
    let bytes = text.as_bytes();
    if bytes.len() > 32 {
        return None;
    }
    let mut out = [b' '; 32];
    out[..bytes.len()].copy_from_slice(bytes);
    Some(out)
}

/// A virtual slot of WLD and HA mode: `ET_PTKC_WLD_SLOT_<id>=<label>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WldSlot {
    /// The virtual slot id the application sees.
    pub id: u64,
    /// The label of the members' tokens.
    pub label: Label,
}

/// The parsed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `ET_PTKC_GENERAL_LIBRARY_MODE`.
    pub mode: Mode,
    /// `ET_PTKC_WLD_SLOT_<n>`, sorted by id.
    pub wld_slots: Vec<WldSlot, MAX_WLD_SLOTS>,
    /// `P11HA_MODULES`: PKCS#11 modules whose slots are members.
    pub modules: Vec<String<MAX_PATH>, MAX_MODULES>,
    /// `ET_HSM_NETCLIENT_SERVERLIST`: remote members, as p11-kit writes
    /// addresses (`unix:path=...`, `tcp:host=...,port=...`). The platform
    /// parses them: this module only splits the list.
    pub servers: Vec<String<MAX_PATH>, MAX_SERVERS>,
    /// `P11HA_CONNECT_TIMEOUT_MS`: how long connecting to a remote member
    /// may take.
    pub connect_timeout_ms: u32,
    /// `P11HA_CALL_TIMEOUT_MS`: how long one call to a remote member
    /// (request and reply) may take before the member is declared failed.
    pub call_timeout_ms: u32,
    /// `P11HA_FAULT_INJECTION=YES`: the platform lets tests make members
    /// fail on command (never set it in production).
    pub fault_injection: bool,
    /// `ET_PTKC_HA_RECOVER_DELAY`, minutes (0: never try). Default 1.
    pub recover_delay_minutes: u32,
    /// `P11HA_HA_RECOVER_DELAY_MS`: the delay in milliseconds, overriding
    /// the minutes when set (0: never try).
    pub recover_delay_ms: Option<u64>,
    /// `ET_PTKC_HA_RECOVER_WAIT=YES`: hold application threads while a
    /// failed member's recovery is attempted (see the README).
    pub recover_wait: bool,
    /// `ET_PTKC_HA_LOG_FILE`. Default `/ptk_halog.log`, as PTK on Linux.
    pub log_file: String<MAX_PATH>,
    /// `ET_PTKC_HA_LOG_NAME`: the application name in each log line.
    /// Default `ptk_cryptoki`, as PTK.
    pub log_name: String<64>,
    /// `P11HA_HA_UPDATE_LIMIT`: bytes of Update data kept per operation,
    /// below the limit the build allows.
    pub update_limit: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Normal,
            wld_slots: Vec::new(),
            modules: Vec::new(),
            servers: Vec::new(),
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            call_timeout_ms: CALL_TIMEOUT_MS,
            fault_injection: false,
            recover_delay_minutes: 1,
            recover_delay_ms: None,
            recover_wait: false,
            log_file: String::try_from("/ptk_halog.log").unwrap_or_default(),
            log_name: String::try_from("ptk_cryptoki").unwrap_or_default(),
            update_limit: None,
        }
    }
}

/// Where a configuration problem is reported: an [`Event::BadConfig`].
pub type Report<'r> = &'r mut dyn FnMut(&Event<'_>);

const MODE: &str = "ET_PTKC_GENERAL_LIBRARY_MODE";
const WLD_SLOT: &str = "ET_PTKC_WLD_SLOT_";
const MODULES: &str = "P11HA_MODULES";
const SERVERS: &str = "ET_HSM_NETCLIENT_SERVERLIST";
const CONNECT_TIMEOUT: &str = "P11HA_CONNECT_TIMEOUT_MS";
const CALL_TIMEOUT: &str = "P11HA_CALL_TIMEOUT_MS";
const FAULT_INJECTION: &str = "P11HA_FAULT_INJECTION";
const RECOVER_DELAY: &str = "ET_PTKC_HA_RECOVER_DELAY";
const RECOVER_DELAY_MS: &str = "P11HA_HA_RECOVER_DELAY_MS";
const RECOVER_WAIT: &str = "ET_PTKC_HA_RECOVER_WAIT";
const LOG_FILE: &str = "ET_PTKC_HA_LOG_FILE";
const LOG_NAME: &str = "ET_PTKC_HA_LOG_NAME";
const UPDATE_LIMIT: &str = "P11HA_HA_UPDATE_LIMIT";
/// Read by the platform (it names the file), accepted here so that it is not
/// reported as unknown.
const CONF: &str = "P11HA_CONF";

impl Config {
    /// Whether `key` is an item this parser looks at (or reports): the
    /// platform passes only those, so that an application's unrelated
    /// environment is never read or echoed.
    pub fn is_item(key: &str) -> bool {
        key.starts_with("ET_PTKC_") || key.starts_with("ET_HSM_") || key.starts_with("P11HA_")
    }

    /// Applies one `key=value` item. Later items override earlier ones, so a
    /// platform applies the file first and the environment last.
    pub fn apply(&mut self, key: &str, value: &str, report: Report<'_>) {
        let value = value.trim();
        if key == MODE {
            self.mode = match value {
                v if v.eq_ignore_ascii_case("NORMAL") => Mode::Normal,
                v if v.eq_ignore_ascii_case("WLD") => Mode::Wld,
                v if v.eq_ignore_ascii_case("HA") => Mode::Ha,
                _ => {
                    report(&Event::BadConfig {
                        key,
                        problem: "not NORMAL, WLD or HA",
                        fallback: "NORMAL mode is used, as PTK does",
                    });
                    Mode::Normal
                }
            };
        } else if let Some(n) = key.strip_prefix(WLD_SLOT) {
            self.apply_wld_slot(key, n, value, report);
        } else if key == MODULES {
            self.apply_modules(key, value, report);
        } else if key == SERVERS {
            self.apply_servers(key, value, report);
        } else if key == CONNECT_TIMEOUT || key == CALL_TIMEOUT {
            let (field, default) = if key == CONNECT_TIMEOUT {
                (&mut self.connect_timeout_ms, "3000 ms")
            } else {
                (&mut self.call_timeout_ms, "20000 ms")
            };
            match parse_decimal(value).filter(|&ms| (1..=MAX_TIMEOUT_MS).contains(&ms)) {
                Some(ms) => *field = ms as u32,
                None => report(&Event::BadConfig {
                    key,
                    problem: "not a number of milliseconds from 1 to 3600000",
                    fallback: default,
                }),
            }
        } else if key == FAULT_INJECTION {
            self.fault_injection = match yes_no(value) {
                Some(v) => v,
                None => {
                    report(&Event::BadConfig {
                        key,
                        problem: "not YES or NO",
                        fallback: "NO",
                    });
                    false
                }
            };
        } else if key == RECOVER_DELAY {
            match parse_decimal(value).and_then(|m| u32::try_from(m).ok()) {
                Some(m) if m <= 10_000_000 => self.recover_delay_minutes = m,
                _ => report(&Event::BadConfig {
                    key,
                    problem: "not a number of minutes",
                    fallback: "the previous value (default 1 minute) is kept",
                }),
            }
        } else if key == RECOVER_DELAY_MS {
            match parse_decimal(value) {
                Some(ms) => self.recover_delay_ms = Some(ms),
                None => report(&Event::BadConfig {
                    key,
                    problem: "not a number of milliseconds",
                    fallback: "ET_PTKC_HA_RECOVER_DELAY is used",
                }),
            }
        } else if key == RECOVER_WAIT {
            self.recover_wait = match yes_no(value) {
                Some(v) => v,
                None => {
                    report(&Event::BadConfig {
                        key,
                        problem: "not YES or NO",
                        fallback: "NO",
                    });
                    false
                }
            };
        } else if key == LOG_FILE {
            match String::try_from(value) {
                Ok(path) if !value.is_empty() => self.log_file = path,
                _ => report(&Event::BadConfig {
                    key,
                    problem: "empty or longer than 256 bytes",
                    fallback: "the log goes to /ptk_halog.log",
                }),
            }
        } else if key == LOG_NAME {
            match String::try_from(value) {
                Ok(name) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic()) => {
                    self.log_name = name
                }
                _ => report(&Event::BadConfig {
                    key,
                    problem: "not 1 to 64 printable characters without spaces",
                    fallback: "ptk_cryptoki is used",
                }),
            }
        } else if key == UPDATE_LIMIT {
            match parse_decimal(value).and_then(|n| usize::try_from(n).ok()) {
                Some(n) => self.update_limit = Some(n),
                None => report(&Event::BadConfig {
                    key,
                    problem: "not a number of bytes",
                    fallback: "the build's limit is used",
                }),
            }
        } else if key == CONF {
            // The platform's: it names the file these items come from.
        } else if Self::is_item(key) {
            report(&Event::BadConfig {
                key,
                problem: "not an item p11ha knows",
                fallback: "ignored",
            });
        }
    }

    fn apply_wld_slot(&mut self, key: &str, n: &str, value: &str, report: Report<'_>) {
        let id = match parse_decimal(n) {
            Some(id) if id < MAX_WLD_SLOTS as u64 => id,
            _ => {
                report(&Event::BadConfig {
                    key,
                    problem: "the slot number is not a decimal number below 16",
                    fallback: "this slot is ignored",
                });
                return;
            }
        };
        self.wld_slots.retain(|s| s.id != id);
        if value.is_empty() {
            return;
        }
        let Some(label) = label(value) else {
            report(&Event::BadConfig {
                key,
                problem: "a token label is at most 32 bytes",
                fallback: "this slot is ignored",
            });
            return;
        };
        // Capacity is MAX_WLD_SLOTS and ids are below it, so this fits.
        let at = self.wld_slots.partition_point(|s| s.id < id);
        let _ = self.wld_slots.insert(at, WldSlot { id, label });
    }

    fn apply_modules(&mut self, key: &str, value: &str, report: Report<'_>) {
        self.modules.clear();
        for path in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Ok(path) = String::try_from(path) else {
                report(&Event::BadConfig {
                    key,
                    problem: "a module path is longer than 256 bytes",
                    fallback: "that module is not loaded",
                });
                continue;
            };
            if self.modules.push(path).is_err() {
                report(&Event::BadConfig {
                    key,
                    problem: "more than 8 modules",
                    fallback: "the modules after the eighth are not loaded",
                });
                return;
            }
        }
    }

    fn apply_servers(&mut self, key: &str, value: &str, report: Report<'_>) {
        self.servers.clear();
        for address in value.split_ascii_whitespace() {
            let Ok(address) = String::try_from(address) else {
                report(&Event::BadConfig {
                    key,
                    problem: "an address is longer than 256 bytes",
                    fallback: "that server is not a member",
                });
                continue;
            };
            if self.servers.push(address).is_err() {
                report(&Event::BadConfig {
                    key,
                    problem: "more than 16 servers",
                    fallback: "the servers after the sixteenth are not members",
                });
                return;
            }
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
                _ => {
                    let mut problem = String::<64>::new();
                    let _ = core::fmt::write(
                        &mut problem,
                        format_args!("line {} is not KEY=VALUE", number + 1),
                    );
                    report(&Event::BadConfig {
                        key: CONF,
                        problem: &problem,
                        fallback: "the line is ignored",
                    })
                }
            }
        }
    }

    /// How long a failed member stays out before its recovery is tried, in
    /// milliseconds; `None`: never.
    pub fn recover_delay(&self) -> Option<u64> {
        let ms = self
            .recover_delay_ms
            .unwrap_or(u64::from(self.recover_delay_minutes) * 60_000);
        (ms != 0).then_some(ms)
    }

    /// The configured label of virtual slot `id`, in WLD and HA mode.
    pub fn wld_label(&self, id: u64) -> Option<&Label> {
        self.wld_slots.iter().find(|s| s.id == id).map(|s| &s.label)
    }
}

fn yes_no(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("YES") {
        Some(true)
    } else if s.eq_ignore_ascii_case("NO") {
        Some(false)
    } else {
        None
    }
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(items: &[(&str, &str)]) -> (Config, usize) {
        let mut cfg = Config::default();
        let mut reports = 0;
        for (k, v) in items {
            cfg.apply(k, v, &mut |_| reports += 1);
        }
        (cfg, reports)
    }

    #[test]
    fn mode_falls_back_to_normal_as_ptk_does() {
        assert_eq!(parse(&[]).0.mode, Mode::Normal);
        assert_eq!(parse(&[(MODE, "WLD")]), (parse(&[(MODE, "wld")]).0, 0));
        assert_eq!(parse(&[(MODE, " HA ")]).0.mode, Mode::Ha);
        let (cfg, reports) = parse(&[(MODE, "HA"), (MODE, "FAST")]);
        assert_eq!((cfg.mode, reports), (Mode::Normal, 1));
    }

    #[test]
    fn wld_slots_are_sorted_and_checked() {
        let (cfg, reports) = parse(&[
            ("ET_PTKC_WLD_SLOT_3", "Other"),
            ("ET_PTKC_WLD_SLOT_0", "TokName"),
            ("ET_PTKC_WLD_SLOT_16", "TooHigh"),
            ("ET_PTKC_WLD_SLOT_x", "NotANumber"),
            (
                "ET_PTKC_WLD_SLOT_1",
                "a label that is much longer than 32 bytes",
            ),
        ]);
        assert_eq!(reports, 3);
        let ids: Vec<u64, 4> = cfg.wld_slots.iter().map(|s| s.id).collect();
        assert_eq!(&ids[..], &[0, 3]);
        assert_eq!(cfg.wld_label(0), Some(&label("TokName").unwrap()));
        assert_eq!(cfg.wld_label(1), None);
    }

    #[test]
    fn ha_items_and_their_defaults() {
        let (cfg, reports) = parse(&[]);
        assert_eq!(reports, 0);
        assert_eq!(cfg.recover_delay(), Some(60_000));
        assert!(!cfg.recover_wait);
        assert_eq!(
            (cfg.log_file.as_str(), cfg.log_name.as_str()),
            ("/ptk_halog.log", "ptk_cryptoki")
        );
        let (cfg, reports) = parse(&[
            ("ET_PTKC_HA_RECOVER_DELAY", "120"),
            ("ET_PTKC_HA_RECOVER_WAIT", "YES"),
            ("ET_PTKC_HA_LOG_FILE", "/tmp/hsm_log.log"),
            ("ET_PTKC_HA_LOG_NAME", "myapp"),
            ("P11HA_HA_UPDATE_LIMIT", "4096"),
        ]);
        assert_eq!(reports, 0);
        assert_eq!(cfg.recover_delay(), Some(7_200_000));
        assert!(cfg.recover_wait);
        assert_eq!(cfg.log_file, "/tmp/hsm_log.log");
        assert_eq!(cfg.log_name, "myapp");
        assert_eq!(cfg.update_limit, Some(4096));
        let (cfg, _) = parse(&[("ET_PTKC_HA_RECOVER_DELAY", "0")]);
        assert_eq!(cfg.recover_delay(), None, "0 means never");
        let (cfg, _) = parse(&[
            ("ET_PTKC_HA_RECOVER_DELAY", "0"),
            ("P11HA_HA_RECOVER_DELAY_MS", "250"),
        ]);
        assert_eq!(cfg.recover_delay(), Some(250), "milliseconds win");
        let (cfg, reports) = parse(&[
            ("ET_PTKC_HA_RECOVER_DELAY", "soon"),
            ("ET_PTKC_HA_RECOVER_WAIT", "maybe"),
            ("ET_PTKC_HA_LOG_NAME", "two words"),
            ("P11HA_HA_UPDATE_LIMIT", "-1"),
        ]);
        assert_eq!(reports, 4);
        assert_eq!(cfg.recover_delay(), Some(60_000));
        assert_eq!(cfg.log_name, "ptk_cryptoki");
    }

    #[test]
    fn modules_split_on_semicolons() {
        let (cfg, reports) = parse(&[(MODULES, " /a.so ;; /b.so;")]);
        assert_eq!(reports, 0);
        assert_eq!(cfg.modules.len(), 2);
        assert_eq!(cfg.modules[1], "/b.so");
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
    fn file_lines_comments_and_precedence() {
        let mut cfg = Config::default();
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
        assert_eq!((cfg.mode, reports, bad_line), (Mode::Wld, 2, true));
        // The environment is applied after the file and wins.
        cfg.apply(MODE, "HA", &mut |_| reports += 1);
        assert_eq!(cfg.mode, Mode::Ha);
        // Unrelated variables are not items and are never reported.
        assert!(!Config::is_item("HOME"));
    }
}
