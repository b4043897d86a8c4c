//! p11ha-adapters: the ways p11ha reaches a member HSM.
//!
//! - [`module`] (std): a vendor PKCS#11 module loaded with `dlopen`;
//!   each of its slots is a member.
//! - [`fault`] (no_std): a wrapper that makes a member fail on command, for
//!   failure tests with real members behind it.
//! - [`sys`] (std): conversions between the core's types and the C
//!   structures of `cryptoki-sys`, shared with the C ABI.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "fault")]
pub mod fault;
#[cfg(feature = "module")]
pub mod module;
#[cfg(feature = "module")]
pub mod sys;
