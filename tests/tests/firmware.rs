//! The firmware (`targets/firmware`): p11ha's no_std core and RPC client on
//! a Cortex-M4 under QEMU (mps2-an386), with no heap, failing over between
//! two real HSMs as on Linux.
//!
//! Each of the board's two UARTs is a Unix socket on which a real
//! `p11-kit server` listens (QEMU connects to it), over its own SoftHSM
//! token holding the same keys. The firmware's defmt log (semihosting, on
//! QEMU's stdout) is decoded by `defmt-print` as it comes; after signature
//! [`KILL_AFTER`] the server behind the session's member is killed
//! (`kill -9` of its process group), and the firmware must go on signing on
//! the other member, on the same session, without an error.
//!
//! Needs the firmware ELF (`P11HA_FIRMWARE_ELF`), `qemu-system-arm` and
//! `defmt-print`: `scripts/firmware.sh` builds and installs them, then runs
//! this test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use p11ha_tests::{ecdsa_der, openssl_verifies, remote};

/// Signatures the firmware makes (its `SIGNATURES`).
const SIGNATURES: usize = 40;
/// The server behind the session is killed once this signature is logged.
const KILL_AFTER: usize = 10;
/// The whole run, QEMU's start to its exit.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A child process that is killed if the test ends before it does.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `signature <n> of message <i> on member <m>: <hex>` line.
#[derive(Debug)]
struct Signed {
    message: usize,
    member: usize,
    signature: Vec<u8>,
}

/// The words after `key` in `line`, up to the next space (or `:`).
fn after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split([' ', ':']).next()
}

fn number(line: &str, key: &str) -> Option<usize> {
    after(line, key)?.parse().ok()
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses a signature line; `None` for any other line.
fn signed(line: &str) -> Option<(usize, Signed)> {
    let n = number(line, "signature ")?;
    let message = number(line, " of message ")?;
    let member = number(line, " on member ")?;
    let signature = hex(line.rsplit(": ").next()?.trim())?;
    Some((
        n,
        Signed {
            message,
            member,
            signature,
        },
    ))
}

#[test]
#[ignore = "needs the firmware: scripts/firmware.sh builds it and runs this test"]
fn firmware_signs_through_a_failover_under_qemu() {
    let elf = std::env::var_os("P11HA_FIRMWARE_ELF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "P11HA_FIRMWARE_ELF is not set: it names the firmware ELF \
                 (targets/firmware); scripts/firmware.sh builds it and runs this test"
            )
        });
    assert!(
        elf.is_file(),
        "P11HA_FIRMWARE_ELF={} is not a file: build it with scripts/firmware.sh",
        elf.display()
    );
    let (tokens, mut servers) = remote::standalone(2);
    let public_key = tokens.keys.join("ec-pub.pem");

    let start = Instant::now();
    let mut qemu = Command::new("qemu-system-arm");
    qemu.args(["-machine", "mps2-an386", "-cpu", "cortex-m4"])
        .args(["-nographic", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"]);
    // UART0, then UART1: QEMU connects each to its server's socket.
    for s in &servers {
        qemu.arg("-serial")
            .arg(format!("unix:{}", s.socket.display()));
    }
    let qemu = qemu
        .arg("-kernel")
        .arg(&elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run qemu-system-arm (apt-get install qemu-system-arm; scripts/firmware.sh)");
    let mut qemu = Reaped(qemu);
    let frames = qemu.0.stdout.take().expect("QEMU's stdout");
    let decoder = Command::new("defmt-print")
        .arg("-e")
        .arg(&elf)
        .stdin(Stdio::from(frames))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run defmt-print (cargo install --locked defmt-print; scripts/firmware.sh)");
    let mut decoder = Reaped(decoder);

    // The decoded lines, as they come; QEMU's stderr, whole.
    let (tx, lines) = mpsc::channel::<String>();
    let out = decoder.0.stdout.take().expect("defmt-print's stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut qemu_stderr = qemu.0.stderr.take().expect("QEMU's stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = qemu_stderr.read_to_string(&mut s);
        s
    });

    let mut log = Vec::new();
    // Member index -> server (UART) index, from "UART<u> is member <m>".
    let mut uart_of = BTreeMap::new();
    let mut signatures = BTreeMap::new();
    let mut killed = None;
    let mut timed_out = false;
    loop {
        let Some(left) = TIMEOUT.checked_sub(start.elapsed()) else {
            timed_out = true;
            break;
        };
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            // defmt-print ended: QEMU closed its stdout.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let (Some(uart), Some(member)) = (number(&line, "UART"), number(&line, " is member ")) {
            uart_of.insert(member, uart);
        }
        let parsed = signed(&line);
        log.push(line);
        if let Some((n, s)) = parsed {
            if n == KILL_AFTER && killed.is_none() {
                let uart = *uart_of
                    .get(&s.member)
                    .unwrap_or_else(|| panic!("no UART is member {}: {log:#?}", s.member));
                servers[uart].kill();
                killed = Some((s.member, start.elapsed()));
                log.push(format!(
                    "[test] killed the server of member {} (UART{uart}) after signature {n}",
                    s.member
                ));
            }
            signatures.insert(n, s);
        }
    }
    let status = loop {
        if let Some(status) = qemu.0.try_wait().expect("wait for QEMU") {
            break Some(status);
        }
        if timed_out || start.elapsed() > TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    drop(qemu);
    drop(decoder);
    let stderr = stderr.join().unwrap_or_default();
    let text = log.join("\n");
    println!("---- firmware log (defmt) ----\n{text}");
    if !stderr.trim().is_empty() {
        println!("---- QEMU stderr ----\n{stderr}");
    }
    println!("---- {:.1} s wall clock ----", wall.as_secs_f64());

    let Some(status) = status else {
        panic!("the firmware did not finish within {TIMEOUT:?} (QEMU killed)");
    };
    assert_eq!(status.code(), Some(0), "the firmware's exit status");
    let (dead, killed_at) = killed.expect("the firmware never logged the signature to kill after");

    // Every signature, once, in order, each of its own message, each valid.
    assert_eq!(
        signatures.keys().copied().collect::<Vec<_>>(),
        (1..=SIGNATURES).collect::<Vec<_>>(),
        "signatures logged"
    );
    for (&n, s) in &signatures {
        assert_eq!(s.message, n - 1, "signature {n} signs message {}", n - 1);
        let message = format!("firmware message {}", s.message);
        assert!(
            openssl_verifies(&public_key, message.as_bytes(), &ecdsa_der(&s.signature)),
            "signature {n} of {message:?} does not verify with openssl"
        );
    }

    // One failover, of the member that was killed, to the other one.
    let failures: Vec<_> = log
        .iter()
        .filter(|l| l.contains("HSM Failure detected"))
        .collect();
    assert_eq!(failures.len(), 1, "one failover logged: {failures:?}");
    assert!(
        failures[0].contains(&format!("hsmIdx={dead},")),
        "the failure is member {dead}'s: {}",
        failures[0]
    );
    let summary = log
        .iter()
        .find(|l| l.contains("summary: "))
        .expect("the firmware's summary");
    assert_eq!(
        number(summary, "signatures, "),
        Some(1),
        "failovers the firmware counted: {summary}"
    );
    assert!(
        signatures
            .range(..=KILL_AFTER)
            .all(|(_, s)| s.member == dead),
        "signatures up to {KILL_AFTER} on member {dead}"
    );
    let after: Vec<usize> = signatures
        .range(KILL_AFTER + 1..)
        .map(|(_, s)| s.member)
        .collect();
    assert!(
        after.iter().all(|&m| m != dead),
        "no signature after the kill on member {dead}: {after:?}"
    );
    assert_eq!(
        signatures[&SIGNATURES].member,
        1 - dead,
        "the session moved to the other member"
    );
    println!(
        "firmware: {} signatures verified, 1 failover (member {dead} killed at {:.2} s, \
         session moved to member {}), {:.1} s",
        signatures.len(),
        killed_at.as_secs_f64(),
        1 - dead,
        wall.as_secs_f64()
    );
}
