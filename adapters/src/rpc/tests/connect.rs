//! Connecting and connecting again: the version offered and fallen back
//! from, `C_Initialize`'s bytes, the token taken by its position, and the
//! `C_Finalize` of a member dropped. A reconnect is a failed member's way
//! back, so it must find the same token, not merely a token: these tests
//! renumber the server's slots, add tokens and re-initialise them.

extern crate std;

use std::vec::Vec;

use p11ha_core::Error;
use p11ha_core::ck::Rv;
use p11ha_core::error::TransportError;
use p11ha_core::port::Member;

use crate::rpc::codec::{HANDSHAKE, Version};
use crate::rpc::script::{Body, Script, Step};

use super::{BUF, Values, alpha, assert_broken, connected, header, last, member, token};

#[test]
fn connect_sends_the_handshake_and_finds_the_tokens() {
    let s = Script::new();
    let beta = token(0x12, "beta", "0002");
    s.version(2).serve_connect(&[alpha(), beta]);
    let (m, n) = member(&s, BUF, 1).unwrap();
    assert_eq!(n, 2);
    assert_eq!(m.slot_id(), 0x12);
    assert_eq!(m.version(), Version::V2);
    assert_eq!(s.offers(), [2], "version 2 offered first");
    assert_eq!(s.connections(), 1);

    let f = s.frames();
    assert_eq!(f.len(), 4, "Initialize, GetSlotList, two GetTokenInfo");
    // C_Initialize: code 0x11, no options, the handshake string, no
    // pReserved, the reserved string's NUL.
    let init = &f[0];
    assert_eq!(init.code, 0x11);
    assert!(init.options.is_empty());
    assert_eq!(init.call_id(), Some(1));
    assert_eq!(init.signature(), Some(&b"ayyay"[..]));
    let expect = Values::new().input(HANDSHAKE).byte(0).input(&[0]).0;
    assert_eq!(init.values(), &expect[..]);
    let mut bytes = header(0x11, 0, init.body.len() as u32);
    bytes.extend_from_slice(&init.body);
    assert_eq!(
        &bytes[..16],
        &[0, 0, 0, 0x11, 0, 0, 0, 0, 0, 0, 0, 66, 0, 0, 0, 1]
    );
    assert_eq!(&bytes[16..29], b"\0\0\0\x05ayyay\x01\0\0\0");
    // C_GetSlotList(tokenPresent, capacity 8).
    assert_eq!((f[1].code, f[1].call_id()), (0x12, Some(4)));
    assert_eq!(f[1].signature(), Some(&b"yfu"[..]));
    assert_eq!(f[1].values(), &Values::new().byte(1).u32(8).0[..]);
    // C_GetTokenInfo per slot.
    for (frame, slot) in f[2..].iter().zip([0x11u64, 0x12]) {
        assert_eq!(frame.call_id(), Some(6));
        assert_eq!(frame.signature(), Some(&b"u"[..]));
        assert_eq!(frame.values(), &slot.to_be_bytes());
    }
    assert_eq!(
        f.iter().map(|f| f.code).collect::<Vec<_>>(),
        [0x11, 0x12, 0x13, 0x14]
    );
}

#[test]
fn an_index_past_the_tokens_is_an_invalid_slot() {
    let s = Script::new();
    s.version(2).serve_connect(&[alpha()]);
    assert_eq!(
        member(&s, BUF, 1).err(),
        Some(Error::Rv(Rv::SLOT_ID_INVALID))
    );
}

#[test]
fn a_server_that_hangs_up_on_version_2_gets_a_connection_offering_0() {
    let s = Script::new();
    s.hang_up().version(0).serve_connect(&[alpha()]);
    let (m, _) = member(&s, BUF, 0).unwrap();
    assert_eq!(s.offers(), [2, 0]);
    assert_eq!(s.connections(), 2);
    assert_eq!(m.version(), Version::V0);
    assert!(
        s.frames().iter().all(|f| f.connection == 1),
        "nothing framed on the first"
    );
}

#[test]
fn versions_are_taken_as_answered() {
    for (answer, version) in [(0, Version::V0), (1, Version::V1), (2, Version::V2)] {
        let (_, m) = connected(answer);
        assert_eq!(m.version(), version);
    }
}

#[test]
fn a_bad_handshake_fails_the_connect() {
    // An unknown version.
    let s = Script::new();
    s.version(3).serve_connect(&[alpha()]);
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::Protocol))
    );
    assert!(s.frames().is_empty());
    // Both connections hang up.
    let s = Script::new();
    s.hang_up();
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::Disconnected))
    );
    assert_eq!(s.offers(), [2, 0]);
    // Nobody listening.
    let s = Script::new();
    s.push(Step::Refuse);
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::Disconnected))
    );
    assert_eq!(s.written(), 0);
    // A deadline passed on the version byte: not a reason to offer 0.
    let s = Script::new();
    s.push(Step::TimedOut);
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::TimedOut))
    );
    assert_eq!(s.offers(), [2]);
    // C_Initialize refused.
    let s = Script::new();
    s.version(2).error(0x5);
    assert_eq!(member(&s, BUF, 0).err(), Some(Error::Rv(Rv::GENERAL_ERROR)));
}

#[test]
fn a_version_above_the_offer_is_not_the_protocol() {
    // The fallback connection offers 0; a server answers min(offer, its
    // own), so 2 cannot be an answer to it.
    let s = Script::new();
    s.hang_up().version(2).serve_connect(&[alpha()]);
    assert_eq!(
        member(&s, BUF, 0).err(),
        Some(Error::Transport(TransportError::Protocol))
    );
}

#[test]
fn a_slot_id_past_32_bits_is_kept_or_refused() {
    // Slot ids are `u` (u64) on the wire; p11-kit numbers from 0x11, but a
    // server is free to send any.
    let s = Script::new();
    s.version(2)
        .serve_connect(&[token(0x1_0000_0011, "alpha", "0001")]);
    if let Ok((m, _)) = member(&s, BUF, 0) {
        assert_eq!(m.slot_id(), 0x1_0000_0011);
    }
}

#[test]
fn dropping_a_member_finalizes_and_dropping_a_broken_one_writes_nothing() {
    let (s, m) = connected(2);
    drop(m);
    let f = last(&s);
    assert_eq!(
        (f.code, f.call_id(), f.signature()),
        (0x7f, Some(2), Some(&b""[..]))
    );

    let (s, m) = connected(2);
    assert!(m.slot_info().is_err(), "EOF");
    let before = s.written();
    drop(m);
    assert_eq!(s.written(), before);
}

#[test]
fn reconnect_opens_a_new_connection_and_finds_the_token_again() {
    let s = Script::new();
    let beta = token(0x12, "beta", "0002");
    s.version(2).serve_connect(&[alpha(), beta]);
    let (m, _) = member(&s, BUF, 1).unwrap();
    // The connection breaks.
    assert!(m.session_info(5).is_err());
    assert_broken(&s, &m);
    // The server comes back with its slots renumbered and another token.
    let before = s.frames().len();
    let gamma = token(0x11, "gamma", "0003");
    s.version(2).serve_connect(&[
        gamma,
        token(0x12, "alpha", "0001"),
        token(0x13, "beta", "0002"),
    ]);
    m.reconnect().unwrap();
    assert_eq!(m.slot_id(), 0x13);
    assert_eq!(s.connections(), 2);
    assert_eq!(s.offers(), [2, 2]);
    let f = s.frames();
    assert!(f[before..].iter().all(|f| f.connection == 1));
    assert_eq!(f[before].call_id(), Some(1), "C_Initialize first");
    // Calls go to the new connection and the new slot id.
    s.reply(Body::new(10, "u").ulong(0x21));
    assert_eq!(m.open_session(6), Ok(0x21));
    let f = last(&s);
    assert_eq!(
        (f.connection, f.values()),
        (1, &Values::new().ulong(0x13).ulong(6).0[..])
    );
}

#[test]
fn reconnect_of_a_live_member_drops_its_connection() {
    let (s, m) = connected(2);
    s.version(0).serve_connect(&[token(0x11, "alpha", "0001")]);
    m.reconnect().unwrap();
    assert_eq!(m.version(), Version::V0);
    assert_eq!(s.connections(), 2);
}

#[test]
fn reconnect_without_the_token_or_the_server_fails() {
    let (s, m) = connected(2);
    s.version(2).serve_connect(&[token(0x11, "other", "0009")]);
    assert_eq!(m.reconnect(), Err(Error::Rv(Rv::TOKEN_NOT_PRESENT)));
    s.push(Step::Refuse);
    assert_eq!(
        m.reconnect(),
        Err(Error::Transport(TransportError::Disconnected))
    );
    assert_broken(&s, &m);
    // And then it is back.
    s.version(2).serve_connect(&[alpha()]);
    assert_eq!(m.reconnect(), Ok(()));
    assert_eq!(m.slot_id(), 0x11);
}

#[test]
fn reconnect_finds_a_token_with_a_new_serial_by_its_label() {
    // Index 0 among tokens that all have the label (the usual HA layout).
    let s = Script::new();
    s.version(2)
        .serve_connect(&[alpha(), token(0x12, "alpha", "0002")]);
    let (m, _) = member(&s, BUF, 0).unwrap();
    s.version(2)
        .serve_connect(&[token(0x11, "alpha", "0007"), token(0x12, "alpha", "0002")]);
    m.reconnect().unwrap();
    assert_eq!(m.slot_id(), 0x11);
}

#[test]
fn reconnect_finds_a_reinitialised_token_among_other_labels() {
    // The member is the second token (index 1); its token was
    // re-initialised (SoftHSM gives it a new serial), its label kept.
    let s = Script::new();
    s.version(2)
        .serve_connect(&[alpha(), token(0x12, "beta", "0002")]);
    let (m, _) = member(&s, BUF, 1).unwrap();
    s.version(2)
        .serve_connect(&[alpha(), token(0x12, "beta", "0099")]);
    assert_eq!(m.reconnect(), Ok(()));
    assert_eq!(m.slot_id(), 0x12);
}

#[test]
fn a_setting_up_that_fails_midway_uses_no_call_code_twice() {
    let (s, m) = connected(2);
    // C_Initialize answered, then the server hangs up at C_GetSlotList.
    s.version(2).reply(Body::new(1, "")).hang_up();
    assert_eq!(
        m.reconnect(),
        Err(Error::Transport(TransportError::Disconnected))
    );
    assert_broken(&s, &m);
    s.version(2).serve_connect(&[alpha()]);
    assert_eq!(m.reconnect(), Ok(()));
    let codes: Vec<u32> = s.frames().iter().map(|f| f.code).collect();
    assert!(codes.len() >= 8, "{codes:x?}");
    assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:x?}");
}
