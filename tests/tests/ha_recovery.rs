//! Recovery of a failed member by p11ha's recovery thread, after
//! `P11HA_HA_RECOVER_DELAY_MS` (300 ms here): not before, and then it takes
//! new sessions again, with a log line. The thread stops at C_Finalize.

use p11ha_tests::ha::*;
use p11ha_tests::*;

#[test]
fn a_failed_member_comes_back_after_the_delay_and_takes_sessions() {
    let l = start(3, 300, &[]);
    // The thread names itself once it runs.
    wait_for("the recovery thread", || {
        thread_names().contains(&"p11ha-recovery".to_owned())
    });
    let m = fail_one(l);
    inject(m, "heal");
    // Healed, but its delay (300 ms from the failure) has not passed.
    assert_eq!(member_info(m).unwrap().up, 0, "not back before the delay");
    wait_for("the member back", || member_info(m).unwrap().up == 1);
    let lines = log_lines();
    assert_eq!(
        lines.iter().filter(|l| **l == failure_line(m)).count(),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| **l == recovered_line(m)).count(),
        1,
        "{lines:#?}"
    );
    // It takes sessions again: three new sessions go one to each member.
    let sessions: Vec<_> = (0..3).map(|_| l.session()).collect();
    let on_m: Vec<_> = sessions.iter().filter(|s| session_member(s) == m).collect();
    assert_eq!(on_m.len(), 1);
    on_m[0]
        .get_session_info()
        .expect("a session on the recovered member works");
    drop(sessions);
    // C_Finalize stops the thread.
    // SAFETY: NULL is C_Finalize's only argument.
    let rv = unsafe { raw().C_Finalize.unwrap()(std::ptr::null_mut()) };
    assert_eq!(rv, 0);
    assert!(!thread_names().contains(&"p11ha-recovery".to_owned()));
}
