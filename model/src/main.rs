//! Checks every configuration of the model of p11ha's failover and
//! recovery (see the library's documentation for what is modelled and
//! assumed), prints a Markdown table (configuration, unique states, wall
//! time, verdict) and each counterexample, and exits non-zero when a
//! verdict is not the expected one.
//!
//! Usage: `p11ha-model [THREADS]` (checker threads; default 2).

use p11ha_model::{SAFETY, cases, check, explain};

fn main() {
    let threads = std::env::args()
        .nth(1)
        .map_or(2, |t| t.parse().expect("THREADS is a number"));
    let mut unexpected = 0;
    let mut traces = Vec::new();
    println!("| configuration | unique states | wall time | verdict |");
    println!("| --- | ---: | ---: | --- |");
    for case in cases() {
        let r = check(case.cfg.clone(), threads);
        let violated: Vec<&str> = r.violated.iter().map(|(n, _)| *n).collect();
        let mut verdict: Vec<String> = SAFETY
            .iter()
            .map(|p| {
                let bad = violated.contains(p);
                let expected = case.expect_violated.contains(p);
                if bad != expected {
                    unexpected += 1;
                }
                match (bad, expected) {
                    (false, false) => format!("{p}: holds"),
                    (true, true) => format!("{p}: VIOLATED (known)"),
                    (true, false) => format!("{p}: VIOLATED (unexpected)"),
                    (false, true) => format!("{p}: holds (expected a violation)"),
                }
            })
            .collect();
        for s in &r.unreached {
            unexpected += 1;
            verdict.push(format!("never reached: {s}"));
        }
        println!(
            "| {} | {} | {:.1} s | {} |",
            case.cfg.name,
            r.states,
            r.secs,
            verdict.join("; ")
        );
        for (p, path) in r.violated {
            traces.push((case.cfg.clone(), p, path));
        }
    }
    for (cfg, p, path) in traces {
        println!("\nCounterexample to \"{p}\" in \"{}\":", cfg.name);
        for line in explain(&cfg, &path) {
            println!("    {line}");
        }
    }
    if unexpected > 0 {
        eprintln!("p11ha-model: {unexpected} verdict(s) not as expected");
        std::process::exit(1);
    }
}
