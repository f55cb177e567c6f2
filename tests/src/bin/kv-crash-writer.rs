//! Child process of the crash-consistency test: `kv-crash-writer BACKEND PATH FIRST_BATCH`.
//! Applies batches `FIRST_BATCH`, `FIRST_BATCH + 1`, ... and prints `ack N` after each returns,
//! until it is killed (or after 100,000 batches).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(backend), Some(path), Some(first)) = (
        args.get(1),
        args.get(2),
        args.get(3).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: kv-crash-writer sqlite|redb PATH FIRST_BATCH");
        return ExitCode::from(2);
    };
    let store = match mesh_tests::crash::open(backend, std::path::Path::new(path)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for n in first..first + 100_000 {
        if let Err(e) = store.apply(mesh_tests::crash::batch(n)).await {
            eprintln!("apply {n}: {e}");
            return ExitCode::FAILURE;
        }
        let _ = writeln!(out, "ack {n}");
        let _ = out.flush();
    }
    ExitCode::SUCCESS
}
