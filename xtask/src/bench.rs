//! `cargo xtask bench SUITE`: runs our benchmark and its baseline in the same run and reports
//! the ratio. Results land in `target/xtask/bench/SUITE.{json,md}`; copy the table into
//! `docs/BENCHMARKS.md` with the command and machine.

use std::fmt::Write as _;
use std::process::Command;

use serde_json::Value;

use crate::steps::Ci;

/// Runs `suite`: ours (release build unless `release` is false) and its baseline.
pub(crate) fn run(c: &mut Ci, suite: &str, release: bool, quick: bool) -> Result<(), String> {
    let dir = c.target_dir().join("xtask/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let ours_path = dir.join(format!("{suite}-mesh.json"));
    let ours_arg = ours_path.to_string_lossy().into_owned();
    let mut args = vec!["run", "--locked", "-p", "mesh-benches"];
    if release {
        args.push("--release");
    }
    args.extend(["--", suite, "--json", &ours_arg]);
    if quick {
        args.push("--quick");
    }
    c.cargo(&args, &[])?;
    let ours: Value = read_json(&std::fs::read_to_string(&ours_path).map_err(|e| e.to_string())?)?;

    let baseline: Value = match suite {
        "crypto" => {
            let py = c.venv_python();
            let script = c.root.join("interop/python/bench_crypto.py");
            let mut cmd = Command::new(py);
            cmd.arg(script).current_dir(&c.root);
            if quick {
                cmd.arg("--quick");
            }
            let out = cmd.output().map_err(|e| format!("baseline: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "baseline failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            read_json(&String::from_utf8_lossy(&out.stdout))?
        }
        // The storage suite measures its raw-file baseline itself, in the same process.
        // So do the dht (verify-first store), storage and transport (raw webrtc-rs) suites.
        "blob" | "dht" | "latency" | "storage" | "transport" => ours["baseline"].clone(),
        other => {
            return Err(format!(
                "unknown suite {other}; known: blob, crypto, dht, latency, storage, transport"
            ));
        }
    };
    let mut table = compare(&ours, &baseline)?;
    table.push_str(&extra_tables(&ours));
    println!("{table}");
    let profile = if release { "release" } else { "debug" };
    let doc = format!(
        "# bench {suite} ({profile}{})\n\n{table}",
        if quick { ", quick" } else { "" }
    );
    std::fs::write(dir.join(format!("{suite}.md")), doc).map_err(|e| e.to_string())?;
    let both = serde_json::json!({ "ours": ours, "baseline": baseline });
    std::fs::write(dir.join(format!("{suite}.json")), both.to_string())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The suite-specific tables after the comparison: file amplification, peak memory, message
/// rates, per-peer memory.
fn extra_tables(ours: &Value) -> String {
    let mut table = String::new();
    if let Some(amp) = ours["amplification"].as_array() {
        table.push_str("\n| file size after writing | logical bytes | file bytes | file / logical |\n|---|---:|---:|---:|\n");
        for a in amp {
            let _ = writeln!(
                table,
                "| {} | {} | {} | {:.2} |",
                a["what"].as_str().unwrap_or("?"),
                a["logical_bytes"],
                a["file_bytes"],
                a["ratio"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    if let Some(mem) = ours["memory"].as_array() {
        table.push_str("\n| peak resident memory of the process | blob bytes | before (MiB) | peak (MiB) |\n|---|---:|---:|---:|\n");
        for p in mem {
            let mib = |v: &Value| v.as_f64().unwrap_or(f64::NAN) / 1_048_576.0;
            let _ = writeln!(
                table,
                "| {} | {} | {:.1} | {:.1} |",
                p["what"].as_str().unwrap_or("?"),
                p["blob_bytes"],
                mib(&p["rss_before"]),
                mib(&p["rss_peak"])
            );
        }
    }
    if let Some(rates) = ours["rates"].as_array() {
        table.push_str("\n| 1 KiB messages per second, back to back | ours | baseline | ours / baseline |\n|---|---:|---:|---:|\n");
        for r in rates {
            let (o, b) = (
                r["ours"].as_f64().unwrap_or(f64::NAN),
                r["baseline"].as_f64().unwrap_or(f64::NAN),
            );
            let _ = writeln!(
                table,
                "| {} | {o:.0} | {b:.0} | {:.2} |",
                r["what"].as_str().unwrap_or("?"),
                o / b
            );
        }
    }
    if let Some(t) = ours.get("tracked_peers") {
        let _ = writeln!(
            table,
            "\n| memory per tracked peer | bytes |\n|---|---:|\n| rate-limiter state, {} peers with one STORE each | {:.0} |\n| baseline: `HashMap<PeerId, u64>` of the same peers | {:.0} |\n| still resident after the idle reclaim ({} tracked) | {:.0} |",
            t["peers"],
            t["bytes_per_peer"].as_f64().unwrap_or(f64::NAN),
            t["baseline_bytes_per_peer"].as_f64().unwrap_or(f64::NAN),
            t["tracked_after_reclaim"],
            t["bytes_per_peer_after_reclaim"]
                .as_f64()
                .unwrap_or(f64::NAN)
        );
    }
    table
}

/// Every suite, in the order `--compare` runs them.
pub(crate) const SUITES: &[&str] = &["crypto", "storage", "blob", "dht", "transport", "latency"];
/// The recorded ratios `--compare` checks against (`--record` rewrites it).
const RECORDED: &str = "benches/recorded.json";
/// A ratio (or instruction count) that grew by more than this is a regression.
pub(crate) const THRESHOLD: f64 = 0.10;

/// The suites named in `args` (flags aside), or every suite.
pub(crate) fn parse_suites(args: &[&str]) -> Result<Vec<String>, String> {
    let named: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|s| (*s).to_string())
        .collect();
    if let Some(bad) = named.iter().find(|s| !SUITES.contains(&s.as_str())) {
        return Err(format!("unknown suite {bad}"));
    }
    if let Some(flag) = args
        .iter()
        .find(|a| a.starts_with("--") && **a != "--record")
    {
        return Err(format!("unknown flag {flag}"));
    }
    Ok(if named.is_empty() {
        SUITES.iter().map(|s| (*s).to_string()).collect()
    } else {
        named
    })
}

/// `ours / baseline` time per operation of the last run of `suite`.
fn ratios(c: &Ci, suite: &str) -> Result<Vec<(String, f64)>, String> {
    let path = c.target_dir().join(format!("xtask/bench/{suite}.json"));
    let both = read_json(&std::fs::read_to_string(&path).map_err(|e| e.to_string())?)?;
    Ok(rows(&both["ours"])
        .into_iter()
        .zip(rows(&both["baseline"]))
        .map(|((name, ns, _), (_, bns, _))| (name, ns / bns))
        .collect())
}

/// One operation's measure (a time ratio, an instruction count) now against the recorded one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub(crate) suite: String,
    pub(crate) operation: String,
    pub(crate) recorded: Option<f64>,
    pub(crate) now: f64,
}

impl Change {
    /// How much the ratio grew (positive: slower relative to the baseline).
    pub(crate) fn growth(&self) -> Option<f64> {
        self.recorded.map(|r| self.now / r - 1.0)
    }

    pub(crate) fn regressed(&self) -> bool {
        self.growth().is_some_and(|g| g > THRESHOLD)
    }
}

fn changes(recorded: &Value, suite: &str, now: &[(String, f64)]) -> Vec<Change> {
    now.iter()
        .map(|(op, ratio)| Change {
            suite: suite.to_string(),
            operation: op.clone(),
            recorded: recorded["suites"][suite][op].as_f64(),
            now: *ratio,
        })
        .collect()
}

/// `cargo xtask bench --compare [--record] [SUITE ...]`: runs the suites (release, full) and
/// compares each operation's `ours / baseline` ratio with the recorded one; a ratio more than
/// 10% higher is a regression. A suite with a regression is run a second time and the better
/// ratio of the two kept, so one noisy run on a shared machine does not fail the check. With
/// `--record`, the ratios of this run become the recorded ones.
pub(crate) fn compare_recorded(
    c: &mut Ci,
    suites: &[String],
    record: bool,
) -> Result<crate::steps::Outcome, String> {
    let path = c.root.join(RECORDED);
    let mut recorded: Value = match std::fs::read_to_string(&path) {
        Ok(text) => read_json(&text)?,
        Err(_) if record => serde_json::json!({ "suites": {} }),
        Err(e) => return Err(format!("{RECORDED}: {e} (record it with --record)")),
    };
    let mut all = Vec::new();
    for suite in suites {
        run(c, suite, true, false)?;
        let mut now = ratios(c, suite)?;
        if !record
            && changes(&recorded, suite, &now)
                .iter()
                .any(Change::regressed)
        {
            eprintln!("    {suite}: a ratio grew by more than 10%; running the suite again");
            run(c, suite, true, false)?;
            let again = ratios(c, suite)?;
            for ((_, a), (_, b)) in now.iter_mut().zip(&again) {
                *a = a.min(*b);
            }
        }
        all.extend(changes(&recorded, suite, &now));
    }
    let table = change_table(&all, "ours/baseline", |r| format!("{r:.3}"));
    println!("{table}");
    let regressed: Vec<String> = all
        .iter()
        .filter(|c| c.regressed())
        .map(|c| format!("{} / {}", c.suite, c.operation))
        .collect();
    if record {
        for ch in &all {
            recorded["suites"][&ch.suite][&ch.operation] = serde_json::json!(ch.now);
        }
        recorded["recorded_at_commit"] = serde_json::json!(head_commit(c));
        recorded["what"] = serde_json::json!(
            "ours / baseline time per operation, same run, release build (cargo xtask bench --compare --record)"
        );
        let text = serde_json::to_string_pretty(&recorded).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| e.to_string())?;
        return Ok(crate::steps::Outcome::PassedWithNote(format!(
            "{} ratios recorded in {RECORDED}",
            all.len()
        )));
    }
    if regressed.is_empty() {
        Ok(crate::steps::Outcome::PassedWithNote(format!(
            "{} operations within 10% of the recorded ratios",
            all.len()
        )))
    } else {
        Err(format!("regressions over 10%: {}", regressed.join(", ")))
    }
}

/// The short hash of the checked-out commit (empty if git cannot tell).
pub(crate) fn head_commit(c: &Ci) -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&c.root)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A markdown table of `all`; `measure` names the column (e.g. "ours/baseline") and `show`
/// formats a value of it.
pub(crate) fn change_table(all: &[Change], measure: &str, show: impl Fn(f64) -> String) -> String {
    let mut t = format!(
        "| suite | operation | recorded {measure} | now | change | verdict |\n|---|---|---:|---:|---:|---|\n",
    );
    for ch in all {
        let (rec, growth) = match (ch.recorded, ch.growth()) {
            // Rounded first, so that a change too small to show is "+0.0%", never "-0.0%".
            (Some(r), Some(g)) => (
                show(r),
                format!("{:+.1}%", (g * 1000.0).round() / 10.0 + 0.0),
            ),
            _ => ("-".into(), "-".into()),
        };
        let verdict = match ch.growth() {
            None => "new (not recorded)",
            Some(_) if ch.regressed() => "REGRESSION",
            Some(g) if g < -THRESHOLD => "faster",
            Some(_) => "ok",
        };
        let _ = writeln!(
            t,
            "| {} | {} | {rec} | {} | {growth} | {verdict} |",
            ch.suite,
            ch.operation,
            show(ch.now)
        );
    }
    t
}

fn read_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("bad benchmark output: {e}"))
}

/// (operation, ns per op, bytes per op) of a suite's `results`.
fn rows(v: &Value) -> Vec<(String, f64, f64)> {
    v["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["ns_per_op"].as_f64().unwrap_or(f64::NAN),
                        r["bytes_per_op"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A markdown table of ours vs baseline per operation; fails if the two measured different
/// operations (a baseline that silently drifted would make every ratio meaningless).
fn compare(ours: &Value, baseline: &Value) -> Result<String, String> {
    let (o, b) = (rows(ours), rows(baseline));
    let names = |r: &[(String, f64, f64)]| r.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    if o.is_empty() || names(&o) != names(&b) {
        return Err(format!(
            "ours measured {:?}, the baseline {:?}",
            names(&o),
            names(&b)
        ));
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "ours: {}; baseline: {}\n",
        ours["implementation"].as_str().unwrap_or("?"),
        baseline["implementation"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        t,
        "| operation | ours µs/op | baseline µs/op | ours MiB/s | baseline MiB/s | ours / baseline time |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
    for ((name, ns, bytes), (_, bns, _)) in o.iter().zip(&b) {
        let mib = |n: f64| {
            if *bytes > 0.0 {
                format!("{:.1}", bytes / (n / 1e9) / 1_048_576.0)
            } else {
                "-".into()
            }
        };
        let _ = writeln!(
            t,
            "| {name} | {:.1} | {:.1} | {} | {} | {:.2} |",
            ns / 1e3,
            bns / 1e3,
            mib(*ns),
            mib(*bns),
            ns / bns
        );
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_more_than_ten_percent_higher_is_a_regression() {
        let recorded = serde_json::json!({"suites": {"crypto": {"seal": 1.0, "open": 0.5}}});
        let now = [
            ("seal".to_string(), 1.11),
            ("open".to_string(), 0.54),
            ("new".to_string(), 9.0),
        ];
        let c = changes(&recorded, "crypto", &now);
        assert!(c[0].regressed(), "+11% is a regression");
        assert!(!c[1].regressed(), "+8% is within the threshold");
        assert!(
            !c[2].regressed() && c[2].recorded.is_none(),
            "unrecorded is not"
        );
        let t = change_table(&c, "ours/baseline", |r| format!("{r:.3}"));
        assert!(
            t.contains("| crypto | seal | 1.000 | 1.110 | +11.0% | REGRESSION |"),
            "{t}"
        );
        assert!(
            t.contains("| crypto | open | 0.500 | 0.540 | +8.0% | ok |"),
            "{t}"
        );
        assert!(t.contains("new (not recorded)"), "{t}");
        let faster = changes(&recorded, "crypto", &[("seal".to_string(), 0.8)]);
        assert!(
            change_table(&faster, "ours/baseline", |r| format!("{r:.3}")).contains("| faster |")
        );
    }

    #[test]
    fn compare_refuses_mismatched_operation_sets() {
        let a =
            serde_json::json!({"results": [{"name": "x", "ns_per_op": 2.0, "bytes_per_op": 0}]});
        let b =
            serde_json::json!({"results": [{"name": "y", "ns_per_op": 1.0, "bytes_per_op": 0}]});
        assert!(compare(&a, &b).is_err());
        let t = compare(&a, &a.clone()).unwrap();
        assert!(t.contains("| x |") && t.contains("| 1.00 |"), "{t}");
    }
}
