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

fn read_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("bad benchmark output: {e}"))
}

/// A markdown table of ours vs baseline per operation; fails if the two measured different
/// operations (a baseline that silently drifted would make every ratio meaningless).
fn compare(ours: &Value, baseline: &Value) -> Result<String, String> {
    let rows = |v: &Value| -> Vec<(String, f64, f64)> {
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
    };
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
