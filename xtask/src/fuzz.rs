//! `cargo xtask fuzz [--time S] [--no-merge] [--dev] [TARGET ...]`: every libFuzzer target for `S`
//! seconds each, from its committed corpus, its crash reproducers and fresh seeds.
//!
//! - Build: `cargo fuzz build` of `fuzz/libfuzzer` (stable toolchain with
//!   `RUSTC_BOOTSTRAP=1`, so that the same command also works with a sanitizer, whose flags are
//!   unstable; no sanitizer here: the project forbids
//!   `unsafe`, so what the fuzzer can find is panics, overflows, runaway allocation and hangs,
//!   which the release build with debug assertions and overflow checks catches), into
//!   `target/fuzz`.
//! - Run: each target works on a copy of its corpus in `target/fuzz/corpus/<target>`; a crash's
//!   input is copied to `fuzz/regressions/<target>/`, where `fuzz/tests/corpus.rs` replays it on
//!   every `cargo test` from then on, and the step fails.
//! - Merge (unless `--no-merge`): inputs that reached new coverage are merged into the committed
//!   corpus `fuzz/corpus/<target>/` (libFuzzer's `-merge=1`: only what adds coverage).
//! - Report: executions, executions per second, coverage, corpus size and findings per target.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::steps::{Ci, Outcome};

/// cargo-fuzz release the build uses (pinned like the other tools).
pub(crate) const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Largest input the fuzzer makes: past every decoder's interesting lengths, small enough to
/// keep executions fast (a few bigger frames are in the seeds).
const MAX_LEN: &str = "-max_len=70000";

/// What one target's run did.
struct Run {
    name: String,
    execs: u64,
    seconds: u64,
    cov: u64,
    corpus: usize,
    merged: usize,
    finding: Option<String>,
}

/// Options of `cargo xtask fuzz`.
pub(crate) struct Options {
    pub(crate) seconds: u64,
    pub(crate) merge: bool,
    /// Build with the dev profile: about half the build time of the release profile and
    /// several times fewer executions per second, enough for a smoke run.
    pub(crate) dev: bool,
    pub(crate) only: Vec<String>,
}

impl Options {
    pub(crate) fn parse(args: &[&str]) -> Result<Self, String> {
        let mut o = Self {
            seconds: 60,
            merge: true,
            dev: false,
            only: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match *a {
                "--time" => {
                    let v = it.next().ok_or("--time needs seconds")?;
                    o.seconds = v.parse().map_err(|e| format!("--time {v}: {e}"))?;
                    if o.seconds == 0 {
                        return Err("--time must be at least 1".into());
                    }
                }
                "--no-merge" => o.merge = false,
                "--dev" => o.dev = true,
                t if !t.starts_with('-') => o.only.push(t.to_string()),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(o)
    }
}

pub(crate) fn setup(c: &mut Ci) -> Result<Outcome, String> {
    c.cargo_tool("cargo-fuzz", "fuzz", CARGO_FUZZ_VERSION)
}

fn names_from_manifest(root: &Path) -> Result<Vec<String>, String> {
    let manifest = std::fs::read_to_string(root.join("fuzz/libfuzzer/Cargo.toml"))
        .map_err(|e| format!("fuzz/libfuzzer/Cargo.toml: {e}"))?;
    Ok(manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "mesh-fuzz-libfuzzer")
        .map(str::to_string)
        .collect())
}

fn copy_dir(from: &Path, to: &Path) -> Result<usize, String> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.is_file() {
            let name = p.file_name().ok_or("file without a name")?;
            std::fs::copy(&p, to.join(name)).map_err(|e| format!("{}: {e}", p.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.filter_map(Result::ok).count())
}

/// `stat::number_of_executed_units: 12345` and the last `cov: N` of libFuzzer's output.
fn parse_stats(log: &str) -> (u64, u64) {
    let execs = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let cov = log
        .lines()
        .rev()
        .find_map(|l| l.split_once(" cov: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (execs, cov)
}

/// The input libFuzzer saved for a crash, leak or timeout.
fn artifact(log: &str) -> Option<PathBuf> {
    log.lines()
        .find_map(|l| l.split_once("Test unit written to "))
        .map(|(_, p)| PathBuf::from(p.trim()))
}

fn run_one(root: &Path, bins: &Path, work: &Path, name: &str, o: &Options) -> Result<Run, String> {
    let bin = bins.join(name);
    let corpus = work.join("corpus").join(name);
    let artifacts = work.join("artifacts").join(name);
    std::fs::create_dir_all(&artifacts).map_err(|e| e.to_string())?;
    copy_dir(&root.join("fuzz/corpus").join(name), &corpus)?;
    copy_dir(&root.join("fuzz/regressions").join(name), &corpus)?;
    let out = Command::new(&bin)
        .arg(&corpus)
        .arg(format!("-max_total_time={}", o.seconds))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args([
            MAX_LEN,
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::write(work.join(format!("{name}.log")), &log).map_err(|e| e.to_string())?;
    let (execs, cov) = parse_stats(&log);
    let mut finding = None;
    if !out.status.success() {
        let kind = log
            .lines()
            .find(|l| l.contains("ERROR: libFuzzer") || l.contains("panicked at"))
            .unwrap_or("libFuzzer exited with an error")
            .trim()
            .to_string();
        if let Some(input) = artifact(&log) {
            let dest_dir = root.join("fuzz/regressions").join(name);
            std::fs::create_dir_all(&dest_dir).map_err(|e| e.to_string())?;
            let file = input.file_name().ok_or("artifact without a name")?;
            let dest = dest_dir.join(file);
            std::fs::copy(&input, &dest).map_err(|e| e.to_string())?;
            finding = Some(format!("{kind}; input saved to {}", dest.display()));
        } else {
            finding = Some(kind);
        }
    }
    let mut merged = 0;
    if o.merge && finding.is_none() {
        let committed = root.join("fuzz/corpus").join(name);
        std::fs::create_dir_all(&committed).map_err(|e| e.to_string())?;
        let before = count_files(&committed);
        let status = Command::new(&bin)
            .arg("-merge=1")
            .arg(&committed)
            .arg(&corpus)
            .arg(MAX_LEN)
            .current_dir(root)
            .output()
            .map_err(|e| e.to_string())?;
        if !status.status.success() {
            return Err(format!("{name}: merging into the committed corpus failed"));
        }
        merged = count_files(&committed).saturating_sub(before);
    }
    Ok(Run {
        name: name.to_string(),
        execs,
        seconds: o.seconds,
        cov,
        corpus: count_files(&corpus),
        merged,
        finding,
    })
}

/// Builds the targets, runs them, prints the report; fails on any finding.
pub(crate) fn run(c: &mut Ci, o: &Options) -> Result<Outcome, String> {
    let root = c.root.clone();
    let target_dir = c.target_dir().join("fuzz");
    let target_dir_s = target_dir.to_string_lossy().into_owned();
    let mut names = names_from_manifest(&root)?;
    if !o.only.is_empty() {
        if let Some(bad) = o.only.iter().find(|t| !names.contains(t)) {
            return Err(format!(
                "no fuzz target {bad} (targets: {})",
                names.join(", ")
            ));
        }
        names.retain(|n| o.only.contains(n));
    }
    let envs = [
        ("RUSTC_BOOTSTRAP", "1"),
        ("CARGO_TARGET_DIR", target_dir_s.as_str()),
    ];
    let mut build = vec![
        "fuzz",
        "build",
        "--fuzz-dir",
        "fuzz/libfuzzer",
        "--sanitizer",
        "none",
    ];
    if o.dev {
        build.push("--dev");
    }
    c.cargo(&build, &envs)?;
    let work = target_dir.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| e.to_string())?;
    }
    // Fresh seeds from the real encoders (built in the shared target dir, debug).
    let corpora = work.join("corpus");
    let corpora_s = corpora.to_string_lossy().into_owned();
    c.cargo(
        &[
            "run",
            "--locked",
            "-q",
            "-p",
            "mesh-fuzz",
            "--bin",
            "mesh-fuzz-seeds",
            "--",
            &corpora_s,
        ],
        &[],
    )?;
    // cargo fuzz builds for the host triple explicitly, so the binaries sit under it.
    let host = crate::steps::tool_version("rustc", &["-vV"])
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("host: "))
                .map(str::to_string)
        })
        .ok_or("cannot read the host triple from rustc -vV")?;
    let bins = target_dir
        .join(host)
        .join(if o.dev { "debug" } else { "release" });
    let mut runs = Vec::new();
    for name in &names {
        eprintln!("    fuzzing {name} for {} s", o.seconds);
        runs.push(run_one(&root, &bins, &work, name, o)?);
    }
    let mut table = String::from(
        "| target | executions | per second | coverage (edges) | corpus | merged | findings |\n|---|---:|---:|---:|---:|---:|---|\n",
    );
    let mut findings = Vec::new();
    for r in &runs {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.execs,
            r.execs / r.seconds.max(1),
            r.cov,
            r.corpus,
            r.merged,
            r.finding.as_deref().unwrap_or("none")
        );
        if let Some(f) = &r.finding {
            findings.push(format!("{}: {f}", r.name));
        }
    }
    println!("{table}");
    let total: u64 = runs.iter().map(|r| r.execs).sum();
    if findings.is_empty() {
        Ok(Outcome::PassedWithNote(format!(
            "{} targets, {} s each, {total} executions, no findings",
            runs.len(),
            o.seconds
        )))
    } else {
        Err(format!(
            "{} finding(s): {}",
            findings.len(),
            findings.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_statistics_and_artifacts() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 2/40b\n#4096\tpulse  cov: 120 ft: 300\n\
                   #9000\tDONE   cov: 133 ft: 400 corp: 30/2Kb\nDone 9000 runs in 3 second(s)\n\
                   stat::number_of_executed_units: 9000\nstat::peak_rss_mb: 40\n";
        assert_eq!(parse_stats(log), (9000, 133));
        assert_eq!(parse_stats("garbage"), (0, 0));
        let crash = "==1== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='a/'; Test unit written to a/crash-123\n";
        assert_eq!(artifact(crash), Some(PathBuf::from("a/crash-123")));
        assert_eq!(artifact(log), None);
    }

    #[test]
    fn parses_options() {
        let o = Options::parse(&["--time", "5", "--no-merge", "--dev", "invite"]).expect("parses");
        assert_eq!(
            (o.seconds, o.merge, o.dev, o.only),
            (5, false, true, vec!["invite".to_string()])
        );
        assert!(Options::parse(&["--time", "0"]).is_err());
        assert!(Options::parse(&["--time"]).is_err());
        assert!(Options::parse(&["--fast"]).is_err());
        let defaults = Options::parse(&[]).expect("defaults");
        assert_eq!(
            (defaults.seconds, defaults.merge, defaults.dev),
            (60, true, false)
        );
    }
}
