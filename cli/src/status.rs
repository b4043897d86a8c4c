//! `p11ha status`: each slot and its members, up or not, with their tokens
//! and a round-trip time measured now.

use libp11ha::config::HostConfig;
use p11ha_core::config::Mode;

use crate::json;
use crate::members::{Found, Members, Place, text};

/// A slot as the status shows it: its id, its configured label (WLD/HA)
/// and the positions of its members in `Members::found`.
pub struct SlotView {
    pub id: u64,
    pub label: Option<String>,
    pub members: Vec<usize>,
}

impl SlotView {
    pub fn up(&self, m: &Members) -> usize {
        self.members.iter().filter(|&&i| m.found[i].up()).count()
    }
}

/// The slots of the configuration: in WLD and HA mode each configured
/// virtual slot (with or without members); in NORMAL mode each slot
/// reached.
pub fn slots(cfg: &HostConfig, m: &Members) -> Vec<SlotView> {
    let of = |id: u64| -> Vec<usize> {
        (0..m.found.len())
            .filter(|&i| m.found[i].slot == Some(id))
            .collect()
    };
    if cfg.core.mode == Mode::Normal {
        m.found
            .iter()
            .filter_map(|f| f.slot)
            .map(|id| SlotView {
                id,
                label: None,
                members: of(id),
            })
            .collect()
    } else {
        cfg.core
            .wld_slots
            .as_slice()
            .iter()
            .map(|s| SlotView {
                id: s.id,
                label: Some(text(&s.label)),
                members: of(s.id),
            })
            .collect()
    }
}

/// The members that serve no slot: not reached (their token and so their
/// slot unknown), or with a token no configured slot names.
pub fn others(m: &Members) -> Vec<usize> {
    (0..m.found.len())
        .filter(|&i| m.found[i].slot.is_none())
        .collect()
}

/// The exit status: 1 if a configured virtual slot (WLD/HA) has no member
/// up, or in NORMAL mode if no slot is up; 0 otherwise.
pub fn exit_status(cfg: &HostConfig, m: &Members, views: &[SlotView]) -> i32 {
    let bad = if cfg.core.mode == Mode::Normal {
        views.iter().all(|v| v.up(m) == 0)
    } else {
        views.iter().any(|v| v.up(m) == 0)
    };
    i32::from(bad)
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Normal => "NORMAL",
        Mode::Wld => "WLD",
        Mode::Ha => "HA",
    }
}

/// The login p11ha would use on the member, from its token's flags: none
/// (no login required), the user PIN (kept from the application's
/// `C_Login`), the protected path (the HSM asks for it), or none possible
/// yet (the user PIN is not initialised).
pub fn login_state(info: &p11ha_core::port::TokenInfo) -> &'static str {
    use p11ha_core::ck::flags;
    if info.flags & flags::LOGIN_REQUIRED == 0 {
        "none needed"
    } else if info.flags & flags::PROTECTED_AUTHENTICATION_PATH != 0 {
        "protected path"
    } else if info.flags & flags::USER_PIN_INITIALIZED == 0 {
        "user PIN not set"
    } else {
        "user PIN"
    }
}

fn latency_ms(f: &Found) -> Option<f64> {
    f.token
        .as_ref()
        .ok()
        .map(|(_, d)| (d.as_secs_f64() * 1e6).round() / 1e3)
}

/// The human-readable table.
pub fn table(cfg: &HostConfig, m: &Members) -> String {
    let mut out = format!(
        "mode {}, connect timeout {} ms, call timeout {} ms\n",
        mode_name(cfg.core.mode),
        cfg.connect_timeout_ms,
        cfg.call_timeout_ms
    );
    let views = slots(cfg, m);
    if views.is_empty() {
        out.push_str("no slot\n");
    }
    for v in &views {
        let label = v
            .label
            .as_ref()
            .map(|l| format!(" \"{l}\""))
            .unwrap_or_default();
        out.push_str(&format!(
            "\nslot {}{label}: {} of {} members up\n",
            v.id,
            v.up(m),
            v.members.len()
        ));
        rows(&mut out, m, &v.members);
    }
    let others = others(m);
    if !others.is_empty() {
        out.push_str("\nnot a member of any slot (not reached, or a token no slot names):\n");
        rows(&mut out, m, &others);
    }
    out
}

fn rows(out: &mut String, m: &Members, which: &[usize]) {
    if which.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    out.push_str(&format!(
        "  {:<6} {:<4} {:<44} {:<16} {:<16} {:<16} {:<8} {:<16} {}\n",
        "hsmIdx", "up", "where", "label", "serial", "model", "firmware", "login", "latency"
    ));
    for &i in which {
        let f = &m.found[i];
        let idx = f.index.map_or("-".into(), |i| i.to_string());
        match &f.token {
            Ok((info, d)) => out.push_str(&format!(
                "  {:<6} {:<4} {:<44} {:<16} {:<16} {:<16} {:<8} {:<16} {:.3} ms{}\n",
                idx,
                if f.needs_sync { "no" } else { "yes" },
                f.place.describe(),
                text(&info.label),
                text(&info.serial),
                text(&info.model),
                format!(
                    "{}.{}",
                    info.firmware_version.major, info.firmware_version.minor
                ),
                login_state(info),
                d.as_secs_f64() * 1e3,
                if f.needs_sync {
                    "  needs sync: it missed token writes (P11HA_STATE_DIR)"
                } else {
                    ""
                }
            )),
            Err(e) => out.push_str(&format!(
                "  {:<6} {:<4} {:<44} {e}\n",
                idx,
                "no",
                f.place.describe()
            )),
        }
    }
}

/// One member as JSON.
fn member_json(f: &Found) -> String {
    let (kind, server, address, token, path, slot_id) = match &f.place {
        Place::Server {
            server,
            address,
            token,
        } => (
            "server",
            Some(*server),
            Some(address.as_str()),
            Some(*token),
            None,
            None,
        ),
        Place::Module { path, slot } => ("module", None, None, None, Some(path.as_str()), *slot),
    };
    let info = f.token.as_ref().ok().map(|(i, _)| i);
    let field = |get: fn(&p11ha_core::port::TokenInfo) -> String| -> String {
        json::opt_string(info.map(get).as_deref())
    };
    json::object(&[
        ("index", json::opt(f.index)),
        ("slot", json::opt(f.slot)),
        ("kind", json::string(kind)),
        ("where", json::string(&f.place.describe())),
        ("server", json::opt(server)),
        ("address", json::opt_string(address)),
        ("token", json::opt(token)),
        ("module", json::opt_string(path)),
        ("slot_id", json::opt(slot_id)),
        ("up", f.up().to_string()),
        ("needs_sync", f.needs_sync.to_string()),
        (
            "error",
            json::opt_string(f.token.as_ref().err().map(String::as_str)),
        ),
        ("label", field(|i| text(&i.label))),
        ("serial", field(|i| text(&i.serial))),
        ("model", field(|i| text(&i.model))),
        ("manufacturer", field(|i| text(&i.manufacturer))),
        (
            "firmware",
            field(|i| format!("{}.{}", i.firmware_version.major, i.firmware_version.minor)),
        ),
        ("login", json::opt_string(info.map(login_state))),
        ("latency_ms", json::opt(latency_ms(f))),
    ])
}

/// The status as one JSON object.
pub fn to_json(cfg: &HostConfig, m: &Members, status: i32) -> String {
    let views = slots(cfg, m);
    let slots: Vec<String> = views
        .iter()
        .map(|v| {
            json::object(&[
                ("slot", v.id.to_string()),
                ("label", json::opt_string(v.label.as_deref())),
                ("members_up", v.up(m).to_string()),
                (
                    "members",
                    json::array(
                        &v.members
                            .iter()
                            .map(|&i| member_json(&m.found[i]))
                            .collect::<Vec<_>>(),
                    ),
                ),
            ])
        })
        .collect();
    let others: Vec<String> = others(m)
        .into_iter()
        .map(|i| member_json(&m.found[i]))
        .collect();
    json::object(&[
        ("mode", json::string(mode_name(cfg.core.mode))),
        ("connect_timeout_ms", cfg.connect_timeout_ms.to_string()),
        ("call_timeout_ms", cfg.call_timeout_ms.to_string()),
        ("slots", json::array(&slots)),
        ("others", json::array(&others)),
        ("ok", (status == 0).to_string()),
        ("exit_status", status.to_string()),
    ])
}
