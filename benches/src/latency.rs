//! Message delivery latency: 1 KiB end-to-end encrypted messages between `mesh_node::Node`s in
//! a mesh of 20 nodes over WebRTC on loopback (redb stores, as `meshd`), against raw
//! webrtc-rs data channels carrying 1 KiB messages over the same hop counts, in the same run.
//!
//! The mesh is a 4 × 5 grid: each node's gossip neighbours are the nodes beside it, and links
//! exist only between neighbours. From the corner node:
//!
//! - 1 hop: to a neighbour, over the open link (`Messenger::send` goes direct);
//! - 2 and 5 hops: to nodes with no link to the sender, so the message crosses 1 and 4 relays
//!   by gossip push (every relay checks the author's signature and stores the message before
//!   passing it on; only the recipient can open it).
//!
//! Latency is from `send` to the recipient's `Message` event (one process, one clock), one
//! message at a time; p50, p99, p99.9. Bursts: messages sent back to back until all arrived,
//! time per message.
//!
//! Baseline: raw data channels, no mesh link layer, no crypto, no storage: one channel for one
//! hop, and a chain of five channels whose middle peers forward each message as it arrives,
//! timed at hops 2 and 5.
//!
//! `MESH_BENCH_MEMORY=1` puts the nodes' state in memory instead of redb, to tell storage
//! costs from the rest.
//!
//! Both sides share the 2 cores: "ours" runs 20 nodes' WebRTC stacks, drivers, crypto and
//! stores (every message through the mesh is checked and stored by all 20), the baseline 6
//! raw channel pairs. In a burst to a neighbour, messages beyond the 256 whose receipts are
//! awaited also go through the mesh (the messenger's rule), which the run reports.
//!
//! The nodes' per-peer rate limits are raised for the run (the defaults allow 600 direct
//! messages and 1,200 new gossip pushes per peer and minute, which a benchmark exceeds).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_crypto::{Hash256, Identity, PeerId};
use mesh_node::node::SCHEMA;
use mesh_node::{MessagingConfig, MessagingEvent, Node, NodeConfig};
use mesh_platform::kv::{KvStore, Store};
use mesh_platform::runtime::TokioRuntime;
use mesh_store_redb::RedbBackend;
use mesh_transport_webrtc::raw::RawChannel;
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};
use tokio::sync::mpsc;

use crate::timing::{Measurement, percentile, throughput_row};

type MeshNode = Node<WebRtcTransport<HttpSignaling>, TokioRuntime>;

const ROWS: usize = 4;
const COLS: usize = 5;
const NODES: usize = ROWS * COLS;
const BODY: usize = 1024;
/// Longest wait for one message.
const LATE: Duration = Duration::from_secs(20);

/// How much to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Messages timed one at a time, per hop count.
    pub(crate) samples: usize,
    /// Messages per burst.
    pub(crate) burst: usize,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self {
                samples: 30,
                burst: 50,
            }
        } else {
            Self {
                samples: 2000,
                burst: 2000,
            }
        }
    }
}

/// Both sides' results.
pub(crate) struct Report {
    pub(crate) ours: Vec<Measurement>,
    pub(crate) baseline: Vec<Measurement>,
    /// Messages per second of the bursts: (what, ours, baseline).
    pub(crate) rates: Vec<(String, f64, f64)>,
}

fn latency_rows(what: &str, mut samples: Vec<Duration>) -> Vec<Measurement> {
    samples.sort();
    let n = samples.len() as u64;
    [("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999)]
        .into_iter()
        .map(|(label, p)| Measurement {
            name: format!("1 KiB, {what}: {label}"),
            ns_per_op: percentile(&samples, p),
            iterations: n,
            bytes_per_op: 0,
        })
        .collect()
}

fn burst_row(what: &str, count: usize, took: Duration) -> Measurement {
    throughput_row(
        &format!("1 KiB, {what}: burst, per message"),
        count,
        BODY,
        took,
    )
}

fn body(i: usize) -> Vec<u8> {
    let mut b = vec![0u8; BODY];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    b
}

/// A message seen at node `.0`: its id, when, and whether it came over a direct link.
type Seen = (usize, Hash256, Instant, bool);

async fn start_node(dir: &Path, i: usize) -> Result<(MeshNode, mesh_node::NodeEvents), String> {
    let id = Arc::new(Identity::generate());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let signaling = Arc::new(HttpSignaling::serve(listener).map_err(|e| e.to_string())?);
    let address = signaling.url().ok_or("no signaling URL")?;
    let transport = WebRtcTransport::new(Arc::clone(&id), signaling, WebRtcConfig::loopback());
    let store: Arc<dyn KvStore> = if std::env::var_os("MESH_BENCH_MEMORY").is_some() {
        Arc::new(
            Store::open(mesh_store_memory::MemoryBackend::new(), &SCHEMA)
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        let backend = RedbBackend::open(&dir.join(format!("node-{i}.redb")))
            .await
            .map_err(|e| e.to_string())?;
        Arc::new(
            Store::open(backend, &SCHEMA)
                .await
                .map_err(|e| e.to_string())?,
        )
    };
    let mut config = NodeConfig::default();
    config.gossip.pushes_per_minute = 1_000_000;
    config.messaging = MessagingConfig {
        direct_per_minute: 1_000_000,
        receipts_per_minute: 1_000_000,
    };
    // No DHT traffic during the run: it would open links beside the grid's.
    config.dht.refresh_interval = Duration::from_secs(86_400);
    config.dht.republish_interval = Duration::from_secs(86_400);
    Node::start(
        id,
        transport,
        TokioRuntime::current(),
        &address,
        store,
        config,
    )
    .await
    .map_err(|e| e.to_string())
}

/// The grid, with every node's message events forwarded to one channel.
async fn grid(dir: &Path) -> Result<(Vec<MeshNode>, mpsc::UnboundedReceiver<Seen>), String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut nodes = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let (node, events) = start_node(dir, i).await?;
        let mesh_node::NodeEvents {
            mut messages,
            mut recovery,
            mut gossip,
        } = events;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = messages.recv().await {
                if let MessagingEvent::Message(m) = e {
                    let _ = tx.send((i, m.id, Instant::now(), m.direct));
                }
            }
        });
        tokio::spawn(async move { while recovery.recv().await.is_some() {} });
        tokio::spawn(async move { while gossip.recv().await.is_some() {} });
        nodes.push(node);
    }
    for r in 0..ROWS {
        for c in 0..COLS {
            let i = r * COLS + c;
            let mut next = Vec::new();
            if c + 1 < COLS {
                next.push(i + 1);
            }
            if r + 1 < ROWS {
                next.push(i + COLS);
            }
            for j in next {
                let (a, b) = (&nodes[i], &nodes[j]);
                a.add_neighbour(b.peer_id(), &b.address)
                    .await
                    .map_err(|e| e.to_string())?;
                b.add_neighbour(a.peer_id(), &a.address)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, n) in nodes.iter().enumerate() {
        let want = neighbours(i).len();
        while n.pool.connected().len() < want {
            if Instant::now() > deadline {
                return Err(format!("node {i} did not link to its {want} neighbours"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((nodes, rx))
}

fn neighbours(i: usize) -> Vec<usize> {
    let (r, c) = (i / COLS, i % COLS);
    let mut n = Vec::new();
    if c > 0 {
        n.push(i - 1);
    }
    if c + 1 < COLS {
        n.push(i + 1);
    }
    if r > 0 {
        n.push(i - COLS);
    }
    if r + 1 < ROWS {
        n.push(i + COLS);
    }
    n
}

/// Waits until every id of `want` has been seen at node `at`, noting when each came and
/// whether directly.
async fn arrivals(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    at: usize,
    want: &HashMap<Hash256, Instant>,
    seen: &mut HashMap<Hash256, (Instant, bool)>,
) -> Result<(), String> {
    while want.keys().any(|id| !seen.contains_key(id)) {
        let (node, id, when, direct) = tokio::time::timeout(LATE, rx.recv())
            .await
            .map_err(|_| format!("a message to node {at} did not arrive within {LATE:?}"))?
            .ok_or("event channel closed")?;
        if node == at {
            seen.insert(id, (when, direct));
        }
    }
    Ok(())
}

/// One message at a time to node `to`; each must come the way `direct` says (over the link,
/// or through the mesh), or the run fails.
async fn ours_latency(
    nodes: &[MeshNode],
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    to: usize,
    count: usize,
    direct: bool,
) -> Result<Vec<Duration>, String> {
    let target: PeerId = nodes[to].peer_id();
    let mut samples = Vec::with_capacity(count);
    let mut seen = HashMap::new();
    for i in 0..count + 5 {
        let t = Instant::now();
        let id = nodes[0]
            .messenger
            .send(target, &body(i))
            .await
            .map_err(|e| e.to_string())?;
        arrivals(rx, to, &HashMap::from([(id, t)]), &mut seen).await?;
        let (when, came_direct) = seen[&id];
        if came_direct != direct {
            return Err(format!(
                "a message to node {to} came {} (expected {})",
                if came_direct {
                    "directly"
                } else {
                    "through the mesh"
                },
                if direct {
                    "directly"
                } else {
                    "through the mesh"
                },
            ));
        }
        if i >= 5 {
            samples.push(when.duration_since(t));
        }
    }
    Ok(samples)
}

/// Messages sent back to back to node `to`; the time until the last arrived, and how many
/// came directly.
async fn ours_burst(
    nodes: &[MeshNode],
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    to: usize,
    count: usize,
) -> Result<(Duration, usize), String> {
    let target = nodes[to].peer_id();
    let t = Instant::now();
    let mut want = HashMap::new();
    for i in 0..count {
        let id = nodes[0]
            .messenger
            .send(target, &body(1_000_000 + i))
            .await
            .map_err(|e| e.to_string())?;
        want.insert(id, t);
    }
    let mut seen = HashMap::new();
    arrivals(rx, to, &want, &mut seen).await?;
    let last = seen.values().map(|(w, _)| *w).max().unwrap_or(t);
    let direct = want.keys().filter(|id| seen[*id].1).count();
    Ok((last.duration_since(t), direct))
}

/// Fails unless every node is linked to its grid neighbours and nobody else (a shortcut
/// would shorten the multi-hop paths).
fn check_links(nodes: &[MeshNode]) -> Result<(), String> {
    for (i, n) in nodes.iter().enumerate() {
        let mut linked: Vec<PeerId> = n.pool.connected();
        let mut want: Vec<PeerId> = neighbours(i).iter().map(|&j| nodes[j].peer_id()).collect();
        linked.sort_by_key(PeerId::to_string);
        want.sort_by_key(PeerId::to_string);
        if linked != want {
            return Err(format!(
                "node {i} is linked to {} peers, not just its {} grid neighbours",
                linked.len(),
                want.len()
            ));
        }
    }
    Ok(())
}

async fn run_ours(sizes: Sizes) -> Result<(Vec<Measurement>, Vec<Duration>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (nodes, mut rx) = grid(dir.path()).await?;
    // Targets: a neighbour, two hops along the first row, and row 2 column 3 (5 hops).
    let (one, two, five) = (1, 2, 2 * COLS + 3);
    let mut rows = Vec::new();
    let mut bursts = Vec::new();
    check_links(&nodes)?;
    rows.extend(latency_rows(
        "1 hop (direct link)",
        ours_latency(&nodes, &mut rx, one, sizes.samples, true).await?,
    ));
    rows.extend(latency_rows(
        "2 hops (1 relay)",
        ours_latency(&nodes, &mut rx, two, sizes.samples, false).await?,
    ));
    rows.extend(latency_rows(
        "5 hops (4 relays)",
        ours_latency(&nodes, &mut rx, five, sizes.samples, false).await?,
    ));
    for (what, to) in [("1 hop", one), ("5 hops", five)] {
        let (took, direct) = ours_burst(&nodes, &mut rx, to, sizes.burst).await?;
        println!(
            "burst {what}: {direct} of {} came over the direct link",
            sizes.burst
        );
        rows.push(burst_row(what, sizes.burst, took));
        bursts.push(took);
    }
    // The paths held for the whole run.
    check_links(&nodes)?;
    for n in &nodes {
        n.shutdown().await;
    }
    Ok((rows, bursts))
}

/// A chain of `hops` raw channels; each middle peer forwards what it gets. Returns the first
/// sender and, per hop, a channel of arrival times.
async fn raw_chain(
    hops: usize,
) -> Result<(RawChannel, Vec<mpsc::UnboundedReceiver<(u64, Instant)>>), String> {
    let err = |e: mesh_transport::TransportError| e.to_string();
    let config = WebRtcConfig::loopback();
    let mut pairs = Vec::with_capacity(hops);
    for _ in 0..hops {
        pairs.push(RawChannel::pair(&config).await.map_err(err)?);
    }
    let mut taps = Vec::with_capacity(hops);
    let mut pairs = pairs.into_iter();
    let (first, mut incoming) = pairs.next().ok_or("no hops")?;
    loop {
        let (tx, rx) = mpsc::unbounded_channel();
        taps.push(rx);
        let next = pairs.next();
        let mut from = incoming;
        let (out, following) = match next {
            Some((out, following)) => (Some(out), Some(following)),
            None => (None, None),
        };
        tokio::spawn(async move {
            while let Ok(m) = from.recv().await {
                let now = Instant::now();
                let seq = m
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_le_bytes);
                let _ = tx.send((seq, now));
                if let Some(out) = &out
                    && out.send(&m).await.is_err()
                {
                    break;
                }
            }
        });
        match following {
            Some(f) => incoming = f,
            None => break,
        }
    }
    Ok((first, taps))
}

async fn next_tap(
    tap: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    seq: u64,
) -> Result<Instant, String> {
    loop {
        let (s, when) = tokio::time::timeout(LATE, tap.recv())
            .await
            .map_err(|_| "a raw message did not arrive".to_string())?
            .ok_or("raw chain closed")?;
        if s == seq {
            return Ok(when);
        }
    }
}

async fn run_raw(sizes: Sizes) -> Result<(Vec<Measurement>, Vec<Duration>), String> {
    let err = |e: mesh_transport::TransportError| e.to_string();
    let mut rows = Vec::new();
    let mut bursts = Vec::new();
    // One hop.
    let (a, mut taps) = raw_chain(1).await?;
    let mut one = Vec::with_capacity(sizes.samples);
    for i in 0..sizes.samples + 5 {
        let t = Instant::now();
        a.send(&body(i)).await.map_err(err)?;
        let when = next_tap(&mut taps[0], i as u64).await?;
        if i >= 5 {
            one.push(when.duration_since(t));
        }
    }
    // Five hops, timed at 2 and 5.
    let (c, mut ctaps) = raw_chain(5).await?;
    let (mut two, mut five) = (Vec::new(), Vec::new());
    for i in 0..sizes.samples + 5 {
        let t = Instant::now();
        c.send(&body(i)).await.map_err(err)?;
        let at2 = next_tap(&mut ctaps[1], i as u64).await?;
        let at5 = next_tap(&mut ctaps[4], i as u64).await?;
        if i >= 5 {
            two.push(at2.duration_since(t));
            five.push(at5.duration_since(t));
        }
        // Drain the other hops' taps.
        for k in [0, 2, 3] {
            while ctaps[k].try_recv().is_ok() {}
        }
    }
    rows.extend(latency_rows("1 hop (direct link)", one));
    rows.extend(latency_rows("2 hops (1 relay)", two));
    rows.extend(latency_rows("5 hops (4 relays)", five));
    for (what, sender, tap) in [("1 hop", &a, 0usize), ("5 hops", &c, 4)] {
        let taps = if tap == 0 { &mut taps } else { &mut ctaps };
        let base = 1_000_000u64;
        let t = Instant::now();
        for i in 0..sizes.burst {
            sender.send(&body(1_000_000 + i)).await.map_err(err)?;
        }
        let last = next_tap(&mut taps[tap], base + sizes.burst as u64 - 1).await?;
        let took = last.duration_since(t);
        rows.push(burst_row(what, sizes.burst, took));
        bursts.push(took);
        for t in taps.iter_mut() {
            while t.try_recv().is_ok() {}
        }
    }
    a.close().await;
    c.close().await;
    Ok((rows, bursts))
}

/// Runs both: the raw baseline first (on a quiet machine), then the mesh.
pub(crate) async fn run(sizes: Sizes) -> Result<Report, String> {
    let (baseline, raw_bursts) = run_raw(sizes).await?;
    let (ours, our_bursts) = run_ours(sizes).await?;
    #[allow(clippy::cast_precision_loss)]
    let rate = |d: &Duration| sizes.burst as f64 / d.as_secs_f64();
    let rates = ["1 hop", "5 hops"]
        .iter()
        .zip(our_bursts.iter().zip(&raw_bursts))
        .map(|(w, (o, b))| ((*w).to_string(), rate(o), rate(b)))
        .collect();
    Ok(Report {
        ours,
        baseline,
        rates,
    })
}
