//! The members of the runtime: the slots of the modules in
//! `P11HA_MODULES` and the tokens of the servers in
//! `ET_HSM_NETCLIENT_SERVERLIST`, offered to the engine at `C_Initialize`
//! and again when the application lists slots (a module's new slots, a
//! server that could not be reached before, at most every
//! [`capacity::SERVER_RETRY`](super::capacity::SERVER_RETRY)).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p11ha_adapters::either::Either;
use p11ha_adapters::module::Module;
use p11ha_adapters::net::{Address, NetConnector};
use p11ha_adapters::rpc::RpcMember;
use p11ha_core::ck::Rv;
use p11ha_core::event::Event;
use p11ha_core::port::{Events, Member};
use p11ha_core::{Error, Result};

use crate::config::HostConfig;
use crate::host::{self, Locking, Remote};
use p11ha_adapters::module::ModuleMember;

use super::{Runtime, capacity};

/// The modules loaded, and what of them and of the servers is a member.
pub(super) struct Members {
    modules: Vec<Arc<Module>>,
    /// What is a member already, and the servers not reached yet.
    taken: Mutex<Taken>,
    /// Locks for remote members' connections.
    locking: Locking,
}

impl Members {
    /// Loads and initialises the modules of `config`, and sets its servers
    /// up (none is reached yet); what cannot be used is said through `warn`.
    pub(super) fn load(config: &HostConfig, locking: Locking, warn: &dyn Fn(&Event<'_>)) -> Self {
        let mut modules = Vec::new();
        for path in &config.modules {
            let loaded = Module::load(path).map_err(|e| e.to_string());
            let loaded = loaded.and_then(|m| match m.initialize() {
                Ok(()) => Ok(m),
                Err(e) => Err(format!(
                    "PKCS#11 module {path}: C_Initialize answered {}",
                    e.rv()
                )),
            });
            match loaded {
                Ok(m) => modules.push(m),
                Err(reason) => warn(&Event::BadConfig {
                    key: "P11HA_MODULES",
                    problem: &reason,
                    fallback: "its slots are not members",
                }),
            }
        }
        let mut servers = Vec::new();
        for (i, text) in config.servers.iter().enumerate() {
            match text.parse::<Address>() {
                Ok(address) => servers.push(Server {
                    connector: NetConnector::new(
                        address,
                        Duration::from_millis(config.connect_timeout_ms.into()),
                        Duration::from_millis(config.call_timeout_ms.into()),
                    ),
                    joined: false,
                    tried: None,
                }),
                Err(e) => warn(&Event::BadConfig {
                    key: "ET_HSM_NETCLIENT_SERVERLIST",
                    problem: &format!("server {i}: {e}"),
                    fallback: "that server is not a member",
                }),
            }
        }
        Members {
            modules,
            taken: Mutex::new(Taken {
                modules: HashSet::new(),
                servers,
            }),
            locking,
        }
    }
}

/// What [`Runtime::rescan`] has made members.
struct Taken {
    /// (module index, slot id) pairs.
    modules: HashSet<(usize, u64)>,
    /// `ET_HSM_NETCLIENT_SERVERLIST`, in its order.
    servers: Vec<Server>,
}

/// A configured server.
struct Server {
    connector: NetConnector,
    /// Its tokens are members.
    joined: bool,
    /// The last attempt to reach it.
    tried: Option<Instant>,
}

impl Runtime {
    /// Offers the engine the tokens of the servers not reached yet (each
    /// tried at most every [`capacity::SERVER_RETRY`]), in the order of
    /// `ET_HSM_NETCLIENT_SERVERLIST`, then every slot of every module not
    /// taken yet (new tokens, or slots that appeared since the last look).
    pub fn rescan(&self) {
        let mut taken = self.members.taken.lock().unwrap_or_else(|e| e.into_inner());
        for (i, server) in taken.servers.iter_mut().enumerate() {
            if server.joined
                || server
                    .tried
                    .is_some_and(|t| t.elapsed() < capacity::SERVER_RETRY)
            {
                continue;
            }
            server.tried = Some(Instant::now());
            server.joined = self.join(i, &server.connector);
        }
        for (mi, module) in self.members.modules.iter().enumerate() {
            let Ok(slots) = module.slots(false) else {
                continue;
            };
            for slot in slots {
                if taken.modules.contains(&(mi, slot)) {
                    continue;
                }
                let Ok(member) = module.member(slot) else {
                    continue;
                };
                match self.engine.add_member(self.member(Either::A(member))) {
                    Ok(Some(index)) => {
                        self.joined(index);
                        taken.modules.insert((mi, slot));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.engine.events().event(&Event::BadConfig {
                            key: "P11HA_MODULES",
                            problem: if e.rv() == Rv::HOST_MEMORY {
                                "more slots than p11ha's member or slot table holds"
                            } else {
                                "a slot could not be added"
                            },
                            fallback: "that slot is not a member",
                        });
                        return;
                    }
                }
            }
        }
    }

    /// Says, once, which configured virtual slot no member joined: a label
    /// mistyped in `ET_PTKC_WLD_SLOT_<n>`, or tokens not there yet. The
    /// slot is listed without a token, and takes members that join later.
    pub(super) fn report_empty_slots(&self) {
        let engine = &self.engine;
        for slot in engine.config().wld_slots.as_slice() {
            let served = (0..engine.member_count())
                .any(|i| engine.member_status(i).is_some_and(|m| m.slot == slot.id));
            if served {
                continue;
            }
            let label = String::from_utf8_lossy(&slot.label);
            engine.events().event(&Event::BadConfig {
                key: &format!("ET_PTKC_WLD_SLOT_{}", slot.id),
                problem: &format!(
                    "no module slot or server has a token labelled \"{}\"",
                    label.trim_end()
                ),
                fallback: "the virtual slot has no token until one joins",
            });
        }
    }

    /// Connects to server `i` once per token it serves (each connection is
    /// its own application on the server) and offers each to the engine.
    /// Whether the server was reached.
    fn join(&self, i: usize, connector: &NetConnector) -> bool {
        let connect = |index: usize| -> Result<(Remote, usize)> {
            // A buffer per call in flight on the connection.
            let bufs = (0..capacity::RPC_IN_FLIGHT)
                .map(|_| vec![0u8; capacity::RPC_BUFFER].into_boxed_slice());
            RpcMember::connect(
                connector.clone(),
                || self.members.locking.make(),
                bufs,
                index,
            )
        };
        let unreachable = |index: usize, e: Error| {
            let problem = match e {
                Error::Transport(t) => {
                    format!("server {i} ({}), token {index}: {t}", connector.address())
                }
                e => format!(
                    "server {i} ({}), token {index}: the server answered {}",
                    connector.address(),
                    e.rv()
                ),
            };
            self.engine.events().event(&Event::BadConfig {
                key: "ET_HSM_NETCLIENT_SERVERLIST",
                problem: &problem,
                fallback: "tried again when the application lists slots",
            });
        };
        let (first, tokens) = match connect(0) {
            Ok(m) => m,
            Err(e) => {
                unreachable(0, e);
                return false;
            }
        };
        self.add_remote(first);
        for index in 1..tokens {
            match connect(index) {
                Ok((member, _)) => self.add_remote(member),
                Err(e) => unreachable(index, e),
            }
        }
        true
    }

    /// `m` as the member that would join next (joins are serialised by
    /// the caller's lock on what is taken), with the mechanism the test
    /// build was told to hide from that member hidden.
    fn member(&self, m: Either<ModuleMember, Remote>) -> host::Member {
        let m = host::member(m);
        #[cfg(feature = "fault-injection")]
        if let Some((index, mechanism)) = self.config.fault_hide_mechanism
            && index == self.engine.member_count()
        {
            m.hide_mechanism(Some(mechanism));
        }
        m
    }

    /// Member `index` joined: if a process before this one saw it miss
    /// token writes, it is held out until it is synced.
    fn joined(&self, index: usize) {
        #[cfg(feature = "fault-injection")]
        self.engine.with_member(index, |m| {
            m.service().set_service_us(self.config.service_us(index))
        });
        let Some(Ok(info)) = self.engine.with_member(index, |m| m.token_info()) else {
            return;
        };
        if self.sync.joined(index, &info.label, &info.serial) {
            self.engine.hold_out_for_sync(index);
        }
    }

    fn add_remote(&self, member: Remote) {
        let added = self.engine.add_member(self.member(Either::B(member)));
        if let Ok(Some(index)) = added {
            self.joined(index);
        }
        if let Err(e) = added {
            self.engine.events().event(&Event::BadConfig {
                key: "ET_HSM_NETCLIENT_SERVERLIST",
                problem: if e.rv() == Rv::HOST_MEMORY {
                    "more tokens than p11ha's member or slot table holds"
                } else {
                    "a token could not be added"
                },
                fallback: "that token is not a member",
            });
        }
    }
}
