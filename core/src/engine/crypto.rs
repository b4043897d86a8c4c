//! Cryptographic operations (PKCS#11 v2.40 §5.8-5.13: encryption,
//! decryption, message digesting, signing, verifying, dual-function): each
//! kind through one set of calls, parameterised by [`Op`]. In HA mode the
//! operation in progress is journalled, its Update data up to the data
//! length limit, and it ends in the journal where PKCS#11 ends it.

use crate::ck::Rv;
use crate::error::{Error, Result};
use crate::journal::Lost;
use crate::port::{DualOp, Mechanism, Member, Op, Param, Platform};

use super::objects::At;
use super::sessions::{Session, op_bit};
use super::{Engine, Function, Uses};

impl<P: Platform> Engine<P> {
    /// `mechanism` with a key handle in its parameter made the member's.
    pub(super) fn translate<'a>(
        &self,
        here: At,
        mechanism: &Mechanism<'a>,
    ) -> Result<Mechanism<'a>> {
        let mut out = *mechanism;
        if let Param::Handle(h) = mechanism.param {
            out.param = Param::Handle(self.objects.resolve(
                &self.pool,
                here,
                h,
                Rv::MECHANISM_PARAM_INVALID,
            )?);
        }
        Ok(out)
    }

    pub(super) fn real_mechanism<'a>(
        &self,
        s: &Session<P::Journal>,
        mechanism: &Mechanism<'a>,
    ) -> Result<Mechanism<'a>> {
        self.translate(self.at(s), mechanism)
    }

    /// Ends the operations `ops` (bits of [`op_bit`]) and the journalled
    /// one as PKCS#11 ends operations: on success with output (not a length
    /// query), or on any error but `CKR_BUFFER_TOO_SMALL`.
    fn op_outcome<T>(&self, s: &mut Session<P::Journal>, ops: u8, r: &Result<T>, had_buffer: bool) {
        let ended = match r {
            Ok(_) => had_buffer,
            Err(Error::BufferTooSmall { .. }) => false,
            Err(_) => true,
        };
        if ended {
            s.ops &= !ops;
            if self.ha {
                s.journal.op_end();
            }
        }
    }

    /// `C_EncryptInit`, `C_DecryptInit`, `C_SignInit`, `C_VerifyInit`,
    /// `C_SignRecoverInit`, `C_VerifyRecoverInit` and `C_DigestInit` (whose
    /// `key` is ignored).
    ///
    /// SignRecover and VerifyRecover are answered `CKR_FUNCTION_NOT_SUPPORTED`
    /// first where no member in service has them (see
    /// [`Engine::function_supported`]). A session whose member cannot run
    /// `op` with `mechanism` (it lacks either) moves, with its state, to the
    /// member in service with the fewest sessions that can (WLD and HA
    /// mode), before the member's Init; where none can, or the session
    /// cannot move, its own member answers.
    pub fn op_init(&self, handle: u64, op: Op, mechanism: &Mechanism<'_>, key: u64) -> Result<()> {
        self.call_needing(
            handle,
            Function::of_op(op),
            Uses::Nothing,
            |m, s, _| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let real_key = if op == Op::Digest {
                    0
                } else {
                    self.real_object(s, key, Rv::KEY_HANDLE_INVALID)?
                };
                let pinned = (op != Op::Digest && self.objects.is_session_object(key))
                    || matches!(mechanism.param, Param::Handle(h) if self.objects.is_session_object(h));
                self.route_op(s, op, mechanism.ty, pinned)?;
                m.op_init(s.real, op, &real_mech, real_key)?;
                s.ops |= op_bit(op);
                if self.ha {
                    s.lost_op = false;
                    s.state_restored = false;
                    if op != Op::Digest {
                        self.used(key);
                    }
                    if let Param::Handle(h) = mechanism.param {
                        self.used(h);
                    }
                    let key = if op == Op::Digest { 0 } else { key };
                    self.lose(s.journal.op_begin(op, mechanism, key));
                }
                Ok(())
            },
            |_, _| {},
        )
    }

    /// Where session `s` runs operation `op` with `mechanism`: on its
    /// member if that can run it; else [`Error::Elsewhere`] names the member
    /// in service with the fewest sessions that can, if the session can
    /// move (`pinned`: the operation uses a session object, which lives
    /// where the session is). Where no member can, or the session cannot
    /// move, its own member is asked and answers for itself.
    fn route_op(
        &self,
        s: &Session<P::Journal>,
        op: Op,
        mechanism: u64,
        pinned: bool,
    ) -> Result<()> {
        let can = |m: usize| self.pool.entry(m).support.can_run(op, mechanism);
        if !self.is_virtual() || pinned || can(s.member) || !self.movable(s) {
            return Ok(());
        }
        match self.pool.pick_where(s.slot, can) {
            Ok(member) => Err(Error::Elsewhere { member }),
            Err(_) => Ok(()),
        }
    }

    /// The single-part calls (see [`Member::op_single`]).
    pub fn op_single(
        &self,
        handle: u64,
        op: Op,
        input: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let had_buffer = out.is_some();
        self.call_needing(
            handle,
            Function::of_op(op),
            Uses::Op,
            |m, s, _| m.op_single(s.real, op, input, out.as_deref_mut()),
            |s, r| self.op_outcome(s, op_bit(op), r, had_buffer),
        )
    }

    /// `C_<op>Update`. The data is journalled (HA mode) once the member has
    /// taken it; a length query takes none.
    pub fn op_update(
        &self,
        handle: u64,
        op: Op,
        input: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let length_query = matches!(op, Op::Encrypt | Op::Decrypt) && out.is_none();
        self.call(
            handle,
            Uses::Op,
            |m, s, _| {
                let n = m.op_update(s.real, op, input, out.as_deref_mut())?;
                if self.ha && !length_query {
                    self.lose(s.journal.op_update(input));
                }
                Ok(n)
            },
            |s, r| {
                if r.is_err() {
                    self.op_outcome(s, op_bit(op), r, false);
                }
            },
        )
    }

    /// `C_<op>Final`.
    pub fn op_final(&self, handle: u64, op: Op, mut out: Option<&mut [u8]>) -> Result<usize> {
        let had_buffer = out.is_some();
        self.call(
            handle,
            Uses::Op,
            |m, s, _| m.op_final(s.real, op, out.as_deref_mut()),
            |s, r| self.op_outcome(s, op_bit(op), r, had_buffer),
        )
    }

    /// `C_Verify`.
    pub fn verify(&self, handle: u64, data: &[u8], signature: &[u8]) -> Result<()> {
        self.call(
            handle,
            Uses::Op,
            |m, s, _| m.verify(s.real, data, signature),
            |s, r| self.op_outcome(s, op_bit(Op::Verify), r, true),
        )
    }

    /// `C_VerifyFinal`.
    pub fn verify_final(&self, handle: u64, signature: &[u8]) -> Result<()> {
        self.call(
            handle,
            Uses::Op,
            |m, s, _| m.verify_final(s.real, signature),
            |s, r| self.op_outcome(s, op_bit(Op::Verify), r, true),
        )
    }

    /// Ends the member's `op` operation on a session after p11ha refused a
    /// call's arguments before the member saw them, where PKCS#11 says the
    /// call ends the operation whatever its result (v2.40 5.8-5.12: `C_Encrypt`,
    /// `C_EncryptUpdate`, `C_EncryptFinal` and their kin always terminate
    /// the operation unless they answer `CKR_BUFFER_TOO_SMALL` or a length
    /// query). The member is made to end it by a call of the same kind
    /// (`single`: the single-part function, else the final one) with no
    /// data and a scratch buffer, whose result is thrown away. Nothing
    /// happens where no such operation is active or the handle is invalid.
    pub fn op_abandon(&self, handle: u64, op: Op, single: bool) {
        let mut scratch = [0u8; 4096];
        let _ = self.call(
            handle,
            Uses::Op,
            |m, s, _| match (op, single) {
                (Op::Verify, true) => m.verify(s.real, &[], &[]).map(|_| 0),
                (Op::Verify, false) => m.verify_final(s.real, &[]).map(|_| 0),
                (_, true) | (Op::SignRecover | Op::VerifyRecover, _) => {
                    m.op_single(s.real, op, &[], Some(&mut scratch))
                }
                (_, false) => m.op_final(s.real, op, Some(&mut scratch)),
            },
            |s, r| self.op_outcome(s, op_bit(op), r, true),
        );
    }

    /// `C_DigestKey` (the key's value cannot be journalled: the digest is
    /// lost in a failover).
    pub fn digest_key(&self, handle: u64, key: u64) -> Result<()> {
        self.call(
            handle,
            Uses::Op,
            |m, s, _| {
                let real = self.real_object(s, key, Rv::KEY_HANDLE_INVALID)?;
                m.digest_key(s.real, real)?;
                if self.ha {
                    self.used(key);
                    self.lose(s.journal.op_lose(Lost::DigestKey));
                }
                Ok(())
            },
            |s, r| {
                if r.is_err() {
                    self.op_outcome(s, op_bit(Op::Digest), r, false);
                }
            },
        )
    }

    /// The dual-function updates (two operations at once: not replayable).
    pub fn dual_update(
        &self,
        handle: u64,
        op: DualOp,
        input: &[u8],
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.call_needing(
            handle,
            Some(Function::of_dual(op)),
            Uses::Op,
            |m, s, _| {
                let n = m.dual_update(s.real, op, input, out.as_deref_mut())?;
                if self.ha {
                    self.lose(s.journal.op_lose(Lost::TwoOperations));
                }
                Ok(n)
            },
            |s, r| {
                if r.is_err() {
                    let (a, b) = op.parts();
                    self.op_outcome(s, op_bit(a) | op_bit(b), r, false);
                }
            },
        )
    }
}
