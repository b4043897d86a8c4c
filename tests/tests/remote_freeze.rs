//! A remote member that stops answering (its `p11-kit server` process
//! group gets SIGSTOP: the connection stays open, nothing comes back) is
//! declared failed when the call deadline passes, and the call in flight
//! fails over: the application gets its answer after about the deadline
//! (`P11HA_CALL_TIMEOUT_MS=1000` here), not never. While it stays frozen,
//! attempts to reconnect it (every 200 ms; each gives up after
//! `P11HA_CONNECT_TIMEOUT_MS=1000`) run in p11ha's recovery thread and do
//! not hold the application up.

use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use p11ha_tests::ha::{failure_line, log_lines, wait_for};
use p11ha_tests::remote::{self, with_server};
use p11ha_tests::*;

#[test]
fn a_frozen_server_fails_over_within_the_call_deadline() {
    let l = remote::start(
        3,
        200,
        &[
            ("P11HA_CALL_TIMEOUT_MS", "1000"),
            ("P11HA_CONNECT_TIMEOUT_MS", "1000"),
        ],
    );
    let s = l.user_session();
    let key = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let m = session_member(&s);
    with_server(m, |server| server.freeze());
    let t = Instant::now();
    let sig = s
        .sign(&Mechanism::Ecdsa, key, &sha256(b"frozen"))
        .expect("the call fails over");
    let took = t.elapsed();
    println!("frozen member: the call returned from another member after {took:?}");
    assert!(
        took >= Duration::from_millis(950),
        "the member was given its deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(4000),
        "the answer came soon after the deadline: {took:?}"
    );
    assert_ne!(session_member(&s), m);
    assert!(openssl_verifies(
        &l.tokens.keys.join("ec-pub.pem"),
        b"frozen",
        &ecdsa_der(&sig)
    ));
    assert!(log_lines().contains(&failure_line(m)), "{:#?}", log_lines());
    // Still frozen: recovery attempts come and time out in the background
    // while the application signs on.
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    while t.elapsed() < Duration::from_millis(2500) {
        let c = Instant::now();
        s.sign(&Mechanism::Ecdsa, key, &sha256(b"meanwhile"))
            .expect("signs on another member");
        slowest = slowest.max(c.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "no call waits for a reconnection attempt: slowest {slowest:?}"
    );
    assert_eq!(member_info(m).unwrap().up, 0, "not back while frozen");
    // Thawed, the server is reconnected (a new connection: the one that
    // timed out is never read again) and serves.
    with_server(m, |server| server.thaw());
    wait_for("the member reconnected", || member_info(m).unwrap().up == 1);
    let sessions: Vec<_> = (0..3).map(|_| l.session()).collect();
    let on_m = sessions
        .iter()
        .find(|s| session_member(s) == m)
        .expect("a new session on the thawed member");
    on_m.get_session_info().expect("it answers");
}
