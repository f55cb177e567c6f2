//! `cargo xtask bench --instructions [--record]`: the regression guard on CPU instruction counts.
//!
//! Each operation of `mesh-bench count` (benches/src/count.rs) runs in a process of its own
//! under valgrind's callgrind, which counts the instructions executed inside the measured
//! region only (`--toggle-collect`). Unlike a time, the count does not depend on what else the
//! machine does: two runs agree to within a fraction of a percent (key and nonce randomness,
//! hash seeds), so a count more than 10% above the recorded one is a change in the code, not
//! noise. The build is the dev profile (the one CI builds anyway; the hot crypto and storage
//! crates are optimised in it, ours are not). A new toolchain or valgrind can move the counts:
//! re-record then, in its own commit.

use std::process::Command;

use serde_json::Value;

use crate::bench::{Change, THRESHOLD, change_table, head_commit};
use crate::steps::{Ci, Outcome};

/// The recorded counts (`--record` rewrites them).
const RECORDED: &str = "benches/instructions.json";
/// Calls of an operation inside the counted region (after one warm-up call outside it).
const ITERATIONS: u32 = 10;
/// The apt package the step needs.
pub(crate) const VALGRIND: &str = "apt valgrind";

/// Installs valgrind unless it is present.
pub(crate) fn setup(c: &mut Ci) -> Result<Outcome, String> {
    if let Some(v) = crate::steps::tool_version("valgrind", &["--version"]) {
        return Ok(Outcome::PassedWithNote(format!("present: {}", v.trim())));
    }
    c.apt_install(&["valgrind"])
}

/// The instructions one callgrind output file counted (its `totals:` line).
fn totals(callgrind_out: &str) -> Option<u64> {
    callgrind_out
        .lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// (suite, operation) of an op name such as `crypto: sign 1 KiB`.
fn split(name: &str) -> (String, String) {
    match name.split_once(": ") {
        Some((s, o)) => (s.to_string(), o.to_string()),
        None => (String::new(), name.to_string()),
    }
}

/// Each operation's count now against `recorded` (`operations` by full name).
fn changes(recorded: &Value, now: &[(String, f64)]) -> Vec<Change> {
    now.iter()
        .map(|(name, n)| {
            let (suite, operation) = split(name);
            Change {
                suite,
                operation,
                recorded: recorded["operations"][name].as_f64(),
                now: *n,
            }
        })
        .collect()
}

/// Counts every operation, then compares with (or, with `record`, rewrites) the recorded counts.
pub(crate) fn run(c: &mut Ci, record: bool) -> Result<Outcome, String> {
    c.cargo(&["build", "--locked", "-p", "mesh-benches"], &[])?;
    let bin = c.target_dir().join("debug/mesh-bench");
    let out_dir = c.target_dir().join("xtask/callgrind");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let list = Command::new(&bin)
        .args(["count", "--list"])
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let ops: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if ops.is_empty() {
        return Err("mesh-bench count --list named no operation".into());
    }
    let mut now = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let out = out_dir.join(format!("{i}.out"));
        let _ = std::fs::remove_file(&out);
        let n = ITERATIONS.to_string();
        c.run(
            "valgrind",
            &[
                "-q",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=*instruction_counted_region*",
                &format!("--callgrind-out-file={}", out.display()),
                &bin.to_string_lossy(),
                "count",
                op,
                &n,
            ],
            &[],
        )?;
        let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let total = totals(&text).ok_or_else(|| format!("{op}: no totals in callgrind output"))?;
        if total == 0 {
            return Err(format!("{op}: no instruction counted (region not found?)"));
        }
        #[allow(clippy::cast_precision_loss)] // far below 2^52
        now.push((op.clone(), total as f64 / f64::from(ITERATIONS)));
    }
    let path = c.root.join(RECORDED);
    let recorded: Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{RECORDED}: {e}"))?,
        Err(_) if record => serde_json::json!({}),
        Err(e) => return Err(format!("{RECORDED}: {e} (record it with --record)")),
    };
    let all = changes(&recorded, &now);
    println!(
        "{}",
        change_table(&all, "instructions / op", |n| format!("{n:.0}"))
    );
    if record {
        let valgrind = crate::steps::tool_version("valgrind", &["--version"]).unwrap_or_default();
        let ops: serde_json::Map<String, Value> = now
            .iter()
            .map(|(name, n)| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // counts
                let n = n.round() as u64;
                (name.clone(), serde_json::json!(n))
            })
            .collect();
        let doc = serde_json::json!({
            "what": "CPU instructions per operation inside mesh-bench's counted region (valgrind callgrind, dev profile, 10 calls after one warm-up; cargo xtask bench --instructions --record)",
            "recorded_at_commit": head_commit(c),
            "valgrind": valgrind.trim(),
            "operations": ops,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| e.to_string())?;
        return Ok(Outcome::PassedWithNote(format!(
            "{} instruction counts recorded in {RECORDED}",
            all.len()
        )));
    }
    let regressed: Vec<String> = all
        .iter()
        .filter(|ch| ch.regressed())
        .map(|ch| format!("{}: {}", ch.suite, ch.operation))
        .collect();
    let unrecorded = all.iter().filter(|ch| ch.recorded.is_none()).count();
    if !regressed.is_empty() {
        return Err(format!(
            "instruction counts over {:.0}% above the recorded ones: {}",
            THRESHOLD * 100.0,
            regressed.join(", ")
        ));
    }
    Ok(Outcome::PassedWithNote(format!(
        "{} operations within {:.0}% of the recorded instruction counts{}",
        all.len() - unrecorded,
        THRESHOLD * 100.0,
        if unrecorded > 0 {
            format!(", {unrecorded} new (not recorded)")
        } else {
            String::new()
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_totals_line_of_a_callgrind_file() {
        let file = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 612\nfn=(1) f\n3 5\ntotals: 612\n";
        assert_eq!(totals(file), Some(612));
        assert_eq!(totals("events: Ir\n"), None);
        assert_eq!(totals("totals: many\n"), None);
    }

    #[test]
    fn a_count_more_than_ten_percent_above_the_recorded_one_is_a_regression() {
        let recorded = serde_json::json!({"operations": {
            "crypto: sign 1 KiB": 1000.0, "dht: refused STORE": 500.0
        }});
        let now = [
            ("crypto: sign 1 KiB".to_string(), 1101.0),
            ("dht: refused STORE".to_string(), 540.0),
            ("blob: new op".to_string(), 7.0),
        ];
        let c = changes(&recorded, &now);
        assert_eq!(
            (c[0].suite.as_str(), c[0].operation.as_str()),
            ("crypto", "sign 1 KiB")
        );
        assert!(c[0].regressed(), "+10.1%");
        assert!(!c[1].regressed(), "+8%");
        assert!(c[2].recorded.is_none() && !c[2].regressed());
        let t = change_table(&c, "instructions / op", |n| format!("{n:.0}"));
        assert!(
            t.contains("| crypto | sign 1 KiB | 1000 | 1101 | +10.1% | REGRESSION |"),
            "{t}"
        );
        assert!(
            t.contains("| blob | new op | - | 7 | - | new (not recorded) |"),
            "{t}"
        );
    }
}
