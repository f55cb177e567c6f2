//! A real local mesh on this machine: six nodes linked by WebRTC on loopback (HTTP signaling),
//! each with its DHT and gossip drivers and its state in a redb file.
//!
//! 1. The nodes join the DHT through the first one and each stores a signed profile record;
//!    every node then looks up another's profile.
//! 2. A chat message published at one node spreads to all by push gossip.
//! 3. One node goes down; while it is away another message spreads; it restarts from its redb
//!    file (records and gossip cache restored), rejoins and catches up by pull.
//!
//! `cargo run -p mesh-tests --example local-mesh`. Every wait is bounded; any failure exits
//! non-zero.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a demo that reports what it does

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_dht::driver::{DhtHandle, DriverOptions as DhtOptions};
use mesh_dht::record::record_key;
use mesh_dht::{Record, RecordPayload};
use mesh_gossip::driver::{Delivered, DriverOptions as GossipOptions, GossipHandle};
use mesh_gossip::{GossipMessage, GossipPayload};
use mesh_platform::kv::{KvStore, Schema, Store};
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_store_redb::RedbBackend;
use mesh_transport::pool::Pool;
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};
use tokio::sync::mpsc::Receiver;

const NODES: usize = 6;
const WAIT: Duration = Duration::from_secs(30);

static TABLES: [&str; 3] = [
    mesh_dht::persist::RECORDS_TABLE,
    mesh_dht::persist::CONTACTS_TABLE,
    mesh_gossip::driver::MESSAGES_TABLE,
];
static SCHEMA: Schema = Schema {
    version: 1,
    tables: &TABLES,
    migrations: &[],
};

type Net = Pool<WebRtcTransport<HttpSignaling>, TokioRuntime>;

struct Node {
    id: Arc<Identity>,
    address: String,
    pool: Net,
    dht: DhtHandle,
    gossip: GossipHandle,
    inbox: Receiver<Delivered>,
}

type Error = Box<dyn std::error::Error>;

async fn start_node(
    id: &Arc<Identity>,
    file: &Path,
    bootstrap: Vec<(PeerId, String)>,
    seed: u64,
) -> Result<Node, Error> {
    let rt = TokioRuntime::current();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let signaling = Arc::new(HttpSignaling::serve(listener)?);
    let address = signaling.url().ok_or("no signaling address")?;
    let transport = WebRtcTransport::new(Arc::clone(id), signaling, WebRtcConfig::loopback());
    let pool = Pool::new(transport, rt.clone(), id.peer_id(), &address);
    pool.start_accepting();
    let store: Arc<dyn KvStore> =
        Arc::new(Store::open(RedbBackend::open(file).await?, &SCHEMA).await?);
    let dht = mesh_dht::driver::start(
        id.peer_id(),
        pool.clone(),
        rt.clone(),
        DhtOptions {
            store: Some(Arc::clone(&store)),
            bootstrap,
            ..DhtOptions::default()
        },
    )
    .await?;
    let (gossip, inbox) = mesh_gossip::driver::start(
        id.peer_id(),
        pool.clone(),
        rt,
        GossipOptions {
            store: Some(store),
            seed,
            ..GossipOptions::default()
        },
    )
    .await?;
    Ok(Node {
        id: Arc::clone(id),
        address,
        pool,
        dht,
        gossip,
        inbox,
    })
}

async fn link(a: &Node, b: &Node) -> Result<(), Error> {
    a.gossip.add_neighbour(b.id.peer_id(), &b.address).await?;
    b.gossip.add_neighbour(a.id.peer_id(), &a.address).await?;
    Ok(())
}

fn signed_record(id: &Identity, name: &str, value: &str) -> Result<Vec<u8>, Error> {
    let now = TokioRuntime::current().unix_time();
    Ok(Record::sign(
        id,
        RecordPayload {
            name: name.as_bytes().to_vec(),
            seq: 1,
            value: value.as_bytes().to_vec(),
        },
        now,
        UnixMillis(now.0 + 3_600_000),
    )?
    .into_bytes())
}

fn chat(id: &Identity, text: &str) -> Result<Vec<u8>, Error> {
    let now = TokioRuntime::current().unix_time();
    Ok(GossipMessage::sign(
        id,
        GossipPayload {
            topic: b"chat".to_vec(),
            body: text.as_bytes().to_vec(),
        },
        now,
        UnixMillis(now.0 + 3_600_000),
    )?
    .into_bytes())
}

async fn expect_message(node: &mut Node, text: &str) -> Result<(), Error> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, node.inbox.recv())
            .await
            .map_err(|_| format!("{text:?} did not arrive within {WAIT:?}"))?
            .ok_or("gossip driver stopped")?;
        if got.body == text.as_bytes() {
            return Ok(());
        }
    }
}

async fn run(dir: &Path) -> Result<(), Error> {
    let started = Instant::now();
    let ids: Vec<Arc<Identity>> = (0..NODES).map(|_| Arc::new(Identity::generate())).collect();
    let file = |i: usize| -> PathBuf { dir.join(format!("node-{i}.redb")) };
    let mut nodes = vec![start_node(&ids[0], &file(0), vec![], 0).await?];
    let boot = vec![(ids[0].peer_id(), nodes[0].address.clone())];
    for (i, id) in ids.iter().enumerate().skip(1) {
        nodes.push(start_node(id, &file(i), boot.clone(), i as u64).await?);
    }
    println!(
        "{NODES} nodes up (WebRTC on loopback, HTTP signaling, redb files in {})",
        dir.display()
    );
    dht_phase(&nodes, &ids).await?;
    gossip_phase(&mut nodes, &ids).await?;
    restart_phase(nodes, &ids, &file(3)).await?;
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// 1. DHT: join, store profiles, look them up across the mesh.
async fn dht_phase(nodes: &[Node], ids: &[Arc<Identity>]) -> Result<(), Error> {
    for n in nodes {
        let deadline = Instant::now() + WAIT;
        while n.dht.status().await?.contacts < 3 {
            if Instant::now() > deadline {
                return Err("a node did not join the DHT".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("DHT joined: every node knows at least 3 others");
    for (i, n) in nodes.iter().enumerate() {
        let put = n
            .dht
            .put(signed_record(&n.id, "profile", &format!("node {i}"))?)
            .await?;
        println!(
            "node {i} stored its profile at {} of {} closest nodes",
            put.stored, put.offered
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        let j = (i + 2) % NODES;
        let key = record_key(&ids[j].peer_id(), b"profile");
        let found = node.dht.find_value(key).await?.ok_or("profile not found")?;
        let record = Record::decode(&found, TokioRuntime::current().unix_time())?;
        println!(
            "node {i} looked up node {j}'s profile: {:?} (signature verified)",
            String::from_utf8_lossy(&record.payload().value)
        );
    }
    Ok(())
}

/// 2. Gossip: a ring with chords; a message from node 1 reaches everyone.
async fn gossip_phase(nodes: &mut [Node], ids: &[Arc<Identity>]) -> Result<(), Error> {
    for (i, node) in nodes.iter().enumerate() {
        link(node, &nodes[(i + 1) % NODES]).await?;
        link(node, &nodes[(i + 3) % NODES]).await?;
    }
    nodes[1]
        .gossip
        .publish(chat(&ids[1], "hello mesh")?)
        .await?;
    for i in (0..NODES).filter(|&i| i != 1) {
        expect_message(&mut nodes[i], "hello mesh").await?;
    }
    println!(
        "gossip: \"hello mesh\" from node 1 reached all {} others by push",
        NODES - 1
    );

    Ok(())
}

/// 3. Node 3 goes down, misses a message, restarts from its file and catches up by pull.
async fn restart_phase(
    mut nodes: Vec<Node>,
    ids: &[Arc<Identity>],
    file: &Path,
) -> Result<(), Error> {
    let down = nodes.remove(3);
    down.gossip.shutdown().await?;
    down.dht.shutdown().await?;
    down.pool.close_all().await;
    drop(down);
    for n in &nodes {
        n.gossip.remove_neighbour(ids[3].peer_id()).await?;
    }
    println!("node 3 went down");
    nodes[3]
        .gossip
        .publish(chat(&ids[4], "while you were away")?)
        .await?;
    for n in nodes
        .iter_mut()
        .filter(|n| n.id.peer_id() != ids[4].peer_id())
    {
        expect_message(n, "while you were away").await?;
    }
    // Give redb a moment to release the file (the old drivers' tasks end asynchronously).
    let mut back = None;
    for _ in 0..50 {
        match start_node(&ids[3], file, vec![], 3).await {
            Ok(n) => {
                back = Some(n);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut back = back.ok_or("node 3 could not reopen its file")?;
    let dht = back.dht.status().await?;
    let gossip = back.gossip.status().await?;
    println!(
        "node 3 restarted from its redb file: {} DHT records, {} contacts, {} gossip messages restored",
        dht.records, dht.contacts, gossip.messages
    );
    for n in nodes.iter().take(2) {
        link(&back, n).await?;
    }
    expect_message(&mut back, "while you were away").await?;
    let s = back.gossip.status().await?.stats;
    println!(
        "node 3 caught up by pull: {} message(s), {} digest bytes sent, {} answer bytes received",
        s.pulled, s.digest_bytes_sent, s.response_bytes_received
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match tokio::time::timeout(Duration::from_secs(180), run(dir.path())).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("error: the demo did not finish within 180 s");
            ExitCode::FAILURE
        }
    }
}
