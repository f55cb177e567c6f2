//! The simulator's command line (`cargo xtask sim ...` builds and runs it in release mode):
//!
//! - `mesh-sim dht --nodes N [--lookups L] [--records R] [--churn P] [--loss M] [--settle SECS]
//!   [--seed S] [--steady] [--live-churn P] [--away SECS] [--partition SECS] [--window SECS]`:
//!   the DHT simulation and its report.
//! - `mesh-sim gossip`: what a returning peer spends to catch up by pull, against a digest
//!   listing every id and against push alone.
//! - `mesh-sim gossip-scale --nodes N [--degree D] [--messages M] [--body BYTES] [--publish
//!   SECS] [--drain SECS] [--loss M] [--churn P] [--away SECS] [--partition SECS] [--seed S]`:
//!   broadcasts on a gossip network of N nodes and its report.
//! - `mesh-sim scale [--nodes N,N,...] [--only dht|gossip]`: every condition of
//!   `docs/SCALE.md` for each N, each run as its own process, printed as markdown tables.
//!
//! `--markdown` after `dht` or `gossip-scale` prints the report as rows of a `scale` table.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool

use std::process::ExitCode;
use std::time::Duration;

use mesh_sim::scale::{CONDITIONS, DHT_HEADER, GOSSIP_HEADER, System};
use mesh_sim::{dht, gossip_scale};

const USAGE: &str = "usage:
  mesh-sim gossip
  mesh-sim dht [--nodes N] [--lookups L] [--records R] [--churn PERCENT] [--loss PER_MILLE] [--settle SECS] [--seed S]
               [--steady] [--live-churn PERCENT] [--away SECS] [--partition SECS] [--window SECS] [--markdown]
  mesh-sim gossip-scale [--nodes N] [--degree D] [--messages M] [--body BYTES] [--publish SECS] [--drain SECS]
               [--loss PER_MILLE] [--churn PERCENT] [--away SECS] [--partition SECS] [--seed S] [--markdown]
  mesh-sim scale [--nodes N,N,...] [--only dht|gossip]";

/// `--name value` pairs, and the switches that were given.
type Flags<'a> = (Vec<(&'a str, u64)>, Vec<&'a str>);

/// Flags: `--name value` pairs, and the switches in `switches` (no value).
fn flags<'a>(args: &'a [String], switches: &[&str]) -> Result<Flags<'a>, String> {
    let mut values = Vec::new();
    let mut on = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if switches.contains(&flag.as_str()) {
            on.push(flag.as_str());
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .replace('_', "");
        let n = value.parse::<u64>().map_err(|e| format!("{flag}: {e}"))?;
        values.push((flag.as_str(), n));
    }
    Ok((values, on))
}

fn small(flag: &str, n: u64) -> Result<u32, String> {
    u32::try_from(n).map_err(|e| format!("{flag}: {e}"))
}

fn size(flag: &str, n: u64) -> Result<usize, String> {
    usize::try_from(n).map_err(|e| format!("{flag}: {e}"))
}

fn parse_dht(args: &[String]) -> Result<(dht::Options, bool), String> {
    let mut o = dht::Options::default();
    let (values, on) = flags(args, &["--steady", "--markdown"])?;
    for (flag, n) in values {
        match flag {
            "--nodes" => o.nodes = size(flag, n)?,
            "--lookups" => o.lookups = size(flag, n)?,
            "--records" => o.records = size(flag, n)?,
            "--churn" => o.churn_percent = small(flag, n)?.min(99),
            "--loss" => o.loss_per_mille = small(flag, n)?.min(1000),
            "--seed" => o.seed = n,
            "--settle" => o.settle = Duration::from_secs(n),
            "--live-churn" => o.live_churn_percent = small(flag, n)?.min(99),
            "--away" => o.away = Duration::from_secs(n),
            "--partition" => o.partition = Duration::from_secs(n),
            "--window" => o.window = Duration::from_secs(n),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    o.steady = on.contains(&"--steady");
    if o.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    Ok((o, on.contains(&"--markdown")))
}

fn parse_gossip(args: &[String]) -> Result<(gossip_scale::Options, bool), String> {
    let mut o = gossip_scale::Options::default();
    let (values, on) = flags(args, &["--markdown"])?;
    for (flag, n) in values {
        match flag {
            "--nodes" => o.nodes = size(flag, n)?,
            "--degree" => o.degree = size(flag, n)?,
            "--messages" => o.messages = size(flag, n)?,
            "--body" => o.body = size(flag, n)?.min(60_000),
            "--publish" => o.publish = Duration::from_secs(n),
            "--drain" => o.drain = Duration::from_secs(n),
            "--loss" => o.loss_per_mille = small(flag, n)?.min(1000),
            "--churn" => o.churn_percent = small(flag, n)?.min(99),
            "--away" => o.away = Duration::from_secs(n),
            "--partition" => o.partition = Duration::from_secs(n),
            "--seed" => o.seed = n,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if o.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    Ok((o, on.contains(&"--markdown")))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((what, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match what.as_str() {
        "gossip" if rest.is_empty() => {
            gossip();
            Ok(ExitCode::SUCCESS)
        }
        "dht" => parse_dht(rest).map(|(o, md)| run_dht(o, md, &args)),
        "gossip-scale" => parse_gossip(rest).map(|(o, md)| run_gossip(o, md, &args)),
        "scale" => scale(rest),
        _ => Err(String::new()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The arguments without `--markdown`: the command a row reproduces.
fn reproducible(args: &[String]) -> Vec<String> {
    args.iter()
        .filter(|a| *a != "--markdown")
        .cloned()
        .collect()
}

fn run_dht(options: dht::Options, markdown: bool, args: &[String]) -> ExitCode {
    let report = dht::run(options, |p| eprintln!("  {p}"));
    if markdown {
        eprintln!("{report}");
        for row in mesh_sim::scale::dht_rows(&report, &reproducible(args)) {
            println!("{row}");
        }
    } else {
        println!("{report}");
    }
    if report.misaddressed > 0 {
        eprintln!("error: nodes sent messages to wrong addresses");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run_gossip(options: gossip_scale::Options, markdown: bool, args: &[String]) -> ExitCode {
    let report = gossip_scale::run(options, |p| eprintln!("  {p}"));
    if markdown {
        eprintln!("{report}");
        println!(
            "{}",
            mesh_sim::scale::gossip_row(&report, &reproducible(args))
        );
    } else {
        println!("{report}");
    }
    if report.misaddressed > 0 {
        eprintln!("error: nodes sent messages to wrong addresses");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs every condition for every N, each as a child process, and prints the tables.
fn scale(args: &[String]) -> Result<ExitCode, String> {
    let mut nodes: Vec<usize> = vec![10_000, 100_000];
    let mut only: Option<System> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nodes" => {
                nodes = value
                    .split(',')
                    .map(|v| v.replace('_', "").parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--nodes: {e}"))?;
            }
            "--only" => {
                only = Some(match value.as_str() {
                    "dht" => System::Dht,
                    "gossip" => System::Gossip,
                    _ => return Err(format!("--only: {value}?")),
                });
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut failed = false;
    for c in CONDITIONS {
        if only.is_some_and(|s| s != c.system) {
            continue;
        }
        println!("\n### {}\n", c.title);
        println!(
            "{}",
            match c.system {
                System::Dht => DHT_HEADER,
                System::Gossip => GOSSIP_HEADER,
            }
        );
        for &n in &nodes {
            let mut child_args: Vec<String> = c.args.iter().map(ToString::to_string).collect();
            child_args.insert(1, "--nodes".into());
            child_args.insert(2, n.to_string());
            child_args.push("--markdown".into());
            eprintln!("running: mesh-sim {}", child_args.join(" "));
            let out = std::process::Command::new(&exe)
                .args(&child_args)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                failed = true;
                eprintln!("failed: {}", out.status);
            }
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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
