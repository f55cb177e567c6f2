//! `meshd demo` starts a real local mesh on this machine: six [`Node`]s linked by WebRTC on
//! loopback (HTTP signaling), each with its DHT, gossip, blob service, social recovery and
//! messaging on one connection pool, and its state in a redb file. Then, step by step:
//!
//! 1. the nodes join the DHT and store and look up signed profile records;
//! 2. a chat message spreads to all by push gossip, and an encrypted message goes to a peer
//!    and comes back as a receipt;
//! 3. a node goes down; an encrypted message is written to it while it is away (through the
//!    mesh); it restarts from its redb file, catches up by pull, reads the message, and its
//!    receipt reaches the sender;
//! 4. a 2 MiB file encrypted to one node is stored at another and fetched chunk by verified
//!    chunk over WebRTC, then decrypted;
//! 5. a node protects its identity key with three guardians, "loses" its device, and a new
//!    device gets the key back after two guardians' users compare verification codes.
//!
//! It ends with a report. Every wait is bounded; any failure exits non-zero.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_blob::private::{PrivateReader, put_private};
use mesh_blob::store::PutOptions;
use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_dht::record::record_key;
use mesh_dht::{Record, RecordPayload};
use mesh_gossip::{GossipMessage, GossipPayload};
use mesh_node::{MessagingEvent, Node, NodeBuilder, NodeEvents};
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_recovery::Event as RecoveryEvent;
use mesh_transport_webrtc::signaling::http::HttpSignaling;
use mesh_transport_webrtc::{WebRtcConfig, WebRtcTransport};

const NODES: usize = 6;
const WAIT: Duration = Duration::from_secs(30);

type MeshNode = Node<WebRtcTransport<HttpSignaling>, TokioRuntime>;
type Error = Box<dyn std::error::Error>;

struct Peer {
    node: MeshNode,
    events: NodeEvents,
}

/// What the report at the end says.
#[derive(Default)]
struct Report {
    lookups: usize,
    direct_ms: f64,
    mesh_ms: f64,
    pulled: u64,
    blob_mib_s: f64,
    blob_chunks: u32,
    recovery_s: f64,
}

async fn start(
    id: &Arc<Identity>,
    file: &Path,
    bootstrap: Vec<(PeerId, String)>,
) -> Result<Peer, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let signaling = Arc::new(HttpSignaling::serve(listener)?);
    let address = signaling.url().ok_or("no signaling address")?;
    let (node, events) = NodeBuilder::new(Arc::clone(id))
        .redb(file)
        .webrtc(WebRtcConfig::loopback(), signaling, &address)
        .bootstrap(bootstrap)
        .start(TokioRuntime::current())
        .await?;
    Ok(Peer { node, events })
}

async fn link(a: &Peer, b: &Peer) -> Result<(), Error> {
    a.node
        .add_neighbour(b.node.peer_id(), &b.node.address)
        .await?;
    b.node
        .add_neighbour(a.node.peer_id(), &a.node.address)
        .await?;
    Ok(())
}

fn now() -> UnixMillis {
    TokioRuntime::current().unix_time()
}

fn signed_record(id: &Identity, name: &str, value: &str) -> Result<Vec<u8>, Error> {
    let now = now();
    let payload = RecordPayload {
        name: name.as_bytes().to_vec(),
        seq: 1,
        value: value.as_bytes().to_vec(),
    };
    Ok(Record::sign(id, payload, now, UnixMillis(now.0 + 3_600_000))?.into_bytes())
}

fn chat(id: &Identity, text: &str) -> Result<Vec<u8>, Error> {
    let now = now();
    let payload = GossipPayload {
        topic: b"chat".to_vec(),
        body: text.as_bytes().to_vec(),
    };
    Ok(GossipMessage::sign(id, payload, now, UnixMillis(now.0 + 3_600_000))?.into_bytes())
}

/// The next item of `rx` satisfying `what`, within [`WAIT`].
async fn next_matching<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    what: impl Fn(&T) -> bool,
    late: &str,
) -> Result<T, Error> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, rx.recv())
            .await
            .map_err(|_| format!("{late} within {WAIT:?}"))?
            .ok_or("a driver stopped")?;
        if what(&item) {
            return Ok(item);
        }
    }
}

async fn message_event(
    p: &mut Peer,
    what: impl Fn(&MessagingEvent) -> bool,
) -> Result<MessagingEvent, Error> {
    next_matching(&mut p.events.messages, what, "a message did not arrive").await
}

async fn recovery_event(
    p: &mut Peer,
    what: impl Fn(&RecoveryEvent) -> bool,
) -> Result<RecoveryEvent, Error> {
    next_matching(
        &mut p.events.recovery,
        what,
        "a recovery step did not happen",
    )
    .await
}

async fn expect_chat(p: &mut Peer, text: &str) -> Result<(), Error> {
    let late = format!("{text:?} did not arrive");
    next_matching(&mut p.events.gossip, |g| g.body == text.as_bytes(), &late).await?;
    Ok(())
}

pub(crate) async fn demo(dir: &Path) -> Result<(), Error> {
    let started = Instant::now();
    let mut report = Report::default();
    let ids: Vec<Arc<Identity>> = (0..NODES).map(|_| Arc::new(Identity::generate())).collect();
    let file = |i: usize| -> PathBuf { dir.join(format!("node-{i}.redb")) };
    let mut peers = vec![start(&ids[0], &file(0), vec![]).await?];
    let boot = vec![(ids[0].peer_id(), peers[0].node.address.clone())];
    for (i, id) in ids.iter().enumerate().skip(1) {
        peers.push(start(id, &file(i), boot.clone()).await?);
    }
    println!(
        "[1/5] {NODES} nodes up: WebRTC on loopback, HTTP signaling, redb files in {}",
        dir.display()
    );
    dht_step(&peers, &ids, &mut report).await?;
    gossip_step(&mut peers, &ids, &mut report).await?;
    let mut peers = restart_step(peers, &ids, &file(3), &mut report).await?;
    blob_step(&peers, &mut report).await?;
    recovery_step(&mut peers, &dir.join("new-device.redb"), &mut report).await?;
    println!("\nreport");
    println!(
        "  DHT: {} of {NODES} profile lookups found and verified",
        report.lookups
    );
    println!(
        "  encrypted message, direct link: delivered and receipt back in {:.1} ms",
        report.direct_ms
    );
    println!(
        "  encrypted message to a node that was down: read {:.0} ms after it came back, {} message(s) pulled",
        report.mesh_ms, report.pulled
    );
    println!(
        "  private blob: {} chunks fetched and verified, {:.1} MiB/s, decrypted by its recipient only",
        report.blob_chunks, report.blob_mib_s
    );
    println!(
        "  social recovery: key back in {:.2} s with 2 of 3 guardians",
        report.recovery_s
    );
    println!("  done in {:.1} s", started.elapsed().as_secs_f64());
    for p in peers {
        p.node.shutdown().await;
    }
    Ok(())
}

async fn dht_step(peers: &[Peer], ids: &[Arc<Identity>], report: &mut Report) -> Result<(), Error> {
    for p in peers {
        let deadline = Instant::now() + WAIT;
        while p.node.dht.status().await?.contacts < 3 {
            if Instant::now() > deadline {
                return Err("a node did not join the DHT".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (i, p) in peers.iter().enumerate() {
        let put = p
            .node
            .dht
            .put(signed_record(
                &p.node.identity,
                "profile",
                &format!("node {i}"),
            )?)
            .await?;
        if put.stored == 0 {
            return Err("a profile was stored nowhere".into());
        }
    }
    for (i, p) in peers.iter().enumerate() {
        let j = (i + 2) % NODES;
        let found = p
            .node
            .dht
            .find_value(record_key(&ids[j].peer_id(), b"profile"))
            .await?
            .ok_or("profile not found")?;
        let record = Record::decode(&found, now())?;
        if record.payload().value != format!("node {j}").as_bytes() {
            return Err("a profile came back wrong".into());
        }
        report.lookups += 1;
    }
    println!("[1/5] DHT: every node joined, stored its signed profile, and looked up another's");
    Ok(())
}

async fn gossip_step(
    peers: &mut [Peer],
    ids: &[Arc<Identity>],
    report: &mut Report,
) -> Result<(), Error> {
    for i in 0..NODES {
        link(&peers[i], &peers[(i + 1) % NODES]).await?;
        link(&peers[i], &peers[(i + 3) % NODES]).await?;
    }
    peers[1]
        .node
        .gossip
        .publish(chat(&ids[1], "hello mesh")?)
        .await?;
    for i in (0..NODES).filter(|&i| i != 1) {
        expect_chat(&mut peers[i], "hello mesh").await?;
    }
    println!(
        "[2/5] gossip: \"hello mesh\" from node 1 reached all {} others by push",
        NODES - 1
    );
    let to = peers[1].node.peer_id();
    let t = Instant::now();
    let id = peers[0].node.messenger.send(to, b"a sealed hello").await?;
    let got = message_event(&mut peers[1], |e| matches!(e, MessagingEvent::Message(_))).await?;
    message_event(&mut peers[0], |e| {
        *e == MessagingEvent::Delivered { id, by: to }
    })
    .await?;
    report.direct_ms = t.elapsed().as_secs_f64() * 1e3;
    if let MessagingEvent::Message(m) = got {
        println!(
            "[2/5] messaging: node 0 -> node 1 {:?} ({}), receipt back in {:.1} ms",
            String::from_utf8_lossy(&m.body),
            if m.direct {
                "direct link"
            } else {
                "through the mesh"
            },
            report.direct_ms
        );
    }
    Ok(())
}

async fn restart_step(
    mut peers: Vec<Peer>,
    ids: &[Arc<Identity>],
    file: &Path,
    report: &mut Report,
) -> Result<Vec<Peer>, Error> {
    let down = peers.remove(3);
    down.node.shutdown().await;
    drop(down);
    for p in &peers {
        p.node.gossip.remove_neighbour(ids[3].peer_id()).await?;
    }
    println!("[3/5] node 3 went down");
    let id = peers[3]
        .node
        .messenger
        .send(ids[3].peer_id(), b"while you were away")
        .await?;
    println!(
        "[3/5] node 4 wrote to node 3 meanwhile: no link, so the sealed message went into the mesh"
    );
    // redb releases the file once the old drivers' tasks have ended.
    let mut back = None;
    for _ in 0..50 {
        match start(&ids[3], file, vec![]).await {
            Ok(p) => {
                back = Some(p);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut back = back.ok_or("node 3 could not reopen its file")?;
    let dht = back.node.dht.status().await?;
    println!(
        "[3/5] node 3 restarted from its redb file: {} DHT records, {} contacts restored",
        dht.records, dht.contacts
    );
    let t = Instant::now();
    for p in peers.iter().take(2) {
        link(&back, p).await?;
    }
    let got = message_event(&mut back, |e| matches!(e, MessagingEvent::Message(_))).await?;
    report.mesh_ms = t.elapsed().as_secs_f64() * 1e3;
    let MessagingEvent::Message(m) = got else {
        return Err("no message".into());
    };
    if m.body != b"while you were away" || m.from != ids[4].peer_id() || m.id != id {
        return Err("node 3 read the wrong message".into());
    }
    report.pulled = back.node.gossip.status().await?.stats.pulled;
    message_event(&mut peers[3], |e| {
        *e == MessagingEvent::Delivered {
            id,
            by: ids[3].peer_id(),
        }
    })
    .await?;
    println!(
        "[3/5] node 3 caught up by pull and read node 4's message ({:.0} ms); node 4 got the receipt",
        report.mesh_ms
    );
    peers.insert(3, back);
    Ok(peers)
}

async fn blob_step(peers: &[Peer], report: &mut Report) -> Result<(), Error> {
    let file: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    let (owner, reader) = (&peers[0].node, &peers[5].node);
    let (stored, key) = put_private(
        owner.blobs.store(),
        &owner.identity,
        &reader.peer_id(),
        &file,
        owner.peer_id(),
        PutOptions::default(),
        now(),
    )
    .await?;
    let t = Instant::now();
    let fetched = reader
        .blobs
        .fetch(
            stored.id,
            &[(owner.peer_id(), owner.address.clone())],
            reader.peer_id(),
            PutOptions::default(),
        )
        .await?;
    let secs = t.elapsed().as_secs_f64();
    let mut r =
        PrivateReader::open(reader.blobs.store(), &stored.id, &reader.identity, &key).await?;
    if r.read_to_end().await? != file || r.sender() != owner.peer_id() {
        return Err("the fetched file does not decrypt to the original".into());
    }
    report.blob_chunks = fetched.fetched_chunks;
    report.blob_mib_s = 2.0 / secs;
    println!(
        "[4/5] blob: a 2 MiB file encrypted to node 5, stored at node 0 ({} chunks), fetched over WebRTC in {:.2} s, every chunk verified, decrypted",
        stored.chunks, secs
    );
    Ok(())
}

async fn recovery_step(
    peers: &mut [Peer],
    device_file: &Path,
    report: &mut Report,
) -> Result<(), Error> {
    let owner = peers[1].node.peer_id();
    let guardians: Vec<(PeerId, String)> = [2, 4, 5]
        .iter()
        .map(|&i| (peers[i].node.peer_id(), peers[i].node.address.clone()))
        .collect();
    for i in [2, 4, 5] {
        peers[i].node.recovery.allow_owner(owner, true).await?;
    }
    let set = peers[1].node.recovery.protect(guardians.clone(), 2).await?;
    recovery_event(&mut peers[1], |e| {
        *e == RecoveryEvent::Protected { set_id: set }
    })
    .await?;
    println!(
        "[5/5] recovery: node 1 sealed 3 shares of its key to nodes 2, 4 and 5 (any 2 recover it)"
    );
    let t = Instant::now();
    let device_id = Arc::new(Identity::generate());
    let mut device = start(&device_id, device_file, vec![]).await?;
    let codes = device.node.recovery.recover(owner, guardians, None).await?;
    for i in [2, 4] {
        let RecoveryEvent::ApprovalNeeded {
            request_id, code, ..
        } = recovery_event(&mut peers[i], |e| {
            matches!(e, RecoveryEvent::ApprovalNeeded { .. })
        })
        .await?
        else {
            return Err("no approval request".into());
        };
        let shown = codes
            .iter()
            .find(|(g, _)| *g == peers[i].node.peer_id())
            .map(|(_, c)| c.clone())
            .ok_or("no code for this guardian")?;
        if shown != code {
            return Err("verification codes differ".into());
        }
        println!(
            "[5/5] recovery: node {i}'s user sees {code}, the new device shows {shown}: approved"
        );
        peers[i].node.recovery.approve(request_id).await?;
    }
    recovery_event(&mut device, |e| *e == RecoveryEvent::Recovered { owner }).await?;
    let key = device.node.recovery.take_recovered(owner).await?;
    if key.peer_id() != owner {
        return Err("the recovered key is not node 1's".into());
    }
    report.recovery_s = t.elapsed().as_secs_f64();
    println!("[5/5] recovery: the new device holds node 1's identity key again");
    device.node.shutdown().await;
    Ok(())
}
