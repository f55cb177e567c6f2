//! A thousand DHT cores in one deterministic, virtual-time network: they join through one
//! bootstrap node, find each other, and store and fetch a record across the network, with
//! latency and lost messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_precision_loss
)] // test code

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_dht::lookup::Outcome;
use mesh_dht::node::{Dht, DhtConfig, Event, Output, QueryId};
use mesh_dht::record::record_key;
use mesh_dht::{Key, Record, RecordPayload};

const UNIX_START: u64 = 1_700_000_000_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A message on its way: (deliver at, sequence, from, to, bytes).
type InFlight = (Duration, u64, usize, usize, Vec<u8>);

struct Net {
    nodes: Vec<Dht>,
    ids: Vec<Identity>,
    index: HashMap<PeerId, usize>,
    queue: BinaryHeap<Reverse<InFlight>>,
    now: Duration,
    seq: u64,
    rng: Rng,
    /// Per mille of messages lost.
    loss: u64,
    events: HashMap<(usize, QueryId), Event>,
    delivered: u64,
}

impl Net {
    fn new(n: usize, loss: u64) -> Self {
        let ids: Vec<Identity> = (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                seed[8] = 0x77;
                Identity::from_seed(&seed)
            })
            .collect();
        Self {
            nodes: ids
                .iter()
                .map(|id| Dht::new(id.peer_id(), DhtConfig::default()))
                .collect(),
            index: ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.peer_id(), i))
                .collect(),
            ids,
            queue: BinaryHeap::new(),
            now: Duration::ZERO,
            seq: 0,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            loss,
            events: HashMap::new(),
            delivered: 0,
        }
    }

    fn unix(&self) -> UnixMillis {
        UnixMillis(UNIX_START + u64::try_from(self.now.as_millis()).unwrap())
    }

    /// Moves node `i`'s outputs into the network.
    fn pump(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].poll_output() {
            match out {
                Output::Send { to, bytes, .. } => {
                    let Some(&j) = self.index.get(&to) else {
                        continue;
                    };
                    if self.rng.next() % 1000 < self.loss {
                        continue;
                    }
                    let latency = Duration::from_millis(5 + self.rng.next() % 45);
                    self.seq += 1;
                    self.queue
                        .push(Reverse((self.now + latency, self.seq, i, j, bytes)));
                }
                Output::Event(e) => {
                    let id = match &e {
                        Event::Found { id, .. } | Event::Put { id, .. } => *id,
                        Event::BadMessage { .. } => panic!("honest nodes sent a bad message"),
                    };
                    self.events.insert((i, id), e);
                }
            }
        }
    }

    /// Runs until `id` of node `i` reported, ticking every node each virtual second.
    fn wait(&mut self, i: usize, id: QueryId) -> Event {
        let deadline = self.now + Duration::from_secs(120);
        let mut next_tick = self.now + Duration::from_secs(1);
        loop {
            if let Some(e) = self.events.remove(&(i, id)) {
                return e;
            }
            assert!(
                self.now < deadline,
                "query {id:?} of node {i} never finished"
            );
            let next = self.queue.peek().map(|Reverse(m)| m.0);
            if next.is_some_and(|t| t <= next_tick) {
                let Reverse((t, _, from, to, bytes)) = self.queue.pop().unwrap();
                self.now = t;
                let (unix, from_id) = (self.unix(), self.ids[from].peer_id());
                self.nodes[to].handle_message(from_id, "", &bytes, unix, t);
                self.delivered += 1;
                self.pump(to);
            } else {
                self.now = next_tick;
                next_tick += Duration::from_secs(1);
                let unix = self.unix();
                for j in 0..self.nodes.len() {
                    self.nodes[j].tick(unix, self.now);
                    self.pump(j);
                }
            }
        }
    }

    fn found(&mut self, i: usize, id: QueryId) -> Outcome {
        match self.wait(i, id) {
            Event::Found { outcome, .. } => outcome,
            e => panic!("{e:?}"),
        }
    }

    /// Every node joins through node 0: learns it, then looks itself up.
    fn join_all(&mut self) {
        let boot = self.ids[0].peer_id();
        for i in 1..self.nodes.len() {
            let now = self.now;
            self.nodes[i].add_contact(boot, "", now);
            let me = Key::of_peer(&self.ids[i].peer_id());
            let id = self.nodes[i].find_node(me, now);
            self.pump(i);
            self.found(i, id);
        }
    }

    fn true_closest(&self, target: &Key) -> Vec<PeerId> {
        let mut all: Vec<PeerId> = self.ids.iter().map(Identity::peer_id).collect();
        all.sort_by_key(|p| Key::of_peer(p).distance(target));
        all
    }
}

fn lookups(net: &mut Net, count: u64) -> (u64, u64, u64) {
    let (mut exact, mut hops, mut requests) = (0, 0, 0);
    for t in 0..count {
        let from = usize::try_from(net.rng.next() % net.nodes.len() as u64).unwrap();
        let target =
            Key::of_peer(&Identity::from_seed(&[u8::try_from(t % 250).unwrap(); 32]).peer_id());
        let now = net.now;
        let id = net.nodes[from].find_node(target, now);
        net.pump(from);
        let outcome = net.found(from, id);
        let truth = net.true_closest(&target);
        if outcome.closest.first().map(|c| c.peer) == Some(truth[0]) {
            exact += 1;
        }
        hops += u64::from(outcome.hops);
        requests += u64::from(outcome.requests);
    }
    (exact, hops, requests)
}

#[test]
fn a_thousand_nodes_find_each_other_and_share_a_record() {
    let mut net = Net::new(1000, 0);
    net.join_all();
    let sizes: Vec<usize> = net.nodes.iter().map(|n| n.table().len()).collect();
    assert!(
        sizes.iter().all(|&s| s >= 20),
        "every node knows at least k others"
    );
    let (exact, hops, requests) = lookups(&mut net, 100);
    println!(
        "1000 nodes: {exact}/100 lookups found the closest node, mean hops {:.1}, mean requests {:.1}, {} messages",
        hops as f64 / 100.0,
        requests as f64 / 100.0,
        net.delivered
    );
    assert!(exact >= 98, "{exact} of 100 lookups found the closest node");

    // A record put by one node is found by another, far away in the key space.
    let author = Identity::generate();
    let record = Record::sign(
        &author,
        RecordPayload {
            name: b"hello".to_vec(),
            seq: 1,
            value: b"world".to_vec(),
        },
        net.unix(),
        UnixMillis(net.unix().0 + 3_600_000),
    )
    .unwrap()
    .into_bytes();
    let (unix, now) = (net.unix(), net.now);
    let put = net.nodes[17].put(record.clone(), unix, now).unwrap();
    net.pump(17);
    let Event::Put {
        stored, offered, ..
    } = net.wait(17, put)
    else {
        panic!("not a put")
    };
    assert_eq!(offered, 20);
    assert!(stored >= 18, "{stored} of {offered} stored it");
    let key = record_key(&author.peer_id(), b"hello");
    let get = net.nodes[901].find_value(key, now);
    net.pump(901);
    let outcome = net.found(901, get);
    assert_eq!(outcome.value.map(|(_, v)| v), Some(record));
}

#[test]
fn lookups_survive_a_fifth_of_messages_lost() {
    let mut net = Net::new(300, 200);
    net.join_all();
    let (exact, _, _) = lookups(&mut net, 50);
    assert!(
        exact >= 45,
        "{exact} of 50 lookups found the closest node with 20% loss"
    );
}
