//! The demonstration `scripts/demo.sh` runs: an application that loads
//! `libp11ha.so` in HA mode over three HSMs that are separate `p11-kit
//! server` processes, each serving its own SoftHSM token (the same keys),
//! reached over p11ha's own PKCS#11 RPC client. It signs in a loop on one
//! session; in the middle, the server behind that session is killed with
//! SIGKILL. Every signature is checked by openssl. Then the server is
//! started again, p11ha reconnects it, and the HA log is shown.

use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use p11ha_tests::ha::{log_lines, log_path};
use p11ha_tests::remote::{self, with_server};
use p11ha_tests::*;

const SIGNATURES: u32 = 200;
const KILL_AT: u32 = 80;

fn main() {
    let l = remote::start(3, 2000, &[("ET_PTKC_HA_LOG_NAME", "p11ha-demo")]);
    println!("libp11ha.so: {}", lib_path().display());
    println!("mode HA, virtual slot 0 = tokens labelled {LABEL:?}; members:");
    for i in 0..3 {
        let m = member_info(i).expect("three members");
        let address = with_server(i, |s| s.address());
        println!(
            "  member {i}: p11-kit server at {address} (its slot {:#x}), serves slot {}",
            m.member_slot, m.slot
        );
    }
    let s = l.user_session();
    let key = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let first = session_member(&s);
    println!("one session, logged in, on member {first}; signing {SIGNATURES} times (ECDSA P-256)");
    let mut verified = 0;
    let mut killed = None;
    for i in 0..SIGNATURES {
        if i == KILL_AT {
            let m = session_member(&s);
            with_server(m, |server| server.kill());
            println!("  after {i} signatures: kill -9 of member {m}'s p11-kit server");
            killed = Some(m);
        }
        let data = format!("p11ha demo message {i}");
        let t = Instant::now();
        let sig = s
            .sign(&Mechanism::Ecdsa, key, &sha256(data.as_bytes()))
            .unwrap_or_else(|e| panic!("signature {i}: {e}"));
        let took = t.elapsed();
        let ok = openssl_verifies(
            &l.tokens.keys.join("ec-pub.pem"),
            data.as_bytes(),
            &ecdsa_der(&sig),
        );
        verified += u32::from(ok);
        if i == KILL_AT {
            println!(
                "  signature {i}: made on member {} in {took:.1?} (failover included), {} by openssl",
                session_member(&s),
                if ok { "verified" } else { "NOT verified" }
            );
        }
    }
    println!("{verified} of {SIGNATURES} signatures verified by openssl, no error seen");
    let m = killed.expect("a server was killed");
    with_server(m, |server| server.start());
    println!(
        "member {m}'s server started again; p11ha reconnects it after the recover delay (2 s)"
    );
    let t = Instant::now();
    while member_info(m).is_none_or(|i| i.up == 0) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = member_info(m).is_some_and(|i| i.up == 1);
    println!(
        "member {m} {}",
        if back {
            "is back in service"
        } else {
            "did NOT come back"
        }
    );
    println!(
        "the HA log ({}, named by ET_PTKC_HA_LOG_FILE; an application that sets none logs \
         to /ptk_halog.log, PTK's default, or to syslog if that file cannot be written):",
        log_path().display()
    );
    for line in log_lines() {
        println!("  {line}");
    }
    if verified != SIGNATURES || !back {
        std::process::exit(1);
    }
    println!("demo: every signature verified, the failed HSM recovered");
}
