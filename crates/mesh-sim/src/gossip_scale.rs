//! The gossip core at scale: `n` nodes on a random neighbour graph ([`gossip::network`]), a
//! bounded number of broadcasts from random nodes at random moments of a publishing window,
//! under loss, continuous churn or a 50/50 partition that heals. `cargo xtask sim
//! gossip-scale --nodes N` prints the [`Report`] of [`run`].
//!
//! What is measured, per broadcast and node: whether it got the message by push, and when
//! (virtual time from publishing to the node's first copy, by push or by pull); over the run:
//! the share of online nodes holding every message at the end, when every online node first
//! held every message, the bytes the network carried per node and minute, and the growth of
//! the process's resident memory per node.
//!
//! Links follow `mesh-node`: a neighbour that goes offline stays a neighbour (pushes to it are
//! lost); a node that comes back brings its links up again, and each link coming up makes
//! both ends pull from each other ([`gossip::link`]). A partition keeps every link; after it
//! heals, only the periodic pulls (one random neighbour a minute) cross it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mesh_crypto::PeerId;
use mesh_gossip::node::{Event, Gossip};
use mesh_gossip::{GossipConfig, MessageId};

use crate::gossip::{self, message, network};
use crate::{Churn, NetConfig, Percentiles, Sim, halves, millis, peak_rss_bytes, rss_bytes};

/// How often continuous churn changes the membership.
pub const CHURN_STEP: Duration = Duration::from_secs(10);

/// How long, after churn stops, the run waits for every node to catch up at most.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(600);

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Nodes in the network.
    pub nodes: usize,
    /// Random links each node makes (links are symmetric: the mean degree is about twice).
    pub degree: usize,
    /// Broadcasts, each from a random online node at a random moment of `publish`.
    pub messages: usize,
    /// Bytes of each message's body (the signed message adds 122: header, topic, signature).
    pub body: usize,
    /// The publishing window.
    pub publish: Duration,
    /// Virtual time the run goes on after the publishing window (and the partition) ended.
    pub drain: Duration,
    /// Messages lost, per mille.
    pub loss_per_mille: u32,
    /// Share of the nodes offline at any time (continuous churn), in percent; 0 for none.
    pub churn_percent: u32,
    /// How long a churned node stays away.
    pub away: Duration,
    /// If not zero: the network is split 50/50 from the start for this long (messages are
    /// published on both sides), then heals.
    pub partition: Duration,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 1000,
            degree: 4,
            messages: 20,
            body: 256,
            publish: Duration::from_secs(300),
            drain: Duration::from_secs(1800),
            loss_per_mille: 0,
            churn_percent: 0,
            away: Duration::from_secs(300),
            partition: Duration::ZERO,
            seed: 1,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The options it ran with.
    pub options: Options,
    /// Mean neighbours per node.
    pub degree: f64,
    /// Messages published.
    pub published: usize,
    /// Mean over messages of the nodes that got it by push (publisher included), over the
    /// nodes online and on the publisher's side of any partition when it was published.
    pub push_ratio: f64,
    /// The lowest of those.
    pub push_ratio_min: f64,
    /// At the end of the run: messages held by online nodes over online nodes × messages.
    pub final_ratio: f64,
    /// Online nodes at the end.
    pub online_at_end: usize,
    /// Online nodes at the end that held every message.
    pub complete_at_end: usize,
    /// Virtual time from the last publication (or the healing, if later) until every online
    /// node first held every message; `None` if that never happened.
    pub converged_after: Option<Duration>,
    /// Virtual time from publication to each node's first copy, over every copy received.
    pub latency: Percentiles,
    /// The same, over copies received by push only.
    pub push_latency: Percentiles,
    /// Copies received by pull.
    pub pulled: u64,
    /// Messages refused by a node, or frames it found bad (a bug in this setting if not zero).
    pub bad_input: u64,
    /// Virtual time the measured part took (publishing window and drain).
    pub duration: Duration,
    /// Bytes every node put on the network during it.
    pub bytes_sent: u64,
    /// Bytes delivered during it.
    pub bytes_delivered: u64,
    /// Bytes the busiest node sent during it.
    pub max_node_bytes: u64,
    /// Departures and returns (continuous churn).
    pub churned: (u64, u64),
    /// (node, message) pairs where the node was offline (churned) when the message was
    /// published: push cannot reach it.
    pub missed_while_away: u64,
    /// Of those, copies the node got after it came back (by pull), by the end of the run.
    pub recovered_by_end: u64,
    /// The same after churn stopped and every node caught up (see `caught_up_after`).
    pub recovered_after_stop: u64,
    /// Copies that reached a node on the other side of the partition before it healed (a
    /// bug if not zero).
    pub crossed_partition: u64,
    /// After the run, churn stops and every node comes back: how long until every node (all
    /// of them now) held every message (`None` without churn, or if that took over
    /// [`CATCH_UP_LIMIT`]).
    pub caught_up_after: Option<Duration>,
    /// Resident memory growth per node once the network was built (bytes).
    pub memory_built: Option<u64>,
    /// Resident memory growth per node at the end, every node holding the messages (bytes).
    pub memory_end: Option<u64>,
    /// Peak resident memory of the process.
    pub peak_rss: Option<u64>,
    /// Wall-clock time of the whole run.
    pub wall: Duration,
    /// Messages a node sent to a wrong or missing address (a bug if not zero).
    pub misaddressed: u64,
}

impl Report {
    /// Bytes sent per node and minute of virtual time.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn bytes_per_node_minute(&self) -> f64 {
        self.bytes_sent as f64
            / self.options.nodes.max(1) as f64
            / (self.duration.as_secs_f64() / 60.0).max(1e-9)
    }

    /// Bytes the busiest node sent per minute of virtual time.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn max_node_bytes_minute(&self) -> f64 {
        self.max_node_bytes as f64 / (self.duration.as_secs_f64() / 60.0).max(1e-9)
    }

    /// A short name of the condition.
    pub fn condition(&self) -> String {
        condition(&self.options)
    }
}

/// A short name of the condition `o` describes.
pub fn condition(o: &Options) -> String {
    let mut parts = Vec::new();
    if o.loss_per_mille > 0 {
        parts.push(format!("{}% loss", f64::from(o.loss_per_mille) / 10.0));
    }
    if o.churn_percent > 0 {
        parts.push(format!(
            "churn {}% ({} s away)",
            o.churn_percent,
            o.away.as_secs()
        ));
    }
    if !o.partition.is_zero() {
        parts.push(format!("50/50 partition for {} s", o.partition.as_secs()));
    }
    if parts.is_empty() {
        "no loss, no churn".into()
    } else {
        parts.join(", ")
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "nodes {}, mean degree {:.1}, {} messages of {} body bytes over {} s, {}; seed {}",
            o.nodes,
            self.degree,
            self.published,
            o.body,
            o.publish.as_secs(),
            self.condition(),
            o.seed
        )?;
        writeln!(
            f,
            "push reached {:.2}% of reachable online nodes (mean; lowest {:.2}%), latency {}",
            100.0 * self.push_ratio,
            100.0 * self.push_ratio_min,
            self.push_latency
        )?;
        writeln!(
            f,
            "at the end: {:.4}% of (online node, message) pairs held; {}/{} online nodes hold every message; {} copies came by pull",
            100.0 * self.final_ratio,
            self.complete_at_end,
            self.online_at_end,
            self.pulled
        )?;
        match self.converged_after {
            Some(d) => writeln!(
                f,
                "every online node held every message {:.1} s after the last publication{}",
                d.as_secs_f64(),
                if o.partition.is_zero() {
                    ""
                } else {
                    " or the healing"
                }
            )?,
            None => writeln!(f, "never did every online node hold every message at once")?,
        }
        if o.churn_percent > 0 {
            writeln!(
                f,
                "copies missed while away (node offline at publication): {}; received after coming back: {} by the end, {} after churn stopped",
                self.missed_while_away, self.recovered_by_end, self.recovered_after_stop
            )?;
        }
        if let Some(d) = self.caught_up_after {
            writeln!(
                f,
                "churn stopped: every node (all {}) held every message {:.1} s later",
                o.nodes,
                d.as_secs_f64()
            )?;
        } else if o.churn_percent > 0 {
            writeln!(
                f,
                "churn stopped: not every node caught up within the limit"
            )?;
        }
        if !o.partition.is_zero() {
            writeln!(
                f,
                "copies that crossed the partition before it healed: {}",
                self.crossed_partition
            )?;
        }
        writeln!(f, "latency to every copy (push or pull): {}", self.latency)?;
        writeln!(
            f,
            "bytes: {:.0} sent per node per minute (busiest node {:.0}), {} sent and {} delivered in {:.0} s virtual{}",
            self.bytes_per_node_minute(),
            self.max_node_bytes_minute(),
            self.bytes_sent,
            self.bytes_delivered,
            self.duration.as_secs_f64(),
            if self.churned.0 > 0 {
                format!(
                    "; {} departures, {} returns",
                    self.churned.0, self.churned.1
                )
            } else {
                String::new()
            }
        )?;
        match (self.memory_built, self.memory_end) {
            (Some(a), Some(b)) => writeln!(
                f,
                "memory: {a} bytes per node built, {b} at the end (process RSS growth / nodes)"
            )?,
            _ => writeln!(f, "memory: not measured on this platform")?,
        }
        write!(
            f,
            "bad input {}, misaddressed {}; wall time {:.1} s",
            self.bad_input,
            self.misaddressed,
            self.wall.as_secs_f64()
        )
    }
}

/// Per-run bookkeeping of who holds what.
struct Tracker {
    /// Message id -> its index.
    index: HashMap<MessageId, usize>,
    /// Per message: when, by whom.
    published: Vec<(std::time::Duration, usize)>,
    /// Per message: copies received by push.
    pushed: Vec<u64>,
    /// Per node: messages held.
    held: Vec<u32>,
    latencies: Vec<u32>,
    push_latencies: Vec<u32>,
    pulled: u64,
    bad: u64,
    /// Per message: a bit per node that was offline when it was published.
    away: Vec<Vec<u64>>,
    /// Copies of those that such nodes received later.
    recovered: u64,
    /// While split: the groups; copies that reached the other side count as crossed.
    split: Option<Vec<u16>>,
    crossed: u64,
    /// Once every message is out: online nodes that lack some (kept up to date).
    lacking: Option<usize>,
}

impl Tracker {
    fn on_events(&mut self, sim: &mut Sim<Gossip>) {
        let now = sim.now().monotonic;
        let total = u32::try_from(self.published.len()).unwrap_or(u32::MAX);
        for (i, e) in sim.take_events() {
            match e {
                Event::Message { id, pulled, .. } => {
                    let Some(&k) = self.index.get(&id) else {
                        continue;
                    };
                    let took = millis(now.saturating_sub(self.published[k].0));
                    if let Some(g) = &self.split
                        && g[i] != g[self.published[k].1]
                    {
                        self.crossed += 1;
                    }
                    self.latencies.push(took);
                    if pulled {
                        self.pulled += 1;
                    } else {
                        self.pushed[k] += 1;
                        self.push_latencies.push(took);
                    }
                    if self.away[k][i / 64] >> (i % 64) & 1 == 1 {
                        self.recovered += 1;
                    }
                    self.held[i] += 1;
                    if self.held[i] == total
                        && sim.is_online(i)
                        && let Some(l) = self.lacking.as_mut()
                    {
                        *l -= 1;
                    }
                }
                Event::BadInput { .. } => self.bad += 1,
            }
        }
    }

    fn lacks(&self, i: usize) -> bool {
        (self.held[i] as usize) < self.published.len()
    }
}

/// Builds the network, publishes, lets push and pull run under the options' conditions, and
/// measures.
///
/// `progress` is told what is happening (for a long run's log).
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
pub fn run(options: Options, mut progress: impl FnMut(&str)) -> Report {
    let started = Instant::now();
    let rss_start = rss_bytes();
    let n = options.nodes.max(2);
    let net = NetConfig {
        loss_per_mille: options.loss_per_mille,
        seed: options.seed,
        ..NetConfig::default()
    };
    let (mut sim, ids) = network(n, options.degree, GossipConfig::default(), net);
    let per_node = |rss: Option<u64>| match (rss_start, rss) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) / n as u64),
        _ => None,
    };
    let memory_built = per_node(rss_bytes());
    #[allow(clippy::cast_precision_loss)]
    let degree = (0..n)
        .map(|i| sim.node(i).neighbours().count())
        .sum::<usize>() as f64
        / n as f64;
    progress(&format!(
        "built {n} nodes, mean degree {degree:.1} ({:.0} s, {} MB resident)",
        started.elapsed().as_secs_f64(),
        rss_bytes().unwrap_or(0) >> 20
    ));

    let start = sim.now().monotonic;
    let bytes_before = sim.stats().bytes_sent;
    let delivered_before = sim.stats().bytes_delivered;
    let node_bytes_before: Vec<u64> = (0..n).map(|i| sim.bytes_sent_by(i)).collect();
    let groups = halves(n);
    let heal_at = (!options.partition.is_zero()).then(|| start + options.partition);
    let mut split = heal_at.is_some();
    if split {
        sim.partition(Some(groups.clone()));
    }
    let index_of: HashMap<PeerId, usize> = (0..n).map(|i| (sim.peer(i), i)).collect();
    let mut churn = (options.churn_percent > 0)
        .then(|| Churn::new(n, options.churn_percent, options.away, CHURN_STEP));
    let publish_end = start + options.publish;
    let end = publish_end.max(heal_at.unwrap_or(start)) + options.drain;
    let window = u64::try_from(options.publish.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut plan: Vec<Duration> = (0..options.messages)
        .map(|_| start + Duration::from_micros(sim.rng().below(window)))
        .collect();
    plan.sort_unstable();

    let mut t = Tracker {
        index: HashMap::new(),
        published: Vec::new(),
        pushed: Vec::new(),
        held: vec![0; n],
        latencies: Vec::with_capacity(n * options.messages),
        push_latencies: Vec::with_capacity(n * options.messages),
        pulled: 0,
        bad: 0,
        away: Vec::new(),
        recovered: 0,
        split: heal_at.map(|_| groups.clone()),
        crossed: 0,
        lacking: None,
    };
    // Per message: nodes that push could reach when it was published.
    let mut reachable: Vec<usize> = Vec::new();
    let mut converged_after = None;
    let mut next_publish = 0usize;
    let mut last_report = Instant::now();
    loop {
        let now = sim.now().monotonic;
        if split && heal_at.is_some_and(|h| now >= h) {
            split = false;
            t.on_events(&mut sim);
            t.split = None;
            sim.partition(None);
            progress(&format!(
                "healed at {:.0} s",
                now.saturating_sub(start).as_secs_f64()
            ));
        }
        if let Some(c) = churn.as_mut()
            && c.next_step() <= now
            && now < end
        {
            // Events of the step before count against the membership they happened in.
            t.on_events(&mut sim);
            let step = c.advance(&mut sim, |_| true);
            if t.lacking.is_some() {
                let gone = step.left.iter().filter(|&&i| t.lacks(i)).count();
                let back = step.back.iter().filter(|&&i| t.lacks(i)).count();
                if let Some(l) = t.lacking.as_mut() {
                    *l = *l + back - gone;
                }
            }
            for i in step.back {
                relink(&mut sim, &index_of, i);
            }
            t.on_events(&mut sim);
        }
        while next_publish < plan.len() && plan[next_publish] <= now {
            next_publish += 1;
            let from = loop {
                let i = sim.rng().index(n);
                if sim.is_online(i) {
                    break i;
                }
            };
            let k = t.published.len();
            let mut body = format!("broadcast {k} ").into_bytes();
            body.resize(options.body.max(body.len()), b'.');
            let m = message(&ids[from], &body, sim.now().unix);
            let Ok(id) = sim.with(from, |g, now| g.publish(m, now.unix, now.monotonic)) else {
                // A fresh message signed here always publishes; if not, it is not counted.
                continue;
            };
            t.index.insert(id, k);
            t.published.push((now, from));
            t.pushed.push(0);
            t.held[from] += 1;
            let mut away = vec![0u64; n.div_ceil(64)];
            for i in (0..n).filter(|&i| !sim.is_online(i)) {
                away[i / 64] |= 1 << (i % 64);
            }
            t.away.push(away);
            let side = heal_at.filter(|&h| now < h).map(|_| groups[from]);
            reachable.push(
                (0..n)
                    .filter(|&i| sim.is_online(i) && side.is_none_or(|g| groups[i] == g))
                    .count(),
            );
            if next_publish == plan.len() {
                t.lacking = Some((0..n).filter(|&i| sim.is_online(i) && t.lacks(i)).count());
            }
        }
        if converged_after.is_none() && t.lacking == Some(0) && heal_at.is_none_or(|h| now >= h) {
            let from = t
                .published
                .last()
                .map_or(start, |p| p.0)
                .max(heal_at.unwrap_or(start));
            converged_after = Some(now.saturating_sub(from));
            progress(&format!(
                "every online node holds every message after {:.1} s",
                now.saturating_sub(from).as_secs_f64()
            ));
        }
        if now >= end {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            progress(&format!(
                "virtual {:.0} s of {:.0}, {} published, {} copies, {} MB resident",
                now.saturating_sub(start).as_secs_f64(),
                end.saturating_sub(start).as_secs_f64(),
                t.published.len(),
                t.latencies.len(),
                rss_bytes().unwrap_or(0) >> 20
            ));
        }
        let mut until = plan.get(next_publish).copied().unwrap_or(end).min(end);
        if let Some(h) = heal_at
            && now < h
        {
            until = until.min(h);
        }
        if let Some(c) = churn.as_ref() {
            until = until.min(c.next_step().max(now));
        }
        let limit = until.saturating_sub(now);
        let watch_convergence = converged_after.is_none() && t.lacking.is_some();
        sim.run_while_not(limit, |s| {
            t.on_events(s);
            watch_convergence
                && t.lacking == Some(0)
                && heal_at.is_none_or(|h| s.now().monotonic >= h)
        });
        t.on_events(&mut sim);
    }

    let duration = sim.now().monotonic.saturating_sub(start);
    let online_at_end = (0..n).filter(|&i| sim.is_online(i)).count();
    let complete_at_end = (0..n).filter(|&i| sim.is_online(i) && !t.lacks(i)).count();
    let held_online: u64 = (0..n)
        .filter(|&i| sim.is_online(i))
        .map(|i| u64::from(t.held[i]))
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let final_ratio = held_online as f64 / (online_at_end.max(1) * t.published.len().max(1)) as f64;
    #[allow(clippy::cast_precision_loss)]
    let ratios: Vec<f64> = t
        .pushed
        .iter()
        .zip(&reachable)
        .map(|(&p, &r)| (p + 1) as f64 / r.max(1) as f64)
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let push_ratio = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
    let push_ratio_min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max_node_bytes = (0..n)
        .map(|i| sim.bytes_sent_by(i) - node_bytes_before[i])
        .max()
        .unwrap_or(0);
    let missed_while_away: u64 = t
        .away
        .iter()
        .map(|b| b.iter().map(|w| u64::from(w.count_ones())).sum::<u64>())
        .sum();
    let recovered_by_end = t.recovered;
    let latency = Percentiles::of_millis(&mut t.latencies);
    let push_latency = Percentiles::of_millis(&mut t.push_latencies);
    let bytes_sent = sim.stats().bytes_sent - bytes_before;
    let bytes_delivered = sim.stats().bytes_delivered - delivered_before;
    let memory_end = per_node(rss_bytes());
    let churned = churn.as_ref().map_or((0, 0), Churn::totals);
    let caught_up_after = churn.as_mut().and_then(|c| {
        // Everyone comes back; each returning node's links come up and pull.
        t.on_events(&mut sim);
        for i in c.stop(&mut sim) {
            relink(&mut sim, &index_of, i);
        }
        let stopped = sim.now().monotonic;
        t.lacking = Some((0..n).filter(|&i| t.lacks(i)).count());
        let done = sim.run_while_not(CATCH_UP_LIMIT, |s| {
            t.on_events(s);
            t.lacking == Some(0)
        });
        done.then(|| sim.now().monotonic.saturating_sub(stopped))
    });
    if let Some(d) = caught_up_after {
        progress(&format!(
            "churn stopped: every node holds every message after {:.1} s",
            d.as_secs_f64()
        ));
    }
    Report {
        options,
        degree,
        published: t.published.len(),
        push_ratio,
        push_ratio_min: if ratios.is_empty() {
            0.0
        } else {
            push_ratio_min
        },
        final_ratio,
        online_at_end,
        complete_at_end,
        converged_after,
        latency,
        push_latency,
        pulled: t.pulled,
        bad_input: t.bad,
        duration,
        bytes_sent,
        bytes_delivered,
        max_node_bytes,
        churned,
        crossed_partition: t.crossed,
        missed_while_away,
        recovered_by_end,
        recovered_after_stop: t.recovered,
        caught_up_after,
        memory_built,
        memory_end,
        peak_rss: peak_rss_bytes(),
        wall: started.elapsed(),
        misaddressed: sim.stats().misaddressed,
    }
}

/// Node `i` came back: its links come up again, and each end pulls from the other.
fn relink(sim: &mut Sim<Gossip>, index_of: &HashMap<PeerId, usize>, i: usize) {
    let neighbours: Vec<usize> = sim
        .node(i)
        .neighbours()
        .filter_map(|p| index_of.get(p).copied())
        .collect();
    for j in neighbours {
        if sim.is_online(j) {
            gossip::link(sim, i, j);
        }
    }
}
