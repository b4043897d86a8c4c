//! Checks every configuration of the model of p11ha's failover and
//! recovery (see the library's documentation for what is modelled and
//! assumed), prints a Markdown table (configuration, unique states, wall
//! time, verdict) and each counterexample, and exits non-zero when a
//! property is violated or a sanity property is never reached.
//!
//! Usage: `p11ha-model [THREADS]` (checker threads; default 2).

use p11ha_model::{SAFETY, cases, check, explain};

fn main() {
    let threads = std::env::args()
        .nth(1)
        .map_or(2, |t| t.parse().expect("THREADS is a number"));
    let mut failed = 0;
    let mut traces = Vec::new();
    println!("| configuration | unique states | wall time | verdict |");
    println!("| --- | ---: | ---: | --- |");
    for cfg in cases() {
        let r = check(cfg.clone(), threads);
        let violated: Vec<&str> = r.violated.iter().map(|(n, _)| *n).collect();
        let mut verdict: Vec<String> = SAFETY
            .iter()
            .map(|p| {
                if violated.contains(p) {
                    failed += 1;
                    format!("{p}: VIOLATED")
                } else {
                    format!("{p}: holds")
                }
            })
            .collect();
        for s in &r.unreached {
            failed += 1;
            verdict.push(format!("never reached: {s}"));
        }
        println!(
            "| {} | {} | {:.1} s | {} |",
            cfg.name,
            r.states,
            r.secs,
            verdict.join("; ")
        );
        for (p, path) in r.violated {
            traces.push((cfg.clone(), p, path));
        }
    }
    for (cfg, p, path) in traces {
        println!("\nCounterexample to \"{p}\" in \"{}\":", cfg.name);
        for line in explain(&cfg, &path) {
            println!("    {line}");
        }
    }
    if failed > 0 {
        eprintln!("p11ha-model: {failed} property(ies) violated or never reached");
        std::process::exit(1);
    }
}
