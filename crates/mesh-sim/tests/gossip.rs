//! Gossip in the simulator: a thousand nodes broadcast (delivery ratio, redundancy, last
//! delivery hop), a peer away while N messages spread catches up by pull within two rounds,
//! and a network split in half agrees again after it heals.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)] // test code

use std::time::Duration;

use mesh_gossip::GossipConfig;
use mesh_sim::NetConfig;
use mesh_sim::gossip::{all_ids, broadcast, holds_all, message, network};

#[test]
fn a_thousand_nodes_receive_broadcasts_by_push() {
    let (mut sim, ids) = network(1000, 4, GossipConfig::default(), NetConfig::default());
    let mut ratio = 0.0;
    let mut rmr = 0.0;
    let mut ldh = 0u8;
    let runs = 10;
    for r in 0..runs {
        let from = sim.rng().index(1000);
        let b = broadcast(
            &mut sim,
            &ids,
            from,
            format!("b{r}").as_bytes(),
            Duration::from_secs(10),
        );
        assert!(b.delivery_ratio >= 0.95, "run {r}: {b:?}");
        ratio += b.delivery_ratio;
        rmr += b.rmr;
        ldh = ldh.max(b.ldh);
    }
    let runs = f64::from(runs);
    println!(
        "1000 nodes, fanout 6, TTL 6: delivery ratio {:.4}, RMR {:.2}, max LDH {ldh}",
        ratio / runs,
        rmr / runs
    );
    assert!(ratio / runs >= 0.99);
    // Plain push with fanout 6 forwards each message up to 6 times per node: redundancy stays
    // below fanout - 1 because the TTL cuts the last hops short.
    assert!(rmr / runs < 5.0);
    assert!(ldh <= 6, "TTL bounds the hops");
    // The few nodes push missed get the messages by pull within a few intervals.
    let everything = all_ids(&sim);
    assert_eq!(everything.len(), 10);
    let mut minutes = 0;
    while !(0..1000).all(|i| holds_all(&sim, i, &everything)) {
        minutes += 1;
        assert!(
            minutes <= 5,
            "pull did not complete delivery in 5 intervals"
        );
        sim.run_until(sim.now().monotonic + Duration::from_secs(60));
        sim.take_events();
    }
    println!("every node holds every broadcast after {minutes} pull interval(s)");
}

/// Node 0 is away while `n` messages spread among the others, then comes back and pulls.
fn rejoin_after(n: usize) -> (usize, usize, usize) {
    // The messages are published in a burst of a few virtual seconds, far above the per-peer
    // push rate (20 a second) that protects a real node; it is lifted here because this test
    // is about the pull that follows, not about the burst.
    let config = GossipConfig {
        pushes_per_minute: 1_000_000,
        ..GossipConfig::default()
    };
    let (mut sim, ids) = network(10, 3, config, NetConfig::default());
    sim.set_online(0, false);
    for k in 0..n {
        let from = 1 + sim.rng().index(9);
        let m = message(&ids[from], format!("m{k}").as_bytes(), sim.now().unix);
        sim.with(from, |g, now| g.publish(m, now.unix, now.monotonic))
            .unwrap();
        if k % 200 == 199 {
            // Let pushes drain before the queue grows large.
            sim.run_until(sim.now().monotonic + Duration::from_millis(500));
        }
    }
    sim.run_until(sim.now().monotonic + Duration::from_secs(5));
    sim.take_events();
    let everything = all_ids(&sim);
    assert_eq!(everything.len(), n);
    assert!(sim.node(0).cache().is_empty(), "it was away");
    sim.set_online(0, true);
    let mut rounds = 0;
    while !holds_all(&sim, 0, &everything) && rounds < 2 {
        rounds += 1;
        sim.with(0, |g, now| g.pull_now(now.monotonic));
        sim.run_until(sim.now().monotonic + Duration::from_secs(5));
    }
    let held = sim.node(0).cache().len();
    (rounds, held, everything.len())
}

#[test]
fn a_peer_away_while_messages_spread_catches_up_within_two_pull_rounds() {
    for n in [10, 1000, 10_000] {
        let (rounds, held, total) = rejoin_after(n);
        println!("{n} messages: caught up in {rounds} pull round(s)");
        assert_eq!(
            held, total,
            "{n} messages: holds {held} of {total} after {rounds} rounds"
        );
        assert!(rounds <= 2);
    }
}

#[test]
fn a_network_split_in_half_agrees_again_after_it_heals() {
    let (mut sim, ids) = network(200, 4, GossipConfig::default(), NetConfig::default());
    let groups: Vec<u16> = (0..200).map(|i| u16::from(i % 2 == 1)).collect();
    sim.partition(Some(groups));
    for k in 0..40 {
        // Even k from the even half, odd k from the odd half.
        let from = (k * 7 % 100) * 2 + (k % 2);
        let m = message(&ids[from], format!("p{k}").as_bytes(), sim.now().unix);
        sim.with(from, |g, now| g.publish(m, now.unix, now.monotonic))
            .unwrap();
    }
    sim.run_until(sim.now().monotonic + Duration::from_secs(10));
    let everything = all_ids(&sim);
    assert_eq!(everything.len(), 40);
    // Split: no node holds the other half's messages.
    assert!((0..200).all(|i| sim.node(i).cache().len() <= 20));
    sim.partition(None);
    // Healed: periodic pulls (one random neighbour a minute) spread the rest.
    let mut minutes = 0;
    while !(0..200).all(|i| holds_all(&sim, i, &everything)) {
        minutes += 1;
        assert!(minutes <= 20, "no agreement after 20 pull intervals");
        sim.run_until(sim.now().monotonic + Duration::from_secs(60));
        sim.take_events();
    }
    println!("200 nodes agree again {minutes} pull interval(s) after the partition healed");
}

#[test]
fn a_digest_costs_about_a_byte_per_held_message_and_beats_listing_ids() {
    let r = mesh_sim::gossip::resync(1000, 100);
    assert_eq!(r.recovered, 100);
    // 1,199 filter bytes + 18 bytes of header for 1,000 ids.
    assert!(r.digest_bytes_per_held() < 1.3, "{r:?}");
    assert!(
        r.naive_bytes > 2 * (r.digest_bytes + r.response_bytes),
        "{r:?}"
    );
    // Little held, little sent.
    let fresh = mesh_sim::gossip::resync(0, 50);
    assert_eq!(fresh.recovered, 50);
    assert!(fresh.digest_bytes < 40, "{fresh:?}");
}
