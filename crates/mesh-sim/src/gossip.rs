//! The gossip core in the simulator: random neighbour graphs, broadcasts measured as
//! iroh-gossip reports them (delivery ratio, relative message redundancy, last delivery hop),
//! a peer catching up by pull after it was away, and a partition healing.

use std::collections::HashSet;
use std::time::Duration;

use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_gossip::node::{Event, Gossip, GossipConfig, Output};
use mesh_gossip::{GossipMessage, GossipPayload, MessageId};

use crate::{Action, NetConfig, Node, Now, Sim, address};

impl Node for Gossip {
    type Event = Event;

    fn handle(&mut self, from: PeerId, _address: &str, bytes: &[u8], now: Now) {
        self.handle_message(from, bytes, now.unix, now.monotonic);
    }

    fn tick(&mut self, now: Now) {
        Gossip::tick(self, now.unix, now.monotonic);
    }

    fn next_deadline(&self) -> Duration {
        Gossip::next_deadline(self)
    }

    fn poll(&mut self) -> Option<Action<Event>> {
        self.poll_output().map(|o| match o {
            Output::Send { to, address, bytes } => Action::Send { to, address, bytes },
            Output::Event(e) => Action::Event(e),
        })
    }
}

fn identity(seed: u64, i: usize) -> Identity {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    s[16] = 0x9a;
    Identity::from_seed(&s)
}

/// A network of `n` gossip nodes, each linked to `degree` random others (links are
/// symmetric, so the mean degree is about twice that).
pub fn network(
    n: usize,
    degree: usize,
    config: GossipConfig,
    net: NetConfig,
) -> (Sim<Gossip>, Vec<Identity>) {
    let mut sim: Sim<Gossip> = Sim::new(net);
    let ids: Vec<Identity> = (0..n).map(|i| identity(net.seed, i)).collect();
    for (i, id) in ids.iter().enumerate() {
        let seed = net.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        sim.add(id.peer_id(), Gossip::new(id.peer_id(), config, seed));
    }
    for i in 0..n {
        for _ in 0..degree {
            let j = sim.rng().index(n);
            if j != i {
                link(&mut sim, i, j);
            }
        }
    }
    // Initial pulls (to empty caches) carry nothing worth measuring.
    sim.run_until(sim.now().monotonic + Duration::from_secs(1));
    sim.take_events();
    (sim, ids)
}

/// Links nodes `i` and `j` both ways (each pulls from the other, as on a new link).
pub fn link(sim: &mut Sim<Gossip>, i: usize, j: usize) {
    let (pi, pj) = (sim.peer(i), sim.peer(j));
    sim.with(i, |g, now| g.add_neighbour(pj, &address(j), now.monotonic));
    sim.with(j, |g, now| g.add_neighbour(pi, &address(i), now.monotonic));
}

/// A message by `author`, valid for a day from `now`.
pub fn message(author: &Identity, body: &[u8], now: UnixMillis) -> Vec<u8> {
    GossipMessage::sign(
        author,
        GossipPayload {
            topic: b"sim".to_vec(),
            body: body.to_vec(),
        },
        now,
        UnixMillis(now.0 + 24 * 3_600_000),
    )
    .map(GossipMessage::into_bytes)
    .unwrap_or_default()
}

/// How one broadcast went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Broadcast {
    /// Nodes (online, publisher included) that got it by push, over those online.
    pub delivery_ratio: f64,
    /// Relative message redundancy: pushes received / (nodes reached - 1) - 1.
    pub rmr: f64,
    /// Hops of the last node to get it.
    pub ldh: u8,
}

/// Publishes `body` at node `from` and lets push run for `settle` (less than a pull interval,
/// so only push is measured).
pub fn broadcast(
    sim: &mut Sim<Gossip>,
    ids: &[Identity],
    from: usize,
    body: &[u8],
    settle: Duration,
) -> Broadcast {
    let pushes_before: u64 = (0..sim.len())
        .map(|i| sim.node(i).stats().pushes_received)
        .sum();
    let m = message(&ids[from], body, sim.now().unix);
    let id = sim.with(from, |g, now| g.publish(m, now.unix, now.monotonic));
    let Ok(id) = id else {
        return Broadcast {
            delivery_ratio: 0.0,
            rmr: 0.0,
            ldh: 0,
        };
    };
    sim.run_until(sim.now().monotonic + settle);
    let mut reached = 1usize;
    let mut ldh = 0u8;
    for (_, e) in sim.take_events() {
        if let Event::Message {
            id: got,
            hops,
            pulled: false,
            ..
        } = e
            && got == id
        {
            reached += 1;
            ldh = ldh.max(hops);
        }
    }
    let pushes: u64 = (0..sim.len())
        .map(|i| sim.node(i).stats().pushes_received)
        .sum::<u64>()
        - pushes_before;
    let online = (0..sim.len()).filter(|&i| sim.is_online(i)).count();
    #[allow(clippy::cast_precision_loss)]
    Broadcast {
        delivery_ratio: reached as f64 / online.max(1) as f64,
        rmr: pushes as f64 / (reached.saturating_sub(1)).max(1) as f64 - 1.0,
        ldh,
    }
}

/// Ids of every message some node holds.
pub fn all_ids(sim: &Sim<Gossip>) -> HashSet<MessageId> {
    (0..sim.len())
        .flat_map(|i| sim.node(i).cache().ids().copied().collect::<Vec<_>>())
        .collect()
}

/// Whether node `i` holds every id in `ids`.
pub fn holds_all<S: std::hash::BuildHasher>(
    sim: &Sim<Gossip>,
    i: usize,
    ids: &HashSet<MessageId, S>,
) -> bool {
    ids.iter().all(|id| sim.node(i).cache().contains(id))
}

/// Bytes a returning peer spends to catch up, against the alternatives, in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resync {
    /// Messages both peers hold.
    pub held: usize,
    /// Messages only the other peer holds.
    pub missing: usize,
    /// Of those, how many the returning peer has after one pull.
    pub recovered: usize,
    /// DIGEST bytes it sent.
    pub digest_bytes: u64,
    /// MESSAGES bytes it received.
    pub response_bytes: u64,
    /// What a digest listing every held id (32 bytes each) would have cost, with the same
    /// answer (it has no false positives, so it would carry every missing message).
    pub naive_bytes: u64,
}

impl Resync {
    /// Digest bytes per message held.
    #[allow(clippy::cast_precision_loss)]
    pub fn digest_bytes_per_held(&self) -> f64 {
        self.digest_bytes as f64 / self.held.max(1) as f64
    }
}

/// One peer holds `held` messages and comes back to one that holds those and `missing` more;
/// it pulls once. Push-only would give it none of the missing ones.
pub fn resync(held: usize, missing: usize) -> Resync {
    let net = NetConfig::default();
    let mut sim: Sim<Gossip> = Sim::new(net);
    let a = identity(1, 0);
    let b = identity(1, 1);
    let config = GossipConfig::default();
    sim.add(a.peer_id(), Gossip::new(a.peer_id(), config, 1));
    sim.add(b.peer_id(), Gossip::new(b.peer_id(), config, 2));
    let author = identity(1, 2);
    let now = sim.now();
    let mut missing_bytes = 0u64;
    for k in 0..held + missing {
        let m = message(
            &author,
            format!("message {k:08} {}", "x".repeat(100)).as_bytes(),
            now.unix,
        );
        if k >= held {
            missing_bytes += m.len() as u64 + 4;
        }
        if k < held {
            sim.with(0, |g, now| {
                g.restore(m.clone(), now.unix, now.unix, now.monotonic)
            })
            .ok();
        }
        sim.with(1, |g, now| g.restore(m, now.unix, now.unix, now.monotonic))
            .ok();
    }
    // The link comes up: the returning peer (0) pulls from the other.
    let (pa, pb) = (sim.peer(0), sim.peer(1));
    sim.with(1, |g, now| g.add_neighbour(pa, &address(0), now.monotonic));
    let before = sim.node(0).stats();
    sim.with(0, |g, now| g.add_neighbour(pb, &address(1), now.monotonic));
    sim.run_until(sim.now().monotonic + Duration::from_secs(5));
    let after = sim.node(0).stats();
    let frames = held.div_ceil(1000).max(1) as u64;
    Resync {
        held,
        missing,
        recovered: sim.node(0).cache().len().saturating_sub(held),
        digest_bytes: after.digest_bytes_sent - before.digest_bytes_sent,
        response_bytes: after.response_bytes_received - before.response_bytes_received,
        // Per frame: version, kind, count u32; then 32 bytes per id; the same answer.
        naive_bytes: frames * 6 + 32 * held as u64 + missing_bytes + 7,
    }
}
