//! The std runtime behind `libp11ha.so`: the one engine of the process, its
//! modules, its configuration, and the `C_Initialize`/`C_Finalize` life
//! cycle.
//!
//! Every call enters through [`with`], which counts itself in flight so that
//! `C_Finalize` frees nothing a call still uses: finalize unpublishes the
//! runtime first (later calls see `CKR_CRYPTOKI_NOT_INITIALIZED`), waits for
//! the calls in flight to return, then closes everything: the recovery
//! thread is joined, every member session closed, the modules p11ha
//! initialised finalised and unloaded, the connections and the HA log
//! closed, so that nothing of p11ha runs or stays open and the application
//! may `dlclose` the library.
//!
//! A child made by `fork()` is a new application, which PKCS#11 says must
//! call `C_Initialize` itself (v2.40 §6.6.1 "Applications and processes").
//! `pthread_atfork` handlers make a fork wait until no call is inside a
//! module (see [`before_fork`]) and set the copy of the parent's runtime
//! aside in the child, so the child's `C_Initialize` builds a fresh one and
//! answers `CKR_OK`, and its calls before that answer
//! `CKR_CRYPTOKI_NOT_INITIALIZED` (see [`after_fork_in_child`]).

use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cryptoki_sys::*;
use p11ha_adapters::either::Either;
use p11ha_adapters::fault::Faulty;
use p11ha_adapters::module::Module;
use p11ha_adapters::net::{Address, NetConnector};
use p11ha_adapters::rpc::RpcMember;
use p11ha_core::ck::{Rv, flags};
use p11ha_core::config::Mode;
use p11ha_core::engine::Storage;
use p11ha_core::event::{Event, Severity};
use p11ha_core::journal::Journal;
use p11ha_core::port::{Events, RawLock};
use p11ha_core::{Engine, Error, Result};

use crate::config::HostConfig;
use crate::halog::HaLog;
use crate::host::{
    AppMutexes, Arena, Boxed, Futex, Host, HostClock, HostEvents, HostLock, Locking, Remote, report,
};

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
    modules: Vec<Arc<Module>>,
    /// What is a member already, and the servers not reached yet.
    taken: Mutex<Taken>,
    /// Locks for remote members' connections.
    locking: Locking,
    recovery: Recovery,
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

/// How failed members are brought back (HA mode).
enum Recovery {
    /// Never (not HA mode, or `ET_PTKC_HA_RECOVER_DELAY=0`).
    Off,
    /// A background thread tries after the delay.
    Thread {
        stop: Arc<(Mutex<bool>, Condvar)>,
        thread: Option<libc::pthread_t>,
    },
    /// Application threads try when they enter the library after the delay
    /// (`ET_PTKC_HA_RECOVER_WAIT=YES`, which also holds the others off; or
    /// an application that forbids p11ha its own threads).
    Inline { hold: bool, gate: Gate },
}

/// Holds application threads off while one of them tries to recover a
/// member.
#[derive(Default)]
struct Gate {
    holding: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Serialises C_Initialize and C_Finalize against each other. A futex of
/// p11ha's own rather than a std `Mutex`, so that a forked child can reset
/// it: a parent thread that held it at the fork does not exist in the child.
static LIFECYCLE: HostLock = HostLock::Os(Futex::new());
/// In a forked child, the runtime copied from the parent: never used and
/// never freed (its locks may be held by threads that do not exist here,
/// its connections and member sessions are the parent's), only kept
/// reachable.
static INHERITED: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());
/// Registers [`after_fork_in_child`] once per load of the library.
static ATFORK: Once = Once::new();

/// Holds [`LIFECYCLE`] until dropped.
struct Lifecycle;

impl Lifecycle {
    fn lock() -> Self {
        LIFECYCLE.lock();
        Lifecycle
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        // SAFETY: taken by Lifecycle::lock, released once, by its holder.
        unsafe { LIFECYCLE.unlock() };
    }
}

/// The `pthread_atfork` child handler: the child is a new application,
/// not initialised until it calls `C_Initialize` (which then answers
/// `CKR_OK` with a runtime of its own). The parent's copy is set aside:
/// using it could wait forever on a lock a parent thread held at the fork,
/// or write into the parent's connections to remote members. Only atomic
/// stores and a read of a `const` thread-local, so it is async-signal-safe
/// as a fork handler must be.
extern "C" fn after_fork_in_child() {
    let inherited = RUNTIME.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !inherited.is_null() {
        INHERITED.store(inherited, Ordering::SeqCst);
    }
    // Calls in flight in the parent's other threads never return here.
    IN_FLIGHT.store(DEPTH.with(|d| d.get()), Ordering::SeqCst);
    FORKING.store(false, Ordering::SeqCst);
    if let HostLock::Os(f) = &LIFECYCLE {
        f.reset_after_fork();
    }
}

/// Set while a thread of the process forks (see [`before_fork`]): calls
/// wait at the door instead of entering.
static FORKING: AtomicBool = AtomicBool::new(false);
/// How long a fork waits for the calls in flight to return.
const FORK_WAIT: Duration = Duration::from_secs(10);

thread_local! {
    /// Calls of this thread in flight (a call may nest another). `const`
    /// and without `Drop`: it registers no thread-local destructor, which
    /// would keep the library mapped after `dlclose`.
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        let nested = DEPTH.with(|d| d.replace(d.get() + 1)) > 0;
        loop {
            IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
            // A nested call goes on: its thread is counted already.
            if nested || !FORKING.load(Ordering::SeqCst) {
                return InFlight;
            }
            leave();
            while FORKING.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
}

/// Uncounts one call. Saturating: a thread that forked while in flight (a
/// module that forks in a call) comes back in a child whose count was
/// reset to 0.
fn leave() {
    let _ = IN_FLIGHT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
}

impl Drop for InFlight {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        leave();
    }
}

/// The `pthread_atfork` prepare handler: holds new calls at the door and
/// waits (at most [`FORK_WAIT`]) for those in flight, the recovery
/// thread's included, to return, so that no p11ha call is inside a module
/// when the process forks. A module's own locks are copied into the child
/// as they are, and one held by a parent thread in a call (SoftHSM's, in
/// a signature) would deadlock the child's first call that needs it.
extern "C" fn before_fork() {
    FORKING.store(true, Ordering::SeqCst);
    // The forking thread's own calls (a module forking in a call) stay.
    let own = DEPTH.with(|d| d.get());
    let start = std::time::Instant::now();
    while IN_FLIGHT.load(Ordering::SeqCst) > own && start.elapsed() < FORK_WAIT {
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The `pthread_atfork` parent handler: lets calls in again.
extern "C" fn after_fork_in_parent() {
    FORKING.store(false, Ordering::SeqCst);
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
    let rt = unsafe { &*p };
    if let Recovery::Inline { hold, gate } = &rt.recovery {
        rt.recover_inline(*hold, gate);
    }
    f(rt)
}

/// What `C_Initialize`'s arguments ask of p11ha.
pub struct InitArgs {
    /// How to lock.
    pub locking: Locking,
    /// Whether p11ha may start threads of its own
    /// (`CKF_LIBRARY_CANT_CREATE_OS_THREADS` not set).
    pub threads: bool,
}

/// `C_Initialize`'s arguments, checked as PKCS#11 says.
///
/// # Safety
/// `args` is NULL or points at a readable `CK_C_INITIALIZE_ARGS`.
pub unsafe fn init_args(args: *const c_void) -> Result<InitArgs> {
    // SAFETY: NULL or readable by the caller's contract.
    let Some(args) = (unsafe { (args as *const CK_C_INITIALIZE_ARGS).as_ref() }) else {
        return Ok(InitArgs {
            locking: Locking::Os,
            threads: true,
        });
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
    let locking = match AppMutexes::from_args(args) {
        // Callbacks without OS locking: PKCS#11 says the library must use
        // them.
        Some(calls) if !os_ok => Locking::App(calls),
        // Either may be used, or the application is single-threaded: p11ha
        // always locks (its own members are called from many threads).
        _ => Locking::Os,
    };
    Ok(InitArgs {
        locking,
        threads: args.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS == 0,
    })
}

/// `C_Initialize`.
pub fn initialize(args: InitArgs) -> Result<()> {
    ATFORK.call_once(|| {
        // SAFETY: the handlers use only atomics and a thread-local of this
        // library (and sleep, before the fork). pthread_atfork is glibc's
        // libc_nonshared.a wrapper, which registers them with this
        // library's __dso_handle, so dlclose unregisters them before the
        // code is unmapped. If registration fails (ENOMEM), a forked child's
        // C_Initialize answers CKR_CRYPTOKI_ALREADY_INITIALIZED.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
    });
    let _life = Lifecycle::lock();
    if !RUNTIME.load(Ordering::SeqCst).is_null() {
        return Err(Error::Rv(Rv::CRYPTOKI_ALREADY_INITIALIZED));
    }
    let (config, problems) = HostConfig::load();
    let ha = config.core.mode == Mode::Ha;
    let log = ha.then(|| {
        let (log, trouble) = HaLog::open(&config.log_file, &config.log_name);
        if let Some(trouble) = trouble {
            let e = Event::BadConfig {
                key: "ET_PTKC_HA_LOG_FILE",
                problem: &trouble,
                fallback: "the HA log goes to syslog",
            };
            report(&e);
            log.write(&e);
        }
        for p in &problems {
            log.write_line(Severity::Warning, p);
        }
        log
    });
    // A configuration problem found from here on: stderr, and the HA log.
    let warn = |e: &Event<'_>| {
        report(e);
        if let Some(log) = &log {
            log.write(e);
        }
    };
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
    let recovery = match (
        ha,
        config.core.recover_delay(),
        config.core.recover_wait,
        args.threads,
    ) {
        (true, Some(_), false, true) => Recovery::Thread {
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            thread: None,
        },
        (true, Some(_), hold, _) => Recovery::Inline {
            hold,
            gate: Gate::default(),
        },
        _ => Recovery::Off,
    };
    let engine = Engine::new(
        &config.core,
        storage,
        HostEvents { log },
        HostClock::new(),
        seed,
    )?;
    let mut runtime = Box::new(Runtime {
        engine,
        config,
        _arena: arena,
        modules,
        taken: Mutex::new(Taken {
            modules: HashSet::new(),
            servers,
        }),
        locking: args.locking,
        recovery,
    });
    runtime.rescan();
    if !nothing {
        runtime.report_empty_slots();
    }
    if let Recovery::Thread { stop, thread } = &mut runtime.recovery {
        let period = runtime
            .engine
            .config()
            .recover_delay()
            .map_or(1000, |d| (d / 4).clamp(10, 1000));
        *thread = spawn_recovery(stop.clone(), Duration::from_millis(period));
    }
    RUNTIME.store(Box::into_raw(runtime), Ordering::SeqCst);
    Ok(())
}

/// Starts [`recovery_thread`], named `p11ha-recovery`; `None` if no thread
/// can be made (members are then not recovered).
///
/// With `pthread_create`, not `std::thread`: std's spawn registers
/// thread-local destructors in the calling thread, an application thread,
/// and glibc keeps a library with pending thread-local destructors mapped
/// until that thread exits, so a `dlclose` after `C_Finalize` would not
/// unload p11ha. The recovery thread's own thread-locals go when it is
/// joined.
fn spawn_recovery(stop: Arc<(Mutex<bool>, Condvar)>, period: Duration) -> Option<libc::pthread_t> {
    struct Start {
        stop: Arc<(Mutex<bool>, Condvar)>,
        period: Duration,
    }
    extern "C" fn run(arg: *mut c_void) -> *mut c_void {
        // SAFETY: arg is the Box<Start> spawn_recovery leaked for this
        // thread, taken back once, here.
        let start = unsafe { Box::from_raw(arg as *mut Start) };
        // No unwinding out of an extern "C" function.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            recovery_thread(start.stop, start.period)
        }));
        std::ptr::null_mut()
    }
    let arg = Box::into_raw(Box::new(Start { stop, period })) as *mut c_void;
    let mut thread: libc::pthread_t = 0;
    // SAFETY: default attributes; `run` takes ownership of arg.
    if unsafe { libc::pthread_create(&mut thread, std::ptr::null(), run, arg) } != 0 {
        // SAFETY: no thread was made, so arg is still this function's.
        drop(unsafe { Box::from_raw(arg as *mut Start) });
        return None;
    }
    // SAFETY: a live thread of ours; a NUL-terminated name of 14 bytes (at
    // most 15 are allowed).
    unsafe { libc::pthread_setname_np(thread, c"p11ha-recovery".as_ptr()) };
    Some(thread)
}

/// Tries to bring failed members back, every `period`, until told to stop.
fn recovery_thread(stop: Arc<(Mutex<bool>, Condvar)>, period: Duration) {
    let (lock, cv) = &*stop;
    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    while !*stopped {
        drop(stopped);
        // Through with(): counted in flight, so C_Finalize waits for an
        // attempt in progress; after C_Finalize it answers not initialised.
        let _ = with(|rt| {
            let now = rt.engine.now_ms();
            if rt.engine.recovery_due(now) {
                rt.engine.recover(now);
            }
            Ok(())
        });
        stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
        if !*stopped {
            stopped = cv
                .wait_timeout(stopped, period)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
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
    let p = RUNTIME.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if p.is_null() {
        return Err(Error::Rv(Rv::CRYPTOKI_NOT_INITIALIZED));
    }
    while IN_FLIGHT.load(Ordering::SeqCst) != 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: p came from Box::into_raw in initialize(); it is unpublished
    // and no call is in flight, so this is the only reference.
    let mut runtime = unsafe { Box::from_raw(p) };
    if let Recovery::Thread { stop, thread } = &mut runtime.recovery {
        *stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        stop.1.notify_all();
        if let Some(t) = thread.take() {
            // SAFETY: the thread spawn_recovery made, joined once; it
            // returns now that it was told to stop.
            unsafe { libc::pthread_join(t, std::ptr::null_mut()) };
        }
    }
    runtime.engine.close_everything();
    // Dropping the engine drops its members; the modules are finalised and
    // unloaded when the last reference to each goes.
    drop(runtime);
    Ok(())
}

impl Runtime {
    /// Inline recovery (see [`Recovery::Inline`]): the first thread to see
    /// a recovery due makes the attempt; with `hold`, it logs PTK's "Found
    /// HSM Dead:HSM Failed" and every other thread entering the library
    /// waits until the attempt is over.
    fn recover_inline(&self, hold: bool, gate: &Gate) {
        if gate.holding.load(Ordering::Acquire) {
            if hold {
                let mut g = gate.lock.lock().unwrap_or_else(|e| e.into_inner());
                while gate.holding.load(Ordering::Acquire) {
                    g = gate.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
            }
            return;
        }
        let now = self.engine.now_ms();
        if !self.engine.recovery_due(now)
            || gate
                .holding
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        if hold {
            self.engine.events().event(&Event::HsmDead);
        }
        self.engine.recover(now);
        let _g = gate.lock.lock().unwrap_or_else(|e| e.into_inner());
        gate.holding.store(false, Ordering::Release);
        gate.cv.notify_all();
    }

    /// Offers the engine the tokens of the servers not reached yet (each
    /// tried at most every [`capacity::SERVER_RETRY`]), in the order of
    /// `ET_HSM_NETCLIENT_SERVERLIST`, then every slot of every module not
    /// taken yet (new tokens, or slots that appeared since the last look).
    pub fn rescan(&self) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
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
        for (mi, module) in self.modules.iter().enumerate() {
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
                match self.engine.add_member(Faulty::new(Either::A(member))) {
                    Ok(Some(_)) => {
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
    fn report_empty_slots(&self) {
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
            let lock = self.locking.make().ok_or(Error::Rv(Rv::CANT_LOCK))?;
            let buf = vec![0u8; capacity::RPC_BUFFER].into_boxed_slice();
            RpcMember::connect(connector.clone(), lock, buf, index)
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

    fn add_remote(&self, member: Remote) {
        if let Err(e) = self.engine.add_member(Faulty::new(Either::B(member))) {
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
