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
//! - `sim dht --nodes N [...]`: the DHT simulation at scale (release build), with its report.
//! - `vectors`: regenerates the committed test vectors (crypto, platform, DHT and gossip) after
//!   an intentional format change.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod ffi;
mod placeholders;
mod steps;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use steps::{Ci, Outcome};

const USAGE: &str =
    "usage: cargo xtask <ci | setup | test-wasm | web | e2e | bindings | interop | bench SUITE [--quick] | sim dht [FLAGS] | vectors>
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
  sim dht     the DHT in the deterministic simulator: --nodes N --lookups L --records R
              --churn PERCENT --loss PER_MILLE --settle SECS --seed S (release build; prints lookup success,
              hops, messages per lookup, records found after churn, memory per node)
  vectors     regenerate the committed test vectors (crypto, platform, DHT and gossip)";

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
