//! The C types of p11ha's own: the structure its extension
//! `P11HA_GetMemberInfo` fills, and the version of its interface.
#![allow(non_snake_case)]

use cryptoki_sys::*;

/// What `P11HA_GetMemberInfo` reports of a member.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct P11HA_MEMBER_INFO {
    /// The virtual slot the member serves.
    pub slotID: CK_SLOT_ID,
    /// The member's own slot id in its module.
    pub memberSlotID: CK_SLOT_ID,
    /// Application sessions on it.
    pub ulSessionCount: CK_ULONG,
    /// `CK_TRUE` while it is in service.
    pub up: CK_BBOOL,
}

/// The PKCS#11 version of the function list and interface.
pub const VERSION_2_40: CK_VERSION = CK_VERSION {
    major: 2,
    minor: 40,
};
