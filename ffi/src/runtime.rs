//! The std runtime behind `libp11ha.so`: the one engine of the process, its
//! modules, its configuration, and the `C_Initialize`/`C_Finalize` life
//! cycle.
//!
//! Every call enters through [`with`], which counts itself in flight so that
//! `C_Finalize` frees nothing a call still uses: finalize unpublishes the
//! runtime first (later calls see `CKR_CRYPTOKI_NOT_INITIALIZED`), waits for
//! the calls in flight to return, then closes everything.

use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cryptoki_sys::*;
use p11ha_adapters::module::Module;
use p11ha_core::ck::{Rv, flags};
use p11ha_core::config::Config;
use p11ha_core::engine::{MemberSlot, SessionSlot, SlotSlot, Storage};
use p11ha_core::event::Event;
use p11ha_core::handles::{IndexSlot, ObjectEntry};
use p11ha_core::{Engine, Error, Result};

use crate::host::{AppMutexes, Host, HostEvents, Locking, report};

/// Capacities of the host build, fixed at build time. Memory is allocated
/// once, at `C_Initialize`.
pub mod capacity {
    /// Open sessions at once (all slots together).
    pub const SESSIONS: usize = 2048;
    /// Virtual objects (WLD and HA mode).
    pub const OBJECTS: usize = 4096;
    /// Members (slots of modules).
    pub const MEMBERS: usize = p11ha_core::engine::MAX_MEMBERS;
    /// Virtual slots.
    pub const SLOTS: usize = 64;
    /// The largest configuration file read, in bytes.
    pub const CONFIG_FILE: u64 = 1 << 20;
}

/// The live state of one `C_Initialize`.
pub struct Runtime {
    /// The engine.
    pub engine: Engine<Host>,
    modules: Vec<Arc<Module>>,
    /// (module index, slot id) pairs already taken as members.
    taken: Mutex<HashSet<(usize, u64)>>,
}

static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Serialises C_Initialize and C_Finalize against each other.
static LIFECYCLE: Mutex<()> = Mutex::new(());

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `f` with the runtime, or answers `CKR_CRYPTOKI_NOT_INITIALIZED`.
pub fn with<T>(f: impl FnOnce(&Runtime) -> Result<T>) -> Result<T> {
    let _in = InFlight::enter();
    let p = RUNTIME.load(Ordering::SeqCst);
    if p.is_null() {
        return Err(Error::Rv(Rv::CRYPTOKI_NOT_INITIALIZED));
    }
    // SAFETY: p was published by initialize() from a Box and is freed only
    // by finalize(), after it unpublished p and saw IN_FLIGHT reach zero;
    // this call was counted in flight before it loaded p.
    f(unsafe { &*p })
}

/// Reads the configuration: the file named by `P11HA_CONF` first, then the
/// environment, which wins. Problems go to stderr.
pub fn load_config() -> Config {
    let mut cfg = Config::default();
    let mut sink = |e: &Event<'_>| report(e);
    if let Some(path) = std::env::var_os("P11HA_CONF") {
        match read_limited(&path) {
            Ok(text) => cfg.apply_file(&text, &mut sink),
            Err(problem) => sink(&Event::BadConfig {
                key: "P11HA_CONF",
                problem,
                fallback: "only the environment is used",
            }),
        }
    }
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if !Config::is_item(key) {
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
    cfg
}

fn read_limited(path: &std::ffi::OsStr) -> std::result::Result<String, &'static str> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|_| "cannot open the file")?;
    let mut text = String::new();
    file.take(capacity::CONFIG_FILE)
        .read_to_string(&mut text)
        .map_err(|_| "cannot read the file as UTF-8 text")?;
    Ok(text)
}

/// `C_Initialize`'s arguments, checked as PKCS#11 says.
///
/// # Safety
/// `args` is NULL or points at a readable `CK_C_INITIALIZE_ARGS`.
pub unsafe fn locking_from(args: *const c_void) -> Result<Locking> {
    // SAFETY: NULL or readable by the caller's contract.
    let Some(args) = (unsafe { (args as *const CK_C_INITIALIZE_ARGS).as_ref() }) else {
        return Ok(Locking::Os);
    };
    if !args.pReserved.is_null() {
        return Err(Error::Rv(Rv::ARGUMENTS_BAD));
    }
    let given = [
        args.CreateMutex.is_some(),
        args.DestroyMutex.is_some(),
        args.LockMutex.is_some(),
        args.UnlockMutex.is_some(),
    ];
    if given.iter().any(|&g| g) && !given.iter().all(|&g| g) {
        return Err(Error::Rv(Rv::ARGUMENTS_BAD));
    }
    let os_ok = args.flags & CKF_OS_LOCKING_OK != 0;
    Ok(match AppMutexes::from_args(args) {
        // Callbacks without OS locking: PKCS#11 says the library must use
        // them.
        Some(calls) if !os_ok => Locking::App(calls),
        // Either may be used, or the application is single-threaded: p11ha
        // always locks (its own members are called from many threads).
        _ => Locking::Os,
    })
}

/// `C_Initialize`.
pub fn initialize(locking: Locking) -> Result<()> {
    let _life = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
    if !RUNTIME.load(Ordering::SeqCst).is_null() {
        return Err(Error::Rv(Rv::CRYPTOKI_ALREADY_INITIALIZED));
    }
    let config = load_config();
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
            Err(reason) => report(&Event::BadConfig {
                key: "P11HA_MODULES",
                problem: &reason,
                fallback: "its slots are not members",
            }),
        }
    }
    if config.modules.is_empty() {
        report(&Event::BadConfig {
            key: "P11HA_MODULES",
            problem: "no PKCS#11 module is configured",
            fallback: "there are no slots",
        });
    }
    let storage = storage(locking)?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let engine = Engine::new(config, storage, HostEvents, seed)?;
    let runtime = Runtime {
        engine,
        modules,
        taken: Mutex::new(HashSet::new()),
    };
    runtime.rescan();
    RUNTIME.store(Box::into_raw(Box::new(runtime)), Ordering::SeqCst);
    Ok(())
}

fn storage(locking: Locking) -> Result<Storage<Host>> {
    let lock = || locking.make().ok_or(Error::Rv(Rv::CANT_LOCK));
    Ok(Storage {
        members: (0..capacity::MEMBERS).map(|_| MemberSlot::new()).collect(),
        slots: (0..capacity::SLOTS)
            .map(|_| lock().map(SlotSlot::new))
            .collect::<Result<_>>()?,
        sessions: (0..capacity::SESSIONS)
            .map(|_| lock().map(SessionSlot::new))
            .collect::<Result<_>>()?,
        objects: (0..capacity::OBJECTS)
            .map(|_| ObjectEntry::default())
            .collect(),
        object_index: (0..capacity::OBJECTS * 2)
            .map(|_| IndexSlot::default())
            .collect(),
    })
}

/// `C_Finalize`.
pub fn finalize() -> Result<()> {
    let _life = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
    let p = RUNTIME.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if p.is_null() {
        return Err(Error::Rv(Rv::CRYPTOKI_NOT_INITIALIZED));
    }
    while IN_FLIGHT.load(Ordering::SeqCst) != 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: p came from Box::into_raw in initialize(); it is unpublished
    // and no call is in flight, so this is the only reference.
    let runtime = unsafe { Box::from_raw(p) };
    runtime.engine.close_everything();
    // Dropping the engine drops its members; the modules are finalised and
    // unloaded when the last reference to each goes.
    drop(runtime);
    Ok(())
}

impl Runtime {
    /// Offers the engine every slot of every module not taken yet (new
    /// tokens, or slots that appeared since the last look).
    pub fn rescan(&self) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        for (mi, module) in self.modules.iter().enumerate() {
            let Ok(slots) = module.slots(false) else {
                continue;
            };
            for slot in slots {
                if taken.contains(&(mi, slot)) {
                    continue;
                }
                let Ok(member) = module.member(slot) else {
                    continue;
                };
                let member = p11ha_adapters::fault::Faulty::new(member);
                match self.engine.add_member(member) {
                    Ok(Some(_)) => {
                        taken.insert((mi, slot));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        report(&Event::BadConfig {
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

    /// Whether slot lists should include slots without a token.
    pub fn token_present_flag(token_present: CK_BBOOL) -> bool {
        token_present != 0
    }
}

/// `C_WaitForSlotEvent`: p11ha reports no slot events.
pub fn wait_for_slot_event(event_flags: u64) -> Result<u64> {
    with(|_| {
        if event_flags & flags::DONT_BLOCK != 0 {
            Err(Error::Rv(Rv::NO_EVENT))
        } else {
            Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))
        }
    })
}
