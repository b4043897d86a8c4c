//! `p11ha status --live`: each running application's own view, read from
//! the sockets its library serves (`P11HA_STATUS_SOCKET`), beside the
//! configured one.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::json;

/// How long one application may take to answer.
const DEADLINE: Duration = Duration::from_secs(2);

/// What one application's library said of its members.
pub struct Live {
    pub socket: PathBuf,
    /// Per member index: up, sessions, calls in flight, needs sync,
    /// failures, recoveries.
    pub members: BTreeMap<u64, [u64; 6]>,
    /// failovers, replays incomplete, session moves, token writes.
    pub totals: [u64; 4],
    /// Why it could not be read.
    pub error: Option<String>,
}

const MEMBER: [&str; 6] = [
    "p11ha_member_up",
    "p11ha_member_sessions",
    "p11ha_member_calls_in_flight",
    "p11ha_member_needs_sync",
    "p11ha_member_failures_total",
    "p11ha_member_recoveries_total",
];
const TOTALS: [&str; 4] = [
    "p11ha_failovers_total",
    "p11ha_replays_incomplete_total",
    "p11ha_session_moves_total",
    "p11ha_token_writes_total",
];

/// The sockets `P11HA_STATUS_SOCKET` names: the path itself, or (a
/// directory, ending in `/`) each `*.sock` in it.
pub fn sockets(setting: &str) -> Vec<PathBuf> {
    if !setting.ends_with('/') {
        return vec![PathBuf::from(setting)];
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(setting)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Reads one application's state.
pub fn read(socket: &Path) -> Live {
    let mut live = Live {
        socket: socket.to_path_buf(),
        members: BTreeMap::new(),
        totals: [0; 4],
        error: None,
    };
    let text = (|| {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(DEADLINE))?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok::<_, std::io::Error>(text)
    })();
    let text = match text {
        Ok(t) if t.ends_with("# EOF\n") => t,
        Ok(_) => {
            live.error = Some("the answer was cut short".into());
            return live;
        }
        Err(e) => {
            live.error = Some(format!("not answering ({e}): no application serves it"));
            return live;
        }
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((sample, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        let (name, labels) = sample.split_once('{').unwrap_or((sample, ""));
        if let Some(k) = MEMBER.iter().position(|&m| m == name) {
            let member = labels
                .strip_prefix("member=\"")
                .and_then(|r| r.split('"').next())
                .and_then(|m| m.parse().ok());
            if let Some(m) = member {
                live.members.entry(m).or_insert([0; 6])[k] = value;
            }
        } else if let Some(k) = TOTALS.iter().position(|&t| t == name) {
            live.totals[k] = value;
        }
    }
    live
}

/// The live views as a table.
pub fn table(all: &[Live]) -> String {
    let mut out = String::new();
    if all.is_empty() {
        out.push_str("\nlive: no application's socket found (P11HA_STATUS_SOCKET)\n");
    }
    for l in all {
        out.push_str(&format!("\nlive: {}", l.socket.display()));
        if let Some(e) = &l.error {
            out.push_str(&format!(": {e}\n"));
            continue;
        }
        let [failovers, incomplete, moves, writes] = l.totals;
        out.push_str(&format!(
            "\n  failovers {failovers}, replays incomplete {incomplete}, session moves {moves}, \
             token writes {writes}\n  {:<6} {:<4} {:>8} {:>9} {:>10} {:>8} {:>10}\n",
            "hsmIdx", "up", "sessions", "in flight", "needs sync", "failures", "recoveries"
        ));
        for (m, [up, sessions, flight, sync, failures, recoveries]) in &l.members {
            out.push_str(&format!(
                "  {:<6} {:<4} {:>8} {:>9} {:>10} {:>8} {:>10}\n",
                m,
                if *up == 1 { "yes" } else { "no" },
                sessions,
                flight,
                if *sync == 1 { "yes" } else { "no" },
                failures,
                recoveries
            ));
        }
    }
    out
}

/// The live views as a JSON array.
pub fn to_json(all: &[Live]) -> String {
    let items: Vec<String> = all
        .iter()
        .map(|l| {
            let members: Vec<String> = l
                .members
                .iter()
                .map(|(m, v)| {
                    json::object(&[
                        ("index", m.to_string()),
                        ("up", (v[0] == 1).to_string()),
                        ("sessions", v[1].to_string()),
                        ("calls_in_flight", v[2].to_string()),
                        ("needs_sync", (v[3] == 1).to_string()),
                        ("failures", v[4].to_string()),
                        ("recoveries", v[5].to_string()),
                    ])
                })
                .collect();
            json::object(&[
                ("socket", json::string(&l.socket.display().to_string())),
                ("error", json::opt_string(l.error.as_deref())),
                ("failovers", l.totals[0].to_string()),
                ("replays_incomplete", l.totals[1].to_string()),
                ("session_moves", l.totals[2].to_string()),
                ("token_writes", l.totals[3].to_string()),
                ("members", json::array(&members)),
            ])
        })
        .collect();
    json::array(&items)
}
