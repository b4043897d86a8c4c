//! p11ha's HA core on a microcontroller: a Cortex-M4 (QEMU's mps2-an386)
//! with no std, no heap and no OS signs with two HSMs, each a
//! `p11-kit server` at the other end of a UART, and fails over from one to
//! the other without the application noticing.
//!
//! The flow: make the engine (HA mode, virtual slot 0 = the tokens
//! labelled `TokName`), connect both members (each UART: RPC version,
//! `C_Initialize`, token list), open one session, log in, find the private
//! key `ec-key`, then [`SIGNATURES`] times: a multi-part SHA-256 digest of
//! `firmware message <i>` through the HSM, and a raw ECDSA signature of that
//! digest. Each signature is logged (defmt) with the member that made it;
//! the host test kills the server behind the session after a few and
//! checks that every signature arrives and verifies. The exit status
//! (semihosting) is 0 only if every signature was made.
//!
//! Modules: [`uart`] (the board's UARTs), [`deadline`] (a member's stream
//! with deadlines, and its connector), [`board`] (the platform: clock,
//! events, lock, storage, capacities).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod board;
mod deadline;
mod uart;

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::{ExceptionFrame, entry, exception};
use defmt::{Display2Format, error, info};
use p11ha_adapters::rpc::RpcMember;
use p11ha_core::ck::{attr, class, flags, mech, ulong_bytes, user};
use p11ha_core::config::{Config, Mode, WldSlots};
use p11ha_core::engine::{LoginCell, MemberCell, SessionCell, SlotCell, Storage};
use p11ha_core::handles::{IndexCell, ObjectEntry};
use p11ha_core::journal::Journal;
use p11ha_core::port::{Attr, Clock, Mechanism, Op, Param};
use p11ha_core::sync::SpinLock;
use p11ha_core::{Engine, Error};

// The defmt logger: frames go to semihosting stdout (QEMU's stdout).
use defmt_semihosting as _;

use board::{
    Arena, Board, DefmtEvents, Hsm, Region, StaticCell, SysTickClock, TABLE_BYTES, UartConnector,
    capacity,
};
use uart::Uart;

/// Signatures made on the one session.
const SIGNATURES: usize = 40;
/// The pause between two signatures, in milliseconds: a device that signs
/// now and then, rather than flat out (one signature takes about 10 ms
/// here), so that the host test can kill a server in the middle of the run.
const PACE_MS: u64 = 50;
/// Stack that must stay unused (see `stack_usage`).
const STACK_MARGIN: usize = 256;
/// The user PIN of the test tokens (`scripts/mktokens.sh`).
const PIN: &[u8] = b"1234";
/// The label of the signing key (`scripts/mktokens.sh`: EC P-256, id 01).
const KEY_LABEL: &[u8] = b"ec-key";

/// The configuration: HA mode over the tokens labelled `TokName`, no
/// recovery (a UART member that failed does not come back), the data length
/// limit of this build. A `static`: nothing of it is on the stack.
static CONFIG: Config = Config {
    mode: Mode::Ha,
    wld_slots: WldSlots::new().with(0, "TokName"),
    recover_delay_minutes: 0,
    update_limit: Some(capacity::UPDATE_LIMIT),
    ..Config::new()
};

// The engine's tables and buffers: statics, handed out once.
static TABLES: Arena<TABLE_BYTES> = Arena::new();
static JOURNALS: Region<[u8; capacity::JOURNAL], { capacity::SESSIONS }> = Region::new();
static RPC_BUFFERS: Region<[u8; capacity::RPC_BUFFER], { capacity::MEMBERS }> = Region::new();

/// Why the flow stopped: the step, and the engine's error.
struct Failure {
    step: &'static str,
    error: Option<Error>,
}

/// `.map_err(at("step"))`: names the step an engine error came from.
fn at(step: &'static str) -> impl FnOnce(Error) -> Failure {
    move |error| Failure {
        step,
        error: Some(error),
    }
}

/// An engine error in words.
struct Why(Error);

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::Rv(rv) => write!(f, "{rv}"),
            Error::BufferTooSmall { needed } => write!(f, "buffer too small ({needed} needed)"),
            Error::Transport(t) => write!(f, "transport: {t}"),
            // The engine's own; never returned by a call.
            Error::Elsewhere { member } => write!(f, "object on member {member}"),
        }
    }
}

#[entry]
fn main() -> ! {
    let Some(cp) = cortex_m::Peripherals::take() else {
        exit(3);
    };
    let clock = SysTickClock::start(cp.SYST);
    info!(
        "p11ha firmware: {=usize} signatures on one session over 2 HSMs",
        SIGNATURES
    );
    log_sizes();
    let outcome = make_engine(clock).and_then(|engine| run(engine, clock));
    let (used, size) = stack_usage();
    info!(
        "stack: {=usize} of {=usize} bytes used at the deepest",
        used, size
    );
    let code = match outcome {
        // Nothing guards the end of the stack: if it came this close, it
        // may have run into the statics below it.
        Ok(()) if used + STACK_MARGIN > size => {
            error!("the stack came within {=usize} bytes of .bss", size - used);
            4
        }
        Ok(()) => 0,
        Err(Failure { step, error }) => {
            match error {
                Some(e) => error!("{=str} failed: {}", step, Display2Format(&Why(e))),
                None => error!("{=str} failed", step),
            }
            1
        }
    };
    exit(code)
}

/// The engine lives here, for the life of the firmware, rather than in
/// `main`'s frame: its 7.6 KiB count in `.bss`, where the link checks them.
static ENGINE: StaticCell<Result<Engine<Board>, Error>> = StaticCell::new();

/// The storage and the engine. Not inlined: the engine passes through this
/// function's frame by value, and that frame is gone once the engine is in
/// its static.
#[inline(never)]
fn make_engine(clock: SysTickClock) -> Result<&'static Engine<Board>, Failure> {
    let room = ENGINE.uninit().ok_or_else(taken)?;
    let mut journals = JOURNALS
        .take(|_| [0; capacity::JOURNAL])
        .ok_or_else(taken)?
        .iter_mut();
    let mut tables = TABLES.take().ok_or_else(taken)?;
    let storage = Storage::build(
        &capacity::TABLES,
        &mut tables,
        || Some(SpinLock::new()),
        |_| {
            let buf: &'static mut [u8] = journals.next().map_or(&mut [], |j| &mut j[..]);
            Journal::new(buf, capacity::JOURNAL_LAYOUT, capacity::UPDATE_LIMIT)
        },
    )
    .map_err(at("storage"))?;
    let seed = clock.now_ms() ^ u64::from(cortex_m::peripheral::SYST::get_current());
    let engine = room.write(Engine::new(
        &CONFIG,
        storage,
        DefmtEvents::new(),
        clock,
        seed,
    ));
    engine.as_ref().map_err(|&e| at("Engine::new")(e))
}

fn taken() -> Failure {
    Failure {
        step: "storage (taken twice)",
        error: None,
    }
}

/// Connects the members, then signs.
#[inline(never)]
fn run(engine: &'static Engine<Board>, clock: SysTickClock) -> Result<(), Failure> {
    let (connect_ms, call_ms) = (capacity::CONNECT_TIMEOUT_MS, capacity::CALL_TIMEOUT_MS);
    let mut buffers = RPC_BUFFERS
        .take(|_| [0; capacity::RPC_BUFFER])
        .ok_or_else(taken)?
        .iter_mut();
    for (i, base) in [uart::UART0, uart::UART1].into_iter().enumerate() {
        // SAFETY: UART0 and UART1 are the board's CMSDK UARTs, each taken
        // once here and then owned by its connector.
        let uart = unsafe { Uart::take(base) };
        let connector = UartConnector::new(uart, clock, connect_ms, call_ms);
        let buf: &'static mut [u8] = buffers.next().map_or(&mut [], |b| &mut b[..]);
        join(engine, clock, i, connector, buf)?;
    }

    let session = engine
        .open_session(0, flags::SERIAL_SESSION)
        .map_err(at("C_OpenSession"))?;
    engine
        .login(session, user::USER, Some(PIN))
        .map_err(at("C_Login"))?;
    let key = find_key(engine, session)?;
    info!(
        "session {=u64} on member {=usize}, logged in; key {=u64}",
        session,
        engine
            .session_member(session)
            .map_err(at("session_member"))?,
        key
    );

    let start = clock.now_ms();
    let mut signed = 0;
    for i in 0..SIGNATURES {
        if i > 0 {
            pause(clock, PACE_MS);
        }
        let mut message = heapless::String::<32>::new();
        // "firmware message " and an index below 10^15 fit.
        let _ = write!(message, "firmware message {i}");
        let signature = sign(engine, session, key, message.as_bytes())?;
        signed += 1;
        let member = engine
            .session_member(session)
            .map_err(at("session_member"))?;
        let mut hex = [0u8; 2 * 128];
        let hex = hex_of(&signature.bytes[..signature.len], &mut hex);
        info!(
            "signature {=usize} of message {=usize} on member {=usize}: {=str}",
            signed, i, member, hex
        );
    }
    let elapsed = clock.now_ms() - start;
    engine
        .close_session(session)
        .map_err(at("C_CloseSession"))?;
    info!(
        "summary: {=usize} of {=usize} signatures, {=u32} failover(s), {=u64} ms",
        signed,
        SIGNATURES,
        engine.events().failovers(),
        elapsed
    );
    Ok(())
}

/// One UART's server as a member: RPC version, `C_Initialize`, token
/// list; then the engine checks the token's label and opens its anchor
/// session there. Not inlined, for the stack (the member is moved by value
/// into the engine).
#[inline(never)]
fn join(
    engine: &Engine<Board>,
    clock: SysTickClock,
    uart: usize,
    connector: UartConnector,
    buf: &'static mut [u8],
) -> Result<(), Failure> {
    let t = clock.now_ms();
    let (member, tokens) =
        RpcMember::connect(connector, || Some(SpinLock::new()), [buf], 0).map_err(at("connect"))?;
    info!(
        "UART{=usize}: p11-kit server with {=usize} token(s), connected in {=u64} ms",
        uart,
        tokens,
        clock.now_ms() - t
    );
    match engine.add_member(member).map_err(at("add_member"))? {
        Some(index) => {
            info!("UART{=usize} is member {=usize}", uart, index);
            Ok(())
        }
        None => Err(Failure {
            step: "add_member (no token labelled TokName)",
            error: None,
        }),
    }
}

/// Sleeps (WFI, woken by SysTick) for `ms` milliseconds.
fn pause(clock: SysTickClock, ms: u64) {
    let until = clock.now_ms() + ms;
    while clock.now_ms() < until {
        cortex_m::asm::wfi();
    }
}

/// The private key labelled [`KEY_LABEL`]: exactly one.
fn find_key(engine: &Engine<Board>, session: u64) -> Result<u64, Failure> {
    let class = ulong_bytes(class::PRIVATE_KEY);
    let template = [
        Attr {
            ty: attr::CLASS,
            value: &class,
        },
        Attr {
            ty: attr::LABEL,
            value: KEY_LABEL,
        },
    ];
    engine
        .find_init(session, &template)
        .map_err(at("C_FindObjectsInit"))?;
    let mut found = [0u64; 2];
    let n = engine
        .find(session, &mut found)
        .map_err(at("C_FindObjects"))?;
    engine
        .find_final(session)
        .map_err(at("C_FindObjectsFinal"))?;
    if n != 1 {
        return Err(Failure {
            step: "finding the one private key labelled ec-key",
            error: None,
        });
    }
    Ok(found[0])
}

/// A signature, as the HSM returned it.
struct Signature {
    bytes: [u8; 128],
    len: usize,
}

/// SHA-256 of `message` in three parts through the HSM, then CKM_ECDSA of
/// that digest.
fn sign(
    engine: &Engine<Board>,
    session: u64,
    key: u64,
    message: &[u8],
) -> Result<Signature, Failure> {
    let sha256 = Mechanism {
        ty: mech::SHA256,
        param: Param::None,
    };
    engine
        .op_init(session, Op::Digest, &sha256, 0)
        .map_err(at("C_DigestInit"))?;
    let third = message.len() / 3;
    let (a, rest) = message.split_at(third);
    let (b, c) = rest.split_at(third);
    for part in [a, b, c] {
        engine
            .op_update(session, Op::Digest, part, None)
            .map_err(at("C_DigestUpdate"))?;
    }
    let mut digest = [0u8; 32];
    let n = engine
        .op_final(session, Op::Digest, Some(&mut digest))
        .map_err(at("C_DigestFinal"))?;
    if n != digest.len() {
        return Err(Failure {
            step: "C_DigestFinal (not 32 bytes)",
            error: None,
        });
    }
    let ecdsa = Mechanism {
        ty: mech::ECDSA,
        param: Param::None,
    };
    engine
        .op_init(session, Op::Sign, &ecdsa, key)
        .map_err(at("C_SignInit"))?;
    let mut signature = Signature {
        bytes: [0; 128],
        len: 0,
    };
    signature.len = engine
        .op_single(session, Op::Sign, &digest, Some(&mut signature.bytes))
        .map_err(at("C_Sign"))?;
    Ok(signature)
}

/// `bytes` in lower-case hex, in `out` (twice as long).
fn hex_of<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = bytes.len().min(out.len() / 2);
    for (i, b) in bytes[..n].iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    // Only ASCII digits were written.
    core::str::from_utf8(&out[..2 * n]).unwrap_or("")
}

/// The sizes behind the capacities, for the README's figures.
fn log_sizes() {
    use core::mem::size_of;
    info!(
        "sizes (bytes): member {=usize}, slot {=usize} + login {=usize}, session {=usize} + journal {=usize}, object {=usize}, index entry {=usize}, RPC buffer {=usize}, tables {=usize}, engine {=usize}, config {=usize}",
        size_of::<MemberCell<Hsm>>(),
        size_of::<SlotCell>(),
        size_of::<LoginCell<SpinLock>>(),
        size_of::<SessionCell<SpinLock, &'static mut [u8]>>(),
        capacity::JOURNAL,
        size_of::<ObjectEntry>(),
        size_of::<IndexCell>(),
        capacity::RPC_BUFFER,
        TABLE_BYTES,
        size_of::<Engine<Board>>(),
        size_of::<Config>()
    );
}

/// How deep the stack went (bytes below its top that are no longer
/// cortex-m-rt's paint), and its size (from the end of `.bss`/`.uninit`
/// to the top of RAM).
fn stack_usage() -> (usize, usize) {
    // Symbols of cortex-m-rt's linker script; only their addresses are used.
    unsafe extern "C" {
        static _stack_start: u32;
        static _stack_end: u32;
    }
    let top = (&raw const _stack_start) as usize;
    let bottom = (&raw const _stack_end) as usize;
    let mut p = bottom;
    // SAFETY: [bottom, top) is the stack region of cortex-m-rt's linker
    // script: RAM, 4-byte aligned, painted at reset; reading a word of it
    // (in use or not) is a plain memory read.
    while p < top
        && unsafe { core::ptr::read_volatile(p as *const u32) } == cortex_m_rt::STACK_PAINT_VALUE
    {
        p += 4;
    }
    (top - p, top - bottom)
}

/// Ends the QEMU run with `code` as its exit status (semihosting
/// SYS_EXIT_EXTENDED).
fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

/// A fault (a bad address, an undefined instruction) ends the run with
/// status 102. cortex-m-rt wants this handler declared `unsafe fn`; it
/// does nothing unsafe.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    error!("hard fault at pc {=u32:#010x}", frame.pc());
    exit(102)
}

/// A panic is logged, and ends the run with status 101. A panic inside a
/// log statement (the logger taken) would panic again in the logger: that
/// one ends the run at once.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    static PANICKING: AtomicBool = AtomicBool::new(false);
    if !PANICKING.swap(true, Ordering::Relaxed) {
        error!("panic: {}", Display2Format(info));
    }
    exit(101)
}
