//! Random numbers (PKCS#11 v2.40 §5.15) and the legacy parallel functions
//! (§5.16): passed to the session's member.

use crate::error::Result;
use crate::port::{Member, Platform};

use super::{Engine, Uses};

impl<P: Platform> Engine<P> {
    /// `C_SeedRandom`.
    pub fn seed_random(&self, handle: u64, seed: &[u8]) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| m.seed_random(s.real, seed),
            |_, _| {},
        )
    }

    /// `C_GenerateRandom`.
    pub fn generate_random(&self, handle: u64, out: &mut [u8]) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| m.generate_random(s.real, out),
            |_, _| {},
        )
    }

    /// `C_GetFunctionStatus` (legacy: members answer
    /// `CKR_FUNCTION_NOT_PARALLEL`).
    pub fn function_status(&self, handle: u64) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| m.function_status(s.real),
            |_, _| {},
        )
    }

    /// `C_CancelFunction` (legacy, likewise).
    pub fn cancel_function(&self, handle: u64) -> Result<()> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| m.cancel_function(s.real),
            |_, _| {},
        )
    }
}
