//! Streams for [`rpc`](crate::rpc) members on a host: Unix sockets and TCP,
//! with a deadline on connecting and on every call.
//!
//! Addresses are written as p11-kit writes them: `unix:path=/abs/path`
//! (percent-encoded bytes allowed, as `p11_path_decode` takes them) and
//! `tcp:host=NAME,port=N` (for a server exported over TCP, for example with
//! `socat`; p11-kit's own client has no TCP).
//!
//! The connect deadline covers connecting and setting up: the version
//! byte, `C_Initialize`, reading the slots and tokens. After that, the call
//! deadline covers each request and its reply. One call at a time, it
//! starts when a request starts to be written (the client writes only after
//! it has read the previous reply). With calls in flight together (the
//! stream split, [`Connector::split`]), a request has the call deadline to
//! be written from its first byte, and a reply to be read from when the
//! reply before it was read (the server answers in order). Every read and
//! write gets the time that is left, give or take 5 ms (the socket's
//! timeout is set again only when what it was set to would overrun the
//! deadline by more): a server that trickles bytes cannot stretch either.

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use p11ha_core::error::TransportError;

use crate::rpc::Connector;

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// `unix:path=/abs/path`.
    Unix(PathBuf),
    /// `tcp:host=NAME,port=N`.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Why an address was refused. It says which rule was broken and never
/// repeats the text given (which could be anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressError(pub &'static str);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        if let Some(path) = s.strip_prefix("unix:path=") {
            if !path.starts_with('/') {
                return Err(AddressError("a unix: path must be absolute"));
            }
            let bytes = percent_decode(path)
                .ok_or(AddressError("a unix: path has a bad %-escape or a NUL"))?;
            use std::os::unix::ffi::OsStringExt;
            return Ok(Address::Unix(PathBuf::from(std::ffi::OsString::from_vec(
                bytes,
            ))));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (mut host, mut port) = (None, None);
            for part in rest.split(',') {
                match part.split_once('=') {
                    Some(("host", h)) if !h.is_empty() && host.is_none() => host = Some(h),
                    Some(("port", p)) if port.is_none() => {
                        port = Some(
                            p.parse::<u16>()
                                .ok()
                                .filter(|&p| p != 0)
                                .ok_or(AddressError("a tcp: port must be 1 to 65535"))?,
                        )
                    }
                    _ => return Err(AddressError("a tcp: address is host=NAME,port=N")),
                }
            }
            return match (host, port) {
                (Some(host), Some(port)) => Ok(Address::Tcp {
                    host: host.to_owned(),
                    port,
                }),
                _ => Err(AddressError("a tcp: address is host=NAME,port=N")),
            };
        }
        Err(AddressError(
            "an address is unix:path=/abs/path or tcp:host=NAME,port=N",
        ))
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            i += 3;
            u8::from_str_radix(hex, 16).ok()?
        } else {
            i += 1;
            b[i - 1]
        };
        if c == 0 {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:path={}", p.display()),
            Address::Tcp { host, port } => write!(f, "tcp:host={host},port={port}"),
        }
    }
}

/// Opens streams to one address, with deadlines.
#[derive(Clone, Debug)]
pub struct NetConnector {
    address: Address,
    connect_timeout: Duration,
    call_timeout: Duration,
}

impl NetConnector {
    /// A connector to `address`: connecting may take `connect_timeout`, and
    /// each call (request and reply) `call_timeout`. Zero durations are
    /// taken as one millisecond.
    pub fn new(address: Address, connect_timeout: Duration, call_timeout: Duration) -> Self {
        let floor = Duration::from_millis(1);
        NetConnector {
            address,
            connect_timeout: connect_timeout.max(floor),
            call_timeout: call_timeout.max(floor),
        }
    }

    /// The address.
    pub fn address(&self) -> &Address {
        &self.address
    }
}

impl Connector for NetConnector {
    type Stream = NetStream;

    fn connect(&self) -> Result<NetStream, TransportError> {
        let inner = match &self.address {
            Address::Unix(path) => {
                // A Unix connect does not wait on the network: it succeeds,
                // or fails at once (no listener, backlog full).
                Inner::Unix(UnixStream::connect(path).map_err(|e| kind(&e))?)
            }
            Address::Tcp { host, port } => {
                let start = Instant::now();
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|_| TransportError::Disconnected)?;
                let mut last = TransportError::Disconnected;
                let mut stream = None;
                for a in addrs {
                    let Some(left) = self.connect_timeout.checked_sub(start.elapsed()) else {
                        last = TransportError::TimedOut;
                        break;
                    };
                    match TcpStream::connect_timeout(&a, left.max(Duration::from_millis(1))) {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last = kind(&e),
                    }
                }
                let s = stream.ok_or(last)?;
                let _ = s.set_nodelay(true);
                Inner::Tcp(s)
            }
        };
        Ok(NetStream {
            inner,
            call_timeout: self.call_timeout,
            setup: Some(Instant::now() + self.connect_timeout),
            deadline: None,
            reading: true,
            half: false,
            turn: false,
            armed: [None; 2],
        })
    }

    fn established(&self, stream: &mut NetStream) {
        stream.setup = None;
    }

    /// A second descriptor of the same socket: the original reads, the
    /// copy writes. Each keeps its own deadline.
    fn split(&self, stream: &mut NetStream) -> Option<NetStream> {
        let inner = match &stream.inner {
            Inner::Unix(s) => Inner::Unix(s.try_clone().ok()?),
            Inner::Tcp(s) => Inner::Tcp(s.try_clone().ok()?),
        };
        stream.half = true;
        stream.turn = true;
        Some(NetStream {
            inner,
            call_timeout: stream.call_timeout,
            setup: None,
            deadline: None,
            reading: true,
            half: true,
            turn: true,
            armed: stream.armed,
        })
    }
}

fn kind(e: &io::Error) -> TransportError {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TransportError::TimedOut,
        _ => TransportError::Disconnected,
    }
}

enum Inner {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// A connection with a per-call deadline (see the module documentation).
pub struct NetStream {
    inner: Inner,
    call_timeout: Duration,
    /// The deadline of setting up, until the connection is established.
    setup: Option<Instant>,
    deadline: Option<Instant>,
    /// Whether the last operation was a read: the next write starts a call.
    reading: bool,
    /// One handle of a split stream: only reads or only writes, and a
    /// flush ends its turn.
    half: bool,
    /// A split handle's next read or write starts a new deadline.
    turn: bool,
    /// The socket's read and write timeouts as this handle last set them.
    armed: [Option<Duration>; 2],
}

/// How far past its deadline a read or write may end, so that the socket's
/// timeouts need not be set again for every read and write.
const SLACK: Duration = Duration::from_millis(5);

/// An I/O error of a [`NetStream`]: `TimedOut` when the call deadline
/// passed, anything else is the connection lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetError(embedded_io::ErrorKind);

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for NetError {}

impl embedded_io::Error for NetError {
    fn kind(&self) -> embedded_io::ErrorKind {
        self.0
    }
}

impl From<io::Error> for NetError {
    fn from(e: io::Error) -> Self {
        NetError(match e.kind() {
            // A socket timeout reads as WouldBlock on Linux.
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => embedded_io::ErrorKind::TimedOut,
            _ => embedded_io::ErrorKind::BrokenPipe,
        })
    }
}

impl NetStream {
    /// The time left before the deadline, applied to the socket.
    fn arm(&mut self, write: bool) -> Result<(), NetError> {
        if let Some(setup) = self.setup {
            self.deadline = Some(setup);
        } else if self.turn || (write && self.reading) {
            self.deadline = Some(Instant::now() + self.call_timeout);
            self.turn = false;
        }
        self.reading = !write;
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + self.call_timeout);
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(NetError(embedded_io::ErrorKind::TimedOut))?;
        // The socket's timeout as it is set already will do if it ends
        // this read or write within SLACK of the deadline: then no system
        // call. Most calls end well within the first SLACK of their
        // deadline, and the next call's deadline is as long again, so the
        // timeouts are set about once per connection.
        let armed = &mut self.armed[usize::from(write)];
        if armed.is_some_and(|t| t <= left + SLACK) {
            return Ok(());
        }
        *armed = Some(left);
        let r = match (&self.inner, write) {
            (Inner::Unix(s), false) => s.set_read_timeout(Some(left)),
            (Inner::Unix(s), true) => s.set_write_timeout(Some(left)),
            (Inner::Tcp(s), false) => s.set_read_timeout(Some(left)),
            (Inner::Tcp(s), true) => s.set_write_timeout(Some(left)),
        };
        r.map_err(NetError::from)
    }
}

impl embedded_io::ErrorType for NetStream {
    type Error = NetError;
}

impl embedded_io::Read for NetStream {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        self.arm(false)?;
        loop {
            let r = match &mut self.inner {
                Inner::Unix(s) => s.read(buf),
                Inner::Tcp(s) => s.read(buf),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map_err(NetError::from),
            }
        }
    }
}

impl embedded_io::Write for NetStream {
    fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        self.arm(true)?;
        loop {
            let r = match &mut self.inner {
                Inner::Unix(s) => s.write(buf),
                Inner::Tcp(s) => s.write(buf),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map_err(NetError::from),
            }
        }
    }

    /// Nothing to send (writes go straight to the socket). On a handle of
    /// a split stream, ends its turn: its next read or write starts a new
    /// deadline.
    fn flush(&mut self) -> Result<(), NetError> {
        if self.half {
            self.turn = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "unix:path=/run/p11/a%20b".parse(),
            Ok(Address::Unix(PathBuf::from("/run/p11/a b")))
        );
        assert_eq!(
            "tcp:host=hsm1.example,port=2345".parse(),
            Ok(Address::Tcp {
                host: "hsm1.example".into(),
                port: 2345
            })
        );
        assert_eq!(
            "tcp:port=1,host=::1".parse(),
            Ok(Address::Tcp {
                host: "::1".into(),
                port: 1
            })
        );
        for bad in [
            "unix:path=relative",
            "unix:path=/a%2",
            "unix:path=/a%00b",
            "unix:/x",
            "tcp:host=a",
            "tcp:host=a,port=0",
            "tcp:host=a,port=70000",
            "tcp:host=a,port=1,host=b",
            "tcp:host=,port=1",
            "vsock:cid=3;port=1",
            "",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
        let a: Address = "tcp:host=h,port=7".parse().unwrap();
        assert_eq!(a.to_string(), "tcp:host=h,port=7");
    }

    /// A Unix socket that accepts and never answers, in a directory of
    /// its own (`name`): the directory, the socket's path, the listener.
    fn silent_peer(name: &str) -> (PathBuf, PathBuf, std::os::unix::net::UnixListener) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("silent.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    #[test]
    fn a_silent_peer_times_out_within_the_call_deadline() {
        let (dir, path, listener) = silent_peer("p11ha-net");
        let c = NetConnector::new(
            Address::Unix(path.clone()),
            Duration::from_millis(100),
            Duration::from_millis(150),
        );
        let mut s = c.connect().unwrap();
        c.established(&mut s);
        let (_peer, _) = listener.accept().unwrap();
        use embedded_io::{Read, Write};
        s.write(&[2]).unwrap();
        let start = Instant::now();
        let mut b = [0u8; 1];
        let e = s.read(&mut b).unwrap_err();
        let took = start.elapsed();
        assert_eq!(
            embedded_io::Error::kind(&e),
            embedded_io::ErrorKind::TimedOut
        );
        assert!(took >= Duration::from_millis(140), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // Once passed, the deadline stays passed until the next request.
        assert!(s.read(&mut b).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_trickling_peer_cannot_stretch_the_call_deadline() {
        let (dir, path, listener) = silent_peer("p11ha-net-trickle");
        let deadline = Duration::from_millis(300);
        let c = NetConnector::new(Address::Unix(path.clone()), deadline, deadline);
        let mut s = c.connect().unwrap();
        c.established(&mut s);
        let (mut peer, _) = listener.accept().unwrap();
        // One byte every 20 ms, for 4 s if nobody stops it.
        let trickle = std::thread::spawn(move || {
            for _ in 0..200 {
                if peer.write_all(&[0]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        use embedded_io::{Read, Write};
        s.write(&[2]).unwrap();
        let start = Instant::now();
        let mut b = [0u8; 1];
        let mut got = 0;
        let e = loop {
            match s.read(&mut b) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        let took = start.elapsed();
        assert_eq!(
            embedded_io::Error::kind(&e),
            embedded_io::ErrorKind::TimedOut
        );
        assert!(got > 1, "bytes came in the meantime: {got}");
        // The deadline and its slack, with room for a loaded machine; a
        // fresh deadline per read would have gone on for 4 s.
        assert!(took < Duration::from_secs(2), "{took:?}");
        drop(s);
        trickle.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn setting_up_has_the_connect_deadline_as_a_whole() {
        let (dir, path, listener) = silent_peer("p11ha-net-setup");
        // A long call deadline: only the connect deadline may end this.
        let c = NetConnector::new(
            Address::Unix(path.clone()),
            Duration::from_millis(200),
            Duration::from_secs(60),
        );
        let mut s = c.connect().unwrap();
        let (_peer, _) = listener.accept().unwrap();
        use embedded_io::{Read, Write};
        let start = Instant::now();
        s.write(&[2]).unwrap();
        let mut b = [0u8; 1];
        let e = s.read(&mut b).unwrap_err();
        assert_eq!(
            embedded_io::Error::kind(&e),
            embedded_io::ErrorKind::TimedOut
        );
        // A new write does not restart the setup deadline.
        assert!(s.write(&[0]).is_err() || s.read(&mut b).is_err());
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nobody_listening_is_a_lost_connection() {
        let c = NetConnector::new(
            Address::Unix(PathBuf::from("/nonexistent/p11ha.sock")),
            Duration::from_millis(100),
            Duration::from_millis(100),
        );
        assert_eq!(c.connect().err(), Some(TransportError::Disconnected));
    }
}
