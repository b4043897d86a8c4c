//! A member's transport on a board: any `embedded-io` stream that can say
//! whether it is ready (a UART here; a TCP socket of the board's own stack
//! would do as well), with the deadlines the RPC client relies on, and a
//! [`Connector`] that hands the stream out once.
//!
//! The deadlines are those of `p11ha_adapters::net` on a host: until
//! [`Connector::established`] is called (the version byte, `C_Initialize`,
//! the slot and token list are done), every read and write must end before
//! the *connect* deadline; after that, each call (a request and its reply)
//! gets the *call* deadline, which starts when the request starts to be
//! written (the client writes only after it has read the previous reply),
//! so a peer that trickles bytes cannot stretch it. A read or write past it
//! fails with [`ErrorKind::TimedOut`], which the client maps to
//! `TransportError::TimedOut`: a member failure, and a failover in HA mode.

use embedded_io::{Error as _, ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use p11ha_adapters::rpc::Connector;
use p11ha_core::error::TransportError;
use p11ha_core::port::Clock;

/// A stream whose reads and writes end at a deadline.
pub struct Deadlines<S, C> {
    inner: S,
    clock: C,
    call_ms: u64,
    /// The deadline of setting up, until the connection is established.
    setup: Option<u64>,
    /// The deadline of the call in progress.
    deadline: Option<u64>,
    /// Whether the last operation was a read: the next write starts a call.
    reading: bool,
}

impl<S, C: Clock> Deadlines<S, C> {
    /// `inner`, which must be set up within `connect_ms` from now, and then
    /// answer each call within `call_ms`.
    pub fn new(inner: S, clock: C, connect_ms: u32, call_ms: u32) -> Self {
        let setup = clock.now_ms() + u64::from(connect_ms.max(1));
        Deadlines {
            inner,
            clock,
            call_ms: u64::from(call_ms.max(1)),
            setup: Some(setup),
            deadline: None,
            reading: true,
        }
    }

    /// Setting up is over: from now on each call has the call deadline.
    pub fn established(&mut self) {
        self.setup = None;
    }

    /// The deadline that applies to the next read (`write` false) or write.
    fn arm(&mut self, write: bool) -> Result<u64, ErrorKind> {
        let now = self.clock.now_ms();
        if let Some(setup) = self.setup {
            self.deadline = Some(setup);
        } else if write && self.reading {
            self.deadline = Some(now + self.call_ms);
        }
        self.reading = !write;
        let deadline = *self.deadline.get_or_insert(now + self.call_ms);
        if now >= deadline {
            return Err(ErrorKind::TimedOut);
        }
        Ok(deadline)
    }

    /// Waits until `ready` says so, or the deadline passes.
    fn wait(
        &mut self,
        deadline: u64,
        mut ready: impl FnMut(&mut S) -> Result<bool, ErrorKind>,
    ) -> Result<(), ErrorKind> {
        loop {
            if ready(&mut self.inner)? {
                return Ok(());
            }
            if self.clock.now_ms() >= deadline {
                return Err(ErrorKind::TimedOut);
            }
            core::hint::spin_loop();
        }
    }
}

impl<S: ErrorType, C> ErrorType for Deadlines<S, C> {
    type Error = ErrorKind;
}

impl<S: Read + ReadReady, C: Clock> Read for Deadlines<S, C> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.arm(false)?;
        self.wait(deadline, |s| s.read_ready().map_err(|e| e.kind()))?;
        self.inner.read(buf).map_err(|e| e.kind())
    }
}

impl<S: Write + WriteReady, C: Clock> Write for Deadlines<S, C> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.arm(true)?;
        self.wait(deadline, |s| s.write_ready().map_err(|e| e.kind()))?;
        self.inner.write(buf).map_err(|e| e.kind())
    }

    /// Waits, within the deadline, until the stream can take more: for a
    /// UART, until its last byte has gone to the line.
    fn flush(&mut self) -> Result<(), ErrorKind> {
        let deadline = self.arm(true)?;
        self.wait(deadline, |s| s.write_ready().map_err(|e| e.kind()))
    }
}

/// Hands out one stream, once: a UART is one link to one server, and
/// cannot dial again. A second `connect` (the engine's recovery of a failed
/// member) is refused with `TransportError::Disconnected`, so a member on
/// a UART that failed stays failed.
pub struct OnceConnector<S, C> {
    stream: spin::Mutex<Option<S>>,
    clock: C,
    connect_ms: u32,
    call_ms: u32,
}

impl<S, C> OnceConnector<S, C> {
    /// A connector for `stream`, with the connect and call deadlines of
    /// [`Deadlines`], timed by `clock`.
    pub const fn new(stream: S, clock: C, connect_ms: u32, call_ms: u32) -> Self {
        OnceConnector {
            stream: spin::Mutex::new(Some(stream)),
            clock,
            connect_ms,
            call_ms,
        }
    }
}

impl<S, C> Connector for OnceConnector<S, C>
where
    S: Read + Write + ReadReady + WriteReady + Send,
    C: Clock + Copy,
{
    type Stream = Deadlines<S, C>;

    fn connect(&self) -> Result<Self::Stream, TransportError> {
        let stream = self
            .stream
            .lock()
            .take()
            .ok_or(TransportError::Disconnected)?;
        Ok(Deadlines::new(
            stream,
            self.clock,
            self.connect_ms,
            self.call_ms,
        ))
    }

    fn established(&self, stream: &mut Self::Stream) {
        stream.established();
    }
}
