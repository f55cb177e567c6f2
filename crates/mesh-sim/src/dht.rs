//! The DHT core in the simulator: a network joins in waves, runs lookups, stores records,
//! loses a share of its nodes (churn) and is measured. `cargo xtask sim dht --nodes N` prints
//! the [`Report`] of [`run`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_dht::node::{Dht, DhtConfig, Event, Output, QueryId};
use mesh_dht::record::record_key;
use mesh_dht::{Key, Record, RecordPayload};

use crate::{Action, NetConfig, Node, Now, Sim, address};

/// Nodes joining at once at most: a quarter of the network so far, up to this many (each
/// join is a lookup holding up to 80 candidates while it runs).
pub const MAX_WAVE: usize = 10_000;

impl Node for Dht {
    type Event = Event;

    fn handle(&mut self, from: PeerId, address: &str, bytes: &[u8], now: Now) {
        self.handle_message(from, address, bytes, now.unix, now.monotonic);
    }

    fn tick(&mut self, now: Now) {
        Dht::tick(self, now.unix, now.monotonic);
    }

    fn next_deadline(&self) -> Duration {
        Dht::next_deadline(self)
    }

    fn poll(&mut self) -> Option<Action<Event>> {
        self.poll_output().map(|o| match o {
            Output::Send { to, address, bytes } => Action::Send { to, address, bytes },
            Output::Event(e) => Action::Event(e),
        })
    }
}

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Nodes in the network.
    pub nodes: usize,
    /// Lookups measured (before and again after churn).
    pub lookups: usize,
    /// Records put before churn and looked up after it.
    pub records: usize,
    /// Nodes taken offline before the second measurement, in percent.
    pub churn_percent: u32,
    /// Messages lost, per mille.
    pub loss_per_mille: u32,
    /// Virtual time the network runs after joining and before it is measured (maintenance:
    /// bucket refresh after an hour, republishing).
    pub settle: Duration,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 1000,
            lookups: 100,
            records: 20,
            churn_percent: 20,
            loss_per_mille: 0,
            settle: Duration::ZERO,
            seed: 1,
        }
    }
}

/// Lookup quality over a set of lookups.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LookupStats {
    /// Lookups run.
    pub count: usize,
    /// Lookups whose first result was the closest online node to the target.
    pub exact: usize,
    /// Mean hops.
    pub hops: f64,
    /// Mean requests sent per lookup.
    pub requests: f64,
    /// Network messages delivered per lookup (requests and answers).
    pub messages: f64,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The options it ran with.
    pub options: Options,
    /// Virtual time the joining took.
    pub join_virtual: Duration,
    /// Wall-clock time the whole run took.
    pub wall: Duration,
    /// Mean contacts per routing table after joining.
    pub contacts: f64,
    /// Mean contacts waiting in replacement caches after joining.
    pub replacements: f64,
    /// Lookups with every node online.
    pub before: LookupStats,
    /// Records put, and how many were stored on at least one other node.
    pub records_put: usize,
    /// Lookups after churn.
    pub after: LookupStats,
    /// Records found again after churn.
    pub records_found: usize,
    /// Resident memory of the process grew by this much while the network was built and
    /// exercised, per node (bytes; `None` where it cannot be read).
    pub bytes_per_node: Option<u64>,
    /// Messages delivered in all.
    pub delivered: u64,
    /// Messages a node sent to a wrong or missing address (a bug if not zero).
    pub misaddressed: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "nodes {}, loss {}‰, churn {}%, settle {} s, seed {}",
            o.nodes,
            o.loss_per_mille,
            o.churn_percent,
            o.settle.as_secs(),
            o.seed
        )?;
        writeln!(
            f,
            "joined in {:.1} s virtual; mean routing table {:.1} contacts + {:.1} replacements",
            self.join_virtual.as_secs_f64(),
            self.contacts,
            self.replacements
        )?;
        for (name, s) in [("all online", &self.before), ("after churn", &self.after)] {
            #[allow(clippy::cast_precision_loss)]
            let pct = 100.0 * s.exact as f64 / s.count.max(1) as f64;
            writeln!(
                f,
                "lookups ({name}): {}/{} found the closest node ({pct:.1}%), mean hops {:.2}, requests {:.1}, messages {:.1}",
                s.exact, s.count, s.hops, s.requests, s.messages
            )?;
        }
        writeln!(
            f,
            "records: {} put, {} found after churn",
            self.records_put, self.records_found
        )?;
        match self.bytes_per_node {
            Some(b) => writeln!(f, "memory: {b} bytes per node (process RSS growth / nodes)")?,
            None => writeln!(f, "memory: not measured on this platform")?,
        }
        write!(
            f,
            "messages delivered {}, misaddressed {}; wall time {:.1} s",
            self.delivered,
            self.misaddressed,
            self.wall.as_secs_f64()
        )
    }
}

/// Resident set size of this process (Linux), in bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn peer_of(seed: u64, i: usize) -> PeerId {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    s[16] = 0xd4;
    Identity::from_seed(&s).peer_id()
}

/// Runs queries started by `start` (one per entry of `from`) concurrently until all report,
/// or a minute of virtual time passes; returns the events by position.
fn run_queries(
    sim: &mut Sim<Dht>,
    from: &[usize],
    mut start: impl FnMut(&mut Dht, Now, usize) -> QueryId,
) -> Vec<Option<Event>> {
    let mut waiting = std::collections::HashMap::new();
    for (pos, &i) in from.iter().enumerate() {
        let id = sim.with(i, |d, now| start(d, now, pos));
        waiting.insert((i, id), pos);
    }
    let mut out: Vec<Option<Event>> = vec![None; from.len()];
    let mut left = from.len();
    sim.run_while_not(Duration::from_secs(120), |s| {
        for (i, e) in s.take_events() {
            let id = match &e {
                Event::Found { id, .. } | Event::Put { id, .. } => *id,
                Event::BadMessage { .. } => continue,
            };
            if let Some(pos) = waiting.remove(&(i, id)) {
                out[pos] = Some(e);
                left -= 1;
            }
        }
        left == 0
    });
    out
}

/// The online node closest to `target`.
fn closest_online(sim: &Sim<Dht>, keys: &[Key], target: &Key) -> Option<usize> {
    (0..keys.len())
        .filter(|&i| sim.is_online(i))
        .min_by_key(|&i| keys[i].distance(target))
}

fn measure(sim: &mut Sim<Dht>, keys: &[Key], count: usize) -> LookupStats {
    let n = sim.len();
    let online: Vec<usize> = (0..n).filter(|&i| sim.is_online(i)).collect();
    let mut targets = Vec::with_capacity(count);
    let mut from = Vec::with_capacity(count);
    for _ in 0..count {
        let mut t = [0u8; 32];
        for chunk in t.chunks_mut(8) {
            chunk.copy_from_slice(&sim.rng().next_u64().to_le_bytes());
        }
        targets.push(Key(t));
        let pick = sim.rng().index(online.len());
        from.push(online[pick]);
    }
    let delivered = sim.stats().delivered;
    let mut stats = LookupStats {
        count,
        ..LookupStats::default()
    };
    // In batches, so that lookups overlap as on a live network but do not all start at once.
    for (chunk_from, chunk_targets) in from.chunks(50).zip(targets.chunks(50)) {
        let events = run_queries(sim, chunk_from, |d, now, pos| {
            d.find_node(chunk_targets[pos], now.monotonic)
        });
        for (pos, e) in events.into_iter().enumerate() {
            if let Some(Event::Found { outcome, .. }) = e {
                let truth = closest_online(sim, keys, &chunk_targets[pos]);
                if outcome.closest.first().map(|c| c.peer) == truth.map(|t| sim.peer(t)) {
                    stats.exact += 1;
                }
                stats.hops += f64::from(outcome.hops);
                stats.requests += f64::from(outcome.requests);
            }
        }
    }
    #[allow(clippy::cast_precision_loss)]
    {
        let c = count.max(1) as f64;
        stats.hops /= c;
        stats.requests /= c;
        stats.messages = (sim.stats().delivered - delivered) as f64 / c;
    }
    stats
}

/// Joins `n` nodes in waves; returns every node's key.
fn join(sim: &mut Sim<Dht>, n: usize, seed: u64, progress: &mut impl FnMut(&str)) -> Vec<Key> {
    let started = Instant::now();
    let config = DhtConfig::default();
    // Join in waves of a quarter of the network so far (at most `MAX_WAVE`), each node through
    // a random node that joined before it, and looking itself up.
    let mut keys = Vec::with_capacity(n);
    let first = peer_of(seed, 0);
    keys.push(Key::of_peer(&first));
    sim.add(first, Dht::new(first, config));
    while sim.len() < n {
        let joined = sim.len();
        let wave = (joined / 4).clamp(1, MAX_WAVE).min(n - joined);
        let mut newcomers = Vec::with_capacity(wave);
        for k in 0..wave {
            let i = joined + k;
            let peer = peer_of(seed, i);
            keys.push(Key::of_peer(&peer));
            let boot = sim.rng().index(joined);
            let boot_peer = sim.peer(boot);
            let mut dht = Dht::new(peer, config);
            dht.add_contact(boot_peer, &address(boot), sim.now().monotonic);
            sim.add(peer, dht);
            newcomers.push(i);
        }
        run_queries(sim, &newcomers, |d, now, _| {
            let me = d.table().local_key();
            d.find_node(me, now.monotonic)
        });
        if sim.len() % 50_000 < wave || sim.len() == n {
            progress(&format!(
                "joined {} nodes ({:.0} s, {} MB resident)",
                sim.len(),
                started.elapsed().as_secs_f64(),
                rss_bytes().unwrap_or(0) >> 20
            ));
        }
    }
    keys
}

/// Signs `count` records by random authors and puts each from a random node; returns their
/// keys and how many were stored somewhere.
fn put_records(sim: &mut Sim<Dht>, count: usize) -> (Vec<Key>, usize) {
    let n = sim.len();
    let now = sim.now();
    let mut names = Vec::new();
    let mut puts = Vec::new();
    let mut record_bytes = Vec::new();
    for r in 0..count {
        let author = {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&sim.rng().next_u64().to_le_bytes());
            Identity::from_seed(&s)
        };
        let name = format!("record-{r}").into_bytes();
        let bytes = Record::sign(
            &author,
            RecordPayload {
                name: name.clone(),
                seq: 1,
                value: vec![0xab; 100],
            },
            now.unix,
            UnixMillis(now.unix.0 + 24 * 3_600_000),
        )
        .map(Record::into_bytes)
        .unwrap_or_default();
        names.push(record_key(&author.peer_id(), &name));
        record_bytes.push(bytes);
        puts.push(sim.rng().index(n));
    }
    let put_events = run_queries(sim, &puts, |d, now, pos| {
        d.put(record_bytes[pos].clone(), now.unix, now.monotonic)
            .unwrap_or(QueryId(u64::MAX))
    });
    let stored = put_events
        .iter()
        .filter(|e| matches!(e, Some(Event::Put { stored, .. }) if *stored > 0))
        .count();
    (names, stored)
}

/// Builds the network, measures it, churns it, measures again.
///
/// `progress` is told what is happening (for a long run's log).
pub fn run(options: Options, mut progress: impl FnMut(&str)) -> Report {
    let started = Instant::now();
    let rss_start = rss_bytes();
    let n = options.nodes.max(2);
    let mut sim: Sim<Dht> = Sim::new(NetConfig {
        loss_per_mille: options.loss_per_mille,
        seed: options.seed,
        ..NetConfig::default()
    });
    let keys = join(&mut sim, n, options.seed, &mut progress);
    let join_virtual = sim.now().monotonic;
    if !options.settle.is_zero() {
        progress(&format!("settling for {} s", options.settle.as_secs()));
        let end = sim.now().monotonic + options.settle;
        while sim.now().monotonic < end {
            let step = (sim.now().monotonic + Duration::from_secs(60)).min(end);
            sim.run_until(step);
            // Nobody waits for the maintenance lookups' results.
            sim.take_events();
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let contacts = (0..n).map(|i| sim.node(i).table().len()).sum::<usize>() as f64 / n as f64;
    #[allow(clippy::cast_precision_loss)]
    let replacements = (0..n)
        .map(|i| sim.node(i).table().replacements())
        .sum::<usize>() as f64
        / n as f64;

    progress("lookups with every node online");
    let before = measure(&mut sim, &keys, options.lookups);

    let (names, records_put) = put_records(&mut sim, options.records);

    // Churn: a share of the nodes goes offline at once.
    let offline = n * usize::try_from(options.churn_percent.min(99)).unwrap_or(0) / 100;
    let mut gone = HashSet::new();
    while gone.len() < offline {
        let i = sim.rng().index(n);
        if gone.insert(i) {
            sim.set_online(i, false);
        }
    }
    progress(&format!("{offline} nodes offline; lookups again"));
    let after = measure(&mut sim, &keys, options.lookups);
    let online: Vec<usize> = (0..n).filter(|&i| sim.is_online(i)).collect();
    let askers: Vec<usize> = (0..names.len())
        .map(|_| online[sim.rng().index(online.len())])
        .collect();
    let found = run_queries(&mut sim, &askers, |d, now, pos| {
        d.find_value(names[pos], now.monotonic)
    });
    let records_found = found
        .iter()
        .filter(|e| matches!(e, Some(Event::Found { outcome, .. }) if outcome.value.is_some()))
        .count();

    let bytes_per_node = match (rss_start, rss_bytes()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) / n as u64),
        _ => None,
    };
    Report {
        options,
        join_virtual,
        wall: started.elapsed(),
        contacts,
        replacements,
        before,
        records_put,
        after,
        records_found,
        bytes_per_node,
        delivered: sim.stats().delivered,
        misaddressed: sim.stats().misaddressed,
    }
}
