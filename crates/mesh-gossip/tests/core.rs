//! The gossip core against its neighbours: verify before keep or forward, dedup, TTL, fanout,
//! digests answered with exactly what is missing, and hostile peers (forged messages,
//! unsolicited answers, digest floods, byte budgets) refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_gossip::bloom::Bloom;
use mesh_gossip::message::{Digest, Frame, message_id};
use mesh_gossip::node::{
    DIGEST_SPACE_PER_MINUTE, Event, Gossip, GossipConfig, Output, PublishError,
};
use mesh_gossip::{GossipMessage, GossipPayload};

const NOW: UnixMillis = UnixMillis(1_000_000);

fn identity(i: u8) -> Identity {
    Identity::from_seed(&[i; 32])
}

fn message(author: &Identity, body: &[u8]) -> Vec<u8> {
    GossipMessage::sign(
        author,
        GossipPayload {
            topic: b"t".to_vec(),
            body: body.to_vec(),
        },
        NOW,
        UnixMillis(NOW.0 + 3_600_000),
    )
    .unwrap()
    .into_bytes()
}

/// A node with `n` neighbours (peers 10, 11, ...), outputs of joining drained.
fn node(n: u8, config: GossipConfig) -> (Gossip, Vec<PeerId>) {
    let mut g = Gossip::new(identity(1).peer_id(), config, 7);
    let peers: Vec<PeerId> = (0..n).map(|i| identity(10 + i).peer_id()).collect();
    for p in &peers {
        g.add_neighbour(*p, "addr", Duration::ZERO);
    }
    drain(&mut g);
    (g, peers)
}

fn drain(g: &mut Gossip) -> (Vec<(PeerId, Frame)>, Vec<Event>) {
    let mut sent = Vec::new();
    let mut events = Vec::new();
    while let Some(o) = g.poll_output() {
        match o {
            Output::Send { to, bytes, .. } => sent.push((to, Frame::decode(&bytes).unwrap())),
            Output::Event(e) => events.push(e),
        }
    }
    (sent, events)
}

/// A DIGEST whose filter holds nothing: "send me everything in this partition".
fn empty_digest(seed: u64, partition_bits: u8, partition: u16) -> Vec<u8> {
    Frame::Digest(Digest {
        seed,
        partition_bits,
        partition,
        filter: Bloom::for_items(1, 0.01),
    })
    .encode()
}

fn push(ttl: u8, m: &[u8]) -> Vec<u8> {
    Frame::Push {
        ttl,
        hops: 0,
        message: m.to_vec(),
    }
    .encode()
}

#[test]
fn a_pushed_message_is_verified_kept_reported_once_and_forwarded_to_a_fanout() {
    let (mut g, peers) = node(10, GossipConfig::default());
    let m = message(&identity(2), b"hello");
    g.handle_message(peers[0], &push(3, &m), NOW, Duration::from_secs(1));
    let (sent, events) = drain(&mut g);
    assert!(
        matches!(&events[..], [Event::Message { body, hops: 1, pulled: false, .. }] if body == b"hello")
    );
    // Six of the other nine neighbours, not the sender, with the TTL lowered.
    assert_eq!(sent.len(), 6);
    assert!(sent.iter().all(|(to, f)| *to != peers[0]
        && matches!(
            f,
            Frame::Push {
                ttl: 2,
                hops: 1,
                ..
            }
        )));
    // The same message again (from anyone): nothing.
    g.handle_message(peers[5], &push(3, &m), NOW, Duration::from_secs(1));
    assert_eq!(drain(&mut g), (vec![], vec![]));
    assert_eq!(g.stats().duplicates, 1);
    // TTL 1: kept and reported, not forwarded.
    let last = message(&identity(2), b"last hop");
    g.handle_message(peers[0], &push(1, &last), NOW, Duration::from_secs(1));
    let (sent, events) = drain(&mut g);
    assert!(sent.is_empty());
    assert_eq!(events.len(), 1);
}

#[test]
fn forged_and_expired_messages_are_neither_kept_nor_forwarded() {
    let (mut g, peers) = node(5, GossipConfig::default());
    let mut forged = message(&identity(2), b"x");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    g.handle_message(peers[0], &push(5, &forged), NOW, Duration::ZERO);
    let (sent, events) = drain(&mut g);
    assert!(sent.is_empty());
    assert!(matches!(
        &events[..],
        [Event::BadInput {
            reason: "message",
            ..
        }]
    ));
    assert!(g.cache().is_empty());
    // Forged bytes are not remembered as seen: the genuine message still gets through.
    g.handle_message(
        peers[0],
        &push(5, &message(&identity(2), b"x")),
        NOW,
        Duration::ZERO,
    );
    assert_eq!(g.cache().len(), 1);
    // Expired.
    let old = message(&identity(2), b"old");
    g.handle_message(
        peers[0],
        &push(5, &old),
        UnixMillis(NOW.0 + 3_600_000),
        Duration::ZERO,
    );
    assert_eq!(g.cache().len(), 1);
    // Garbage frames.
    g.handle_message(peers[0], b"\x01\x09", NOW, Duration::ZERO);
    assert!(matches!(
        &drain(&mut g).1[..],
        [
            ..,
            Event::BadInput {
                reason: "frame",
                ..
            }
        ]
    ));
    // Publishing twice is refused.
    let m = message(&identity(1), b"mine");
    g.publish(m.clone(), NOW, Duration::ZERO).unwrap();
    assert_eq!(
        g.publish(m, NOW, Duration::ZERO),
        Err(PublishError::Duplicate)
    );
}

#[test]
fn a_digest_is_answered_with_exactly_what_its_filter_lacks() {
    let (mut g, peers) = node(3, GossipConfig::default());
    let held: Vec<Vec<u8>> = (0..50u8).map(|i| message(&identity(2), &[i])).collect();
    for m in &held {
        g.publish(m.clone(), NOW, Duration::ZERO).unwrap();
    }
    drain(&mut g);
    // The peer holds the first 30.
    let seed = 99;
    let mut filter = Bloom::for_items(30, 0.0001);
    for m in &held[..30] {
        filter.insert(&message_id(m).unwrap(), seed);
    }
    let digest = Frame::Digest(Digest {
        seed,
        partition_bits: 0,
        partition: 0,
        filter,
    })
    .encode();
    g.handle_message(peers[1], &digest, NOW, Duration::from_secs(1));
    let (sent, _) = drain(&mut g);
    let mut got: Vec<Vec<u8>> = sent
        .into_iter()
        .flat_map(|(to, f)| {
            assert_eq!(to, peers[1]);
            match f {
                Frame::Messages(list) => list,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    got.sort();
    let mut want = held[30..].to_vec();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn unsolicited_answers_and_digest_floods_are_refused() {
    let (mut g, peers) = node(3, GossipConfig::default());
    // MESSAGES from a peer we never sent a digest to.
    let outsider = identity(99).peer_id();
    let answer = Frame::Messages(vec![message(&identity(2), b"sneak")]).encode();
    g.handle_message(outsider, &answer, NOW, Duration::ZERO);
    assert!(matches!(
        &drain(&mut g).1[..],
        [Event::BadInput {
            reason: "unsolicited",
            ..
        }]
    ));
    assert!(g.cache().is_empty());
    // From a neighbour we pulled from (on joining): accepted.
    g.handle_message(peers[0], &answer, NOW, Duration::from_secs(1));
    assert_eq!(g.cache().len(), 1);
    // ... but not once the pull window has passed.
    let late = Frame::Messages(vec![message(&identity(2), b"late")]).encode();
    g.handle_message(peers[0], &late, NOW, Duration::from_secs(1000));
    assert_eq!(g.cache().len(), 1);

    // Digests are charged for the share of the id space they cover: four whole-space digests
    // a minute are answered, the fifth refused; a minute later accepted again. Digests of
    // a 64th each get 256 a minute.
    let empty = empty_digest(1, 0, 0);
    let t = Duration::from_secs(2000);
    for _ in 0..DIGEST_SPACE_PER_MINUTE / 64 {
        g.handle_message(peers[2], &empty, NOW, t);
    }
    assert_eq!(g.stats().digests_refused, 0);
    g.handle_message(peers[2], &empty, NOW, t);
    assert_eq!(g.stats().digests_refused, 1);
    g.handle_message(peers[2], &empty, NOW, t + Duration::from_secs(60));
    assert_eq!(g.stats().digests_refused, 1);
    let small = |p: u16| empty_digest(1, 6, p);
    let t = t + Duration::from_secs(1000);
    for p in 0..256u16 {
        g.handle_message(peers[1], &small(p % 64), NOW, t);
    }
    assert_eq!(g.stats().digests_refused, 1);
    g.handle_message(peers[1], &small(0), NOW, t);
    assert_eq!(g.stats().digests_refused, 2);
}

#[test]
fn answers_stay_within_the_peers_byte_rate() {
    let config = GossipConfig {
        response_bytes_per_minute: 64 * 1024,
        ..GossipConfig::default()
    };
    let (mut g, peers) = node(2, config);
    // 100 messages of about 2 KiB: 200 KiB held, 64 KiB a minute allowed.
    for i in 0..100u8 {
        g.publish(message(&identity(2), &[i; 2000]), NOW, Duration::ZERO)
            .unwrap();
    }
    drain(&mut g);
    let empty = empty_digest(3, 0, 0);
    let answered = |g: &mut Gossip| -> usize {
        drain(g)
            .0
            .into_iter()
            .map(|(_, f)| match f {
                Frame::Messages(l) => l.iter().map(Vec::len).sum::<usize>(),
                _ => 0,
            })
            .sum()
    };
    g.handle_message(peers[0], &empty, NOW, Duration::from_secs(1));
    let first = answered(&mut g);
    assert!(first > 0 && first <= 64 * 1024, "{first} bytes");
    // Asking again and again within the minute: only the rest of the budget, then nothing.
    let mut total = first;
    for _ in 0..10 {
        g.handle_message(peers[0], &empty, NOW, Duration::from_secs(1));
        total += answered(&mut g);
    }
    assert!(total <= 64 * 1024, "{total} bytes in a minute");
    g.handle_message(peers[0], &empty, NOW, Duration::from_secs(1));
    assert_eq!(answered(&mut g), 0);
    // Another peer has its own budget.
    g.handle_message(peers[1], &empty, NOW, Duration::from_secs(1));
    assert!(answered(&mut g) > 0);
}

#[test]
fn a_large_cache_is_described_by_partitioned_digests() {
    let config = GossipConfig {
        filter_items: 100,
        ..GossipConfig::default()
    };
    let (mut g, _) = node(1, config);
    for i in 0..1000u32 {
        g.publish(message(&identity(2), &i.to_le_bytes()), NOW, Duration::ZERO)
            .unwrap();
    }
    let digests = g.digests_of_cache(5);
    // 1000 ids, 100 per filter: 16 partitions (4 bits), each filter sized for its share.
    assert_eq!(digests.len(), 16);
    assert!(digests.iter().all(|d| d.partition_bits == 4));
    for id in g.cache().ids() {
        let d = digests.iter().find(|d| d.covers(id)).unwrap();
        assert!(d.filter.contains(id, 5));
    }
}

#[test]
fn review_fixes_hold() {
    use mesh_gossip::message::MAX_MESSAGE_LEN;
    // The whole signed message fits the limit receivers enforce; a payload that would not
    // is refused when signing.
    let too_big = GossipMessage::sign(
        &identity(2),
        GossipPayload {
            topic: vec![],
            body: vec![0; MAX_MESSAGE_LEN],
        },
        NOW,
        UnixMillis(NOW.0 + 1000),
    );
    assert!(too_big.is_err());
    let (mut g, peers) = node(3, GossipConfig::default());
    let biggest = GossipMessage::sign(
        &identity(2),
        GossipPayload {
            topic: vec![],
            body: vec![0; MAX_MESSAGE_LEN - 53 - 64 - 2],
        },
        NOW,
        UnixMillis(NOW.0 + 1000),
    )
    .unwrap()
    .into_bytes();
    assert_eq!(biggest.len(), MAX_MESSAGE_LEN);
    g.handle_message(peers[0], &push(2, &biggest), NOW, Duration::ZERO);
    assert_eq!(g.cache().len(), 1);
    assert_eq!(
        g.stats().pushed,
        1,
        "a new message by push is counted as such"
    );

    // An expired message is not served, even before the sweep drops it.
    let (mut g, peers) = node(2, GossipConfig::default());
    let short = GossipMessage::sign(
        &identity(2),
        GossipPayload {
            topic: vec![],
            body: b"soon gone".to_vec(),
        },
        NOW,
        UnixMillis(NOW.0 + 10),
    )
    .unwrap()
    .into_bytes();
    g.publish(short, NOW, Duration::ZERO).unwrap();
    drain(&mut g);
    let empty = empty_digest(1, 0, 0);
    g.handle_message(
        peers[0],
        &empty,
        UnixMillis(NOW.0 + 10),
        Duration::from_secs(1),
    );
    assert!(drain(&mut g).0.is_empty());

    // A restored message keeps its age: one that arrived a day ago goes at the next sweep.
    let (mut g, _) = node(1, GossipConfig::default());
    let day = 24 * 3_600_000;
    let long = GossipMessage::sign(
        &identity(2),
        GossipPayload {
            topic: vec![],
            body: b"old".to_vec(),
        },
        NOW,
        UnixMillis(NOW.0 + 10 * day),
    )
    .unwrap()
    .into_bytes();
    let later = UnixMillis(NOW.0 + day + 1);
    g.restore(long, NOW, later, Duration::from_secs(100_000))
        .unwrap();
    assert_eq!(g.cache().len(), 1);
    g.tick(later, Duration::from_secs(100_000));
    assert!(g.cache().is_empty());
}

#[test]
fn each_digest_filter_is_sized_for_the_ids_it_holds() {
    let config = GossipConfig {
        filter_items: 10,
        ..GossipConfig::default()
    };
    let (mut g, _) = node(1, config);
    for i in 0..1000u32 {
        g.publish(message(&identity(2), &i.to_le_bytes()), NOW, Duration::ZERO)
            .unwrap();
    }
    // At most 64 partitions: about 16 ids each, more than `filter_items`; the filters grow
    // with them rather than filling up.
    for d in g.digests_of_cache(3) {
        let held = g.cache().ids().filter(|id| d.covers(id)).count();
        assert!(d.filter.bits() >= Bloom::for_items(held, 0.01).bits());
    }
}

#[test]
fn a_peer_pushing_new_messages_faster_than_its_rate_is_refused() {
    let config = GossipConfig {
        pushes_per_minute: 5,
        ..GossipConfig::default()
    };
    let (mut g, peers) = node(3, config);
    for i in 0..8u8 {
        let m = message(&identity(2), &[i]);
        g.handle_message(peers[0], &push(2, &m), NOW, Duration::from_secs(1));
    }
    assert_eq!(g.cache().len(), 5);
    let (_, events) = drain(&mut g);
    let refused = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::BadInput {
                    reason: "push_rate",
                    ..
                }
            )
        })
        .count();
    assert_eq!(refused, 3);
    // Another peer has its own rate; duplicates are free.
    g.handle_message(
        peers[1],
        &push(2, &message(&identity(2), &[0])),
        NOW,
        Duration::from_secs(1),
    );
    g.handle_message(
        peers[1],
        &push(2, &message(&identity(2), &[100])),
        NOW,
        Duration::from_secs(1),
    );
    assert_eq!(g.cache().len(), 6);
    // A minute later the first peer may push again.
    g.handle_message(
        peers[0],
        &push(2, &message(&identity(2), &[101])),
        NOW,
        Duration::from_secs(61),
    );
    assert_eq!(g.cache().len(), 7);
}

#[test]
fn answers_beyond_what_our_digests_allow_are_refused_unread() {
    let (mut g, peers) = node(1, GossipConfig::default());
    // We pulled from peers[0] on linking (one digest: one answer budget of 4 MiB).
    let frame = Frame::Messages(vec![vec![0u8; 60_000]; 16]).encode();
    let mut over = 0;
    for _ in 0..6 {
        g.handle_message(peers[0], &frame, NOW, Duration::from_secs(1));
        over += drain(&mut g)
            .1
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::BadInput {
                        reason: "over_budget",
                        ..
                    }
                )
            })
            .count();
    }
    // Four frames of 960 KB fit the budget (their junk messages are refused one by one); the
    // fifth and sixth are refused whole.
    assert_eq!(over, 2);
    assert_eq!(g.stats().response_bytes_received, 4 * frame.len() as u64);
}
