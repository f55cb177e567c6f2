//! A real local mesh on this machine: six nodes linked by WebRTC on loopback (HTTP signaling),
//! each with its DHT and gossip drivers, a blob service and a recovery driver, and its state in
//! a redb file.
//!
//! 1. The nodes join the DHT through the first one and each stores a signed profile record;
//!    every node then looks up another's profile.
//! 2. A chat message published at one node spreads to all by push gossip.
//! 3. One node goes down; while it is away another message spreads; it restarts from its redb
//!    file (records and gossip cache restored), rejoins and catches up by pull.
//! 4. A 2 MiB file, encrypted to one node, is stored at another and fetched chunk by chunk
//!    (each chunk verified), then decrypted by its recipient.
//! 5. A node protects its identity key with three guardians (2 of 3); its device is "lost"; a
//!    new device asks the guardians, each guardian's user compares the verification code and
//!    approves, and the key comes back.
//!
//! `cargo run -p mesh-tests --example local-mesh`. Every wait is bounded; any failure exits
//! non-zero.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a demo that reports what it does

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_blob::private::{PrivateReader, put_private};
use mesh_blob::store::{BlobConfig, BlobStore, PutOptions};
use mesh_blob::transfer::{BlobService, TransferConfig};
use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_dht::driver::{DhtHandle, DriverOptions as DhtOptions};
use mesh_dht::record::record_key;
use mesh_dht::{Record, RecordPayload};
use mesh_gossip::driver::{Delivered, DriverOptions as GossipOptions, GossipHandle};
use mesh_gossip::{GossipMessage, GossipPayload};
use mesh_platform::kv::{KvStore, Schema, Store};
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_recovery::driver::{DriverOptions as RecoveryOptions, RecoveryHandle};
use mesh_recovery::node::Event as RecoveryEvent;
use mesh_store_redb::RedbBackend;
use mesh_transport::pool::Pool;
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};
use tokio::sync::mpsc::Receiver;

const NODES: usize = 6;
const WAIT: Duration = Duration::from_secs(30);

static TABLES: [&str; 12] = [
    mesh_dht::persist::RECORDS_TABLE,
    mesh_dht::persist::CONTACTS_TABLE,
    mesh_gossip::driver::MESSAGES_TABLE,
    mesh_blob::store::TABLES[0],
    mesh_blob::store::TABLES[1],
    mesh_blob::store::TABLES[2],
    mesh_blob::store::TABLES[3],
    mesh_blob::store::TABLES[4],
    mesh_blob::store::TABLES[5],
    mesh_blob::store::TABLES[6],
    mesh_blob::store::TABLES[7],
    mesh_recovery::driver::SHARES_TABLE,
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
    blobs: BlobService,
    recovery: RecoveryHandle,
    recovery_events: Receiver<RecoveryEvent>,
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
        rt.clone(),
        GossipOptions {
            store: Some(Arc::clone(&store)),
            seed,
            ..GossipOptions::default()
        },
    )
    .await?;
    let blob_store = BlobStore::open(Arc::clone(&store), BlobConfig::default()).await?;
    let blobs = mesh_blob::transfer::start(&pool, &rt, blob_store, TransferConfig::default());
    let (recovery, recovery_events) = mesh_recovery::driver::start(
        Arc::clone(id),
        pool.clone(),
        rt,
        RecoveryOptions {
            store: Some(store),
            ..RecoveryOptions::default()
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
        blobs,
        recovery,
        recovery_events,
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
    let mut nodes = restart_phase(nodes, &ids, &file(3)).await?;
    blob_phase(&nodes).await?;
    recovery_phase(&mut nodes, &dir.join("new-device.redb")).await?;
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
) -> Result<Vec<Node>, Error> {
    let down = nodes.remove(3);
    down.gossip.shutdown().await?;
    down.dht.shutdown().await?;
    down.recovery.shutdown().await?;
    down.blobs.shutdown();
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
    nodes.insert(3, back);
    Ok(nodes)
}

/// Step 4, blobs: node 0 stores a file encrypted to node 5; node 5 fetches it over WebRTC,
/// every chunk verified, and decrypts it.
async fn blob_phase(nodes: &[Node]) -> Result<(), Error> {
    let file: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    let now = TokioRuntime::current().unix_time();
    let (stored, key) = put_private(
        nodes[0].blobs.store(),
        &nodes[0].id,
        &nodes[5].id.peer_id(),
        &file,
        nodes[0].id.peer_id(),
        PutOptions::default(),
        now,
    )
    .await?;
    println!(
        "blob: node 0 stored a 2 MiB file encrypted to node 5: {} chunks, id {}",
        stored.chunks,
        &stored.id.to_hex()[..16]
    );
    let t = Instant::now();
    let report = nodes[5]
        .blobs
        .fetch(
            stored.id,
            &[(nodes[0].id.peer_id(), nodes[0].address.clone())],
            nodes[5].id.peer_id(),
            PutOptions::default(),
        )
        .await?;
    let secs = t.elapsed().as_secs_f64();
    let mut reader =
        PrivateReader::open(nodes[5].blobs.store(), &stored.id, &nodes[5].id, &key).await?;
    let plain = reader.read_to_end().await?;
    if plain != file || reader.sender() != nodes[0].id.peer_id() {
        return Err("the fetched file does not decrypt to the original".into());
    }
    println!(
        "blob: node 5 fetched it from node 0 over WebRTC: {} chunks verified in {:.2} s ({:.1} MiB/s), decrypted, identical, sealed by node 0",
        report.fetched_chunks,
        secs,
        f64::from(u32::try_from(stored.size).unwrap_or(u32::MAX)) / secs / 1_048_576.0
    );
    Ok(())
}

async fn recovery_event(
    node: &mut Node,
    what: impl Fn(&RecoveryEvent) -> bool,
) -> Result<RecoveryEvent, Error> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, node.recovery_events.recv())
            .await
            .map_err(|_| "a recovery step did not happen in time")?
            .ok_or("recovery driver stopped")?;
        if what(&e) {
            return Ok(e);
        }
    }
}

/// Step 5, social recovery: node 1 protects its key with nodes 2, 4 and 5 (2 of 3); a new
/// device gets it back with the approval of two guardians.
async fn recovery_phase(nodes: &mut [Node], new_device_file: &Path) -> Result<(), Error> {
    let owner = nodes[1].id.peer_id();
    let guardians: Vec<(PeerId, String)> = [2, 4, 5]
        .iter()
        .map(|&i| (nodes[i].id.peer_id(), nodes[i].address.clone()))
        .collect();
    for i in [2, 4, 5] {
        // Each guardian's user accepts to hold a share for node 1.
        nodes[i].recovery.allow_owner(owner, true).await?;
    }
    let set = nodes[1].recovery.protect(guardians.clone(), 2).await?;
    recovery_event(&mut nodes[1], |e| {
        *e == RecoveryEvent::Protected { set_id: set }
    })
    .await?;
    println!(
        "recovery: node 1 sealed 3 shares of its key to nodes 2, 4 and 5 (any 2 recover it); all acknowledged"
    );
    let device_id = Arc::new(Identity::generate());
    let mut device = start_node(&device_id, new_device_file, vec![], 99).await?;
    println!("recovery: node 1's device is lost; a new device (fresh identity) asks the guardians");
    let codes = device.recovery.recover(owner, guardians, None).await?;
    for i in [2, 4] {
        let RecoveryEvent::ApprovalNeeded {
            request_id, code, ..
        } = recovery_event(&mut nodes[i], |e| {
            matches!(e, RecoveryEvent::ApprovalNeeded { .. })
        })
        .await?
        else {
            return Err("no approval request".into());
        };
        let shown = codes
            .iter()
            .find(|(g, _)| *g == nodes[i].id.peer_id())
            .map(|(_, c)| c.clone())
            .ok_or("no code for this guardian")?;
        if shown != code {
            return Err("verification codes differ".into());
        }
        println!(
            "recovery: node {i}'s user sees code {code}, the new device shows {shown}: approved"
        );
        nodes[i].recovery.approve(request_id).await?;
    }
    recovery_event(&mut device, |e| *e == RecoveryEvent::Recovered { owner }).await?;
    let key = device.recovery.take_recovered(owner).await?;
    if key.peer_id() != owner {
        return Err("the recovered key is not node 1's".into());
    }
    println!(
        "recovery: the new device holds node 1's identity key again (2 shares verified against their commitments; node 5 was not needed)"
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
