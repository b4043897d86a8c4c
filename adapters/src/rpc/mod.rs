//! A client of the PKCS#11 RPC protocol that `p11-kit server` speaks
//! (`shared/PKCS11-RPC.md`), over any `embedded-io` byte stream: each slot
//! of a server is a member, reached over a connection of its own.
//!
//! `no_std` and allocation-free: the caller gives each member its buffer
//! (which bounds the largest request and reply) and a [`Connector`] that
//! opens streams with deadlines. The `net` module gives one for Unix
//! sockets and TCP on a host.

mod client;
pub mod codec;
pub mod lengths;
// Test tooling: a scripted stand-in for a server (std), for the client's
// unit tests and its fuzz target. Not part of any product build.
#[cfg(any(test, feature = "script"))]
pub mod script;
#[cfg(test)]
mod tests;

pub use client::{Connector, RpcMember, Token};
