//! The events p11ha reports, with PTK's exact texts where PTK defines them.
//!
//! An event is data; the platform decides where it goes (the HA log file,
//! syslog, defmt, a test's recorder). [`Event`]'s `Display` is the message
//! text, [`Event::severity`] its type. No event carries a PIN, key material
//! or application data.

use core::fmt;

use crate::ck::Rv;
use crate::journal::Lost;

/// How bad an event is, in the words of PTK's HA log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Severity {
    /// Normal operation worth a line.
    Info,
    /// Something that may lose work later.
    Warning,
    /// A failure.
    Error,
}

impl Severity {
    /// The word written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "Info",
            Severity::Warning => "Warning",
            Severity::Error => "Error",
        }
    }
}

/// Something that happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// PTK: a session failed because its HSM failed, and p11ha attempted a
    /// session recovery. `hsm_idx` is the zero-based member index,
    /// `hsm_slot_id` the member's real slot id.
    HsmFailure {
        /// Zero-based member index.
        hsm_idx: usize,
        /// The member's own slot id.
        hsm_slot_id: u64,
    },
    /// A member was dropped for the life of the application (WLD mode, where
    /// there is no recovery): it answered with a failure-class code.
    MemberDropped {
        /// Zero-based member index.
        hsm_idx: usize,
        /// The member's own slot id.
        hsm_slot_id: u64,
        /// What it answered.
        rv: Rv,
    },
    /// A member was found and serves a virtual slot.
    MemberJoined {
        /// Zero-based member index.
        hsm_idx: usize,
        /// The member's own slot id.
        hsm_slot_id: u64,
        /// The virtual slot it serves.
        slot: u64,
    },
    /// A member disagreed with the others where they must agree (a PIN that
    /// one accepts and another refuses): it is dropped.
    MemberInconsistent {
        /// Zero-based member index.
        hsm_idx: usize,
        /// The member's own slot id.
        hsm_slot_id: u64,
        /// The function that disagreed.
        function: &'a str,
        /// What it answered.
        rv: Rv,
    },
    /// PTK: the application did something that makes a session
    /// unrecoverable; `lost` says what (PTK's `<desc>`). Reported once per
    /// `C_Initialize`/`C_Finalize`.
    NotRecoverable {
        /// What was done.
        lost: Lost,
    },
    /// PTK: a member failed and, with `ET_PTKC_HA_RECOVER_WAIT=YES`,
    /// application threads are held while its recovery is attempted.
    HsmDead,
    /// A failed member answered again, with the right token: it takes new
    /// sessions again.
    MemberRecovered {
        /// Zero-based member index.
        hsm_idx: usize,
        /// The member's own slot id.
        hsm_slot_id: u64,
    },
    /// A failover rebuilt a session but not all of its state: the part named
    /// is gone, and the application gets `rv` where it needs it.
    RecoveryIncomplete {
        /// What could not be rebuilt.
        what: &'a str,
        /// What the application is answered.
        rv: Rv,
    },
    /// A session had to move to member `hsm_idx`, which holds the
    /// application's session objects of its slot, and could not: an
    /// operation or search in progress there cannot be moved exactly. The
    /// call is answered `rv`; nothing was changed.
    SessionNotMoved {
        /// Zero-based member index of the slot's home.
        hsm_idx: usize,
        /// What the application is answered.
        rv: Rv,
    },
    /// A token object could not be made on every member (`why`): the call
    /// was refused (`refused`), or, with `P11HA_TOKEN_KEYS=LOCAL`, the object
    /// is on member `hsm_idx` alone.
    NotReplicated {
        /// The function.
        function: &'a str,
        /// Why it cannot reach the other members.
        why: &'a str,
        /// Zero-based index of the member that made it.
        hsm_idx: usize,
        /// The call was refused (else the object stays on one member).
        refused: bool,
    },
    /// Member `hsm_idx` missed token writes (it was out of service, or
    /// failed, when they were made): it does not take sessions until it is
    /// synced with the others.
    NeedsSync {
        /// Zero-based member index.
        hsm_idx: usize,
        /// The member's own slot id.
        hsm_slot_id: u64,
    },
    /// A token object was written (made, changed or destroyed) on virtual
    /// slot `slot`, by the members in `members` (bit i: member i), which
    /// are those in service; the others missed it.
    TokenWritten {
        /// The virtual slot id.
        slot: u64,
        /// The members that hold the write.
        members: u32,
    },
    /// A call p11ha cannot carry out on a virtual slot was refused.
    Refused {
        /// The function.
        function: &'a str,
        /// Why.
        why: &'a str,
        /// What the application is answered.
        rv: Rv,
    },
    /// A configuration item was rejected; `fallback` says what is used.
    BadConfig {
        /// The item's name.
        key: &'a str,
        /// What is wrong with it.
        problem: &'a str,
        /// What p11ha does instead.
        fallback: &'a str,
    },
}

impl Event<'_> {
    /// The message type, as PTK's HA log gives it.
    pub fn severity(&self) -> Severity {
        match self {
            Event::HsmFailure { .. }
            | Event::HsmDead
            | Event::MemberDropped { .. }
            | Event::MemberInconsistent { .. }
            | Event::RecoveryIncomplete { .. }
            | Event::SessionNotMoved { .. } => Severity::Error,
            Event::NotReplicated { refused: true, .. }
            | Event::NeedsSync { .. }
            | Event::Refused { .. } => Severity::Error,
            Event::BadConfig { .. }
            | Event::NotRecoverable { .. }
            | Event::NotReplicated { refused: false, .. } => Severity::Warning,
            Event::MemberJoined { .. }
            | Event::MemberRecovered { .. }
            | Event::TokenWritten { .. } => Severity::Info,
        }
    }
}

impl Event<'_> {
    /// A stable machine name of the event's kind (the `event` of a JSON
    /// HA log line, a metric's key): snake case, never changed once given.
    pub fn name(&self) -> &'static str {
        match self {
            Event::HsmFailure { .. } => "hsm_failure",
            Event::MemberDropped { .. } => "member_dropped",
            Event::MemberJoined { .. } => "member_joined",
            Event::MemberInconsistent { .. } => "member_inconsistent",
            Event::NotRecoverable { .. } => "not_recoverable",
            Event::HsmDead => "hsm_dead",
            Event::MemberRecovered { .. } => "member_recovered",
            Event::RecoveryIncomplete { .. } => "recovery_incomplete",
            Event::SessionNotMoved { .. } => "session_not_moved",
            Event::NotReplicated { .. } => "not_replicated",
            Event::NeedsSync { .. } => "needs_sync",
            Event::TokenWritten { .. } => "token_written",
            Event::Refused { .. } => "refused",
            Event::BadConfig { .. } => "bad_config",
        }
    }
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::HsmFailure {
                hsm_idx,
                hsm_slot_id,
            } => write!(
                f,
                "HSM Failure detected hsmIdx={hsm_idx}, hsmSlotId={hsm_slot_id}"
            ),
            Event::MemberDropped {
                hsm_idx,
                hsm_slot_id,
                rv,
            } => write!(
                f,
                "HSM dropped hsmIdx={hsm_idx}, hsmSlotId={hsm_slot_id}: it answered {rv}; \
                 no longer used by this application"
            ),
            Event::MemberJoined {
                hsm_idx,
                hsm_slot_id,
                slot,
            } => write!(
                f,
                "HSM joined hsmIdx={hsm_idx}, hsmSlotId={hsm_slot_id}: serves slot {slot}"
            ),
            Event::MemberInconsistent {
                hsm_idx,
                hsm_slot_id,
                function,
                rv,
            } => write!(
                f,
                "HSM inconsistent hsmIdx={hsm_idx}, hsmSlotId={hsm_slot_id}: {function} \
                 answered {rv} where the other HSMs succeeded; dropped"
            ),
            Event::NotRecoverable { lost } => {
                write!(f, "Session potentially not recoverable: {lost}")
            }
            // The seed's text has a non-breaking space and a space between
            // "HSM" and "Failed" (a typesetting artefact); one space is used.
            Event::HsmDead => f.write_str("Found HSM Dead:HSM Failed"),
            Event::MemberRecovered {
                hsm_idx,
                hsm_slot_id,
            } => write!(
                f,
                "HSM recovered hsmIdx={hsm_idx}, hsmSlotId={hsm_slot_id}: takes new sessions again"
            ),
            Event::RecoveryIncomplete { what, rv } => write!(
                f,
                "Session recovery incomplete: {what} could not be rebuilt; the application gets {rv}"
            ),
            Event::SessionNotMoved { hsm_idx, rv } => write!(
                f,
                "Session not moved to hsmIdx={hsm_idx}, which holds the session objects: \
                 its operation or search in progress cannot move exactly; the application gets {rv}"
            ),
            Event::NotReplicated {
                function,
                why,
                hsm_idx: _,
                refused: true,
            } => write!(
                f,
                "Token object not made: {function}: {why}, so it cannot be on every HSM; \
                 the application gets CKR_FUNCTION_FAILED (P11HA_REPLICATION_KEY names the \
                 key that carries such keys to every HSM; P11HA_TOKEN_KEYS=LOCAL keeps them \
                 on one HSM)"
            ),
            Event::NotReplicated {
                function,
                why,
                hsm_idx,
                refused: false,
            } => write!(
                f,
                "Token object on one HSM only: {function}: {why}; it is on hsmIdx={hsm_idx} \
                 alone (P11HA_TOKEN_KEYS=LOCAL)"
            ),
            Event::NeedsSync {
                hsm_idx,
                hsm_slot_id,
            } => write!(
                f,
                "HSM needs sync hsmIdx={hsm_idx}, hsmSlotId={hsm_slot_id}: it missed token \
                 object writes while out of service; it takes no sessions until it holds what \
                 the others hold"
            ),
            Event::Refused { function, why, rv } => {
                write!(f, "{function} refused: {why}; the application gets {rv}")
            }
            Event::TokenWritten { slot, members } => {
                write!(f, "Token object written on slot {slot} by hsmIdx")?;
                let mut sep = "=";
                for i in (0..32).filter(|i| members & (1 << i) != 0) {
                    write!(f, "{sep}{i}")?;
                    sep = ",";
                }
                Ok(())
            }
            Event::BadConfig {
                key,
                problem,
                fallback,
            } => write!(
                f,
                "Configuration {}: {}; {}",
                OneLine(key),
                OneLine(problem),
                OneLine(fallback)
            ),
        }
    }
}

/// Text from outside p11ha (an environment variable's name, a path) written
/// on one line: a control character is written as `\x..` (`\u{..}` beyond
/// ASCII), so that an item named `P11HA_X\nError: HSM Failure detected...`
/// cannot forge a line of the HA log, and every event stays one line.
struct OneLine<'a>(&'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The control characters are C0 and DEL (one byte each) and C1
        // (U+0080-U+009F: 0xC2 then 0x80-0x9F); a byte test finds them
        // without pulling Unicode tables into a firmware.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes = self.0.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let (prefix, suffix, b, len) = match bytes[i] {
                b @ (0..0x20 | 0x7f) => ("\\x", "", b, 1),
                0xc2 if matches!(bytes.get(i + 1), Some(0x80..=0x9f)) => {
                    ("\\u{", "}", bytes[i + 1], 2)
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            // Boundaries of ASCII bytes and of whole 2-byte sequences are
            // char boundaries: `get` never fails here, and has no panic path.
            f.write_str(self.0.get(start..i).ok_or(fmt::Error)?)?;
            let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
            f.write_str(prefix)?;
            f.write_str(core::str::from_utf8(&hex).map_err(|_| fmt::Error)?)?;
            f.write_str(suffix)?;
            i += len;
            start = i;
        }
        f.write_str(self.0.get(start..).ok_or(fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn ptk_texts_are_exact() {
        let e = Event::HsmFailure {
            hsm_idx: 1,
            hsm_slot_id: 1234,
        };
        let mut s = heapless::String::<128>::new();
        write!(s, "{e}").unwrap();
        assert_eq!(s, "HSM Failure detected hsmIdx=1, hsmSlotId=1234");
        assert_eq!(e.severity(), Severity::Error);
        s.clear();
        let e = Event::NotRecoverable {
            lost: Lost::LimitPassed,
        };
        write!(s, "{e}").unwrap();
        assert_eq!(
            s,
            "Session potentially not recoverable: update data past the data length limit"
        );
        assert_eq!(e.severity(), Severity::Warning);
        s.clear();
        write!(s, "{}", Event::HsmDead).unwrap();
        assert_eq!(s, "Found HSM Dead:HSM Failed");
    }

    #[test]
    fn a_configuration_report_is_one_line_whatever_its_key() {
        let mut s = heapless::String::<160>::new();
        let e = Event::BadConfig {
            key: "P11HA_X\nError: HSM Failure detected hsmIdx=0\r\u{85}\t",
            problem: "not an item p11ha knows",
            fallback: "ignored",
        };
        write!(s, "{e}").unwrap();
        assert_eq!(
            s,
            "Configuration P11HA_X\\x0aError: HSM Failure detected hsmIdx=0\\x0d\\u{85}\\x09: \
             not an item p11ha knows; ignored"
        );
        assert!(!s.contains(char::is_control));
    }
}
