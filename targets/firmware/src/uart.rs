//! The CMSDK APB UART of the MPS2 boards (ARM DDI0479C, "APB UART"), polled.
//!
//! Five registers matter: DATA (a one-byte buffer each way), STATE (TX
//! buffer full, RX buffer full), CTRL (TX and RX enable), BAUDDIV. There is
//! no FIFO and no flow control: the peer's next byte can only land once the
//! firmware has read the last one (QEMU holds it back until then; real
//! hardware would overrun, which a board with a faster link handles with
//! interrupts or DMA).
//!
//! The driver implements `embedded-io`'s blocking `Read` and `Write`, which
//! wait as long as it takes, and `ReadReady` / `WriteReady`, which let a
//! wrapper wait with a deadline instead ([`crate::deadline`]).

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};

/// UART0 of mps2-an385/an386/an500 (QEMU's `hw/arm/mps2.c`; the first
/// `-serial`).
pub const UART0: usize = 0x4000_4000;
/// UART1 (the second `-serial`).
pub const UART1: usize = 0x4000_5000;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
/// The smallest divider the UART accepts (25 MHz / 16: about 1.5 Mbaud;
/// QEMU does not pace the line, so the rate only matters on hardware).
const MIN_BAUDDIV: u32 = 16;

/// One CMSDK APB UART, owned: at most one `Uart` drives each.
pub struct Uart {
    base: usize,
}

impl Uart {
    /// Takes the UART at `base`, enables transmit and receive (8N1 is the
    /// only format it has) and sets the divider.
    ///
    /// # Safety
    /// `base` is the address of a CMSDK APB UART on this board, and no other
    /// `Uart` (or other code) drives that UART while this one lives.
    pub unsafe fn take(base: usize) -> Uart {
        let uart = Uart { base };
        uart.write_reg(BAUDDIV, MIN_BAUDDIV);
        uart.write_reg(CTRL, CTRL_TX_EN | CTRL_RX_EN);
        uart
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `take`'s contract makes base + offset (a register of this
        // UART, 4-byte aligned) device memory that only this Uart touches.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in read_reg.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// A received byte, if one is waiting.
    pub fn try_read_byte(&mut self) -> Option<u8> {
        (self.read_reg(STATE) & STATE_RX_FULL != 0).then(|| self.read_reg(DATA) as u8)
    }

    /// Sends `byte` if the transmit buffer is free.
    pub fn try_write_byte(&mut self, byte: u8) -> bool {
        if self.read_reg(STATE) & STATE_TX_FULL != 0 {
            return false;
        }
        self.write_reg(DATA, u32::from(byte));
        true
    }
}

impl ErrorType for Uart {
    type Error = Infallible;
}

impl ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.read_reg(STATE) & STATE_RX_FULL != 0)
    }
}

impl WriteReady for Uart {
    fn write_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.read_reg(STATE) & STATE_TX_FULL == 0)
    }
}

impl Read for Uart {
    /// Waits for one byte, then takes what else is waiting.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some((first, rest)) = buf.split_first_mut() else {
            return Ok(0);
        };
        *first = loop {
            if let Some(b) = self.try_read_byte() {
                break b;
            }
            core::hint::spin_loop();
        };
        let mut n = 1;
        for slot in rest {
            match self.try_read_byte() {
                Some(b) => *slot = b,
                None => break,
            }
            n += 1;
        }
        Ok(n)
    }
}

impl Write for Uart {
    /// Waits until one byte can go, then sends as many as go at once.
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let Some((&first, rest)) = buf.split_first() else {
            return Ok(0);
        };
        while !self.try_write_byte(first) {
            core::hint::spin_loop();
        }
        let mut n = 1;
        for &b in rest {
            if !self.try_write_byte(b) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Waits until the transmit buffer has gone to the line.
    fn flush(&mut self) -> Result<(), Infallible> {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {
            core::hint::spin_loop();
        }
        Ok(())
    }
}
