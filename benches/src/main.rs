//! `mesh-bench SUITE [--quick] [--json PATH]`: runs a benchmark suite and prints a table.
//!
//! Usually run through `cargo xtask bench SUITE`, which also runs the suite's baseline (libsodium,
//! raw webrtc-rs, raw file I/O, ...) in the same run and reports the ratio.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod crypto;
mod timing;

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(suite) = args.first() else {
        eprintln!("usage: mesh-bench crypto [--quick] [--json PATH]");
        return ExitCode::from(2);
    };
    let quick = args.iter().any(|a| a == "--quick");
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1));
    let budget = if quick {
        Duration::from_millis(20)
    } else {
        Duration::from_secs(1)
    };
    let results = match suite.as_str() {
        "crypto" => crypto::run(budget),
        other => {
            eprintln!("unknown suite {other}; known: crypto");
            return ExitCode::from(2);
        }
    };
    println!(
        "{:<16} {:>14} {:>12} {:>10}",
        "operation", "time/op", "ops/s", "MiB/s"
    );
    for m in &results {
        #[allow(clippy::cast_precision_loss)]
        let mib_s = m.bytes_per_op as f64 / (m.ns_per_op / 1e9) / (1024.0 * 1024.0);
        println!(
            "{:<16} {:>11.1} µs {:>12.0} {:>10.1}",
            m.name,
            m.ns_per_op / 1e3,
            1e9 / m.ns_per_op,
            mib_s
        );
    }
    if let Some(path) = json {
        let doc = serde_json::json!({ "suite": suite, "implementation": "mesh", "quick": quick, "results": results });
        if let Err(e) = std::fs::write(path, doc.to_string()) {
            eprintln!("cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
