//! The scale scenarios at small N (hundreds of nodes, fast in debug builds): what
//! `docs/SCALE.md` measures at 10,000 and 100,000 nodes holds here as behaviour. Byte counters
//! count what was sent and delivered; gossip under 30% loss reaches every online node once
//! pull runs; a partition keeps every copy on its side and converges once healed; nodes that
//! were away while messages spread catch up by pull; DHT lookups keep ending at the closest
//! node under continuous churn and within each half of a partition. No wall-clock asserts:
//! only what happened in virtual time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)] // test code

use std::collections::VecDeque;
use std::time::Duration;

use mesh_crypto::{Identity, PeerId};
use mesh_sim::{Action, Churn, NetConfig, Node, Now, Percentiles, Sim, address, dht, gossip_scale};

/// Sends what it is told to and remembers the length of everything it received.
struct Counter {
    out: VecDeque<Action<()>>,
    received: Vec<usize>,
}

impl Node for Counter {
    type Event = ();
    fn handle(&mut self, _from: PeerId, _address: &str, bytes: &[u8], _now: Now) {
        self.received.push(bytes.len());
    }
    fn tick(&mut self, _now: Now) {}
    fn next_deadline(&self) -> Duration {
        Duration::MAX
    }
    fn poll(&mut self) -> Option<Action<()>> {
        self.out.pop_front()
    }
}

fn counters(n: usize, loss_per_mille: u32) -> Sim<Counter> {
    let mut sim = Sim::new(NetConfig {
        loss_per_mille,
        ..NetConfig::default()
    });
    for i in 0..n {
        let peer = Identity::from_seed(&[u8::try_from(i).unwrap() + 1; 32]).peer_id();
        sim.add(
            peer,
            Counter {
                out: VecDeque::new(),
                received: Vec::new(),
            },
        );
    }
    sim
}

fn send(sim: &mut Sim<Counter>, from: usize, to: usize, len: usize) {
    let peer = sim.peer(to);
    sim.with(from, |c, _| {
        c.out.push_back(Action::Send {
            to: peer,
            address: address(to),
            bytes: vec![7; len],
        });
    });
}

#[test]
fn byte_counters_count_what_was_sent_and_what_was_delivered() {
    let mut sim = counters(3, 300);
    let mut sent = 0u64;
    for k in 0..1000 {
        let len = 1 + k % 97;
        send(&mut sim, 0, 1, len);
        sent += len as u64;
    }
    sim.run_until(Duration::from_secs(1));
    let s = sim.stats();
    let received: usize = sim.node(1).received.iter().sum();
    assert_eq!(
        s.bytes_sent, sent,
        "everything handed to the network counts as sent"
    );
    assert_eq!(sim.bytes_sent_by(0), sent);
    assert_eq!(sim.bytes_sent_by(1), 0);
    assert_eq!(
        s.bytes_delivered, received as u64,
        "delivered = what the receiver got"
    );
    assert!(s.lost > 200 && s.bytes_delivered < sent, "{s:?}");

    // Across a partition: sent (the sender's link carried it), not delivered.
    let mut sim = counters(3, 0);
    sim.partition(Some(vec![0, 1, 1]));
    send(&mut sim, 0, 1, 100);
    send(&mut sim, 1, 2, 50);
    // From an offline node: neither (it has no link), and to an offline node: sent only.
    sim.set_online(2, false);
    send(&mut sim, 2, 1, 1000);
    send(&mut sim, 1, 2, 10);
    sim.run_until(Duration::from_secs(1));
    let s = sim.stats();
    assert_eq!(s.bytes_sent, 160);
    assert_eq!(s.bytes_delivered, 0, "{s:?}");
    assert_eq!(
        (
            sim.bytes_sent_by(0),
            sim.bytes_sent_by(1),
            sim.bytes_sent_by(2)
        ),
        (100, 60, 0)
    );
    assert_eq!((s.partitioned, s.offline), (1, 3), "{s:?}");
}

#[test]
fn churn_keeps_its_share_offline_and_brings_each_node_back_after_its_time_away() {
    let mut sim = counters(200, 0);
    let away = Duration::from_secs(60);
    let step = Duration::from_secs(10);
    let mut churn = Churn::new(200, 20, away, step);
    let mut away_since = vec![None; 200];
    let mut returns = 0;
    for _ in 0..60 {
        let now = sim.now().monotonic;
        let s = churn.advance(&mut sim, |i| i != 0);
        for &i in &s.back {
            let since = away_since[i].take().expect("it was away");
            if since > Duration::ZERO {
                assert_eq!(
                    now.saturating_sub(since),
                    away,
                    "back after exactly its time away"
                );
            }
            returns += 1;
        }
        for &i in &s.left {
            assert_ne!(i, 0, "node 0 may not leave");
            assert!(!s.back.contains(&i), "a node just back stays a step");
            away_since[i] = Some(now);
        }
        let offline = (0..200).filter(|&i| !sim.is_online(i)).count();
        assert_eq!(offline, 40, "20% offline at every step");
        sim.run_until(now + step);
    }
    // Ten minutes, each node away for one: the offline set turned over about ten times.
    assert!(returns > 300, "{returns}");
    churn.stop(&mut sim);
    assert!((0..200).all(|i| sim.is_online(i)));
}

#[test]
fn percentiles_are_nearest_rank() {
    let mut ms: Vec<u32> = (1..=1000).rev().collect();
    let p = Percentiles::of_millis(&mut ms);
    assert_eq!(p.count, 1000);
    assert_eq!(p.p50, Duration::from_millis(500));
    assert_eq!(p.p90, Duration::from_millis(900));
    assert_eq!(p.p99, Duration::from_millis(990));
    assert_eq!(p.max, Duration::from_secs(1));
    assert_eq!(Percentiles::of_millis(&mut []), Percentiles::default());
}

fn small_gossip() -> gossip_scale::Options {
    gossip_scale::Options {
        nodes: 300,
        messages: 10,
        publish: Duration::from_secs(60),
        drain: Duration::from_secs(900),
        ..gossip_scale::Options::default()
    }
}

#[test]
fn gossip_under_30_percent_loss_reaches_every_online_node_once_pull_runs() {
    let r = gossip_scale::run(
        gossip_scale::Options {
            loss_per_mille: 300,
            ..small_gossip()
        },
        |_| {},
    );
    println!("{r}");
    assert_eq!(r.misaddressed, 0);
    assert_eq!(r.bad_input, 0);
    assert_eq!(r.published, 10);
    let delivered_percent = r.bytes_delivered * 100 / r.bytes_sent;
    assert!(
        (65..75).contains(&delivered_percent),
        "about 30% of the bytes sent were lost: {delivered_percent}% delivered"
    );
    assert!(r.push_ratio < 1.0, "loss hides some nodes from push");
    assert!(r.pulled > 0, "pull delivered the rest");
    assert_eq!(
        r.complete_at_end, 300,
        "every node holds every message: {r:?}"
    );
    assert!(r.converged_after.is_some());
    assert_eq!(
        r.latency.count,
        300 * 10 - 10,
        "every node's first copy, publishers aside"
    );
    assert!(r.bytes_per_node_minute() > 0.0);
}

#[test]
fn a_partition_keeps_copies_on_their_side_and_converges_once_healed() {
    let r = gossip_scale::run(
        gossip_scale::Options {
            partition: Duration::from_secs(300),
            ..small_gossip()
        },
        |_| {},
    );
    println!("{r}");
    assert_eq!(r.crossed_partition, 0, "nothing crossed before the healing");
    // Every message was published on one side: the other half (about 150 nodes) could only
    // get it by pull after the healing, 300 s later at the earliest.
    assert!(r.latency.max >= Duration::from_secs(240), "{:?}", r.latency);
    assert!(r.pulled >= 10 * 140, "{}", r.pulled);
    assert_eq!(r.complete_at_end, r.online_at_end, "{r:?}");
    let after = r.converged_after.expect("converged after the healing");
    assert!(after < r.options.drain, "{after:?}");
}

#[test]
fn nodes_away_while_messages_spread_catch_up_by_pull() {
    let r = gossip_scale::run(
        gossip_scale::Options {
            churn_percent: 20,
            away: Duration::from_secs(60),
            publish: Duration::from_secs(300),
            drain: Duration::from_secs(300),
            ..small_gossip()
        },
        |_| {},
    );
    println!("{r}");
    let (left, back) = r.churned;
    assert!(
        left > 300 && back > 200,
        "membership rotated: {left} left, {back} back"
    );
    assert_eq!(r.online_at_end, 240, "20% offline at the end");
    // About 20% of (node, message) pairs were offline at publication.
    assert!(r.missed_while_away >= 10 * 40, "{}", r.missed_while_away);
    assert!(r.recovered_by_end > 0);
    assert!(
        r.pulled >= r.recovered_by_end,
        "what was missed came by pull"
    );
    assert_eq!(
        r.recovered_after_stop, r.missed_while_away,
        "every one caught up"
    );
    assert!(r.caught_up_after.is_some());
    assert_eq!(r.complete_at_end, r.online_at_end, "{r:?}");
}

#[test]
fn gossip_runs_replay_from_their_seed() {
    let o = gossip_scale::Options {
        nodes: 120,
        messages: 5,
        loss_per_mille: 100,
        churn_percent: 10,
        away: Duration::from_secs(30),
        drain: Duration::from_secs(120),
        ..gossip_scale::Options::default()
    };
    let (a, b) = (gossip_scale::run(o, |_| {}), gossip_scale::run(o, |_| {}));
    assert_eq!(a.bytes_sent, b.bytes_sent);
    assert_eq!(a.latency, b.latency);
    assert_eq!(a.churned, b.churned);
    assert_eq!(a.pulled, b.pulled);
}

fn small_dht() -> dht::Options {
    dht::Options {
        nodes: 300,
        lookups: 60,
        records: 5,
        churn_percent: 0,
        window: Duration::from_secs(300),
        ..dht::Options::default()
    }
}

#[test]
fn dht_lookups_keep_finding_the_closest_node_under_continuous_churn() {
    let r = dht::run(
        dht::Options {
            live_churn_percent: 20,
            away: Duration::from_secs(60),
            ..small_dht()
        },
        |_| {},
    );
    println!("{r}");
    assert_eq!(r.misaddressed, 0);
    let [p] = r.phases.as_slice() else {
        panic!("one timed phase: {:?}", r.phases);
    };
    assert!(
        p.churned.0 > 200,
        "nodes left during the lookups: {:?}",
        p.churned
    );
    assert!(p.churned.1 > 100, "and came back: {:?}", p.churned);
    assert_eq!(p.lookups.unfinished, 0);
    // Judged against the closest node online when each lookup ended.
    assert!(p.lookups.exact >= 54, "{}", p.lookups);
    assert_eq!(p.records, (5, 5), "records survive the churn");
    assert_eq!(p.lookups.latency.count, 60);
    // Leavers are silent: some lookups wait for timeouts (5 s each).
    assert!(
        p.lookups.latency.max >= Duration::from_secs(5),
        "{}",
        p.lookups
    );
    assert!(p.bytes_sent > 0 && p.bytes_per_node_minute() > 0.0);
    assert!(r.join_bytes > 0);
    assert!(r.bytes_sent >= r.join_bytes + p.bytes_sent);
}

#[test]
fn dht_lookups_stay_within_each_half_of_a_partition_and_span_the_network_after_it_heals() {
    let r = dht::run(
        dht::Options {
            partition: Duration::from_secs(300),
            ..small_dht()
        },
        |_| {},
    );
    println!("{r}");
    let [split, healed] = r.phases.as_slice() else {
        panic!("two timed phases: {:?}", r.phases);
    };
    // Judged against the closest node in the asker's half: a lookup that ignored the
    // partition would be right about half the time.
    let finished = split.lookups.count - split.lookups.unfinished;
    assert!(finished >= 50, "{}", split.lookups);
    assert!(
        split.lookups.exact >= finished * 9 / 10,
        "{}",
        split.lookups
    );
    assert_eq!(split.records.1, 5, "records have copies in both halves");
    assert_eq!(healed.lookups.unfinished, 0);
    assert!(healed.lookups.exact >= 57, "{}", healed.lookups);
    assert_eq!(healed.records, (5, 5));
}

#[test]
fn dht_steady_phase_reports_latency_and_bytes() {
    let r = dht::run(
        dht::Options {
            steady: true,
            loss_per_mille: 300,
            settle: Duration::from_secs(3700),
            ..small_dht()
        },
        |_| {},
    );
    println!("{r}");
    let [p] = r.phases.as_slice() else {
        panic!("one timed phase: {:?}", r.phases);
    };
    // Under 30% loss, lookups still end (timeouts and retries), mostly at the closest node.
    assert_eq!(p.lookups.unfinished, 0, "{}", p.lookups);
    assert!(p.lookups.exact >= 36, "{}", p.lookups);
    assert!(r.settle_bytes_per_node_minute().unwrap() > 0.0);
    assert!(p.bytes_per_node_minute() > 0.0);
}
