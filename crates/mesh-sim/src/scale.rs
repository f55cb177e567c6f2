//! The scale matrix of `docs/SCALE.md`: the DHT and gossip scenarios under each condition (no
//! fault, continuous churn, 30% loss, a 50/50 partition that heals) for growing N, as
//! markdown tables. `mesh-sim scale` runs every row as a separate process (so that each
//! row's memory is measured from a fresh start) and prints the tables; each row carries the
//! command that reproduces it.

use crate::{dht, gossip_scale, human};

/// A system the matrix covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// `mesh-sim dht`.
    Dht,
    /// `mesh-sim gossip-scale`.
    Gossip,
}

/// One condition: a title and the flags that select it (besides `--nodes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The system.
    pub system: System,
    /// A title for its table.
    pub title: &'static str,
    /// Subcommand and flags, without `--nodes`.
    pub args: &'static [&'static str],
}

/// Every condition, in the order of `docs/SCALE.md`.
pub const CONDITIONS: &[Condition] = &[
    Condition {
        system: System::Dht,
        title: "DHT, no loss: steady lookups, then 20% of the nodes gone at once",
        args: &["dht", "--lookups", "200", "--steady"],
    },
    Condition {
        system: System::Dht,
        title: "DHT under continuous churn: 20% offline at any time, 300 s away each",
        args: &[
            "dht",
            "--lookups",
            "200",
            "--churn",
            "0",
            "--live-churn",
            "20",
        ],
    },
    Condition {
        system: System::Dht,
        title: "DHT under 30% packet loss (from the first join on)",
        args: &[
            "dht",
            "--lookups",
            "200",
            "--churn",
            "0",
            "--loss",
            "300",
            "--steady",
        ],
    },
    Condition {
        system: System::Dht,
        title: "DHT split 50/50 for 600 s, then healed",
        args: &[
            "dht",
            "--lookups",
            "200",
            "--churn",
            "0",
            "--partition",
            "600",
        ],
    },
    Condition {
        system: System::Gossip,
        title: "Gossip, no loss",
        args: &["gossip-scale"],
    },
    Condition {
        system: System::Gossip,
        title: "Gossip under continuous churn: 20% offline at any time, 300 s away each",
        args: &["gossip-scale", "--churn", "20"],
    },
    Condition {
        system: System::Gossip,
        title: "Gossip under 30% packet loss",
        args: &["gossip-scale", "--loss", "300"],
    },
    Condition {
        system: System::Gossip,
        title: "Gossip split 50/50 for 600 s (publishing on both sides), then healed",
        args: &["gossip-scale", "--partition", "600"],
    },
];

/// The command that reproduces a row.
pub fn command(args: &[String]) -> String {
    format!("cargo xtask sim {}", args.join(" "))
}

fn gigabytes(b: Option<u64>) -> String {
    #[allow(clippy::cast_precision_loss)] // for display
    b.map_or_else(|| "-".into(), |b| format!("{:.1} GB", b as f64 / 1e9))
}

fn count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (k, c) in s.chars().enumerate() {
        if k > 0 && (s.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn lat(p: &crate::Percentiles) -> String {
    if p.count == 0 {
        return "-".into();
    }
    format!(
        "{} / {} / {} / {}",
        human(p.p50),
        human(p.p90),
        human(p.p99),
        human(p.max)
    )
}

/// Header of a DHT table.
pub const DHT_HEADER: &str = "| nodes | phase | at closest node | unfinished (over 120 s) | mean hops | latency p50 / p90 / p99 / max | records found | bytes / node / min | memory / node | peak RSS | wall | command |\n|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|";

/// Rows of a DHT table for `r`, run with `args`.
pub fn dht_rows(r: &dht::Report, args: &[String]) -> Vec<String> {
    let n = count(r.options.nodes);
    let mem = r.bytes_per_node.map_or_else(
        || "-".into(),
        |b| format!("{} B", count(usize::try_from(b).unwrap_or(0))),
    );
    let peak = gigabytes(r.peak_rss);
    let wall = format!("{:.0} s", r.wall.as_secs_f64());
    let cmd = format!("`{}`", command(args));
    let mut rows = Vec::new();
    let row = |phase: &str, s: &dht::LookupStats, records: String, bytes: String| {
        format!(
            "| {n} | {phase} | {}/{} | {} ({}) | {:.2} | {} | {records} | {bytes} | {mem} | {peak} | {wall} | {cmd} |",
            s.exact,
            s.count,
            s.unfinished,
            s.slow,
            s.hops,
            lat(&s.latency),
        )
    };
    rows.push(row(
        &format!(
            "all online, 50 at a time (joined: {:.0} B sent / node)",
            r.join_bytes_per_node()
        ),
        &r.before,
        "-".into(),
        "-".into(),
    ));
    for p in &r.phases {
        rows.push(row(
            &p.name,
            &p.lookups,
            format!("{}/{}", p.records.1, p.records.0),
            format!("{:.0}", p.bytes_per_node_minute()),
        ));
    }
    if r.options.churn_percent > 0 {
        rows.push(row(
            &format!("{}% offline at once, 50 at a time", r.options.churn_percent),
            &r.after,
            format!("{}/{}", r.records_found, r.records_put),
            "-".into(),
        ));
    }
    rows
}

/// Header of a gossip table.
pub const GOSSIP_HEADER: &str = "| nodes | push reach (mean / lowest) | held at end (online) | all online hold all, after | latency p50 / p90 / p99 / max | by push: p99 / max | copies by pull | bytes / node / min (busiest) | memory / node (built / end) | peak RSS | wall | notes | command |\n|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---|---|";

/// The row of a gossip table for `r`, run with `args`.
pub fn gossip_row(r: &gossip_scale::Report, args: &[String]) -> String {
    let mem = match (r.memory_built, r.memory_end) {
        (Some(a), Some(b)) => format!(
            "{} / {} B",
            count(usize::try_from(a).unwrap_or(0)),
            count(usize::try_from(b).unwrap_or(0))
        ),
        _ => "-".into(),
    };
    let mut notes = Vec::new();
    if r.options.churn_percent > 0 {
        notes.push(format!(
            "{} copies missed while away, {} received after coming back by the end",
            count(usize::try_from(r.missed_while_away).unwrap_or(0)),
            count(usize::try_from(r.recovered_by_end).unwrap_or(0))
        ));
        notes.push(match r.caught_up_after {
            Some(d) => format!(
                "churn stopped: all {} nodes hold all {:.1} s later",
                count(r.options.nodes),
                d.as_secs_f64()
            ),
            None => "churn stopped: not all caught up".into(),
        });
    }
    if !r.options.partition.is_zero() {
        notes.push(format!(
            "{} copies crossed before healing",
            r.crossed_partition
        ));
    }
    let notes = if notes.is_empty() {
        "-".into()
    } else {
        notes.join("; ")
    };
    format!(
        "| {} | {:.2}% / {:.2}% | {:.4}% ({}/{} complete) | {} | {} | {} / {} | {} | {:.0} ({:.0}) | {mem} | {} | {:.0} s | {notes} | `{}` |",
        count(r.options.nodes),
        100.0 * r.push_ratio,
        100.0 * r.push_ratio_min,
        100.0 * r.final_ratio,
        count(r.complete_at_end),
        count(r.online_at_end),
        r.converged_after
            .map_or_else(|| "never".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        lat(&r.latency),
        human(r.push_latency.p99),
        human(r.push_latency.max),
        count(usize::try_from(r.pulled).unwrap_or(0)),
        r.bytes_per_node_minute(),
        r.max_node_bytes_minute(),
        gigabytes(r.peak_rss),
        r.wall.as_secs_f64(),
        command(args)
    )
}
