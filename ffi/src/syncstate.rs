//! Which members hold every token write: so that a member that missed one
//! (it was out of service, or not reachable, or not yet there) never serves
//! a session, in this process or a later one (`P11HA_STATE_DIR`).
//!
//! Each token write through p11ha (a token object made, changed or
//! destroyed on the members in service) moves its token label's write count
//! on, and records it for each member (token serial number) that holds the
//! write. A member whose count is behind its label's has missed writes: it
//! is held out ("HSM needs sync") when it joins. With `P11HA_STATE_DIR` the
//! counts are kept in `<dir>/state` (one line each, read and rewritten
//! under an exclusive lock, replaced atomically), so that every process of
//! the host sees them; without it they last as long as the process.
//!
//! ```text
//! slot    <token label>   <writes>
//! member  <token label>   <token serial>  <writes it holds>
//! ```
//!
//! An operator who has made a member hold what the others hold (copied the
//! objects, or restored the token from a backup of another member) sets its
//! count to its label's, and it joins again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file in the state directory.
pub const FILE: &str = "state";
const LOCK: &str = "state.lock";

/// The write counts (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    /// Token label → writes made.
    slots: BTreeMap<String, u64>,
    /// (label, serial) → writes held.
    members: BTreeMap<(String, String), u64>,
}

impl Counts {
    fn parse(text: &str) -> Self {
        let mut c = Counts::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["slot", label, n] => {
                    if let Ok(n) = n.parse() {
                        c.slots.insert((*label).into(), n);
                    }
                }
                ["member", label, serial, n] => {
                    if let Ok(n) = n.parse() {
                        c.members.insert(((*label).into(), (*serial).into()), n);
                    }
                }
                _ => {}
            }
        }
        c
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "# p11ha: token writes per token label, and those each member holds (see the README)\n",
        );
        for (label, n) in &self.slots {
            out.push_str(&format!("slot\t{label}\t{n}\n"));
        }
        for ((label, serial), n) in &self.members {
            out.push_str(&format!("member\t{label}\t{serial}\t{n}\n"));
        }
        out
    }

    /// Whether member (`label`, `serial`) missed writes.
    fn behind(&self, label: &str, serial: &str) -> bool {
        let made = self.slots.get(label).copied().unwrap_or(0);
        let held = self
            .members
            .get(&(label.to_string(), serial.to_string()))
            .copied()
            .unwrap_or(0);
        held < made
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct SyncState {
    dir: Option<PathBuf>,
    /// Member index → (label, serial), as it joined.
    joined: Mutex<BTreeMap<usize, (String, String)>>,
    /// The counts, when no directory keeps them.
    memory: Mutex<Counts>,
}

impl SyncState {
    /// The state in `dir` (created if missing, then made 0700); `None`: in
    /// memory only. A problem with the directory is returned, and the state
    /// is kept in memory.
    pub fn new(dir: Option<&str>) -> (Self, Option<String>) {
        let Some(dir) = dir else {
            return (SyncState::default(), None);
        };
        let path = Path::new(dir);
        let made = fs::create_dir_all(path)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o700)));
        match made {
            Ok(()) => (
                SyncState {
                    dir: Some(path.to_path_buf()),
                    ..SyncState::default()
                },
                None,
            ),
            Err(e) => (SyncState::default(), Some(format!("{dir}: {e}"))),
        }
    }

    /// Member `index` joined with token `label` and `serial` (blank-padded,
    /// as PKCS#11 gives them). Whether it missed writes (then it must be
    /// held out).
    pub fn joined(&self, index: usize, label: &[u8], serial: &[u8]) -> bool {
        let key = (text(label), text(serial));
        let behind = self
            .with_counts(false, |c| c.behind(&key.0, &key.1))
            .unwrap_or(false);
        self.joined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, key);
        behind
    }

    /// A token write was made, held by the members in `members` (bit i:
    /// member i). A problem keeping it is returned.
    pub fn written(&self, members: u32) -> Option<String> {
        let keys: Vec<(String, String)> = {
            let joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
            (0..32)
                .filter(|i| members & (1 << i) != 0)
                .filter_map(|i| joined.get(&i).cloned())
                .collect()
        };
        let label = keys.first()?.0.clone();
        self.with_counts(true, |c| {
            let n = c.slots.entry(label.clone()).or_insert(0);
            *n += 1;
            let n = *n;
            for key in keys {
                c.members.insert(key, n);
            }
        })
        .err()
    }

    /// Runs `f` on the counts: in memory, or read from the state file under
    /// its lock (and written back when `write`).
    fn with_counts<T>(&self, write: bool, f: impl FnOnce(&mut Counts) -> T) -> Result<T, String> {
        let Some(dir) = &self.dir else {
            return Ok(f(&mut self
                .memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())));
        };
        let err = |e: std::io::Error| format!("{}: {e}", dir.display());
        let lock = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOCK))
            .map_err(err)?;
        let _held = Flock::exclusive(&lock).map_err(err)?;
        let file = dir.join(FILE);
        let mut counts = match fs::read_to_string(&file) {
            Ok(text) => Counts::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Counts::default(),
            Err(e) => return Err(err(e)),
        };
        let out = f(&mut counts);
        if write {
            let tmp = dir.join(format!("{FILE}.{}", std::process::id()));
            let written = File::create(&tmp)
                .and_then(|mut t| {
                    t.write_all(counts.render().as_bytes())?;
                    t.sync_all()
                })
                .and_then(|()| fs::rename(&tmp, &file));
            written.map_err(err)?;
        }
        Ok(out)
    }
}

/// An exclusive `flock` on a file, released on drop.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File) -> std::io::Result<Self> {
        // SAFETY: flock on a descriptor this File owns and keeps open for
        // the guard's life.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            Ok(Flock(file))
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `exclusive`; the descriptor is still open.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A label or serial as the file keeps it: trailing blanks cut, anything
/// but printable ASCII written as `?` (a tab included: one field).
fn text(b: &[u8]) -> String {
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(0, |i| i + 1);
    b[..end]
        .iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p11ha-sync-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_member_behind_on_writes_is_held_out_here_and_in_the_next_process() {
        let dir = scratch("file");
        let (state, trouble) = SyncState::new(dir.to_str());
        assert!(trouble.is_none());
        assert!(!state.joined(0, b"TokName      ", b"aaa  "));
        assert!(!state.joined(1, b"TokName", b"bbb"));
        // Member 1 is out during the write.
        assert_eq!(state.written(0b01), None);
        // A member that was never there joins now: it missed it.
        assert!(state.joined(2, b"TokName", b"ccc"));
        let (next, _) = SyncState::new(dir.to_str());
        assert!(!next.joined(0, b"TokName", b"aaa"));
        assert!(next.joined(1, b"TokName", b"bbb"));
        // Another label's members are not concerned.
        assert!(!next.joined(3, b"Other", b"bbb"));
        let text = fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(text.contains("slot\tTokName\t1\n"), "{text}");
        assert!(text.contains("member\tTokName\taaa\t1\n"), "{text}");
        assert!(!text.contains("bbb"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_directory_the_process_keeps_it() {
        let (state, _) = SyncState::new(None);
        assert!(!state.joined(0, b"T", b"a\t\n"));
        assert_eq!(state.written(1), None);
        assert!(state.joined(1, b"T", b"b"));
        assert!(!state.joined(2, b"T", b"a\t\n"));
    }
}
