//! p11ha-adapters: the ways p11ha reaches a member HSM.
//!
//! - [`module`] (std): a vendor PKCS#11 module loaded with `dlopen`;
//!   each of its slots is a member.
//! - [`either`] (no_std): one of two kinds of member behind one type.
//! - [`fault`] (no_std): a wrapper that makes a member fail on command, for
//!   failure tests with real members behind it.
//! - [`sys`] (std): conversions between the core's types and the C
//!   structures of `cryptoki-sys`, shared with the C ABI.
//! - [`rpc`] (no_std): a client of the PKCS#11 RPC protocol of
//!   `p11-kit server`, over any `embedded-io` stream; each remote slot is a
//!   member.
//! - [`net`] (std): Unix-socket and TCP streams for `rpc`, with connect and
//!   call deadlines.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

pub mod either;
#[cfg(feature = "fault")]
pub mod fault;
#[cfg(feature = "module")]
pub mod module;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "rpc")]
pub mod rpc;
#[cfg(feature = "module")]
pub mod sys;
