//! The DHT core at scale in the simulator (run in the normal test suite): a thousand nodes
//! join through each other, find the closest node to random keys, store records, lose a fifth
//! of the network and still find them; lookups survive a fifth of messages lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)] // test code

use std::time::Duration;

use mesh_sim::dht::{Options, run};

#[test]
fn a_thousand_nodes_find_each_other_and_keep_records_through_churn() {
    let report = run(
        Options {
            nodes: 1000,
            lookups: 100,
            records: 20,
            churn_percent: 20,
            loss_per_mille: 0,
            settle: Duration::ZERO,
            seed: 1,
            ..Options::default()
        },
        |_| {},
    );
    println!("{report}");
    assert_eq!(
        report.misaddressed, 0,
        "every message went to its peer's address"
    );
    assert!(report.contacts >= 20.0, "tables hold at least k contacts");
    assert!(report.before.exact >= 97, "{}", report.before.exact);
    assert!(report.before.hops <= 5.0);
    assert_eq!(report.records_put, 20);
    // A fifth of the nodes gone at once: lookups still end at the closest live node, and
    // records stored at k = 20 nodes are all still found.
    assert!(report.after.exact >= 95, "{}", report.after.exact);
    assert_eq!(report.records_found, 20);
}

#[test]
fn lookups_survive_a_fifth_of_messages_lost() {
    let report = run(
        Options {
            nodes: 300,
            lookups: 50,
            records: 5,
            churn_percent: 0,
            loss_per_mille: 200,
            // Joining under loss leaves gaps that the hourly bucket refresh fills.
            settle: Duration::from_secs(3700),
            seed: 2,
            ..Options::default()
        },
        |_| {},
    );
    println!("{report}");
    // Measured (seed 2): 49 and 47 of 50; over 200 lookups 92% and 86.5% (and 94% and 92.5%
    // without the hour of maintenance). The misses are closest nodes whose three tries were
    // all lost. The bar is set below what was measured.
    assert!(report.before.exact >= 42, "{}", report.before.exact);
    assert!(report.after.exact >= 40, "{}", report.after.exact);
    assert!(
        report.records_put == 5 && report.records_found == 5,
        "{report:?}"
    );
}

#[test]
fn runs_replay_exactly_from_their_seed() {
    let o = Options {
        nodes: 200,
        lookups: 20,
        records: 3,
        churn_percent: 10,
        loss_per_mille: 50,
        settle: Duration::from_secs(120),
        seed: 9,
        ..Options::default()
    };
    let (a, b) = (run(o, |_| {}), run(o, |_| {}));
    assert_eq!(a.delivered, b.delivered);
    assert_eq!(a.before, b.before);
    assert_eq!(a.after, b.after);
}
