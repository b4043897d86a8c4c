//! libp11ha.so: the PKCS#11 C ABI of p11ha and its std runtime.
//!
//! An application loads `libp11ha.so` like any PKCS#11 module. Configuration
//! comes from the environment and the file named by `P11HA_CONF` (see the
//! README); the members are the slots of the modules listed in
//! `P11HA_MODULES`.
//!
//! The modules import one way: [`exports`] → [`calls`] → [`runtime`] →
//! the engine.
//! - [`exports`]: the exported functions, one-line shims, and the function
//!   list built from the same list;
//! - [`calls`]: their bodies, safe Rust;
//! - [`args`]: the only place raw pointers become references ([`args::Contract`]);
//! - [`types`]: p11ha's own C types;
//! - [`config`]: the configuration, from a file and the environment;
//! - [`runtime`]: the process-wide engine, its members and its life cycle;
//! - [`host`]: the Linux platform (futex locks, the journal arena, events);
//! - [`halog`]: the HA log file.

mod args;
mod calls;
pub mod config;
pub mod exports;
pub mod halog;
pub mod host;
pub mod runtime;
pub mod syncstate;
pub mod types;
