//! The live state (`P11HA_STATUS_SOCKET`): a Unix socket, mode 0600, served
//! by a thread of p11ha's (`p11ha-status`) from `C_Initialize` to
//! `C_Finalize`. Each connection gets one OpenMetrics text exposition of the
//! members and the counters, and is closed; nothing is read from it.
//!
//! The thread never holds up the application: it reads atomics and the
//! engine's read-only accessors, accepts with a timeout, writes with a send
//! timeout, and drops every error. Nothing secret is in the exposition:
//! member indices, slot ids, counts.

use std::ffi::{CString, c_void};
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use p11ha_core::event::Event;

use super::Runtime;
use super::lifecycle::peek;
use p11ha_core::engine::MemberStatus;

use crate::host::{Counters, EVENT_KINDS, LATENCY_BOUNDS_US};

/// How long the thread waits for a connection before it looks at its stop
/// flag again (`C_Finalize` also wakes it at once).
const POLL_MS: i32 = 250;
/// How long writing one exposition may take before the connection is
/// dropped.
const SEND_TIMEOUT_MS: i64 = 500;

/// The socket and its thread, if one is served.
pub(super) struct Status {
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    listener: Arc<OwnedFd>,
    thread: libc::pthread_t,
    path: PathBuf,
}

impl Status {
    /// Nothing served.
    pub(super) fn none() -> Self {
        Status { running: None }
    }

    /// Serves the live state on `setting` (a path, or a directory ending in
    /// `/` for `<dir>/<pid>.sock`) if it is set and p11ha may start
    /// `threads`; a problem is reported through `warn` and nothing is served.
    pub(super) fn start(setting: Option<&str>, threads: bool, warn: &dyn Fn(&Event<'_>)) -> Self {
        let none = Status::none();
        let Some(setting) = setting else {
            return none;
        };
        let problem = |problem: &str| {
            warn(&Event::BadConfig {
                key: "P11HA_STATUS_SOCKET",
                problem,
                fallback: "the live state is not served",
            })
        };
        if !threads {
            problem("the application forbids p11ha threads of its own");
            return none;
        }
        let path = socket_path(setting, std::process::id());
        let listener = match listen(&path) {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                problem(&format!("cannot listen on {} ({e})", path.display()));
                return none;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let Some(thread) = spawn(stop.clone(), listener.clone()) else {
            let _ = std::fs::remove_file(&path);
            problem("no thread can be started");
            return none;
        };
        Status {
            running: Some(Running {
                stop,
                listener,
                thread,
                path,
            }),
        }
    }

    /// Stops the thread, waits for it to end, and removes the socket.
    pub(super) fn stop(&mut self) {
        let Some(r) = self.running.take() else {
            return;
        };
        r.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown of our own listening socket, still open (the
        // thread holds a reference); it wakes the thread's poll at once.
        unsafe { libc::shutdown(r.listener.as_raw_fd(), libc::SHUT_RDWR) };
        // SAFETY: the thread spawn made, joined once; it returns now that
        // its stop flag is set (within POLL_MS at the latest).
        unsafe { libc::pthread_join(r.thread, std::ptr::null_mut()) };
        let _ = std::fs::remove_file(&r.path);
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The socket's path for `setting`: itself, or `<dir>/<pid>.sock` for a
/// directory ending in `/`.
pub fn socket_path(setting: &str, pid: u32) -> PathBuf {
    if setting.ends_with('/') {
        Path::new(setting).join(format!("{pid}.sock"))
    } else {
        PathBuf::from(setting)
    }
}

/// A listening, non-blocking socket at `path`, mode 0600. A socket left
/// there by a process that ended is replaced; a live one, or any other
/// file, is not.
fn listen(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::FileTypeExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::other("the path is too long"));
    }
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        // A live one (another process's, a forked parent's) is left alone.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(
                "another process serves it; a directory ending in / gives each its own",
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a new socket; no pointer is passed.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: addr is a valid sockaddr_un of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The mode is set before listen(): until then a connection is refused,
    // so nobody connects while the umask's mode is on the file. (The umask
    // is the process's, shared by every thread: it is not changed.)
    let c = CString::new(bytes).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::chmod(c.as_ptr(), 0o600) } != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    // SAFETY: listen on our bound socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 16) } != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(fd)
}

/// Starts [`serve`], named `p11ha-status`, with `pthread_create` for the
/// reason given at the recovery thread's (`spawn_recovery`): std's spawn
/// would keep the library mapped after `dlclose`. `None` if no thread can
/// be made.
fn spawn(stop: Arc<AtomicBool>, listener: Arc<OwnedFd>) -> Option<libc::pthread_t> {
    struct Start {
        stop: Arc<AtomicBool>,
        listener: Arc<OwnedFd>,
    }
    extern "C" fn run(arg: *mut c_void) -> *mut c_void {
        // SAFETY: arg is the Box<Start> spawn leaked for this thread, taken
        // back once, here.
        let start = unsafe { Box::from_raw(arg as *mut Start) };
        // No unwinding out of an extern "C" function.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            serve(&start.stop, &start.listener)
        }));
        std::ptr::null_mut()
    }
    let arg = Box::into_raw(Box::new(Start { stop, listener })) as *mut c_void;
    let mut thread: libc::pthread_t = 0;
    // SAFETY: default attributes; `run` takes ownership of arg.
    if unsafe { libc::pthread_create(&mut thread, std::ptr::null(), run, arg) } != 0 {
        // SAFETY: no thread was made, so arg is still this function's.
        drop(unsafe { Box::from_raw(arg as *mut Start) });
        return None;
    }
    // SAFETY: a live thread of ours; a NUL-terminated name of 12 bytes (at
    // most 15 are allowed).
    unsafe { libc::pthread_setname_np(thread, c"p11ha-status".as_ptr()) };
    Some(thread)
}

/// Answers connections until `stop` is set.
fn serve(stop: &AtomicBool, listener: &OwnedFd) {
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        if n <= 0 || stop.load(Ordering::SeqCst) {
            continue;
        }
        // SAFETY: accept on our listening socket, without an address.
        let conn = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if conn < 0 {
            // A shut-down listener (C_Finalize) or a client gone: a short
            // pause keeps a persistent error from spinning.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        // SAFETY: conn is a new descriptor that nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(conn) };
        let text = peek(exposition).unwrap_or_else(|| "# EOF\n".to_owned());
        send_all(&conn, text.as_bytes());
    }
}

/// Sends `data` on `conn` with a send timeout, without SIGPIPE; gives up
/// at the first error.
fn send_all(conn: &OwnedFd, mut data: &[u8]) {
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: (SEND_TIMEOUT_MS * 1000) as libc::suseconds_t,
    };
    // SAFETY: a valid timeval of the size given.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &timeout as *const libc::timeval as *const c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    while !data.is_empty() {
        // SAFETY: data is a valid buffer of the length given.
        let n = unsafe {
            libc::send(
                conn.as_raw_fd(),
                data.as_ptr() as *const c_void,
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n <= 0 {
            return;
        }
        data = &data[n as usize..];
    }
}

/// One OpenMetrics text exposition of `rt`'s live state.
pub(super) fn exposition(rt: &Runtime) -> String {
    let e = &rt.engine;
    let c = &e.events().counters;
    let mut out = String::with_capacity(4096);
    let members: Vec<_> = (0..e.member_count())
        .filter_map(|i| e.member_status(i).map(|s| (i, s)))
        .collect();
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn Fn(usize) -> u64| {
        let _ = writeln!(out, "# TYPE {name} {kind}\n# HELP {name} {help}");
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        for (i, s) in &members {
            let _ = writeln!(
                out,
                "{sample}{{member=\"{i}\",slot=\"{}\",member_slot=\"{}\"}} {}",
                s.slot,
                s.member_slot,
                value(*i)
            );
        }
    };
    let status = |i: usize| e.member_status(i).unwrap_or_default();
    family(
        "p11ha_member_up",
        "gauge",
        "Whether the member is in service.",
        &|i| u64::from(status(i).up),
    );
    family(
        "p11ha_member_sessions",
        "gauge",
        "Application sessions the member serves.",
        &|i| u64::from(status(i).sessions),
    );
    family(
        "p11ha_member_calls_in_flight",
        "gauge",
        "Calls inside the member now.",
        &|i| u64::from(e.member_calls_in_flight(i)),
    );
    family(
        "p11ha_member_needs_sync",
        "gauge",
        "Whether the member missed token writes and takes no sessions.",
        &|i| u64::from(e.member_needs_sync(i)),
    );
    family(
        "p11ha_member_failures",
        "counter",
        "Times the member was taken out of service.",
        &|i| c.failures.get(i).map_or(0, |a| a.load(Ordering::Relaxed)),
    );
    family(
        "p11ha_member_recoveries",
        "counter",
        "Times the member came back into service.",
        &|i| c.recoveries.get(i).map_or(0, |a| a.load(Ordering::Relaxed)),
    );
    histograms(&mut out, &members, c);
    let counts = e.counts();
    let process = [
        (
            "p11ha_failovers",
            "Sessions failed over to another member, their state replayed.",
            u64::from(counts.failovers),
        ),
        (
            "p11ha_replays_incomplete",
            "Failovers that could not rebuild part of a session's state.",
            c.of("recovery_incomplete"),
        ),
        (
            "p11ha_session_moves",
            "Sessions moved to the member holding their slot's session objects.",
            u64::from(counts.moves),
        ),
        (
            "p11ha_token_writes",
            "Token object writes (made, changed or destroyed).",
            c.of("token_written"),
        ),
    ];
    for (name, help, value) in process {
        let _ = writeln!(
            out,
            "# TYPE {name} counter\n# HELP {name} {help}\n{name}_total {value}"
        );
    }
    let _ = writeln!(
        out,
        "# TYPE p11ha_events counter\n# HELP p11ha_events Events, by kind (the HA log's event names)."
    );
    for kind in EVENT_KINDS {
        let _ = writeln!(out, "p11ha_events_total{{event=\"{kind}\"}} {}", c.of(kind));
    }
    out.push_str("# EOF\n");
    out
}

/// The members' call latency histograms (`p11ha_member_call_seconds`).
fn histograms(out: &mut String, members: &[(usize, MemberStatus)], c: &Counters) {
    let name = "p11ha_member_call_seconds";
    let _ = writeln!(
        out,
        "# TYPE {name} histogram\n# HELP {name} How long application sessions' calls took \
         inside the member."
    );
    for (i, s) in members {
        let Some(h) = c.latency.get(*i) else {
            continue;
        };
        let labels = format!(
            "member=\"{i}\",slot=\"{}\",member_slot=\"{}\"",
            s.slot, s.member_slot
        );
        let mut total = 0;
        for (k, bucket) in h.buckets.iter().enumerate() {
            total += bucket.load(Ordering::Relaxed);
            let le = match LATENCY_BOUNDS_US.get(k) {
                Some(&us) => format!("{}", us as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {total}");
        }
        let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_count{{{labels}}} {total}\n{name}_sum{{{labels}}} {sum}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_gets_one_socket_per_process() {
        assert_eq!(
            socket_path("/run/p11ha/", 42),
            PathBuf::from("/run/p11ha/42.sock")
        );
        assert_eq!(
            socket_path("/run/p11ha.sock", 42),
            PathBuf::from("/run/p11ha.sock")
        );
    }

    #[test]
    fn the_socket_is_private_and_replaces_a_stale_one() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("p11ha-status-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let fd = listen(&path).expect("listen");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A live socket is not taken over; one nobody serves is replaced.
        assert!(listen(&path).is_err());
        drop(fd);
        let fd = listen(&path).expect("listen again");
        drop(fd);
        std::fs::remove_file(&path).unwrap();
        // A regular file is not.
        std::fs::write(&path, b"x").unwrap();
        assert!(listen(&path).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
