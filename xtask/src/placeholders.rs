//! CI check: production code must not ship placeholder pins, placeholder signatures or all-zero
//! keys (the apps this core replaces shipped exactly that). Scans the library and binary
//! sources of `crates/` and `backends/` (not tests, benches or examples) line by line.

use std::path::{Path, PathBuf};

use crate::steps::Outcome;

/// What a line must not contain, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "all-zero SHA-256 pin in base64",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "all-zero 32-byte value in hex",
    ),
    ("REPLACE_ME", "placeholder marker"),
    ("PLACEHOLDER_PIN", "placeholder pin"),
    ("PLACEHOLDER_SIG", "placeholder signature"),
    ("sha256/XXXX", "placeholder pin"),
];

/// Constants or statics named like keys, pins or signatures must not be all-zero arrays.
fn zero_constant(line: &str) -> bool {
    let l = line.trim_start();
    let is_item = l.starts_with("const ")
        || l.starts_with("pub const ")
        || l.starts_with("static ")
        || l.starts_with("pub static ");
    let upper = l.to_ascii_uppercase();
    let named = ["KEY", "PIN", "SIG", "SEED", "SECRET"]
        .iter()
        .any(|w| upper.split(':').next().unwrap_or("").contains(w));
    let zero = l.contains("= [0; ") || l.contains("= [0u8; ") || l.contains("= [0x00; ");
    is_item && named && zero
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !matches!(
                name.as_str(),
                "tests" | "benches" | "examples" | "target" | "vectors"
            ) {
                sources(&p, out);
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Runs the check over `root`.
pub(crate) fn check(root: &Path) -> Result<Outcome, String> {
    let mut files = Vec::new();
    for top in ["crates", "backends"] {
        sources(&root.join(top), &mut files);
    }
    let mut findings = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        // Unit-test modules at the end of a file are test code.
        let production = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in production.lines().enumerate() {
            for (needle, why) in FORBIDDEN {
                if line.contains(needle) {
                    findings.push(format!(
                        "{}:{}: {why}",
                        f.strip_prefix(root).unwrap_or(f).display(),
                        i + 1
                    ));
                }
            }
            if zero_constant(line) {
                findings.push(format!(
                    "{}:{}: all-zero key/pin/signature constant",
                    f.strip_prefix(root).unwrap_or(f).display(),
                    i + 1
                ));
            }
        }
    }
    if findings.is_empty() {
        Ok(Outcome::PassedWithNote(format!(
            "{} source files scanned",
            files.len()
        )))
    } else {
        Err(findings.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_zero_constants_and_placeholder_pins() {
        assert!(zero_constant("pub const SERVER_PIN: [u8; 32] = [0u8; 32];"));
        assert!(zero_constant("static SIGNING_KEY: [u8; 64] = [0; 64];"));
        assert!(
            !zero_constant("let mut key = [0u8; 32];"),
            "a buffer is not a constant"
        );
        assert!(!zero_constant("const BUF_LEN: usize = 32;"));
        let dir =
            std::env::temp_dir().join(format!("mesh-placeholder-check-{}", std::process::id()));
        let src = dir.join("crates/x/src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("lib.rs"),
            "pub const PIN: &str = \"sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\";\n",
        )
        .unwrap();
        assert!(check(&dir).is_err());
        std::fs::write(
            src.join("lib.rs"),
            "pub fn f() {}\n#[cfg(test)]\nconst PIN: [u8; 32] = [0u8; 32];\n",
        )
        .unwrap();
        assert!(check(&dir).is_ok(), "test code is exempt");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
