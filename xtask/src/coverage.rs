//! `cargo xtask coverage [--min PERCENT]`: line coverage of the native test suite with
//! cargo-llvm-cov (source-based, LLVM's instrumentation), as a table per crate.
//!
//! What runs instrumented: `cargo test --workspace --all-features`, the processes those tests
//! start (`meshd`, `mesh-sim`; a process killed by SIGKILL writes no profile), and the Python
//! tests of `mesh-ffi` against its instrumented library (the C ABI of the mobile bindings).
//!
//! Counted: the library and binary sources of every crate and backend (`crates/*/src`,
//! `backends/*/src`). Not counted: test code itself, benchmarks, the `xtask`, the fuzz harnesses
//! and the `UniFFI` generator (tools, not product code). Code that only runs in the browser
//! (`cfg(target_arch = "wasm32")`) is not compiled natively and so not in the denominator; the
//! headless-Chromium tests cover it (`cargo xtask test-wasm`).
//!
//! The report lands in `target/xtask/coverage.md` and `target/llvm-cov-target/llvm-cov/html/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::steps::{Ci, Outcome};

/// cargo-llvm-cov release the step installs.
pub(crate) const CARGO_LLVM_COV_VERSION: &str = "0.9.1";

pub(crate) fn setup(c: &mut Ci) -> Result<Outcome, String> {
    let components = crate::steps::tool_version("rustup", &["component", "list", "--installed"])
        .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("llvm-tools")) {
        c.run("rustup", &["component", "add", "llvm-tools"], &[])?;
    }
    c.cargo_tool("cargo-llvm-cov", "llvm-cov", CARGO_LLVM_COV_VERSION)
}

/// Lines (covered, total) per crate directory (`crates/x`, `backends/x`) from an
/// `llvm-cov export -summary-only` JSON report.
fn per_crate(report: &Value, root: &Path) -> BTreeMap<String, (u64, u64)> {
    let root = root.to_string_lossy();
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let files = report["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["files"].as_array())
        .flatten();
    for f in files {
        let Some(name) = f["filename"].as_str() else {
            continue;
        };
        let rel = name
            .strip_prefix(root.as_ref())
            .unwrap_or(name)
            .trim_start_matches('/');
        let parts: Vec<&str> = rel.split('/').collect();
        let counted = matches!(parts.as_slice(), [group, _, "src", ..]
            if (*group == "crates" || *group == "backends"));
        if !counted || rel.starts_with("crates/mesh-ffi/bindgen") {
            continue;
        }
        let lines = &f["summary"]["lines"];
        let (covered, count) = (
            lines["covered"].as_u64().unwrap_or(0),
            lines["count"].as_u64().unwrap_or(0),
        );
        let e = out.entry(format!("{}/{}", parts[0], parts[1])).or_default();
        e.0 += covered;
        e.1 += count;
    }
    out
}

#[allow(clippy::cast_precision_loss)] // line counts are far below 2^52
fn percent(covered: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        covered as f64 * 100.0 / total as f64
    }
}

fn table(crates: &BTreeMap<String, (u64, u64)>) -> (String, f64) {
    let mut t = String::from("| crate | lines | covered | line coverage |\n|---|---:|---:|---:|\n");
    let (mut covered, mut total) = (0, 0);
    for (name, (c, n)) in crates {
        let _ = writeln!(t, "| {name} | {n} | {c} | {:.1}% |", percent(*c, *n));
        covered += c;
        total += n;
    }
    let overall = percent(covered, total);
    let _ = writeln!(t, "| **all** | {total} | {covered} | **{overall:.1}%** |");
    (t, overall)
}

/// `[--min PERCENT]`.
pub(crate) fn parse_min(args: &[&str]) -> Result<f64, String> {
    match args {
        [] => Ok(0.0),
        ["--min", p] => match p.parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
            _ => Err(format!("--min takes a percentage, not {p}")),
        },
        _ => Err(format!("unknown arguments {args:?}")),
    }
}

/// `KEY=VALUE` lines of `cargo llvm-cov show-env` (with or without `export `, the value bare
/// or shell-quoted) as pairs.
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = if let Some(inner) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                inner.replace("'\\''", "'")
            } else if let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                inner.replace("\\\"", "\"").replace("\\\\", "\\")
            } else {
                v.to_string()
            };
            (!k.is_empty()).then(|| (k.to_string(), v))
        })
        .collect()
}

/// Runs the native tests, and the Python tests of `mesh-ffi` against its instrumented library,
/// under instrumentation; prints the table; fails below `min`.
///
/// One environment from `cargo llvm-cov show-env` for everything, so that processes the tests
/// start (`meshd`, `mesh-sim`, the Python interpreter loading `libmesh_ffi`) write their
/// profiles beside those of the test binaries, and the report merges them all.
pub(crate) fn run(c: &mut Ci, min: f64) -> Result<Outcome, String> {
    let out_dir = c.target_dir().join("xtask");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let json = out_dir.join("coverage.json");
    let json_s = json.to_string_lossy().into_owned();
    // Its own target directory, so that the instrumented build does not replace the plain one;
    // show-env derives the profile and report paths from it.
    let target = c.target_dir().join("llvm-cov-target");
    let target_s = target.to_string_lossy().into_owned();
    let shown = std::process::Command::new("cargo")
        .args(["llvm-cov", "show-env"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&c.root)
        .output()
        .map_err(|e| format!("cargo llvm-cov show-env: {e}"))?;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    let mut env = parse_env(&shown);
    if !env.iter().any(|(k, _)| k == "LLVM_PROFILE_FILE") {
        return Err(format!(
            "cargo llvm-cov show-env set no LLVM_PROFILE_FILE:\n{shown}"
        ));
    }
    env.push(("CARGO_TARGET_DIR".into(), target_s));
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Profiles of an earlier run would count again.
    c.cargo(&["llvm-cov", "clean", "--profraw-only"], &envs)?;
    // The tests once (the same set as `cargo test --workspace --all-features`). A failing
    // test still leaves its profile: report first, then fail.
    let tests = c.cargo(
        &[
            "test",
            "--locked",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ],
        &envs,
    );
    // mesh-ffi's own tests are in Python, through the C ABI that Kotlin and Swift use.
    let python = c
        .cargo(
            &[
                "build",
                "--locked",
                "--workspace",
                "--all-features",
                "--all-targets",
            ],
            &envs,
        )
        .and_then(|_| crate::ffi::python_tests(c, &target, &envs));
    c.cargo(
        &[
            "llvm-cov",
            "report",
            "--json",
            "--summary-only",
            "--output-path",
            &json_s,
        ],
        &envs,
    )?;
    c.cargo(&["llvm-cov", "report", "--html"], &envs)?;
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&json).map_err(|e| format!("{}: {e}", json.display()))?,
    )
    .map_err(|e| format!("coverage report: {e}"))?;
    let crates = per_crate(&report, &c.root);
    if crates.is_empty() {
        return Err("the coverage report names no crate sources".into());
    }
    let (t, overall) = table(&crates);
    println!("{t}");
    std::fs::write(out_dir.join("coverage.md"), &t).map_err(|e| e.to_string())?;
    tests?;
    python?;
    if overall < min {
        return Err(format!(
            "line coverage {overall:.1}% is below the required {min:.1}%"
        ));
    }
    Ok(Outcome::PassedWithNote(format!(
        "line coverage {overall:.1}% (required: {min:.1}%)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_minimum() {
        assert_eq!(parse_min(&[]), Ok(0.0));
        assert_eq!(parse_min(&["--min", "90"]), Ok(90.0));
        assert!(parse_min(&["--min", "101"]).is_err());
        assert!(parse_min(&["--min"]).is_err());
        assert!(parse_min(&["90"]).is_err());
    }

    #[test]
    fn reads_the_environment_show_env_prints() {
        let shown = "RUSTFLAGS='-C instrument-coverage --cfg=coverage'\n\
                     export LLVM_PROFILE_FILE=\"/r/target/mesh-%p-%m.profraw\"\n\
                     CARGO_LLVM_COV=1\n\
                     QUOTED='it'\\''s'\n\
                     \n\
                     =nokey\n\
                     not an assignment\n";
        assert_eq!(
            parse_env(shown),
            vec![
                (
                    "RUSTFLAGS".into(),
                    "-C instrument-coverage --cfg=coverage".into()
                ),
                (
                    "LLVM_PROFILE_FILE".into(),
                    "/r/target/mesh-%p-%m.profraw".into()
                ),
                ("CARGO_LLVM_COV".into(), "1".into()),
                ("QUOTED".into(), "it's".into()),
            ]
        );
    }

    #[test]
    fn counts_crate_sources_only_and_totals_them() {
        let report = serde_json::json!({"data": [{"files": [
            {"filename": "/r/crates/mesh-dht/src/node.rs", "summary": {"lines": {"covered": 90, "count": 100}}},
            {"filename": "/r/crates/mesh-dht/src/key.rs", "summary": {"lines": {"covered": 10, "count": 10}}},
            {"filename": "/r/backends/redb/src/lib.rs", "summary": {"lines": {"covered": 1, "count": 4}}},
            {"filename": "/r/crates/mesh-dht/tests/sim.rs", "summary": {"lines": {"covered": 5, "count": 5}}},
            {"filename": "/r/xtask/src/main.rs", "summary": {"lines": {"covered": 0, "count": 50}}},
            {"filename": "/r/crates/mesh-ffi/bindgen/src/main.rs", "summary": {"lines": {"covered": 0, "count": 3}}},
            {"filename": "/home/.cargo/registry/src/x/lib.rs", "summary": {"lines": {"covered": 0, "count": 9}}}
        ]}]});
        let crates = per_crate(&report, Path::new("/r"));
        assert_eq!(crates.len(), 2, "{crates:?}");
        assert_eq!(crates["crates/mesh-dht"], (100, 110));
        assert_eq!(crates["backends/redb"], (1, 4));
        let (t, overall) = table(&crates);
        assert!((overall - 101.0 * 100.0 / 114.0).abs() < 1e-9);
        assert!(t.contains("| crates/mesh-dht | 110 | 100 | 90.9% |"), "{t}");
        assert!(t.contains("| **all** | 114 | 101 | **88.6%** |"), "{t}");
    }
}
