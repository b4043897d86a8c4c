//! Length queries answered without a round trip.
//!
//! An application that calls `C_Sign`, `C_Digest`, `C_EncryptUpdate`... with
//! a NULL output buffer asks only how long the output will be, and PKCS#11
//! (v2.40, section 5.2) lets the library answer "a number of bytes which
//! would suffice to hold the output", which "may somewhat exceed the
//! precise number". Over the network each such query is a round trip; the
//! `cryptoki` crate and most applications make one before every call with
//! output. Where the answer is certain, p11ha gives it without asking:
//!
//! - digests: the length of the mechanism's hash;
//! - AES ECB, CBC, CBC-PAD and CTR encryption and decryption: a bound from
//!   the input length (at most one block more than the output);
//! - signatures: the length of the last signature the same key handle made
//!   with the same mechanism on this connection (exact for RSA, ECDSA, EdDSA
//!   and HMAC, whose signatures have the key's size), learned from the
//!   server's own answers.
//!
//! Only while the operation is known to be active on the session: from a
//! successful Init until a call ends it (a result with output, any error
//! but `CKR_BUFFER_TOO_SMALL`, the session closed). Whatever p11ha is not
//! sure of is forgotten, and a forgotten entry only means that the query
//! goes to the server, as it would without this table. What is remembered
//! of signatures is forgotten when an object is destroyed, a session
//! closes, the user logs out or the connection is renewed, so that a handle
//! the module hands out again cannot carry a stale length.

use p11ha_core::port::Op;

/// Operations in progress remembered per connection.
const ACTIVE: usize = 64;
/// Signature lengths remembered per connection.
const SIGNATURES: usize = 16;

/// Which call of an operation is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `C_Encrypt`, `C_Sign`...: the whole input is given.
    Single,
    /// `C_EncryptUpdate`, `C_DecryptUpdate`.
    Update,
    /// `C_EncryptFinal`, `C_SignFinal`...
    Final,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Active {
    session: u64,
    op: Op,
    mechanism: u64,
    key: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Signature {
    key: u64,
    mechanism: u64,
    len: usize,
}

/// The operations in progress on one connection and the signature lengths
/// seen on it.
#[derive(Debug)]
pub struct Lengths {
    active: [Option<Active>; ACTIVE],
    signatures: [Option<Signature>; SIGNATURES],
    next: usize,
}

impl Default for Lengths {
    fn default() -> Self {
        Lengths {
            active: [None; ACTIVE],
            signatures: [None; SIGNATURES],
            next: 0,
        }
    }
}

/// The length of the hash of a digest mechanism.
fn digest_len(mechanism: u64) -> Option<usize> {
    Some(match mechanism {
        0x210 => 16, // CKM_MD5
        0x220 => 20, // CKM_SHA_1
        0x255 => 28, // CKM_SHA224
        0x250 => 32, // CKM_SHA256
        0x260 => 48, // CKM_SHA384
        0x270 => 64, // CKM_SHA512
        _ => return None,
    })
}

/// A sufficient output length for the AES block and stream modes.
fn aes_len(mechanism: u64, op: Op, phase: Phase, input: usize) -> Option<usize> {
    const ECB: u64 = 0x1081;
    const CBC: u64 = 0x1082;
    const CBC_PAD: u64 = 0x1085;
    const CTR: u64 = 0x1086;
    if !matches!(mechanism, ECB | CBC | CBC_PAD | CTR) {
        return None;
    }
    let blocks = |n: usize| n.checked_add(15).map(|n| n / 16 * 16);
    match (op, phase) {
        // Padding adds one block at most.
        (Op::Encrypt, Phase::Single) if mechanism == CBC_PAD => input.checked_add(16),
        // Output is no longer than the input, rounded up to a block.
        (Op::Encrypt | Op::Decrypt, Phase::Single) => blocks(input),
        // An update may also release up to a block held back before (two
        // for a CBC-PAD decryption, which keeps the last block back).
        (Op::Encrypt | Op::Decrypt, Phase::Update) => input.checked_add(16).and_then(blocks),
        (Op::Encrypt | Op::Decrypt, Phase::Final) => Some(16),
        _ => None,
    }
}

impl Lengths {
    /// Forgets everything (a new connection).
    pub fn clear(&mut self) {
        *self = Lengths::default();
    }

    /// `op` began on `session` with `mechanism` and `key` (0 for a digest).
    pub fn begin(&mut self, session: u64, op: Op, mechanism: u64, key: u64) {
        self.end(session, op);
        if let Some(free) = self.active.iter_mut().find(|a| a.is_none()) {
            *free = Some(Active {
                session,
                op,
                mechanism,
                key,
            });
        }
    }

    /// `op` on `session` ended, or p11ha is not sure it is still active.
    pub fn end(&mut self, session: u64, op: Op) {
        for a in self.active.iter_mut() {
            if a.is_some_and(|a| a.session == session && a.op == op) {
                *a = None;
            }
        }
    }

    /// Forgets every operation of `session`.
    pub fn forget(&mut self, session: u64) {
        for a in self.active.iter_mut() {
            if a.is_some_and(|a| a.session == session) {
                *a = None;
            }
        }
    }

    /// `session` closed: its operations end, and signature lengths are
    /// forgotten (its session objects are gone; the module may reuse their
    /// handles).
    pub fn session_closed(&mut self, session: u64) {
        self.forget(session);
        self.signatures = [None; SIGNATURES];
    }

    /// An object was destroyed, or objects may have gone (logout, a token
    /// initialised): signature lengths are forgotten.
    pub fn objects_changed(&mut self) {
        self.signatures = [None; SIGNATURES];
    }

    fn active(&self, session: u64, op: Op) -> Option<Active> {
        self.active
            .iter()
            .flatten()
            .find(|a| a.session == session && a.op == op)
            .copied()
    }

    /// The answer to a length query, if p11ha is sure of one.
    pub fn answer(&self, session: u64, op: Op, phase: Phase, input: usize) -> Option<usize> {
        let a = self.active(session, op)?;
        match op {
            Op::Digest if phase != Phase::Update => digest_len(a.mechanism),
            Op::Sign if phase != Phase::Update => self
                .signatures
                .iter()
                .flatten()
                .find(|s| s.key == a.key && s.mechanism == a.mechanism)
                .map(|s| s.len),
            Op::Encrypt | Op::Decrypt => aes_len(a.mechanism, op, phase, input),
            _ => None,
        }
    }

    /// The server said a signature of `op` on `session` is `len` bytes long
    /// (the output of a Sign, or its answer to a length query).
    pub fn learned(&mut self, session: u64, op: Op, len: usize) {
        if op != Op::Sign || len == 0 {
            return;
        }
        let Some(a) = self.active(session, op) else {
            return;
        };
        let slot = match self
            .signatures
            .iter()
            .position(|s| s.is_some_and(|s| s.key == a.key && s.mechanism == a.mechanism))
        {
            Some(i) => i,
            None => {
                self.next = (self.next + 1) % SIGNATURES;
                self.next
            }
        };
        self.signatures[slot] = Some(Signature {
            key: a.key,
            mechanism: a.mechanism,
            len,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256: u64 = 0x250;
    const ECDSA: u64 = 0x1041;
    const CBC_PAD: u64 = 0x1085;

    #[test]
    fn only_while_the_operation_is_active() {
        let mut l = Lengths::default();
        assert_eq!(l.answer(5, Op::Digest, Phase::Single, 100), None);
        l.begin(5, Op::Digest, SHA256, 0);
        assert_eq!(l.answer(5, Op::Digest, Phase::Single, 100), Some(32));
        assert_eq!(l.answer(5, Op::Digest, Phase::Final, 0), Some(32));
        assert_eq!(
            l.answer(6, Op::Digest, Phase::Single, 100),
            None,
            "another session"
        );
        assert_eq!(
            l.answer(5, Op::Sign, Phase::Single, 100),
            None,
            "another operation"
        );
        l.end(5, Op::Digest);
        assert_eq!(l.answer(5, Op::Digest, Phase::Single, 100), None);
        l.begin(5, Op::Digest, SHA256, 0);
        l.session_closed(5);
        assert_eq!(l.answer(5, Op::Digest, Phase::Single, 100), None);
        l.begin(5, Op::Digest, 0x8000_0000, 0);
        assert_eq!(
            l.answer(5, Op::Digest, Phase::Single, 1),
            None,
            "unknown hash"
        );
    }

    #[test]
    fn signature_lengths_are_learned_per_key_and_forgotten() {
        let mut l = Lengths::default();
        l.begin(1, Op::Sign, ECDSA, 7);
        assert_eq!(
            l.answer(1, Op::Sign, Phase::Single, 32),
            None,
            "not known yet"
        );
        l.learned(1, Op::Sign, 64);
        assert_eq!(l.answer(1, Op::Sign, Phase::Single, 32), Some(64));
        // Another session, same key and mechanism.
        l.begin(2, Op::Sign, ECDSA, 7);
        assert_eq!(l.answer(2, Op::Sign, Phase::Final, 0), Some(64));
        // Another key.
        l.begin(3, Op::Sign, ECDSA, 8);
        assert_eq!(l.answer(3, Op::Sign, Phase::Single, 32), None);
        l.objects_changed();
        assert_eq!(l.answer(2, Op::Sign, Phase::Single, 32), None);
        l.learned(2, Op::Sign, 64);
        l.session_closed(9);
        assert_eq!(l.answer(2, Op::Sign, Phase::Single, 32), None);
    }

    #[test]
    fn aes_bounds_suffice() {
        let mut l = Lengths::default();
        l.begin(1, Op::Encrypt, CBC_PAD, 3);
        assert_eq!(l.answer(1, Op::Encrypt, Phase::Single, 64), Some(80));
        assert_eq!(l.answer(1, Op::Encrypt, Phase::Single, 65), Some(81));
        assert_eq!(l.answer(1, Op::Encrypt, Phase::Update, 16384), Some(16400));
        assert_eq!(l.answer(1, Op::Encrypt, Phase::Final, 0), Some(16));
        l.begin(1, Op::Decrypt, 0x1082, 3);
        assert_eq!(l.answer(1, Op::Decrypt, Phase::Single, 33), Some(48));
        assert_eq!(l.answer(1, Op::Decrypt, Phase::Update, usize::MAX), None);
        l.begin(1, Op::Decrypt, 0x1087, 3);
        assert_eq!(
            l.answer(1, Op::Decrypt, Phase::Single, 16),
            None,
            "GCM: not here"
        );
    }

    #[test]
    fn a_full_table_forgets_rather_than_guesses() {
        let mut l = Lengths::default();
        for s in 0..ACTIVE as u64 + 10 {
            l.begin(s + 1, Op::Digest, SHA256, 0);
        }
        assert_eq!(l.answer(1, Op::Digest, Phase::Single, 1), Some(32));
        assert_eq!(
            l.answer(ACTIVE as u64 + 5, Op::Digest, Phase::Single, 1),
            None
        );
    }
}
