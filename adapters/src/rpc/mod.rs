//! A client of the PKCS#11 RPC protocol that `p11-kit server` speaks
//! (`shared/PKCS11-RPC.md`), over any `embedded-io` byte stream: each slot
//! of a server is a member, reached over a connection of its own.
//!
//! `no_std` and allocation-free: the caller gives each member its buffer
//! (which bounds the largest request and reply) and a [`Connector`] that
//! opens streams with deadlines. The `net` module gives one for Unix
//! sockets and TCP on a host.
//!
//! The client is in layers, each using only those listed before it:
//! - [`codec`]: values, mechanisms and templates as the server reads them;
//! - [`lengths`]: the length queries a member may answer without a round
//!   trip, and when it may;
//! - `conn`: a connection, its framing, and the rule that a broken
//!   connection is never read again;
//! - `client`: the member ([`RpcMember`]): connecting, finding its token
//!   and finding it again, and what every call shares (announcing an output
//!   buffer, reading one back);
//! - `calls`: the PKCS#11 calls, each one request and its reply, with
//!   `attributes` for the typed values of `C_GetAttributeValue`.

mod attributes;
mod calls;
mod client;
pub mod codec;
mod conn;
pub mod lengths;
// Test tooling: a scripted stand-in for a server (std), for the client's
// unit tests and its fuzz target. Not part of any product build.
#[cfg(any(test, feature = "script"))]
pub mod script;
#[cfg(test)]
mod tests;

pub use client::{RpcMember, Token};
pub use conn::{Connector, MAX_IN_FLIGHT};
