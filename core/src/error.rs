//! The one error type of p11ha and its mapping to `CK_RV`.

use crate::ck::Rv;

/// Why a call failed.
///
/// Every error maps to exactly one `CK_RV` ([`Error::rv`]). The variants
/// exist because some failures carry more than a return value: a buffer
/// that is too small carries the length that would have fitted (the C ABI
/// must write it before it returns `CKR_BUFFER_TOO_SMALL`), and a transport
/// failure must be told apart from an HSM's own `CKR_DEVICE_ERROR` by the
/// failover logic although both reach the application the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A return value from a member, or one p11ha chose.
    Rv(Rv),
    /// The output buffer was too small; `needed` bytes (or elements) fit.
    BufferTooSmall {
        /// The length that fits the whole output.
        needed: usize,
    },
    /// The member could not be reached or did not answer properly.
    Transport(TransportError),
    /// Internal to the engine, never an answer to the application: the call
    /// needs a session object that lives on member `member` (the slot's
    /// *home*), not on the session's member. The engine moves the session
    /// there and runs the call again.
    Elsewhere {
        /// The member index that holds the object.
        member: usize,
    },
}

/// A portable classification of transport failures, as `embedded-io` does
/// for stream errors: enough to tell a timeout from a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TransportError {
    /// The connection is gone (closed, reset, never established).
    Disconnected,
    /// The call deadline passed without an answer.
    TimedOut,
    /// The peer answered something that is not the protocol.
    Protocol,
}

impl core::fmt::Display for TransportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TransportError::Disconnected => "the connection is lost or was refused",
            TransportError::TimedOut => "no answer before the deadline",
            TransportError::Protocol => "the answer is not the PKCS#11 RPC protocol",
        })
    }
}

impl Error {
    /// The `CK_RV` the application sees for this error.
    pub fn rv(self) -> Rv {
        match self {
            Error::Rv(rv) => rv,
            Error::BufferTooSmall { .. } => Rv::BUFFER_TOO_SMALL,
            Error::Transport(_) => Rv::DEVICE_ERROR,
            // Never reaches the application; were it to, this is what the
            // session could not use.
            Error::Elsewhere { .. } => Rv::OBJECT_HANDLE_INVALID,
        }
    }
}

impl From<Rv> for Error {
    fn from(rv: Rv) -> Self {
        Error::Rv(rv)
    }
}

/// The result of every fallible operation in p11ha.
pub type Result<T> = core::result::Result<T, Error>;

/// Turns a `CK_RV` into a `Result`.
pub fn check(rv: Rv) -> Result<()> {
    if rv == Rv::OK {
        Ok(())
    } else {
        Err(Error::Rv(rv))
    }
}
