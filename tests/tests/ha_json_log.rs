//! `ET_PTKC_HA_LOG_FORMAT=json`: the HA log is JSON lines, one object per
//! event, whose fields say what the text line says (a member's failure and
//! recovery, and a configuration problem, here).

use p11ha_tests::ha::*;
use p11ha_tests::*;
use serde_json::Value;

#[test]
fn a_failure_and_a_recovery_are_json_lines_with_their_fields() {
    let l = start(
        3,
        200,
        &[("ET_PTKC_HA_LOG_FORMAT", "json"), ("P11HA_JSON_TYPO", "1")],
    );
    let m = fail_one(l);
    inject(m, "heal");
    wait_for("the member back", || member_info(m).unwrap().up == 1);
    let slot = member_info(m).unwrap().member_slot;
    let text = std::fs::read_to_string(log_path()).expect("the log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        assert_eq!(line["app"], "p11ha-test", "{line}");
        assert_eq!(line["pid"], u64::from(std::process::id()), "{line}");
        let time = line["time"].as_str().expect("time");
        // 2026-11-27T23:41:07.312Z
        assert_eq!((time.len(), &time[10..11], &time[23..]), (24, "T", "Z"));
    }
    let of = |event: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["event"] == event && l["hsm_idx"] == m as u64)
            .collect()
    };
    let failures = of("hsm_failure");
    assert_eq!(failures.len(), 1, "{text}");
    let f = failures[0];
    assert_eq!(f["severity"], "Error");
    assert_eq!(f["hsm_slot_id"], slot);
    // The message is the text format's, word for word.
    let text_line = failure_line(m);
    assert!(text_line.ends_with(&format!("Error: {}", f["message"].as_str().unwrap())));
    let recovered = of("member_recovered");
    assert_eq!(recovered.len(), 1, "{text}");
    assert_eq!(recovered[0]["severity"], "Info");
    assert_eq!(recovered[0]["hsm_slot_id"], slot);
    assert!(recovered_line(m).ends_with(&format!(
        "Info: {}",
        recovered[0]["message"].as_str().unwrap()
    )));
    // A configuration problem found before the log was open has its fields.
    let typo = lines
        .iter()
        .find(|l| l["event"] == "bad_config" && l["key"] == "P11HA_JSON_TYPO")
        .unwrap_or_else(|| panic!("no bad_config line for the typo in\n{text}"));
    assert_eq!(typo["severity"], "Warning");
    assert_eq!(typo["problem"], "not an item p11ha knows");
    assert_eq!(typo["fallback"], "ignored");
    assert_eq!(
        typo["message"],
        "Configuration P11HA_JSON_TYPO: not an item p11ha knows; ignored"
    );
    // Every member joined slot 0.
    let joined = lines.iter().filter(|l| l["event"] == "member_joined");
    assert!(joined.clone().count() >= 3, "{text}");
    assert!(joined.clone().all(|l| l["slot"] == 0));
}
