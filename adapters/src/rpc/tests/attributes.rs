//! `C_GetAttributeValue`: each attribute type's value converted to the
//! platform's native layout, the capacity asked for each, and the replies
//! that break the connection. Its reply carries the module's CK_RV inside
//! a success frame, and each value is typed by its attribute, so its edge
//! cases are those of no other call.

extern crate std;

use std::vec::Vec;

use p11ha_core::Error;
use p11ha_core::ck::{Rv, attr};
use p11ha_core::error::TransportError;
use p11ha_core::port::{AttrOut, Member};

use crate::rpc::codec::NATIVE;
use crate::rpc::script::Body;

use super::{Values, assert_broken, connected, last, native, want};

#[test]
fn attributes_are_decoded_by_type() {
    let (s, m) = connected(2);
    let (mut class, mut label, mut sign, mut value, mut mechs, mut date) = (
        [0u8; NATIVE],
        [0u8; 32],
        [0u8; 1],
        [0u8; 32],
        [0u8; 3 * NATIVE],
        [0u8; 8],
    );
    let mut t = [
        want(attr::CLASS, Some(&mut class)),
        want(attr::KEY_TYPE, None),
        want(attr::LABEL, Some(&mut label)),
        want(attr::ID, None),
        want(attr::SIGN, Some(&mut sign)),
        want(attr::DERIVE, None),
        want(attr::VALUE, Some(&mut value)),
        want(0x4000_0600, Some(&mut mechs)),
        want(0x4000_0600, None),
        want(0x110, Some(&mut date)),
    ];
    let mut b = Body::new(24, "aAu");
    b.u32(10);
    b.u32(0x0).byte(1).u32(8).ulong(3); // CLASS = 3
    b.u32(0x100).byte(1).u32(8).ulong(0); // KEY_TYPE: size query, placeholder 0
    b.u32(0x3).byte(1).u32(5).bytes(b"eckey"); // LABEL
    b.u32(0x102).byte(1).u32(1).u32(0xffff_ffff); // ID: size query, NULL placeholder
    b.u32(0x108).byte(1).u32(1).byte(1); // SIGN = TRUE
    b.u32(0x10c).byte(1).u32(1).byte(0); // DERIVE: size query, placeholder byte
    b.u32(0x11).byte(0); // VALUE: sensitive
    b.u32(0x4000_0600)
        .byte(1)
        .u32(16)
        .u32(2)
        .ulong(0x1041)
        .ulong(0x1044);
    b.u32(0x4000_0600).byte(1).u32(8).u32(1).ulong(0x250);
    b.u32(0x110).byte(1).u32(8).bytes(b"20240131"); // START_DATE
    b.ulong(0x11); // CKR_ATTRIBUTE_SENSITIVE, inside the success frame
    s.reply(b);
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::ATTRIBUTE_SENSITIVE))
    );
    let lens: Vec<_> = t.iter().map(|a| a.len).collect();
    assert_eq!(
        lens,
        [
            Some(NATIVE),
            Some(NATIVE),
            Some(5),
            Some(1),
            Some(1),
            Some(1),
            None,
            Some(2 * NATIVE),
            Some(NATIVE),
            Some(8),
        ]
    );
    assert_eq!(class[..], native(&[3])[..]);
    assert_eq!(&label[..5], b"eckey");
    assert_eq!(sign, [1]);
    assert_eq!(mechs[..2 * NATIVE], native(&[0x1041, 0x1044])[..]);
    assert_eq!(&date, b"20240131");

    // The request: (type, capacity) pairs; a size query sends 0, but for
    // ALLOWED_MECHANISMS, which 0.24.1 answers wrongly and gets a probe.
    let f = last(&s);
    assert_eq!((f.call_id(), f.signature()), (Some(24), Some(&b"uufA"[..])));
    let mut expect = Values::new().ulong(5).ulong(4).u32(10);
    for (ty, cap) in [
        (0x0, 8),
        (0x100, 0),
        (0x3, 32),
        (0x102, 0),
        (0x108, 1),
        (0x10c, 0),
        (0x11, 32),
        (0x4000_0600, 24),
        (0x4000_0600, 512),
        (0x110, 8),
    ] {
        expect = expect.u32(ty).u32(cap);
    }
    assert_eq!(f.values(), &expect.0[..]);
}

#[test]
fn nested_templates_are_answered_here() {
    let (s, m) = connected(2);
    let mut label = [0u8; 8];
    let mut t = [
        AttrOut {
            ty: attr::WRAP_TEMPLATE,
            buf: None,
            len: Some(3),
        },
        want(attr::LABEL, Some(&mut label)),
    ];
    s.reply(
        Body::new(24, "aAu")
            .u32(1)
            .u32(3)
            .byte(1)
            .u32(2)
            .bytes(b"ab")
            .ulong(0),
    );
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID))
    );
    assert_eq!((t[0].len, t[1].len), (None, Some(2)));
    assert_eq!(
        last(&s).values(),
        &Values::new().ulong(5).ulong(4).u32(1).u32(3).u32(8).0[..]
    );
    // All is well otherwise.
    let mut t = [want(attr::LABEL, Some(&mut label))];
    s.reply(
        Body::new(24, "aAu")
            .u32(1)
            .u32(3)
            .byte(1)
            .u32(2)
            .bytes(b"ab")
            .ulong(0),
    );
    assert_eq!(m.get_attributes(5, 4, &mut t), Ok(()));
}

#[test]
fn attribute_buffers_too_small_give_buffer_too_small() {
    let (s, m) = connected(2);
    let (mut label, mut class, mut mechs) = ([0u8; 2], [0u8; NATIVE - 1], [0u8; NATIVE]);
    let mut t = [
        want(attr::LABEL, Some(&mut label)),
        want(attr::CLASS, Some(&mut class)),
        want(0x4000_0600, Some(&mut mechs)),
    ];
    let mut b = Body::new(24, "aAu");
    b.u32(3);
    b.u32(0x3).byte(1).u32(5).bytes(b"eckey");
    b.u32(0x0).byte(1).u32(8).ulong(3);
    b.u32(0x4000_0600).byte(1).u32(16).u32(2).ulong(1).ulong(2);
    b.ulong(0);
    s.reply(b);
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::BUFFER_TOO_SMALL))
    );
    assert!(t.iter().all(|a| a.len.is_none()));
    // The module's own answer passes through, and the member is intact.
    let mut t = [want(attr::LABEL, None)];
    s.reply(Body::new(24, "aAu").u32(1).u32(3).byte(0).ulong(0x12));
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::ATTRIBUTE_TYPE_INVALID))
    );
    assert_eq!(t[0].len, None);
}

#[test]
fn attribute_replies_that_are_not_the_protocol_break_the_connection() {
    let cases: &[(&str, Vec<u8>)] = &[
        (
            "another type",
            Body::new(24, "aAu").u32(1).u32(4).byte(0).ulong(0).into(),
        ),
        ("more attributes than asked", {
            Body::new(24, "aAu")
                .u32(2)
                .u32(3)
                .byte(0)
                .u32(3)
                .byte(0)
                .ulong(0)
                .into()
        }),
        (
            "fewer attributes than asked",
            Body::new(24, "aAu").u32(0).ulong(0).into(),
        ),
        ("no rv", Body::new(24, "aAu").u32(1).u32(3).byte(0).into()),
        ("rv CK_UNAVAILABLE_INFORMATION", {
            Body::new(24, "aAu")
                .u32(1)
                .u32(3)
                .byte(0)
                .ulong(u64::MAX)
                .into()
        }),
        (
            "a value cut short",
            Body::new(24, "aAu")
                .u32(1)
                .u32(3)
                .byte(1)
                .u32(5)
                .u32(5)
                .raw(b"eck")
                .into(),
        ),
        ("no value for a buffer", {
            Body::new(24, "aAu")
                .u32(1)
                .u32(3)
                .byte(1)
                .u32(5)
                .u32(0xffff_ffff)
                .ulong(0)
                .into()
        }),
    ];
    for (what, reply) in cases {
        let (s, m) = connected(2);
        let mut label = [0u8; 8];
        let mut t = [want(attr::LABEL, Some(&mut label))];
        s.reply(reply.clone());
        assert_eq!(
            m.get_attributes(5, 4, &mut t),
            Err(Error::Transport(TransportError::Protocol)),
            "{what}"
        );
        assert_broken(&s, &m);
    }
    // A ulong cut short, and a count of mechanisms past the body.
    for (ty, reply) in [
        (
            attr::CLASS,
            Body::new(24, "aAu")
                .u32(1)
                .u32(0)
                .byte(1)
                .u32(8)
                .u32(3)
                .clone(),
        ),
        (
            0x4000_0600,
            Body::new(24, "aAu")
                .u32(1)
                .u32(0x4000_0600)
                .byte(1)
                .u32(8)
                .u32(0x1000_0000)
                .ulong(1)
                .clone(),
        ),
    ] {
        let (s, m) = connected(2);
        let mut v = [0u8; 64];
        let mut t = [AttrOut {
            ty,
            buf: Some(&mut v),
            len: None,
        }];
        s.reply(reply);
        assert_eq!(
            m.get_attributes(5, 4, &mut t),
            Err(Error::Transport(TransportError::Protocol))
        );
        assert_broken(&s, &m);
    }
}

#[test]
fn an_empty_buffer_for_a_bool_attribute_is_too_small() {
    let (s, m) = connected(2);
    let mut t = [want(attr::SIGN, Some(&mut []))];
    // The client announces 1; the server has room and sends the value.
    s.reply(
        Body::new(24, "aAu")
            .u32(1)
            .u32(0x108)
            .byte(1)
            .u32(1)
            .byte(1)
            .ulong(0),
    );
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::BUFFER_TOO_SMALL))
    );
    assert_eq!(t[0].len, None);
}

#[test]
fn an_empty_buffer_for_a_byte_array_attribute_is_too_small() {
    let (s, m) = connected(2);
    let mut t = [want(attr::LABEL, Some(&mut []))];
    // Capacity 0 went out, which is a size query to the server: it answers
    // with the length and a NULL placeholder, as p11-kit does.
    s.reply(
        Body::new(24, "aAu")
            .u32(1)
            .u32(0x3)
            .byte(1)
            .u32(5)
            .u32(0xffff_ffff)
            .ulong(0),
    );
    assert_eq!(
        m.get_attributes(5, 4, &mut t),
        Err(Error::Rv(Rv::BUFFER_TOO_SMALL))
    );
    assert_eq!(t[0].len, None);
}
