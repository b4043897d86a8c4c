//! The platform p11ha's core runs on here: what `p11ha_core::port`
//! asks of a board, for a Cortex-M4 with no OS, no threads and no heap.
//!
//! - members: `p11-kit server`s reached over the two UARTs, each through
//!   the core's RPC client ([`Hsm`]);
//! - lock: the core's [`SpinLock`] (one core, no threads: it is never
//!   contended, and an interrupt handler never calls the engine);
//! - clock: SysTick, one interrupt per millisecond ([`SysTickClock`]);
//! - events: defmt, in PTK's words ([`DefmtEvents`]);
//! - storage: the engine's tables carved once out of one static
//!   ([`Arena`], sized at compile time for [`capacity::TABLES`]), and
//!   buffers in statics ([`Region`]).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use defmt::Display2Format;
use p11ha_adapters::rpc::RpcMember;
use p11ha_core::ck::Rv;
use p11ha_core::engine::{Storage, Tables};
use p11ha_core::event::{Event, Severity};
use p11ha_core::port::{Clock, Events, Platform};
use p11ha_core::{Error, Result};
use p11ha_core::sync::SpinLock;

use crate::deadline::OnceConnector;
use crate::uart::Uart;

/// Capacities of this build, all in one place. Each table costs its
/// capacity times the size of its entry, in `.bss`; the firmware logs the
/// entry sizes at start.
pub mod capacity {
    use p11ha_core::engine::Capacity;
    use p11ha_core::journal::Layout;

    /// Members: one per UART.
    pub const MEMBERS: usize = 2;
    /// Virtual slots: `ET_PTKC_WLD_SLOT_0` only.
    pub const SLOTS: usize = 1;
    /// Application sessions open at once (the flow uses one).
    pub const SESSIONS: usize = 4;
    /// Virtual objects (token objects found, session objects made).
    pub const OBJECTS: usize = 32;
    /// The engine's tables (the objects' reverse index is twice the
    /// objects).
    pub const TABLES: Capacity = Capacity {
        members: MEMBERS,
        slots: SLOTS,
        sessions: SESSIONS,
        objects: OBJECTS,
    };
    /// HA mode: Update data kept per operation (`P11HA_HA_UPDATE_LIMIT`
    /// may lower it): a multi-part operation with more is still carried
    /// out, but cannot fail over.
    pub const UPDATE_LIMIT: usize = 512;
    /// HA mode: the rest of a session's journal. No session objects are
    /// made here, the search template is a class and a label, and the
    /// mechanisms have no parameter; this leaves room for a few of each.
    pub const JOURNAL_LAYOUT: Layout = Layout {
        recipes: 256,
        find_template: 128,
        op_param: 64,
        found: 64,
    };
    /// One session's journal buffer.
    pub const JOURNAL: usize = JOURNAL_LAYOUT.fixed() + UPDATE_LIMIT;
    /// Each member's RPC buffer: it bounds the largest request or reply.
    /// This flow's are a few hundred bytes (it runs with 512); 2 KiB lets a
    /// call carry up to about 1.9 KiB of data.
    pub const RPC_BUFFER: usize = 2048;
    /// How long connecting to a member's server (and the handshake) may
    /// take.
    pub const CONNECT_TIMEOUT_MS: u32 = 5000;
    /// How long one call to a member may take before it is taken for
    /// failed.
    pub const CALL_TIMEOUT_MS: u32 = 2000;
}

/// The board, as the engine's platform.
pub struct Board;

/// An HSM: one token of a `p11-kit server` at the other end of a UART.
pub type Hsm = RpcMember<UartConnector, SpinLock, &'static mut [u8]>;

/// The connector of a UART member: the UART, once, with deadlines.
pub type UartConnector = OnceConnector<Uart, SysTickClock>;

impl Platform for Board {
    type Member = Hsm;
    type Lock = SpinLock;
    type Events = DefmtEvents;
    type Clock = SysTickClock;
    type Journal = &'static mut [u8];
    type Store<T: Send + Sync + 'static> = &'static mut [T];
}

// ---- clock --------------------------------------------------------------

/// SysTick's clock: the processor clock, 25 MHz on the MPS2 boards.
pub const CORE_HZ: u32 = 25_000_000;

/// Milliseconds since [`SysTickClock::start`], low and high words: a
/// Cortex-M4 has no 64-bit atomics. Only the SysTick handler writes them.
static MS_LO: AtomicU32 = AtomicU32::new(0);
static MS_HI: AtomicU32 = AtomicU32::new(0);

/// Monotonic milliseconds from a SysTick interrupt every millisecond.
#[derive(Clone, Copy)]
pub struct SysTickClock;

impl SysTickClock {
    /// Starts SysTick: an interrupt every millisecond, from the processor
    /// clock.
    pub fn start(mut syst: SYST) -> SysTickClock {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(CORE_HZ / 1000 - 1);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        SysTickClock
    }
}

impl Clock for SysTickClock {
    fn now_ms(&self) -> u64 {
        // The handler may run between the reads: read the high word on both
        // sides of the low one until it did not change.
        loop {
            let hi = MS_HI.load(Ordering::Acquire);
            let lo = MS_LO.load(Ordering::Acquire);
            if MS_HI.load(Ordering::Acquire) == hi {
                return (u64::from(hi) << 32) | u64::from(lo);
            }
        }
    }
}

#[exception]
fn SysTick() {
    let lo = MS_LO.load(Ordering::Relaxed).wrapping_add(1);
    if lo == 0 {
        MS_HI.fetch_add(1, Ordering::Release);
    }
    MS_LO.store(lo, Ordering::Release);
}

defmt::timestamp!("{=u64:ms}", SysTickClock.now_ms());

// ---- events -------------------------------------------------------------

/// The engine's events, logged with defmt in PTK's words (the core's
/// `Display` of each event), at the level of their PTK message type.
/// Failovers ("HSM Failure detected") are counted.
pub struct DefmtEvents {
    failovers: AtomicU32,
}

impl DefmtEvents {
    /// No event seen yet.
    pub const fn new() -> Self {
        DefmtEvents {
            failovers: AtomicU32::new(0),
        }
    }

    /// How many times a member failed under a session and the session was
    /// moved.
    pub fn failovers(&self) -> u32 {
        self.failovers.load(Ordering::Relaxed)
    }
}

impl Events for DefmtEvents {
    fn event(&self, event: &Event<'_>) {
        if matches!(event, Event::HsmFailure { .. }) {
            self.failovers.fetch_add(1, Ordering::Relaxed);
        }
        match event.severity() {
            Severity::Info => defmt::info!("HA: {}", Display2Format(event)),
            Severity::Warning => defmt::warn!("HA: {}", Display2Format(event)),
            Severity::Error => defmt::error!("HA: {}", Display2Format(event)),
        }
    }
}

// ---- storage ------------------------------------------------------------

/// Room for `N` values of `T` in a static, handed out once as a
/// `&'static mut [T]`: the engine's `Store`, with no allocator.
pub struct Region<T, const N: usize> {
    taken: AtomicBool,
    cells: UnsafeCell<MaybeUninit<[T; N]>>,
}

// SAFETY: the cells are reached only through the one `&'static mut [T]`
// that `take` hands out (guarded by `taken`), so sharing the Region shares
// nothing; moving that slice to another context moves the T's (T: Send).
unsafe impl<T: Send, const N: usize> Sync for Region<T, N> {}

impl<T, const N: usize> Region<T, N> {
    /// Uninitialised room (in `.bss`).
    pub const fn new() -> Self {
        Region {
            taken: AtomicBool::new(false),
            cells: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The `N` values, made by `init(0)`, `init(1)`... in place. `None` if
    /// the region was taken already.
    pub fn take(&'static self, mut init: impl FnMut(usize) -> T) -> Option<&'static mut [T]> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        let base = self.cells.get().cast::<T>();
        for i in 0..N {
            // SAFETY: i < N, so base + i is inside the array; `taken` was
            // false, so nothing else refers to these cells; the write does
            // not drop the uninitialised value it replaces.
            unsafe { base.add(i).write(init(i)) };
        }
        // SAFETY: all N values are initialised above; the region lives
        // forever and `taken` makes this the only reference to it.
        Some(unsafe { core::slice::from_raw_parts_mut(base, N) })
    }
}

/// The bytes the engine's tables take here.
pub const TABLE_BYTES: usize = Storage::<Board>::bytes(&capacity::TABLES);

/// `N` bytes of a static, aligned for any table entry, from which the
/// engine's tables are carved once ([`Tables`]): the engine's `Store`, with
/// no allocator, and a size the link checks.
pub struct Arena<const N: usize> {
    taken: AtomicBool,
    bytes: UnsafeCell<Aligned<N>>,
}

/// Bytes at an address aligned for every entry of the engine's tables.
#[repr(C, align(8))]
struct Aligned<const N: usize>(MaybeUninit<[u8; N]>);

// SAFETY: the bytes are reached only through the one `Carver` that `take`
// hands out (guarded by `taken`), which hands each byte out once, as part of
// one table; moving a table to another context moves its T's (T: Send).
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    /// Uninitialised room (in `.bss`).
    pub const fn new() -> Self {
        Arena {
            taken: AtomicBool::new(false),
            bytes: UnsafeCell::new(Aligned(MaybeUninit::uninit())),
        }
    }

    /// The carver of its bytes, once. `None` if it was taken already.
    pub fn take(&'static self) -> Option<Carver> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(Carver {
            base: self.bytes.get().cast::<u8>(),
            len: N,
            used: 0,
        })
    }
}

/// Hands out the tables of an [`Arena`], each from the bytes after the last.
pub struct Carver {
    base: *mut u8,
    len: usize,
    used: usize,
}

impl Tables<Board> for Carver {
    fn table<T: Send + Sync + 'static>(
        &mut self,
        len: usize,
        mut init: impl FnMut(usize) -> Result<T>,
    ) -> Result<&'static mut [T]> {
        let full = Error::Rv(Rv::HOST_MEMORY);
        let align = core::mem::align_of::<T>();
        // The base is 8-aligned, so an offset aligned for T is an address
        // aligned for T.
        if align > 8 {
            return Err(full);
        }
        let start = self.used.next_multiple_of(align);
        let end = core::mem::size_of::<T>()
            .checked_mul(len)
            .and_then(|n| n.checked_add(start))
            .filter(|&end| end <= self.len)
            .ok_or(full)?;
        // SAFETY: start <= end <= len, inside the arena's bytes.
        let first = unsafe { self.base.add(start) }.cast::<T>();
        for i in 0..len {
            // SAFETY: i < len, so the entry lies in [start, end), bytes no
            // other table was given (they start after `used`); it is aligned
            // for T (above); writing does not drop the uninitialised bytes.
            // If `init` fails, the entries written stay unreachable (never
            // dropped): the firmware stops.
            unsafe { first.add(i).write(init(i)?) };
        }
        self.used = end;
        // SAFETY: all `len` entries are initialised above, in bytes of a
        // static that lives for ever and that no other table overlaps.
        Ok(unsafe { core::slice::from_raw_parts_mut(first, len) })
    }
}

/// Room for one `T` in a static, handed out once, uninitialised, for the
/// caller to write the value into (the engine: it lives for ever, and
/// counts in `.bss` rather than on the stack).
pub struct StaticCell<T> {
    taken: AtomicBool,
    cell: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: as for Region: the value is reached only through the one
// `&'static mut T` that `init` hands out.
unsafe impl<T: Send> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    /// Uninitialised room (in `.bss`).
    pub const fn new() -> Self {
        StaticCell {
            taken: AtomicBool::new(false),
            cell: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The room, uninitialised, for the caller to write the value into
    /// (`MaybeUninit::write`). `None` if it was handed out already.
    pub fn uninit(&'static self) -> Option<&'static mut MaybeUninit<T>> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: `taken` was false, so nothing else refers to the cell, and
        // nothing will: this is the only reference, for ever.
        Some(unsafe { &mut *self.cell.get() })
    }
}
