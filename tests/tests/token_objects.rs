//! Token objects written through `libp11ha.so` are on every HSM, as on one
//! token: OpenSC's `pkcs11-tool` in child processes, each a new application,
//! against real SoftHSM tokens (as a module, WLD mode) and real `p11-kit
//! server`s (HA mode, one killed with SIGKILL); what each token holds is
//! checked on the token itself, with `pkcs11-tool` on SoftHSM directly.

use std::path::Path;
use std::process::Command;

use p11ha_tests::remote::{Server, standalone};
use p11ha_tests::*;

/// `pkcs11-tool` on `module` with `env`; (success, stdout, stderr).
fn tool(module: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("pkcs11-tool");
    cmd.arg("--module").arg(module).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("P11HA_") || k.starts_with("ET_PTKC_") || k.starts_with("ET_HSM_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("P11HA_CONF", "/dev/null");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pkcs11-tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The (object type, label) pairs of a `--list-objects` listing.
fn objects(listing: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut kind = String::new();
    for line in listing.lines() {
        if !line.starts_with(' ') && (line.contains("Object") || line.starts_with("Data object")) {
            kind = line.split(';').next().unwrap_or("").trim().to_string();
        } else if let Some(label) = line.trim().strip_prefix("label:") {
            // Data objects' labels are quoted.
            let label = label.trim().trim_matches('\'');
            out.push((kind.clone(), label.to_string()));
        }
    }
    out
}

/// How many objects labelled `label` the listing shows.
fn count(listing: &str, label: &str) -> usize {
    objects(listing).iter().filter(|(_, l)| l == label).count()
}

const LOGIN: [&str; 4] = ["--login", "--pin", "1234", "--list-objects"];

/// The listing of SoftHSM token `index` of `conf`, read directly.
fn on_token(conf: &Path, index: usize) -> String {
    let conf = conf.display().to_string();
    let i = index.to_string();
    let mut args = vec!["--slot-index", i.as_str()];
    args.extend(LOGIN);
    let (ok, out, err) = tool(
        Path::new(SOFTHSM),
        &[("SOFTHSM2_CONF", conf.as_str())],
        &args,
    );
    assert!(ok, "token {index}: {err}");
    out
}

/// WLD mode over two SoftHSM tokens, `extra` on top.
fn wld(t: &Tokens, extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("SOFTHSM2_CONF".to_string(), t.conf().display().to_string()),
        ("P11HA_MODULES".into(), SOFTHSM.into()),
        ("ET_PTKC_GENERAL_LIBRARY_MODE".into(), "WLD".into()),
        ("ET_PTKC_WLD_SLOT_0".into(), LABEL.into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn p11ha(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut all = vec!["--slot", "0"];
    all.extend(args);
    tool(&lib_path(), &env, &all)
}

const KEYPAIRGEN: [&str; 11] = [
    "--login",
    "--pin",
    "1234",
    "--keypairgen",
    "--key-type",
    "EC:prime256v1",
    "--label",
    "made-once",
    "--id",
    "4242",
    "--extractable",
];

#[test]
fn a_key_pair_generated_in_one_process_is_on_every_token_and_listed_once() {
    let t = tokens(2);
    let env = wld(&t, &[("P11HA_REPLICATION_KEY", "aes-key")]);
    let (ok, _, err) = p11ha(&env, &KEYPAIRGEN);
    assert!(ok, "{err}");
    // Twenty later processes, each placed where it lands: the pair once.
    for run in 0..20 {
        let (ok, out, err) = p11ha(&env, &LOGIN);
        assert!(ok, "run {run}: {err}");
        let mut found: Vec<_> = objects(&out)
            .into_iter()
            .filter(|(_, l)| l == "made-once")
            .map(|(k, _)| k)
            .collect();
        found.sort();
        assert_eq!(
            found,
            ["Private Key Object", "Public Key Object"],
            "run {run}:\n{out}"
        );
    }
    // On each token itself; the copy is the same key (its public half).
    let first = on_token(&t.conf(), 0);
    let second = on_token(&t.conf(), 1);
    assert_eq!(count(&first, "made-once"), 2, "{first}");
    assert_eq!(count(&second, "made-once"), 2, "{second}");
    let read_pub = |index: usize| {
        let conf = t.conf().display().to_string();
        let i = index.to_string();
        let path = t.dir.join(format!("pub-{index}.der"));
        let p = path.display().to_string();
        let (ok, _, err) = tool(
            Path::new(SOFTHSM),
            &[("SOFTHSM2_CONF", conf.as_str())],
            &[
                "--slot-index",
                &i,
                "--read-object",
                "--type",
                "pubkey",
                "--label",
                "made-once",
                "-o",
                &p,
            ],
        );
        assert!(ok, "{err}");
        std::fs::read(path).unwrap()
    };
    assert_eq!(read_pub(0), read_pub(1), "one key pair, on both tokens");
    // Deleted through p11ha: from every token.
    for ty in ["privkey", "pubkey"] {
        let (ok, _, err) = p11ha(
            &env,
            &[
                "--login",
                "--pin",
                "1234",
                "--delete-object",
                "--type",
                ty,
                "--label",
                "made-once",
            ],
        );
        assert!(ok, "--delete-object {ty}: {err}");
    }
    for i in 0..2 {
        let listing = on_token(&t.conf(), i);
        assert_eq!(count(&listing, "made-once"), 0, "token {i}:\n{listing}");
    }
}

#[test]
fn a_key_that_cannot_reach_every_token_is_refused_and_says_why() {
    let t = tokens(2);
    // No replication key: refused, with the reason and what to configure.
    let (ok, out, err) = p11ha(&wld(&t, &[]), &KEYPAIRGEN);
    assert!(!ok, "{out}");
    assert!(err.contains("CKR_FUNCTION_FAILED"), "{err}");
    assert!(
        err.contains("Token object not made: C_GenerateKeyPair")
            && err.contains("P11HA_REPLICATION_KEY"),
        "{err}"
    );
    // A key that may not leave its HSM: refused too.
    let mut not_extractable = KEYPAIRGEN.to_vec();
    not_extractable.pop();
    let (ok, _, err) = p11ha(
        &wld(&t, &[("P11HA_REPLICATION_KEY", "aes-key")]),
        &not_extractable,
    );
    assert!(!ok);
    assert!(err.contains("not extractable"), "{err}");
    for i in 0..2 {
        assert_eq!(count(&on_token(&t.conf(), i), "made-once"), 0, "token {i}");
    }
    // Kept on one HSM when the operator says so, and said.
    let (ok, _, err) = p11ha(&wld(&t, &[("P11HA_TOKEN_KEYS", "LOCAL")]), &not_extractable);
    assert!(ok, "{err}");
    assert!(err.contains("Token object on one HSM only"), "{err}");
    let on: Vec<usize> = (0..2)
        .map(|i| count(&on_token(&t.conf(), i), "made-once"))
        .collect();
    let mut sorted = on.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 2], "{on:?}");
}

/// HA over two `p11-kit server`s; the state directory keeps which members
/// hold every write. Server 1 is killed (SIGKILL) before the application
/// starts, a token object is written, the server comes back: it lacks the
/// object, so no later process lets it serve, until the operator syncs it.
#[test]
fn a_member_down_during_a_write_is_held_out_until_synced() {
    let (t, mut servers): (Tokens, Vec<Server>) = standalone(2);
    let state = t.dir.join("state");
    let log = t.dir.join("ha.log");
    let list = servers
        .iter()
        .map(Server::address)
        .collect::<Vec<_>>()
        .join(" ");
    let env: Vec<(String, String)> = [
        ("ET_HSM_NETCLIENT_SERVERLIST", list.as_str()),
        ("ET_PTKC_GENERAL_LIBRARY_MODE", "HA"),
        ("ET_PTKC_WLD_SLOT_0", LABEL),
        ("ET_PTKC_HA_LOG_FILE", log.to_str().unwrap()),
        ("P11HA_STATE_DIR", state.to_str().unwrap()),
        ("P11HA_CONNECT_TIMEOUT_MS", "1000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    servers[1].kill();
    let write = [
        "--login",
        "--pin",
        "1234",
        "--write-object",
        "/dev/null",
        "--type",
        "data",
        "--label",
        "written-once",
    ];
    let blob = t.dir.join("blob");
    std::fs::write(&blob, b"one token").unwrap();
    let blob = blob.display().to_string();
    let mut write = write.to_vec();
    write[4] = &blob;
    let (ok, _, err) = p11ha(&env, &write);
    assert!(ok, "{err}");
    // The state says one write was made, and only server 0's token holds it.
    let text = std::fs::read_to_string(state.join("state")).unwrap();
    assert!(text.contains(&format!("slot\t{LABEL}\t1\n")), "{text}");
    let holders: Vec<&str> = text.lines().filter(|l| l.starts_with("member\t")).collect();
    assert_eq!(holders.len(), 1, "{text}");
    assert!(holders[0].ends_with("\t1"), "{text}");
    servers[1].start();
    // The next process: server 1 answers, and is held out.
    let (ok, out, err) = p11ha(&env, &LOGIN);
    assert!(ok, "{err}");
    assert_eq!(count(&out, "written-once"), 1);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("HSM needs sync hsmIdx=1"), "{log_text}");
    // Server 1's token lacks the object; server 0's has it.
    let direct = |i: usize| {
        let conf = servers[i].conf.display().to_string();
        let mut args = vec!["--slot-index", "0"];
        args.extend(LOGIN);
        let (ok, out, err) = tool(
            Path::new(SOFTHSM),
            &[("SOFTHSM2_CONF", conf.as_str())],
            &args,
        );
        assert!(ok, "{err}");
        count(&out, "written-once")
    };
    assert_eq!((direct(0), direct(1)), (1, 0));
    // Many processes later, still never served by server 1.
    for _ in 0..5 {
        let (ok, out, _) = p11ha(&env, &LOGIN);
        assert!(ok);
        assert_eq!(count(&out, "written-once"), 1);
    }
}
