//! Each call's request as the server reads it. The protocol versions
//! encode mechanisms differently (0.24.1 reads a parameter as the bytes it
//! is given), so requests are checked byte for byte on each; what cannot
//! travel is refused before anything is sent, leaving the connection as it
//! was; and a PIN does not outlive its request in the member's buffer.

extern crate std;

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use p11ha_core::Error;
use p11ha_core::ck::{Rv, mech};
use p11ha_core::port::{Mechanism, Member, Op, Param};
use p11ha_core::sync::SpinLock;

use crate::rpc::RpcMember;
use crate::rpc::script::{Body, Script, ScriptConnector};

use super::{BUF, Values, alpha, connected, last, padded, session_info_reply};

#[test]
fn a_sign_with_a_reply() {
    let (s, m) = connected(2);
    s.reply(Body::new(42, ""));
    let ecdsa = Mechanism {
        ty: mech::ECDSA,
        param: Param::None,
    };
    m.op_init(5, Op::Sign, &ecdsa, 4).unwrap();
    let f = last(&s);
    assert_eq!((f.call_id(), f.signature()), (Some(42), Some(&b"uMu"[..])));
    // Version 2: a parameterless mechanism is its type alone.
    let expect = Values::new().ulong(5).u32(0x1041).ulong(4).0;
    assert_eq!(f.values(), &expect[..]);

    let signature = [0x5a; 64];
    s.reply(Body::new(43, "ay").data(&signature));
    let mut out = [0u8; 72];
    assert_eq!(
        m.op_single(5, Op::Sign, &[0x11; 32], Some(&mut out)),
        Ok(64)
    );
    assert_eq!(out[..64], signature);
    let f = last(&s);
    assert_eq!(
        (f.call_id(), f.signature()),
        (Some(43), Some(&b"uayfy"[..]))
    );
    let expect = Values::new().ulong(5).input(&[0x11; 32]).u32(72).0;
    assert_eq!(f.values(), &expect[..]);
}

#[test]
fn a_digest_in_parts() {
    let (s, m) = connected(0);
    s.reply(Body::new(37, ""));
    let sha = Mechanism {
        ty: mech::SHA256,
        param: Param::None,
    };
    m.op_init(5, Op::Digest, &sha, 0).unwrap();
    let f = last(&s);
    assert_eq!(f.signature(), Some(&b"uM"[..]));
    // Version 0: NULL parameter as a NULL byte array.
    let expect = Values::new().ulong(5).u32(0x250).u32(0xffff_ffff).0;
    assert_eq!(f.values(), &expect[..]);

    s.reply(Body::new(39, ""));
    assert_eq!(m.op_update(5, Op::Digest, b"abc", None), Ok(0));
    assert_eq!(
        last(&s).values(),
        &Values::new().ulong(5).input(b"abc").0[..]
    );

    s.reply(Body::new(41, "ay").data(&[7; 32]));
    let mut out = [0u8; 32];
    assert_eq!(m.op_final(5, Op::Digest, Some(&mut out)), Ok(32));
    assert_eq!(out, [7; 32]);
    let f = last(&s);
    assert_eq!((f.call_id(), f.signature()), (Some(41), Some(&b"ufy"[..])));
    assert_eq!(f.values(), &Values::new().ulong(5).u32(32).0[..]);
}

#[test]
fn infos_are_decoded() {
    let (s, m) = connected(2);
    let mut b = Body::new(5, "ssuvv");
    b.bytes(&padded::<64>("slot"))
        .bytes(&padded::<32>("maker"))
        .ulong(7)
        .raw(&[1, 2, 3, 4]);
    s.reply(b);
    let info = m.slot_info().unwrap();
    assert_eq!(
        (
            info.flags,
            info.hardware_version.minor,
            info.firmware_version.major
        ),
        (7, 2, 3)
    );
    assert_eq!(&info.description[..4], b"slot");
    assert_eq!(last(&s).values(), &0x11u64.to_be_bytes());

    s.reply(Body::token_info(&padded("alpha"), &padded("0001")));
    let t = m.token_info().unwrap();
    assert_eq!(t.label, padded::<32>("alpha"));
    assert_eq!(t.max_pin_len, u64::MAX);

    s.reply(Body::new(8, "uuu").ulong(256).ulong(4096).ulong(0x2800));
    let i = m.mechanism_info(mech::RSA_PKCS).unwrap();
    assert_eq!(
        (i.min_key_size, i.max_key_size, i.flags),
        (256, 4096, 0x2800)
    );

    s.reply(Body::new(10, "u").ulong(0x33));
    assert_eq!(m.open_session(6), Ok(0x33));

    s.reply(Body::new(27, "au").byte(1).u32(2).ulong(4).ulong(5));
    let mut found = [0u64; 10];
    assert_eq!(m.find(0x33, &mut found), Ok(2));
    assert_eq!(found[..2], [4, 5]);
    assert_eq!(last(&s).values(), &Values::new().ulong(0x33).u32(10).0[..]);
    assert_eq!(m.find(0x33, &mut []), Ok(0), "nothing asked, nothing sent");
    assert_eq!(s.remaining(), 0);
}

#[test]
fn a_mechanism_that_cannot_be_carried_is_refused_before_anything_is_sent() {
    let gcm = Mechanism {
        ty: mech::AES_GCM,
        param: Param::Gcm {
            iv: &[1; 12],
            iv_bits: 96,
            aad: &[],
            tag_bits: 128,
        },
    };
    let ecdh = Mechanism {
        ty: mech::ECDH1_DERIVE,
        param: Param::Ecdh1 {
            kdf: 1,
            shared_data: &[],
            public_data: &[4; 65],
        },
    };
    let (s, m) = connected(0);
    let before = s.written();
    let invalid = Err(Error::Rv(Rv::MECHANISM_INVALID));
    assert_eq!(m.op_init(5, Op::Encrypt, &gcm, 7), invalid);
    assert_eq!(m.generate_key(5, &gcm, &[]), invalid.map(|()| 0));
    assert_eq!(m.derive_key(5, &ecdh, 7, &[]), invalid.map(|()| 0));
    assert_eq!(m.wrap_key(5, &gcm, 7, 8, None), invalid.map(|()| 0));
    assert_eq!(s.written(), before, "nothing sent");
    // Unknown layouts never travel, whatever the version.
    let (s, m) = connected(2);
    let before = s.written();
    let opaque = Mechanism {
        ty: 0x8000_0001,
        param: Param::Opaque(&[1, 2, 3]),
    };
    assert_eq!(m.op_init(5, Op::Sign, &opaque, 7), invalid);
    assert_eq!(s.written(), before, "nothing sent");
    // The connection is intact.
    s.reply(session_info_reply());
    assert!(m.session_info(5).is_ok());
}

#[test]
fn parameters_travel_in_the_form_of_the_version() {
    let iv = [7u8; 16];
    let cbc = Mechanism {
        ty: mech::AES_CBC,
        param: Param::Flat(&iv),
    };
    let (s, m) = connected(0);
    s.reply(Body::new(29, ""));
    m.op_init(5, Op::Encrypt, &cbc, 9).unwrap();
    let expect = Values::new()
        .ulong(5)
        .u32(0x1082)
        .u32(16)
        .raw(&iv)
        .ulong(9)
        .0;
    assert_eq!(last(&s).values(), &expect[..]);
    let (s, m) = connected(2);
    s.reply(Body::new(29, ""));
    m.op_init(5, Op::Encrypt, &cbc, 9).unwrap();
    let expect = Values::new()
        .ulong(5)
        .u32(0x1082)
        .byte(1)
        .u32(16)
        .raw(&iv)
        .ulong(9)
        .0;
    assert_eq!(last(&s).values(), &expect[..]);
}

/// A member buffer that hands its last contents to the test when the
/// member drops it.
struct Spy(Box<[u8]>, std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl core::ops::Deref for Spy {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl core::ops::DerefMut for Spy {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for Spy {
    fn drop(&mut self) {
        *self.1.lock().unwrap() = self.0.to_vec();
    }
}

#[test]
fn a_pin_does_not_stay_in_the_member_buffer() {
    const PIN: &[u8] = b"p11ha-secret-PIN-7f3a";
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    type Call = fn(&RpcMember<ScriptConnector, SpinLock, Spy>) -> p11ha_core::Result<()>;
    let calls: [(&str, u32, Call); 4] = [
        ("C_Login", 18, |m| m.login(5, 1, Some(PIN))),
        ("C_InitPIN", 14, |m| m.init_pin(5, Some(PIN))),
        ("C_SetPIN", 15, |m| m.set_pin(5, Some(PIN), Some(PIN))),
        ("C_InitToken", 9, |m| m.init_token(Some(PIN), &[b' '; 32])),
    ];
    for (name, id, call) in calls {
        for answer in [true, false] {
            let s = Script::new();
            s.version(2).serve_connect(&[alpha()]);
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let buf = Spy(vec![0u8; BUF].into_boxed_slice(), seen.clone());
            let (m, _) = RpcMember::connect(s.connector(), || Some(SpinLock::new()), [buf], 0)
                .expect("connect");
            if answer {
                s.reply(Body::new(id, ""));
            } else {
                s.error(0xa0);
            }
            assert_eq!(call(&m).is_ok(), answer, "{name}");
            assert!(contains(last(&s).values(), PIN), "{name} sent it");
            drop(m);
            assert!(
                !contains(&seen.lock().unwrap(), PIN),
                "{name} left the PIN in the buffer"
            );
        }
    }
}
