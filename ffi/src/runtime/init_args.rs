//! `C_Initialize`'s arguments: how p11ha locks, and whether it may start a
//! thread of its own.

use cryptoki_sys::*;
use p11ha_core::ck::Rv;
use p11ha_core::{Error, Result};

use crate::host::{AppMutexes, Locking};

/// What `C_Initialize`'s arguments ask of p11ha.
pub struct InitArgs {
    /// How to lock.
    pub locking: Locking,
    /// Whether p11ha may start threads of its own
    /// (`CKF_LIBRARY_CANT_CREATE_OS_THREADS` not set).
    pub threads: bool,
}

/// `C_Initialize`'s arguments (`None`: NULL), checked as PKCS#11 says.
pub fn init_args(args: Option<&CK_C_INITIALIZE_ARGS>) -> Result<InitArgs> {
    let Some(args) = args else {
        return Ok(InitArgs {
            locking: Locking::Os,
            threads: true,
        });
    };
    if !args.pReserved.is_null() {
        return Err(Error::Rv(Rv::ARGUMENTS_BAD));
    }
    let given = [
        args.CreateMutex.is_some(),
        args.DestroyMutex.is_some(),
        args.LockMutex.is_some(),
        args.UnlockMutex.is_some(),
    ];
    if given.iter().any(|&g| g) && !given.iter().all(|&g| g) {
        return Err(Error::Rv(Rv::ARGUMENTS_BAD));
    }
    let os_ok = args.flags & CKF_OS_LOCKING_OK != 0;
    let locking = match AppMutexes::from_args(args) {
        // Callbacks without OS locking: PKCS#11 says the library must use
        // them.
        Some(calls) if !os_ok => Locking::App(calls),
        // Either may be used, or the application is single-threaded: p11ha
        // always locks (its own members are called from many threads).
        _ => Locking::Os,
    };
    Ok(InitArgs {
        locking,
        threads: args.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS == 0,
    })
}
