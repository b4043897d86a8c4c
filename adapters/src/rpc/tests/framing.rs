//! Frames, and the connection's one rule: a timeout, a hang-up or a reply
//! that is not the protocol (mislabelled, truncated, oversized) breaks the
//! connection for good, because a reply read late or misread would be
//! taken for the answer to a later request. Each such case ends with
//! `assert_broken`. What must not break it is tested too: error frames,
//! short reads and writes, options within the limit.

extern crate std;

use std::vec::Vec;

use p11ha_core::Error;
use p11ha_core::ck::{Rv, attr};
use p11ha_core::error::TransportError;
use p11ha_core::port::{Member, Op, SessionInfo};

use crate::rpc::script::{Body, Script, Step};

use super::{
    BUF, Values, alpha, assert_broken, connected, header, last, member, next_code,
    session_info_reply, want,
};

#[test]
fn short_reads_and_writes_are_carried_on() {
    let s = Script::new();
    s.chunk(1).version(2).serve_connect(&[alpha()]);
    let (m, _) = member(&s, BUF, 0).unwrap();
    s.reply(session_info_reply());
    assert_eq!(
        m.session_info(7),
        Ok(SessionInfo {
            slot: 0x11,
            state: 3,
            flags: 6,
            device_error: 0,
        })
    );
    assert_eq!(last(&s).values(), &7u64.to_be_bytes());
}

#[test]
fn an_error_frame_is_its_rv() {
    let (s, m) = connected(2);
    s.error(0xa0);
    assert_eq!(
        m.login(5, 1, Some(b"9999")),
        Err(Error::Rv(Rv::PIN_INCORRECT))
    );
    let expect = Values::new().ulong(5).ulong(1).input(b"9999").0;
    assert_eq!(last(&s).values(), &expect[..]);
    // An error frame answers any call, and does not break the connection.
    s.error(0xb3);
    assert_eq!(
        m.op_single(5, Op::Sign, b"x", None),
        Err(Error::Rv(Rv(0xb3)))
    );
    s.error(0x82);
    let mut t = [want(attr::LABEL, None)];
    assert_eq!(
        m.get_attributes(5, 9, &mut t),
        Err(Error::Rv(Rv::OBJECT_HANDLE_INVALID))
    );
    s.reply(session_info_reply());
    assert!(m.session_info(5).is_ok());
}

#[test]
fn an_error_frame_carrying_rv_0_is_not_the_protocol() {
    let (s, m) = connected(2);
    s.error(0);
    assert_eq!(m.logout(5), Err(Error::Transport(TransportError::Protocol)));
    assert_broken(&s, &m);
}

#[test]
fn a_timeout_breaks_the_connection() {
    let (s, m) = connected(2);
    s.push(Step::TimedOut).reply(session_info_reply());
    assert_eq!(
        m.session_info(5),
        Err(Error::Transport(TransportError::TimedOut))
    );
    // The late reply is never read as the answer to a later request.
    assert_broken(&s, &m);
    assert_eq!(s.remaining(), 1);
}

#[test]
fn replies_that_are_not_the_protocol_break_the_connection() {
    use TransportError::{Disconnected, Protocol};
    type Case = (&'static str, fn(&Script, u32), TransportError);
    // Each case answers `session_info` (call 13, reply "uuuu"); `code` is
    // the code of that request.
    let cases: &[Case] = &[
        (
            "wrong call code (a later one)",
            |s, code| {
                let body = session_info_reply().0;
                let mut f = header(code + 1, 0, body.len() as u32);
                f.extend_from_slice(&body);
                s.raw(f);
            },
            Protocol,
        ),
        (
            "wrong call code (the previous request's, a late reply)",
            |s, code| {
                let body = session_info_reply().0;
                let mut f = header(code - 1, 0, body.len() as u32);
                f.extend_from_slice(&body);
                s.raw(f);
            },
            Protocol,
        ),
        (
            "call code 0",
            |s, _| {
                s.raw(header(0, 0, 8));
            },
            Protocol,
        ),
        (
            "wrong call id",
            |s, _| {
                s.reply(Body::new(12, "uuuu").ulong(1).ulong(2).ulong(3).ulong(4));
            },
            Protocol,
        ),
        (
            "wrong signature",
            |s, _| {
                s.reply(Body::new(13, "uuu").ulong(1).ulong(2).ulong(3));
            },
            Protocol,
        ),
        (
            "a NULL signature",
            |s, _| {
                s.reply(Body(Values::new().u32(13).u32(0xffff_ffff).0));
            },
            Protocol,
        ),
        (
            "a signature longer than the body",
            |s, _| {
                s.reply(Body(Values::new().u32(13).u32(9).raw(b"uuuu").0));
            },
            Protocol,
        ),
        (
            "a body larger than the member's buffer",
            |s, code| {
                let mut f = header(code, 0, BUF as u32 + 1);
                f.extend_from_slice(&session_info_reply().0);
                s.raw(f);
            },
            Protocol,
        ),
        (
            "a body length of 4 GiB - 1",
            |s, code| {
                s.raw(header(code, 0, u32::MAX));
            },
            Protocol,
        ),
        (
            "options longer than 256",
            |s, code| {
                let body = session_info_reply().0;
                let mut f = header(code, 257, body.len() as u32);
                f.extend_from_slice(&[b'x'; 257]);
                f.extend_from_slice(&body);
                s.raw(f);
            },
            Protocol,
        ),
        (
            "a value cut short (3 of 4 ulongs)",
            |s, _| {
                s.reply(Body::new(13, "uuuu").ulong(1).ulong(2).ulong(3));
            },
            Protocol,
        ),
        (
            "an error frame cut short",
            |s, _| {
                s.reply(Body::new(0, "u").u32(0));
            },
            Protocol,
        ),
        (
            "an error frame with the wrong signature",
            |s, _| {
                s.reply(Body::new(0, "y").byte(5));
            },
            Protocol,
        ),
        (
            "an empty body",
            |s, _| {
                s.reply(Vec::new());
            },
            Protocol,
        ),
        (
            "a body cut short by EOF",
            |s, code| {
                let body = session_info_reply().0;
                let mut f = header(code, 0, body.len() as u32);
                f.extend_from_slice(&body[..20]);
                s.raw(f);
            },
            Disconnected,
        ),
        (
            "options cut short by EOF",
            |s, code| {
                let mut f = header(code, 16, 8);
                f.extend_from_slice(b"client");
                s.raw(f);
            },
            Disconnected,
        ),
        (
            "EOF mid-header",
            |s, code| {
                s.raw(header(code, 0, 44)[..6].to_vec());
            },
            Disconnected,
        ),
        ("EOF before the reply", |_, _| {}, Disconnected),
        (
            "a hang-up before the reply",
            |s, _| {
                s.hang_up().reply(session_info_reply());
            },
            Disconnected,
        ),
    ];
    for (what, script, error) in cases {
        let (s, m) = connected(2);
        script(&s, next_code(&s));
        assert_eq!(m.session_info(5), Err(Error::Transport(*error)), "{what}");
        assert_broken(&s, &m);
    }
}

#[test]
fn options_within_the_limit_are_skipped() {
    let (s, m) = connected(2);
    let body = session_info_reply().0;
    let mut f = header(next_code(&s), 256, body.len() as u32);
    f.extend_from_slice(&[b'o'; 256]);
    f.extend_from_slice(&body);
    s.raw(f);
    assert!(m.session_info(5).is_ok());
    // Trailing bytes after the last value are ignored.
    s.reply(session_info_reply().u32(0xdead_beef));
    assert!(m.session_info(5).is_ok());
}
