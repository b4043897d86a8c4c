//! `ET_PTKC_HA_RECOVER_WAIT=YES`: recovery is attempted by application
//! threads, which p11ha holds while it is (PTK: "Found HSM Dead:HSM
//! Failed"); there is no recovery thread.

use std::time::Duration;

use p11ha_tests::ha::*;
use p11ha_tests::*;

#[test]
fn application_threads_recover_the_member_and_ptk_text_is_logged() {
    let l = start(3, 100, &[("ET_PTKC_HA_RECOVER_WAIT", "YES")]);
    assert!(!thread_names().contains(&"p11ha-recovery".to_owned()));
    let m = fail_one(l);
    inject(m, "heal");
    let s = l.session();
    // Calls go on; once the delay has passed, the call that enters then
    // makes the attempt.
    wait_for("the member back", || {
        s.get_session_info()
            .expect("calls go on while the member is out");
        std::thread::sleep(Duration::from_millis(10));
        member_info(m).unwrap().up == 1
    });
    let pid = std::process::id();
    let lines = log_lines();
    let dead = format!("p11ha-test[{pid}] Error: Found HSM Dead:HSM Failed");
    let at = |line: &str| lines.iter().position(|l| l == line);
    let (failed, dead_at, back) = (at(&failure_line(m)), at(&dead), at(&recovered_line(m)));
    assert!(
        failed.is_some() && dead_at.is_some() && back.is_some(),
        "{lines:#?}"
    );
    assert!(
        failed < dead_at && dead_at < back,
        "in that order: {lines:#?}"
    );
}
