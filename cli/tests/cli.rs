//! The `p11ha` tool, run as a child process against real SoftHSM tokens (as
//! a module) and real `p11-kit server`s, killed and frozen.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use p11ha_tests::remote::{Server, serve};
use p11ha_tests::{LABEL, SOFTHSM, Tokens, tokens};

const TOOL: &str = env!("CARGO_BIN_EXE_p11ha");

/// Runs the tool with only `config` (and what SoftHSM needs) in its
/// environment; its exit status, stdout, stderr and how long it took.
fn run(tokens: &Tokens, config: &[(&str, &str)], args: &[&str]) -> (i32, String, String, Duration) {
    let t = Instant::now();
    let out: Output = Command::new(TOOL)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SOFTHSM2_CONF", tokens.conf())
        .envs(config.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run p11ha");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed(),
    )
}

/// WLD over the servers and, if `module`, SoftHSM's remaining tokens.
fn config(servers: &[Server], module: bool) -> Vec<(&'static str, String)> {
    let list = servers
        .iter()
        .map(Server::address)
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD".into()),
        ("ET_PTKC_WLD_SLOT_0", LABEL.into()),
        ("ET_HSM_NETCLIENT_SERVERLIST", list),
        (
            "P11HA_MODULES",
            if module {
                SOFTHSM.into()
            } else {
                String::new()
            },
        ),
        ("P11HA_CONNECT_TIMEOUT_MS", "1000".into()),
        ("P11HA_CALL_TIMEOUT_MS", "1000".into()),
    ]
}

fn as_refs<'a>(c: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    c.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The schema of `status --json`, checked by python3's json module:
/// required keys and their types (`|None`: may be null).
const SCHEMA_CHECK: &str = r#"
import json, sys
doc = json.load(sys.stdin)
def need(obj, key, *types):
    assert key in obj, "missing key %r in %r" % (key, obj)
    assert isinstance(obj[key], types), "%r: %r is not %r" % (key, obj[key], types)
def member(m):
    need(m, "index", int, type(None)); need(m, "slot", int, type(None))
    need(m, "kind", str); assert m["kind"] in ("server", "module")
    need(m, "where", str); need(m, "up", bool); need(m, "error", str, type(None))
    need(m, "server", int, type(None)); need(m, "address", str, type(None))
    need(m, "token", int, type(None)); need(m, "module", str, type(None))
    need(m, "slot_id", int, type(None))
    for k in ("label", "serial", "model", "manufacturer", "firmware", "login"):
        need(m, k, str, type(None))
    need(m, "latency_ms", int, float, type(None)); need(m, "needs_sync", bool)
    # Up: reached, and not held out for a sync.
    assert (m["error"] is None) == (m["latency_ms"] is not None)
    assert m["up"] == (m["error"] is None and not m["needs_sync"])
    assert (m["kind"] == "server") == (m["address"] is not None)
need(doc, "mode", str); assert doc["mode"] in ("NORMAL", "WLD", "HA")
need(doc, "connect_timeout_ms", int); need(doc, "call_timeout_ms", int)
need(doc, "ok", bool); need(doc, "exit_status", int)
need(doc, "slots", list); need(doc, "others", list)
for s in doc["slots"]:
    need(s, "slot", int); need(s, "label", str, type(None)); need(s, "members_up", int)
    need(s, "members", list)
    for m in s["members"]:
        member(m)
    assert s["members_up"] == sum(m["up"] for m in s["members"])
for m in doc["others"]:
    member(m)
# One line per member: index up where (for the test to compare).
for s in doc["slots"]:
    for m in s["members"]:
        print("slot", s["slot"], m["index"], m["up"], m["kind"], m["where"])
for m in doc["others"]:
    print("other", m["index"], m["up"], m["kind"], m["where"], m["error"])
print("ok", doc["ok"], doc["exit_status"])
"#;

/// Checks `json` against the schema; the checker's summary lines.
fn check_json(json: &str) -> Vec<String> {
    python(json, SCHEMA_CHECK)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn help_and_usage_errors() {
    let t = tokens(1);
    for args in [&[][..], &["--help"], &["help"], &["-h"]] {
        let (code, out, _, _) = run(&t, &[], args);
        assert_eq!(code, 0);
        assert!(out.starts_with("Usage: p11ha <command>"), "{out}");
        for word in ["status", "selftest", "check", "--pin-file", "Exit status"] {
            assert!(out.contains(word), "{word} in {out}");
        }
    }
    let modules = [("P11HA_MODULES", SOFTHSM)];
    assert_eq!(run(&t, &modules, &["frobnicate"]).0, 2);
    assert_eq!(run(&t, &modules, &["status", "--bogus"]).0, 2);
    let (code, _, err, _) = run(&t, &modules, &["selftest", "--pin", "1234"]);
    assert_eq!(code, 2);
    assert!(err.contains("never taken as an argument"), "{err}");
    // No member configured; a bad configuration item.
    assert_eq!(run(&t, &[], &["status"]).0, 2);
    let (code, _, err, _) = run(
        &t,
        &[
            ("P11HA_MODULES", SOFTHSM),
            ("P11HA_CALL_TIMEOUT_MS", "soon"),
        ],
        &["status"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("P11HA_CALL_TIMEOUT_MS"), "{err}");
    // selftest without a PIN file or a terminal.
    assert_eq!(run(&t, &modules, &["selftest"]).0, 2);
}

#[test]
fn status_with_every_member_up_then_servers_killed() {
    let t = tokens(3);
    let mut servers = serve(&t, 2);
    let c = config(&servers, true);
    let (code, out, err, _) = run(&t, &as_refs(&c), &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    assert!(
        out.contains("slot 0 \"TokName\": 3 of 3 members up"),
        "{out}"
    );
    // Servers first, in list order, then the module's slots.
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(" yes ")).collect();
    assert!(rows[0].trim_start().starts_with("0 ") && rows[0].contains(&servers[0].address()));
    assert!(rows[1].trim_start().starts_with("1 ") && rows[1].contains(&servers[1].address()));
    assert!(rows[2].trim_start().starts_with("2 ") && rows[2].contains(SOFTHSM));
    assert!(rows[0].contains("SoftHSM v2") && rows[0].contains(" ms"));

    let (code, json, _, _) = run(&t, &as_refs(&c), &["status", "--json"]);
    assert_eq!(code, 0);
    let lines = check_json(&json);
    assert!(
        lines[0].starts_with("slot 0 0 True server unix:path="),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("slot 0 2 True module"), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "ok True 0");

    // kill -9 of server 0: down, the slot still served.
    servers[0].kill();
    let (code, out, _, _) = run(&t, &as_refs(&c), &["status"]);
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 of 2 members up"), "{out}");
    let down = out
        .lines()
        .find(|l| l.contains(&servers[0].address()))
        .expect("the killed server is listed");
    assert!(
        down.contains(" no ") && down.contains("connection"),
        "{down}"
    );
    let lines = check_json(&run(&t, &as_refs(&c), &["status", "--json"]).1);
    // Numbered as the library numbers them: the server it could not reach
    // has no hsmIdx, the others follow on.
    assert!(lines[0].starts_with("slot 0 0 True server"), "{lines:?}");
    assert!(lines[1].starts_with("slot 0 1 True module"), "{lines:?}");
    assert!(lines[2].starts_with("other None False server"), "{lines:?}");

    // Every server down and no module: no member up, exit 1.
    servers[1].kill();
    let c = config(&servers, false);
    let (code, out, _, _) = run(&t, &as_refs(&c), &["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("0 of 0 members up"), "{out}");
    let lines = check_json(&run(&t, &as_refs(&c), &["status", "--json"]).1);
    assert_eq!(lines.last().unwrap(), "ok False 1");
}

#[test]
fn a_frozen_server_does_not_hang_the_tool() {
    let t = tokens(2);
    let servers = serve(&t, 2);
    let c = config(&servers, false);
    servers[1].freeze();
    let (code, out, err, took) = run(&t, &as_refs(&c), &["status"]);
    println!("{out}{err}took {took:?}");
    assert_eq!(code, 0, "{out}{err}");
    // One connect deadline (1 s) for the frozen server, and little else.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(out.contains("1 of 1 members up"), "{out}");
    let down = out
        .lines()
        .find(|l| l.contains(&servers[1].address()))
        .unwrap();
    assert!(down.contains("no answer before the deadline"), "{down}");
    // Both frozen: reached at once, so one deadline in all, not one each;
    // no member up, exit 1.
    servers[0].freeze();
    let (code, out, _, took) = run(&t, &as_refs(&c), &["status"]);
    servers[0].thaw();
    servers[1].thaw();
    println!("{out}took {took:?}");
    assert_eq!(code, 1, "{out}");
    assert!(took < Duration::from_millis(1900), "took {took:?}");
    assert_eq!(out.matches("no answer before the deadline").count(), 2);
}

/// Changes the user PIN of every SoftHSM token in `tokens` (directly).
fn change_pin(t: &Tokens, slots: &[u64], new: &str) {
    for slot in slots {
        let out = Command::new("pkcs11-tool")
            .args(["--module", SOFTHSM, "--slot", &slot.to_string()])
            .args(["--login", "--pin", "1234", "--change-pin", "--new-pin", new])
            .env("SOFTHSM2_CONF", t.conf())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The slot ids of the members of slot 0, from `status --json`.
fn member_slots(t: &Tokens, c: &[(&str, &str)]) -> Vec<u64> {
    let (_, json, _, _) = run(t, c, &["status", "--json"]);
    check_json(&json);
    // Only the slots' members: not SoftHSM's spare slot, among "others".
    let slots = json.split("\"others\"").next().unwrap();
    slots
        .split("\"slot_id\":")
        .skip(1)
        .filter_map(|s| s.split([',', '}']).next()?.parse().ok())
        .collect()
}

#[test]
fn selftest_with_a_pin_file_and_the_pin_kept_out_of_sight() {
    let t = tokens(2);
    let c = [
        ("ET_PTKC_GENERAL_LIBRARY_MODE", "HA"),
        ("ET_PTKC_WLD_SLOT_0", LABEL),
        ("P11HA_MODULES", SOFTHSM),
    ];
    let slots = member_slots(&t, &c);
    assert_eq!(slots.len(), 2);
    let pin = "Zq7vK93pinXw";
    change_pin(&t, &slots, pin);
    let file = t.dir.join("pin");
    std::fs::write(&file, format!("{pin}\n")).unwrap();
    let path = file.display().to_string();
    for key in ["ec-key", "rsa-key"] {
        let args = ["selftest", "--pin-file", &path, "--key", key];
        let (code, out, err, _) = run(&t, &c, &args);
        println!("{out}");
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("2 of 2 members passed"), "{out}");
        assert!(!out.contains(pin) && !err.contains(pin));
        assert!(!args.contains(&pin));
    }
    // A wrong PIN, or a key that is not there: each member fails, exit 1.
    std::fs::write(&file, "1234\n").unwrap();
    let (code, out, _, _) = run(&t, &c, &["selftest", "--pin-file", &path]);
    assert_eq!(code, 1);
    assert!(out.contains("C_Login answered CKR_PIN_INCORRECT"), "{out}");
    std::fs::write(&file, pin).unwrap();
    let (code, out, _, _) = run(&t, &c, &["selftest", "--pin-file", &path, "--key", "nope"]);
    assert_eq!(code, 1);
    assert!(out.contains("no private key labelled \"nope\""), "{out}");
    // As JSON: one outcome per member.
    let (code, out, _, _) = run(&t, &c, &["selftest", "--pin-file", &path, "--json"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(pin));
    let summary = python(
        &out,
        "d = json.load(sys.stdin)\n\
         assert d['ok'] is True and d['tested'] == 2 and d['passed'] == 2, d\n\
         print(sorted((m['index'], m['outcome']) for m in d['members'] if m['outcome'] != 'skipped'))",
    );
    assert_eq!(summary.trim(), "[(0, 'ok'), (1, 'ok')]");
}

#[test]
fn check_reports_an_object_deleted_behind_p11has_back() {
    let t = tokens(2);
    let c = [
        ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
        ("ET_PTKC_WLD_SLOT_0", LABEL),
        ("P11HA_MODULES", SOFTHSM),
    ];
    let file = t.dir.join("pin");
    std::fs::write(&file, "1234\n").unwrap();
    let path = file.display().to_string();
    let (code, out, err, _) = run(&t, &c, &["check", "--pin-file", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("secret key label \"aes-key\" id 03: present on every member"));
    assert!(out.contains("no drift"), "{out}");
    // Deleted on member 1's token, directly.
    let slot = member_slots(&t, &c)[1];
    let del = Command::new("pkcs11-tool")
        .args(["--module", SOFTHSM, "--slot", &slot.to_string()])
        .args(["--login", "--pin", "1234", "--delete-object"])
        .args(["--type", "secrkey", "--label", "aes-key"])
        .env("SOFTHSM2_CONF", t.conf())
        .output()
        .unwrap();
    assert!(del.status.success());
    let (code, out, _, _) = run(&t, &c, &["check", "--pin-file", &path]);
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("secret key label \"aes-key\" id 03: MISSING on hsmIdx 1"),
        "{out}"
    );
    assert!(out.contains("public key label \"ec-key\" id 01: present on every member"));
    assert!(out.contains("drift: 1 object(s)"), "{out}");
    // The same as JSON, for scripts.
    let (code, out, _, _) = run(&t, &c, &["check", "--pin-file", &path, "--json"]);
    assert_eq!(code, 1, "{out}");
    let summary = python(
        &out,
        "d = json.load(sys.stdin)\n\
         assert d['ok'] is False and d['exit_status'] == 1 and d['private_objects'] is True\n\
         s = d['slots'][0]\n\
         assert s['drift'] == 1 and s['compared'] == [0, 1] and s['not_compared'] == []\n\
         for o in s['objects']:\n\
         \x20   assert isinstance(o['object'], str)\n\
         \x20   if o['missing_on'] or o['differs_on']: print(o['object'], o['missing_on'])",
    );
    assert_eq!(summary.trim(), "secret key label \"aes-key\" id 03 [1]");
    // A data object written on each token directly, with different values:
    // the same identity, different contents.
    let slots = member_slots(&t, &c);
    for (i, slot) in slots.iter().enumerate() {
        let value = t.dir.join(format!("data-{i}"));
        std::fs::write(&value, format!("setting {}", i.min(1))).unwrap();
        let w = Command::new("pkcs11-tool")
            .args(["--module", SOFTHSM, "--slot", &slot.to_string()])
            .args(["--login", "--pin", "1234", "--write-object"])
            .arg(&value)
            .args(["--type", "data", "--label", "app-config"])
            .env("SOFTHSM2_CONF", t.conf())
            .output()
            .unwrap();
        assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    }
    let (code, out, _, _) = run(&t, &c, &["check"]);
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("data label \"app-config\" id -: DIFFERS on hsmIdx 1 (from hsmIdx 0)"),
        "{out}"
    );
    // Without a PIN the private objects are not seen: no drift among the
    // public ones.
    assert!(out.contains("no PIN: public objects only") && !out.contains("aes-key"));
    assert!(out.contains("drift: 1 object(s)"), "{out}");
}

#[test]
fn selftest_and_check_over_servers_one_killed() {
    let t = tokens(2);
    let mut servers = serve(&t, 2);
    let c = config(&servers, false);
    let file = t.dir.join("pin");
    std::fs::write(&file, "1234\n").unwrap();
    let path = file.display().to_string();
    let (code, out, err, _) = run(&t, &as_refs(&c), &["selftest", "--pin-file", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 of 2 members passed"), "{out}");
    let (code, out, _, _) = run(&t, &as_refs(&c), &["check", "--pin-file", &path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no drift"), "{out}");
    servers[1].kill();
    let (code, out, _, _) = run(&t, &as_refs(&c), &["selftest", "--pin-file", &path]);
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 of 2 members passed"), "{out}");
    assert!(out.contains("FAILED: not reached: the connection"), "{out}");
    // One member left of the slot: nothing to compare; the killed server
    // could not be compared, so no "no drift": exit 1.
    let (code, out, _, _) = run(&t, &as_refs(&c), &["check", "--pin-file", &path]);
    println!("{out}");
    assert!(
        out.contains("1 member(s) compared: nothing to compare"),
        "{out}"
    );
    assert!(
        out.contains("not reached, not compared: unix:path="),
        "{out}"
    );
    assert_eq!(code, 1, "{out}");
}

/// A member that missed token writes (so `P11HA_STATE_DIR` says) is not up:
/// the library holds it out until it is synced, and the tool says so.
#[test]
fn a_member_behind_on_token_writes_shows_as_needing_a_sync() {
    let t = tokens(2);
    let state = t.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let c = [
        ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
        ("ET_PTKC_WLD_SLOT_0", LABEL),
        ("P11HA_MODULES", SOFTHSM),
        ("P11HA_STATE_DIR", state.to_str().unwrap()),
    ];
    // Both tokens as they are: nothing written yet, both up.
    let (code, out, err, _) = run(&t, &c, &["status", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let serials: Vec<String> = check_json(&out)
        .iter()
        .filter(|l| l.starts_with("slot 0"))
        .map(|l| l.to_string())
        .collect();
    assert_eq!(serials.len(), 2, "{out}");
    // One write that only the first member holds.
    let (_, out, _, _) = run(&t, &c, &["status", "--json"]);
    let serial = out
        .split("\"serial\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a serial")
        .to_string();
    std::fs::write(
        state.join("state"),
        format!("slot\t{LABEL}\t1\nmember\t{LABEL}\t{serial}\t1\n"),
    )
    .unwrap();
    let (code, out, err, _) = run(&t, &c, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 of 2 members up"), "{out}");
    assert!(out.contains("needs sync"), "{out}");
    let (_, out, _, _) = run(&t, &c, &["status", "--json"]);
    let summary = check_json(&out);
    assert_eq!(
        summary
            .iter()
            .filter(|l| l.starts_with("slot 0") && l.contains(" False "))
            .count(),
        1,
        "{summary:?}"
    );
    // Neither holds it: no member up, exit 1.
    std::fs::write(state.join("state"), format!("slot\t{LABEL}\t1\n")).unwrap();
    let (code, out, _, _) = run(&t, &c, &["status"]);
    assert_eq!(code, 1, "{out}");
}

/// Runs `program` (python, with `json` and `sys` imported) on `input`; its
/// stdout. Panics if it fails.
fn python(input: &str, program: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", &format!("import json, sys\n{program}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
