//! `p11ha`: the operator's tool for the members of `libp11ha.so`.
//!
//! It reads the library's configuration (the file named by `P11HA_CONF`,
//! then the environment), reaches each member on its own as the library
//! does (`members`), and shows them (`status`), tests them (`selftest`) or
//! compares their token objects (`check`).

use std::process::ExitCode;

use libp11ha::config::HostConfig;

mod check;
mod json;
mod live;
mod members;
mod pin;
mod selftest;
mod status;

const HELP: &str = "\
Usage: p11ha <command> [options]

Shows, tests and compares the members (HSMs) behind libp11ha.so, each on its
own, with the library's configuration: the file named by P11HA_CONF, then the
environment (P11HA_MODULES, ET_HSM_NETCLIENT_SERVERLIST, ET_PTKC_*, ...).

Commands:
  status [--json] [--live] each slot and its members: hsmIdx, where, up or not
                           (and why), token label, serial, model, firmware, and
                           the time of one C_GetTokenInfo now; --live adds
                           each running application's own view, read from the
                           sockets P11HA_STATUS_SOCKET names
  selftest [--pin-file F] [--key LABEL] [--json]
                           on every member: log in, sign and verify with the
                           key pair labelled LABEL (default ec-key)
  check [--pin-file F] [--json]
                           compares the token objects of every slot's members
                           (identity and public attributes); with a PIN, the
                           private objects too
  help, --help, -h         this text

The PIN is read from the file F (its first line), or from the terminal without
echo; never from an argument.

Exit status: 0 all well; 1 a slot without a member up (status), a member
failed (selftest), drift or a member not compared (check); 2 usage or
configuration error.

Remote members answer within P11HA_CONNECT_TIMEOUT_MS and P11HA_CALL_TIMEOUT_MS;
a module loaded in-process (P11HA_MODULES) that hangs cannot be interrupted.
";

/// A usage or configuration error: exit status 2.
pub const USAGE: u8 = 2;

/// What the command line asked for.
struct Args {
    command: String,
    json: bool,
    live: bool,
    pin_file: Option<String>,
    key: Option<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let command = it.next().cloned().unwrap_or_else(|| "help".into());
    let mut a = Args {
        command,
        json: false,
        live: false,
        pin_file: None,
        key: None,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match (a.command.as_str(), arg.as_str()) {
            ("status" | "selftest" | "check", "--json") => a.json = true,
            ("status", "--live") => a.live = true,
            ("selftest" | "check", "--pin-file") => a.pin_file = Some(value(arg)?),
            ("selftest", "--key") => a.key = Some(value(arg)?),
            (_, "--pin" | "-p") => {
                return Err("a PIN is never taken as an argument: use --pin-file".into());
            }
            (c, other) => return Err(format!("{c}: unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("p11ha: {e}\n(p11ha --help tells more)");
            return ExitCode::from(USAGE);
        }
    };
    if matches!(args.command.as_str(), "help" | "--help" | "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if !matches!(args.command.as_str(), "status" | "selftest" | "check") {
        eprintln!(
            "p11ha: unknown command {}\n(p11ha --help tells more)",
            args.command
        );
        return ExitCode::from(USAGE);
    }
    // Problems are written to stderr as the library writes them.
    let (cfg, problems) = HostConfig::load();
    if !problems.is_empty() {
        eprintln!("p11ha: the configuration has problems (above); fix them first");
        return ExitCode::from(USAGE);
    }
    if cfg.modules.is_empty() && cfg.servers.is_empty() {
        eprintln!("p11ha: no member configured: set P11HA_MODULES or ET_HSM_NETCLIENT_SERVERLIST");
        return ExitCode::from(USAGE);
    }
    let found = match members::reach(&cfg) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("p11ha: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let code = match args.command.as_str() {
        "status" => {
            let views = status::slots(&cfg, &found);
            let code = status::exit_status(&cfg, &found, &views);
            let live: Option<Vec<live::Live>> = args.live.then(|| {
                cfg.status_socket
                    .as_deref()
                    .map(live::sockets)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| live::read(p))
                    .collect()
            });
            if args.json {
                let doc = status::to_json(&cfg, &found, code);
                match &live {
                    // One more key, before the closing brace.
                    Some(l) => println!(
                        "{},\"live\":{}}}",
                        doc.trim_end().trim_end_matches('}'),
                        live::to_json(l)
                    ),
                    None => println!("{doc}"),
                }
            } else {
                print!("{}", status::table(&cfg, &found));
                if let Some(l) = &live {
                    if cfg.status_socket.is_none() {
                        println!(
                            "\nlive: P11HA_STATUS_SOCKET is not set: no application serves its state"
                        );
                    } else {
                        print!("{}", live::table(l));
                    }
                }
            }
            code
        }
        command => {
            let pin = match pin::read(args.pin_file.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("p11ha: {e}");
                    return ExitCode::from(USAGE);
                }
            };
            if command == "selftest" {
                let Some(pin) = pin else {
                    eprintln!("p11ha: selftest logs in: give --pin-file, or run it on a terminal");
                    return ExitCode::from(USAGE);
                };
                let key = args.key.as_deref().unwrap_or("ec-key");
                selftest::run(&cfg, &found, &pin, key, args.json)
            } else {
                check::run(&cfg, &found, pin.as_ref(), args.json)
            }
        }
    };
    drop(found);
    ExitCode::from(code as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Args, String> {
        parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arguments() {
        assert_eq!(args(&[]).unwrap().command, "help");
        assert!(args(&["status", "--json"]).unwrap().json);
        let a = args(&["selftest", "--pin-file", "f", "--key", "k"]).unwrap();
        assert_eq!(
            (a.pin_file.as_deref(), a.key.as_deref()),
            (Some("f"), Some("k"))
        );
        assert!(args(&["selftest", "--pin", "1234"]).is_err());
        assert!(args(&["check", "--key", "k"]).is_err());
        assert!(args(&["status", "--pin-file"]).is_err());
        assert!(args(&["check", "--pin-file"]).is_err());
    }
}
