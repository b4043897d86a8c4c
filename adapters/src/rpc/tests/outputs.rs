//! Output buffers (PKCS11-RPC.md, section 8): the capacity announced, a
//! length query, "too small". The member's buffer may be smaller than the
//! application's, so an output that does not fit it must read neither as
//! `CKR_BUFFER_TOO_SMALL` (retrying with more could never succeed) nor as a
//! failed member (another member has no larger buffer); and a "too small"
//! for a buffer that was large enough is not the protocol.

extern crate std;

use std::vec;
use std::vec::Vec;

use p11ha_core::Error;
use p11ha_core::ck::mech;
use p11ha_core::error::TransportError;
use p11ha_core::port::{Mechanism, Member, Op, Param};

use crate::rpc::script::Body;

use super::{M, RESERVED, Values, assert_broken, connected, connected_with, last};

#[test]
fn a_length_query_is_answered_with_the_length() {
    let (s, m) = connected(2);
    s.reply(Body::new(43, "ay").length(256));
    assert_eq!(m.op_single(5, Op::Sign, b"data", None), Ok(256));
    let expect = Values::new().ulong(5).input(b"data").u32(0).0;
    assert_eq!(last(&s).values(), &expect[..], "capacity 0: NULL");

    s.reply(Body::new(45, "ay").length(64));
    assert_eq!(m.op_final(5, Op::Sign, None), Ok(64));
    assert_eq!(last(&s).values(), &Values::new().ulong(5).u32(0).0[..]);

    s.reply(Body::new(60, "ay").length(40));
    let wrap = Mechanism {
        ty: mech::AES_KEY_WRAP,
        param: Param::None,
    };
    assert_eq!(m.wrap_key(5, &wrap, 1, 2, None), Ok(40));

    // A list's length.
    s.reply(Body::new(7, "au").byte(0).u32(70));
    assert_eq!(m.mechanism_list(None), Ok(70));
    assert_eq!(last(&s).values(), &Values::new().ulong(0x11).u32(0).0[..]);
}

#[test]
fn too_small_for_a_buffer_that_was_sent_is_buffer_too_small() {
    let (s, m) = connected(2);
    s.reply(Body::new(43, "ay").length(64));
    let mut out = [0u8; 10];
    assert_eq!(
        m.op_single(5, Op::Sign, b"data", Some(&mut out)),
        Err(Error::BufferTooSmall { needed: 64 })
    );
    assert_eq!(
        last(&s).values(),
        &Values::new().ulong(5).input(b"data").u32(10).0[..]
    );
    // Not a failure of the member: the next call goes out.
    s.reply(Body::new(43, "ay").data(&[1; 10]));
    assert_eq!(m.op_single(5, Op::Sign, b"data", Some(&mut out)), Ok(10));

    // A list too small.
    s.reply(Body::new(7, "au").byte(0).u32(70));
    let mut list = [0u64; 4];
    assert_eq!(
        m.mechanism_list(Some(&mut list)),
        Err(Error::BufferTooSmall { needed: 70 })
    );
    s.reply(Body::new(7, "au").byte(1).u32(2).ulong(0x1041).ulong(0x250));
    assert_eq!(m.mechanism_list(Some(&mut list)), Ok(2));
    assert_eq!(list[..2], [0x1041, 0x250]);
}

#[test]
fn an_empty_buffer_is_not_a_length_query() {
    // Version 0 cannot say "non-NULL, length 0": it is announced as 1, and
    // any data is then too much.
    let (s, m) = connected(0);
    s.reply(Body::new(32, "ay").data(&[9]));
    assert_eq!(
        m.op_final(5, Op::Encrypt, Some(&mut [])),
        Err(Error::BufferTooSmall { needed: 1 })
    );
    assert_eq!(last(&s).values(), &Values::new().ulong(5).u32(1).0[..]);
    s.reply(Body::new(32, "ay").data(&[]));
    assert_eq!(m.op_final(5, Op::Encrypt, Some(&mut [])), Ok(0));
    // Version 2 has 0xffffffff for it.
    let (s, m) = connected(2);
    s.reply(Body::new(32, "ay").length(16));
    assert_eq!(
        m.op_final(5, Op::Encrypt, Some(&mut [])),
        Err(Error::BufferTooSmall { needed: 16 })
    );
    assert_eq!(
        last(&s).values(),
        &Values::new().ulong(5).u32(0xffff_ffff).0[..]
    );
}

#[test]
fn outputs_that_are_not_the_protocol_break_the_connection() {
    type Case = (&'static str, fn(&M) -> Result<usize, Error>, Body);
    let cases: Vec<Case> = vec![
        (
            "too small for a buffer that was large enough",
            |m| m.op_single(5, Op::Sign, b"x", Some(&mut [0; 64])),
            Body::new(43, "ay").length(16).clone(),
        ),
        (
            "data in answer to a length query",
            |m| m.op_single(5, Op::Sign, b"x", None),
            Body::new(43, "ay").data(&[1; 8]).clone(),
        ),
        (
            "an array flag other than 0 and 1",
            |m| m.op_single(5, Op::Sign, b"x", Some(&mut [0; 64])),
            Body::new(43, "ay").byte(2).u32(8).clone(),
        ),
        (
            "data longer than the body",
            |m| m.op_single(5, Op::Sign, b"x", Some(&mut [0; 64])),
            Body::new(43, "ay").byte(1).u32(64).raw(&[1; 8]).clone(),
        ),
        (
            "NULL data",
            |m| m.op_single(5, Op::Sign, b"x", Some(&mut [0; 64])),
            Body::new(43, "ay").byte(1).u32(0xffff_ffff).clone(),
        ),
        (
            "more handles than asked for",
            |m| m.find(5, &mut [0; 2]),
            Body::new(27, "au")
                .byte(1)
                .u32(3)
                .ulong(1)
                .ulong(2)
                .ulong(3)
                .clone(),
        ),
        (
            "a list of handles cut short",
            |m| m.find(5, &mut [0; 4]),
            Body::new(27, "au").byte(1).u32(3).ulong(1).clone(),
        ),
        (
            "a list in answer to a length query",
            |m| m.mechanism_list(None),
            Body::new(7, "au").byte(1).u32(1).ulong(1).clone(),
        ),
        (
            "a handle cut short",
            |m| m.open_session(6).map(|h| h as usize),
            Body::new(10, "u").u32(1).clone(),
        ),
        (
            "a key pair with one handle",
            |m| {
                let ec = Mechanism {
                    ty: mech::EC_KEY_PAIR_GEN,
                    param: Param::None,
                };
                m.generate_key_pair(5, &ec, &[], &[]).map(|_| 0)
            },
            Body::new(59, "uu").ulong(1).clone(),
        ),
        (
            "a slot description of the wrong size",
            |m| m.slot_info().map(|_| 0),
            Body::new(5, "ssuvv").bytes(&[b' '; 63]).clone(),
        ),
        (
            "token info cut short",
            |m| m.token_info().map(|_| 0),
            Body::new(6, "ssssuuuuuuuuuuuvvs")
                .bytes(&[b' '; 32])
                .clone(),
        ),
    ];
    for (what, call, reply) in cases {
        let (s, m) = connected(2);
        s.reply(reply);
        assert_eq!(
            call(&m),
            Err(Error::Transport(TransportError::Protocol)),
            "{what}"
        );
        assert_broken(&s, &m);
    }
}

#[test]
fn generate_random_asks_for_its_length() {
    let (s, m) = connected(2);
    s.reply(Body::new(64, "ay").data(&[3; 20]));
    let mut out = [0u8; 20];
    m.generate_random(5, &mut out).unwrap();
    assert_eq!(out, [3; 20]);
    assert_eq!(last(&s).values(), &Values::new().ulong(5).u32(20).0[..]);
    let before = s.written();
    assert_eq!(m.generate_random(5, &mut []), Ok(()));
    assert_eq!(s.written(), before);
}

#[test]
fn a_short_random_reply_breaks_the_connection() {
    let (s, m) = connected(2);
    s.reply(Body::new(64, "ay").data(&[3; 8]));
    assert_eq!(
        m.generate_random(5, &mut [0; 20]),
        Err(Error::Transport(TransportError::Protocol))
    );
    assert_broken(&s, &m);
}

#[test]
fn random_larger_than_the_buffer_is_not_a_member_failure() {
    // A server does as asked: it returns as many bytes as the capacity.
    let buf = 512;
    let (s, m) = connected_with(2, buf);
    let room = buf - RESERVED;
    s.reply(Body::new(64, "ay").data(&vec![3; room]));
    s.reply(Body::new(64, "ay").data(&[3; 1]));
    let mut out = vec![0u8; room + 1];
    let r = m.generate_random(5, &mut out);
    assert!(
        !matches!(r, Err(Error::Transport(_))),
        "a healthy member reported as failed: {r:?}"
    );
}

#[test]
fn an_output_larger_than_the_member_buffer_is_not_buffer_too_small() {
    // An RSA-4096 signature (512 bytes) through a member whose buffer
    // announces at most 436: the caller's 512-byte buffer was enough, and
    // retrying with `needed` bytes can never succeed.
    let buf = 512;
    let (s, m) = connected_with(2, buf);
    s.reply(Body::new(43, "ay").length(512));
    let mut out = [0u8; 512];
    let r = m.op_single(5, Op::Sign, b"x", Some(&mut out));
    assert_eq!(
        last(&s).values()[..],
        Values::new()
            .ulong(5)
            .input(b"x")
            .u32((buf - RESERVED) as u32)
            .0[..]
    );
    if let Err(Error::BufferTooSmall { needed }) = r {
        assert!(
            needed > out.len(),
            "BufferTooSmall {{ needed: {needed} }} for a {}-byte buffer",
            out.len()
        );
    }
}

#[test]
fn a_list_that_fits_is_not_too_small() {
    // An empty list into an empty buffer (sent as capacity 0, a length
    // query, which a real server answers `00 00000000`).
    let (s, m) = connected(2);
    s.reply(Body::new(7, "au").byte(0).u32(0));
    assert_eq!(m.mechanism_list(Some(&mut [])), Ok(0));
    // "Too small" for a buffer that was not: not the protocol, as for
    // byte arrays (`output`).
    s.reply(Body::new(7, "au").byte(0).u32(2));
    assert_eq!(
        m.mechanism_list(Some(&mut [0; 4])),
        Err(Error::Transport(TransportError::Protocol))
    );
}
