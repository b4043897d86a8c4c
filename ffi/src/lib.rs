//! libp11ha.so: the PKCS#11 C ABI of p11ha and its std runtime.
//!
//! An application loads `libp11ha.so` like any PKCS#11 module. Configuration
//! comes from the environment and the file named by `P11HA_CONF` (see the
//! README); the members are the slots of the modules listed in
//! `P11HA_MODULES`.
//!
//! - [`exports`]: the exported functions, one-line shims;
//! - [`calls`]: their bodies;
//! - [`args`]: the only place raw pointers become references;
//! - [`runtime`]: the process-wide engine and its life cycle;
//! - [`host`]: the Linux platform (futex locks, the journal arena, events);
//! - [`halog`]: the HA log file.

mod args;
mod calls;
pub mod config;
pub mod exports;
pub mod halog;
pub mod host;
pub mod runtime;
