//! `libp11ha.so` under OpenSC's `pkcs11-tool`, in a child process whose
//! environment (and `P11HA_CONF` file) carries the configuration: a
//! signature made through it verifies with openssl, and a bad value gets a
//! clear message on stderr and the defined fallback, never a failure to
//! load.

use std::process::{Command, Output};

use p11ha_tests::*;

fn pkcs11_tool(env: &[(&str, &str)], args: &[&str]) -> (String, String) {
    let (ok, out, err) = pkcs11_tool_status(env, args);
    assert!(ok, "pkcs11-tool failed:\n{out}\n{err}");
    (out, err)
}

fn pkcs11_tool_status(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    pkcs11_tool_on(&tokens(2), env, args)
}

fn pkcs11_tool_on(t: &Tokens, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("pkcs11-tool");
    cmd.arg("--module").arg(lib_path()).args(args);
    for k in [
        "ET_PTKC_GENERAL_LIBRARY_MODE",
        "ET_PTKC_WLD_SLOT_0",
        "P11HA_CONF",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("SOFTHSM2_CONF", t.conf())
        .env("P11HA_MODULES", SOFTHSM);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run pkcs11-tool");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    (status.success(), stdout, stderr)
}

fn slots(listing: &str) -> usize {
    listing.lines().filter(|l| l.starts_with("Slot ")).count()
}

#[test]
fn an_invalid_mode_is_reported_and_means_normal() {
    let (out, err) = pkcs11_tool(&[("ET_PTKC_GENERAL_LIBRARY_MODE", "FAST")], &["-L"]);
    assert_eq!(
        slots(&out),
        3,
        "NORMAL: two tokens and the spare slot\n{out}"
    );
    assert!(
        err.contains(
            "p11ha: Warning: Configuration ET_PTKC_GENERAL_LIBRARY_MODE: not NORMAL, WLD or HA; \
             NORMAL mode is used, as PTK does"
        ),
        "{err}"
    );
}

#[test]
fn wld_mode_shows_one_virtual_slot_per_label() {
    let (out, err) = pkcs11_tool(
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
        &["-L"],
    );
    assert_eq!(slots(&out), 1, "{out}");
    assert!(out.contains("p11ha virtual slot: TokName"), "{out}");
    assert!(
        err.is_empty(),
        "no complaint about a good configuration: {err}"
    );
}

#[test]
fn the_file_is_read_and_the_environment_wins() {
    let dir = std::env::temp_dir().join(format!("p11ha-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p11ha.conf");
    std::fs::write(
        &file,
        "# p11ha configuration\n\
         ET_PTKC_GENERAL_LIBRARY_MODE=WLD\n\
         ET_PTKC_WLD_SLOT_0=TokName\n\
         ET_PTKC_WLD_SLOT_1=TokName\n\
         P11HA_TYPO=1\n\
         this line is no item\n",
    )
    .unwrap();
    let conf = file.to_str().unwrap();
    let (out, err) = pkcs11_tool(&[("P11HA_CONF", conf)], &["-L"]);
    assert_eq!(slots(&out), 2, "two virtual slots from the file\n{out}");
    assert!(
        err.contains("Configuration P11HA_TYPO: not an item p11ha knows; ignored"),
        "{err}"
    );
    assert!(
        err.contains("Configuration P11HA_CONF: line 6 is not KEY=VALUE; the line is ignored"),
        "{err}"
    );
    assert!(
        !err.contains("this line is no item"),
        "a bad line is never echoed: {err}"
    );
    // The environment overrides the file's mode.
    let (out, _) = pkcs11_tool(
        &[
            ("P11HA_CONF", conf),
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "NORMAL"),
        ],
        &["-L"],
    );
    assert_eq!(slots(&out), 3, "{out}");
    let (_, err) = pkcs11_tool(&[("P11HA_CONF", "/nonexistent/p11ha.conf")], &["-L"]);
    assert!(
        err.contains(
            "Configuration P11HA_CONF: cannot open the file; only the environment is used"
        ),
        "{err}"
    );
}

#[test]
fn a_module_that_cannot_load_is_reported_and_skipped() {
    let (out, err) = pkcs11_tool(
        &[(
            "P11HA_MODULES",
            &format!("/nonexistent/libvendor.so;{SOFTHSM}"),
        )],
        &["-L"],
    );
    assert!(
        err.contains("cannot load PKCS#11 module /nonexistent/libvendor.so"),
        "{err}"
    );
    assert_eq!(slots(&out), 3, "SoftHSM's slots are still there\n{out}");
    // pkcs11-tool itself exits non-zero when it finds no slot.
    let (_, out, err) = pkcs11_tool_status(&[("P11HA_MODULES", "")], &["-L"]);
    assert!(
        err.contains("no PKCS#11 module and no server is configured; there are no slots"),
        "{err}"
    );
    assert!(
        err.contains("No slots.") && !out.contains("Slot "),
        "{out}{err}"
    );
}

#[test]
fn bad_wld_slot_items_are_reported() {
    let (_, err) = pkcs11_tool(
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
            ("ET_PTKC_WLD_SLOT_99", LABEL),
            (
                "ET_PTKC_WLD_SLOT_2",
                "a label of more than thirty-two bytes",
            ),
        ],
        &["-L"],
    );
    assert!(
        err.contains("ET_PTKC_WLD_SLOT_99: the slot number is not a decimal number below 16"),
        "{err}"
    );
    assert!(
        err.contains("ET_PTKC_WLD_SLOT_2: a token label is at most 32 bytes"),
        "{err}"
    );
}

/// What a user is told when the configuration leaves a virtual slot
/// without a token: the words say what the slot list then shows.
#[test]
fn empty_virtual_slots_are_said_once_and_as_listed() {
    // A label no token carries: said once, and the slot is listed empty.
    let (out, err) = pkcs11_tool(
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", "Nope"),
            ("ET_PTKC_WLD_SLOT_1", LABEL),
        ],
        &["-L"],
    );
    let said = "ET_PTKC_WLD_SLOT_0: no module slot or server has a token labelled \"Nope\"; \
                the virtual slot has no token until one joins";
    assert_eq!(err.matches(said).count(), 1, "{err}");
    assert!(!err.contains("ET_PTKC_WLD_SLOT_1"), "{err}");
    assert_eq!(slots(&out), 2, "{out}");
    assert!(out.contains("virtual slot: Nope\n  (empty)"), "{out}");

    // No module in WLD mode: the configured slot is listed, without a
    // token, and that is what the warning says.
    let (_, out, err) = pkcs11_tool_status(
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
            ("P11HA_MODULES", ""),
        ],
        &["-L"],
    );
    assert!(
        err.contains(
            "no PKCS#11 module and no server is configured; the virtual slots have no token"
        ),
        "{err}"
    );
    assert_eq!(slots(&out), 1, "{out}");
    assert!(out.contains("(empty)"), "{out}");

    // WLD mode without a slot item: no slot at all, and said so.
    let (_, out, err) = pkcs11_tool_status(&[("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD")], &["-L"]);
    assert!(
        err.contains("ET_PTKC_WLD_SLOT_<n> names, and none is set; there are no slots"),
        "{err}"
    );
    assert_eq!(slots(&out), 0, "{out}");
}

/// An unreachable server is said on stderr in HA mode too, not only in the
/// HA log, and in the log as well.
#[test]
fn an_unreachable_server_is_said_on_stderr_in_ha_mode() {
    let dir = tokens(1).dir;
    let log = dir.join("ha.log");
    let socket = dir.join("nobody.sock");
    let (_, _, err) = pkcs11_tool_status(
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "HA"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
            ("P11HA_MODULES", ""),
            (
                "ET_HSM_NETCLIENT_SERVERLIST",
                &format!("unix:path={}", socket.display()),
            ),
            ("ET_PTKC_HA_LOG_FILE", log.to_str().unwrap()),
        ],
        &["-L"],
    );
    let said = format!(
        "ET_HSM_NETCLIENT_SERVERLIST: server 0 (unix:path={})",
        socket.display()
    );
    assert!(err.contains(&said), "stderr: {err}");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains(&said), "HA log: {logged}");
}

#[test]
fn a_signature_made_through_wld_verifies_with_openssl() {
    let t = tokens(3);
    let wld = [
        ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
        ("ET_PTKC_WLD_SLOT_0", LABEL),
    ];
    let (ok, out, _) = pkcs11_tool_on(&t, &wld, &["-L"]);
    assert!(ok);
    assert_eq!(slots(&out), 1, "{out}");
    let data = t.dir.join("data.txt");
    std::fs::write(&data, b"signed by pkcs11-tool through p11ha").unwrap();
    let content = std::fs::read(&data).unwrap();
    // SoftHSM has no CKM_ECDSA_SHA256: the ECDSA input is the SHA-256 of
    // the data, signed with raw CKM_ECDSA, as openssl verifies it.
    let digest = t.dir.join("data.sha256");
    std::fs::write(&digest, sha256(&content)).unwrap();
    for (id, input, mech_args, key) in [
        ("02", &data, &["-m", "SHA256-RSA-PKCS"][..], "rsa-pub.pem"),
        (
            "01",
            &digest,
            &["-m", "ECDSA", "--signature-format", "openssl"][..],
            "ec-pub.pem",
        ),
    ] {
        let sig = t.dir.join(format!("sig-{id}"));
        let mut args = vec!["--login", "--pin", USER_PIN, "--sign", "--id", id];
        args.extend(mech_args);
        args.extend(["-i", input.to_str().unwrap(), "-o", sig.to_str().unwrap()]);
        let (ok, out, err) = pkcs11_tool_on(&t, &wld, &args);
        assert!(ok, "sign with key {id}: {out}{err}");
        let signature = std::fs::read(&sig).unwrap();
        assert!(
            openssl_verifies(&t.keys.join(key), &content, &signature),
            "key {id}: the signature verifies"
        );
        assert!(!openssl_verifies(
            &t.keys.join(key),
            b"tampered",
            &signature
        ));
    }
}
