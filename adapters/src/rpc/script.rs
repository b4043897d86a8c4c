//! Test tooling (feature `script`, and the crate's own tests): a scripted
//! stand-in for a `p11-kit server`, so that the client's unhappy paths can
//! be driven deterministically, byte by byte.
//!
//! It stands in for a server only for what a real p11-kit server cannot be
//! made to send: malformed, truncated, mislabelled or oversized replies,
//! hang-ups and timeouts at chosen points. The well-formed paths are tested
//! against real `p11-kit server` processes elsewhere (the integration
//! tests, `tests/tests/remote*.rs`), which is where the protocol's meaning
//! is checked; a script only checks that the client survives what it is
//! given.
//!
//! A [`Script`] is a queue of [`Step`]s shared by every connection its
//! [`ScriptConnector`] opens: a connection that reads takes the next step.
//! A reply frame's header is made when it is served, with the call code of
//! the request just written on that connection, so that tests and fuzzers
//! give bodies only. Everything the client writes is recorded (the version
//! bytes it offers, every complete request frame, the byte count), so that
//! a test can check what was sent, and that nothing was. When the script
//! runs out, reads see end-of-file, as from a server that hung up.
//!
//! Uses std (shared state behind `Arc<Mutex<..>>`): it is never part of a
//! firmware build.

extern crate std;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

use embedded_io::{ErrorKind, ErrorType, Read, Write};
use p11ha_core::error::TransportError;

use super::{Connector, Token};

/// What the server does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Answers the version byte of a connection's handshake.
    Version(u8),
    /// A reply frame with this body. Its header carries the code of the
    /// last request written on the connection (0 if none), options length
    /// 0 and the body's length.
    Reply(Vec<u8>),
    /// Bytes served as they are, unframed: a bad header, a frame cut
    /// short, a version byte and a frame at once.
    Raw(Vec<u8>),
    /// The connection that reads this hangs up: this read and every later
    /// one on it see end-of-file, and writes to it fail. Later steps go to
    /// the next connection.
    HangUp,
    /// The read that meets this fails with a timeout (the deadline of the
    /// call passed); the connection stays, and a later read reads on.
    TimedOut,
    /// The next `connect()` fails, as with nobody listening. Taken when a
    /// connection is opened, if it is the next step.
    Refuse,
}

/// A request frame the client wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Which connection it was written on (the first is 0).
    pub connection: usize,
    /// The call code in its header.
    pub code: u32,
    /// Its options area.
    pub options: Vec<u8>,
    /// Its body: call id, signature, values.
    pub body: Vec<u8>,
}

impl Frame {
    /// The call id, if the body holds one.
    pub fn call_id(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.body.get(..4)?.try_into().ok()?))
    }

    /// The signature, if the body holds one.
    pub fn signature(&self) -> Option<&[u8]> {
        let n = u32::from_be_bytes(self.body.get(4..8)?.try_into().ok()?) as usize;
        self.body.get(8..8usize.checked_add(n)?)
    }

    /// The values after the signature (empty if the body is cut short).
    pub fn values(&self) -> &[u8] {
        let at = self.signature().map_or(self.body.len(), |s| 8 + s.len());
        &self.body[at..]
    }
}

#[derive(Default)]
struct Shared {
    steps: VecDeque<Step>,
    /// What each connection was sent after its version byte.
    sent: Vec<Vec<u8>>,
    offers: Vec<u8>,
    written: usize,
    chunk: usize,
}

/// The first complete frame of `b`: its code, options, body, and length.
fn frame(b: &[u8]) -> Option<(u32, &[u8], &[u8], usize)> {
    let word = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let (code, options, body) = (word(0)?, word(4)? as usize, word(8)? as usize);
    let split = options.checked_add(12)?;
    let end = split.checked_add(body)?;
    Some((code, b.get(12..split)?, b.get(split..end)?, end))
}

/// A server's script, and the record of what the client sent. Clones
/// share both.
#[derive(Clone, Default)]
pub struct Script(Arc<Mutex<Shared>>);

impl Script {
    /// An empty script: every connection sees end-of-file at once.
    pub fn new() -> Self {
        Self::default()
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // A test that panicked while holding it leaves nothing half-done.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a step.
    pub fn push(&self, step: Step) -> &Self {
        self.shared().steps.push_back(step);
        self
    }

    /// Appends a version answer.
    pub fn version(&self, v: u8) -> &Self {
        self.push(Step::Version(v))
    }

    /// Appends a reply frame with this body.
    pub fn reply(&self, body: impl Into<Vec<u8>>) -> &Self {
        self.push(Step::Reply(body.into()))
    }

    /// Appends an error frame carrying `rv`.
    pub fn error(&self, rv: u64) -> &Self {
        self.reply(Body::error(rv))
    }

    /// Appends raw bytes.
    pub fn raw(&self, bytes: impl Into<Vec<u8>>) -> &Self {
        self.push(Step::Raw(bytes.into()))
    }

    /// Appends a hang-up.
    pub fn hang_up(&self) -> &Self {
        self.push(Step::HangUp)
    }

    /// Appends the replies of a good `RpcMember::connect` after the
    /// handshake: `C_Initialize`, `C_GetSlotList` listing `tokens`' slots,
    /// and `C_GetTokenInfo` for each.
    pub fn serve_connect(&self, tokens: &[Token]) -> &Self {
        self.reply(Body::new(1, ""));
        let mut list = Body::new(4, "au");
        list.byte(1).u32(tokens.len() as u32);
        for t in tokens {
            list.ulong(t.slot);
        }
        self.reply(list);
        for t in tokens {
            self.reply(Body::token_info(&t.label, &t.serial));
        }
        self
    }

    /// The most bytes one read or one write moves (0, the default: no
    /// limit), to exercise the client's loops over short reads and writes.
    pub fn chunk(&self, n: usize) -> &Self {
        self.shared().chunk = n;
        self
    }

    /// A connector whose streams play this script.
    pub fn connector(&self) -> ScriptConnector {
        ScriptConnector(self.clone())
    }

    /// Every complete request frame written so far, connection by
    /// connection, each in the order written.
    pub fn frames(&self) -> Vec<Frame> {
        let mut frames = Vec::new();
        for (connection, mut b) in self.shared().sent.iter().map(|b| &b[..]).enumerate() {
            while let Some((code, options, body, end)) = frame(b) {
                frames.push(Frame {
                    connection,
                    code,
                    options: options.to_vec(),
                    body: body.to_vec(),
                });
                b = &b[end..];
            }
        }
        frames
    }

    /// The version bytes offered, one per handshake.
    pub fn offers(&self) -> Vec<u8> {
        self.shared().offers.clone()
    }

    /// Every byte written so far, counted.
    pub fn written(&self) -> usize {
        self.shared().written
    }

    /// Connections opened so far (refused ones not counted).
    pub fn connections(&self) -> usize {
        self.shared().sent.len()
    }

    /// Steps not yet served.
    pub fn remaining(&self) -> usize {
        self.shared().steps.len()
    }
}

/// A reply body under construction: big-endian values after a call id and
/// a signature, as [`Step::Reply`] wants them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body(pub Vec<u8>);

impl Body {
    /// A body for call `id` with reply signature `sig`.
    pub fn new(id: u32, sig: &str) -> Self {
        let mut b = Body(Vec::new());
        b.u32(id).bytes(sig.as_bytes());
        b
    }

    /// An error frame's body: call id 0, signature `u`, `rv`.
    pub fn error(rv: u64) -> Self {
        let mut b = Body::new(0, "u");
        b.ulong(rv);
        b
    }

    /// A `C_GetTokenInfo` reply with this label and serial (other fields
    /// as SoftHSM shows them, give or take).
    pub fn token_info(label: &[u8; 32], serial: &[u8; 16]) -> Self {
        let mut b = Body::new(6, "ssssuuuuuuuuuuuvvs");
        b.fixed(label)
            .fixed(&[b' '; 32])
            .fixed(b"SoftHSM v2      ")
            .fixed(serial);
        b.ulong(0x40d);
        for _ in 0..10 {
            b.ulong(u64::MAX);
        }
        b.raw(&[2, 6, 2, 6]).fixed(&[b' '; 16]);
        b
    }

    /// Raw bytes.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// `y`.
    pub fn byte(&mut self, x: u8) -> &mut Self {
        self.raw(&[x])
    }

    /// A u32.
    pub fn u32(&mut self, x: u32) -> &mut Self {
        self.raw(&x.to_be_bytes())
    }

    /// `u`.
    pub fn ulong(&mut self, x: u64) -> &mut Self {
        self.raw(&x.to_be_bytes())
    }

    /// A byte array: u32 length and bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32).raw(b)
    }

    /// `s`: a fixed-size string, as a byte array.
    pub fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.bytes(b)
    }

    /// `ay` in a reply, with data.
    pub fn data(&mut self, b: &[u8]) -> &mut Self {
        self.byte(1).bytes(b)
    }

    /// `ay` in a reply, without data: a length.
    pub fn length(&mut self, n: u32) -> &mut Self {
        self.byte(0).u32(n)
    }
}

impl From<Body> for Vec<u8> {
    fn from(b: Body) -> Vec<u8> {
        b.0
    }
}

impl From<&mut Body> for Vec<u8> {
    fn from(b: &mut Body) -> Vec<u8> {
        b.0.clone()
    }
}

/// Opens streams that play a [`Script`].
pub struct ScriptConnector(Script);

impl ScriptConnector {
    /// The script.
    pub fn script(&self) -> &Script {
        &self.0
    }
}

impl Connector for ScriptConnector {
    type Stream = ScriptStream;

    fn connect(&self) -> Result<ScriptStream, TransportError> {
        let mut s = self.0.shared();
        if s.steps.front() == Some(&Step::Refuse) {
            s.steps.pop_front();
            return Err(TransportError::Disconnected);
        }
        let id = s.sent.len();
        s.sent.push(Vec::new());
        Ok(ScriptStream {
            script: self.0.clone(),
            id,
            closed: false,
            offered: false,
            pending: Vec::new(),
            at: 0,
            parsed: 0,
            code: 0,
        })
    }
}

/// One connection of a [`ScriptConnector`].
pub struct ScriptStream {
    script: Script,
    id: usize,
    closed: bool,
    offered: bool,
    /// The bytes of the step being served, and how many were.
    pending: Vec<u8>,
    at: usize,
    /// How much of what this connection was sent is whole frames.
    parsed: usize,
    /// The call code of the last complete request on this connection.
    code: u32,
}

impl ErrorType for ScriptStream {
    type Error = ErrorKind;
}

impl Read for ScriptStream {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        if self.closed || buf.is_empty() {
            return Ok(0);
        }
        let mut shared = self.script.shared();
        // An empty raw step serves nothing: on to the next.
        while self.at == self.pending.len() {
            self.at = 0;
            self.pending = match shared.steps.pop_front() {
                // A Refuse here was meant for a connect that did not
                // happen: served as a hang-up.
                None | Some(Step::HangUp) | Some(Step::Refuse) => {
                    self.closed = true;
                    return Ok(0);
                }
                Some(Step::TimedOut) => return Err(ErrorKind::TimedOut),
                Some(Step::Version(v)) => Vec::from([v]),
                Some(Step::Raw(b)) => b,
                Some(Step::Reply(body)) => {
                    let mut f = Vec::with_capacity(12 + body.len());
                    f.extend_from_slice(&self.code.to_be_bytes());
                    f.extend_from_slice(&0u32.to_be_bytes());
                    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
                    f.extend_from_slice(&body);
                    f
                }
            };
        }
        let mut n = buf.len().min(self.pending.len() - self.at);
        if shared.chunk > 0 {
            n = n.min(shared.chunk);
        }
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for ScriptStream {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        if self.closed {
            return Err(ErrorKind::BrokenPipe);
        }
        let mut shared = self.script.shared();
        let mut b = buf;
        if shared.chunk > 0 && b.len() > shared.chunk {
            b = &b[..shared.chunk];
        }
        shared.written += b.len();
        let mut rest = b;
        if !self.offered
            && let Some((&v, tail)) = rest.split_first()
        {
            shared.offers.push(v);
            self.offered = true;
            rest = tail;
        }
        let sent = &mut shared.sent[self.id];
        sent.extend_from_slice(rest);
        while let Some((code, _, _, end)) = frame(&sent[self.parsed..]) {
            self.code = code;
            self.parsed += end;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        if self.closed {
            return Err(ErrorKind::BrokenPipe);
        }
        Ok(())
    }
}
