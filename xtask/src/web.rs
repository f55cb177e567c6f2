//! The browser node: its package (`cargo xtask web`), the end-to-end test in headless Chromium
//! (`cargo xtask e2e`), and the WebRTC interop check against aiortc.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::steps::{Ci, Outcome, WEB_BUDGET_GZIP};

/// Where `wasm-bindgen` writes the package (`meshd` embeds it from there).
pub(crate) fn package_dir(ci: &Ci) -> PathBuf {
    ci.target_dir().join("web/pkg")
}

/// Bytes of `path` compressed with `gzip -9` (what a server sending it gzipped sends).
fn gzipped_len(path: &std::path::Path) -> Result<u64, String> {
    let out = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("gzip: {e}"))?;
    if !out.status.success() {
        return Err(format!("gzip {} failed", path.display()));
    }
    Ok(out.stdout.len() as u64)
}

fn kib(n: u64) -> String {
    // Sizes in KiB with one decimal; a u64 of bytes is far below f64's exact range here.
    #[allow(clippy::cast_precision_loss)]
    let k = n as f64 / 1024.0;
    format!("{k:.1} KiB")
}

/// Builds `mesh-web` for wasm32 with the `web` profile and packages it with `wasm-bindgen`
/// (ES module + TypeScript types), then reports its size against the budget.
pub(crate) fn build_package(ci: &mut Ci) -> Result<Outcome, String> {
    ci.cargo(
        &[
            "build",
            "--locked",
            "-p",
            "mesh-web",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "web",
        ],
        &[],
    )?;
    let wasm = ci
        .target_dir()
        .join("wasm32-unknown-unknown/web/mesh_web.wasm");
    let out = package_dir(ci);
    let (wasm, out_s) = (
        wasm.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    );
    ci.run(
        "wasm-bindgen",
        &[
            "--target",
            "web",
            "--remove-name-section",
            "--remove-producers-section",
            "--out-dir",
            &out_s,
            &wasm,
        ],
        &[],
    )?;
    for f in ["mesh_web.d.ts", "mesh_web.js", "mesh_web_bg.wasm"] {
        if !out.join(f).is_file() {
            return Err(format!("wasm-bindgen wrote no {f}"));
        }
    }
    let module = out.join("mesh_web_bg.wasm");
    let glue = out.join("mesh_web.js");
    let raw = std::fs::metadata(&module).map_err(|e| e.to_string())?.len();
    let gz = gzipped_len(&module)? + gzipped_len(&glue)?;
    let verdict = if gz <= WEB_BUDGET_GZIP {
        "within".to_string()
    } else {
        format!("over by {}", kib(gz - WEB_BUDGET_GZIP))
    };
    let note = format!(
        "mesh_web_bg.wasm {} ({} gzipped with the JS glue; budget {}: {verdict})",
        kib(raw),
        kib(gz),
        kib(WEB_BUDGET_GZIP)
    );
    eprintln!("    {note}");
    Ok(Outcome::PassedWithNote(note))
}

/// The browser node end to end: `meshd` built with the package, driven in headless Chromium.
pub(crate) fn e2e(ci: &mut Ci) -> Result<Outcome, String> {
    let pkg = package_dir(ci);
    let pkg = pkg.to_string_lossy().into_owned();
    ci.cargo(
        &[
            "test",
            "--locked",
            "-p",
            "meshd",
            "--test",
            "browser",
            "--",
            "--ignored",
            "--nocapture",
        ],
        &[
            ("MESH_WEB_PKG", &pkg),
            ("CHROMEDRIVER", crate::steps::CHROMEDRIVER),
            ("CHROMIUM", crate::steps::CHROMIUM),
        ],
    )?;
    let shots = ci.target_dir().join("tmp/e2e");
    Ok(Outcome::PassedWithNote(format!(
        "screenshots in {}",
        shots.display()
    )))
}

/// aiortc (Python) dials the native test peer and speaks the whole link.
pub(crate) fn aiortc(ci: &mut Ci) -> Result<Outcome, String> {
    let peer = ci.build_test_peer()?;
    let py = ci.venv_python().to_string_lossy().into_owned();
    let peer = peer.to_string_lossy().into_owned();
    ci.run(
        &py,
        &["interop/python/webrtc_interop.py", &peer],
        &[("PYTHONPATH", "interop/python")],
    )
}
