//! The DHT core in the simulator: a network joins in waves, runs lookups, stores records,
//! loses a share of its nodes (churn) and is measured. `cargo xtask sim dht --nodes N` prints
//! the [`Report`] of [`run`].
//!
//! Besides the one-time loss of a share of the nodes, a run can add timed phases, in which
//! lookups start at random moments over a window of virtual time (their latency is measured
//! from start to result, and the bytes the network carried per node and minute): a 50/50
//! partition that heals ([`Options::partition`]), and continuous churn, nodes leaving and
//! coming back while the lookups run ([`Options::live_churn_percent`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_dht::node::{Dht, DhtConfig, Event, Output, QueryId};
use mesh_dht::record::record_key;
use mesh_dht::{Key, Record, RecordPayload};

pub use crate::rss_bytes;
use crate::{Action, Churn, NetConfig, Node, Now, Percentiles, Sim, address, halves, millis};

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
    /// If not zero: the network splits in two halves for this long, while `lookups` lookups
    /// run spread over it (each judged against its own half), then heals, and `lookups` more
    /// run over `window` (judged against the whole network).
    pub partition: Duration,
    /// If not zero: a timed phase of `window` with this share of the nodes offline at any
    /// time, in percent, each for `away`, the membership changing every [`CHURN_STEP`]; a
    /// node that comes back looks itself up (as a node does at start). `lookups` lookups and
    /// every record are looked up over the window.
    pub live_churn_percent: u32,
    /// How long a churned node stays away.
    pub away: Duration,
    /// Length of the timed phases after a partition heals and under continuous churn.
    pub window: Duration,
    /// Whether to run a timed phase of `window` with every node online and no partition
    /// (what lookups and maintenance cost in steady state), before any other timed phase.
    pub steady: bool,
}

/// How often continuous churn changes the membership.
pub const CHURN_STEP: Duration = Duration::from_secs(10);

/// How long a lookup is waited for before it counts as unfinished.
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(600);

/// Lookups that took longer than this are counted as slow (and still in every other figure).
pub const SLOW_LOOKUP: Duration = Duration::from_secs(120);

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
            partition: Duration::ZERO,
            live_churn_percent: 0,
            away: Duration::from_secs(300),
            window: Duration::from_secs(600),
            steady: false,
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
    /// Network messages delivered per lookup (requests and answers); zero in timed phases,
    /// where maintenance and rejoining nodes send too (see [`Phase::bytes_sent`]).
    pub messages: f64,
    /// Lookups that reported no result within [`LOOKUP_LIMIT`] (not counted in `exact`,
    /// `hops` or `latency`).
    pub unfinished: usize,
    /// Lookups that took longer than [`SLOW_LOOKUP`] (counted in every other figure).
    pub slow: usize,
    /// Virtual time from start to result, of the lookups that finished.
    pub latency: Percentiles,
}

impl LookupStats {
    /// Counts a lookup that finished after `took`: whether it ended at the right node, its
    /// hops and requests, its latency (kept in `latencies` until [`Self::average_over`]).
    fn finished(
        &mut self,
        exact: bool,
        outcome: &mesh_dht::lookup::Outcome,
        took: Duration,
        latencies: &mut Vec<u32>,
    ) {
        if exact {
            self.exact += 1;
        }
        self.hops += f64::from(outcome.hops);
        self.requests += f64::from(outcome.requests);
        latencies.push(millis(took));
        if took > SLOW_LOOKUP {
            self.slow += 1;
        }
    }

    /// Turns the sums of [`Self::finished`] into means over `n` lookups, and the latencies
    /// into percentiles.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    fn average_over(&mut self, n: usize, latencies: &mut [u32]) {
        let n = n.max(1) as f64;
        self.hops /= n;
        self.requests /= n;
        self.latency = Percentiles::of_millis(latencies);
    }
}

/// A timed phase: lookups (and record lookups) started at random moments over a window, with
/// what the whole network carried meanwhile.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// What it was.
    pub name: String,
    /// The node lookups.
    pub lookups: LookupStats,
    /// Record lookups run, and how many found the record.
    pub records: (usize, usize),
    /// The window (lookups started in it may finish after it).
    pub duration: Duration,
    /// Bytes put on the network during the window, by every node (lookups, maintenance,
    /// churned nodes rejoining).
    pub bytes_sent: u64,
    /// Nodes in the network (online or not).
    pub nodes: usize,
    /// Nodes that left and came back during the phase (continuous churn).
    pub churned: (u64, u64),
}

impl Phase {
    /// Bytes sent per node and minute of virtual time.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn bytes_per_node_minute(&self) -> f64 {
        self.bytes_sent as f64
            / self.nodes.max(1) as f64
            / (self.duration.as_secs_f64() / 60.0).max(1e-9)
    }
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
    /// Timed phases (partition, healed, continuous churn), in the order they ran.
    pub phases: Vec<Phase>,
    /// Bytes put on the network while the nodes joined.
    pub join_bytes: u64,
    /// Bytes put on the network while it settled (maintenance only).
    pub settle_bytes: u64,
    /// Resident memory of the process grew by this much while the network was built and
    /// exercised, per node (bytes; `None` where it cannot be read).
    pub bytes_per_node: Option<u64>,
    /// Messages delivered in all.
    pub delivered: u64,
    /// Messages a node sent to a wrong or missing address (a bug if not zero).
    pub misaddressed: u64,
    /// Bytes put on the network in all.
    pub bytes_sent: u64,
    /// Peak resident memory of the process (`None` where it cannot be read).
    pub peak_rss: Option<u64>,
}

impl Report {
    /// Bytes sent per node and minute of virtual time while the network settled (maintenance
    /// alone); `None` without a settle time.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn settle_bytes_per_node_minute(&self) -> Option<f64> {
        (!self.options.settle.is_zero()).then(|| {
            self.settle_bytes as f64
                / self.options.nodes.max(1) as f64
                / (self.options.settle.as_secs_f64() / 60.0)
        })
    }

    /// Bytes sent per node while it joined (its own self-lookup and answering others').
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn join_bytes_per_node(&self) -> f64 {
        self.join_bytes as f64 / self.options.nodes.max(1) as f64
    }
}

impl std::fmt::Display for LookupStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let pct = 100.0 * self.exact as f64 / self.count.max(1) as f64;
        write!(
            f,
            "{}/{} found the closest node ({pct:.1}%), {} unfinished, {} over {} s, mean hops {:.2}, requests {:.1}",
            self.exact,
            self.count,
            self.unfinished,
            self.slow,
            SLOW_LOOKUP.as_secs(),
            self.hops,
            self.requests,
        )?;
        if self.messages > 0.0 {
            write!(f, ", messages {:.1}", self.messages)?;
        }
        write!(f, "; latency {}", self.latency)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        write!(
            f,
            "nodes {}, loss {}‰, churn {}%, settle {} s, seed {}",
            o.nodes,
            o.loss_per_mille,
            o.churn_percent,
            o.settle.as_secs(),
            o.seed
        )?;
        if !o.partition.is_zero() {
            write!(f, ", partition {} s", o.partition.as_secs())?;
        }
        if o.live_churn_percent > 0 {
            write!(
                f,
                ", continuous churn {}% (away {} s)",
                o.live_churn_percent,
                o.away.as_secs()
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "joined in {:.1} s virtual ({:.0} bytes sent per node); mean routing table {:.1} contacts + {:.1} replacements",
            self.join_virtual.as_secs_f64(),
            self.join_bytes_per_node(),
            self.contacts,
            self.replacements
        )?;
        if let Some(b) = self.settle_bytes_per_node_minute() {
            writeln!(
                f,
                "settling (maintenance only): {b:.0} bytes per node per minute"
            )?;
        }
        writeln!(f, "lookups (all online): {}", self.before)?;
        for p in &self.phases {
            writeln!(
                f,
                "lookups ({}): {}; records {}/{} found; {:.0} s virtual, {:.0} bytes sent per node per minute{}",
                p.name,
                p.lookups,
                p.records.1,
                p.records.0,
                p.duration.as_secs_f64(),
                p.bytes_per_node_minute(),
                if p.churned.0 > 0 {
                    format!(", {} departures and {} returns", p.churned.0, p.churned.1)
                } else {
                    String::new()
                }
            )?;
        }
        writeln!(f, "lookups (after churn): {}", self.after)?;
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

fn peer_of(seed: u64, i: usize) -> PeerId {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    s[16] = 0xd4;
    Identity::from_seed(&s).peer_id()
}

/// Runs queries started by `start` (one per entry of `from`) concurrently until all report,
/// or [`LOOKUP_LIMIT`] of virtual time passes; returns the events by position, with the
/// virtual time each took.
fn run_queries(
    sim: &mut Sim<Dht>,
    from: &[usize],
    mut start: impl FnMut(&mut Dht, Now, usize) -> QueryId,
) -> Vec<Option<(Event, Duration)>> {
    let mut waiting = HashMap::new();
    let started = sim.now().monotonic;
    for (pos, &i) in from.iter().enumerate() {
        let id = sim.with(i, |d, now| start(d, now, pos));
        waiting.insert((i, id), pos);
    }
    let mut out: Vec<Option<(Event, Duration)>> = vec![None; from.len()];
    let mut left = from.len();
    sim.run_while_not(LOOKUP_LIMIT, |s| {
        for (i, e) in s.take_events() {
            let id = match &e {
                Event::Found { id, .. } | Event::Put { id, .. } => *id,
                Event::BadMessage { .. } => continue,
            };
            if let Some(pos) = waiting.remove(&(i, id)) {
                out[pos] = Some((e, s.now().monotonic.saturating_sub(started)));
                left -= 1;
            }
        }
        left == 0
    });
    out
}

/// The online node closest to `target` (within `group`, if given).
fn closest_online(
    sim: &Sim<Dht>,
    keys: &[Key],
    target: &Key,
    group: Option<(&[u16], u16)>,
) -> Option<usize> {
    (0..keys.len())
        .filter(|&i| sim.is_online(i) && group.is_none_or(|(g, mine)| g[i] == mine))
        .min_by_key(|&i| keys[i].distance(target))
}

fn random_key(sim: &mut Sim<Dht>) -> Key {
    let mut t = [0u8; 32];
    for chunk in t.chunks_mut(8) {
        chunk.copy_from_slice(&sim.rng().next_u64().to_le_bytes());
    }
    Key(t)
}

fn measure(sim: &mut Sim<Dht>, keys: &[Key], count: usize) -> LookupStats {
    let n = sim.len();
    let online: Vec<usize> = (0..n).filter(|&i| sim.is_online(i)).collect();
    let mut targets = Vec::with_capacity(count);
    let mut from = Vec::with_capacity(count);
    for _ in 0..count {
        targets.push(random_key(sim));
        let pick = sim.rng().index(online.len());
        from.push(online[pick]);
    }
    let delivered = sim.stats().delivered;
    let mut stats = LookupStats {
        count,
        ..LookupStats::default()
    };
    let mut latencies = Vec::with_capacity(count);
    // In batches, so that lookups overlap as on a live network but do not all start at once.
    for (chunk_from, chunk_targets) in from.chunks(50).zip(targets.chunks(50)) {
        let events = run_queries(sim, chunk_from, |d, now, pos| {
            d.find_node(chunk_targets[pos], now.monotonic)
        });
        for (pos, e) in events.into_iter().enumerate() {
            if let Some((Event::Found { outcome, .. }, took)) = e {
                let truth = closest_online(sim, keys, &chunk_targets[pos], None);
                let exact = outcome.closest.first().map(|c| c.peer) == truth.map(|t| sim.peer(t));
                stats.finished(exact, &outcome, took, &mut latencies);
            } else {
                stats.unfinished += 1;
            }
        }
    }
    // Means over the lookups that finished (as documented on `LookupStats`); messages over
    // all of them.
    stats.average_over(count - stats.unfinished, &mut latencies);
    #[allow(clippy::cast_precision_loss)]
    {
        stats.messages = (sim.stats().delivered - delivered) as f64 / count.max(1) as f64;
    }
    stats
}

/// What a timed lookup is after.
#[derive(Debug, Clone, Copy)]
enum Want {
    Node(Key),
    Record(Key),
}

/// A timed phase: what [`timed_lookups`] runs.
struct Timed<'a> {
    name: String,
    lookups: usize,
    records: &'a [Key],
    window: Duration,
    churn: Option<&'a mut Churn>,
    groups: Option<&'a [u16]>,
}

/// Runs `lookups` node lookups and one lookup per record in `records`, each started at a
/// random moment of the next `window` from a random online node, while `churn` (if any)
/// changes the membership; judges each node lookup against the closest node online (in the
/// asker's own group, if `groups`) when it started or when it ended: either is right.
#[allow(clippy::too_many_lines)] // one phase, read top to bottom
fn timed_lookups(sim: &mut Sim<Dht>, keys: &[Key], spec: Timed<'_>) -> Phase {
    let Timed {
        name,
        lookups,
        records,
        window,
        mut churn,
        groups,
    } = spec;
    let n = sim.len();
    let start = sim.now().monotonic;
    let bytes_before = sim.stats().bytes_sent;
    let churn_before = churn.as_ref().map_or((0, 0), |c| c.totals());
    let window_micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
    let mut plan: Vec<(Duration, Want)> = Vec::with_capacity(lookups + records.len());
    for _ in 0..lookups {
        let at = start + Duration::from_micros(sim.rng().below(window_micros));
        plan.push((at, Want::Node(random_key(sim))));
    }
    for &r in records {
        let at = start + Duration::from_micros(sim.rng().below(window_micros));
        plan.push((at, Want::Record(r)));
    }
    plan.sort_by_key(|(at, _)| *at);
    let end = start + window;

    let mut stats = LookupStats {
        count: lookups,
        ..LookupStats::default()
    };
    let mut records_found = 0usize;
    let mut latencies = Vec::with_capacity(lookups);
    // (node, query) -> (what, started, the closest node online then)
    let mut waiting: HashMap<(usize, QueryId), (Want, Duration, Option<PeerId>)> = HashMap::new();
    let mut busy: HashMap<usize, usize> = HashMap::new();
    let mut next = 0usize;
    let mut window_bytes = None;
    loop {
        let now = sim.now().monotonic;
        if let Some(c) = churn.as_deref_mut()
            && now < end
            && c.next_step() <= now
        {
            let step = c.advance(sim, |i| !busy.contains_key(&i));
            for i in step.back {
                // Back online: it looks itself up, as a node does when it starts.
                sim.with(i, |d, now| {
                    let me = d.table().local_key();
                    d.find_node(me, now.monotonic)
                });
            }
        }
        while next < plan.len() && plan[next].0 <= now {
            let (_, want) = plan[next];
            next += 1;
            let from = loop {
                let i = sim.rng().index(n);
                if sim.is_online(i) {
                    break i;
                }
            };
            let truth = match want {
                Want::Node(k) => {
                    let group = groups.map(|g| (g, g[from]));
                    closest_online(sim, keys, &k, group).map(|t| sim.peer(t))
                }
                Want::Record(_) => None,
            };
            let id = sim.with(from, |d, now| match want {
                Want::Node(k) => d.find_node(k, now.monotonic),
                Want::Record(k) => d.find_value(k, now.monotonic),
            });
            waiting.insert((from, id), (want, now, truth));
            *busy.entry(from).or_default() += 1;
        }
        if next >= plan.len() && waiting.is_empty() && now >= end {
            break;
        }
        // Waiting lookups give up after the limit.
        if now > end + LOOKUP_LIMIT {
            break;
        }
        if window_bytes.is_none() && now >= end {
            window_bytes = Some(sim.stats().bytes_sent - bytes_before);
        }
        let mut until = plan.get(next).map_or(end + LOOKUP_LIMIT, |(at, _)| *at);
        if now < end {
            until = until.min(end);
        }
        if let Some(c) = churn.as_deref()
            && c.next_step() < end
        {
            until = until.min(c.next_step());
        }
        let limit = until.saturating_sub(now).max(Duration::from_micros(1));
        sim.run_while_not(limit, |s| {
            for (i, e) in s.take_events() {
                let Event::Found { id, outcome } = e else {
                    continue;
                };
                let Some((want, started, truth_then)) = waiting.remove(&(i, id)) else {
                    continue;
                };
                if let Some(b) = busy.get_mut(&i) {
                    *b -= 1;
                    if *b == 0 {
                        busy.remove(&i);
                    }
                }
                let took = s.now().monotonic.saturating_sub(started);
                match want {
                    Want::Node(target) => {
                        let group = groups.map(|g| (g, g[i]));
                        let truth = closest_online(s, keys, &target, group).map(|t| s.peer(t));
                        let first = outcome.closest.first().map(|c| c.peer);
                        // Under churn the answer may change while the lookup runs: the
                        // closest node online when it started, or when it ended, is right.
                        let exact = first.is_some() && (first == truth || first == truth_then);
                        stats.finished(exact, &outcome, took, &mut latencies);
                    }
                    Want::Record(_) => {
                        if outcome.value.is_some() {
                            records_found += 1;
                        }
                    }
                }
            }
            false
        });
    }
    stats.unfinished = waiting
        .values()
        .filter(|(w, _, _)| matches!(w, Want::Node(_)))
        .count();
    stats.average_over(lookups - stats.unfinished, &mut latencies);
    sim.take_events();
    let churn_after = churn.as_ref().map_or((0, 0), |c| c.totals());
    Phase {
        name,
        lookups: stats,
        records: (records.len(), records_found),
        duration: window,
        bytes_sent: window_bytes.unwrap_or_else(|| sim.stats().bytes_sent - bytes_before),
        nodes: n,
        churned: (
            churn_after.0 - churn_before.0,
            churn_after.1 - churn_before.1,
        ),
    }
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
        .filter(|e| matches!(e, Some((Event::Put { stored, .. }, _)) if *stored > 0))
        .count();
    (names, stored)
}

/// Builds the network, measures it, runs the timed phases the options ask for (partition and
/// healing, continuous churn), churns it, measures again.
///
/// `progress` is told what is happening (for a long run's log).
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
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
    let join_bytes = sim.stats().bytes_sent;
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
    let settle_bytes = sim.stats().bytes_sent - join_bytes;
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

    let mut phases = Vec::new();
    if options.steady {
        progress("steady state: lookups spread over the window");
        phases.push(timed_lookups(
            &mut sim,
            &keys,
            Timed {
                name: "steady, every node online".into(),
                lookups: options.lookups,
                records: &names,
                window: options.window,
                churn: None,
                groups: None,
            },
        ));
    }
    if !options.partition.is_zero() {
        let groups = halves(n);
        sim.partition(Some(groups.clone()));
        progress(&format!(
            "partitioned 50/50 for {} s; lookups within each half",
            options.partition.as_secs()
        ));
        phases.push(timed_lookups(
            &mut sim,
            &keys,
            Timed {
                name: "partitioned 50/50, judged within the asker's half".into(),
                lookups: options.lookups,
                records: &names,
                window: options.partition,
                churn: None,
                groups: Some(&groups),
            },
        ));
        sim.partition(None);
        progress("healed; lookups across the whole network");
        phases.push(timed_lookups(
            &mut sim,
            &keys,
            Timed {
                name: "after the partition healed".into(),
                lookups: options.lookups,
                records: &names,
                window: options.window,
                churn: None,
                groups: None,
            },
        ));
    }
    if options.live_churn_percent > 0 {
        let mut churn = Churn::new(n, options.live_churn_percent, options.away, CHURN_STEP);
        progress(&format!(
            "continuous churn: {}% offline at any time, {} s away each",
            options.live_churn_percent,
            options.away.as_secs()
        ));
        phases.push(timed_lookups(
            &mut sim,
            &keys,
            Timed {
                name: format!(
                    "continuous churn {}%, {} s away",
                    options.live_churn_percent,
                    options.away.as_secs()
                ),
                lookups: options.lookups,
                records: &names,
                window: options.window,
                churn: Some(&mut churn),
                groups: None,
            },
        ));
        for i in churn.stop(&mut sim) {
            sim.with(i, |d, now| {
                let me = d.table().local_key();
                d.find_node(me, now.monotonic)
            });
        }
        sim.run_until(sim.now().monotonic + SLOW_LOOKUP);
        sim.take_events();
    }

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
        .filter(|e| matches!(e, Some((Event::Found { outcome, .. }, _)) if outcome.value.is_some()))
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
        phases,
        join_bytes,
        settle_bytes,
        bytes_per_node,
        delivered: sim.stats().delivered,
        misaddressed: sim.stats().misaddressed,
        bytes_sent: sim.stats().bytes_sent,
        peak_rss: crate::peak_rss_bytes(),
    }
}
