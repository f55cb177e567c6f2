//! `meshd demo`, the README's first command, as a user runs it: it must exit 0 and its report
//! must say that every step did its work (all profile lookups verified, the message read after
//! the restart, the blob's chunks verified, the key recovered), not merely that it ended.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

/// The number after `prefix` on the line that holds `prefix`.
fn number_after(report: &str, prefix: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no line with {prefix:?} in:\n{report}"));
    let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
    let number: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: no number after {prefix:?}: {e}"))
}

#[test]
fn the_demo_does_every_step_and_reports_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("demo")
        .env_remove("MESHD_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "meshd demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Each of the five steps announced, in order.
    let mut at = 0;
    for step in 1..=5 {
        let tag = format!("[{step}/5]");
        let found = stdout[at..]
            .find(&tag)
            .unwrap_or_else(|| panic!("step {tag} missing or out of order:\n{stdout}"));
        at += found;
    }
    assert!(
        stdout.contains("reached all 5 others by push"),
        "gossip did not reach every node:\n{stdout}"
    );
    let report = &stdout[stdout.find("\nreport").expect("no report")..];
    // Every node's profile found and its signature verified.
    assert!(
        (number_after(report, "DHT:") - 6.0).abs() < f64::EPSILON,
        "{report}"
    );
    assert!(
        report.contains("of 6 profile lookups found and verified"),
        "{report}"
    );
    // The message written while node 3 was down was read after its restart.
    assert!(
        number_after(report, "that was down: read") >= 0.0,
        "{report}"
    );
    let pulled = number_after(report, "ms after it came back,");
    assert!(
        pulled >= 1.0,
        "nothing was pulled after the restart: {report}"
    );
    // 2 MiB in chunks, every one verified.
    let chunks = number_after(report, "private blob:");
    assert!(chunks >= 2.0, "a 2 MiB blob in {chunks} chunk(s): {report}");
    assert!(
        number_after(report, "chunks fetched and verified,") > 0.0,
        "{report}"
    );
    // The identity key came back through two of three guardians.
    assert!(report.contains("with 2 of 3 guardians"), "{report}");
    assert!(number_after(report, "key back in") > 0.0, "{report}");
}
