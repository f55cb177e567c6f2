//! The connection pool over the memory transport: dial on demand, one link per peer for all
//! protocols, advertised addresses, unsubscribed protocols dropped, a dead link redialled; and
//! its limits and choices: no dialing once stopped, sends dropped without a permit, the
//! connection limit, and which of two links to one peer over different transports stays.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mesh_crypto::{Identity, PeerId};
use mesh_platform::runtime::TokioRuntime;
use mesh_transport::memory::{LinkConfig, MemoryConnection, MemoryNetwork, MemoryTransport};
use mesh_transport::multi::Transports;
use mesh_transport::pool::{Incoming, Keepalive, MAX_CONNECTIONS, Pool};
use mesh_transport::{
    Connection, ConnectionQuality, Frame, ProtocolId, Transport, TransportError, TransportKind,
};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

type MemPool = Pool<MemoryTransport<TokioRuntime>, TokioRuntime>;

/// A memory network and `N` fresh identities.
fn net_and_ids<const N: usize>() -> (Arc<MemoryNetwork<TokioRuntime>>, [Arc<Identity>; N]) {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    (net, std::array::from_fn(|_| Arc::new(Identity::generate())))
}

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
    let (net, [alice, bob]) = net_and_ids();
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
    let (net, [alice, bob, carol]) = net_and_ids();
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
    let (net, [alice, bob]) = net_and_ids();
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
    let (net, [alice, bob]) = net_and_ids();
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
    let (net, [alice, bob]) = net_and_ids();
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
    let (net, [alice, bob]) = net_and_ids();
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

/// Waits (up to 10 s) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

fn f(n: u8) -> Frame {
    Frame::new(ProtocolId::DHT, vec![n]).unwrap()
}

#[tokio::test]
async fn a_stopped_pool_dials_no_one_but_keeps_its_open_links_until_closed() {
    let (net, [alice, bob, carol]) = net_and_ids();
    let pa = pool(&net, &alice, "mem:alice");
    let pb = pool(&net, &bob, "mem:bob");
    let _pc = pool(&net, &carol, "mem:carol");
    assert_eq!(pa.local_address(), "mem:alice");
    let mut bob_dht = pb.subscribe(ProtocolId::DHT);
    pa.send(bob.peer_id(), "mem:bob", f(1)).await.unwrap();
    next(&mut bob_dht).await;

    pa.stop_accepting();
    assert_eq!(
        pa.send(carol.peer_id(), "mem:carol", f(2)).await,
        Err(TransportError::Closed)
    );
    assert_eq!(
        pa.dial(carol.peer_id(), "mem:carol").await,
        Err(TransportError::Closed)
    );
    // The open link still carries frames.
    pa.send(bob.peer_id(), "mem:bob", f(3)).await.unwrap();
    assert_eq!(next(&mut bob_dht).await.payload, [3]);
    assert_eq!(pa.connected(), vec![bob.peer_id()]);
    pa.close_all().await;
    assert!(pa.connected().is_empty());
    assert_eq!(pa.address_of(&bob.peer_id()), None);
}

#[tokio::test]
async fn a_spawned_send_needs_a_permit_and_gives_it_back_however_it_ends() {
    let (net, [alice, bob, nobody]) = net_and_ids();
    let pa = pool(&net, &alice, "mem:alice");
    let pb = pool(&net, &bob, "mem:bob");
    let mut bob_dht = pb.subscribe(ProtocolId::DHT);
    let permits = Arc::new(Semaphore::new(1));
    let long = Duration::from_secs(30);

    // No permit free: the frame is dropped at once.
    let held = Arc::clone(&permits).acquire_owned().await.unwrap();
    assert!(!pa.spawn_send(&permits, bob.peer_id(), "mem:bob".into(), f(1), long));
    drop(held);
    assert!(pa.spawn_send(&permits, bob.peer_id(), "mem:bob".into(), f(2), long));
    assert_eq!(next(&mut bob_dht).await.payload, [2], "frame 1 was dropped");
    // A send that fails (no address to dial) gives its permit back.
    assert!(pa.spawn_send(&permits, nobody.peer_id(), String::new(), f(3), long));
    let permit = timeout(Duration::from_secs(5), Arc::clone(&permits).acquire_owned())
        .await
        .expect("the failed send released its permit")
        .unwrap();
    // A send that cannot finish (a listener that never answers) is abandoned at its timeout.
    let _silent = net.transport(Arc::clone(&nobody), "mem:silent").unwrap();
    pa.spawn_send_holding(
        permit,
        nobody.peer_id(),
        "mem:silent".into(),
        f(4),
        Duration::from_millis(20),
    );
    let _released = timeout(Duration::from_secs(5), Arc::clone(&permits).acquire_owned())
        .await
        .expect("the abandoned send released its permit")
        .unwrap();
    assert!(!pa.connected().contains(&nobody.peer_id()));
}

#[tokio::test]
async fn no_more_than_max_connections_links_are_kept() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let hub_id = Arc::new(Identity::generate());
    let hub = pool(&net, &hub_id, "mem:hub");
    let peers: Vec<(Arc<Identity>, MemPool)> = (0..=MAX_CONNECTIONS + 1)
        .map(|i| {
            let id = Arc::new(Identity::generate());
            let p = pool(&net, &id, &format!("mem:{i}"));
            (id, p)
        })
        .collect();
    for (i, (id, _)) in peers.iter().take(MAX_CONNECTIONS).enumerate() {
        hub.dial(id.peer_id(), &format!("mem:{i}")).await.unwrap();
    }
    assert_eq!(hub.connected().len(), MAX_CONNECTIONS);
    // One more dialed by the hub: refused, and its link closed.
    let (extra, extra_pool) = &peers[MAX_CONNECTIONS];
    assert_eq!(
        hub.dial(extra.peer_id(), &format!("mem:{MAX_CONNECTIONS}"))
            .await,
        Err(TransportError::Unreachable(
            "connection limit reached".into()
        ))
    );
    assert_eq!(hub.connected().len(), MAX_CONNECTIONS);
    assert!(!hub.connected().contains(&extra.peer_id()));
    eventually("the refused peer sees its link go", || {
        !extra_pool.connected().contains(&hub_id.peer_id())
    })
    .await;
    // One more dialing the hub: its link is closed by the hub.
    let (_, late_pool) = &peers[MAX_CONNECTIONS + 1];
    late_pool.dial(hub_id.peer_id(), "mem:hub").await.unwrap();
    eventually("the hub closes the link over its limit", || {
        !late_pool.connected().contains(&hub_id.peer_id())
    })
    .await;
    assert_eq!(hub.connected().len(), MAX_CONNECTIONS);
}

/// A memory transport whose links report another kind (as WebRTC or BLE links would), and
/// whose sends and pings vanish while `mute` is set (a path that died without a word).
struct Kinded {
    inner: MemoryTransport<TokioRuntime>,
    kind: TransportKind,
    mute: Arc<AtomicBool>,
}

struct KindedConn {
    inner: MemoryConnection<TokioRuntime>,
    kind: TransportKind,
    mute: Arc<AtomicBool>,
}

impl KindedConn {
    fn muted(&self) -> bool {
        self.mute.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Transport for Kinded {
    type Connection = KindedConn;

    fn kind(&self) -> TransportKind {
        self.kind
    }
    async fn dial(&self, peer: PeerId, address: &str) -> Result<KindedConn, TransportError> {
        let inner = self.inner.dial(peer, address).await?;
        Ok(KindedConn {
            inner,
            kind: self.kind,
            mute: Arc::clone(&self.mute),
        })
    }
    async fn accept(&self) -> Result<KindedConn, TransportError> {
        let inner = self.inner.accept().await?;
        Ok(KindedConn {
            inner,
            kind: self.kind,
            mute: Arc::clone(&self.mute),
        })
    }
}

#[async_trait]
impl Connection for KindedConn {
    fn remote(&self) -> PeerId {
        self.inner.remote()
    }
    fn kind(&self) -> TransportKind {
        self.kind
    }
    fn quality(&self) -> ConnectionQuality {
        self.inner.quality()
    }
    async fn send(&self, frame: Frame) -> Result<(), TransportError> {
        if self.muted() {
            return Ok(());
        }
        self.inner.send(frame).await
    }
    async fn recv(&self) -> Result<Frame, TransportError> {
        self.inner.recv().await
    }
    async fn ping(&self) -> Result<(), TransportError> {
        if self.muted() {
            return Ok(());
        }
        self.inner.ping().await
    }
    async fn close(&self) -> Result<(), TransportError> {
        self.inner.close().await
    }
}

/// Reads `conn` until it closes (after the pool's hello).
async fn closed(conn: &MemoryConnection<TokioRuntime>) {
    let ended = timeout(Duration::from_secs(10), async {
        while conn.recv().await.is_ok() {}
    })
    .await;
    assert!(ended.is_ok(), "the losing link is closed after its grace");
}

#[tokio::test]
async fn of_two_links_one_peer_dialed_over_different_transports_the_higher_kind_stays() {
    let rt = TokioRuntime::current();
    // In either order of arrival, the WebRTC-like link wins over the BLE-like one.
    for ble_first in [true, false] {
        let (lan, radio) = (
            MemoryNetwork::new(rt.clone(), LinkConfig::default()),
            MemoryNetwork::new(rt.clone(), LinkConfig::default()),
        );
        let (x, y) = (
            Arc::new(Identity::generate()),
            Arc::new(Identity::generate()),
        );
        let both = Transports::new(
            Kinded {
                inner: lan.transport(Arc::clone(&x), "mem:x").unwrap(),
                kind: TransportKind::WebRtc,
                mute: Arc::default(),
            },
            Kinded {
                inner: radio.transport(Arc::clone(&x), "ble:x").unwrap(),
                kind: TransportKind::Ble,
                mute: Arc::default(),
            },
            &["ble:"],
            &rt,
        );
        let px = Pool::new(both, rt.clone(), x.peer_id(), "mem:x");
        px.start_accepting();
        // Y is no pool: it dials X twice, once over each network.
        let y_lan = lan.transport(Arc::clone(&y), "mem:y").unwrap();
        let y_radio = radio.transport(Arc::clone(&y), "ble:y").unwrap();
        let kind_at_x = || px.connection(&y.peer_id()).map(|c| c.kind());
        let (first_kind, first) = if ble_first {
            (
                TransportKind::Ble,
                y_radio.dial(x.peer_id(), "ble:x").await.unwrap(),
            )
        } else {
            (
                TransportKind::WebRtc,
                y_lan.dial(x.peer_id(), "mem:x").await.unwrap(),
            )
        };
        eventually("X takes the first link", || kind_at_x() == Some(first_kind)).await;
        let second = if ble_first {
            y_lan.dial(x.peer_id(), "mem:x").await.unwrap()
        } else {
            y_radio.dial(x.peer_id(), "ble:x").await.unwrap()
        };
        let (web, ble) = if ble_first {
            (&second, &first)
        } else {
            (&first, &second)
        };
        // X closes the BLE link (once its grace is over) and keeps the other.
        closed(ble).await;
        assert_eq!(
            kind_at_x(),
            Some(TransportKind::WebRtc),
            "ble first: {ble_first}"
        );
        assert_eq!(px.connected(), vec![y.peer_id()]);
        assert_eq!(
            web.recv().await.unwrap().protocol,
            ProtocolId::PEER,
            "the kept link opened with X's hello"
        );
        px.send(y.peer_id(), "", f(5)).await.unwrap();
        assert_eq!(web.recv().await.unwrap(), f(5));
    }
}

#[tokio::test]
async fn a_peer_whose_peer_info_does_not_parse_loses_its_link() {
    let (net, [x, y]) = net_and_ids();
    let px = pool(&net, &x, "mem:x");
    // Y is no pool: it dials by hand and sends a peer-info frame of an unknown version.
    let ty = net.transport(Arc::clone(&y), "mem:y").unwrap();
    let conn = ty.dial(x.peer_id(), "mem:x").await.unwrap();
    let hello = conn.recv().await.unwrap();
    assert_eq!(hello.protocol, ProtocolId::PEER);
    assert_eq!(
        mesh_transport::frame::decode_peer_address(&hello.payload).unwrap(),
        "mem:x"
    );
    conn.send(Frame::new(ProtocolId::PEER, vec![9]).unwrap())
        .await
        .unwrap();
    let rest = timeout(Duration::from_secs(5), conn.recv()).await;
    assert_eq!(
        rest.expect("X closes the link"),
        Err(TransportError::Closed)
    );
    eventually("X forgets the link", || px.connected().is_empty()).await;
}

#[tokio::test]
async fn frames_for_a_subscriber_that_went_away_are_counted_as_dropped() {
    let (net, [x, y]) = net_and_ids();
    let px = pool(&net, &x, "mem:x");
    // Y advertises no address: X links with it but cannot dial it back.
    let py = Pool::new(
        net.transport(Arc::clone(&y), "mem:y").unwrap(),
        TokioRuntime::current(),
        y.peer_id(),
        "",
    );
    drop(px.subscribe(ProtocolId::DHT));
    let mut gossip = px.subscribe(ProtocolId::GOSSIP);
    py.send(x.peer_id(), "mem:x", f(1)).await.unwrap();
    py.send(
        x.peer_id(),
        "mem:x",
        Frame::new(ProtocolId::GOSSIP, vec![2]).unwrap(),
    )
    .await
    .unwrap();
    // The gossip frame came after the DHT one on the same link: that one was handled first.
    let got = next(&mut gossip).await;
    assert_eq!((got.from, got.address.as_str()), (y.peer_id(), ""));
    assert_eq!(px.dropped(), 1);
    assert_eq!(px.address_of(&y.peer_id()), Some(String::new()));
    assert_eq!(
        format!("{px:?}"),
        "Pool { local_address: \"mem:x\", links: 1, .. }"
    );
}

#[tokio::test]
async fn a_link_that_goes_silent_is_closed_and_an_idle_live_one_stays() {
    let (net, [x, y]) = net_and_ids();
    let mute = Arc::new(AtomicBool::new(false));
    let kinded = |id: &Arc<Identity>, address: &str| {
        let p = Pool::new(
            Kinded {
                inner: net.transport(Arc::clone(id), address).unwrap(),
                kind: TransportKind::WebRtc,
                mute: Arc::clone(&mute),
            },
            TokioRuntime::current(),
            id.peer_id(),
            address,
        );
        p.start_accepting();
        p
    };
    let (px, py) = (kinded(&x, "mem:x"), kinded(&y, "mem:y"));
    let quick = Keepalive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(600),
    };
    px.set_keepalive(Some(quick));
    py.set_keepalive(Some(quick));
    px.dial(y.peer_id(), "mem:y").await.unwrap();
    eventually("the link on both sides", || {
        py.connected() == vec![x.peer_id()]
    })
    .await;

    // Idle for more than three timeouts, but alive: pinged, answered, kept.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(px.connected(), vec![y.peer_id()]);
    assert_eq!(py.connected(), vec![x.peer_id()]);
    let answered = px.connection(&y.peer_id()).unwrap().quality().samples;
    assert!(answered >= 2, "{answered} pings answered");

    // Keepalive off: a link gone silent stays listed.
    px.set_keepalive(None);
    py.set_keepalive(None);
    mute.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(px.connected(), vec![y.peer_id()]);
    assert_eq!(py.connected(), vec![x.peer_id()]);

    // On at x alone (y neither pings nor closes): x hears nothing, its pings go unanswered,
    // and it closes the link as dead, and says so.
    let mut changes = px.watch_links();
    changes.borrow_and_update();
    let on = std::time::Instant::now();
    px.set_keepalive(Some(quick));
    eventually("x to close the silent link", || px.connected().is_empty()).await;
    assert!(
        on.elapsed() >= quick.timeout,
        "closed after {:?}, before the timeout",
        on.elapsed()
    );
    assert!(
        changes.has_changed().unwrap(),
        "the link's end was announced"
    );

    // The path back: the next send dials a new link.
    mute.store(false, Ordering::SeqCst);
    let mut y_dht = py.subscribe(ProtocolId::DHT);
    px.send(y.peer_id(), "mem:y", f(7)).await.unwrap();
    assert_eq!(next(&mut y_dht).await.payload, [7]);
}
