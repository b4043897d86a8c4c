//! Conversions between the core's types and `cryptoki-sys`'s C structures,
//! shared by the module adapter (which calls a C module) and the C ABI of
//! `libp11ha.so` (which is called by C applications).
//!
//! `CK_ULONG` is the platform's `unsigned long`; the core carries `u64`.
//! The all-ones "unavailable" value maps to the core's
//! [`UNAVAILABLE`](p11ha_core::ck::UNAVAILABLE) both ways.

use cryptoki_sys::*;
use p11ha_core::ck::{Rv, UNAVAILABLE};
use p11ha_core::port::{MechanismInfo, SessionInfo, SlotInfo, TokenInfo, Version};
use p11ha_core::{Error, Result};

/// A `CK_ULONG` as the core carries it.
#[allow(clippy::useless_conversion)] // CK_ULONG is u64 on LP64, u32 elsewhere
pub fn from_ulong(x: CK_ULONG) -> u64 {
    if x == CK_UNAVAILABLE_INFORMATION {
        UNAVAILABLE
    } else {
        u64::from(x)
    }
}

/// A core value as a `CK_ULONG`; `CKR_ARGUMENTS_BAD` if it does not fit.
#[allow(clippy::useless_conversion)]
pub fn to_ulong(x: u64) -> Result<CK_ULONG> {
    if x == UNAVAILABLE {
        return Ok(CK_UNAVAILABLE_INFORMATION);
    }
    CK_ULONG::try_from(x).map_err(|_| Error::Rv(Rv::ARGUMENTS_BAD))
}

/// A core value as a `CK_ULONG`, saturating to "unavailable" (for
/// informational counters, where a value too large to show is unknown).
pub fn to_ulong_lossy(x: u64) -> CK_ULONG {
    to_ulong(x).unwrap_or(CK_UNAVAILABLE_INFORMATION)
}

/// A length as a `CK_ULONG`.
pub fn len_to_ulong(n: usize) -> Result<CK_ULONG> {
    CK_ULONG::try_from(n).map_err(|_| Error::Rv(Rv::ARGUMENTS_BAD))
}

/// A `CK_ULONG` length as a `usize`; `None` for "unavailable" or a value
/// no buffer of this platform can have.
pub fn ulong_to_len(x: CK_ULONG) -> Option<usize> {
    if x == CK_UNAVAILABLE_INFORMATION {
        None
    } else {
        usize::try_from(x).ok()
    }
}

/// A `CK_RV` as a result.
pub fn check(rv: CK_RV) -> Result<()> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(Error::Rv(Rv(from_ulong(rv))))
    }
}

fn version(v: CK_VERSION) -> Version {
    Version {
        major: v.major,
        minor: v.minor,
    }
}

fn sys_version(v: Version) -> CK_VERSION {
    CK_VERSION {
        major: v.major,
        minor: v.minor,
    }
}

/// `CK_SLOT_INFO` to the core's.
pub fn slot_info(i: &CK_SLOT_INFO) -> SlotInfo {
    SlotInfo {
        description: i.slotDescription,
        manufacturer: i.manufacturerID,
        flags: from_ulong(i.flags),
        hardware_version: version(i.hardwareVersion),
        firmware_version: version(i.firmwareVersion),
    }
}

/// The core's slot information as `CK_SLOT_INFO`.
pub fn sys_slot_info(i: &SlotInfo) -> CK_SLOT_INFO {
    CK_SLOT_INFO {
        slotDescription: i.description,
        manufacturerID: i.manufacturer,
        flags: to_ulong_lossy(i.flags),
        hardwareVersion: sys_version(i.hardware_version),
        firmwareVersion: sys_version(i.firmware_version),
    }
}

/// `CK_TOKEN_INFO` to the core's.
pub fn token_info(i: &CK_TOKEN_INFO) -> TokenInfo {
    TokenInfo {
        label: i.label,
        manufacturer: i.manufacturerID,
        model: i.model,
        serial: i.serialNumber,
        flags: from_ulong(i.flags),
        max_session_count: from_ulong(i.ulMaxSessionCount),
        session_count: from_ulong(i.ulSessionCount),
        max_rw_session_count: from_ulong(i.ulMaxRwSessionCount),
        rw_session_count: from_ulong(i.ulRwSessionCount),
        max_pin_len: from_ulong(i.ulMaxPinLen),
        min_pin_len: from_ulong(i.ulMinPinLen),
        total_public_memory: from_ulong(i.ulTotalPublicMemory),
        free_public_memory: from_ulong(i.ulFreePublicMemory),
        total_private_memory: from_ulong(i.ulTotalPrivateMemory),
        free_private_memory: from_ulong(i.ulFreePrivateMemory),
        hardware_version: version(i.hardwareVersion),
        firmware_version: version(i.firmwareVersion),
        utc_time: i.utcTime,
    }
}

/// The core's token information as `CK_TOKEN_INFO`.
pub fn sys_token_info(i: &TokenInfo) -> CK_TOKEN_INFO {
    CK_TOKEN_INFO {
        label: i.label,
        manufacturerID: i.manufacturer,
        model: i.model,
        serialNumber: i.serial,
        flags: to_ulong_lossy(i.flags),
        ulMaxSessionCount: to_ulong_lossy(i.max_session_count),
        ulSessionCount: to_ulong_lossy(i.session_count),
        ulMaxRwSessionCount: to_ulong_lossy(i.max_rw_session_count),
        ulRwSessionCount: to_ulong_lossy(i.rw_session_count),
        ulMaxPinLen: to_ulong_lossy(i.max_pin_len),
        ulMinPinLen: to_ulong_lossy(i.min_pin_len),
        ulTotalPublicMemory: to_ulong_lossy(i.total_public_memory),
        ulFreePublicMemory: to_ulong_lossy(i.free_public_memory),
        ulTotalPrivateMemory: to_ulong_lossy(i.total_private_memory),
        ulFreePrivateMemory: to_ulong_lossy(i.free_private_memory),
        hardwareVersion: sys_version(i.hardware_version),
        firmwareVersion: sys_version(i.firmware_version),
        utcTime: i.utc_time,
    }
}

/// `CK_SESSION_INFO` to the core's.
pub fn session_info(i: &CK_SESSION_INFO) -> SessionInfo {
    SessionInfo {
        slot: from_ulong(i.slotID),
        state: from_ulong(i.state),
        flags: from_ulong(i.flags),
        device_error: from_ulong(i.ulDeviceError),
    }
}

/// The core's session information as `CK_SESSION_INFO`.
pub fn sys_session_info(i: &SessionInfo) -> CK_SESSION_INFO {
    CK_SESSION_INFO {
        slotID: to_ulong_lossy(i.slot),
        state: to_ulong_lossy(i.state),
        flags: to_ulong_lossy(i.flags),
        ulDeviceError: to_ulong_lossy(i.device_error),
    }
}

/// `CK_MECHANISM_INFO` to the core's.
pub fn mechanism_info(i: &CK_MECHANISM_INFO) -> MechanismInfo {
    MechanismInfo {
        min_key_size: from_ulong(i.ulMinKeySize),
        max_key_size: from_ulong(i.ulMaxKeySize),
        flags: from_ulong(i.flags),
    }
}

/// The core's mechanism information as `CK_MECHANISM_INFO`.
pub fn sys_mechanism_info(i: &MechanismInfo) -> CK_MECHANISM_INFO {
    CK_MECHANISM_INFO {
        ulMinKeySize: to_ulong_lossy(i.min_key_size),
        ulMaxKeySize: to_ulong_lossy(i.max_key_size),
        flags: to_ulong_lossy(i.flags),
    }
}
