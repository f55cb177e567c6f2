//! The `mesh-sim` command line as `cargo xtask sim` and `docs/SCALE.md` use it: bad input is
//! refused with the reason and the usage (exit 2), each scenario prints its report or its
//! markdown rows with the command that reproduces them, and `scale` prints every condition's
//! table, one row per N.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh-sim"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a command that must succeed; returns its standard output.
fn ok(args: &[&str]) -> String {
    let out = sim(args);
    assert!(
        out.status.success(),
        "mesh-sim {args:?}: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn bad_input_is_refused_with_the_reason_and_the_usage() {
    for (args, reason) in [
        (&[][..], ""),
        (&["nonsense"][..], ""),
        (&["gossip", "--nodes", "5"][..], ""),
        (&["dht", "--nodes", "1"][..], "--nodes must be at least 2"),
        (&["dht", "--bogus", "3"][..], "unknown flag --bogus"),
        (&["dht", "--nodes"][..], "--nodes needs a value"),
        (
            &["dht", "--lookups", "many"][..],
            "--lookups: invalid digit",
        ),
        (&["dht", "--churn", "-1"][..], "--churn: invalid digit"),
        (
            &["gossip-scale", "--nodes", "0"][..],
            "--nodes must be at least 2",
        ),
        (
            &["gossip-scale", "--steady", "1"][..],
            "unknown flag --steady",
        ),
        (
            &["gossip-scale", "--degree", "2x"][..],
            "--degree: invalid digit",
        ),
        (&["scale", "--only", "blob"][..], "--only: blob?"),
        (&["scale", "--nodes", "10,x"][..], "--nodes: invalid digit"),
        (&["scale", "--nodes"][..], "--nodes needs a value"),
        (&["scale", "--fast", "1"][..], "unknown flag --fast"),
    ] {
        let out = sim(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(reason), "{args:?}: {err}");
        assert!(err.contains("usage:"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
    }
}

#[test]
fn dht_prints_its_report_or_rows_that_reproduce_it() {
    let args = [
        "dht",
        "--nodes",
        "1_20",
        "--lookups",
        "20",
        "--records",
        "3",
        "--churn",
        "10",
        "--window",
        "120",
        "--seed",
        "7",
        "--steady",
    ];
    let report = ok(&args);
    assert!(report.contains("nodes 120, loss 0‰, churn 10%"), "{report}");
    assert!(report.contains("seed 7"), "{report}");
    let mut md = args.to_vec();
    md.push("--markdown");
    let rows = ok(&md);
    let rows: Vec<&str> = rows.lines().collect();
    // All online first, then the steady phase(s), then the lookups after 10% left at once.
    assert!(rows.len() >= 3, "{rows:?}");
    assert!(
        rows[0].contains("| all online, 50 at a time"),
        "{}",
        rows[0]
    );
    assert!(
        rows[rows.len() - 1].contains("| 10% offline at once, 50 at a time |"),
        "{rows:?}"
    );
    for row in &rows {
        assert!(row.starts_with("| 120 |"), "{row}");
        // The reproducing command, without --markdown.
        assert!(
            row.contains(&format!("cargo xtask sim {}", args.join(" "))),
            "{row}"
        );
        assert!(!row.contains("--markdown"), "{row}");
        // As many columns as the table's header.
        let header = mesh_sim::scale::DHT_HEADER.lines().next().unwrap();
        assert_eq!(
            row.matches(" | ").count(),
            header.matches(" | ").count(),
            "{row}"
        );
    }
}

#[test]
fn gossip_scale_prints_its_report_or_a_row_that_reproduces_it() {
    let args = [
        "gossip-scale",
        "--nodes",
        "80",
        "--degree",
        "6",
        "--messages",
        "4",
        "--body",
        "100",
        "--publish",
        "30",
        "--drain",
        "300",
        "--loss",
        "100",
        "--seed",
        "3",
    ];
    let report = ok(&args);
    assert!(report.contains("nodes 80"), "{report}");
    assert!(
        report.contains("4 messages of 100 body bytes over 30 s"),
        "{report}"
    );
    let mut md = args.to_vec();
    md.push("--markdown");
    let row = ok(&md);
    let row = row.trim_end();
    assert_eq!(row.lines().count(), 1, "{row}");
    assert!(row.starts_with("| 80 |"), "{row}");
    assert!(
        row.contains(&format!("cargo xtask sim {}", args.join(" "))),
        "{row}"
    );
    let header = mesh_sim::scale::GOSSIP_HEADER.lines().next().unwrap();
    assert_eq!(
        row.matches(" | ").count(),
        header.matches(" | ").count(),
        "{row}"
    );
}

#[test]
fn scale_prints_a_table_per_condition_with_a_row_per_n() {
    let out = ok(&["scale", "--nodes", "40", "--only", "gossip"]);
    let conditions: Vec<_> = mesh_sim::scale::CONDITIONS
        .iter()
        .filter(|c| c.system == mesh_sim::scale::System::Gossip)
        .collect();
    assert_eq!(out.matches("\n### ").count(), conditions.len(), "{out}");
    for c in conditions {
        let at = out
            .find(&format!("### {}", c.title))
            .unwrap_or_else(|| panic!("no table for {:?}:\n{out}", c.title));
        let rest = &out[at..];
        let table = rest[4..]
            .find("\n### ")
            .map_or(rest, |end| &rest[..end + 4]);
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| 40 |")).collect();
        assert_eq!(rows.len(), 1, "{table}");
        assert!(
            rows[0].contains(&format!("cargo xtask sim {} --nodes 40", c.args[0])),
            "{}",
            rows[0]
        );
    }
    assert!(
        !out.contains("### DHT"),
        "--only gossip ran the DHT:\n{out}"
    );
}

#[test]
fn gossip_prints_the_resync_cost_table() {
    let out = ok(&["gossip"]);
    let rows: Vec<&str> = out.lines().skip(2).collect();
    assert_eq!(rows.len(), 6, "{out}");
    for row in rows {
        let cells: Vec<u64> = row
            .trim_matches('|')
            .split('|')
            .take(3)
            .map(|c| c.trim().parse().unwrap())
            .collect();
        let (missing, recovered) = (cells[1], cells[2]);
        assert!(
            recovered <= missing && recovered * 10 >= missing * 9,
            "one pull recovers (nearly) all that is missing: {row}"
        );
    }
}
