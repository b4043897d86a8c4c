//! `p11ha status --live` beside a running application: this test process
//! is the application (libp11ha.so loaded, serving its state on
//! `P11HA_STATUS_SOCKET`), and the tool, a child process, reads it. A file
//! of its own: the library is configured through this process's
//! environment, which no other test thread may read meanwhile.

use std::process::{Command, Stdio};

use p11ha_tests::*;

const TOOL: &str = env!("CARGO_BIN_EXE_p11ha");

#[test]
fn status_live_shows_the_running_applications_own_view() {
    let dir = std::env::temp_dir().join(format!("p11ha-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sockets = format!("{}/", dir.display());
    let l = Library::start(
        2,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
            ("P11HA_STATUS_SOCKET", sockets.as_str()),
        ],
    );
    // Three sessions of the application, on its members.
    let sessions: Vec<_> = (0..3).map(|_| l.session()).collect();
    let on: Vec<usize> = sessions.iter().map(session_member).collect();
    let conf = l.tokens.conf();
    let run = |args: &[&str]| {
        let out = Command::new(TOOL)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("SOFTHSM2_CONF", &conf)
            .env("P11HA_MODULES", SOFTHSM)
            .env("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD")
            .env("ET_PTKC_WLD_SLOT_0", LABEL)
            .env("P11HA_STATUS_SOCKET", &sockets)
            .stdin(Stdio::null())
            .output()
            .expect("run p11ha");
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["status", "--live"]);
    assert_eq!(code, 0, "{out}");
    let mine = format!("{}.sock", std::process::id());
    assert!(
        out.contains(&format!("live: {}", dir.join(&mine).display())),
        "{out}"
    );
    // The application's own counts: its sessions per member.
    for m in 0..2 {
        let n = on.iter().filter(|&&x| x == m).count();
        let row = out
            .lines()
            .skip_while(|l| !l.starts_with("live:"))
            .find(|l| l.trim_start().starts_with(&format!("{m} ")))
            .unwrap_or_else(|| panic!("no live row for member {m}:\n{out}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], "yes", "{row}");
        assert_eq!(cols[2], n.to_string(), "member {m}'s sessions: {row}");
    }
    // JSON: the same, under "live".
    let (code, out) = run(&["status", "--json", "--live"]);
    assert_eq!(code, 0);
    let check = Command::new("python3")
        .args([
            "-c",
            "import json,sys; d=json.load(sys.stdin); l=d['live']; \
             assert len(l)==1 and l[0]['error'] is None, l; \
             print(sum(m['sessions'] for m in l[0]['members']))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .as_ref()
        .unwrap()
        .write_all(out.as_bytes())
        .unwrap();
    let res = check.wait_with_output().unwrap();
    assert!(res.status.success(), "{out}");
    assert_eq!(String::from_utf8_lossy(&res.stdout).trim(), "3");
    // A socket no application serves any more is said so.
    std::fs::write(dir.join("999999.sock"), b"").unwrap();
    let (_, out) = run(&["status", "--live"]);
    assert!(out.contains("999999.sock: not answering"), "{out}");
    drop(sessions);
    let _ = std::fs::remove_dir_all(&dir);
}
