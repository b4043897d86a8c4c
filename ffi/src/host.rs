//! The Linux host platform: members are module slots or remote tokens
//! (behind an inert fault plan that tests can arm), journals are chunks of one lazily
//! committed arena, storage is boxed
//! slices allocated once at `C_Initialize`, locks are futexes or the
//! application's own mutex callbacks, events go to stderr.

use std::ffi::c_void;
use std::io::Write;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use cryptoki_sys::*;
use p11ha_adapters::either::Either;
#[cfg(feature = "fault-injection")]
use p11ha_adapters::fault::{Faulty, Paced};
use p11ha_adapters::module::ModuleMember;
use p11ha_adapters::net::NetConnector;
use p11ha_adapters::rpc::RpcMember;
use p11ha_core::Result;
use p11ha_core::engine::Tables;
use p11ha_core::event::{Event, Severity};
use p11ha_core::port::{Clock, Events, Platform, RawLock};

use crate::halog::HaLog;

/// The platform of `libp11ha.so`.
pub struct Host;

/// A member: a slot of a module, or a token of a server.
#[cfg(not(feature = "fault-injection"))]
pub type Member = Either<ModuleMember, Remote>;

/// A member: a slot of a module, or a token of a server, behind a fault
/// plan (the test build), which stays unarmed (one relaxed load per call)
/// unless `P11HA_FAULT_INJECTION=YES`, and served at once unless
/// `P11HA_FAULT_SERVICE_US` gives it a service time.
#[cfg(feature = "fault-injection")]
pub type Member = Faulty<Either<ModuleMember, Remote>, Paced>;

/// Makes `m` a member (behind its fault plan, in the test build).
pub fn member(m: Either<ModuleMember, Remote>) -> Member {
    #[cfg(feature = "fault-injection")]
    let m = Faulty::with_service(m, Paced::new());
    m
}

impl Platform for Host {
    type Member = Member;
    type Lock = HostLock;
    type Events = HostEvents;
    type Clock = HostClock;
    type Journal = ArenaChunk;
    type Store<T: Send + Sync + 'static> = Box<[T]>;
}

/// The engine's tables as boxed slices, made once at `C_Initialize`.
pub struct Boxed;

impl Tables<Host> for Boxed {
    fn table<T: Send + Sync + 'static>(
        &mut self,
        len: usize,
        init: impl FnMut(usize) -> Result<T>,
    ) -> Result<Box<[T]>> {
        (0..len).map(init).collect()
    }
}

/// A token of a `p11-kit server`, over its own connection and buffer.
pub type Remote = RpcMember<NetConnector, HostLock, Box<[u8]>>;

/// Monotonic milliseconds since the library was initialised.
pub struct HostClock(std::time::Instant);

impl HostClock {
    /// A clock starting now.
    pub fn new() -> Self {
        HostClock(std::time::Instant::now())
    }
}

impl Default for HostClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for HostClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// The journal buffers of every session, in one anonymous mapping: its
/// pages are zero and take memory only once a journal writes them, so the
/// arena costs what the sessions actually journal, not its size.
pub struct Arena {
    ptr: *mut u8,
    size: usize,
    chunk: usize,
}

// SAFETY: the arena is plain memory; the chunks handed out are disjoint.
unsafe impl Send for Arena {}
// SAFETY: as above; the arena itself is never read or written through &Arena.
unsafe impl Sync for Arena {}

impl Arena {
    /// `count` chunks of `chunk` bytes; `None` if the mapping fails.
    pub fn new(count: usize, chunk: usize) -> Option<Arena> {
        let size = count.checked_mul(chunk)?;
        if size == 0 {
            return Some(Arena {
                ptr: std::ptr::null_mut(),
                size: 0,
                chunk,
            });
        }
        // SAFETY: a fresh private anonymous mapping; no address is given.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Arena {
            ptr: ptr as *mut u8,
            size,
            chunk,
        })
    }

    /// The `i`th chunk.
    ///
    /// # Safety
    /// Each index is taken at most once, and every chunk is dropped before
    /// the arena (the runtime drops the engine, which holds the chunks,
    /// first).
    pub unsafe fn chunk(&self, i: usize) -> ArenaChunk {
        if self.size == 0 {
            return ArenaChunk {
                ptr: std::ptr::null_mut(),
                len: 0,
            };
        }
        ArenaChunk {
            // SAFETY: i * chunk + chunk <= size for the indices the runtime
            // uses (fewer than count).
            ptr: unsafe { self.ptr.add(i * self.chunk) },
            len: self.chunk,
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if self.size != 0 {
            // SAFETY: the mapping made in new(), unmapped once.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.size) };
        }
    }
}

/// One session's journal buffer inside the [`Arena`].
pub struct ArenaChunk {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a chunk is exclusive memory (chunks are disjoint), used under its
// session's lock.
unsafe impl Send for ArenaChunk {}
// SAFETY: as above; shared references only read it through Deref.
unsafe impl Sync for ArenaChunk {}

impl std::ops::Deref for ArenaChunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: ptr..ptr+len is this chunk's part of the live arena.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for ArenaChunk {
    fn deref_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as above, and &mut self makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// A futex-based mutex: uncontended lock and unlock are one atomic
/// operation each; a waiter sleeps in the kernel instead of spinning, which
/// matters because the engine holds a session's lock across a member call
/// that may take a second (an RSA key generation).
pub struct Futex {
    /// 0 unlocked, 1 locked, 2 locked with waiters.
    state: AtomicU32,
}

impl Futex {
    /// An unlocked futex (`const`: it can be a static).
    pub(crate) const fn new() -> Self {
        Futex {
            state: AtomicU32::new(0),
        }
    }

    /// Marks it unlocked, whoever held it: only for a forked child, where
    /// the thread that held it at the fork does not exist. One atomic store,
    /// so it may run in a `pthread_atfork` child handler.
    pub(crate) fn reset_after_fork(&self) {
        self.state.store(0, Ordering::SeqCst);
    }

    fn wait(&self) {
        // SAFETY: FUTEX_WAIT on a valid, aligned u32 that lives as long as
        // self; the kernel only reads it. Returns at once unless it is 2.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.state.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                2u32,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }

    fn wake(&self) {
        // SAFETY: FUTEX_WAKE on a valid, aligned u32; wakes at most one.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.state.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1u32,
            )
        };
    }
}

/// The application's mutex callbacks (`CK_C_INITIALIZE_ARGS`), used when it
/// supplies them without `CKF_OS_LOCKING_OK`, as PKCS#11 requires.
#[derive(Clone, Copy)]
pub struct AppMutexes {
    create: unsafe extern "C" fn(*mut *mut c_void) -> CK_RV,
    destroy: unsafe extern "C" fn(*mut c_void) -> CK_RV,
    lock: unsafe extern "C" fn(*mut c_void) -> CK_RV,
    unlock: unsafe extern "C" fn(*mut c_void) -> CK_RV,
}

impl AppMutexes {
    /// All four callbacks, or `None` if any is missing.
    pub fn from_args(args: &CK_C_INITIALIZE_ARGS) -> Option<Self> {
        Some(AppMutexes {
            create: args.CreateMutex?,
            destroy: args.DestroyMutex?,
            lock: args.LockMutex?,
            unlock: args.UnlockMutex?,
        })
    }
}

/// The raw lock of sessions and slots.
pub enum HostLock {
    /// p11ha's own (OS) locking.
    Os(Futex),
    /// A mutex the application created for p11ha.
    App {
        /// The application's mutex object.
        mutex: *mut c_void,
        /// Its callbacks.
        calls: AppMutexes,
    },
}

// SAFETY: the futex is atomics only. An application mutex is an opaque
// object the application created for use from any thread (that is what
// CK_C_INITIALIZE_ARGS mutexes are for).
unsafe impl Send for HostLock {}
// SAFETY: as above.
unsafe impl Sync for HostLock {}

/// How locks are made for one `C_Initialize`.
#[derive(Clone, Copy)]
pub enum Locking {
    /// p11ha's own.
    Os,
    /// The application's callbacks.
    App(AppMutexes),
}

impl Locking {
    /// A new lock; `None` if the application's `CreateMutex` fails.
    pub fn make(self) -> Option<HostLock> {
        match self {
            Locking::Os => Some(HostLock::Os(Futex::new())),
            Locking::App(calls) => {
                let mut mutex = std::ptr::null_mut();
                // SAFETY: CreateMutex takes a pointer to where it stores the
                // new mutex; `mutex` is a valid location.
                let rv = unsafe { (calls.create)(&mut mutex) };
                (rv == CKR_OK && !mutex.is_null()).then_some(HostLock::App { mutex, calls })
            }
        }
    }
}

// SAFETY: the futex protocol admits one holder (the 0 -> 1 or 0 -> 2
// transition is made by exactly one thread; unlock resets to 0). The
// application's callbacks promise mutual exclusion by PKCS#11's contract; a
// failing LockMutex panics rather than proceed unlocked.
unsafe impl RawLock for HostLock {
    fn lock(&self) {
        match self {
            HostLock::Os(f) => {
                if f.state
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                while f.state.swap(2, Ordering::Acquire) != 0 {
                    f.wait();
                }
            }
            HostLock::App { mutex, calls } => {
                // SAFETY: mutex came from the application's CreateMutex.
                let rv = unsafe { (calls.lock)(*mutex) };
                // A lock that cannot be taken must not be treated as taken;
                // the panic is caught at the C boundary (CKR_GENERAL_ERROR).
                assert!(rv == CKR_OK, "the application's LockMutex failed");
            }
        }
    }

    fn try_lock(&self) -> bool {
        match self {
            HostLock::Os(f) => f
                .state
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok(),
            // PKCS#11 mutexes have no try-lock: block.
            HostLock::App { .. } => {
                self.lock();
                true
            }
        }
    }

    unsafe fn unlock(&self) {
        match self {
            HostLock::Os(f) => {
                if f.state.swap(0, Ordering::Release) == 2 {
                    f.wake();
                }
            }
            HostLock::App { mutex, calls } => {
                // SAFETY: the caller holds the lock, taken by LockMutex.
                unsafe { (calls.unlock)(*mutex) };
            }
        }
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        if let HostLock::App { mutex, calls } = self {
            // SAFETY: created by this application's CreateMutex, destroyed once.
            unsafe { (calls.destroy)(*mutex) };
        }
    }
}

/// Where events go on a host: in HA mode every event to the HA log; in
/// the other modes warnings and errors to stderr. A configuration problem
/// (an unreachable server, a label no token carries) goes to stderr in
/// every mode, where whoever starts the application looks first.
pub struct HostEvents {
    /// The HA log (HA mode).
    pub log: Option<HaLog>,
    /// The members that missed token writes, kept for later processes.
    pub sync: std::sync::Arc<crate::syncstate::SyncState>,
    /// What happened, counted (the live state's counters).
    pub counters: Counters,
    /// Whether member calls are timed into [`Counters::latency`]: only
    /// where the status socket can show them (the clock reads and the
    /// histogram's adds are a good part of a quick call's cost).
    pub timed: bool,
}

/// Every [`Event::name`], in the order of [`Counters::events`].
pub const EVENT_KINDS: [&str; 14] = [
    "hsm_failure",
    "member_dropped",
    "member_joined",
    "member_inconsistent",
    "not_recoverable",
    "hsm_dead",
    "member_recovered",
    "recovery_incomplete",
    "session_not_moved",
    "not_replicated",
    "needs_sync",
    "token_written",
    "refused",
    "bad_config",
];

/// Events counted since `C_Initialize`: one relaxed atomic add per event.
pub struct Counters {
    /// Events of each kind of [`EVENT_KINDS`].
    pub events: [AtomicU64; EVENT_KINDS.len()],
    /// Per member: its failures (taken out of service, HA or WLD mode).
    pub failures: [AtomicU64; crate::runtime::capacity::MEMBERS],
    /// Per member: its recoveries (back in service).
    pub recoveries: [AtomicU64; crate::runtime::capacity::MEMBERS],
    /// Per member: how long application sessions' calls took in it (when
    /// [`HostEvents::timed`]).
    pub latency: [Histogram; crate::runtime::capacity::MEMBERS],
}

/// The upper bounds of [`Histogram`]'s buckets, in microseconds (a last
/// bucket takes the rest).
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// Durations counted by bucket (not cumulative: a reader sums them), with
/// their sum: three relaxed atomic adds per duration.
pub struct Histogram {
    /// Counts per bucket of [`LATENCY_BOUNDS_US`], then beyond the last.
    pub buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    /// The sum of the durations, in microseconds.
    pub sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Counts one duration of `micros`.
    pub fn record(&self, micros: u64) {
        let i = LATENCY_BOUNDS_US.partition_point(|&b| b < micros);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            failures: std::array::from_fn(|_| AtomicU64::new(0)),
            recoveries: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| Histogram::default()),
        }
    }
}

impl Counters {
    /// Counts `event`.
    pub fn count(&self, event: &Event<'_>) {
        let name = event.name();
        if let Some(i) = EVENT_KINDS.iter().position(|k| *k == name) {
            self.events[i].fetch_add(1, Ordering::Relaxed);
        }
        let (per_member, index) = match *event {
            Event::HsmFailure { hsm_idx, .. } | Event::MemberDropped { hsm_idx, .. } => {
                (&self.failures, hsm_idx)
            }
            Event::MemberRecovered { hsm_idx, .. } => (&self.recoveries, hsm_idx),
            _ => return,
        };
        if let Some(c) = per_member.get(index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many events named `kind` were counted.
    pub fn of(&self, kind: &str) -> u64 {
        EVENT_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.events[i].load(Ordering::Relaxed))
    }
}

impl Events for HostEvents {
    fn times_calls(&self) -> bool {
        self.timed
    }

    fn member_call(&self, member: usize, micros: u64) {
        if let Some(h) = self.counters.latency.get(member) {
            h.record(micros);
        }
    }

    fn event(&self, event: &Event<'_>) {
        self.counters.count(event);
        if let Event::TokenWritten { members, .. } = *event
            && let Some(trouble) = self.sync.written(members)
        {
            self.event(&Event::BadConfig {
                key: "P11HA_STATE_DIR",
                problem: &trouble,
                fallback: "a later process does not know which HSMs hold this write",
            });
        }
        match &self.log {
            Some(log) => {
                log.write(event);
                if matches!(event, Event::BadConfig { .. }) {
                    report(event);
                }
            }
            None => report(event),
        }
    }
}

/// Writes an event to stderr if it is a warning or an error. Never fails
/// and never panics (a closed stderr is ignored).
pub fn report(event: &Event<'_>) {
    if event.severity() >= Severity::Warning {
        let _ = writeln!(
            std::io::stderr().lock(),
            "p11ha: {}: {event}",
            event.severity().as_str()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_go_to_the_bucket_of_their_upper_bound() {
        let h = Histogram::default();
        for us in [0, 100, 101, 5_000_000, 5_000_001] {
            h.record(us);
        }
        let counts: Vec<u64> = h
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 2, "le 100 us: 0 and 100");
        assert_eq!(counts[1], 1, "le 250 us: 101");
        assert_eq!(counts[LATENCY_BOUNDS_US.len() - 1], 1, "le 5 s");
        assert_eq!(counts[LATENCY_BOUNDS_US.len()], 1, "beyond");
        assert_eq!(h.sum_us.load(Ordering::Relaxed), 10_000_202);
    }

    #[test]
    fn every_event_kind_is_counted() {
        let c = Counters::default();
        c.count(&Event::HsmDead);
        c.count(&Event::HsmFailure {
            hsm_idx: 2,
            hsm_slot_id: 9,
        });
        assert_eq!((c.of("hsm_dead"), c.of("hsm_failure")), (1, 1));
        assert_eq!(c.failures[2].load(Ordering::Relaxed), 1);
    }
}
