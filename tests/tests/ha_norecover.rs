//! A recovery delay of 0 means never: a failed member stays out even once
//! healed, and no recovery thread runs.

use std::time::{Duration, Instant};

use p11ha_tests::ha::*;
use p11ha_tests::*;

#[test]
fn with_a_zero_delay_a_failed_member_is_never_tried_again() {
    let l = start(3, 0, &[("ET_PTKC_HA_RECOVER_DELAY", "0")]);
    assert!(!thread_names().contains(&"p11ha-recovery".to_owned()));
    let m = fail_one(l);
    inject(m, "heal");
    let s = l.session();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        s.get_session_info().unwrap();
        assert_ne!(session_member(&s), m);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(member_info(m).unwrap().up, 0);
    assert!(!log_lines().iter().any(|l| l.contains("recovered")));
}
