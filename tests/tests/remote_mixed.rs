//! A remote member and a module member behind one virtual slot: a
//! `p11-kit server` serving one copy of the token (member 0, reached over
//! p11ha's RPC client) and SoftHSM loaded in the process serving another
//! (member 1). A session fails over from one kind to the other and back,
//! with the right answers.

use cryptoki::mechanism::Mechanism;
use p11ha_tests::ha::{FAULT_INJECTION, failure_line, inject, log_lines, wait_for};
use p11ha_tests::remote::{self, with_server};
use p11ha_tests::*;

#[test]
fn sessions_fail_over_between_remote_and_module_members() {
    let l = remote::start_mixed(1, 1, 200, &[FAULT_INJECTION]);
    assert_eq!(member_info(2).map(|m| m.up), None, "two members");
    let s = l.user_session();
    let data: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    // Make sure the session starts on the remote member.
    let other = l.user_session();
    let (s, _keep) = if session_member(&s) == 0 {
        (s, other)
    } else {
        (other, s)
    };
    assert_eq!(session_member(&s), 0);
    s.digest_init(&Mechanism::Sha256).unwrap();
    s.digest_update(&data[..3000]).unwrap();
    with_server(0, |server| server.kill());
    s.digest_update(&data[3000..6000]).unwrap();
    assert_eq!(session_member(&s), 1, "moved to the module member");
    with_server(0, |server| server.start());
    wait_for("the remote member reconnected", || {
        member_info(0).unwrap().up == 1
    });
    // Now the module member fails (fault injection: SoftHSM in-process
    // cannot be killed alone) and the operation moves back to the server.
    inject(1, "down");
    s.digest_update(&data[6000..]).unwrap();
    assert_eq!(s.digest_final().unwrap(), sha256(&data));
    assert_eq!(session_member(&s), 0, "back on the remote member");
    let lines = log_lines();
    assert!(lines.contains(&failure_line(0)), "{lines:#?}");
    assert!(lines.contains(&failure_line(1)), "{lines:#?}");
    inject(1, "heal");
}
