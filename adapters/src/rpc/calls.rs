//! The PKCS#11 calls of a remote member, each one request and its reply
//! (PKCS11-RPC.md, section 6): the call's id, its signatures, and its
//! values in the order the server reads them.
//!
//! Beyond its bytes, each call says two things here, because only the call
//! knows them. What the protocol cannot carry is answered as a module
//! would, before anything is sent (a NULL PIN before the label on 0.24.1,
//! nested templates, `C_GetFunctionStatus`). And what the call did to the
//! session's operations is told to the connection's length table
//! (`lengths`): which operation began, which may have ended, which objects
//! changed, so that a length is only ever answered without a round trip
//! while it is sure.

use p11ha_core::ck::Rv;
use p11ha_core::error::TransportError;
use p11ha_core::port::{
    Attr, AttrOut, DualOp, Mechanism, MechanismInfo, Member, Op, RawLock, SessionInfo, SlotInfo,
    TokenInfo,
};
use p11ha_core::{Error, Result};

use super::attributes::{MAX_GET, read_attributes, request_capacity};
use super::client::{RpcMember, TOKEN_INFO, capacity, output, put, token_info, ulong_list};
use super::codec::{AttrClass, attr_class, put_mechanism, put_template};
use super::conn::Connector;
use super::lengths::Phase;

impl<C, L, B> Member for RpcMember<C, L, B>
where
    C: Connector + 'static,
    L: RawLock + 'static,
    B: core::ops::DerefMut<Target = [u8]> + Send + Sync + 'static,
    C::Stream: Send + 'static,
{
    fn slot_id(&self) -> u64 {
        self.slot()
    }

    fn slot_info(&self) -> Result<SlotInfo> {
        let slot = self.slot();
        self.call(
            5,
            "u",
            "ssuvv",
            |w, _| put(w.ulong(slot)),
            |r| {
                Some(SlotInfo {
                    description: r.fixed()?,
                    manufacturer: r.fixed()?,
                    flags: r.ulong()?,
                    hardware_version: r.version()?,
                    firmware_version: r.version()?,
                })
            },
        )
    }

    fn token_info(&self) -> Result<TokenInfo> {
        let slot = self.slot();
        self.call(6, "u", TOKEN_INFO, |w, _| put(w.ulong(slot)), token_info)
    }

    fn mechanism_list(&self, out: Option<&mut [u64]>) -> Result<usize> {
        let slot = self.slot();
        let full = out.as_deref().map_or(0, <[u64]>::len);
        let cap = full.min(1024);
        let out = out.map(|o| &mut o[..cap]);
        let cap = cap as u32;
        self.call(
            7,
            "ufu",
            "au",
            |w, _| {
                put(w.ulong(slot))?;
                put(w.u32(cap))
            },
            |r| ulong_list(r, out, full),
        )?
    }

    fn mechanism_info(&self, mechanism: u64) -> Result<MechanismInfo> {
        let slot = self.slot();
        self.call(
            8,
            "uu",
            "uuu",
            |w, _| {
                put(w.ulong(slot))?;
                put(w.ulong(mechanism))
            },
            |r| {
                Some(MechanismInfo {
                    min_key_size: r.ulong()?,
                    max_key_size: r.ulong()?,
                    flags: r.ulong()?,
                })
            },
        )
    }

    fn init_token(&self, so_pin: Option<&[u8]>, label: &[u8; 32]) -> Result<()> {
        let slot = self.slot();
        // A NULL PIN (protected path) cannot travel before the label on
        // 0.24.1 (PKCS11-RPC.md, section 5).
        let pin = so_pin.ok_or(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED))?;
        self.lengths.lock().clear();
        self.call_secret(9, "uayz", |w, _| {
            put(w.ulong(slot))?;
            put(w.input(pin))?;
            put(w.bytes(label))
        })
    }

    fn open_session(&self, flags: u64) -> Result<u64> {
        let slot = self.slot();
        self.make(10, "uu", |w, _| {
            put(w.ulong(slot))?;
            put(w.ulong(flags))
        })
    }

    fn close_session(&self, session: u64) -> Result<()> {
        let r = self.simple(11, session);
        self.lengths.lock().session_closed(session);
        r
    }

    fn close_all_sessions(&self) -> Result<()> {
        let r = self.simple(12, self.slot());
        self.lengths.lock().clear();
        r
    }

    fn session_info(&self, session: u64) -> Result<SessionInfo> {
        self.call(
            13,
            "u",
            "uuuu",
            |w, _| put(w.ulong(session)),
            |r| {
                Some(SessionInfo {
                    slot: r.ulong()?,
                    state: r.ulong()?,
                    flags: r.ulong()?,
                    device_error: r.ulong()?,
                })
            },
        )
    }

    fn init_pin(&self, session: u64, pin: Option<&[u8]>) -> Result<()> {
        self.call_secret(14, "uay", |w, _| {
            put(w.ulong(session))?;
            // Last value: a NULL PIN may travel as flag 0.
            match pin {
                Some(p) => put(w.input(p)),
                None => put(w.byte(0).and_then(|()| w.u32(0))),
            }
        })
    }

    fn set_pin(&self, session: u64, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()> {
        let (old, new) = match (old, new) {
            (Some(o), Some(n)) => (o, n),
            _ => return Err(Error::Rv(Rv::FUNCTION_NOT_SUPPORTED)),
        };
        self.call_secret(15, "uayay", |w, _| {
            put(w.ulong(session))?;
            put(w.input(old))?;
            put(w.input(new))
        })
    }

    fn operation_state(&self, session: u64, out: Option<&mut [u8]>) -> Result<usize> {
        self.data_out(16, session, None, out)
    }

    fn set_operation_state(
        &self,
        session: u64,
        state: &[u8],
        encryption_key: u64,
        authentication_key: u64,
    ) -> Result<()> {
        // Whatever operations the session had are replaced.
        self.lengths.lock().forget(session);
        self.call(
            17,
            "uayuu",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.input(state))?;
                put(w.ulong(encryption_key))?;
                put(w.ulong(authentication_key))
            },
            |_| Some(()),
        )
    }

    fn login(&self, session: u64, user: u64, pin: Option<&[u8]>) -> Result<()> {
        self.call_secret(18, "uuay", |w, _| {
            put(w.ulong(session))?;
            put(w.ulong(user))?;
            match pin {
                Some(p) => put(w.input(p)),
                None => put(w.byte(0).and_then(|()| w.u32(0))),
            }
        })
    }

    fn logout(&self, session: u64) -> Result<()> {
        let r = self.simple(19, session);
        self.lengths.lock().objects_changed();
        r
    }

    fn create_object(&self, session: u64, template: &[Attr<'_>]) -> Result<u64> {
        self.make(20, "uaA", |w, _| {
            put(w.ulong(session))?;
            put_template(w, template)
        })
    }

    fn copy_object(&self, session: u64, object: u64, template: &[Attr<'_>]) -> Result<u64> {
        self.make(21, "uuaA", |w, _| {
            put(w.ulong(session))?;
            put(w.ulong(object))?;
            put_template(w, template)
        })
    }

    fn destroy_object(&self, session: u64, object: u64) -> Result<()> {
        let r = self.call(
            22,
            "uu",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.ulong(object))
            },
            |_| Some(()),
        );
        self.lengths.lock().objects_changed();
        r
    }

    fn object_size(&self, session: u64, object: u64) -> Result<u64> {
        self.make(23, "uu", |w, _| {
            put(w.ulong(session))?;
            put(w.ulong(object))
        })
    }

    fn get_attributes(&self, session: u64, object: u64, t: &mut [AttrOut<'_>]) -> Result<()> {
        if t.len() > MAX_GET {
            return Err(Error::Rv(Rv::HOST_MEMORY));
        }
        // Nested templates cannot travel: they are answered here, as a
        // token that does not know the type would.
        let mut refused = false;
        for a in t.iter_mut() {
            if attr_class(a.ty) == AttrClass::Template {
                a.len = None;
                refused = true;
            }
        }
        let mut ask = [(0u32, 0u32); MAX_GET];
        let mut sent = 0;
        for a in t.iter().filter(|a| attr_class(a.ty) != AttrClass::Template) {
            let ty = u32::try_from(a.ty).map_err(|_| Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID))?;
            ask[sent] = (ty, request_capacity(a));
            sent += 1;
        }
        let rv = self.call(
            24,
            "uufA",
            "aAu",
            |w, _| {
                put(w.ulong(session))?;
                put(w.ulong(object))?;
                put(w.u32(sent as u32))?;
                for &(ty, capacity) in &ask[..sent] {
                    put(w.u32(ty))?;
                    put(w.u32(capacity))?;
                }
                Ok(())
            },
            |r| read_attributes(r, t),
        )??;
        match rv {
            Rv::OK if refused => Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID)),
            Rv::OK => Ok(()),
            rv => Err(Error::Rv(rv)),
        }
    }

    fn set_attributes(&self, session: u64, object: u64, template: &[Attr<'_>]) -> Result<()> {
        self.call(
            25,
            "uuaA",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.ulong(object))?;
                put_template(w, template)
            },
            |_| Some(()),
        )
    }

    fn find_init(&self, session: u64, template: &[Attr<'_>]) -> Result<()> {
        self.call(
            26,
            "uaA",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put_template(w, template)
            },
            |_| Some(()),
        )
    }

    fn find(&self, session: u64, out: &mut [u64]) -> Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // SoftHSM refuses a NULL array; a capacity of 0 would be one.
        let full = out.len();
        let cap = full.min(1024) as u32;
        let out = &mut out[..cap as usize];
        self.call(
            27,
            "ufu",
            "au",
            |w, _| {
                put(w.ulong(session))?;
                put(w.u32(cap))
            },
            |r| ulong_list(r, Some(out), full),
        )?
    }

    fn find_final(&self, session: u64) -> Result<()> {
        self.simple(28, session)
    }

    fn op_init(&self, session: u64, op: Op, mechanism: &Mechanism<'_>, key: u64) -> Result<()> {
        let (id, key) = match op {
            Op::Encrypt => (29, Some(key)),
            Op::Decrypt => (33, Some(key)),
            Op::Digest => (37, None),
            Op::Sign => (42, Some(key)),
            Op::SignRecover => (46, Some(key)),
            Op::Verify => (48, Some(key)),
            Op::VerifyRecover => (52, Some(key)),
        };
        self.init(id, session, mechanism, key)?;
        self.lengths
            .lock()
            .begin(session, op, mechanism.ty, key.unwrap_or(0));
        Ok(())
    }

    fn op_single(
        &self,
        session: u64,
        op: Op,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let id = match op {
            Op::Encrypt => 30,
            Op::Decrypt => 34,
            Op::Digest => 38,
            Op::Sign => 43,
            Op::SignRecover => 47,
            Op::VerifyRecover => 53,
            Op::Verify => return Err(Error::Rv(Rv::FUNCTION_FAILED)),
        };
        self.ending(id, session, op, Phase::Single, Some(input), out)
    }

    fn op_update(
        &self,
        session: u64,
        op: Op,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        if out.is_none()
            && matches!(op, Op::Encrypt | Op::Decrypt)
            && let Some(n) = self.known_length(session, op, Phase::Update, input.len())
        {
            return Ok(n);
        }
        let r = match op {
            Op::Encrypt => self.data_out(31, session, Some(input), out),
            Op::Decrypt => self.data_out(35, session, Some(input), out),
            Op::Digest => self.data_in(39, session, input).map(|()| 0),
            Op::Sign => self.data_in(44, session, input).map(|()| 0),
            Op::Verify => self.data_in(50, session, input).map(|()| 0),
            Op::SignRecover | Op::VerifyRecover => Err(Error::Rv(Rv::FUNCTION_FAILED)),
        };
        self.unsure(session, op, &r);
        r
    }

    fn op_final(&self, session: u64, op: Op, out: Option<&mut [u8]>) -> Result<usize> {
        let id = match op {
            Op::Encrypt => 32,
            Op::Decrypt => 36,
            Op::Digest => 41,
            Op::Sign => 45,
            _ => return Err(Error::Rv(Rv::FUNCTION_FAILED)),
        };
        self.ending(id, session, op, Phase::Final, None, out)
    }

    fn verify(&self, session: u64, data: &[u8], signature: &[u8]) -> Result<()> {
        self.lengths.lock().end(session, Op::Verify);
        self.call(
            49,
            "uayay",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.input(data))?;
                put(w.input(signature))
            },
            |_| Some(()),
        )
    }

    fn verify_final(&self, session: u64, signature: &[u8]) -> Result<()> {
        self.lengths.lock().end(session, Op::Verify);
        self.data_in(51, session, signature)
    }

    fn digest_key(&self, session: u64, key: u64) -> Result<()> {
        let r = self.call(
            40,
            "uu",
            "",
            |w, _| {
                put(w.ulong(session))?;
                put(w.ulong(key))
            },
            |_| Some(()),
        );
        self.unsure(session, Op::Digest, &r);
        r
    }

    fn dual_update(
        &self,
        session: u64,
        op: DualOp,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let id = match op {
            DualOp::DigestEncrypt => 54,
            DualOp::DecryptDigest => 55,
            DualOp::SignEncrypt => 56,
            DualOp::DecryptVerify => 57,
        };
        let r = self.data_out(id, session, Some(input), out);
        if r.is_err() {
            // Which of the two operations ended is the module's business.
            self.lengths.lock().forget(session);
        }
        r
    }

    fn generate_key(&self, session: u64, m: &Mechanism<'_>, template: &[Attr<'_>]) -> Result<u64> {
        self.make(58, "uMaA", |w, v| {
            put(w.ulong(session))?;
            put_mechanism(w, m, v)?;
            put_template(w, template)
        })
    }

    fn generate_key_pair(
        &self,
        session: u64,
        m: &Mechanism<'_>,
        public_template: &[Attr<'_>],
        private_template: &[Attr<'_>],
    ) -> Result<(u64, u64)> {
        self.call(
            59,
            "uMaAaA",
            "uu",
            |w, v| {
                put(w.ulong(session))?;
                put_mechanism(w, m, v)?;
                put_template(w, public_template)?;
                put_template(w, private_template)
            },
            |r| Some((r.ulong()?, r.ulong()?)),
        )
    }

    fn wrap_key(
        &self,
        session: u64,
        m: &Mechanism<'_>,
        wrapping_key: u64,
        key: u64,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let capacity = capacity(out.as_deref(), self.version(), self.room())?;
        self.call(
            60,
            "uMuufy",
            "ay",
            |w, v| {
                put(w.ulong(session))?;
                put_mechanism(w, m, v)?;
                put(w.ulong(wrapping_key))?;
                put(w.ulong(key))?;
                put(w.u32(capacity))
            },
            |r| output(r, out, capacity),
        )?
    }

    fn unwrap_key(
        &self,
        session: u64,
        m: &Mechanism<'_>,
        unwrapping_key: u64,
        wrapped: &[u8],
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.make(61, "uMuayaA", |w, v| {
            put(w.ulong(session))?;
            put_mechanism(w, m, v)?;
            put(w.ulong(unwrapping_key))?;
            put(w.input(wrapped))?;
            put_template(w, template)
        })
    }

    fn derive_key(
        &self,
        session: u64,
        m: &Mechanism<'_>,
        base_key: u64,
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.make(62, "uMuaA", |w, v| {
            put(w.ulong(session))?;
            put_mechanism(w, m, v)?;
            put(w.ulong(base_key))?;
            put_template(w, template)
        })
    }

    fn seed_random(&self, session: u64, seed: &[u8]) -> Result<()> {
        self.data_in(63, session, seed)
    }

    fn generate_random(&self, session: u64, out: &mut [u8]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        // In pieces that fit the member's buffer; each must come whole.
        let room = self.room().max(1);
        for piece in out.chunks_mut(room) {
            let want = piece.len();
            let n = self.data_out(64, session, None, Some(piece))?;
            if n != want {
                return Err(self.link.broken(TransportError::Protocol));
            }
        }
        Ok(())
    }

    fn function_status(&self, _session: u64) -> Result<()> {
        // Not carried by the protocol; what a v2.20+ module answers.
        Err(Error::Rv(Rv::FUNCTION_NOT_PARALLEL))
    }

    fn cancel_function(&self, _session: u64) -> Result<()> {
        Err(Error::Rv(Rv::FUNCTION_NOT_PARALLEL))
    }

    /// A new connection: version, `C_Initialize`, and the same token found
    /// again (by serial, else by label and position). The old connection's
    /// sessions died with it on the server. Done beside the first connect,
    /// in `client` (`reopen`).
    fn reconnect(&self) -> Result<()> {
        self.reopen()
    }
}
