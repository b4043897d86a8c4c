//! Failover and replay: what a session was doing goes on, on another
//! member, with the result it would have had; what cannot be rebuilt is an
//! error and a log line, never a different result.

extern crate std;

use std::vec::Vec;

use crate::ck::{Rv, attr, mech};
use crate::config::Mode;
use crate::error::Error;
use crate::port::{Attr, Op};
use crate::testing::fnv;

use super::{E, RW, digest, engine, find, logged_in, mechanism, member_of};

/// Kills the member under session `s`; the index it had.
fn kill_under(e: &E, s: u64, tokens: &[std::sync::Arc<crate::testing::Token>]) -> usize {
    let m = member_of(e, s);
    tokens[m].kill();
    m
}

#[test]
fn a_digest_goes_on_from_its_update_data() {
    let data: Vec<u8> = (0..200u8).collect();
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    e.op_init(s, Op::Digest, &mechanism(mech::SHA256), 0)
        .unwrap();
    e.op_update(s, Op::Digest, &data[..120], None).unwrap();
    let dead = kill_under(&e, s, &tokens);
    e.op_update(s, Op::Digest, &data[120..], None).unwrap();
    let mut out = [0u8; 8];
    let n = e.op_final(s, Op::Digest, Some(&mut out)).unwrap();
    assert_eq!(&out[..n], &fnv(&[&data]), "the result it would have had");
    assert_ne!(member_of(&e, s), dead);
    assert_eq!(e.events().count("HSM Failure detected"), 1);
    // And the session goes on.
    assert_eq!(digest(&e, s, b"abc", 2), fnv(&[b"abc"]));
}

#[test]
fn an_encryption_streams_on_without_repeating_output() {
    let data = [0x11u8; 48];
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    let key = find(&e, s, "aes-key");
    let mut whole = Vec::new();
    let mut out = [0u8; 16];
    e.op_init(s, Op::Encrypt, &mechanism(mech::AES_ECB), key)
        .unwrap();
    for (i, part) in data.chunks(16).enumerate() {
        if i == 2 {
            kill_under(&e, s, &tokens);
        }
        let n = e.op_update(s, Op::Encrypt, part, Some(&mut out)).unwrap();
        whole.extend_from_slice(&out[..n]);
    }
    assert_eq!(e.op_final(s, Op::Encrypt, Some(&mut out)).unwrap(), 0);
    // The key's value is 16 bytes of 0x5a: the stream is data ^ 0x5a.
    assert_eq!(whole, [0x11 ^ 0x5a; 48]);
}

#[test]
fn a_search_resumes_without_a_handle_twice_or_one_skipped() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    e.find_init(s, &[]).unwrap();
    let mut first = [0u64; 1];
    assert_eq!(e.find(s, &mut first).unwrap(), 1);
    kill_under(&e, s, &tokens);
    let mut rest = [0u64; 8];
    let n = e.find(s, &mut rest).unwrap();
    e.find_final(s).unwrap();
    let mut all: Vec<u64> = first.iter().chain(&rest[..n]).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 2, "the token's two objects, each once: {all:?}");
}

#[test]
fn an_unused_generated_key_is_made_again_and_a_used_one_is_not() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    let template = [Attr {
        ty: attr::LABEL,
        value: b"session-key",
    }];
    let unused = e
        .generate_key(s, &mechanism(mech::AES_KEY_GEN), &template)
        .unwrap();
    let used = e
        .generate_key(s, &mechanism(mech::AES_KEY_GEN), &template)
        .unwrap();
    let mut sig = [0u8; 8];
    e.op_init(s, Op::Sign, &mechanism(mech::AES_MAC), used)
        .unwrap();
    e.op_single(s, Op::Sign, b"x", Some(&mut sig)).unwrap();
    assert_eq!(
        e.events()
            .count("Session potentially not recoverable: a randomly generated key"),
        1
    );
    kill_under(&e, s, &tokens);
    // The unused key was re-generated on the new member: it works.
    e.op_init(s, Op::Sign, &mechanism(mech::AES_MAC), unused)
        .unwrap();
    e.op_single(s, Op::Sign, b"x", Some(&mut sig)).unwrap();
    // The used one would differ: its handle is gone, with a log line.
    assert_eq!(
        e.op_init(s, Op::Sign, &mechanism(mech::AES_MAC), used),
        Err(Error::Rv(Rv::KEY_HANDLE_INVALID))
    );
    assert_eq!(
        e.events()
            .count("Session recovery incomplete: a session object"),
        1
    );
}

#[test]
fn update_data_past_the_limit_ends_in_an_error_not_a_different_digest() {
    let data = [7u8; 1500];
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    e.op_init(s, Op::Digest, &mechanism(mech::SHA256), 0)
        .unwrap();
    // The journals of these tests keep 1024 bytes.
    e.op_update(s, Op::Digest, &data, None).unwrap();
    assert_eq!(
        e.events()
            .count("Session potentially not recoverable: update data past"),
        1
    );
    kill_under(&e, s, &tokens);
    let mut out = [0u8; 8];
    assert_eq!(
        e.op_final(s, Op::Digest, Some(&mut out)),
        Err(Error::Rv(Rv::DEVICE_ERROR))
    );
    assert_eq!(
        e.events()
            .count("Session recovery incomplete: the operation in progress"),
        1
    );
    // The operation is over; the session is not.
    assert_eq!(digest(&e, s, b"abc", 1), fnv(&[b"abc"]));
}

#[test]
fn with_every_member_down_a_session_answers_at_once_and_comes_back() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    for t in &tokens {
        t.kill();
    }
    let mut r = [0u8; 4];
    assert_eq!(
        e.generate_random(s, &mut r),
        Err(Error::Rv(Rv::DEVICE_ERROR))
    );
    assert_eq!(e.open_session(0, RW), Err(Error::Rv(Rv::TOKEN_NOT_PRESENT)));
    tokens[1].restart();
    assert_eq!(e.recover(1_000), 1);
    e.generate_random(s, &mut r).unwrap();
    assert_eq!(member_of(&e, s), 1);
    assert_eq!(e.session_info(s).unwrap().state, 3, "logged in again");
}

/// Every handle a search in `s` returns in calls of `batch`, until it
/// returns none, and `C_FindObjectsFinal`.
fn find_all(e: &E, s: u64, batch: usize) -> Vec<u64> {
    let mut all = Vec::new();
    let mut out = std::vec![0u64; batch];
    loop {
        let n = e.find(s, &mut out).unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&out[..n]);
    }
    e.find_final(s).unwrap();
    all
}

/// The handles a search with an empty template finds in `s`, with no
/// failure, sorted.
fn every_object(e: &E, s: u64) -> Vec<u64> {
    e.find_init(s, &[]).unwrap();
    let mut all = find_all(e, s, 8);
    all.sort_unstable();
    all
}

/// `handles`, sorted, after checking that none is there twice.
fn once_each(mut handles: Vec<u64>) -> Vec<u64> {
    let n = handles.len();
    handles.sort_unstable();
    handles.dedup();
    assert_eq!(handles.len(), n, "a handle returned twice: {handles:?}");
    handles
}

#[test]
fn a_search_whose_member_fails_while_its_results_are_adopted_returns_them_all() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    e.find_init(s, &[]).unwrap();
    // The member answers C_FindObjects with both objects, then fails while
    // p11ha reads the second one's identity (the aes key takes one
    // C_GetAttributeValue; the data object, with no key type and no id, a
    // second): the first was adopted before the failure, but the
    // application never received it.
    let dead = member_of(&e, s);
    tokens[dead].kill_at("get_attributes", 2);
    let found = once_each(find_all(&e, s, 8));
    assert_ne!(member_of(&e, s), dead, "the session moved");
    assert_eq!(e.events().count("HSM Failure detected"), 1);
    assert_eq!(found, every_object(&e, s), "each object once, none skipped");
    assert_eq!(found.len(), 2);
}

#[test]
fn a_resumed_search_whose_new_member_fails_too_loses_nothing() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    e.find_init(s, &[]).unwrap();
    let mut first = [0u64; 1];
    assert_eq!(e.find(s, &mut first).unwrap(), 1);
    let a = member_of(&e, s);
    let b = 1 - a;
    tokens[a].kill();
    // The search restarts on b, which returns both objects in one batch
    // (the one already returned is left out, the other kept for the
    // application), then fails when asked for more: no member is left, and
    // the call returns nothing.
    tokens[b].kill_at("find", 2);
    let mut rest = [0u64; 8];
    assert_eq!(e.find(s, &mut rest), Err(Error::Rv(Rv::DEVICE_ERROR)));
    // a comes back; the search restarts there and goes on.
    tokens[a].restart();
    assert_eq!(e.recover(1_000), 1);
    let mut found = std::vec![first[0]];
    found.extend(find_all(&e, s, 8));
    let found = once_each(found);
    assert_eq!(member_of(&e, s), a);
    assert_eq!(found, every_object(&e, s), "each object once, none skipped");
    assert_eq!(found.len(), 2);
}

#[test]
fn a_search_whose_member_fails_at_find_objects_init_starts_on_the_next() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    let dead = member_of(&e, s);
    tokens[dead].kill_at("find_init", 1);
    e.find_init(s, &[]).unwrap();
    assert_ne!(member_of(&e, s), dead, "the session moved");
    let found = once_each(find_all(&e, s, 1));
    assert_eq!(found, every_object(&e, s));
    assert_eq!(found.len(), 2);
}

#[test]
fn a_search_whose_member_fails_at_find_objects_final_ends_cleanly() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    e.find_init(s, &[]).unwrap();
    let mut out = [0u64; 8];
    let n = e.find(s, &mut out).unwrap();
    let dead = member_of(&e, s);
    tokens[dead].kill_at("find_final", 1);
    e.find_final(s).unwrap();
    assert_ne!(member_of(&e, s), dead, "the session moved");
    // No search is left active on the new member: a new one starts.
    let found = once_each(out[..n].to_vec());
    assert_eq!(found, every_object(&e, s));
}

#[test]
fn a_search_that_could_not_be_restarted_errs_until_its_final_which_succeeds() {
    let (e, tokens) = engine(Mode::Ha, 2);
    let s = logged_in(&e);
    // A nested template: the journal cannot copy it, so no failover can
    // restart this search.
    let nested = [Attr {
        ty: attr::WRAP_TEMPLATE,
        value: &[],
    }];
    e.find_init(s, &nested).unwrap();
    assert_eq!(
        e.events()
            .count("Session potentially not recoverable: a template"),
        1
    );
    kill_under(&e, s, &tokens);
    let mut out = [0u64; 4];
    for _ in 0..2 {
        assert_eq!(e.find(s, &mut out), Err(Error::Rv(Rv::DEVICE_ERROR)));
    }
    assert_eq!(
        e.events()
            .count("Session recovery incomplete: the search in progress"),
        1,
        "said once"
    );
    // The application ends its search as it would have on one token.
    assert_eq!(e.find_final(s), Ok(()));
    // And searches again.
    assert_ne!(find(&e, s, "aes-key"), 0);
}
