//! `mesh-bench SUITE [--quick] [--json PATH]`: runs a benchmark suite and prints a table.
//!
//! Usually run through `cargo xtask bench SUITE`, which also runs the suite's baseline (libsodium,
//! raw webrtc-rs, raw file I/O, ...) in the same run and reports the ratio.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod blob;
mod count;
mod crypto;
mod dht;
mod latency;
mod storage;
mod timing;
mod transport;

use std::process::ExitCode;
use std::time::Duration;

#[allow(clippy::too_many_lines)] // one arm per suite
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(suite) = args.first() else {
        eprintln!("usage: mesh-bench blob|crypto|dht|storage|transport [--quick] [--json PATH]");
        return ExitCode::from(2);
    };
    let quick = args.iter().any(|a| a == "--quick");
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1));
    let budget = Duration::from_millis(if quick { 20 } else { 1000 });
    let mut extra = serde_json::Map::new();
    let results = match suite.as_str() {
        "crypto" => crypto::run(budget),
        "storage" => {
            let total = if quick { 2 << 20 } else { 64 << 20 };
            let Some(rt) = tokio_runtime() else {
                return ExitCode::FAILURE;
            };
            let report = rt.block_on(storage::run(total));
            println!(
                "baseline: raw file I/O of the same bytes (write + fsync per batch, pread, sequential read)"
            );
            print_table(&report.baseline);
            println!(
                "\n{:<28} {:>14} {:>14} {:>8}",
                "file size after writing", "logical bytes", "file bytes", "ratio"
            );
            for a in &report.amplification {
                println!(
                    "{:<28} {:>14} {:>14} {:>8.2}",
                    a.what, a.logical_bytes, a.file_bytes, a.ratio
                );
            }
            println!("\nours:");
            extra.insert(
                "baseline".into(),
                serde_json::json!({
                    "implementation": "raw file I/O of the same bytes (write + fsync per batch, pread, sequential read)",
                    "results": report.baseline,
                }),
            );
            extra.insert(
                "amplification".into(),
                serde_json::json!(report.amplification),
            );
            report.ours
        }
        "blob" => {
            let Some(results) = blob_suite(quick, &mut extra) else {
                return ExitCode::FAILURE;
            };
            results
        }
        // Internal: one peak-memory measurement of the blob suite, in a process of its own.
        "blob-peak" => return blob_peak(&args),
        // Internal: one operation for the instruction-count guard, run under callgrind.
        "count" => return count_op(&args),
        "dht" => {
            report_baseline(
                &mut extra,
                "the same store, verifying the record's signature before any other check",
                &dht::run_baseline(budget),
            );
            tracked_peers(&mut extra, if quick { 10_000 } else { 1_000_000 });
            dht::run(budget)
        }
        "transport" => {
            let Some(rt) = tokio_runtime() else {
                return ExitCode::FAILURE;
            };
            let report = match rt.block_on(transport::run(transport::Sizes::new(quick))) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("transport benchmark: {e}");
                    return ExitCode::FAILURE;
                }
            };
            report_baseline(
                &mut extra,
                "raw webrtc-rs data channel carrying the same messages (no mesh link)",
                &report.baseline,
            );
            report.ours
        }
        "latency" => match latency_suite(quick, &mut extra) {
            Some(rows) => rows,
            None => return ExitCode::FAILURE,
        },
        other => {
            eprintln!(
                "unknown suite {other}; known: blob, crypto, dht, latency, storage, transport"
            );
            return ExitCode::from(2);
        }
    };
    print_table(&results);
    if let Some(path) = json {
        let mut doc = serde_json::json!({ "suite": suite, "implementation": "mesh", "quick": quick, "results": results });
        if let Some(obj) = doc.as_object_mut() {
            obj.extend(extra);
        }
        if let Err(e) = std::fs::write(path, doc.to_string()) {
            eprintln!("cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `count --list` prints the counted operations, one per line; `count OP N` runs `OP` once
/// (warm-up), then `N` times inside the region callgrind counts. Fails if the op did not do its
/// work.
fn count_op(args: &[String]) -> ExitCode {
    match args.get(1).map(String::as_str) {
        Some("--list") => {
            for (name, _) in count::OPS {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Some(name) => {
            let Some(n) = args.get(2).and_then(|n| n.parse::<u32>().ok()) else {
                eprintln!("usage: mesh-bench count --list | count OP ITERATIONS");
                return ExitCode::from(2);
            };
            let Some(mut op) = count::prepare(name) else {
                eprintln!("unknown operation {name:?}; see mesh-bench count --list");
                return ExitCode::from(2);
            };
            if op() && count::instruction_counted_region(&mut op, n) {
                ExitCode::SUCCESS
            } else {
                eprintln!("{name}: the operation failed");
                ExitCode::FAILURE
            }
        }
        None => {
            eprintln!("usage: mesh-bench count --list | count OP ITERATIONS");
            ExitCode::from(2)
        }
    }
}

/// Measures and prints the memory per tracked peer, recording it for the JSON report.
fn tracked_peers(extra: &mut serde_json::Map<String, serde_json::Value>, peers: usize) {
    match dht::tracked_peers(peers) {
        Some(t) => {
            println!(
                "memory per tracked peer ({} peers, one STORE each): {:.0} bytes (baseline HashMap<PeerId, u64>: {:.0} bytes, ratio {:.2}); after the idle reclaim: {} tracked, {:.0} bytes per peer still resident\n",
                t.peers,
                t.bytes_per_peer,
                t.baseline_bytes_per_peer,
                t.bytes_per_peer / t.baseline_bytes_per_peer.max(1.0),
                t.tracked_after_reclaim,
                t.bytes_per_peer_after_reclaim
            );
            extra.insert("tracked_peers".into(), serde_json::json!(t));
        }
        None => println!("memory per tracked peer: not measurable here (no /proc)\n"),
    }
}

/// Prints a same-run baseline and records it for the JSON report.
/// `blob-peak KIND OP BYTES`: prints the resident set before and at its peak, in bytes.
fn blob_peak(args: &[String]) -> ExitCode {
    let (Some(kind), Some(op), Some(Ok(bytes))) = (
        args.get(1),
        args.get(2),
        args.get(3).map(|b| b.parse::<usize>()),
    ) else {
        eprintln!("usage: mesh-bench blob-peak redb|sqlite put|get BYTES");
        return ExitCode::from(2);
    };
    let Some(rt) = tokio_runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(blob::peak(kind, op, bytes)) {
        Ok((before, peak)) => {
            println!("{before} {peak}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The blob suite: throughput against raw file I/O, file size, peak memory.
#[allow(clippy::cast_precision_loss)] // MiB for display
fn blob_suite(
    quick: bool,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Option<Vec<timing::Measurement>> {
    let (total, big) = if quick {
        (4 << 20, 16 << 20)
    } else {
        (256 << 20, 1 << 30)
    };
    let rt = tokio_runtime()?;
    let report = rt.block_on(blob::run(total, big));
    println!(
        "\n{:<28} {:>14} {:>14} {:>8}",
        "file size after writing", "logical bytes", "file bytes", "ratio"
    );
    for a in &report.amplification {
        println!(
            "{:<28} {:>14} {:>14} {:>8.2}",
            a.what, a.logical_bytes, a.file_bytes, a.ratio
        );
    }
    println!(
        "\n{:<28} {:>14} {:>14}",
        "peak resident memory", "before (MiB)", "peak (MiB)"
    );
    for p in &report.memory {
        println!(
            "{:<28} {:>14.1} {:>14.1}",
            p.what,
            p.rss_before as f64 / 1_048_576.0,
            p.rss_peak as f64 / 1_048_576.0
        );
    }
    println!();
    report_baseline(
        extra,
        "raw file I/O of the same bytes (1 MiB writes with an fsync each, sequential read)",
        &report.baseline,
    );
    extra.insert(
        "amplification".into(),
        serde_json::json!(report.amplification),
    );
    extra.insert("memory".into(), serde_json::json!(report.memory));
    Some(report.ours)
}

/// The latency suite: runs it, records the baseline and the message rates in `extra`.
fn latency_suite(
    quick: bool,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Option<Vec<timing::Measurement>> {
    let rt = tokio_runtime()?;
    let report = match rt.block_on(latency::run(latency::Sizes::new(quick))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("latency benchmark: {e}");
            return None;
        }
    };
    report_baseline(
        extra,
        "raw webrtc-rs data channels over the same hops (middle peers forward; no mesh link, crypto or storage)",
        &report.baseline,
    );
    let rates: Vec<serde_json::Value> = report
        .rates
        .iter()
        .map(|(what, ours, base)| serde_json::json!({ "what": what, "ours": ours, "baseline": base }))
        .collect();
    for (what, ours, base) in &report.rates {
        println!("messages/s, {what}: ours {ours:.0}, raw {base:.0}");
    }
    extra.insert("rates".into(), serde_json::Value::Array(rates));
    Some(report.ours)
}

fn report_baseline(
    extra: &mut serde_json::Map<String, serde_json::Value>,
    implementation: &str,
    rows: &[timing::Measurement],
) {
    println!("baseline: {implementation}");
    print_table(rows);
    println!("\nours:");
    extra.insert(
        "baseline".into(),
        serde_json::json!({ "implementation": implementation, "results": rows }),
    );
}

/// The two-worker runtime the async suites run on.
fn tokio_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("tokio: {e}"))
        .ok()
}

fn print_table(results: &[timing::Measurement]) {
    println!(
        "{:<36} {:>14} {:>12} {:>10}",
        "operation", "time/op", "ops/s", "MiB/s"
    );
    for m in results {
        #[allow(clippy::cast_precision_loss)]
        let mib_s = m.bytes_per_op as f64 / (m.ns_per_op / 1e9) / (1024.0 * 1024.0);
        println!(
            "{:<36} {:>11.1} µs {:>12.0} {:>10.1}",
            m.name,
            m.ns_per_op / 1e3,
            1e9 / m.ns_per_op,
            mib_s
        );
    }
}
