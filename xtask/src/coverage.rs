//! `cargo xtask coverage [--min PERCENT]`: line coverage of the native test suite with
//! cargo-llvm-cov (source-based, LLVM's instrumentation), as a table per crate.
//!
//! What runs instrumented: `cargo test --workspace --all-features`, the processes those tests
//! start (`meshd`, `mesh-sim`; a process killed by SIGKILL writes no profile), and the Python
//! tests of `mesh-ffi` against its instrumented library (the C ABI of the mobile bindings).
//!
//! Counted: the library and binary sources of every crate and backend (`crates/*/src`,
//! `backends/*/src`), less their `#[cfg(test)]` modules. Not counted: test code itself (unit
//! test modules in `src` and `tests/`), benchmarks, the `xtask`, the fuzz harnesses and the
//! `UniFFI` generator (tools, not product code). Code that only runs in the browser
//! (`cfg(target_arch = "wasm32")`) is not compiled natively and so not in the denominator; the
//! headless-Chromium tests cover it (`cargo xtask test-wasm`).
//!
//! The report lands in `target/xtask/coverage.md` and `target/llvm-cov-target/llvm-cov/html/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

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

/// Per source file of an LCOV report (`SF:` ... `end_of_record`): its path and each
/// instrumented line with its execution count (`DA:line,count`).
fn parse_lcov(text: &str) -> Vec<(String, Vec<(usize, u64)>)> {
    let mut files: Vec<(String, Vec<(usize, u64)>)> = Vec::new();
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("SF:") {
            files.push((path.to_string(), Vec::new()));
        } else if let Some(da) = line.strip_prefix("DA:") {
            let mut fields = da.split(',');
            let (Some(n), Some(count)) = (fields.next(), fields.next()) else {
                continue;
            };
            if let (Ok(n), Ok(count), Some(file)) = (n.parse(), count.parse(), files.last_mut()) {
                file.1.push((n, count));
            }
        }
    }
    files
}

/// The 1-based line ranges of `#[cfg(test)]` modules in `src` (rustfmt-formatted: from the
/// attribute to the `}` at the `mod` line's indentation): unit tests, not product code.
fn test_modules(src: &str) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = src.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "#[cfg(test)]" {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < lines.len() && lines[j].trim_start().starts_with("#[") {
            j += 1;
        }
        let is_mod = lines.get(j).is_some_and(|l| {
            let t = l.trim_start();
            let t = t
                .strip_prefix("pub(crate) ")
                .or_else(|| t.strip_prefix("pub "))
                .unwrap_or(t);
            t.starts_with("mod ") && t.trim_end().ends_with('{')
        });
        if !is_mod {
            i = j;
            continue;
        }
        let at = indent(lines[j]);
        let end = (j + 1..lines.len())
            .find(|&k| indent(lines[k]) == at && lines[k].trim_start().starts_with('}'))
            .unwrap_or(lines.len() - 1);
        out.push((i + 1, end + 1));
        i = end + 1;
    }
    out
}

/// Lines (covered, total) per crate directory (`crates/x`, `backends/x`), product code only:
/// the sources under `src/` of every crate and backend, less their `#[cfg(test)]` modules.
/// `source` reads a file of the report (for its test modules).
fn per_crate(
    files: &[(String, Vec<(usize, u64)>)],
    root: &Path,
    source: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, (u64, u64)> {
    let root = root.to_string_lossy();
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (name, lines) in files {
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
        let tests = source(name).map(|s| test_modules(&s)).unwrap_or_default();
        let e = out.entry(format!("{}/{}", parts[0], parts[1])).or_default();
        for (n, count) in lines {
            if tests.iter().any(|&(a, b)| (a..=b).contains(n)) {
                continue;
            }
            e.1 += 1;
            if *count > 0 {
                e.0 += 1;
            }
        }
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
    let lcov = out_dir.join("coverage.lcov");
    let lcov_s = lcov.to_string_lossy().into_owned();
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
        &["llvm-cov", "report", "--lcov", "--output-path", &lcov_s],
        &envs,
    )?;
    c.cargo(&["llvm-cov", "report", "--html"], &envs)?;
    let report = std::fs::read_to_string(&lcov).map_err(|e| format!("{}: {e}", lcov.display()))?;
    let crates = per_crate(&parse_lcov(&report), &c.root, |f| {
        std::fs::read_to_string(f).ok()
    });
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

    /// An LCOV record of `path` with `covered` of `count` lines (lines 1..=count) executed.
    fn record(path: &str, covered: usize, count: usize) -> String {
        let mut r = format!("SF:{path}\n");
        for n in 1..=count {
            let _ = writeln!(r, "DA:{n},{}", u64::from(n <= covered) * 3);
        }
        let _ = write!(r, "LF:{count}\nLH:{covered}\nend_of_record\n");
        r
    }

    #[test]
    fn reads_lcov_line_counts() {
        let files = parse_lcov(
            "TN:\nSF:/r/a.rs\nFN:1,f\nDA:1,5\nDA:2,0\nDA:bad\nend_of_record\nSF:/r/b.rs\nDA:7,1\n",
        );
        assert_eq!(
            files,
            vec![
                ("/r/a.rs".to_string(), vec![(1, 5), (2, 0)]),
                ("/r/b.rs".to_string(), vec![(7, 1)])
            ]
        );
    }

    #[test]
    fn finds_unit_test_modules_but_not_other_cfg_test_items() {
        let src = "fn a() {}\n\
                   #[cfg(test)]\n\
                   fn helper() {}\n\
                   #[cfg(test)]\n\
                   #[allow(clippy::unwrap_used)]\n\
                   mod tests {\n    \
                       #[test]\n    \
                       fn t() {\n    \
                       }\n\
                   }\n\
                   pub mod product {\n    \
                       #[cfg(test)]\n    \
                       mod inner {\n    \
                       }\n\
                   }\n";
        assert_eq!(test_modules(src), vec![(4, 10), (12, 14)]);
        assert_eq!(test_modules("fn a() {}\n"), vec![]);
    }

    #[test]
    fn counts_product_sources_only_and_totals_them() {
        let mut lcov = String::new();
        lcov.push_str(&record("/r/crates/mesh-dht/src/node.rs", 90, 100));
        lcov.push_str(&record("/r/crates/mesh-dht/src/key.rs", 10, 10));
        lcov.push_str(&record("/r/backends/redb/src/lib.rs", 1, 4));
        lcov.push_str(&record("/r/crates/mesh-dht/tests/sim.rs", 5, 5));
        lcov.push_str(&record("/r/xtask/src/main.rs", 0, 50));
        lcov.push_str(&record("/r/crates/mesh-ffi/bindgen/src/main.rs", 0, 3));
        lcov.push_str(&record("/home/.cargo/registry/src/x/lib.rs", 0, 9));
        // key.rs: lines 6 to 10 are its unit tests, and do not count.
        let source = |f: &str| {
            (f == "/r/crates/mesh-dht/src/key.rs")
                .then(|| "a\nb\nc\nd\ne\n#[cfg(test)]\nmod tests {\n    x\n    y\n}\n".to_string())
        };
        let crates = per_crate(&parse_lcov(&lcov), Path::new("/r"), source);
        assert_eq!(crates.len(), 2, "{crates:?}");
        assert_eq!(crates["crates/mesh-dht"], (95, 105));
        assert_eq!(crates["backends/redb"], (1, 4));
        let (t, overall) = table(&crates);
        assert!((overall - 96.0 * 100.0 / 109.0).abs() < 1e-9);
        assert!(t.contains("| crates/mesh-dht | 105 | 95 | 90.5% |"), "{t}");
        assert!(t.contains("| **all** | 109 | 96 | **88.1%** |"), "{t}");
    }
}
