//! A deterministic discrete-event simulator for sans-IO protocol cores.
//!
//! Cores implement [`Node`]: bytes and time go in, messages and events come out, and the core
//! says when it next wants to be ticked. [`Sim`] delivers every message after a latency drawn
//! from a seeded generator, loses a configured share, drops what crosses a partition or goes
//! to a node that is offline (churn), and ticks each node only at its own deadline, so an idle
//! network of a million nodes costs one wake-up per node per maintenance round rather than one
//! per node per simulated second. The same seed gives the same run, message for message.
//!
//! Messages are routed by address (`sim:<index>`, see [`address`]), not by peer id: a core that
//! sends to a contact without its address is caught here as misaddressed, as it would fail on
//! a real network.
//!
//! [`NetStats`] counts messages and bytes (sent and delivered, and per sending node), so a
//! scenario can report bandwidth per node and minute of virtual time. [`Churn`] keeps a share
//! of the nodes offline at any time and rotates them; [`Sim::partition`] splits the network.
//!
//! [`dht`] runs the DHT core at scale (`cargo xtask sim dht --nodes N`), [`gossip_scale`] the
//! gossip core (`cargo xtask sim gossip-scale --nodes N`), and [`scale`] the matrix of both
//! under churn, loss and a partition (`cargo xtask sim scale`, see `docs/SCALE.md`).

#![forbid(unsafe_code)]

pub mod dht;
pub mod gossip;
pub mod gossip_scale;
pub mod scale;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use mesh_crypto::{PeerId, UnixMillis};

/// Unix time at virtual time zero (2023-11-14).
pub const UNIX_START: u64 = 1_700_000_000_000;

/// The time a node is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Virtual monotonic time since the start.
    pub monotonic: Duration,
    /// Virtual wall-clock time.
    pub unix: UnixMillis,
}

/// What a node wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<E> {
    /// Send `bytes` to `to` at `address`.
    Send {
        /// The peer.
        to: PeerId,
        /// Its address.
        address: String,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Report an event.
    Event(E),
}

/// A sans-IO core the simulator can drive.
pub trait Node {
    /// What it reports.
    type Event;
    /// A message from `from`, who can be reached at `address`.
    fn handle(&mut self, from: PeerId, address: &str, bytes: &[u8], now: Now);
    /// Time passes.
    fn tick(&mut self, now: Now);
    /// When it next wants [`Node::tick`] called.
    fn next_deadline(&self) -> Duration;
    /// The next thing it wants done.
    fn poll(&mut self) -> Option<Action<Self::Event>>;
}

/// The address of node `index` in a simulation.
pub fn address(index: usize) -> String {
    format!("sim:{index}")
}

fn parse_address(a: &str) -> Option<usize> {
    a.strip_prefix("sim:")?.parse().ok()
}

/// Network properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Shortest one-way latency.
    pub latency_min: Duration,
    /// Longest one-way latency.
    pub latency_max: Duration,
    /// Messages lost, per mille.
    pub loss_per_mille: u32,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency_min: Duration::from_millis(5),
            latency_max: Duration::from_millis(50),
            loss_per_mille: 0,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// A small, fast, seeded generator (xorshift64*): determinism, not secrecy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x2545_f491_4f6c_dd1d
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An index below `n`.
    #[allow(clippy::cast_possible_truncation)] // below n, which is a usize
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages delivered.
    pub delivered: u64,
    /// Lost to the configured loss.
    pub lost: u64,
    /// Sent to an address that is not the peer's (or to none).
    pub misaddressed: u64,
    /// Sent to, or by, an offline node.
    pub offline: u64,
    /// Dropped at a partition.
    pub partitioned: u64,
    /// Ticks run.
    pub ticks: u64,
    /// Bytes of the messages online nodes put on the network to a correct address, counted
    /// before loss, partitions and offline receivers drop them: what the senders' links carry
    /// (payload only, no transport framing or encryption).
    pub bytes_sent: u64,
    /// Bytes of the messages delivered.
    pub bytes_delivered: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Wake(usize),
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
}

/// The simulated network.
pub struct Sim<N: Node> {
    nodes: Vec<N>,
    peers: Vec<PeerId>,
    addresses: Vec<String>,
    online: Vec<bool>,
    group: Vec<u16>,
    wake_at: Vec<Duration>,
    sent_by: Vec<u64>,
    queue: BinaryHeap<Reverse<(Duration, u64, Kind)>>,
    now: Duration,
    seq: u64,
    rng: Rng,
    config: NetConfig,
    events: VecDeque<(usize, N::Event)>,
    stats: NetStats,
}

impl<N: Node> std::fmt::Debug for Sim<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.nodes.len())
            .field("now", &self.now)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<N: Node> Sim<N> {
    /// An empty network.
    pub fn new(config: NetConfig) -> Self {
        Self {
            nodes: Vec::new(),
            peers: Vec::new(),
            addresses: Vec::new(),
            online: Vec::new(),
            group: Vec::new(),
            wake_at: Vec::new(),
            sent_by: Vec::new(),
            queue: BinaryHeap::new(),
            now: Duration::ZERO,
            seq: 0,
            rng: Rng::new(config.seed),
            config,
            events: VecDeque::new(),
            stats: NetStats::default(),
        }
    }

    /// Adds an online node; returns its index (its address is [`address`] of it).
    pub fn add(&mut self, peer: PeerId, node: N) -> usize {
        let i = self.nodes.len();
        self.nodes.push(node);
        self.peers.push(peer);
        self.addresses.push(address(i));
        self.online.push(true);
        self.group.push(0);
        self.wake_at.push(Duration::MAX);
        self.sent_by.push(0);
        self.schedule(i);
        i
    }

    /// Nodes in the network.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &N {
        &self.nodes[i]
    }

    /// Node `i`'s identity.
    pub fn peer(&self, i: usize) -> PeerId {
        self.peers[i]
    }

    /// Whether node `i` is online.
    pub fn is_online(&self, i: usize) -> bool {
        self.online[i]
    }

    /// Every node's identity, by index.
    pub fn peers(&self) -> &[PeerId] {
        &self.peers
    }

    /// The virtual time.
    pub fn now(&self) -> Now {
        Now {
            monotonic: self.now,
            unix: UnixMillis(UNIX_START + u64::try_from(self.now.as_millis()).unwrap_or(0)),
        }
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Bytes node `i` put on the network so far (as counted in [`NetStats::bytes_sent`]).
    pub fn bytes_sent_by(&self, i: usize) -> u64 {
        self.sent_by[i]
    }

    /// The network's properties.
    pub fn config(&self) -> NetConfig {
        self.config
    }

    /// Messages in flight and wake-ups scheduled.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The generator (for scenarios that draw from the same seed).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Runs `f` on node `i` at the current time, then moves what it sent into the network.
    pub fn with<T>(&mut self, i: usize, f: impl FnOnce(&mut N, Now) -> T) -> T {
        let now = self.now();
        let out = f(&mut self.nodes[i], now);
        self.pump(i);
        self.schedule(i);
        out
    }

    /// Takes node `i` off the network (churn): messages to it are dropped and it is not
    /// ticked. Its state is kept, as on a device that lost its link.
    pub fn set_online(&mut self, i: usize, online: bool) {
        self.online[i] = online;
        if online {
            self.wake_at[i] = Duration::MAX;
            self.schedule(i);
        }
    }

    /// Splits the network: nodes with different group numbers cannot reach each other.
    /// `None` heals it.
    ///
    /// # Panics
    /// If `groups` does not have one entry per node.
    pub fn partition(&mut self, groups: Option<Vec<u16>>) {
        match groups {
            Some(g) => {
                assert_eq!(g.len(), self.nodes.len(), "one group per node");
                self.group = g;
            }
            None => self.group.iter_mut().for_each(|g| *g = 0),
        }
    }

    /// Events reported so far, oldest first (and forgets them).
    pub fn take_events(&mut self) -> Vec<(usize, N::Event)> {
        self.events.drain(..).collect()
    }

    /// Runs the next scheduled thing; `false` if nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((t, _, kind))) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(t);
        match kind {
            Kind::Wake(i) => {
                if self.wake_at[i] != t || !self.online[i] {
                    return true;
                }
                self.wake_at[i] = Duration::MAX;
                let now = self.now();
                self.nodes[i].tick(now);
                self.stats.ticks += 1;
                self.pump(i);
                self.schedule(i);
            }
            Kind::Deliver { from, to, bytes } => {
                if !self.online[to] {
                    self.stats.offline += 1;
                    return true;
                }
                let now = self.now();
                let from_peer = self.peers[from];
                self.nodes[to].handle(from_peer, &self.addresses[from], &bytes, now);
                self.stats.delivered += 1;
                self.stats.bytes_delivered += bytes.len() as u64;
                self.pump(to);
                self.schedule(to);
            }
        }
        true
    }

    /// Runs until virtual time `until` (or nothing is scheduled).
    pub fn run_until(&mut self, until: Duration) {
        while self
            .queue
            .peek()
            .is_some_and(|Reverse((t, _, _))| *t <= until)
        {
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs until `done` holds (checked after every step) or `limit` of virtual time passed;
    /// returns whether `done` held.
    pub fn run_while_not(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let until = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            let next = self.queue.peek().map(|Reverse((t, _, _))| *t);
            match next {
                Some(t) if t <= until => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(until);
                    return done(self);
                }
            }
        }
    }

    fn push(&mut self, at: Duration, kind: Kind) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, kind)));
    }

    /// Schedules node `i`'s next tick if it moved earlier.
    fn schedule(&mut self, i: usize) {
        let at = self.nodes[i].next_deadline().max(self.now);
        if at < self.wake_at[i] {
            self.wake_at[i] = at;
            self.push(at, Kind::Wake(i));
        }
    }

    /// Moves node `i`'s output into the network.
    fn pump(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].poll() {
            match action {
                Action::Event(e) => self.events.push_back((i, e)),
                Action::Send { to, address, bytes } => {
                    let j = parse_address(&address).filter(|&j| self.peers.get(j) == Some(&to));
                    let Some(j) = j else {
                        self.stats.misaddressed += 1;
                        continue;
                    };
                    if !self.online[i] {
                        self.stats.offline += 1;
                        continue;
                    }
                    self.stats.bytes_sent += bytes.len() as u64;
                    self.sent_by[i] += bytes.len() as u64;
                    if self.group[i] != self.group[j] {
                        self.stats.partitioned += 1;
                        continue;
                    }
                    if self.rng.below(1000) < u64::from(self.config.loss_per_mille) {
                        self.stats.lost += 1;
                        continue;
                    }
                    let spread = self
                        .config
                        .latency_max
                        .saturating_sub(self.config.latency_min);
                    let extra = self
                        .rng
                        .below(u64::try_from(spread.as_micros()).unwrap_or(0) + 1);
                    let at = self.now + self.config.latency_min + Duration::from_micros(extra);
                    self.push(
                        at,
                        Kind::Deliver {
                            from: i,
                            to: j,
                            bytes,
                        },
                    );
                }
            }
        }
    }
}

/// Percentiles of a set of durations (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Percentiles {
    /// Of `millis` (milliseconds; sorted in place). All zero if there are none.
    pub fn of_millis(millis: &mut [u32]) -> Self {
        millis.sort_unstable();
        let n = millis.len();
        let at = |per_mille: usize| {
            if n == 0 {
                return Duration::ZERO;
            }
            // Nearest rank: the smallest sample with at least this share at or below it.
            let rank = (n * per_mille).div_ceil(1000).clamp(1, n);
            Duration::from_millis(u64::from(millis[rank - 1]))
        };
        Self {
            count: n,
            p50: at(500),
            p90: at(900),
            p99: at(990),
            max: at(1000),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} / p90 {} / p99 {} / max {}",
            human(self.p50),
            human(self.p90),
            human(self.p99),
            human(self.max)
        )
    }
}

/// A duration for a table: milliseconds below ten seconds, else seconds.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Virtual time as a number of milliseconds for [`Percentiles::of_millis`] (saturating).
pub fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Continuous churn: a share of the nodes is offline at any time, each for a fixed time away,
/// and as nodes come back others leave, so the share stays the same while the membership
/// rotates.
#[derive(Debug, Clone)]
pub struct Churn {
    target: usize,
    away: Duration,
    step: Duration,
    next: Option<Duration>,
    returning: VecDeque<(Duration, usize)>,
    left: u64,
    returned: u64,
}

/// What one [`Churn::advance`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChurnStep {
    /// Nodes that went offline.
    pub left: Vec<usize>,
    /// Nodes that came back (each was away for the configured time).
    pub back: Vec<usize>,
}

impl Churn {
    /// `percent` of `nodes` offline at any time, each for `away`; the membership changes every
    /// `step` of virtual time.
    pub fn new(nodes: usize, percent: u32, away: Duration, step: Duration) -> Self {
        Self {
            target: nodes * usize::try_from(percent.min(99)).unwrap_or(0) / 100,
            away,
            step: step.max(Duration::from_millis(1)),
            next: None,
            returning: VecDeque::new(),
            left: 0,
            returned: 0,
        }
    }

    /// When [`Churn::advance`] next has work (now, before the first call).
    pub fn next_step(&self) -> Duration {
        self.next.unwrap_or(Duration::ZERO)
    }

    /// Nodes offline because of this churn.
    pub fn offline(&self) -> usize {
        self.returning.len()
    }

    /// Departures and returns so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.left, self.returned)
    }

    /// Brings back the nodes whose time away is over, then takes random online nodes for
    /// which `may_leave` holds (other than those just back) offline until the target share is
    /// offline again. The first
    /// call takes the whole share offline at once with returns spread evenly over the next
    /// `away`, so the churn is at its steady rate from the start.
    pub fn advance<N: Node>(
        &mut self,
        sim: &mut Sim<N>,
        may_leave: impl Fn(usize) -> bool,
    ) -> ChurnStep {
        let now = sim.now().monotonic;
        let first = self.next.is_none();
        self.next = Some(now + self.step);
        let mut step = ChurnStep::default();
        while let Some(&(at, i)) = self.returning.front() {
            if at > now {
                break;
            }
            self.returning.pop_front();
            sim.set_online(i, true);
            step.back.push(i);
        }
        let n = sim.len();
        let missing = self.target.saturating_sub(self.returning.len());
        // A node that just came back stays at least a step.
        let just_back: std::collections::HashSet<usize> = step.back.iter().copied().collect();
        let mut tries = 0usize;
        while step.left.len() < missing && tries < 100 * (missing + 1) {
            tries += 1;
            let i = sim.rng().index(n);
            if !sim.is_online(i) || just_back.contains(&i) || !may_leave(i) {
                continue;
            }
            sim.set_online(i, false);
            step.left.push(i);
        }
        let count = u32::try_from(step.left.len()).unwrap_or(u32::MAX).max(1);
        for (k, &i) in step.left.iter().enumerate() {
            let back = if first {
                // Spread evenly: the k-th returns after (k + 1) / count of `away`.
                let k = u32::try_from(k).unwrap_or(u32::MAX).saturating_add(1);
                now + self.away * k / count
            } else {
                now + self.away
            };
            self.returning.push_back((back, i));
        }
        if first {
            self.returning.make_contiguous().sort_unstable();
        }
        self.left += step.left.len() as u64;
        self.returned += step.back.len() as u64;
        step
    }

    /// Brings every node this churn took offline back; returns them.
    pub fn stop<N: Node>(&mut self, sim: &mut Sim<N>) -> Vec<usize> {
        let back: Vec<usize> = self.returning.drain(..).map(|(_, i)| i).collect();
        for &i in &back {
            sim.set_online(i, true);
        }
        self.returned += back.len() as u64;
        back
    }
}

/// Two halves for [`Sim::partition`]: node `i` is in group `i % 2` (node order is unrelated to
/// keys and links, so this is a random 50/50 split).
pub fn halves(n: usize) -> Vec<u16> {
    (0..n).map(|i| u16::from(i % 2 == 1)).collect()
}

/// Resident set size of this process (Linux), in bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident set size of this process (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use mesh_crypto::Identity;

    use super::*;

    /// Echoes every message back to its sender, counts ticks, and wants a tick every `every`.
    struct Echo {
        every: Duration,
        last_tick: Duration,
        ticks: u32,
        got: Vec<(PeerId, Vec<u8>, Duration)>,
        out: VecDeque<Action<u32>>,
    }

    impl Echo {
        fn new(every: Duration) -> Self {
            Self {
                every,
                last_tick: Duration::ZERO,
                ticks: 0,
                got: Vec::new(),
                out: VecDeque::new(),
            }
        }

        fn send(&mut self, to: PeerId, address: String, bytes: Vec<u8>) {
            self.out.push_back(Action::Send { to, address, bytes });
        }
    }

    impl Node for Echo {
        type Event = u32;
        fn handle(&mut self, from: PeerId, address: &str, bytes: &[u8], now: Now) {
            self.got.push((from, bytes.to_vec(), now.monotonic));
            if bytes.first() == Some(&1) {
                self.send(from, address.to_string(), vec![2]);
            }
        }
        fn tick(&mut self, now: Now) {
            self.ticks += 1;
            self.last_tick = now.monotonic;
            self.out.push_back(Action::Event(self.ticks));
        }
        fn next_deadline(&self) -> Duration {
            self.last_tick + self.every
        }
        fn poll(&mut self) -> Option<Action<u32>> {
            self.out.pop_front()
        }
    }

    fn peer(i: u8) -> PeerId {
        Identity::from_seed(&[i; 32]).peer_id()
    }

    fn pair(config: NetConfig) -> Sim<Echo> {
        let mut sim = Sim::new(config);
        sim.add(peer(1), Echo::new(Duration::from_secs(60)));
        sim.add(peer(2), Echo::new(Duration::from_secs(60)));
        sim
    }

    #[test]
    fn messages_arrive_within_the_latency_bounds_and_are_answered_by_address() {
        let mut sim = pair(NetConfig::default());
        for _ in 0..100 {
            sim.with(0, |n, _| n.send(peer(2), address(1), vec![1]));
        }
        sim.run_until(Duration::from_secs(1));
        let got = &sim.node(1).got;
        assert_eq!(got.len(), 100);
        assert!(got.iter().all(|(from, _, at)| *from == peer(1)
            && *at >= Duration::from_millis(5)
            && *at <= Duration::from_millis(50)));
        assert_eq!(sim.node(0).got.len(), 100, "every echo came back");
        assert_eq!(sim.stats().delivered, 200);
    }

    #[test]
    fn wrong_addresses_loss_partitions_and_offline_nodes_drop_messages() {
        let mut sim = pair(NetConfig {
            loss_per_mille: 500,
            ..NetConfig::default()
        });
        sim.with(0, |n, _| {
            n.send(peer(2), String::new(), vec![0]);
            n.send(peer(2), address(0), vec![0]);
            n.send(peer(2), "sim:99".into(), vec![0]);
        });
        assert_eq!(sim.stats().misaddressed, 3);
        for _ in 0..1000 {
            sim.with(0, |n, _| n.send(peer(2), address(1), vec![0]));
        }
        sim.run_until(Duration::from_secs(1));
        let s = sim.stats();
        assert_eq!(s.lost + s.delivered, 1000);
        assert!((400..600).contains(&s.lost), "{s:?}");

        let mut sim = pair(NetConfig::default());
        sim.partition(Some(vec![0, 1]));
        sim.with(0, |n, _| n.send(peer(2), address(1), vec![0]));
        assert_eq!(sim.stats().partitioned, 1);
        sim.partition(None);
        sim.set_online(1, false);
        sim.with(0, |n, _| n.send(peer(2), address(1), vec![0]));
        sim.run_until(Duration::from_secs(1));
        assert_eq!(sim.stats().offline, 1);
        assert!(sim.node(1).got.is_empty());
    }

    #[test]
    fn nodes_are_ticked_at_their_deadlines_only_while_online() {
        let mut sim = pair(NetConfig::default());
        sim.run_until(Duration::from_secs(600));
        // Deadline every 60 s from 0: ticks at 60, 120, ..., 600.
        assert_eq!(sim.node(0).ticks, 10);
        assert_eq!(sim.stats().ticks, 20);
        assert_eq!(sim.take_events().len(), 20);
        sim.set_online(1, false);
        sim.run_until(Duration::from_secs(1200));
        assert_eq!(sim.node(0).ticks, 20);
        assert_eq!(sim.node(1).ticks, 10);
        sim.set_online(1, true);
        sim.run_until(Duration::from_secs(1201));
        assert_eq!(
            sim.node(1).ticks,
            11,
            "an overdue node ticks when it is back"
        );
    }

    #[test]
    fn the_same_seed_replays_the_same_run() {
        let run = |seed| {
            let mut sim = pair(NetConfig {
                loss_per_mille: 300,
                seed,
                ..NetConfig::default()
            });
            for _ in 0..200 {
                sim.with(0, |n, _| n.send(peer(2), address(1), vec![1]));
            }
            sim.run_until(Duration::from_secs(2));
            (sim.stats(), sim.node(1).got.clone())
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7).0, run(8).0);
    }
}
