//! The user PIN: from a file, or from the terminal without echo; never from
//! an argument. Kept in a buffer that is zeroised when dropped.

use std::io::{IsTerminal, Read, Write};

use p11ha_core::secret::zeroise;

/// The longest PIN read.
const MAX_PIN: usize = 256;

/// A PIN, zeroised on drop.
pub struct Pin(Vec<u8>);

impl Pin {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        zeroise(&mut self.0);
    }
}

/// Reads the PIN from `file` (its first line), or from the terminal if
/// stdin is one. `Ok(None)`: no file and no terminal.
pub fn read(file: Option<&str>) -> Result<Option<Pin>, String> {
    // Room for the whole read, so that the buffer never moves (a move
    // would leave a copy behind, not zeroised).
    let mut buf = Vec::with_capacity(MAX_PIN + 2);
    match file {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| format!("cannot open the PIN file {path}: {e}"))?;
            f.take((MAX_PIN + 2) as u64)
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read the PIN file {path}: {e}"))?;
        }
        None if std::io::stdin().is_terminal() => {
            let _ = write!(std::io::stderr(), "User PIN: ");
            let echo = Echo::off();
            let mut byte = [0u8; 1];
            while buf.len() < MAX_PIN + 2 && read_byte(&mut byte) {
                buf.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            zeroise(&mut byte);
            drop(echo);
            let _ = writeln!(std::io::stderr());
        }
        None => return Ok(None),
    }
    let mut pin = Pin(buf);
    let end = pin
        .0
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(pin.0.len());
    let end = if end > 0 && pin.0[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    zeroise(&mut pin.0[end..]);
    pin.0.truncate(end);
    if pin.0.len() > MAX_PIN {
        return Err(format!("the PIN is longer than {MAX_PIN} bytes"));
    }
    if pin.0.is_empty() {
        return Err("the PIN is empty".into());
    }
    Ok(Some(pin))
}

/// One byte from fd 0 itself, not through std's buffered stdin, which
/// would keep a copy of the PIN.
fn read_byte(byte: &mut [u8; 1]) -> bool {
    // SAFETY: reads at most one byte into `byte`, which has room for it.
    unsafe { libc::read(0, byte.as_mut_ptr().cast(), 1) == 1 }
}

/// The terminal's echo, off while this lives.
struct Echo(Option<libc::termios>);

impl Echo {
    fn off() -> Echo {
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid termios to fill.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return Echo(None);
        }
        let mut quiet = t;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
        quiet.c_lflag |= libc::ICANON;
        // SAFETY: fd 0 and a valid termios derived from its own.
        unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &quiet) };
        Echo(Some(t))
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the settings tcgetattr read from fd 0.
            unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &t) };
        }
    }
}
