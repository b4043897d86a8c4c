//! Measures what HA mode's journals cost in resident memory: the process's
//! VmRSS after `C_Initialize`, after opening N sessions, and after each of
//! them has journalled a multi-part operation of the full data length
//! limit (64 KiB) and a session object. Run once per N (a fresh process,
//! as the library is a per-process singleton):
//! `p11ha-memory 1000` prints one line; `p11ha-memory` runs 1, 10, 100
//! and 1000 as child processes and prints a table.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use p11ha_tests::*;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn measure(mode: &str, n: usize) {
    let log = std::env::temp_dir().join(format!("p11ha-memory-{}.log", std::process::id()));
    let log = log.display().to_string();
    let l = Library::start(
        3,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", mode),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
            ("ET_PTKC_HA_LOG_FILE", &log),
        ],
    );
    let login = l.user_session();
    let key = find_one(&login, ObjectClass::SECRET_KEY, "aes-key");
    let after_init = rss_kib();
    let sessions: Vec<_> = (0..n).map(|_| l.session()).collect();
    let after_open = rss_kib();
    let data = vec![0x42u8; 64 * 1024];
    for s in &sessions {
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(b"memory".to_vec()),
            Attribute::Value(vec![1; 256]),
        ])
        .expect("object");
        s.encrypt_init(&Mechanism::AesCbc([0; 16]), key)
            .expect("init");
        for part in data.chunks(16 * 1024) {
            // The output is not kept: only the library's memory counts.
            s.encrypt_update(part).expect("update");
        }
        // The operation stays in progress: its 64 KiB stay journalled.
    }
    let after_work = rss_kib();
    println!("{after_init} {after_open} {after_work}");
    std::fs::remove_file(&log).ok();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(mode), Some(n)) = (args.get(1), args.get(2)) {
        measure(mode, n.parse().expect("a session count"));
        return;
    }
    println!("VmRSS in KiB, 3 SoftHSM members. Each of N sessions makes a 256-byte session");
    println!("object and keeps an AES-CBC encryption of 64 KiB (the data length limit) in");
    println!("progress. WLD keeps no journal: HA - WLD is what the journals cost.");
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "N", "WLD init", "WLD work", "HA init", "HA work", "journal/ses"
    );
    for n in [1, 10, 100, 1000] {
        let run = |mode: &str| -> Vec<u64> {
            let out = std::process::Command::new(&args[0])
                .args([mode, &n.to_string()])
                .output()
                .expect("run a measurement");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let f: Vec<u64> = text
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            assert!(
                out.status.success() && f.len() == 3,
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            f
        };
        let (wld, ha) = (run("WLD"), run("HA"));
        let journal = (ha[2] - ha[0]) as f64 - (wld[2] - wld[0]) as f64;
        println!(
            "{n:>6} {:>10} {:>10} {:>10} {:>10} {:>12.1}",
            wld[0],
            wld[2],
            ha[0],
            ha[2],
            journal / n as f64
        );
    }
}
