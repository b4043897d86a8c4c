//! p11ha-adapters: the ways p11ha reaches a member HSM.
//!
//! - [`module`] (std): a vendor PKCS#11 module loaded with `dlopen`;
//!   each of its slots is a member.
//! - [`sys`] (std): conversions between the core's types and the C
//!   structures of `cryptoki-sys`, shared with the C ABI.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "module")]
pub mod module;
#[cfg(feature = "module")]
pub mod sys;
