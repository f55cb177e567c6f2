//! The connection pool over the memory transport: dial on demand, one link per peer for all
//! protocols, advertised addresses, unsubscribed protocols dropped, a dead link redialled.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use std::sync::Arc;
use std::time::Duration;

use mesh_crypto::Identity;
use mesh_platform::runtime::TokioRuntime;
use mesh_transport::memory::{LinkConfig, MemoryNetwork, MemoryTransport};
use mesh_transport::pool::{Incoming, Pool};
use mesh_transport::{Frame, ProtocolId, TransportError};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

type MemPool = Pool<MemoryTransport<TokioRuntime>, TokioRuntime>;

fn pool(net: &Arc<MemoryNetwork<TokioRuntime>>, id: &Arc<Identity>, address: &str) -> MemPool {
    let t = net.transport(Arc::clone(id), address).unwrap();
    let p = Pool::new(t, TokioRuntime::current(), id.peer_id(), address);
    p.start_accepting();
    p
}

async fn next(rx: &mut Receiver<Incoming>) -> Incoming {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a frame within 5 s")
        .expect("the pool is alive")
}

#[tokio::test]
async fn frames_reach_the_subscribed_protocol_over_one_link() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let (alice, bob) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let pa = pool(&net, &alice, "mem:alice");
    let pb = pool(&net, &bob, "mem:bob");
    let mut bob_dht = pb.subscribe(ProtocolId::DHT);
    let mut alice_dht = pa.subscribe(ProtocolId::DHT);

    // Nobody subscribed to gossip at Bob: dropped and counted, the link stays up.
    pa.send(
        bob.peer_id(),
        "mem:bob",
        Frame::new(ProtocolId::GOSSIP, vec![9]).unwrap(),
    )
    .await
    .unwrap();
    pa.send(
        bob.peer_id(),
        "mem:bob",
        Frame::new(ProtocolId::DHT, vec![1, 2, 3]).unwrap(),
    )
    .await
    .unwrap();
    let got = next(&mut bob_dht).await;
    assert_eq!(got.from, alice.peer_id());
    assert_eq!(got.payload, [1, 2, 3]);
    // Bob learnt where Alice can be dialled from her first frame.
    assert_eq!(got.address, "mem:alice");
    assert_eq!(pb.dropped(), 1);
    assert_eq!(
        pb.address_of(&alice.peer_id()).as_deref(),
        Some("mem:alice")
    );

    // Bob answers without an address: the open link carries it.
    pb.send(
        alice.peer_id(),
        "",
        Frame::new(ProtocolId::DHT, vec![4]).unwrap(),
    )
    .await
    .unwrap();
    let back = next(&mut alice_dht).await;
    assert_eq!((back.from, back.payload), (bob.peer_id(), vec![4]));
    assert_eq!(pa.connected(), vec![bob.peer_id()]);
    assert_eq!(pb.connected(), vec![alice.peer_id()]);
}

#[tokio::test]
async fn without_a_link_or_an_address_sending_fails_and_a_closed_link_is_redialled() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let (alice, bob, carol) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let pa = pool(&net, &alice, "mem:alice");
    let pb = pool(&net, &bob, "mem:bob");
    let mut bob_dht = pb.subscribe(ProtocolId::DHT);
    let f = || Frame::new(ProtocolId::DHT, vec![7]).unwrap();

    assert!(matches!(
        pa.send(carol.peer_id(), "", f()).await,
        Err(TransportError::Unreachable(_))
    ));
    // Nobody listens there.
    assert!(pa.send(carol.peer_id(), "mem:nobody", f()).await.is_err());
    // Bob listens at the address, but he is not Carol: refused by the handshake.
    assert!(pa.send(carol.peer_id(), "mem:bob", f()).await.is_err());
    assert!(pa.connected().is_empty());

    pa.send(bob.peer_id(), "mem:bob", f()).await.unwrap();
    next(&mut bob_dht).await;
    // Bob closes every link; Alice's next send notices and dials again.
    pb.close_all().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    pa.send(bob.peer_id(), "mem:bob", f()).await.unwrap();
    assert_eq!(next(&mut bob_dht).await.payload, [7]);
}

#[tokio::test]
async fn concurrent_sends_share_one_dial_and_crossed_dials_settle_on_one_link() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let (alice, bob) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let pa = pool(&net, &alice, "mem:alice");
    let pb = pool(&net, &bob, "mem:bob");
    let mut bob_dht = pb.subscribe(ProtocolId::DHT);
    let mut alice_dht = pa.subscribe(ProtocolId::DHT);
    let f = |n: u8| Frame::new(ProtocolId::DHT, vec![n]).unwrap();
    // Ten sends at once to a peer without a link: one dial, all delivered.
    let sends: Vec<_> = (0..10u8)
        .map(|n| {
            let pa = pa.clone();
            let to = bob.peer_id();
            tokio::spawn(async move { pa.send(to, "mem:bob", f(n)).await })
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let mut got: Vec<u8> = Vec::new();
    for _ in 0..10 {
        got.push(next(&mut bob_dht).await.payload[0]);
    }
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    // Bob dials Alice too, as if both had dialled at once: each side keeps one link, the
    // same one, and frames still flow both ways.
    pb.close_all().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (x, y) = tokio::join!(
        pa.send(bob.peer_id(), "mem:bob", f(20)),
        pb.send(alice.peer_id(), "mem:alice", f(21))
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(next(&mut bob_dht).await.payload, [20]);
    assert_eq!(next(&mut alice_dht).await.payload, [21]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pa.connected().len(), 1);
    assert_eq!(pb.connected().len(), 1);
    pa.send(bob.peer_id(), "", f(22)).await.unwrap();
    pb.send(alice.peer_id(), "", f(23)).await.unwrap();
    assert_eq!(next(&mut bob_dht).await.payload, [22]);
    assert_eq!(next(&mut alice_dht).await.payload, [23]);
}

#[tokio::test]
async fn dial_opens_one_link_without_a_frame_and_a_failed_dial_can_be_retried() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let (alice, bob) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let pa = pool(&net, &alice, "mem:alice");
    // Bob is not there yet: the dial fails, and leaves nothing behind that blocks a retry.
    assert!(pa.dial(bob.peer_id(), "mem:bob").await.is_err());
    assert!(matches!(
        pa.dial(bob.peer_id(), "").await,
        Err(TransportError::Unreachable(_))
    ));
    let pb = pool(&net, &bob, "mem:bob");
    let mut bob_dht = pb.subscribe(ProtocolId::DHT);
    // Concurrent dials share one link; no frame reaches Bob's protocols.
    let (a, b, c) = tokio::join!(
        pa.dial(bob.peer_id(), "mem:bob"),
        pa.dial(bob.peer_id(), "mem:bob"),
        pa.dial(bob.peer_id(), "mem:bob"),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(pa.connected(), vec![bob.peer_id()]);
    assert!(pa.connection(&bob.peer_id()).is_some());
    assert!(
        timeout(Duration::from_millis(100), bob_dht.recv())
            .await
            .is_err()
    );
    // A dial with a link open is a no-op, whatever the address.
    pa.dial(bob.peer_id(), "").await.unwrap();
    // A weak handle does not keep a pool alive (here one with no tasks: accepting and
    // reading links hold the pool while they run).
    let carol = Arc::new(Identity::generate());
    let pc: MemPool = Pool::new(
        net.transport(Arc::clone(&carol), "mem:carol").unwrap(),
        TokioRuntime::current(),
        carol.peer_id(),
        "mem:carol",
    );
    let weak = pc.downgrade();
    assert!(weak.upgrade().is_some());
    drop(pc);
    assert!(weak.upgrade().is_none());
}

#[tokio::test]
#[allow(clippy::many_single_char_names)] // five peers
async fn one_pool_over_two_transports_dials_each_by_address_and_accepts_from_both() {
    use mesh_transport::TransportKind;
    use mesh_transport::multi::Transports;
    let rt = TokioRuntime::current();
    let (lan, radio) = (
        MemoryNetwork::new(rt.clone(), LinkConfig::default()),
        MemoryNetwork::new(rt.clone(), LinkConfig::default()),
    );
    let (x, y, z, w) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let both = Transports::new(
        lan.transport(Arc::clone(&x), "mem:x").unwrap(),
        radio.transport(Arc::clone(&x), "ble:x").unwrap(),
        &["ble:"],
        &rt,
    );
    assert_eq!(
        mesh_transport::Transport::kind(&both),
        TransportKind::Memory
    );
    let px = Pool::new(both, rt.clone(), x.peer_id(), "mem:x");
    px.start_accepting();
    let mut x_dht = px.subscribe(ProtocolId::DHT);
    let py = pool(&lan, &y, "mem:y");
    let pz = pool(&radio, &z, "ble:z");
    let pw = pool(&radio, &w, "ble:w");
    let (mut y_dht, mut z_dht) = (py.subscribe(ProtocolId::DHT), pz.subscribe(ProtocolId::DHT));
    let f = |b: u8| Frame::new(ProtocolId::DHT, vec![b]).unwrap();

    // Dials go by address: the LAN for `mem:`, the radio for `ble:`.
    px.send(y.peer_id(), "mem:y", f(1)).await.unwrap();
    px.send(z.peer_id(), "ble:z", f(2)).await.unwrap();
    assert_eq!(next(&mut y_dht).await.payload, [1]);
    assert_eq!(next(&mut z_dht).await.payload, [2]);
    // Y is not on the radio: a `ble:` address for it goes nowhere.
    let stranger = Arc::new(Identity::generate());
    assert!(px.send(stranger.peer_id(), "ble:y", f(3)).await.is_err());
    // Links arrive from both: W dials X over the radio, V over the LAN.
    let v = Arc::new(Identity::generate());
    let pv = pool(&lan, &v, "mem:v");
    pw.send(x.peer_id(), "ble:x", f(4)).await.unwrap();
    pv.send(x.peer_id(), "mem:x", f(5)).await.unwrap();
    let mut got = vec![
        next(&mut x_dht).await.payload,
        next(&mut x_dht).await.payload,
    ];
    got.sort();
    assert_eq!(got, vec![vec![4], vec![5]]);
    let mut peers = px.connected();
    peers.sort_by_key(ToString::to_string);
    let mut want = vec![y.peer_id(), z.peer_id(), w.peer_id(), v.peer_id()];
    want.sort_by_key(ToString::to_string);
    assert_eq!(peers, want);
}

#[tokio::test]
async fn watchers_wake_when_a_link_comes_up_its_address_is_known_and_it_goes_down() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let (alice, bob) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let pa = pool(&net, &alice, "mem:alice");
    let pb = pool(&net, &bob, "mem:bob");
    let mut changes = pb.watch_links();
    assert!(!changes.has_changed().unwrap());
    pa.dial(bob.peer_id(), "mem:bob").await.unwrap();
    // Bob learns of the link, then of Alice's advertised address.
    let wait = |rx: &mut tokio::sync::watch::Receiver<u64>| {
        let mut rx = rx.clone();
        async move {
            timeout(Duration::from_secs(5), rx.changed())
                .await
                .expect("a change within 5 s")
                .unwrap();
            rx
        }
    };
    changes = wait(&mut changes).await;
    for _ in 0..100 {
        if pb.address_of(&alice.peer_id()).as_deref() == Some("mem:alice") {
            break;
        }
        changes = wait(&mut changes).await;
    }
    assert!(pb.connected().contains(&alice.peer_id()));
    assert_eq!(
        pb.address_of(&alice.peer_id()).as_deref(),
        Some("mem:alice")
    );
    // Nothing new: no wake-up.
    changes.mark_unchanged();
    assert!(!changes.has_changed().unwrap());
    pa.close_all().await;
    for _ in 0..100 {
        if !pb.connected().contains(&alice.peer_id()) {
            break;
        }
        changes = wait(&mut changes).await;
    }
    assert!(!pb.connected().contains(&alice.peer_id()), "the link went");
}

#[tokio::test]
async fn a_shut_down_pool_takes_no_more_links_and_close_link_forces_a_new_dial() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let (alice, bob) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let pa = pool(&net, &alice, "mem:alice");
    let pb = pool(&net, &bob, "mem:bob");
    let mut bob_dht = pb.subscribe(ProtocolId::DHT);
    let f = |n: u8| Frame::new(ProtocolId::DHT, vec![n]).unwrap();
    pa.send(bob.peer_id(), "mem:bob", f(1)).await.unwrap();
    next(&mut bob_dht).await;
    let first = pa.connection(&bob.peer_id()).unwrap();

    // Closed and forgotten at once: the next send dials a new link.
    assert!(pa.close_link(&bob.peer_id()).await);
    assert!(!pa.close_link(&bob.peer_id()).await);
    assert!(pa.connected().is_empty());
    pa.send(bob.peer_id(), "mem:bob", f(2)).await.unwrap();
    assert_eq!(next(&mut bob_dht).await.payload, [2]);
    let second = pa.connection(&bob.peer_id()).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));

    // Bob shuts down: his links close and he accepts no new ones.
    pb.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pb.connected().is_empty());
    let _ = pa.send(bob.peer_id(), "mem:bob", f(3)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pb.connected().is_empty(), "a shut-down pool took a link");
    assert!(
        timeout(Duration::from_millis(200), bob_dht.recv())
            .await
            .map_or(true, |m| m.is_none()),
        "a frame reached a shut-down pool"
    );
}
