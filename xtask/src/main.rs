//! Project automation, run as `cargo xtask <command>` (see `.cargo/config.toml`).
//!
//! - `ci`: installs what is missing, then runs every check the project has and prints a summary.
//! - `setup`: only the installs of `ci`.
//! - `test-wasm`: the browser tests in headless Chromium.
//! - `web`: the browser package (`target/web/pkg`), with its size.
//! - `e2e`: the package, then the browser node against `meshd` processes in headless Chromium.
//! - `bindings`: mesh-ffi's Kotlin, Swift and Python bindings (reproducible, the committed ones
//!   current), and the Python tests that drive the library through them.
//! - `interop`: libsodium (PyNaCl) against mesh-crypto, both directions; aiortc against the
//!   native WebRTC link.
//! - `bench SUITE [--quick]`: a benchmark suite and its same-run baseline, with ratios.
//! - `bench --compare [--record] [SUITE ...]`: every suite's ratios against the recorded ones
//!   (`benches/recorded.json`), flagging regressions over 10%.
//! - `bench --instructions [--record]`: CPU instructions per operation under callgrind against
//!   the recorded counts (`benches/instructions.json`), flagging growth over 10% (a CI step).
//! - `coverage [--min PERCENT]`: line coverage of the native tests per crate (cargo-llvm-cov).
//! - `fuzz [--time S] [--no-merge] [--dev] [TARGET ...]`: every libFuzzer target for S seconds, with a
//!   report of executions and findings per target.
//! - `sim dht | gossip | gossip-scale | scale [...]`: the simulations (release build); `sim scale`
//!   prints the tables of docs/SCALE.md.
//! - `vectors`: regenerates the committed test vectors (crypto, platform, DHT and gossip) after
//!   an intentional format change.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod coverage;
mod ffi;
mod fuzz;
mod instructions;
mod placeholders;
mod steps;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use steps::{Ci, Outcome};

const USAGE: &str =
    "usage: cargo xtask <ci | setup | test-wasm | web | e2e | bindings | interop | bench SUITE [--quick] | bench --compare [--record] [SUITE..] | bench --instructions [--record] | fuzz [--time S] [--no-merge] [--dev] [TARGET..] | coverage [--min P] | sim dht|gossip|gossip-scale|scale [FLAGS] | vectors>
  ci          install what is missing, run every check, print a summary (the CI entry point)
  setup       only install: wasm32 target, chromium + chromedriver, wasm-bindgen-cli, cargo-deny, promtool,
              the Python venv with PyNaCl and aiortc, the offline advisory database
  test-wasm   browser tests (wasm-bindgen-test in headless Chromium)
  web         the browser package (mesh-web through wasm-bindgen into target/web/pkg), with its size
  e2e         the package, then meshd serving it to headless Chromium (browser <-> native, files, reload)
  bindings    mesh-ffi's Kotlin, Swift and Python bindings (uniffi-bindgen of the locked UniFFI version):
              generated twice and compared, the committed Kotlin/Swift checked (CI) or updated, then the
              Python tests driving the library
  interop     libsodium (PyNaCl) checks our vectors; our code opens libsodium's envelopes; aiortc
              speaks the native WebRTC link
  bench       benchmark suites with same-run baselines: blob | crypto | storage | transport | dht | latency
  bench --compare
              run the suites (all, or those named) and compare each ours/baseline ratio with
              benches/recorded.json: a ratio over 10% higher is a regression (confirmed by a second run);
              --record stores this run's ratios instead
  bench --instructions
              count the CPU instructions of each operation of `mesh-bench count` under valgrind's
              callgrind (installs valgrind; dev build) and compare with benches/instructions.json: a
              count over 10% higher is a regression (counts do not depend on the machine's load);
              --record stores this run's counts instead
  coverage    the native tests and mesh-ffi's Python tests under cargo-llvm-cov (installs llvm-tools and
              cargo-llvm-cov): line coverage per crate in target/xtask/coverage.md, HTML in
              target/llvm-cov-target/llvm-cov/html; fails below --min (default 0)
  fuzz        build the libFuzzer targets (fuzz/libfuzzer, cargo fuzz) and run each for --time S seconds
              (default 60) from its committed corpus, crash reproducers and fresh seeds; crashes are saved to
              fuzz/regressions/ (replayed by cargo test) and fail the run; new coverage is merged into
              fuzz/corpus/ unless --no-merge; prints executions and findings per target; --dev builds with the
              dev profile (faster build, slower runs: the CI smoke)
  sim dht     the DHT in the deterministic simulator: --nodes N --lookups L --records R
              --churn PERCENT --loss PER_MILLE --settle SECS --seed S (release build; prints lookup success,
              hops, messages per lookup, records found after churn, memory per node); timed phases with
              --steady --live-churn PERCENT --away SECS --partition SECS --window SECS
  sim gossip-scale
              gossip in the simulator: --nodes N --messages M --loss PER_MILLE --churn PERCENT --partition SECS
              (push reach, delivery, latency, bytes/node/min, memory/node)
  sim scale   the matrix of docs/SCALE.md: --nodes 10000,100000 [--only dht|gossip], markdown tables
  vectors     regenerate the committed test vectors (crypto, platform, DHT and gossip)";

#[allow(clippy::too_many_lines)] // one arm per command
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    let mut ci = Ci::new(root);
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["ci"] => {
            ci.setup_all();
            ci.checks();
        }
        ["setup"] => ci.setup_all(),
        ["test-wasm"] => {
            ci.setup_wasm();
            ci.test_wasm();
        }
        ["web"] => {
            ci.setup_wasm();
            ci.step(
                "web: browser package (wasm-bindgen, size)",
                crate::web::build_package,
            );
        }
        ["e2e"] => {
            ci.setup_wasm();
            ci.web();
        }
        ["bindings"] => {
            ci.setup_python();
            ci.bindings();
        }
        ["interop"] => {
            ci.setup_python();
            ci.interop();
        }
        ["bench", "--instructions", rest @ ..] => {
            let record = match rest {
                [] => false,
                ["--record"] => true,
                _ => {
                    eprintln!("unknown arguments {rest:?}\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            ci.setup_step(instructions::VALGRIND, instructions::setup);
            ci.step("bench --instructions (callgrind)", |c| {
                instructions::run(c, record)
            });
        }
        ["bench", "--compare", rest @ ..] => {
            let suites = match bench::parse_suites(rest) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            let record = rest.contains(&"--record");
            ci.setup_python();
            ci.step("bench --compare", |c| {
                bench::compare_recorded(c, &suites, record)
            });
        }
        ["coverage", rest @ ..] => {
            let min = match coverage::parse_min(rest) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("{e}\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            ci.setup_python();
            ci.step("install llvm-tools + cargo-llvm-cov", coverage::setup);
            ci.step("coverage (native tests, cargo-llvm-cov)", |c| {
                coverage::run(c, min)
            });
        }
        ["fuzz", rest @ ..] => {
            let options = match fuzz::Options::parse(rest) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("{e}\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            ci.step("install cargo-fuzz", fuzz::setup);
            ci.step(&format!("fuzz ({} s per target)", options.seconds), |c| {
                fuzz::run(c, &options)
            });
        }
        ["bench", suite, rest @ ..] => {
            ci.setup_python();
            let quick = rest.contains(&"--quick");
            let s = (*suite).to_string();
            ci.step(&format!("bench {s}"), |c| {
                bench::run(c, &s, !quick, quick).map(|()| Outcome::Passed)
            });
        }
        ["sim", rest @ ..] => {
            let mut args = vec![
                "run",
                "--locked",
                "--release",
                "-p",
                "mesh-sim",
                "--bin",
                "mesh-sim",
                "--",
            ];
            args.extend_from_slice(rest);
            ci.step(&format!("sim {}", rest.join(" ")), |c| c.cargo(&args, &[]));
        }
        ["vectors"] => {
            ci.step("regenerate vectors", |c| {
                c.cargo(
                    &[
                        "test",
                        "--locked",
                        "-p",
                        "mesh-tests",
                        "--test",
                        "crypto_vectors",
                        "--test",
                        "platform_vectors",
                        "--test",
                        "protocol_vectors",
                    ],
                    &[("MESH_BLESS_VECTORS", "1")],
                )
            });
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    ci.summary()
}
