//! Steps of `cargo xtask ci`: each is timed, reported, and never skipped silently.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// cargo-deny release the CI installs (pinned: its config format and checks change).
const CARGO_DENY_VERSION: &str = "0.20.2";
/// Directory name cargo-deny expects for the default RustSec database URL.
const ADVISORY_DB_DIR: &str = "advisory-db-3157b0e258782691";
/// Library crates that must build for wasm32 (clippy runs on them for that target).
const WASM_CRATES: &[&str] = &[
    "mesh-crypto",
    "mesh-platform",
    "mesh-transport",
    "mesh-store-memory",
    "mesh-store-indexeddb",
    "mesh-transport-webrtc",
    "mesh-dht",
    "mesh-gossip",
    "mesh-blob",
    "mesh-recovery",
    "mesh-node",
    "mesh-web",
];
/// Browser test targets: (package, its integration tests).
const WASM_TESTS: &[(&str, &[&str])] = &[
    ("mesh-crypto", &["web"]),
    ("mesh-platform", &["web"]),
    // The KvStore conformance suite and the blob store's, on IndexedDB.
    ("mesh-store-indexeddb", &["web", "blob"]),
    // The browser node's JavaScript API: sealed identities, refused input, files, closing.
    ("mesh-web", &["web"]),
];
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Setup step for the native build's system libraries: D-Bus for btleplug (BLE on Linux).
const NATIVE_PACKAGES: &str = "apt libdbus-1-dev + pkg-config";
const PROMTOOL_PACKAGE: &str = "apt prometheus (promtool)";
const CARGO_FUZZ: &str = "install cargo-fuzz";
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// Setup step of the Python test peers: PyNaCl (libsodium) and aiortc (WebRTC).
const PYTHON_VENV: &str = "python venv (PyNaCl, aiortc)";
/// The browser package's size budget, gzipped (the original project's, for its whole app).
pub(crate) const WEB_BUDGET_GZIP: u64 = 250 * 1024;

/// How a step ended.
pub(crate) enum Outcome {
    Passed,
    /// Passed, with something the reader must know (e.g. what was not checked and why).
    PassedWithNote(String),
}

struct StepResult {
    name: String,
    result: Result<Outcome, String>,
    elapsed: Duration,
    tests: Counts,
    /// Tests that failed in this step, each with where and why it panicked.
    failures: Vec<String>,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct Counts {
    passed: u64,
    failed: u64,
}

/// Runs steps and remembers how each went.
pub(crate) struct Ci {
    pub(crate) root: PathBuf,
    results: Vec<StepResult>,
    current: Counts,
    failures: Failures,
    failed_setup: Vec<String>,
}

impl Ci {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            results: Vec::new(),
            current: Counts::default(),
            failures: Failures::default(),
            failed_setup: Vec::new(),
        }
    }

    pub(crate) fn target_dir(&self) -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| self.root.join("target"), PathBuf::from)
    }

    pub(crate) fn venv_python(&self) -> PathBuf {
        self.target_dir().join("xtask/venv/bin/python")
    }

    /// Runs one step, timing it and recording its result.
    pub(crate) fn step(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<Outcome, String>,
    ) -> bool {
        eprintln!("\n==> {name}");
        self.current = Counts::default();
        self.failures = Failures::default();
        let start = Instant::now();
        let result = f(self);
        let elapsed = start.elapsed();
        let ok = result.is_ok();
        if let Err(e) = &result {
            eprintln!("==> {name}: FAILED: {e}");
        }
        self.results.push(StepResult {
            name: name.to_string(),
            result,
            elapsed,
            tests: self.current,
            failures: std::mem::take(&mut self.failures).into_lines(),
        });
        ok
    }

    /// A step that needs the setup steps `needs`: if one failed, it is reported as not run.
    fn step_needing(
        &mut self,
        name: &str,
        needs: &[&str],
        f: impl FnOnce(&mut Self) -> Result<Outcome, String>,
    ) {
        let missing: Vec<String> = needs
            .iter()
            .filter(|n| self.failed_setup.iter().any(|f| f == *n))
            .map(|n| (*n).to_string())
            .collect();
        if missing.is_empty() {
            self.step(name, f);
        } else {
            let why = format!("not run: setup failed ({})", missing.join(", "));
            self.step(name, |_| Err(why));
        }
    }

    /// Whether the step `name` ran and passed.
    fn last_passed(&self, name: &str) -> bool {
        self.results
            .iter()
            .rev()
            .find(|r| r.name == name)
            .is_some_and(|r| r.result.is_ok())
    }

    pub(crate) fn setup_step(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<Outcome, String>,
    ) {
        if !self.step(name, f) {
            self.failed_setup.push(name.to_string());
        }
    }

    /// Runs `program args` in the repository root, streaming its output and counting tests.
    pub(crate) fn run(
        &mut self,
        program: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Outcome, String> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.root)
            .stdout(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let shown = Path::new(program)
            .file_name()
            .map_or(program.into(), |n| n.to_string_lossy());
        eprintln!("    $ {shown} {}", args.join(" "));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                if let Some((p, f)) = parse_test_result(&line) {
                    self.current.passed += p;
                    self.current.failed += f;
                }
                self.failures.read(&line);
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(Outcome::Passed)
        } else {
            Err(format!(
                "`{program} {}` exited with {status}",
                args.join(" ")
            ))
        }
    }

    pub(crate) fn cargo(
        &mut self,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Outcome, String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        self.run(&cargo, args, envs)
    }

    // ---------------------------------------------------------------- setup

    /// Installs `krate` at `version` with `cargo install`, unless `cargo subcommand --version`
    /// already reports that version.
    pub(crate) fn cargo_tool(
        &mut self,
        krate: &str,
        subcommand: &str,
        version: &str,
    ) -> Result<Outcome, String> {
        if tool_version("cargo", &[subcommand, "--version"]).is_some_and(|v| v.contains(version)) {
            return Ok(Outcome::PassedWithNote(format!(
                "{krate} {version} already installed"
            )));
        }
        self.cargo(&["install", krate, "--version", version], &[])
    }

    /// Installs Debian packages (as root, non-interactive, no recommends).
    pub(crate) fn apt_install(&mut self, packages: &[&str]) -> Result<Outcome, String> {
        let env = [("DEBIAN_FRONTEND", "noninteractive")];
        self.run("apt-get", &["update", "-q"], &env)?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend_from_slice(packages);
        self.run("apt-get", &args, &env)
    }

    pub(crate) fn setup_all(&mut self) {
        self.setup_step(NATIVE_PACKAGES, |c| {
            let present = Command::new("pkg-config")
                .args(["--exists", "dbus-1"])
                .status()
                .is_ok_and(|s| s.success());
            if present {
                return Ok(Outcome::PassedWithNote("present".into()));
            }
            c.apt_install(&["libdbus-1-dev", "pkg-config"])
        });
        self.setup_wasm();
        self.setup_step("install cargo-deny", |c| {
            if tool_version("cargo-deny", &["--version"])
                .is_some_and(|v| v.contains(CARGO_DENY_VERSION))
            {
                return Ok(Outcome::PassedWithNote(format!(
                    "cargo-deny {CARGO_DENY_VERSION} already installed"
                )));
            }
            c.cargo(
                &[
                    "install",
                    "--locked",
                    "cargo-deny",
                    "--version",
                    CARGO_DENY_VERSION,
                ],
                &[],
            )
        });
        self.setup_python();
        self.setup_step(PROMTOOL_PACKAGE, |c| {
            if let Some(v) = tool_version("promtool", &["--version"]) {
                let v = v.lines().next().unwrap_or_default().to_string();
                return Ok(Outcome::PassedWithNote(format!("present: {v}")));
            }
            c.apt_install(&["prometheus"])
        });
        self.setup_step("advisory database", Self::advisory_db);
        self.setup_step(crate::instructions::VALGRIND, crate::instructions::setup);
        self.setup_step(CARGO_FUZZ, |c| {
            // libfuzzer-sys compiles libFuzzer's C++ sources.
            if tool_version("c++", &["--version"]).is_none() {
                c.apt_install(&["g++"])?;
            }
            crate::fuzz::setup(c)
        });
    }

    /// The alert rules and scrape config parse, and the rules' unit tests pass. (That every
    /// metric they and the dashboards use exists is checked on live nodes by
    /// `crates/meshd/tests/processes.rs`.)
    fn monitoring(&mut self) {
        self.step_needing(
            "monitoring: promtool check + test rules",
            &[PROMTOOL_PACKAGE],
            |c| {
                // Relative to the workspace root, where steps run.
                let dir = "monitoring/prometheus";
                c.run(
                    "promtool",
                    &["check", "rules", &format!("{dir}/alerts.yml")],
                    &[],
                )?;
                c.run(
                    "promtool",
                    &["test", "rules", &format!("{dir}/alerts.test.yml")],
                    &[],
                )?;
                c.run(
                    "promtool",
                    &["check", "config", &format!("{dir}/prometheus.yml")],
                    &[],
                )
            },
        );
    }

    pub(crate) fn setup_wasm(&mut self) {
        self.setup_step("rustup target wasm32", |c| {
            let installed =
                tool_version("rustup", &["target", "list", "--installed"]).unwrap_or_default();
            if installed
                .lines()
                .any(|l| l.trim() == "wasm32-unknown-unknown")
            {
                return Ok(Outcome::PassedWithNote("already installed".into()));
            }
            c.run("rustup", &["target", "add", "wasm32-unknown-unknown"], &[])
        });
        self.setup_step("apt chromium + chromedriver", |c| {
            if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
                let v = tool_version(CHROMEDRIVER, &["--version"]).unwrap_or_default();
                let v: Vec<&str> = v.split_whitespace().take(2).collect();
                return Ok(Outcome::PassedWithNote(format!("present: {}", v.join(" "))));
            }
            c.apt_install(&["chromium", "chromium-driver"])
        });
        self.setup_step("install wasm-bindgen-cli", |c| {
            let want = locked_version(&c.root, "wasm-bindgen")
                .ok_or("wasm-bindgen is not in Cargo.lock")?;
            let have = tool_version("wasm-bindgen-test-runner", &["--version"]).unwrap_or_default();
            if have.split_whitespace().nth(1) == Some(want.as_str()) {
                return Ok(Outcome::PassedWithNote(format!(
                    "{want} (matches Cargo.lock)"
                )));
            }
            c.cargo(&["install", "wasm-bindgen-cli", "--version", &want], &[])
        });
    }

    pub(crate) fn setup_python(&mut self) {
        self.setup_step(PYTHON_VENV, |c| {
            let py = c.venv_python();
            let req = c.root.join("interop/python/requirements.txt");
            let req = req.to_string_lossy().into_owned();
            if !py.exists() {
                let dir = c.target_dir().join("xtask/venv");
                let dir = dir.to_string_lossy().into_owned();
                if c.run("python3", &["-m", "venv", &dir], &[]).is_err() {
                    // No Python on a bare machine, or Debian's python3 without its separately
                    // packaged venv: the shared apt helper (which updates the lists first).
                    c.apt_install(&["python3", "python3-venv"])?;
                    c.run("python3", &["-m", "venv", &dir], &[])?;
                }
            }
            let py = py.to_string_lossy().into_owned();
            c.run(
                &py,
                &[
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                    &req,
                ],
                &[],
            )?;
            let v = tool_version(
                &py,
                &[
                    "-c",
                    "import nacl, aiortc; print(nacl.__version__, aiortc.__version__)",
                ],
            )
            .ok_or("PyNaCl or aiortc does not import")?;
            let mut v = v.split_whitespace();
            Ok(Outcome::PassedWithNote(format!(
                "PyNaCl {}, aiortc {}",
                v.next().unwrap_or("?"),
                v.next().unwrap_or("?")
            )))
        });
    }

    fn advisory_db(&mut self) -> Result<Outcome, String> {
        let bundle = std::env::var_os("MESH_ADVISORY_DB_BUNDLE").map_or_else(
            || self.root.join("../shared/advisory-db.bundle"),
            PathBuf::from,
        );
        let dest = self.target_dir().join("advisory-db").join(ADVISORY_DB_DIR);
        if !bundle.exists() {
            return Ok(Outcome::PassedWithNote(format!(
                "no advisory database bundle at {}: `cargo deny` will check licenses, bans and sources only",
                bundle.display()
            )));
        }
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|e| e.to_string())?;
        }
        let (b, d) = (
            bundle.to_string_lossy().into_owned(),
            dest.to_string_lossy().into_owned(),
        );
        self.run("git", &["clone", "-q", "-b", "main", &b, &d], &[])?;
        let date =
            tool_version("git", &["-C", &d, "log", "-1", "--format=%cs"]).unwrap_or_default();
        Ok(Outcome::PassedWithNote(format!(
            "RustSec snapshot of {}",
            date.trim()
        )))
    }

    // ---------------------------------------------------------------- checks

    pub(crate) fn checks(&mut self) {
        self.step("fmt", |c| c.cargo(&["fmt", "--all", "--", "--check"], &[]));
        self.step("no placeholder keys, pins or signatures", |c| {
            crate::placeholders::check(&c.root)
        });
        self.step_needing("clippy (native)", &[NATIVE_PACKAGES], |c| {
            c.cargo(
                &[
                    "clippy",
                    "--locked",
                    "--workspace",
                    "--all-targets",
                    "--all-features",
                    "--",
                    "-D",
                    "warnings",
                ],
                &[],
            )
        });
        self.step_needing("clippy (wasm32)", &["rustup target wasm32"], |c| {
            // Libraries and their tests; examples and benches are native tools.
            let mut args = vec![
                "clippy",
                "--locked",
                "--target",
                "wasm32-unknown-unknown",
                "--lib",
                "--tests",
                "--all-features",
            ];
            for p in WASM_CRATES {
                args.extend(["-p", p]);
            }
            args.extend(["--", "-D", "warnings"]);
            c.cargo(&args, &[])
        });
        self.step_needing("test (native)", &[NATIVE_PACKAGES], |c| {
            // --no-fail-fast: every test binary runs, so the summary counts all failures.
            // MESH_REQUIRE_NETNS: the fault tests' network-namespace test must run here (it
            // only reports itself not run on a machine without root).
            c.cargo(
                &[
                    "test",
                    "--locked",
                    "--workspace",
                    "--all-features",
                    "--no-fail-fast",
                ],
                &[("MESH_REQUIRE_NETNS", "1")],
            )
        });
        // The README's first command, so that it keeps working (same features as the tests:
        // nothing is built twice).
        self.step_needing(
            "run: README demo (meshd demo: a local mesh over WebRTC)",
            &[NATIVE_PACKAGES],
            |c| {
                c.cargo(
                    &[
                        "run",
                        "--locked",
                        "--all-features",
                        "-p",
                        "meshd",
                        "--",
                        "demo",
                    ],
                    &[],
                )
            },
        );
        self.step_needing("rustdoc", &[NATIVE_PACKAGES], |c| {
            c.cargo(
                &[
                    "doc",
                    "--locked",
                    "--workspace",
                    "--no-deps",
                    "--all-features",
                ],
                &[("RUSTDOCFLAGS", "-D warnings")],
            )
        });
        self.bindings();
        self.monitoring();
        self.test_wasm();
        self.web();
        self.interop();
        self.smoke_and_deny();
    }

    /// Benchmark smoke runs and cargo-deny.
    fn smoke_and_deny(&mut self) {
        self.step_needing("bench smoke (crypto, quick)", &[PYTHON_VENV], |c| {
            crate::bench::run(c, "crypto", false, true).map(|()| {
                Outcome::PassedWithNote("numbers not meaningful: debug build, 20 ms budgets".into())
            })
        });
        self.step("bench smoke (storage, quick)", |c| {
            crate::bench::run(c, "storage", false, true).map(|()| {
                Outcome::PassedWithNote(
                    "numbers not meaningful: debug build, 2 MiB per configuration".into(),
                )
            })
        });
        self.step("bench smoke (blob, quick)", |c| {
            crate::bench::run(c, "blob", false, true).map(|()| {
                Outcome::PassedWithNote(
                    "numbers not meaningful: debug build, 4 MiB blobs, 16 MiB for memory".into(),
                )
            })
        });
        self.step("bench smoke (dht, quick)", |c| {
            crate::bench::run(c, "dht", false, true).map(|()| {
                Outcome::PassedWithNote("numbers not meaningful: debug build, 20 ms budgets".into())
            })
        });
        self.step("bench smoke (transport, quick)", |c| {
            crate::bench::run(c, "transport", false, true).map(|()| {
                Outcome::PassedWithNote(
                    "numbers not meaningful: debug build, 50 round trips, 500 + 20 frames".into(),
                )
            })
        });
        self.step("bench smoke (latency, quick)", |c| {
            crate::bench::run(c, "latency", false, true).map(|()| {
                Outcome::PassedWithNote(
                    "numbers not meaningful: debug build, 30 messages per hop count".into(),
                )
            })
        });
        // The regression guard that means something on a shared machine: instruction counts.
        self.step_needing(
            "bench --instructions (callgrind, dev build)",
            &[crate::instructions::VALGRIND],
            |c| crate::instructions::run(c, false),
        );
        // Every fuzz target briefly, from its committed corpus and seeds: the harnesses build
        // and run under libFuzzer (their corpora and crash reproducers also replay in the
        // native tests). Dev profile: it builds in about half the time of the release
        // profile, and 3 s finds nothing a campaign would not. A real campaign is
        // `cargo xtask fuzz --time S` (release).
        self.step_needing("fuzz smoke (every target, 3 s)", &[CARGO_FUZZ], |c| {
            crate::fuzz::run(
                c,
                &crate::fuzz::Options {
                    seconds: 3,
                    merge: false,
                    dev: true,
                    only: Vec::new(),
                },
            )
        });
        self.step_needing(
            "cargo deny",
            &["install cargo-deny", "advisory database"],
            |c| {
                c.cargo(&["fetch", "--locked"], &[])?;
                let db = c.target_dir().join("advisory-db").join(ADVISORY_DB_DIR);
                if db.exists() {
                    c.cargo(&["deny", "--all-features", "--offline", "check"], &[])
                        .map(|_| {
                            Outcome::PassedWithNote("advisories, bans, licenses, sources".into())
                        })
                } else {
                    c.cargo(
                        &[
                            "deny",
                            "--all-features",
                            "--offline",
                            "check",
                            "bans",
                            "licenses",
                            "sources",
                        ],
                        &[],
                    )
                    .map(|_| {
                        Outcome::PassedWithNote(
                            "advisories NOT checked: no offline advisory database".into(),
                        )
                    })
                }
            },
        );
    }

    pub(crate) fn test_wasm(&mut self) {
        let needs = [
            "rustup target wasm32",
            "apt chromium + chromedriver",
            "install wasm-bindgen-cli",
        ];
        for (package, tests) in WASM_TESTS {
            self.step_needing(
                &format!("test (wasm32, headless Chromium): {package}"),
                &needs,
                |c| {
                    let mut args = vec![
                        "test",
                        "--locked",
                        "-p",
                        package,
                        "--target",
                        "wasm32-unknown-unknown",
                    ];
                    for t in *tests {
                        args.extend(["--test", t]);
                    }
                    c.cargo(
                        &args,
                        &[
                            ("CHROMEDRIVER", CHROMEDRIVER),
                            ("WASM_BINDGEN_TEST_TIMEOUT", "120"),
                        ],
                    )
                },
            );
        }
        self.step_needing(
            "test (wasm32, headless Chromium): WebRTC browser <-> native",
            &needs,
            Self::test_browser_webrtc,
        );
    }

    /// Builds the native WebRTC test peer (`backends/webrtc/examples/test-peer.rs`); returns
    /// its path.
    pub(crate) fn build_test_peer(&mut self) -> Result<PathBuf, String> {
        self.cargo(
            &[
                "build",
                "--locked",
                "-p",
                "mesh-transport-webrtc",
                "--example",
                "test-peer",
            ],
            &[],
        )?;
        Ok(self.target_dir().join("debug/examples/test-peer"))
    }

    /// The browser ↔ native WebRTC test: starts the native test peer, passes its signaling
    /// URL and identity to the browser test at build time, and stops the peer afterwards.
    fn test_browser_webrtc(&mut self) -> Result<Outcome, String> {
        let exe = self.build_test_peer()?;
        let mut peer = Command::new(&exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let ready = peer
            .stdout
            .take()
            .and_then(|out| BufReader::new(out).lines().next())
            .and_then(Result::ok)
            .unwrap_or_default();
        let result = match ready.strip_prefix("READY ") {
            Some(spec) => {
                eprintln!("    native test peer: {spec}");
                self.cargo(
                    &[
                        "test",
                        "--locked",
                        "-p",
                        "mesh-transport-webrtc",
                        "--target",
                        "wasm32-unknown-unknown",
                        "--test",
                        "browser",
                    ],
                    &[
                        ("CHROMEDRIVER", CHROMEDRIVER),
                        ("WASM_BINDGEN_TEST_TIMEOUT", "120"),
                        ("MESH_TEST_PEER", spec),
                    ],
                )
            }
            None => Err(format!("the native test peer did not start: {ready:?}")),
        };
        // Closing its stdin stops the peer; kill it if it does not.
        drop(peer.stdin.take());
        for _ in 0..50 {
            if peer.try_wait().map_err(|e| e.to_string())?.is_some() {
                return result;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = peer.kill();
        let _ = peer.wait();
        result
    }

    /// The browser package (with its size) and the browser node end to end.
    pub(crate) fn web(&mut self) {
        let needs = [
            "rustup target wasm32",
            "apt chromium + chromedriver",
            "install wasm-bindgen-cli",
        ];
        self.step_needing(
            "web: browser package (wasm-bindgen, size)",
            &needs[..],
            crate::web::build_package,
        );
        let built = self.last_passed("web: browser package (wasm-bindgen, size)");
        self.step_needing(
            "e2e: browser node <-> meshd in headless Chromium",
            &needs[..],
            |c| {
                if built {
                    crate::web::e2e(c)
                } else {
                    Err("not run: the browser package was not built".into())
                }
            },
        );
    }

    /// mesh-ffi's bindings and their Python tests.
    pub(crate) fn bindings(&mut self) {
        self.step_needing(
            "bindings: mesh-ffi Kotlin/Swift/Python + Python tests",
            &[PYTHON_VENV, NATIVE_PACKAGES],
            crate::ffi::bindings,
        );
    }

    pub(crate) fn interop(&mut self) {
        let needs = [PYTHON_VENV];
        self.step_needing(
            "interop: aiortc (Python WebRTC) <-> native link",
            &needs,
            crate::web::aiortc,
        );
        self.step_needing("interop: libsodium checks our vectors", &needs, |c| {
            let py = c.venv_python().to_string_lossy().into_owned();
            c.run(
                &py,
                &[
                    "interop/python/crypto_interop.py",
                    "check",
                    "crates/mesh-crypto/vectors/crypto-v1.json",
                ],
                &[],
            )
        });
        self.step_needing("interop: libsodium checks platform vectors", &needs, |c| {
            let py = c.venv_python().to_string_lossy().into_owned();
            c.run(
                &py,
                &[
                    "interop/python/crypto_interop.py",
                    "check-platform",
                    "crates/mesh-platform/vectors/platform-v1.json",
                ],
                &[],
            )
        });
        self.step_needing(
            "interop: libsodium + Python rebuild DHT, gossip, blob, recovery, message vectors",
            &needs,
            |c| {
                let py = c.venv_python().to_string_lossy().into_owned();
                c.run(
                    &py,
                    &[
                        "interop/python/crypto_interop.py",
                        "check-protocol",
                        "crates/mesh-gossip/vectors/protocol-v1.json",
                    ],
                    &[],
                )
            },
        );
        self.step_needing("interop: we open libsodium's envelopes", &needs, |c| {
            let py = c.venv_python().to_string_lossy().into_owned();
            c.cargo(
                &[
                    "test",
                    "--locked",
                    "-p",
                    "mesh-tests",
                    "--test",
                    "libsodium_interop",
                    "--",
                    "--ignored",
                ],
                &[("MESH_PYTHON", &py)],
            )
        });
    }

    /// Prints the summary table and returns the exit code.
    pub(crate) fn summary(&self) -> ExitCode {
        let mut out = String::from("\n======== cargo xtask summary ========\n");
        let _ = writeln!(
            out,
            "{:<44} {:<7} {:>8} {:>7}  note",
            "step", "result", "time", "tests"
        );
        let (mut passed, mut failed, mut steps_failed) = (0, 0, 0);
        let mut total = Duration::ZERO;
        for r in &self.results {
            total += r.elapsed;
            passed += r.tests.passed;
            failed += r.tests.failed;
            let (status, note) = match &r.result {
                Ok(Outcome::Passed) => ("ok", String::new()),
                Ok(Outcome::PassedWithNote(n)) => ("ok", n.clone()),
                Err(e) => {
                    steps_failed += 1;
                    ("FAILED", e.clone())
                }
            };
            let tests = if r.tests.passed + r.tests.failed > 0 {
                r.tests.passed.to_string()
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "{:<44} {:<7} {:>7.1}s {:>7}  {}",
                r.name,
                status,
                r.elapsed.as_secs_f64(),
                tests,
                note
            );
        }
        let _ = writeln!(
            out,
            "{} steps, {} failed, {:.1} min in all",
            self.results.len(),
            steps_failed,
            total.as_secs_f64() / 60.0
        );
        let _ = writeln!(out, "tests: {passed} passed, {failed} failed");
        for r in self.results.iter().filter(|r| !r.failures.is_empty()) {
            let _ = writeln!(out, "failed in {}:", r.name);
            for f in &r.failures {
                let _ = writeln!(out, "  {f}");
            }
        }
        print!("{out}");
        if steps_failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// The failing tests of a libtest run, read line by line from its output: each `test NAME ...
/// FAILED` line, and from the `---- NAME stdout ----` section that follows, where the test
/// panicked and the panic's first line (so a CI log cut short still names the failure).
#[derive(Default)]
struct Failures {
    /// (test name, panic location and message once read).
    tests: Vec<(String, Option<String>)>,
    /// The test whose output section is being read, and the panic location once seen.
    section: Option<(String, Option<String>)>,
}

impl Failures {
    /// Longest panic message kept, in characters.
    const MESSAGE: usize = 240;

    fn read(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            if !self.tests.iter().any(|(n, _)| n == name) {
                self.tests.push((name.to_string(), None));
            }
            return;
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            self.section = Some((name.to_string(), None));
            return;
        }
        let Some((name, at)) = &mut self.section else {
            return;
        };
        match at {
            None => {
                if let Some((_, place)) = line.split_once("' panicked at ") {
                    *at = Some(place.trim_end_matches(':').to_string());
                }
            }
            Some(place) => {
                let message: String = line.trim().chars().take(Self::MESSAGE).collect();
                let why = format!("panicked at {place}: {message}");
                match self.tests.iter_mut().find(|(n, _)| n == name) {
                    Some((_, slot)) => *slot = Some(why),
                    None => self.tests.push((name.clone(), Some(why))),
                }
                self.section = None;
            }
        }
    }

    fn into_lines(self) -> Vec<String> {
        self.tests
            .into_iter()
            .map(|(name, why)| match why {
                Some(why) => format!("{name}: {why}"),
                None => name,
            })
            .collect()
    }
}

/// `(passed, failed)` from a libtest / wasm-bindgen-test "test result:" line.
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut passed = None;
    let mut failed = None;
    let words: Vec<&str> = rest
        .split([' ', ';', '.'])
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        match pair[1] {
            "passed" => passed = pair[0].parse().ok(),
            "failed" => failed = pair[0].parse().ok(),
            _ => {}
        }
    }
    Some((passed?, failed.unwrap_or(0)))
}

/// First line(s) of a tool's output, or None if it does not run.
pub(crate) fn tool_version(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The version of `package` recorded in Cargo.lock.
fn locked_version(root: &Path, package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let needle = format!("name = \"{package}\"\n");
    let at = lock.find(&needle)? + needle.len();
    let line = lock[at..].lines().next()?;
    Some(
        line.strip_prefix("version = \"")?
            .trim_end_matches('"')
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_and_wasm_bindgen_result_lines() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 18 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.04s"
            ),
            Some((18, 0))
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 3 passed; 2 failed; 1 ignored"),
            Some((3, 2))
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }

    #[test]
    fn names_failing_tests_with_where_and_why_they_panicked() {
        let output = "\
running 3 tests
test pool::dials ... ok
test pool::closes ... FAILED
test link::waits ... FAILED

failures:

---- pool::closes stdout ----

thread 'pool::closes' panicked at crates/x/tests/pool.rs:10:5:
assertion `left == right` failed: the close message
  left: 1
 right: 2
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

---- link::waits stdout ----
some output of the test

failures:
    link::waits
    pool::closes

test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out
";
        let mut f = Failures::default();
        for line in output.lines() {
            f.read(line);
        }
        assert_eq!(
            f.into_lines(),
            vec![
                "pool::closes: panicked at crates/x/tests/pool.rs:10:5: \
                 assertion `left == right` failed: the close message"
                    .to_string(),
                // No panic line in its section (e.g. a timeout): the name alone.
                "link::waits".to_string(),
            ]
        );
        let mut long = Failures::default();
        long.read("test t ... FAILED");
        long.read("---- t stdout ----");
        long.read("thread 't' panicked at a.rs:1:1:");
        long.read(&"x".repeat(1000));
        let line = long.into_lines().remove(0);
        assert_eq!(
            line.len(),
            "t: panicked at a.rs:1:1: ".len() + Failures::MESSAGE
        );
    }

    #[test]
    fn reads_versions_from_the_lock_file() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let v = locked_version(&root, "wasm-bindgen").expect("wasm-bindgen is locked");
        assert!(v.starts_with("0."), "{v}");
        assert!(locked_version(&root, "no-such-package").is_none());
    }
}
