//! The members of a configuration, reached one by one as `libp11ha.so`
//! reaches them at `C_Initialize` (`ffi/src/runtime/members.rs`): every
//! token of every server of `ET_HSM_NETCLIENT_SERVERLIST`, in list order,
//! each over a connection of its own with the same deadlines, then every
//! slot of every module of `P11HA_MODULES`. A member is numbered (its
//! `hsmIdx` in the HA log) when the library would take it: in WLD and HA
//! mode when its token carries the label of a configured virtual slot, in
//! NORMAL mode always.

use std::time::{Duration, Instant};

use libp11ha::config::HostConfig;
use libp11ha::host::{Locking, Remote};
use libp11ha::runtime::capacity;
use p11ha_adapters::either::Either;
use p11ha_adapters::module::{Module, ModuleMember};
use p11ha_adapters::net::{Address, NetConnector};
use p11ha_adapters::rpc::RpcMember;
use p11ha_core::config::Mode;
use p11ha_core::port::{Member as _, TokenInfo};
use p11ha_core::{Error, Result};

/// A member as the library sees it.
pub type Member = Either<ModuleMember, Remote>;

/// Where a member is.
#[derive(Clone, Debug)]
pub enum Place {
    /// Token `token` of server `server` (its position in the list).
    Server {
        server: usize,
        address: String,
        token: usize,
    },
    /// Slot `slot` of a module (`None`: the module could not be used).
    Module { path: String, slot: Option<u64> },
}

impl Place {
    /// One line: `unix:path=/run/a.sock token 0`, `/usr/lib/x.so slot 0x11`.
    pub fn describe(&self) -> String {
        match self {
            Place::Server { address, token, .. } => format!("{address} token {token}"),
            Place::Module {
                path,
                slot: Some(s),
            } => format!("{path} slot {s:#x}"),
            Place::Module { path, slot: None } => path.clone(),
        }
    }
}

/// One member found, reached or not.
pub struct Found {
    pub place: Place,
    /// The member, if it was reached.
    pub member: Option<Member>,
    /// Its token, and how long `C_GetTokenInfo` took, or why not.
    pub token: std::result::Result<(TokenInfo, Duration), String>,
    /// `hsmIdx`, if the library would take it as a member.
    pub index: Option<usize>,
    /// The (virtual) slot it serves.
    pub slot: Option<u64>,
    /// It missed token writes (`P11HA_STATE_DIR` says so): the library
    /// holds it out until it is synced.
    pub needs_sync: bool,
}

impl Found {
    /// Reached, and not held out for a sync: it would serve.
    pub fn up(&self) -> bool {
        self.token.is_ok() && !self.needs_sync
    }
}

/// Every member of `cfg`. A module stays loaded while a member of it
/// lives; when the last goes, it is finalised and unloaded.
pub struct Members {
    pub found: Vec<Found>,
}

/// Says what a member's error was.
pub fn error_text(e: Error) -> String {
    match e {
        Error::Transport(t) => t.to_string(),
        e => format!("answered {}", e.rv()),
    }
}

/// Reaches every configured member. A server address that does not parse
/// is a configuration error (the library reports it and skips it).
pub fn reach(cfg: &HostConfig) -> std::result::Result<Members, String> {
    let mut connectors = Vec::new();
    for (i, text) in cfg.servers.iter().enumerate() {
        let address: Address = text
            .parse()
            .map_err(|e| format!("ET_HSM_NETCLIENT_SERVERLIST: server {i}: {e}"))?;
        connectors.push(NetConnector::new(
            address,
            Duration::from_millis(cfg.connect_timeout_ms.into()),
            Duration::from_millis(cfg.call_timeout_ms.into()),
        ));
    }
    // The servers are reached at once, each in a thread of its own, so
    // that frozen ones cost one deadline together rather than one each;
    // their members are listed in list order all the same.
    let mut found: Vec<Found> = std::thread::scope(|scope| {
        let threads: Vec<_> = connectors
            .iter()
            .enumerate()
            .map(|(i, connector)| {
                let text = &cfg.servers[i];
                scope.spawn(move || server(i, text, connector))
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    });
    for path in &cfg.modules {
        let place = |slot| Place::Module {
            path: path.clone(),
            slot,
        };
        let module = match Module::load(path) {
            Ok(m) => m,
            Err(e) => {
                found.push(down(place(None), e.to_string()));
                continue;
            }
        };
        if let Err(e) = module.initialize() {
            found.push(down(place(None), format!("C_Initialize {}", error_text(e))));
            continue;
        }
        match module.slots(false) {
            Ok(slots) => {
                for slot in slots {
                    found.push(match module.member(slot) {
                        Ok(m) => reached(place(Some(slot)), Either::A(m)),
                        Err(e) => down(place(Some(slot)), error_text(e)),
                    });
                }
            }
            Err(e) => found.push(down(
                place(None),
                format!("C_GetSlotList {}", error_text(e)),
            )),
        }
    }
    number(cfg, &mut found);
    // What the library's state directory says of each member's writes.
    if cfg.state_dir.is_some() {
        let (state, _) = libp11ha::syncstate::SyncState::new(cfg.state_dir.as_deref());
        for f in &mut found {
            if let (Some(index), Ok((info, _))) = (f.index, &f.token) {
                f.needs_sync = state.joined(index, &info.label, &info.serial);
            }
        }
    }
    Ok(Members { found })
}

/// The tokens of server `i`, each over a connection of its own.
fn server(i: usize, text: &str, connector: &NetConnector) -> Vec<Found> {
    let place = |token| Place::Server {
        server: i,
        address: text.to_string(),
        token,
    };
    let mut found = Vec::new();
    match connect(connector, 0) {
        Ok((first, tokens)) => {
            found.push(reached(place(0), Either::B(first)));
            for token in 1..tokens {
                found.push(match connect(connector, token) {
                    Ok((m, _)) => reached(place(token), Either::B(m)),
                    Err(e) => down(place(token), error_text(e)),
                });
            }
        }
        Err(e) => found.push(down(place(0), error_text(e))),
    }
    found
}

fn connect(connector: &NetConnector, index: usize) -> Result<(Remote, usize)> {
    // One call at a time: the tool makes one call per member at once.
    let buf = vec![0u8; capacity::RPC_BUFFER].into_boxed_slice();
    RpcMember::connect(connector.clone(), || Locking::Os.make(), [buf], index)
}

/// A member reached: its token, with one `C_GetTokenInfo` timed.
fn reached(place: Place, member: Member) -> Found {
    let t = Instant::now();
    let token = member
        .token_info()
        .map(|info| (info, t.elapsed()))
        .map_err(|e| format!("C_GetTokenInfo {}", error_text(e)));
    Found {
        place,
        member: Some(member),
        token,
        index: None,
        slot: None,
        needs_sync: false,
    }
}

fn down(place: Place, error: String) -> Found {
    Found {
        place,
        member: None,
        token: Err(error),
        index: None,
        slot: None,
        needs_sync: false,
    }
}

/// Numbers the members as the engine's `add_member` does: in WLD and HA
/// mode a token whose label is a configured slot's joins that slot; in
/// NORMAL mode every slot reached is a slot of its own, numbered in order.
fn number(cfg: &HostConfig, found: &mut [Found]) {
    let mut next = 0;
    for f in found.iter_mut() {
        if f.member.is_none() {
            continue;
        }
        let slot = if cfg.core.mode == Mode::Normal {
            Some(next as u64)
        } else {
            f.token.as_ref().ok().and_then(|(info, _)| {
                cfg.core
                    .wld_slots
                    .as_slice()
                    .iter()
                    .find(|s| s.label == info.label)
                    .map(|s| s.id)
            })
        };
        if let Some(slot) = slot {
            f.index = Some(next);
            f.slot = Some(slot);
            next += 1;
        }
    }
}

/// Blank-padded text as a string, trailing blanks (and NULs) dropped.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .to_string()
}
