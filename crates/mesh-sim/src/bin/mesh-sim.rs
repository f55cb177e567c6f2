//! `mesh-sim dht --nodes N [--lookups L] [--records R] [--churn P] [--loss M] [--settle SECS] [--seed S]`:
//! runs the DHT simulation and prints its report. `mesh-sim gossip`: what a returning peer
//! spends to catch up by pull, against a digest listing every id and against push alone.
//! (`cargo xtask sim ...` builds and runs this in release mode.)

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool

use std::process::ExitCode;

use mesh_sim::dht::{Options, run};

const USAGE: &str = "usage: mesh-sim gossip | mesh-sim dht [--nodes N] [--lookups L] [--records R] [--churn PERCENT] [--loss PER_MILLE] [--settle SECS] [--seed S]";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .replace('_', "");
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        let n = num(&value)?;
        let small = || u32::try_from(n).map_err(|e| format!("{flag}: {e}"));
        let size = || usize::try_from(n).map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--nodes" => o.nodes = size()?,
            "--lookups" => o.lookups = size()?,
            "--records" => o.records = size()?,
            "--churn" => o.churn_percent = small()?.min(99),
            "--loss" => o.loss_per_mille = small()?.min(1000),
            "--seed" => o.seed = n,
            "--settle" => o.settle = std::time::Duration::from_secs(n),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if o.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((what, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if what == "gossip" && rest.is_empty() {
        gossip();
        return ExitCode::SUCCESS;
    }
    if what != "dht" {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let options = match parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let report = run(options, |p| eprintln!("  {p}"));
    println!("{report}");
    if report.misaddressed > 0 {
        eprintln!("error: nodes sent messages to wrong addresses");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn gossip() {
    println!(
        "| held by both | missing | recovered by 1 pull | digest bytes | digest bytes / held | answer bytes | ours total | naive id-list total | naive / ours | push only recovers |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (held, missing) in [
        (0, 1000),
        (1000, 10),
        (1000, 100),
        (10_000, 100),
        (10_000, 1000),
        (15_000, 1000),
    ] {
        let r = mesh_sim::gossip::resync(held, missing);
        let ours = r.digest_bytes + r.response_bytes;
        #[allow(clippy::cast_precision_loss)]
        let ratio = r.naive_bytes as f64 / ours.max(1) as f64;
        println!(
            "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {:.2} | 0 |",
            r.held,
            r.missing,
            r.recovered,
            r.digest_bytes,
            r.digest_bytes_per_held(),
            r.response_bytes,
            ours,
            r.naive_bytes,
            ratio
        );
    }
}
