//! Remote members for the tests: real `p11-kit server` processes, one per
//! token, each serving a SoftHSM token directory of its own on a Unix
//! socket, that tests kill, freeze and restart.
//!
//! Each server runs in a process group of its own under a small shell that
//! waits on a pipe from the test process: killing the group takes the
//! server and the `p11-kit-remote` child it forked for each connection
//! (killing the server alone leaves those serving), and when the test
//! process ends, however it ends, the pipe closes and the shell kills the
//! group, so no server outlives its test.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{LABEL, Library, SOFTHSM, Tokens, tokens};

/// Runs the server in the background and kills its whole process group
/// when stdin (a pipe from the test process) closes or says so.
const WRAPPER: &str = r#"
p11-kit server -f --provider "$1" -n "$2" "$3" </dev/null >/dev/null 2>>"$4" &
read -r _
kill -KILL 0
"#;

/// One `p11-kit server` serving one token.
pub struct Server {
    /// The socket it listens on.
    pub socket: PathBuf,
    /// Its `SOFTHSM2_CONF`.
    pub conf: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// `unix:path=...`, as `ET_HSM_NETCLIENT_SERVERLIST` lists it.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it (if it is not running) and waits until it listens.
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        let _ = std::fs::remove_file(&self.socket);
        let log = self.socket.with_extension("log");
        let child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("p11ha-test-server")
            .arg(SOFTHSM)
            .arg(&self.socket)
            .arg(format!("pkcs11:token={LABEL}"))
            .arg(&log)
            .env("SOFTHSM2_CONF", &self.conf)
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start p11-kit server (is p11-kit installed? scripts/setup-debian.sh)");
        self.child = Some(child);
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "p11-kit server on {} did not start: {}",
                self.socket.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the server's process group.
    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server runs");
        // SAFETY: kill(2) with the negated id of the group the wrapper
        // leads (process_group(0) made its pid the group id).
        let rc = unsafe { libc::kill(-(child.id() as libc::pid_t), signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// kill -9 of the server and every process it forked.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: as in signal(); the group may be frozen, SIGKILL still
        // ends it.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// SIGSTOP: the server and its children stop answering, their
    /// connections stay open.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.as_mut().and_then(|c| c.stdin.as_mut()) {
            let _ = stdin.write_all(b"stop\n");
        }
        self.kill();
    }
}

/// The servers of this process: server `i` serves token `i` of a fresh
/// copy of identical tokens. `None` until [`start`] made them.
pub fn servers() -> &'static Mutex<Vec<Server>> {
    SERVERS.get().expect("remote::start first")
}

static SERVERS: OnceLock<Mutex<Vec<Server>>> = OnceLock::new();

/// Runs `f` on server `i`.
pub fn with_server<T>(i: usize, f: impl FnOnce(&mut Server) -> T) -> T {
    let mut s = servers().lock().unwrap_or_else(|e| e.into_inner());
    f(&mut s[i])
}

/// Moves the first `n` of `tokens` into one token directory per server;
/// the rest stay where `tokens.conf()` finds them.
fn split(tokens: &Tokens, n: usize) -> Vec<(PathBuf, PathBuf)> {
    let all = tokens.dir.join("tokens");
    let mut names: Vec<_> = std::fs::read_dir(&all)
        .expect("read tokens")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    names
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, name)| {
            let dir = tokens.dir.join(format!("server-{i}"));
            let tokendir = dir.join("tokens");
            std::fs::create_dir_all(&tokendir).expect("server dir");
            std::fs::rename(all.join(name), tokendir.join(name)).expect("move token");
            let conf = dir.join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    tokendir.display()
                ),
            )
            .expect("write softhsm2.conf");
            (dir, conf)
        })
        .collect()
}

/// Starts one server for each of the first `n` of `tokens` (which move
/// into a token directory per server) and waits until each listens; the
/// rest of `tokens` stay for SoftHSM as a module (`tokens.conf()`). For a
/// test that loads `libp11ha.so` itself rather than through [`start`].
pub fn serve(tokens: &Tokens, n: usize) -> Vec<Server> {
    split(tokens, n)
        .into_iter()
        .map(|(dir, conf)| {
            let mut s = Server {
                socket: dir.join("p11-kit.sock"),
                conf,
                child: None,
            };
            s.start();
            s
        })
        .collect()
}

/// `n` servers over `n` fresh identical tokens, without `libp11ha.so`:
/// for a client of the servers' own (the firmware under QEMU). Server `i`
/// serves token `i`; dropping a server kills it.
pub fn standalone(n: usize) -> (Tokens, Vec<Server>) {
    let tokens = tokens(n);
    let servers = serve(&tokens, n);
    (tokens, servers)
}

/// `n` servers over `n` identical tokens, and `libp11ha.so` in HA mode over
/// them (no module members), with the settings of [`crate::ha::start`]
/// and `extra` on top. Once per process.
pub fn start(n: usize, recover_ms: u64, extra: &[(&str, &str)]) -> &'static Library {
    let mut config = vec![("P11HA_MODULES", "")];
    config.extend_from_slice(extra);
    start_mixed(n, 0, recover_ms, &config)
}

/// `servers` servers and `module` more identical tokens that SoftHSM, as
/// a module, serves in the process, all behind one virtual slot: members
/// `0..servers` are the servers, then the module's tokens.
pub fn start_mixed(
    servers: usize,
    module: usize,
    recover_ms: u64,
    extra: &[(&str, &str)],
) -> &'static Library {
    Library::start_with(|| {
        let tokens = tokens(servers + module);
        let running = serve(&tokens, servers);
        let list = running
            .iter()
            .map(Server::address)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(SERVERS.set(Mutex::new(running)).is_ok());
        let mut config: Vec<(&str, &str)> = vec![("ET_HSM_NETCLIENT_SERVERLIST", list.as_str())];
        config.extend_from_slice(extra);
        crate::ha::configure_ha(&tokens, recover_ms, &config);
        tokens
    })
}
