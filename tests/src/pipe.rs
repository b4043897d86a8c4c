//! A benchmark's child process, spoken to over its stdin and stdout: one
//! command per line in; "@..." protocol lines out, anything else it prints
//! passed on to stderr under its name. p11ha-bench (its scale part too) and
//! p11ha-objbench run each configuration in such a child, since a PKCS#11
//! library is a per-process singleton.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A child and its two pipes.
pub struct ChildPipe {
    /// What its other output is marked with on stderr.
    pub name: String,
    /// The process.
    pub child: Child,
    /// Where commands go.
    pub stdin: ChildStdin,
    /// Where its lines come from.
    pub stdout: BufReader<ChildStdout>,
}

impl ChildPipe {
    /// Starts `cmd` with its stdin and stdout piped.
    pub fn spawn(cmd: &mut Command, name: &str) -> Result<ChildPipe, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting child {name}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no child stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
        Ok(ChildPipe {
            name: name.to_string(),
            child,
            stdin,
            stdout,
        })
    }

    /// The next protocol line ("@..." without the "@"); other output goes
    /// to stderr as "[name] line". The child's end of output is an error
    /// that says how it exited.
    pub fn reply(&mut self) -> Result<String, String> {
        loop {
            let mut line = String::new();
            let n = self
                .stdout
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                let status = self.child.wait().map_err(|e| e.to_string())?;
                return Err(format!("child process exited ({status})"));
            }
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix('@') {
                return Ok(rest.to_string());
            }
            eprintln!("[{}] {line}", self.name);
        }
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush())
    }

    /// Asks the child to quit and waits for it, 10 s at most, then kills
    /// it. What it still prints meanwhile is drained; its "@fatal" lines
    /// are shown, and so is an unsuccessful exit if `say_exit`.
    pub fn quit(&mut self, say_exit: bool) {
        let _ = self.send("quit");
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() && say_exit {
                        eprintln!("child {} exited with {status}", self.name);
                    }
                    return;
                }
                Ok(None) if Instant::now() < end => {
                    // Drain (and show) what it still says, e.g. "@bye" or
                    // a C_Finalize error.
                    let mut line = String::new();
                    if self.stdout.read_line(&mut line).unwrap_or(0) > 0 {
                        if let Some(msg) = line.trim_end().strip_prefix("@fatal ") {
                            eprintln!("child {}: {msg}", self.name);
                        }
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    eprintln!("child {} did not exit; killing it", self.name);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}
