//! Embeds the browser node's package when `MESH_WEB_PKG` names the directory `wasm-bindgen`
//! wrote it to: `cargo xtask web` writes it to `target/web/pkg`, then
//! `MESH_WEB_PKG=$PWD/target/web/pkg cargo build -p meshd` embeds it. Without it the page says
//! how.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mesh_web_pkg)");
    println!("cargo::rerun-if-env-changed=MESH_WEB_PKG");
    let Some(dir) = std::env::var_os("MESH_WEB_PKG") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    assert!(
        dir.is_absolute(),
        "MESH_WEB_PKG must be an absolute path, not {}",
        dir.display()
    );
    for file in ["mesh_web.js", "mesh_web_bg.wasm"] {
        let path = dir.join(file);
        assert!(
            path.is_file(),
            "MESH_WEB_PKG: {} is missing (run `cargo xtask web`)",
            path.display()
        );
        println!("cargo::rerun-if-changed={}", path.display());
    }
    println!("cargo::rustc-cfg=mesh_web_pkg");
    println!("cargo::rustc-env=MESH_WEB_PKG_DIR={}", dir.display());
}
