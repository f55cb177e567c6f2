//! `Node` over the memory transport with memory stores: three nodes join the DHT through the
//! first, message each other directly and through the mesh, share a blob, and one restarts from
//! its store with its state (records, gossip cache, blobs) back.

#![cfg(not(target_arch = "wasm32"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)] // test code: one scenario, told in order

use std::sync::Arc;
use std::time::Duration;

use mesh_blob::store::PutOptions;
use mesh_crypto::{Identity, PeerId, UnixMillis};
use mesh_dht::record::record_key;
use mesh_dht::{Record, RecordPayload};
use mesh_node::node::SCHEMA;
use mesh_node::{MessagingEvent, Node, NodeBuilder, NodeError, NodeEvents};
use mesh_platform::kv::{KvStore, Store};
use mesh_platform::runtime::{Runtime, TokioRuntime};
use mesh_store_memory::{MemoryBackend, SharedMap};
use mesh_transport::memory::{LinkConfig, MemoryNetwork, MemoryTransport};
use tokio::time::timeout;

type Net = Arc<MemoryNetwork<TokioRuntime>>;
type MemNode = Node<MemoryTransport<TokioRuntime>, TokioRuntime>;

async fn start(
    net: &Net,
    id: &Arc<Identity>,
    address: &str,
    map: &SharedMap,
    bootstrap: Vec<(PeerId, String)>,
) -> (MemNode, NodeEvents) {
    let store: Arc<dyn KvStore> = Arc::new(
        Store::open(MemoryBackend::with_map(Arc::clone(map)), &SCHEMA)
            .await
            .unwrap(),
    );
    NodeBuilder::new(Arc::clone(id))
        .store(store)
        .bootstrap(bootstrap)
        .transport(net.transport(Arc::clone(id), address).unwrap(), address)
        .start(TokioRuntime::current())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_builder_needs_a_store() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let id = Arc::new(Identity::generate());
    let no_store = NodeBuilder::new(Arc::clone(&id))
        .transport(net.transport(Arc::clone(&id), "a").unwrap(), "a")
        .start(TokioRuntime::current())
        .await;
    assert!(matches!(no_store, Err(NodeError::Incomplete(m)) if m.contains("store")));
    // Without a transport there is no `start` at all (a compile error).
}

#[cfg(feature = "redb")]
#[tokio::test]
async fn the_builder_opens_a_redb_file() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let id = Arc::new(Identity::generate());
    let dir = tempfile::tempdir().unwrap();
    let (node, _events) = NodeBuilder::new(Arc::clone(&id))
        .redb(dir.path().join("n.redb"))
        .transport(net.transport(Arc::clone(&id), "b").unwrap(), "b")
        .start(TokioRuntime::current())
        .await
        .unwrap();
    assert_eq!(node.peer_id(), id.peer_id());
    node.shutdown().await;
    node.store.close().await.unwrap();
}

async fn message(events: &mut NodeEvents) -> MessagingEvent {
    timeout(Duration::from_secs(10), events.messages.recv())
        .await
        .expect("a message within 10 s")
        .expect("messaging is running")
}

#[tokio::test]
async fn a_node_runs_every_protocol_and_comes_back_from_its_store() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let ids: Vec<Arc<Identity>> = (0..3).map(|_| Arc::new(Identity::generate())).collect();
    let maps: Vec<SharedMap> = (0..3).map(|_| SharedMap::default()).collect();
    let (a, mut a_events) = start(&net, &ids[0], "a", &maps[0], vec![]).await;
    let boot = vec![(a.peer_id(), a.address.clone())];
    let (b, mut b_events) = start(&net, &ids[1], "b", &maps[1], boot.clone()).await;
    let (c, mut c_events) = start(&net, &ids[2], "c", &maps[2], boot).await;
    for n in [&a, &b, &c] {
        for _ in 0..100 {
            if n.dht.status().await.unwrap().contacts >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            n.dht.status().await.unwrap().contacts >= 2,
            "joined the DHT"
        );
    }

    // A signed record stored by b, found by c.
    let now = TokioRuntime::current().unix_time();
    let record = Record::sign(
        &ids[1],
        RecordPayload {
            name: b"profile".to_vec(),
            seq: 1,
            value: b"b".to_vec(),
        },
        now,
        UnixMillis(now.0 + 3_600_000),
    )
    .unwrap();
    assert!(b.dht.put(record.into_bytes()).await.unwrap().stored > 0);
    let found = c
        .dht
        .find_value(record_key(&ids[1].peer_id(), b"profile"))
        .await
        .unwrap()
        .expect("found");
    assert_eq!(Record::decode(&found, now).unwrap().payload().value, b"b");

    // Gossip neighbours a - b - c; messages from a to c and back.
    a.add_neighbour(b.peer_id(), &b.address).await.unwrap();
    b.add_neighbour(a.peer_id(), &a.address).await.unwrap();
    b.add_neighbour(c.peer_id(), &c.address).await.unwrap();
    c.add_neighbour(b.peer_id(), &b.address).await.unwrap();
    let id = a.messenger.send(c.peer_id(), b"hello c").await.unwrap();
    let MessagingEvent::Message(m) = message(&mut c_events).await else {
        panic!()
    };
    assert_eq!(
        (m.from, m.id, m.body.as_slice()),
        (a.peer_id(), id, &b"hello c"[..])
    );
    assert_eq!(
        message(&mut a_events).await,
        MessagingEvent::Delivered {
            id,
            by: c.peer_id()
        }
    );
    assert!(
        timeout(Duration::from_millis(200), b_events.messages.recv())
            .await
            .is_err(),
        "b never reads a message for c"
    );

    // A blob put at a, fetched by c.
    let stored = a
        .blobs
        .store()
        .put(a.peer_id(), &vec![7u8; 100_000], PutOptions::default(), now)
        .await
        .unwrap();
    c.blobs
        .fetch(
            stored.id,
            &[(a.peer_id(), a.address.clone())],
            c.peer_id(),
            PutOptions::default(),
        )
        .await
        .unwrap();

    // c restarts from its store: the record it holds, the gossip it cached and the blob are
    // back.
    // A chat message on gossip, so that c has something in its gossip cache.
    let chat = mesh_gossip::GossipMessage::sign(
        &ids[0],
        mesh_gossip::GossipPayload {
            topic: b"chat".to_vec(),
            body: b"hi all".to_vec(),
        },
        now,
        UnixMillis(now.0 + 3_600_000),
    )
    .unwrap();
    a.gossip.publish(chat.into_bytes()).await.unwrap();
    let got = timeout(Duration::from_secs(10), c_events.gossip.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.body, b"hi all");
    let before = c.dht.status().await.unwrap().records;
    let cached = c.gossip.status().await.unwrap().messages;
    assert!(cached >= 1);
    c.shutdown().await;
    drop(c);
    drop(c_events);
    let (c, _c_events) = start(&net, &ids[2], "c-again", &maps[2], vec![]).await;
    assert_eq!(c.dht.status().await.unwrap().records, before);
    assert_eq!(
        c.gossip.status().await.unwrap().messages,
        cached,
        "gossip cache restored"
    );
    assert_eq!(
        c.blobs.store().get(&stored.id).await.unwrap(),
        vec![7u8; 100_000]
    );
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn files_reach_the_recipient_through_a_relay_and_only_the_recipient_reads_them() {
    use mesh_node::files::{FileError, FileOffer};
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let ids: Vec<Arc<Identity>> = (0..3).map(|_| Arc::new(Identity::generate())).collect();
    let maps: Vec<SharedMap> = (0..3).map(|_| SharedMap::default()).collect();
    let (relay, _relay_events) = start(&net, &ids[0], "relay", &maps[0], vec![]).await;
    let boot = vec![(relay.peer_id(), relay.address.clone())];
    let (sender, mut sender_events) = start(&net, &ids[1], "sender", &maps[1], boot.clone()).await;
    let (reader, mut reader_events) = start(&net, &ids[2], "reader", &maps[2], boot).await;
    for n in [&sender, &reader] {
        n.add_neighbour(relay.peer_id(), &relay.address)
            .await
            .unwrap();
    }
    relay
        .add_neighbour(sender.peer_id(), "sender")
        .await
        .unwrap();
    relay
        .add_neighbour(reader.peer_id(), "reader")
        .await
        .unwrap();

    // 300 KiB: several chunks and several encryption segments.
    let content: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 253) as u8).collect();
    assert!(matches!(
        sender
            .send_file(
                reader.peer_id(),
                "../etc/passwd",
                &content,
                PutOptions::default()
            )
            .await,
        Err(FileError::InvalidName)
    ));
    let (id, offer) = sender
        .send_file(
            reader.peer_id(),
            "notes.bin",
            &content,
            PutOptions::default(),
        )
        .await
        .unwrap();
    let got = loop {
        match message(&mut reader_events).await {
            MessagingEvent::Message(m) if m.id == id => break m,
            _ => {}
        }
    };
    assert_eq!(got.from, sender.peer_id());
    let received = FileOffer::decode(&got.body).expect("the body is a file offer");
    assert_eq!(received, offer);
    assert_eq!(received.name, "notes.bin");
    assert_eq!(received.size, content.len() as u64);
    // The relay, which passed the offer on, cannot read the file even with the blob.
    relay
        .blobs
        .fetch(
            offer.blob,
            &[(sender.peer_id(), "sender".into())],
            relay.peer_id(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert!(matches!(
        relay.open_file(&offer).await,
        Err(FileError::Private(_))
    ));
    // The reader has no link to the sender: it finds it through the DHT and fetches.
    let data = reader
        .receive_file(&received, got.from, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(data, content);
    // Stored: read again without the network, once the sender is gone.
    sender.shutdown().await;
    assert_eq!(reader.open_file(&received).await.unwrap(), content);
    // An offer whose size lies is refused.
    let mut lying = received.clone();
    lying.size += 1;
    assert!(matches!(
        reader.open_file(&lying).await,
        Err(FileError::SizeMismatch { .. })
    ));
    // The sender got the receipt for the offer.
    loop {
        if let MessagingEvent::Delivered { id: d, by } = message(&mut sender_events).await {
            assert_eq!((d, by), (id, reader.peer_id()));
            break;
        }
    }
}
