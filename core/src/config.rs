//! The configuration the core runs with: the mode, the virtual slots, the
//! recovery schedule and the data length limit, under PTK's item names so
//! that a ProtectToolkit-C setup carries over.
//!
//! Only what the core itself uses is here. Where members come from (module
//! paths, server addresses), their deadlines, the log file and fault
//! injection are the platform's: `libp11ha.so` keeps them in its own
//! configuration, which hands the core items to [`Config::apply`]; a
//! firmware writes its [`Config`] as a `static` with the `const`
//! constructors below.
//!
//! A bad value is reported through the `report` callback with the fallback
//! that is used instead, and never stops the library: PTK itself falls back
//! to NORMAL mode on an undefined or invalid mode.

use crate::event::Event;

/// How many `ET_PTKC_WLD_SLOT_<n>` items are kept, and the largest `n + 1`.
pub const MAX_WLD_SLOTS: usize = 16;

/// The largest `ET_PTKC_HA_RECOVER_DELAY` accepted, in minutes.
pub const MAX_RECOVER_DELAY_MINUTES: u32 = 10_000_000;

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
    pub const fn is_virtual(self) -> bool {
        matches!(self, Mode::Wld | Mode::Ha)
    }
}

/// A token label as PKCS#11 stores it: 32 bytes, blank-padded.
pub type Label = [u8; 32];

/// Pads `text` to a token label. `None` if it is longer than 32 bytes.
pub const fn label(text: &str) -> Option<Label> {
    let bytes = text.as_bytes();
    if bytes.len() > 32 {
        return None;
    }
    let mut out = [b' '; 32];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
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

/// The configured virtual slots, sorted by id, each id once: a fixed array,
/// so that a [`Config`] is `Copy` and can be built in a `const`.
#[derive(Clone, Copy, Debug)]
pub struct WldSlots {
    slots: [WldSlot; MAX_WLD_SLOTS],
    len: usize,
}

impl WldSlots {
    /// None.
    pub const fn new() -> Self {
        WldSlots {
            slots: [WldSlot {
                id: 0,
                label: [b' '; 32],
            }; MAX_WLD_SLOTS],
            len: 0,
        }
    }

    /// With virtual slot `id` showing the tokens labelled `text` (replacing
    /// a slot of that id). For `const` configurations: it panics, at
    /// compile time there, if `id` is not below [`MAX_WLD_SLOTS`] or `text`
    /// is longer than 32 bytes. [`Config::apply`] checks and reports
    /// instead.
    pub const fn with(mut self, id: u64, text: &str) -> Self {
        assert!(id < MAX_WLD_SLOTS as u64, "a virtual slot id is below 16");
        let Some(label) = label(text) else {
            panic!("a token label is at most 32 bytes");
        };
        self.insert(WldSlot { id, label });
        self
    }

    /// Adds `slot`, or replaces the slot of its id. Ids are below
    /// [`MAX_WLD_SLOTS`], so there is always room.
    const fn insert(&mut self, slot: WldSlot) {
        let mut at = 0;
        while at < self.len && self.slots[at].id < slot.id {
            at += 1;
        }
        if at < self.len && self.slots[at].id == slot.id {
            self.slots[at] = slot;
            return;
        }
        let mut i = self.len;
        while i > at {
            self.slots[i] = self.slots[i - 1];
            i -= 1;
        }
        self.slots[at] = slot;
        self.len += 1;
    }

    fn remove(&mut self, id: u64) {
        if let Some(at) = self.as_slice().iter().position(|s| s.id == id) {
            self.slots.copy_within(at + 1..self.len, at);
            self.len -= 1;
        }
    }

    /// The slots, sorted by id.
    pub fn as_slice(&self) -> &[WldSlot] {
        &self.slots[..self.len]
    }

    /// The label of virtual slot `id`.
    pub fn label(&self, id: u64) -> Option<&Label> {
        self.as_slice()
            .iter()
            .find(|s| s.id == id)
            .map(|s| &s.label)
    }
}

impl Default for WldSlots {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for WldSlots {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for WldSlots {}

/// What the core runs with.
///
/// ```
/// use p11ha_core::config::{Config, Mode, WldSlots};
/// // HA over the tokens labelled "TokName", failed members never retried,
/// // at most 512 bytes of Update data kept per operation.
/// static CONFIG: Config = Config {
///     mode: Mode::Ha,
///     wld_slots: WldSlots::new().with(0, "TokName"),
///     recover_delay_minutes: 0,
///     update_limit: Some(512),
///     ..Config::new()
/// };
/// assert_eq!(CONFIG.recover_delay(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `ET_PTKC_GENERAL_LIBRARY_MODE`.
    pub mode: Mode,
    /// `ET_PTKC_WLD_SLOT_<n>`.
    pub wld_slots: WldSlots,
    /// `ET_PTKC_HA_RECOVER_DELAY`, minutes (0: never try). Default 1.
    pub recover_delay_minutes: u32,
    /// `P11HA_HA_RECOVER_DELAY_MS`: the delay in milliseconds, overriding
    /// the minutes when set (0: never try).
    pub recover_delay_ms: Option<u64>,
    /// `ET_PTKC_HA_RECOVER_WAIT=YES`: hold application threads while a
    /// failed member's recovery is attempted (see the README).
    pub recover_wait: bool,
    /// `P11HA_HA_UPDATE_LIMIT`: bytes of Update data kept per operation,
    /// below the limit the build allows.
    pub update_limit: Option<usize>,
    /// `P11HA_REPLICATION_KEY`: the `CKA_LABEL` of the AES key the operator
    /// provisioned, identically, on every member (WLD and HA mode): a token
    /// key that cannot be made again on another member (a generated one)
    /// reaches them wrapped under it.
    pub replication_key: Option<ObjectLabel>,
    /// `P11HA_TOKEN_KEYS=LOCAL`: a token object that cannot reach every
    /// member stays on the session's member alone (said in the log) instead
    /// of being refused. Default `REPLICATE`.
    pub token_keys_local: bool,
}

/// An object's `CKA_LABEL` as configured: at most 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLabel {
    bytes: [u8; 64],
    len: u8,
}

impl ObjectLabel {
    /// `text` as a label; `None` if it is empty or longer than 64 bytes.
    pub const fn new(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.is_empty() || b.len() > 64 {
            return None;
        }
        let mut bytes = [0u8; 64];
        let mut i = 0;
        while i < b.len() {
            bytes[i] = b[i];
            i += 1;
        }
        Some(ObjectLabel {
            bytes,
            len: b.len() as u8,
        })
    }

    /// The label's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Config {
    /// The defaults: NORMAL mode, no virtual slot, recovery after a minute
    /// by a thread of the platform's, the build's data length limit.
    pub const fn new() -> Self {
        Config {
            mode: Mode::Normal,
            wld_slots: WldSlots::new(),
            recover_delay_minutes: 1,
            recover_delay_ms: None,
            recover_wait: false,
            update_limit: None,
            replication_key: None,
            token_keys_local: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a configuration problem is reported: an [`Event::BadConfig`].
pub type Report<'r> = &'r mut dyn FnMut(&Event<'_>);

const MODE: &str = "ET_PTKC_GENERAL_LIBRARY_MODE";
const WLD_SLOT: &str = "ET_PTKC_WLD_SLOT_";
const RECOVER_DELAY: &str = "ET_PTKC_HA_RECOVER_DELAY";
const RECOVER_DELAY_MS: &str = "P11HA_HA_RECOVER_DELAY_MS";
const RECOVER_WAIT: &str = "ET_PTKC_HA_RECOVER_WAIT";
const UPDATE_LIMIT: &str = "P11HA_HA_UPDATE_LIMIT";
const REPLICATION_KEY: &str = "P11HA_REPLICATION_KEY";
const TOKEN_KEYS: &str = "P11HA_TOKEN_KEYS";

impl Config {
    /// Applies one `key=value` item if it is one of the core's, and says
    /// whether it was (a platform handles its own items, and reports the
    /// keys nobody claims). Later items override earlier ones, so a
    /// platform applies a file first and the environment last.
    pub fn apply(&mut self, key: &str, value: &str, report: Report<'_>) -> bool {
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
        } else if key == RECOVER_DELAY {
            match parse_decimal(value).and_then(|m| u32::try_from(m).ok()) {
                Some(m) if m <= MAX_RECOVER_DELAY_MINUTES => self.recover_delay_minutes = m,
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
            self.recover_wait = flag(key, value, report);
        } else if key == UPDATE_LIMIT {
            match parse_decimal(value).and_then(|n| usize::try_from(n).ok()) {
                Some(n) => self.update_limit = Some(n),
                None => report(&Event::BadConfig {
                    key,
                    problem: "not a number of bytes",
                    fallback: "the build's limit is used",
                }),
            }
        } else if key == REPLICATION_KEY {
            match value {
                "" => self.replication_key = None,
                v => match ObjectLabel::new(v) {
                    Some(l) => self.replication_key = Some(l),
                    None => report(&Event::BadConfig {
                        key,
                        problem: "a key label is at most 64 bytes",
                        fallback: "no replication key: generated token keys are refused \
                                   unless P11HA_TOKEN_KEYS=LOCAL",
                    }),
                },
            }
        } else if key == TOKEN_KEYS {
            self.token_keys_local = match value {
                v if v.eq_ignore_ascii_case("REPLICATE") => false,
                v if v.eq_ignore_ascii_case("LOCAL") => true,
                _ => {
                    report(&Event::BadConfig {
                        key,
                        problem: "not REPLICATE or LOCAL",
                        fallback: "REPLICATE",
                    });
                    false
                }
            };
        } else {
            return false;
        }
        true
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
        self.wld_slots.remove(id);
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
        self.wld_slots.insert(WldSlot { id, label });
    }

    /// How long a failed member stays out before its recovery is tried, in
    /// milliseconds; `None`: never.
    pub fn recover_delay(&self) -> Option<u64> {
        let ms = self
            .recover_delay_ms
            .unwrap_or(u64::from(self.recover_delay_minutes) * 60_000);
        (ms != 0).then_some(ms)
    }
}

/// An item whose value is `YES` or `NO` (in any case); anything else is
/// reported, and means `NO`.
pub fn flag(key: &str, value: &str, report: Report<'_>) -> bool {
    yes_no(value).unwrap_or_else(|| {
        report(&Event::BadConfig {
            key,
            problem: "not YES or NO",
            fallback: "NO",
        });
        false
    })
}

/// `YES` or `NO`, in any case.
pub fn yes_no(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("YES") {
        Some(true)
    } else if s.eq_ignore_ascii_case("NO") {
        Some(false)
    } else {
        None
    }
}

/// A decimal number of at most 19 digits, nothing else.
pub fn parse_decimal(s: &str) -> Option<u64> {
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
            assert!(cfg.apply(k, v, &mut |_| reports += 1), "{k} is the core's");
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
        let ids: heapless::Vec<u64, 4> = cfg.wld_slots.as_slice().iter().map(|s| s.id).collect();
        assert_eq!(&ids[..], &[0, 3]);
        assert_eq!(cfg.wld_slots.label(0), Some(&label("TokName").unwrap()));
        assert_eq!(cfg.wld_slots.label(1), None);
        // A slot given again is replaced; an empty label removes it.
        let (cfg, _) = parse(&[
            ("ET_PTKC_WLD_SLOT_3", "Other"),
            ("ET_PTKC_WLD_SLOT_3", "Third"),
            ("ET_PTKC_WLD_SLOT_5", "Fifth"),
            ("ET_PTKC_WLD_SLOT_5", ""),
        ]);
        assert_eq!(cfg.wld_slots.as_slice().len(), 1);
        assert_eq!(cfg.wld_slots.label(3), Some(&label("Third").unwrap()));
    }

    #[test]
    fn a_const_configuration_is_the_parsed_one() {
        const HA: Config = Config {
            mode: Mode::Ha,
            wld_slots: WldSlots::new().with(3, "Other").with(0, "TokName"),
            recover_delay_minutes: 0,
            update_limit: Some(512),
            ..Config::new()
        };
        let (parsed, reports) = parse(&[
            (MODE, "HA"),
            ("ET_PTKC_WLD_SLOT_3", "Other"),
            ("ET_PTKC_WLD_SLOT_0", "TokName"),
            (RECOVER_DELAY, "0"),
            (UPDATE_LIMIT, "512"),
        ]);
        assert_eq!((HA, 0), (parsed, reports));
    }

    #[test]
    fn ha_items_and_their_defaults() {
        let (cfg, reports) = parse(&[]);
        assert_eq!(reports, 0);
        assert_eq!(cfg.recover_delay(), Some(60_000));
        assert!(!cfg.recover_wait);
        let (cfg, reports) = parse(&[
            ("ET_PTKC_HA_RECOVER_DELAY", "120"),
            ("ET_PTKC_HA_RECOVER_WAIT", "YES"),
            ("P11HA_HA_UPDATE_LIMIT", "4096"),
        ]);
        assert_eq!(reports, 0);
        assert_eq!(cfg.recover_delay(), Some(7_200_000));
        assert!(cfg.recover_wait);
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
            ("P11HA_HA_UPDATE_LIMIT", "-1"),
        ]);
        assert_eq!(reports, 3);
        assert_eq!(cfg.recover_delay(), Some(60_000));
    }

    #[test]
    fn items_of_the_platform_are_not_the_cores() {
        let mut cfg = Config::default();
        for key in ["P11HA_MODULES", "ET_PTKC_HA_LOG_FILE", "HOME", "P11HA_TYPO"] {
            assert!(!cfg.apply(key, "x", &mut |_| panic!("reported {key}")));
        }
        assert_eq!(cfg, Config::default());
    }
}
