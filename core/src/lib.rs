//! p11ha-core: the replay core of p11ha, a PKCS#11 library that makes
//! several HSMs look like one.
//!
//! The core is `#![no_std]` and never allocates: every table lives in
//! storage the platform hands in ([`engine::Storage`]), with a capacity
//! fixed when that storage is made, and a full table is an answer
//! (`CKR_HOST_MEMORY`, `CKR_SESSION_COUNT`), never a panic. Everything the
//! core needs from outside is a trait in [`port`]: the members (one slot of
//! one HSM each), the lock held across member calls, the sink for events.
//!
//! Layers, from the bottom:
//! - [`ck`]: the PKCS#11 vocabulary, every `CK_ULONG` carried as `u64`;
//! - [`error`]: the one error type and its mapping to `CK_RV`;
//! - [`config`]: PTK's configuration items, parsed from key/value pairs;
//! - [`port`]: the traits a platform implements;
//! - [`sync`], [`secret`]: locks over the platform's raw lock, zeroised PINs;
//! - [`bytes`]: the bounds-checked byte cursors every encoding uses;
//! - [`handles`]: virtual handles and the object table;
//! - [`journal`]: what HA mode keeps of each session to replay it;
//! - [`event`]: what p11ha reports, in PTK's words;
//! - [`engine`]: the dispatcher.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bytes;
pub mod ck;
pub mod config;
pub mod engine;
pub mod error;
pub mod event;
pub mod handles;
pub mod journal;
pub mod port;
pub mod secret;
#[allow(unsafe_code)]
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use engine::Engine;
pub use error::{Error, Result};
