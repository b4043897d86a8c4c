//! The std runtime behind `libp11ha.so`: the one engine of the process, its
//! members, its configuration, and the `C_Initialize`/`C_Finalize` life
//! cycle.
//!
//! - [`lifecycle`]: publishing the runtime, every call's entry ([`with`]),
//!   and `fork()`;
//! - [`init_args`]: what `C_Initialize`'s arguments ask of p11ha;
//! - [`members`]: the modules and servers, and what of them is a member;
//! - [`recovery`]: failed members brought back, by a thread or inline;
//! - [`status`]: the live state on a Unix socket (`P11HA_STATUS_SOCKET`).
//!
//! `C_Finalize` closes everything: the recovery and status threads are
//! joined (the status socket removed), every
//! member session closed, the modules p11ha initialised finalised and
//! unloaded, the connections and the HA log closed, so that nothing of p11ha
//! runs or stays open and the application may `dlclose` the library.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use p11ha_core::ck::Rv;
use p11ha_core::config::Mode;
use p11ha_core::engine::Storage;
use p11ha_core::event::Event;
use p11ha_core::journal::Journal;
use p11ha_core::port::Events;
use p11ha_core::{Engine, Error, Result};

use crate::config::HostConfig;
use crate::halog::HaLog;
use crate::host::{Arena, Boxed, Host, HostClock, HostEvents, Locking};
use crate::syncstate::SyncState;

mod init_args;
mod lifecycle;
mod members;
mod recovery;
mod status;

pub use init_args::{InitArgs, init_args};
pub use lifecycle::with;

use lifecycle::Lifecycle;
use members::Members;
use recovery::Recovery;
use status::Status;

/// Capacities of the host build, fixed at build time. Memory is allocated
/// once, at `C_Initialize`.
pub mod capacity {
    /// Open sessions at once (all slots together).
    pub const SESSIONS: usize = 2048;
    /// Virtual objects (WLD and HA mode).
    pub const OBJECTS: usize = 4096;
    /// Members (slots of modules, tokens of servers).
    pub const MEMBERS: usize = p11ha_core::engine::MAX_MEMBERS;
    /// Virtual slots.
    pub const SLOTS: usize = 64;
    /// The engine's tables.
    pub const TABLES: p11ha_core::engine::Capacity = p11ha_core::engine::Capacity {
        members: MEMBERS,
        slots: SLOTS,
        sessions: SESSIONS,
        objects: OBJECTS,
    };
    /// The buffer of each remote member's connection: the largest request
    /// or reply (data of one call up to 1 MiB, plus room for the rest).
    pub const RPC_BUFFER: usize = (1 << 20) + 64 * 1024;
    /// The most attributes of one template (`C_CreateObject`,
    /// `C_FindObjectsInit`, `C_GetAttributeValue`...): more than one RPC
    /// request can carry, since an attribute takes at least 9 bytes of it
    /// (its type and length as u32s, a byte saying it has a value). A
    /// session may move to any member of its slot, a remote one too, so a
    /// template no remote member could take is refused for every member,
    /// with `CKR_HOST_MEMORY`, before any entry is read: a count of 2^32 is
    /// answered at once instead of walking four billion entries. It also
    /// bounds what p11ha copies of one template (48 bytes an attribute,
    /// under 6 MiB). 123,790 attributes.
    pub const TEMPLATE: usize = RPC_BUFFER / 9;
    /// The most bytes of one input buffer: data, an attribute's value, a
    /// mechanism parameter, a PIN, a seed, and the bytes `C_GenerateRandom`
    /// is asked for. The RPC protocol carries every length as a u32 and a
    /// 32-bit platform's `CK_ULONG` cannot say more, so nothing longer can
    /// reach a remote member, or come from a portable application; a local
    /// member, which gets the application's own pointer, takes all up to
    /// it as before. Refused with `CKR_HOST_MEMORY` before a byte is read.
    /// (HA mode's journal keeps far less, [`UPDATE_LIMIT`]; past that the
    /// session goes on, potentially not recoverable.)
    pub const DATA: usize = u32::MAX as usize;
    /// Calls in flight at once on one remote member's connection, each
    /// with a buffer of its own: while one call waits for its reply, the
    /// next request is already queued at the server. Pages of a buffer
    /// that no call has used are never touched.
    pub const RPC_IN_FLIGHT: usize = 2;
    /// How often a server that could not be reached is tried again, at
    /// the most (when the application lists slots).
    pub const SERVER_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
    /// HA mode: the most Update data kept per operation (the data length
    /// limit; `P11HA_HA_UPDATE_LIMIT` may lower it).
    pub const UPDATE_LIMIT: usize = 64 * 1024;
    /// HA mode: the rest of a session's journal (recipes of session
    /// objects, the search template and results, the mechanism parameter).
    pub const JOURNAL: p11ha_core::journal::Layout = p11ha_core::journal::Layout::HOST;
}

/// The live state of one `C_Initialize`.
pub struct Runtime {
    /// The engine. Declared first: it is dropped before the arena its
    /// journals point into.
    pub engine: Engine<Host>,
    /// What the library was configured with (the core's part is the
    /// engine's too).
    pub config: HostConfig,
    _arena: Arena,
    members: Members,
    recovery: Recovery,
    /// The members that missed token writes (`P11HA_STATE_DIR`).
    sync: Arc<SyncState>,
    /// The live state's socket and thread (`P11HA_STATUS_SOCKET`).
    status: Status,
}

/// `C_Initialize`.
pub fn initialize(args: InitArgs) -> Result<()> {
    lifecycle::register_fork_handlers();
    let _life = Lifecycle::lock();
    if lifecycle::published() {
        return Err(Error::Rv(Rv::CRYPTOKI_ALREADY_INITIALIZED));
    }
    let (config, problems) = HostConfig::load();
    let ha = config.core.mode == Mode::Ha;
    let (log, trouble) = match ha {
        true => {
            let (log, trouble) = HaLog::open(&config.log_file, &config.log_name, config.log_format);
            (Some(log), trouble)
        }
        false => (None, None),
    };
    // Where events go from now on; a configuration problem goes to stderr,
    // and in HA mode to the log too.
    let (sync, sync_trouble) = SyncState::new(config.state_dir.as_deref());
    let sync = Arc::new(sync);
    let events = HostEvents {
        log,
        sync: sync.clone(),
        counters: Default::default(),
        timed: config.status_socket.is_some(),
    };
    if let Some(trouble) = sync_trouble {
        events.event(&Event::BadConfig {
            key: "P11HA_STATE_DIR",
            problem: &trouble,
            fallback: "which HSMs need a sync is kept in memory only",
        });
    }
    if let Some(trouble) = trouble {
        events.event(&Event::BadConfig {
            key: "ET_PTKC_HA_LOG_FILE",
            problem: &trouble,
            fallback: "the HA log goes to syslog",
        });
    }
    // Already on stderr: to the log (and the counters) only.
    for p in &problems {
        let e = p.event();
        events.counters.count(&e);
        if let Some(log) = &events.log {
            log.write(&e);
        }
    }
    let warn = |e: &Event<'_>| events.event(e);
    let limit = match config.core.update_limit {
        Some(n) if n > capacity::UPDATE_LIMIT => {
            warn(&Event::BadConfig {
                key: "P11HA_HA_UPDATE_LIMIT",
                problem: "more than this build keeps (65536 bytes)",
                fallback: "65536 bytes are kept",
            });
            capacity::UPDATE_LIMIT
        }
        Some(n) => n,
        None => capacity::UPDATE_LIMIT,
    };
    let members = Members::load(&config, args.locking, &warn);
    let nothing = config.modules.is_empty() && config.servers.is_empty();
    if nothing {
        warn(&Event::BadConfig {
            key: "P11HA_MODULES",
            problem: "no PKCS#11 module and no server is configured",
            fallback: if config.core.mode.is_virtual() {
                "the virtual slots have no token"
            } else {
                "there are no slots"
            },
        });
    }
    if config.core.mode.is_virtual() && config.core.wld_slots.as_slice().is_empty() {
        warn(&Event::BadConfig {
            key: "ET_PTKC_WLD_SLOT_0",
            problem: "WLD and HA mode show the tokens of the labels that ET_PTKC_WLD_SLOT_<n> \
                      names, and none is set",
            fallback: "there are no slots",
        });
    }
    // Journals only in HA mode: elsewhere every session gets an empty one.
    let chunk = if ha {
        capacity::JOURNAL.fixed() + limit
    } else {
        0
    };
    let arena = Arena::new(capacity::SESSIONS, chunk).ok_or(Error::Rv(Rv::HOST_MEMORY))?;
    let storage = storage(args.locking, &arena, limit)?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let recovery = Recovery::choose(
        ha,
        config.core.recover_delay(),
        config.core.recover_wait,
        args.threads,
    );
    let engine = Engine::new(&config.core, storage, events, HostClock::new(), seed)?;
    let mut runtime = Box::new(Runtime {
        engine,
        config,
        _arena: arena,
        members,
        recovery,
        sync,
        status: Status::none(),
    });
    runtime.rescan();
    if !nothing {
        runtime.report_empty_slots();
    }
    let delay = runtime.config.core.recover_delay();
    runtime.recovery.start(delay);
    runtime.status = Status::start(
        runtime.config.status_socket.as_deref(),
        args.threads,
        &|e| runtime.engine.events().event(e),
    );
    lifecycle::publish(runtime);
    lifecycle::hold_loaded();
    Ok(())
}

fn storage(locking: Locking, arena: &Arena, limit: usize) -> Result<Storage<Host>> {
    Storage::build(
        &capacity::TABLES,
        &mut Boxed,
        || locking.make(),
        |i| {
            // SAFETY: each index is taken once; the chunks live in the engine,
            // which the runtime drops before the arena.
            let chunk = unsafe { arena.chunk(i) };
            Journal::new(chunk, capacity::JOURNAL, limit)
        },
    )
}

/// `C_Finalize`.
pub fn finalize() -> Result<()> {
    let _life = Lifecycle::lock();
    let mut runtime = lifecycle::unpublish().ok_or(Error::Rv(Rv::CRYPTOKI_NOT_INITIALIZED))?;
    runtime.recovery.stop();
    runtime.status.stop();
    runtime.engine.close_everything();
    // Dropping the engine drops its members; the modules are finalised and
    // unloaded when the last reference to each goes.
    drop(runtime);
    lifecycle::release_loaded();
    Ok(())
}
