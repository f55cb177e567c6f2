//! The memory transport end to end: authenticated links, frames both ways, a spliced-in
//! impostor refused, backpressure, loss, measured round trips, close.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use mesh_crypto::Identity;
use mesh_platform::runtime::{BoxFuture, Runtime, TokioRuntime};
use mesh_transport::handshake::HandshakeError;
use mesh_transport::memory::{LinkConfig, MemoryNetwork};
use mesh_transport::{Connection, Frame, ProtocolId, Transport, TransportError};

type Conn = mesh_transport::memory::MemoryConnection<TokioRuntime>;

/// Two peers on a fresh network with `config`, connected (Alice dialled Bob).
async fn connected(config: LinkConfig) -> (Conn, Conn) {
    let net = MemoryNetwork::new(TokioRuntime::current(), config);
    let (alice, bob) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let ta = net.transport(alice, "a").unwrap();
    let tb = net.transport(bob.clone(), "b").unwrap();
    let (ca, cb) = tokio::join!(ta.dial(bob.peer_id(), "b"), tb.accept());
    (ca.unwrap(), cb.unwrap())
}

fn frame(n: u32) -> Frame {
    Frame::new(ProtocolId::DHT, n.to_le_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn peers_exchange_authenticated_frames_both_ways() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let (alice, bob) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let ta = net.transport(alice.clone(), "alice").unwrap();
    let tb = net.transport(bob.clone(), "bob").unwrap();
    let (ca, cb) = tokio::join!(ta.dial(bob.peer_id(), "bob"), tb.accept());
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca.remote(), bob.peer_id());
    assert_eq!(cb.remote(), alice.peer_id());
    for i in 0..50 {
        ca.send(frame(i)).await.unwrap();
        cb.send(Frame::new(ProtocolId::GOSSIP, vec![1; 1000]).unwrap())
            .await
            .unwrap();
        assert_eq!(cb.recv().await.unwrap(), frame(i));
        assert_eq!(ca.recv().await.unwrap().protocol, ProtocolId::GOSSIP);
    }
    // Protocol 0 belongs to the link.
    assert!(
        ca.send(Frame::new(ProtocolId::CONTROL, vec![1]).unwrap())
            .await
            .is_err()
    );
    ca.close().await.unwrap();
    assert_eq!(cb.recv().await, Err(TransportError::Closed));
    assert_eq!(ca.send(frame(1)).await, Err(TransportError::Closed));
}

#[tokio::test]
async fn an_impostor_at_the_address_is_refused() {
    // Signaling (or a poisoned address book) sends Alice to Mallory instead of Bob.
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let alice = Arc::new(Identity::generate());
    let bob = Identity::generate();
    let mallory = Arc::new(Identity::generate());
    let ta = net.transport(alice, "alice").unwrap();
    let tm = net.transport(mallory.clone(), "bob").unwrap();
    // Mallory answers (her accept keeps waiting for links after Alice walks away).
    let accept = tokio::spawn(async move {
        let _ = tm.accept().await;
    });
    let err = ta.dial(bob.peer_id(), "bob").await.unwrap_err();
    assert_eq!(
        err,
        TransportError::Handshake(HandshakeError::UnexpectedPeer {
            expected: bob.peer_id(),
            actual: mallory.peer_id()
        })
    );
    accept.abort();
    assert!(matches!(
        ta.dial(bob.peer_id(), "nobody").await,
        Err(TransportError::Unreachable(_))
    ));
}

#[tokio::test]
async fn a_full_queue_makes_send_wait() {
    let (ca, cb) = connected(LinkConfig {
        queue: 4,
        ..LinkConfig::default()
    })
    .await;
    for i in 0..4 {
        ca.send(frame(i)).await.unwrap();
    }
    assert!(
        ca.send(frame(4)).now_or_never().is_none(),
        "a fifth frame must wait for room"
    );
    assert_eq!(cb.recv().await.unwrap(), frame(0));
    assert!(
        ca.send(frame(4)).now_or_never().is_some(),
        "room after one was read"
    );
    for i in 1..=4 {
        assert_eq!(cb.recv().await.unwrap(), frame(i));
    }
}

#[tokio::test]
async fn loss_drops_frames_and_the_link_survives_the_gaps() {
    let (ca, cb) = connected(LinkConfig {
        loss: 0.3,
        queue: 512,
        ..LinkConfig::default()
    })
    .await;
    for i in 0..300 {
        ca.send(frame(i)).await.unwrap();
    }
    ca.close().await.unwrap();
    let mut got = Vec::new();
    while let Ok(f) = cb.recv().await {
        got.push(u32::from_le_bytes(f.payload.try_into().unwrap()));
    }
    // 300 frames at 30% loss: about 210 arrive (the close itself may be lost too).
    assert!((150..=270).contains(&got.len()), "{} arrived", got.len());
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
}

#[tokio::test]
async fn round_trip_time_is_measured_from_pings() {
    let latency = Duration::from_millis(15);
    let (ca, cb) = connected(LinkConfig {
        latency,
        ..LinkConfig::default()
    })
    .await;
    let ca = Arc::new(ca);
    // Bob's recv loop answers pings; Alice's handles the pongs.
    let bob_loop = tokio::spawn(async move { while cb.recv().await.is_ok() {} });
    let reader = ca.clone();
    let alice_loop = tokio::spawn(async move { while reader.recv().await.is_ok() {} });
    assert_eq!(ca.quality().rtt, None);
    for n in 1..=3 {
        ca.ping().await.unwrap();
        // Each pong is counted once it is back (waited for, not slept on: a loaded machine
        // may take longer than the round trip to run the loops).
        tokio::time::timeout(Duration::from_secs(10), async {
            while ca.quality().samples < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("pong {n} never counted: {:?}", ca.quality()));
    }
    let q = ca.quality();
    assert_eq!(q.samples, 3, "{q:?}");
    assert!(q.rtt.unwrap() >= 2 * latency, "{q:?}");
    assert!(q.loss < 0.01);
    ca.close().await.unwrap();
    alice_loop.abort();
    let _ = bob_loop.await;
}

/// Tokio, with every timer a thousand times shorter: the 10 s handshake timeout in 10 ms.
#[derive(Clone)]
struct Fast(TokioRuntime);

impl Runtime for Fast {
    fn monotonic(&self) -> Duration {
        self.0.monotonic()
    }
    fn unix_time(&self) -> mesh_crypto::UnixMillis {
        self.0.unix_time()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.0.sleep(duration / 1000)
    }
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.0.spawn(task);
    }
}

#[tokio::test]
async fn an_address_is_taken_once_and_a_listener_that_is_gone_is_unreachable() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let (alice, bob) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let ta = net.transport(Arc::clone(&alice), "a").unwrap();
    assert_eq!(ta.kind(), mesh_transport::TransportKind::Memory);
    assert_eq!(
        net.transport(Arc::clone(&bob), "a").unwrap_err(),
        TransportError::Unreachable("address a already in use".into())
    );
    let tb = net.transport(Arc::clone(&bob), "b").unwrap();
    drop(tb);
    // The address stays registered, but nobody takes links there any more.
    assert_eq!(
        ta.dial(bob.peer_id(), "b").await.unwrap_err(),
        TransportError::Unreachable("b".into())
    );
}

#[tokio::test]
async fn a_dial_nobody_answers_times_out() {
    let net = MemoryNetwork::new(Fast(TokioRuntime::current()), LinkConfig::default());
    let (alice, bob) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
    );
    let ta = net.transport(alice, "a").unwrap();
    // Bob listens, but never accepts: the link waits in his queue unanswered.
    let _tb = net.transport(Arc::clone(&bob), "b").unwrap();
    assert_eq!(
        ta.dial(bob.peer_id(), "b").await.unwrap_err(),
        TransportError::Timeout
    );
}

#[tokio::test]
async fn a_failed_inbound_handshake_does_not_stop_accepting() {
    let net = MemoryNetwork::new(TokioRuntime::current(), LinkConfig::default());
    let (alice, bob, carol) = (
        Arc::new(Identity::generate()),
        Arc::new(Identity::generate()),
        Identity::generate(),
    );
    let ta = net.transport(Arc::clone(&alice), "a").unwrap();
    let tb = net.transport(Arc::clone(&bob), "b").unwrap();
    // One accept call: the first link (Alice expected Carol and walks away) fails inside it,
    // the second is the one it returns.
    let dials = async {
        let wrong = ta.dial(carol.peer_id(), "b").await;
        let right = ta.dial(bob.peer_id(), "b").await;
        (wrong, right)
    };
    let ((wrong, right), accepted) = tokio::join!(dials, tb.accept());
    assert!(matches!(
        wrong,
        Err(TransportError::Handshake(
            HandshakeError::UnexpectedPeer { .. }
        ))
    ));
    let (right, accepted) = (right.unwrap(), accepted.unwrap());
    assert_eq!(accepted.remote(), alice.peer_id());
    right.send(frame(1)).await.unwrap();
    assert_eq!(accepted.recv().await.unwrap(), frame(1));
}

#[tokio::test]
async fn at_total_loss_frames_and_pings_vanish_but_the_close_arrives() {
    let (ca, cb) = connected(LinkConfig {
        loss: 7.0, // clamped to 1
        ..LinkConfig::default()
    })
    .await;
    for i in 0..20 {
        ca.send(frame(i)).await.unwrap();
    }
    ca.ping().await.unwrap();
    ca.close().await.unwrap();
    assert_eq!(cb.recv().await, Err(TransportError::Closed));
    assert_eq!(ca.recv().await, Err(TransportError::Closed));
}

#[tokio::test]
async fn a_dropped_connection_ends_the_remotes_recv_and_a_queue_of_zero_means_one() {
    let (ca, cb) = connected(LinkConfig {
        queue: 0,
        ..LinkConfig::default()
    })
    .await;
    assert_eq!(ca.kind(), mesh_transport::TransportKind::Memory);
    ca.send(frame(1)).await.unwrap();
    assert!(
        ca.send(frame(2)).now_or_never().is_none(),
        "a queue of one is full after one frame"
    );
    assert_eq!(cb.recv().await.unwrap(), frame(1));
    drop(ca);
    assert_eq!(cb.recv().await, Err(TransportError::Closed));
    // Nobody reads Bob's direction any more: his sends fail too.
    assert_eq!(cb.send(frame(3)).await, Err(TransportError::Closed));
}
