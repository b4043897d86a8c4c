//! What each member supports, learnt once when it joins: the optional
//! functions it implements and the mechanisms it lists.
//!
//! Why: a module that lacks a function answers `CKR_FUNCTION_NOT_SUPPORTED`
//! for it, and an application (or a test suite) that probes for support
//! decides from that answer. p11ha must give the same answer, before it
//! resolves the call's object handles (a key handle p11ha calls invalid
//! would tell the application the function exists). And members of one
//! slot may differ: an operation must go to a member that has its
//! mechanism.
//!
//! How a function is probed, without side effects: in a short-lived
//! read-only session (a module may check the session handle before it
//! says a function is missing: SoftHSM 2.6.1 answers
//! `CKR_SESSION_HANDLE_INVALID` for session 0 and only in a real session
//! `CKR_FUNCTION_NOT_SUPPORTED`), the function is called with arguments
//! that cannot start anything: an Init with key handle 0, an Update or a
//! single-part call with no operation active, a state of no bytes.
//! `CKR_FUNCTION_NOT_SUPPORTED` means missing (a NULL entry in a module's
//! function list is answered so by its adapter); any other answer means
//! present. What cannot be learnt (no session, a member failure, a
//! mechanism list longer than [`MAX_MEMBER_MECHANISMS`]) counts as supported:
//! p11ha never refuses what a member might do.

use crate::ck::{Rv, flags, mech};
use crate::error::{Error, Result};
use crate::port::{DualOp, Mechanism, Member, Op, Param};

/// The most mechanisms kept per member; a member that lists more is taken
/// to have every mechanism (SoftHSM 2.6.1 lists 70).
pub const MAX_MEMBER_MECHANISMS: usize = 128;

/// The optional functions p11ha forwards and a module may leave out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Function {
    /// `C_SignRecoverInit`, `C_SignRecover`.
    SignRecover,
    /// `C_VerifyRecoverInit`, `C_VerifyRecover`.
    VerifyRecover,
    /// `C_DigestEncryptUpdate`.
    DigestEncryptUpdate,
    /// `C_DecryptDigestUpdate`.
    DecryptDigestUpdate,
    /// `C_SignEncryptUpdate`.
    SignEncryptUpdate,
    /// `C_DecryptVerifyUpdate`.
    DecryptVerifyUpdate,
    /// `C_GetOperationState`.
    GetOperationState,
    /// `C_SetOperationState`.
    SetOperationState,
}

impl Function {
    /// Every one, in a fixed order (the bit of each in [`Support`]).
    pub const ALL: [Function; 8] = [
        Function::SignRecover,
        Function::VerifyRecover,
        Function::DigestEncryptUpdate,
        Function::DecryptDigestUpdate,
        Function::SignEncryptUpdate,
        Function::DecryptVerifyUpdate,
        Function::GetOperationState,
        Function::SetOperationState,
    ];

    /// The optional function behind operation `op`'s calls, if it is one.
    pub fn of_op(op: Op) -> Option<Function> {
        match op {
            Op::SignRecover => Some(Function::SignRecover),
            Op::VerifyRecover => Some(Function::VerifyRecover),
            _ => None,
        }
    }

    /// The function of a dual-function update.
    pub fn of_dual(op: DualOp) -> Function {
        match op {
            DualOp::DigestEncrypt => Function::DigestEncryptUpdate,
            DualOp::DecryptDigest => Function::DecryptDigestUpdate,
            DualOp::SignEncrypt => Function::SignEncryptUpdate,
            DualOp::DecryptVerify => Function::DecryptVerifyUpdate,
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }

    /// Calls the function harmlessly in `session` (see the module docs).
    fn probe<M: Member>(self, member: &M, session: u64) -> Result<()> {
        // Any mechanism will do: key handle 0 is never a key.
        let mechanism = Mechanism {
            ty: mech::RSA_PKCS,
            param: Param::None,
        };
        let dual = |op| member.dual_update(session, op, &[], None).map(|_| ());
        match self {
            Function::SignRecover => member.op_init(session, Op::SignRecover, &mechanism, 0),
            Function::VerifyRecover => member.op_init(session, Op::VerifyRecover, &mechanism, 0),
            Function::DigestEncryptUpdate => dual(DualOp::DigestEncrypt),
            Function::DecryptDigestUpdate => dual(DualOp::DecryptDigest),
            Function::SignEncryptUpdate => dual(DualOp::SignEncrypt),
            Function::DecryptVerifyUpdate => dual(DualOp::DecryptVerify),
            Function::GetOperationState => member.operation_state(session, None).map(|_| ()),
            Function::SetOperationState => member.set_operation_state(session, &[], 0, 0),
        }
    }
}

/// What one member supports (fixed size: no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Support {
    /// Bit of [`Function::bit`] set: the member lacks that function.
    lacks: u16,
    /// Its mechanisms, in the member's order (searched in turn: a sort
    /// costs a firmware kilobytes of flash, a search of 128 words nothing
    /// next to a member call); meaningful only when `listed`.
    mechanisms: [u32; MAX_MEMBER_MECHANISMS],
    count: u16,
    /// The list is the member's whole list; else every mechanism counts as
    /// present.
    listed: bool,
}

impl Support {
    /// Everything supported: what a member whose support is not known gets.
    pub const ALL: Support = Support {
        lacks: 0,
        mechanisms: [0; MAX_MEMBER_MECHANISMS],
        count: 0,
        listed: false,
    };

    /// Learns what `member` supports (see the module docs).
    pub fn probe<M: Member>(member: &M) -> Support {
        let mut support = Support::ALL;
        if let Ok(session) = member.open_session(flags::SERIAL_SESSION) {
            for f in Function::ALL {
                if f.probe(member, session) == Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED)) {
                    support.lacks |= f.bit();
                }
            }
            let _ = member.close_session(session);
        }
        support.learn_mechanisms(member);
        support
    }

    fn learn_mechanisms<M: Member>(&mut self, member: &M) {
        let mut all = [0u64; MAX_MEMBER_MECHANISMS];
        let n = match member.mechanism_list(None) {
            Ok(n) if n <= MAX_MEMBER_MECHANISMS => n,
            _ => return,
        };
        let n = match member.mechanism_list(Some(&mut all[..n])) {
            Ok(n) => n,
            // It grew meanwhile, or the member failed: not known.
            Err(_) => return,
        };
        for (kept, &m) in self.mechanisms.iter_mut().zip(&all[..n]) {
            match u32::try_from(m) {
                Ok(m) => *kept = m,
                // Not kept in 32 bits: count every one as present.
                Err(_) => return,
            }
        }
        // n <= MAX_MEMBER_MECHANISMS, which fits.
        self.count = n as u16;
        self.listed = true;
    }

    /// Whether the member implements `function`.
    pub fn has_function(&self, function: Function) -> bool {
        self.lacks & function.bit() == 0
    }

    /// Whether the member has mechanism `mechanism`.
    pub fn has_mechanism(&self, mechanism: u64) -> bool {
        if !self.listed {
            return true;
        }
        u32::try_from(mechanism)
            .is_ok_and(|m| self.mechanisms[..usize::from(self.count)].contains(&m))
    }

    /// Whether the member can run operation `op` with `mechanism`.
    pub fn can_run(&self, op: Op, mechanism: u64) -> bool {
        Function::of_op(op).is_none_or(|f| self.has_function(f)) && self.has_mechanism(mechanism)
    }
}
