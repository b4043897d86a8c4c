//! `P11HA_STATUS_SOCKET`: the live state on a Unix socket, mode 0600, from
//! `C_Initialize` to `C_Finalize`. A member's failure and recovery show in
//! its `up` gauge and its counters, which match the HA log's lines; after
//! `C_Finalize` the thread and the socket file are gone.

use std::os::unix::fs::PermissionsExt;

use p11ha_tests::ha::*;
use p11ha_tests::status::{member_value, scrape, value};
use p11ha_tests::*;

#[test]
fn a_failure_and_a_recovery_show_in_the_live_state() {
    let dir = std::env::temp_dir().join(format!("p11ha-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let setting = format!("{}/", dir.display());
    let l = start(3, 300, &[("P11HA_STATUS_SOCKET", setting.as_str())]);
    let path = dir.join(format!("{}.sock", std::process::id()));
    wait_for("the status thread", || {
        thread_names().contains(&"p11ha-status".to_owned())
    });
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is the owner's alone");

    let before = scrape(&path);
    for i in 0..3 {
        assert_eq!(member_value(&before, "p11ha_member_up", i), 1, "{before}");
        assert_eq!(member_value(&before, "p11ha_member_failures_total", i), 0);
        assert_eq!(member_value(&before, "p11ha_member_needs_sync", i), 0);
    }
    assert_eq!(value(&before, "p11ha_failovers_total"), 0);
    // Labels: the virtual slot and the member's own slot.
    let slot = member_info(0).unwrap().member_slot;
    assert!(
        before.contains(&format!(
            "p11ha_member_up{{member=\"0\",slot=\"0\",member_slot=\"{slot}\"}} 1"
        )),
        "{before}"
    );

    // A session on each member, then one member fails under its session.
    let sessions: Vec<_> = (0..3).map(|_| l.session()).collect();
    let text = scrape(&path);
    assert_eq!(
        (0..3)
            .map(|i| member_value(&text, "p11ha_member_sessions", i))
            .sum::<u64>(),
        3,
        "{text}"
    );
    let m = fail_one(l);
    let during = scrape(&path);
    assert_eq!(member_value(&during, "p11ha_member_up", m), 0, "{during}");
    assert_eq!(member_value(&during, "p11ha_member_failures_total", m), 1);
    assert_eq!(member_value(&during, "p11ha_member_recoveries_total", m), 0);
    assert_eq!(value(&during, "p11ha_failovers_total"), 1, "{during}");
    assert_eq!(
        value(&during, "p11ha_events_total{event=\"hsm_failure\"}"),
        1
    );

    inject(m, "heal");
    wait_for("the member back", || member_info(m).unwrap().up == 1);
    let after = scrape(&path);
    assert_eq!(member_value(&after, "p11ha_member_up", m), 1, "{after}");
    assert_eq!(member_value(&after, "p11ha_member_recoveries_total", m), 1);
    // The counters say what the HA log says.
    let lines = log_lines();
    for i in 0..3 {
        let failures = lines.iter().filter(|l| **l == failure_line(i)).count() as u64;
        let recoveries = lines.iter().filter(|l| **l == recovered_line(i)).count() as u64;
        assert_eq!(
            member_value(&after, "p11ha_member_failures_total", i),
            failures,
            "{lines:#?}"
        );
        assert_eq!(
            member_value(&after, "p11ha_member_recoveries_total", i),
            recoveries,
            "{lines:#?}"
        );
    }
    // Every call of a session is timed on its member: a histogram whose
    // +Inf bucket is its count.
    for s in &sessions {
        s.generate_random_vec(16).expect("random");
    }
    let text = scrape(&path);
    let mut calls = 0;
    for i in 0..3 {
        let count = member_value(&text, "p11ha_member_call_seconds_count", i);
        let slot = member_info(i).unwrap().member_slot;
        let inf = value(
            &text,
            &format!(
                "p11ha_member_call_seconds_bucket{{member=\"{i}\",slot=\"0\",\
                 member_slot=\"{slot}\",le=\"+Inf\"}}"
            ),
        );
        assert_eq!(count, inf, "{text}");
        calls += count;
    }
    assert!(calls >= 3, "{text}");
    drop(sessions);

    // C_Finalize stops the thread and removes the socket.
    // SAFETY: NULL is C_Finalize's only argument.
    let rv = unsafe { raw().C_Finalize.unwrap()(std::ptr::null_mut()) };
    assert_eq!(rv, 0);
    assert!(!thread_names().contains(&"p11ha-status".to_owned()));
    assert!(!path.exists(), "the socket is removed at C_Finalize");
    std::fs::remove_dir_all(&dir).unwrap();
}
