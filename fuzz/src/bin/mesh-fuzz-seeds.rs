//! `mesh-fuzz-seeds DIR`: writes every target's seed inputs to `DIR/<target>/seed-<n>`
//! (`cargo xtask fuzz` starts each run from them and the committed corpus).

#![allow(clippy::print_stderr)] // a command-line tool

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: mesh-fuzz-seeds DIR");
        return ExitCode::from(2);
    };
    for t in mesh_fuzz::TARGETS {
        let out = dir.join(t.name);
        let written = std::fs::create_dir_all(&out).and_then(|()| {
            (t.seeds)()
                .iter()
                .enumerate()
                .try_for_each(|(i, seed)| std::fs::write(out.join(format!("seed-{i}")), seed))
        });
        if let Err(e) = written {
            eprintln!("{}: {e}", out.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
